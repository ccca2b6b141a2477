// SPDX-License-Identifier: GPL-2.0

//! Registers that the GPU's firmware (devinit, FWSEC, FSP) leaves behind and that describe video
//! memory before any GSP firmware runs.
//!
//! Offsets and fields are taken from nova-core (`drivers/gpu/nova-core/regs.rs`, `fb/regs.rs`),
//! which names them after NVIDIA's Open RM headers; the same facts are collected in
//! `shared/HARDWARE.md` §2. Chip-specific registers sit in per-architecture submodules that only
//! the matching HALs use.

use kernel::{
    io::register,
    sizes::SizeConstants, //
};

// PGC6 (always-on secure scratch registers written by the boot firmware).

register! {
    /// Privilege level mask of `NV_PGC6_AON_SECURE_SCRATCH_GROUP_05`
    /// (`NV_PGC6_AON_SECURE_SCRATCH_GROUP_05_PRIV_LEVEL_MASK`, `ampere/ga102/dev_gc6_island.h`).
    ///
    /// FWSEC lowers the read protection of `GROUP_05` once it is done with it; until then the CPU
    /// cannot read the GFW boot progress.
    pub(super) NV_PGC6_AON_SECURE_SCRATCH_GROUP_05_PRIV_LEVEL_MASK(u32) @ 0x00118128 {
        /// Set once FWSEC has lowered the read protection of `GROUP_05` for the CPU.
        0:0     read_protection_level0 => bool;
    }

    /// First register of `NV_PGC6_AON_SECURE_SCRATCH_GROUP_05`, used as GFW boot progress
    /// (`NV_PGC6_AON_SECURE_SCRATCH_GROUP_05_0_GFW_BOOT`, `ampere/ga102/dev_gc6_island_addendum.h`).
    pub(super) NV_PGC6_AON_SECURE_SCRATCH_GROUP_05_0_GFW_BOOT(u32) @ 0x00118234 {
        /// Progress of the GFW (devinit and FWSEC) boot; `0xff` means completed.
        7:0     progress;
    }

    /// `NV_USABLE_FB_SIZE_IN_MB` (`ampere/ga102/dev_gc6_island_addendum.h`), an alias of
    /// `NV_PGC6_AON_SECURE_SCRATCH_GROUP_42`: the boot firmware of GA102 and later leaves the
    /// usable VRAM size there.
    pub(super) NV_USABLE_FB_SIZE_IN_MB(u32) @ 0x001183a4 {
        /// Usable VRAM size, in MiB (the whole register: no NVIDIA define).
        31:0    value;
    }
}

impl NV_PGC6_AON_SECURE_SCRATCH_GROUP_05_0_GFW_BOOT {
    /// Returns whether the GFW boot has completed.
    pub(super) fn completed(self) -> bool {
        self.progress() == 0xff
    }
}

impl NV_USABLE_FB_SIZE_IN_MB {
    /// Returns the usable VRAM size, in bytes.
    pub(super) fn usable_fb_size(self) -> u64 {
        // Cannot overflow: a 32-bit count of MiB is below 2^52 bytes.
        u64::from(self.value()) * u64::SZ_1M
    }
}

// PDISP

register! {
    /// Where the VBIOS keeps its VGA workspace, at the end of VRAM (`NV_PDISP_VGA_WORKSPACE_BASE`;
    /// no published header: nova-core `fb/regs.rs`, open-gpu-doc `dev_disp`).
    ///
    /// Only meaningful on chips with a display engine.
    pub(super) NV_PDISP_VGA_WORKSPACE_BASE(u32) @ 0x00625f04 {
        /// VGA workspace base address divided by 0x10000.
        31:8    addr;
        /// Set if the `addr` field is valid.
        3:3     status_valid => bool;
    }
}

