// SPDX-License-Identifier: MIT OR Apache-2.0

//! PCI identity: configuration space and the vfio-user region/IRQ tables.
//!
//! Type 0 header, 256 bytes, no capability list. Vendor 0x10de, the chip's
//! device id, class and revision; subsystem 0x10de:device id (an
//! inference). BAR0 (config 0x10) is 16 MiB, 32-bit, non-prefetchable
//! memory; BAR1 (0x14/0x18) is 64-bit prefetchable memory of `--bar1` bytes.
//! BAR3 and the I/O BAR of real boards are not modelled (size 0). Interrupt
//! pin INTA. BARs size like real hardware: writing all-ones reads back the
//! size mask.
//!
//! VFIO region indices follow the BAR slot: region 0 is BAR0, region 1
//! BAR1 (the 64-bit BAR occupies slots 1 and 2), region 7 config space,
//! region 8 VGA (absent). No region offers mmap, so every access is trapped.

use crate::chip::Chip;
use crate::gpu::BAR0_SIZE;

/// Config space size.
pub const CONFIG_SIZE: usize = 256;
/// VFIO region index of BAR0.
pub const REGION_BAR0: u32 = 0;
/// VFIO region index of BAR1.
pub const REGION_BAR1: u32 = 1;
/// VFIO region index of config space.
pub const REGION_CONFIG: u32 = 7;
/// Number of VFIO regions (`VFIO_PCI_NUM_REGIONS`).
pub const NUM_REGIONS: u32 = 9;
/// Number of VFIO IRQ indices (`VFIO_PCI_NUM_IRQS`).
pub const NUM_IRQS: u32 = 5;

/// `VFIO_REGION_INFO_FLAG_READ`.
pub const REGION_FLAG_READ: u32 = 1;
/// `VFIO_REGION_INFO_FLAG_WRITE`.
pub const REGION_FLAG_WRITE: u32 = 2;
/// `VFIO_IRQ_INFO_EVENTFD`.
pub const IRQ_INFO_EVENTFD: u32 = 1;
/// `VFIO_IRQ_INFO_MASKABLE`.
pub const IRQ_INFO_MASKABLE: u32 = 2;

/// Size and flags of a VFIO region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    /// Region index.
    pub index: u32,
    /// Flags.
    pub flags: u32,
    /// Size in bytes (0 = absent).
    pub size: u64,
}

/// The region table for a BAR1 size.
pub fn regions(bar1_size: u64) -> Vec<RegionInfo> {
    (0..NUM_REGIONS)
        .map(|index| {
            let size = match index {
                REGION_BAR0 => BAR0_SIZE,
                REGION_BAR1 => bar1_size,
                // CAST: 256.
                REGION_CONFIG => CONFIG_SIZE as u64,
                _ => 0,
            };
            let flags = if size > 0 {
                REGION_FLAG_READ | REGION_FLAG_WRITE
            } else {
                0
            };
            RegionInfo { index, flags, size }
        })
        .collect()
}

/// `(flags, count)` of an IRQ index: INTx only.
pub fn irq_info(index: u32) -> Option<(u32, u32)> {
    match index {
        0 => Some((IRQ_INFO_EVENTFD | IRQ_INFO_MASKABLE, 1)),
        1..NUM_IRQS => Some((IRQ_INFO_EVENTFD, 0)),
        _ => None,
    }
}

/// Configuration space with per-byte write masks.
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SIZE],
    wmask: [u8; CONFIG_SIZE],
}

