// SPDX-License-Identifier: MIT OR Apache-2.0

//! BAR1 binding: the instance-block registers and the instance block.
//!
//! Turing..Ada (`NV_VIRTUAL_FUNCTION_PRIV_BAR1_BLOCK` 0xB80F40, open-gpu-doc
//! `dev_vm.ref.txt`): PTR 27:0 (instance block >> 12), TARGET 29:28
//! (0 video, 2 sys coherent, 3 sys non-coherent), MODE 31 (0 physical,
//! 1 virtual). `BIND_STATUS` 0xB80F50 reads 0 (nothing pending). Hopper and
//! Blackwell (`BAR1_BLOCK_LOW_ADDR` 0xB80F60, OGKM `hopper/gh100/dev_vm.h`):
//! PENDING 0, OUTSTANDING 1, MODE 9, TARGET 11:10, PTR 31:12 (address bits
//! 31:12), HIGH 0xB80F64 (address bits 63:32); the write to LOW binds, with
//! whatever HIGH holds, and PENDING/OUTSTANDING read 0.
//!
//! A bind reads the instance block at once (open-gpu-doc `dev_ram.ref.txt`,
//! `NV_RAMIN`): word 128 (0x200) PAGE_DIR_BASE_TARGET 1:0 (0 video,
//! 1 invalid, 2/3 sys), VOL 2, USE_VER2_PT_FORMAT 10, BIG_PAGE_SIZE 11
//! (1 = 64 KiB), PAGE_DIR_BASE_LO 31:12; word 129 (0x204) PAGE_DIR_BASE_HI.
//! Later changes to the instance block are not seen until the next bind.
//! The v3 format is implied by the chip; the model still requires
//! USE_VER2_PT_FORMAT and 64 KiB big pages, as on v2 (an inference: nouveau
//! binds Hopper the same way).
//!
//! With `--hostile`, the `bar1-bind-hang` scenario never completes a bind
//! (see [`Bar1::hung`]).
//!
//! BAR2 block registers are kept as plain storage (BAR2 is not modelled).

/// `NV_VIRTUAL_FUNCTION_PRIV_BAR1_BLOCK` (`turing/tu102/dev_vm.h`, at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET`).
pub const VF_BAR1_BLOCK: u32 = 0x00b8_0f40;
/// `NV_VIRTUAL_FUNCTION_PRIV_BAR2_BLOCK` (`turing/tu102/dev_vm.h`, at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET`).
pub const VF_BAR2_BLOCK: u32 = 0x00b8_0f48;
/// `NV_VIRTUAL_FUNCTION_PRIV_BIND_STATUS` (`turing/tu102/dev_vm.h`, at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET`).
pub const VF_BIND_STATUS: u32 = 0x00b8_0f50;
/// Hopper `NV_VIRTUAL_FUNCTION_PRIV_FUNC_BAR1_BLOCK_LOW_ADDR` (`hopper/gh100/dev_vm.h`,
/// at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET` 0xb80000).
pub const HOPPER_BAR1_LOW: u32 = 0x00b8_0f60;
/// Hopper `NV_VIRTUAL_FUNCTION_PRIV_FUNC_BAR1_BLOCK_HIGH_ADDR` (`hopper/gh100/dev_vm.h`,
/// at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET` 0xb80000).
pub const HOPPER_BAR1_HIGH: u32 = 0x00b8_0f64;
/// Hopper `NV_VIRTUAL_FUNCTION_PRIV_FUNC_BAR2_BLOCK_LOW_ADDR` (`hopper/gh100/dev_vm.h`,
/// at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET` 0xb80000).
pub const HOPPER_BAR2_LOW: u32 = 0x00b8_0f70;
/// Hopper `NV_VIRTUAL_FUNCTION_PRIV_FUNC_BAR2_BLOCK_HIGH_ADDR` (`hopper/gh100/dev_vm.h`,
/// at `NV_VIRTUAL_FUNCTION_FULL_PHYS_OFFSET` 0xb80000).
pub const HOPPER_BAR2_HIGH: u32 = 0x00b8_0f74;

/// Offset of `NV_RAMIN_PAGE_DIR_BASE` (word 128) in the instance block.
pub const RAMIN_PAGE_DIR_BASE: u64 = 0x200;
/// `NV_RAMIN_ENGINE_CTXSW_FW_MAGIC_VALUE_V` (word 131; `ampere/ga10b/dev_ram.h`), which RM
/// writes on Blackwell (`kgmmuInstBlkMagicValueGet_GA10B`).
pub const RAMIN_CTXSW_FW_MAGIC_VALUE: u32 = 0xcafe_ca11;

/// Where a bind points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindRequest {
    /// Instance block address.
    pub inst: u64,
    /// TARGET field (0 = video memory).
    pub target: u32,
    /// MODE is virtual.
    pub virtual_mode: bool,
}

/// Decodes a Turing..Ada BAR1_BLOCK value.
pub fn decode_vf_block(v: u32) -> BindRequest {
    BindRequest {
        inst: u64::from(v & 0x0fff_ffff) << 12,
        target: (v >> 28) & 3,
        virtual_mode: v & (1 << 31) != 0,
    }
}

/// Decodes a Hopper BAR1_BLOCK LOW/HIGH pair.
pub fn decode_hopper_block(low: u32, high: u32) -> BindRequest {
    BindRequest {
        inst: (u64::from(high) << 32) | u64::from(low & 0xffff_f000),
        target: (low >> 10) & 3,
        virtual_mode: low & (1 << 9) != 0,
    }
}