impl NV_PDISP_VGA_WORKSPACE_BASE {
    /// Returns the VRAM address of the VGA workspace, or `None` if the register says it is not
    /// valid.
    pub(super) fn workspace_addr(self) -> Option<u64> {
        // Cannot overflow: a 24-bit field shifted by 16 fits in 40 bits.
        self.status_valid().then(|| u64::from(self.addr()) << 16)
    }
}

// PFB

register! {
    /// Size of local video memory on Turing and GA100 (`NV_PFB_PRI_MMU_LOCAL_MEMORY_RANGE`; no
    /// published header at this offset: open-gpu-doc `turing/tu104/dev_fb.ref.txt`, nova-core).
    pub(super) NV_PFB_PRI_MMU_LOCAL_MEMORY_RANGE(u32) @ 0x00100ce0 {
        /// Set when ECC is enabled; one sixteenth of VRAM then holds the check bits.
        30:30   ecc_mode_enabled => bool;
        /// Magnitude: VRAM size in MiB is `lower_mag << lower_scale`.
        9:4     lower_mag;
        /// Scale: VRAM size in MiB is `lower_mag << lower_scale`.
        3:0     lower_scale;
    }

    /// Lower bound of the write-protected region 2 (`NV_PFB_PRI_MMU_WPR2_ADDR_LO`,
    /// `hopper/gh100/dev_fb.h`).
    pub(super) NV_PFB_PRI_MMU_WPR2_ADDR_LO(u32) @ 0x001fa824 {
        /// Bits 39:12 of the lower (inclusive) bound of WPR2.
        31:4    val;
    }

    /// Upper bound of the write-protected region 2 (`NV_PFB_PRI_MMU_WPR2_ADDR_HI`,
    /// `hopper/gh100/dev_fb.h`).
    pub(super) NV_PFB_PRI_MMU_WPR2_ADDR_HI(u32) @ 0x001fa828 {
        /// Bits 39:12 of the upper (exclusive) bound of WPR2; zero when WPR2 is not set.
        31:4    val;
    }
}

register! {
    /// Lower bound of WPR2 on Blackwell, in the HUBMMU (`NV_HUBMMU_PRI_MMU_WPR2_ADDR_LO`, 0xa824 in
    /// `blackwell/gb100/dev_hubmmu_base.h`, at `NV_HUBMMU0_PRI_BASE` 0x880000 of `hwproject.h`).
    pub(super) NV_HUBMMU_PRI_MMU_WPR2_ADDR_LO(u32) @ 0x0088a824 {
        /// Bits 39:12 of the lower (inclusive) bound of WPR2.
        31:4    val;
    }

    /// Upper bound of WPR2 on Blackwell (`NV_HUBMMU_PRI_MMU_WPR2_ADDR_HI`, 0xa828 in
    /// `blackwell/gb100/dev_hubmmu_base.h`, at `NV_HUBMMU0_PRI_BASE` 0x880000 of `hwproject.h`).
    pub(super) NV_HUBMMU_PRI_MMU_WPR2_ADDR_HI(u32) @ 0x0088a828 {
        /// Bits 39:12 of the upper bound of WPR2; zero when WPR2 is not set.
        31:4    val;
    }
}

/// Whether `raw` is what NVIDIA hardware answers for a register no PRI target claims: the upper
/// 12 bits read 0xbad (open-gpu-kernel-modules `GPU_READ_PRI_ERROR_MASK` 0xfff00000,
/// `GPU_READ_PRI_ERROR_CODE` 0xbad00000). Such a value says nothing about the register.
pub(super) fn is_pri_error(raw: u32) -> bool {
    raw & 0xfff0_0000 == 0xbad0_0000
}

impl NV_PFB_PRI_MMU_LOCAL_MEMORY_RANGE {
    /// Returns the usable VRAM size, in bytes, without the ECC check bits.
    pub(super) fn usable_fb_size(self) -> u64 {
        // Cannot overflow: at most `63 << 15` MiB, i.e. below 2^41 bytes.
        let size = (u64::from(self.lower_mag()) << u64::from(self.lower_scale())) * u64::SZ_1M;

        if self.ecc_mode_enabled() {
            // One unit in sixteen holds the ECC check bits.
            size / 16 * 15
        } else {
            size
        }
    }
}

