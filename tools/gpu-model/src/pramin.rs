// SPDX-License-Identifier: MIT OR Apache-2.0

//! PRAMIN: the 1 MiB BAR0 aperture at 0x700000 into VRAM, and its window
//! register.
//!
//! `NV_PRAMIN` is BAR0 0x700000..0x7FFFFF (open-gpu-doc `dev_ram.ref.txt`).
//! An access at aperture offset `o` reaches VRAM `(BASE << 16) + o`.
//! Turing..Ada position the window with `NV_PBUS_BAR0_WINDOW` 0x1700 (BASE
//! 23:0, TARGET 25:24: 0 video, 2 sys coherent, 3 sys non-coherent;
//! open-gpu-doc `dev_bus.ref.txt`); Hopper and Blackwell with
//! `NV_XAL_EP_BAR0_WINDOW` 0x10fd40 (BASE 21:0 on GH100, 22:0 on Blackwell,
//! no TARGET; nvhw `gh100/pri_nv_xal_ep.h`). Bits outside the fields read
//! back as 0.
//!
//! Model choices: an access past the end of VRAM reads all-ones bytes and
//! a write there is dropped (`pramin_out_of_range`); with a system-memory
//! TARGET (not modelled) reads return all-ones and writes are dropped
//! (`pramin_sysmem`). Real hardware behaviour in both cases is undocumented.

use crate::chip::WindowReg;

/// First BAR0 offset of the aperture.
pub const APERTURE_BASE: u64 = 0x0070_0000;
/// Aperture size.
pub const APERTURE_SIZE: u64 = 0x0010_0000;
/// Shift of the BASE field.
pub const BASE_SHIFT: u32 = 16;
/// Byte value returned by reads that reach no memory.
pub const UNBACKED_BYTE: u8 = 0xff;

/// The window register.
#[derive(Debug)]
pub struct Window {
    kind: WindowReg,
    raw: u32,
}

impl Window {
    /// A window at VRAM 0 (reset value).
    pub fn new(kind: WindowReg) -> Self {
        Window { kind, raw: 0 }
    }

    /// The register's BAR0 offset.
    pub fn offset(&self) -> u32 {
        self.kind.offset()
    }

    /// Register value.
    pub fn read(&self) -> u32 {
        self.raw
    }

    /// Writes the register; returns whether the value changed.
    pub fn write(&mut self, value: u32) -> bool {
        let new = value & self.kind.writable_mask();
        let changed = new != self.raw;
        self.raw = new;
        changed
    }

    /// VRAM address of aperture offset 0.
    pub fn base(&self) -> u64 {
        u64::from(self.raw & self.kind.base_mask()) << BASE_SHIFT
    }

    /// TARGET field (0 = video memory; always 0 without the field).
    pub fn target(&self) -> u32 {
        match self.kind {
            WindowReg::Pbus => (self.raw >> 24) & 3,
            WindowReg::XalEp { .. } => 0,
        }
    }

    /// Back to reset state.
    pub fn reset(&mut self) {
        self.raw = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbus_window_fields() {
        let mut w = Window::new(WindowReg::Pbus);
        assert!(w.write(0xffff_ffff));
        assert_eq!(w.read(), 0x03ff_ffff);
        assert_eq!(w.base(), 0xff_ffff << 16);
        assert_eq!(w.target(), 3);
        assert!(!w.write(0xffff_ffff));
        w.write(0x0000_1234);
        assert_eq!(w.base(), 0x1234_0000);
        assert_eq!(w.target(), 0);
    }

    #[test]
    fn xal_window_fields() {
        let mut w = Window::new(WindowReg::XalEp { base_bits: 22 });
        w.write(0xffff_ffff);
        assert_eq!(w.read(), 0x003f_ffff);
        assert_eq!(w.base(), 0x3f_ffffu64 << 16);
        assert_eq!(w.target(), 0);
        let mut w = Window::new(WindowReg::XalEp { base_bits: 23 });
        w.write(0xffff_ffff);
        assert_eq!(w.base(), 0x7f_ffffu64 << 16);
    }
}