/// Decoded `NV_RAMIN_PAGE_DIR_BASE` words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstBlock {
    /// PAGE_DIR_BASE_TARGET.
    pub target: u32,
    /// PAGE_DIR_BASE_VOL.
    pub vol: bool,
    /// USE_VER2_PT_FORMAT.
    pub ver2: bool,
    /// BIG_PAGE_SIZE is 64 KiB.
    pub big_64k: bool,
    /// Page directory base.
    pub pdb: u64,
}

impl InstBlock {
    /// Decodes words 128 and 129 of an instance block.
    pub fn decode(lo: u32, hi: u32) -> InstBlock {
        InstBlock {
            target: lo & 3,
            vol: lo & (1 << 2) != 0,
            ver2: lo & (1 << 10) != 0,
            big_64k: lo & (1 << 11) != 0,
            pdb: (u64::from(hi) << 32) | u64::from(lo & 0xffff_f000),
        }
    }

    /// Why the block cannot be used with page tables of format `mmu`, if it cannot.
    ///
    /// USE_VER2_PT_FORMAT must be set for the v2 format. For v3 either value is taken: RM
    /// writes 0 for it (`kgmmuInstBlkPageDirBaseGet_GP100`: TRUE only for format version 2),
    /// nouveau's gh100 join writes 1; the chip decides the format.
    pub fn problem(&self, mmu: crate::chip::MmuVersion) -> Option<String> {
        match self.target {
            0 => {}
            1 => return Some("PAGE_DIR_BASE_TARGET is INVALID".into()),
            t => {
                return Some(format!(
                    "PAGE_DIR_BASE_TARGET {t} is system memory (not modelled)"
                ))
            }
        }
        if !self.ver2 && mmu == crate::chip::MmuVersion::V2 {
            return Some("USE_VER2_PT_FORMAT is clear (legacy format, not modelled)".into());
        }
        if !self.big_64k {
            return Some("BIG_PAGE_SIZE is 128 KiB (not valid with the v2/v3 formats)".into());
        }
        None
    }
}

/// Current BAR1 binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Never bound since reset: every access faults.
    Unbound,
    /// MODE physical: BAR1 offset X is VRAM address X.
    Physical,
    /// MODE virtual with a usable instance block.
    Virtual {
        /// Instance block address.
        inst: u64,
        /// Page directory base from the instance block.
        pdb: u64,
    },
    /// Bound to something the model cannot translate through.
    Broken(String),
}

/// BAR1 binding registers.
#[derive(Debug)]
pub struct Bar1 {
    /// BAR1 block register (LOW on Hopper) as written.
    pub block: u32,
    /// Hopper HIGH register.
    pub block_high: u32,
    /// BAR2 block registers (storage only).
    pub bar2: [u32; 2],
    /// Current binding.
    pub binding: Binding,
    /// A bind was requested and never completes (hostile `bar1-bind-hang`):
    /// `BIND_STATUS` BAR1_PENDING 0 and BAR1_OUTSTANDING 1 (Turing..Ada), or
    /// PENDING 0 and OUTSTANDING 1 of `BAR1_BLOCK_LOW_ADDR` (Hopper,
    /// Blackwell), read 1 and `binding` keeps its value from before the bind.
    pub hung: bool,
}

impl Default for Bar1 {
    fn default() -> Self {
        Bar1 {
            block: 0,
            block_high: 0,
            bar2: [0, 0],
            binding: Binding::Unbound,
            hung: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_registers() {
        let r = decode_vf_block(0x8000_0000 | (0x12345000u32 >> 12));
        assert_eq!(
            r,
            BindRequest {
                inst: 0x1234_5000,
                target: 0,
                virtual_mode: true
            }
        );
        assert_eq!(decode_vf_block(0x2000_0001).target, 2);
        let h = decode_hopper_block(0x1234_5000 | (1 << 9) | (3 << 10) | 3, 0x2);
        assert_eq!(
            h,
            BindRequest {
                inst: 0x2_1234_5000,
                target: 3,
                virtual_mode: true
            }
        );
    }

    #[test]
    fn instance_block_decode() {
        let lo = 0x0040_0000 | (1 << 10) | (1 << 11) | (1 << 2);
        let ib = InstBlock::decode(lo, 0x1);
        assert_eq!(
            ib,
            InstBlock {
                target: 0,
                vol: true,
                ver2: true,
                big_64k: true,
                pdb: 0x1_0040_0000
            }
        );
        use crate::chip::MmuVersion::{V2, V3};
        assert_eq!(ib.problem(V2), None);
        assert!(InstBlock::decode(lo | 1, 0).problem(V2).is_some());
        assert!(InstBlock::decode(lo | 2, 0).problem(V2).is_some());
        // VER2 clear: the legacy format for a v2 chip; for v3 RM writes it clear.
        assert!(InstBlock::decode(0x0040_0000 | (1 << 11), 0)
            .problem(V2)
            .unwrap()
            .contains("VER2"));
        assert_eq!(
            InstBlock::decode(0x0040_0000 | (1 << 11), 0).problem(V3),
            None
        );
        assert!(InstBlock::decode(0x0040_0000 | (1 << 10), 0)
            .problem(V2)
            .unwrap()
            .contains("128 KiB"));
    }
}