impl NV_PFB_PRI_MMU_WPR2_ADDR_LO {
    /// Returns the lower (inclusive) bound of WPR2.
    pub(super) fn lower_bound(self) -> u64 {
        u64::from(self.val()) << 12
    }
}

impl NV_PFB_PRI_MMU_WPR2_ADDR_HI {
    /// Returns the upper (exclusive) bound of WPR2; zero means WPR2 is not set.
    pub(super) fn upper_bound(self) -> u64 {
        u64::from(self.val()) << 12
    }
}

impl NV_HUBMMU_PRI_MMU_WPR2_ADDR_LO {
    /// Returns the lower (inclusive) bound of WPR2.
    pub(super) fn lower_bound(self) -> u64 {
        u64::from(self.val()) << 12
    }
}

impl NV_HUBMMU_PRI_MMU_WPR2_ADDR_HI {
    /// Returns the upper (exclusive) bound of WPR2; zero means WPR2 is not set.
    pub(super) fn upper_bound(self) -> u64 {
        u64::from(self.val()) << 12
    }
}

/// Turing display fuse (nova-core `regs::gm107`).
pub(super) mod gm107 {
    use kernel::io::register;

    register! {
        /// Display engine fuse of Turing (`NV_FUSE_STATUS_OPT_DISPLAY`; no published header:
        /// nova-core `regs.rs`).
        pub(crate) NV_FUSE_STATUS_OPT_DISPLAY(u32) @ 0x00021c04 {
            /// Set when the display engine is fused off.
            0:0     display_disabled => bool;
        }
    }
}

/// Ampere and later display fuse (nova-core `regs::ga100`).
pub(super) mod ga100 {
    use kernel::io::register;

    register! {
        /// Display engine fuse of GA100 and later (`NV_FUSE_STATUS_OPT_DISPLAY`; no published
        /// header: nova-core `regs.rs`).
        pub(crate) NV_FUSE_STATUS_OPT_DISPLAY(u32) @ 0x00820c04 {
            /// Set when the display engine is fused off.
            0:0     display_disabled => bool;
        }
    }
}

/// Value of the FSP boot scratch register once FSP secure boot has completed.
pub(super) const FSP_BOOT_COMPLETE_SUCCESS: u32 = 0xff;

/// Hopper and Blackwell GB10x FSP boot status (nova-core `regs::gh100`).
pub(super) mod gh100 {
    use kernel::io::register;

    register! {
        /// Thermal I2CS scratch register, where FSP reports secure boot completion
        /// (`NV_THERM_I2CS_SCRATCH_FSP_BOOT_COMPLETE`, `gh100/dev_therm.h`).
        pub(crate) NV_THERM_I2CS_SCRATCH_FSP_BOOT_COMPLETE(u32) @ 0x000200bc {
            /// FSP boot status; [`super::FSP_BOOT_COMPLETE_SUCCESS`] when done.
            31:0    status;
        }
    }
}

/// Blackwell GB20x FSP boot status (nova-core `regs::gb202`).
pub(super) mod gb202 {
    use kernel::io::register;

    register! {
        /// Thermal I2CS scratch register, where FSP reports secure boot completion
        /// (`NV_THERM_I2CS_SCRATCH_FSP_BOOT_COMPLETE`, `gb202/dev_therm.h`; moved on GB20x).
        pub(crate) NV_THERM_I2CS_SCRATCH_FSP_BOOT_COMPLETE(u32) @ 0x00ad00bc {
            /// FSP boot status; [`super::FSP_BOOT_COMPLETE_SUCCESS`] when done.
            31:0    status;
        }
    }
}