impl ConfigSpace {
    /// Config space for `chip` with a BAR1 of `bar1_size` bytes (power of two).
    pub fn new(chip: &Chip, bar1_size: u64) -> Self {
        let mut c = ConfigSpace {
            bytes: [0; CONFIG_SIZE],
            wmask: [0; CONFIG_SIZE],
        };
        c.put16(0x00, 0x10de);
        c.put16(0x02, chip.device_id);
        // Command: memory space, bus master, parity, SERR, INTx disable writable.
        c.wmask16(0x04, 0x0546);
        c.bytes[0x08] = chip.revision();
        c.bytes[0x09] = (chip.class_code & 0xff) as u8;
        c.bytes[0x0a] = ((chip.class_code >> 8) & 0xff) as u8;
        c.bytes[0x0b] = ((chip.class_code >> 16) & 0xff) as u8;
        c.wmask[0x0c] = 0xff; // cache line size
        c.wmask[0x0d] = 0xff; // latency timer
                              // BAR0: 32-bit non-prefetchable memory; BAR1: 64-bit prefetchable.
        c.put32(0x10, 0);
        c.wmask32(0x10, !((BAR0_SIZE as u32) - 1));
        c.put32(0x14, 0x0000_000c);
        let mask = !(bar1_size - 1);
        // CAST: deliberate split of the 64-bit size mask into halves.
        c.wmask32(0x14, (mask as u32) & 0xffff_fff0);
        c.wmask32(0x18, (mask >> 32) as u32);
        c.put16(0x2c, 0x10de);
        c.put16(0x2e, chip.device_id);
        c.wmask[0x3c] = 0xff; // interrupt line
        c.bytes[0x3d] = 1; // INTA
        c
    }

    fn put16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn put32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn wmask16(&mut self, off: usize, v: u16) {
        self.wmask[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn wmask32(&mut self, off: usize, v: u32) {
        self.wmask[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Reads config bytes; bytes past the end read as 0xff.
    pub fn read(&self, off: u64, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            // CAST: config offsets are tiny; out-of-range ones read 0xff.
            let o = off.saturating_add(i as u64);
            *b = usize::try_from(o)
                .ok()
                .and_then(|o| self.bytes.get(o).copied())
                .unwrap_or(0xff);
        }
    }

    /// Writes config bytes through the write masks.
    pub fn write(&mut self, off: u64, data: &[u8]) {
        for (i, v) in data.iter().enumerate() {
            // CAST: as in `read`.
            let Ok(o) = usize::try_from(off.saturating_add(i as u64)) else {
                continue;
            };
            if o < CONFIG_SIZE {
                let m = self.wmask[o];
                self.bytes[o] = (self.bytes[o] & !m) | (v & m);
            }
        }
    }

    /// Reads a 32-bit config register.
    pub fn read32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.read(off, &mut b);
        u32::from_le_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_bar_sizing() {
        let chip = Chip::by_name("gh100").unwrap();
        let mut c = ConfigSpace::new(chip, 256 << 20);
        assert_eq!(c.read32(0), 0x2330_10de);
        assert_eq!(c.read32(8), 0x0302_00a1);
        assert_eq!(c.read32(0x10), 0);
        assert_eq!(c.read32(0x14), 0xc);
        c.write(0x10, &[0xff; 4]);
        assert_eq!(c.read32(0x10), 0xff00_0000);
        c.write(0x14, &[0xff; 4]);
        c.write(0x18, &[0xff; 4]);
        assert_eq!(c.read32(0x14), 0xf000_000c);
        assert_eq!(c.read32(0x18), 0xffff_ffff);
        // Vendor id is read-only.
        c.write(0, &[0, 0]);
        assert_eq!(c.read32(0) & 0xffff, 0x10de);
        let mut b = [0u8; 2];
        c.read(255, &mut b);
        assert_eq!(b, [0, 0xff]);
    }

    #[test]
    fn region_table() {
        let r = regions(1 << 30);
        assert_eq!(r.len(), 9);
        assert_eq!(r[0].size, 16 << 20);
        assert_eq!(r[1].size, 1 << 30);
        assert_eq!(r[2].size, 0);
        assert_eq!(r[7].size, 256);
        assert_eq!(irq_info(0), Some((3, 1)));
        assert_eq!(irq_info(5), None);
    }
}
