// SPDX-License-Identifier: MIT OR Apache-2.0

//! Chip personalities: one table row per modelled GPU.
//!
//! Each row says what the PCI function looks like (device id, class, revision),
//! what `NV_PMC_BOOT_0` and `NV_PMC_BOOT_42` read, which register layout the
//! chip uses for the BAR0 window, the BAR1 instance-block binding and the
//! firmware-reported framebuffer size, which MMU format it walks and how much
//! VRAM it has by default.
//!
//! Sources: `NV_PMC_BOOT_0` fields from open-gpu-doc `turing/tu104/dev_master.ref.txt`
//! (minor 3:0, major 7:4, implementation 23:20, architecture 28:24); `BOOT_42`
//! (minor 15:12, major 19:16, implementation 23:20, architecture 29:24) and the
//! architecture codes from nova-core (Linux 7.3 `drivers/gpu/nova-core/gpu.rs`,
//! `regs.rs`). PCI device ids are those of one real board per chip (see
//! [`CHIPS`]); the A1 revision is an assumption.

/// Page-table format generation walked by the MMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuVersion {
    /// Pascal..Ada: 5 levels, 49-bit VA (open-gpu-doc `dev_mmu.ref.txt`).
    V2,
    /// Hopper, Blackwell: 6 levels, 57-bit VA (nvhw `gh100/dev_mmu.h`).
    V3,
}

/// Location and layout of the BAR0 (PRAMIN) window register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowReg {
    /// `NV_PBUS_BAR0_WINDOW` at 0x1700: BASE 23:0, TARGET 25:24 (Turing..Ada).
    Pbus,
    /// `NV_XAL_EP_BAR0_WINDOW` at 0x10fd40: BASE `base_bits-1`:0, no TARGET.
    XalEp {
        /// Width of the BASE field (22 on GH100, 23 on Blackwell).
        base_bits: u32,
    },
}

impl WindowReg {
    /// BAR0 offset of the window register.
    pub fn offset(self) -> u32 {
        match self {
            WindowReg::Pbus => 0x0000_1700,
            WindowReg::XalEp { .. } => 0x0010_fd40,
        }
    }

    /// Mask of the bits the register keeps (BASE, and TARGET where present).
    pub fn writable_mask(self) -> u32 {
        match self {
            WindowReg::Pbus => 0x03ff_ffff,
            WindowReg::XalEp { base_bits } => {
                // `base_bits` is 22 or 23, never 32.
                (1u32 << base_bits) - 1
            }
        }
    }

    /// Mask of the BASE field.
    pub fn base_mask(self) -> u32 {
        match self {
            WindowReg::Pbus => 0x00ff_ffff,
            WindowReg::XalEp { .. } => self.writable_mask(),
        }
    }
}

/// Which register block binds the BAR1 instance block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindRegs {
    /// `NV_VIRTUAL_FUNCTION_PRIV_BAR1_BLOCK` 0xB80F40 (PTR 27:0, TARGET 29:28,
    /// MODE 31), BAR2 0xB80F48, `BIND_STATUS` 0xB80F50 (open-gpu-doc `dev_vm.ref.txt`).
    Vf,
    /// Hopper layout: BAR1 LOW 0xB80F60 (PENDING 0, OUTSTANDING 1, MODE 9,
    /// TARGET 11:10, PTR 31:12) and HIGH 0xB80F64; BAR2 0xB80F70/0xB80F74.
    VfHopper,
}

/// Which register reports the framebuffer size before GSP boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FbSizeReg {
    /// `NV_PFB_PRI_MMU_LOCAL_MEMORY_RANGE` 0x100ce0: scale 3:0, mag 9:4, ECC 30.
    LocalMemoryRange,
    /// `NV_USABLE_FB_SIZE_IN_MB` (= `NV_PGC6_AON_SECURE_SCRATCH_GROUP_42`) 0x1183a4.
    UsableFbSizeMb,
}

/// One modelled GPU.
#[derive(Debug)]
pub struct Chip {
    /// Name used on the command line and in the report (`ga102`).
    pub name: &'static str,
    /// A real board using this chip, for the log.
    pub board: &'static str,
    /// Architecture code (BOOT_42 29:24, BOOT_0 28:24).
    pub architecture: u8,
    /// Implementation (BOOT_42 and BOOT_0 23:20).
    pub implementation: u8,
    /// Major revision (0xA = "A").
    pub major_rev: u8,
    /// Minor revision (1 = "A1").
    pub minor_rev: u8,
    /// PCI device id of the board in `board`.
    pub device_id: u16,
    /// PCI class code (class, subclass, prog-if).
    pub class_code: u32,
    /// MMU page-table format.
    pub mmu: MmuVersion,
    /// Whether a PTE at PD1 (512 MiB page) is legal.
    pub page_512m: bool,
    /// BAR0 window register.
    pub window: WindowReg,
    /// BAR1 binding registers.
    pub bind: BindRegs,
    /// Framebuffer size register.
    pub fb_size: FbSizeReg,
    /// FSP boot-done scratch register (`NV_THERM_I2CS_SCRATCH`), if any.
    pub fsp_scratch: Option<u32>,
    /// `NV_FUSE_STATUS_OPT_DISPLAY` offset (0x021c04 on Turing, 0x820c04 on
    /// GA100 and later; nova-core `regs.rs`).
    pub display_fuse: u32,
    /// The chip has a display engine (bit 0 of the fuse, DISPLAY_DISABLED,
    /// reads 0).
    pub display: bool,
    /// Plain read/write registers the firmware or driver programs (sysmem
    /// flush page); they hold what is written and have no other effect.
    pub storage_regs: &'static [u32],
    /// Default usable VRAM size in bytes.
    pub default_vram: u64,
}

const GIB: u64 = 1 << 30;

/// Every chip the model can pretend to be.
///
/// PCI ids (pci.ids): 0x1e04 TU102 GeForce RTX 2080 Ti, 0x2204 GA102 GeForce
/// RTX 3090, 0x2684 AD102 GeForce RTX 4090, 0x2330 GH100 H100 SXM5 80GB,
/// 0x2b85 GB202 GeForce RTX 5090. GeForce boards are VGA controllers
/// (0x030000); H100 is a 3D controller (0x030200).
pub static CHIPS: [Chip; 5] = [
    Chip {
        name: "tu102",
        board: "GeForce RTX 2080 Ti",
        architecture: 0x16,
        implementation: 0x2,
        major_rev: 0xa,
        minor_rev: 0x1,
        device_id: 0x1e04,
        class_code: 0x03_00_00,
        mmu: MmuVersion::V2,
        page_512m: false,
        window: WindowReg::Pbus,
        bind: BindRegs::Vf,
        fb_size: FbSizeReg::LocalMemoryRange,
        fsp_scratch: None,
        display_fuse: 0x0002_1c04,
        display: true,
        storage_regs: &[0x0010_0c10],
        default_vram: 11 * GIB,
    },
    Chip {
        name: "ga102",
        board: "GeForce RTX 3090",
        architecture: 0x17,
        implementation: 0x2,
        major_rev: 0xa,
        minor_rev: 0x1,
        device_id: 0x2204,
        class_code: 0x03_00_00,
        mmu: MmuVersion::V2,
        page_512m: true,
        window: WindowReg::Pbus,
        bind: BindRegs::Vf,
        fb_size: FbSizeReg::UsableFbSizeMb,
        fsp_scratch: None,
        display_fuse: 0x0082_0c04,
        display: true,
        storage_regs: &[0x0010_0c10, 0x0010_0c40],
        default_vram: 24 * GIB,
    },
    Chip {
        name: "ad102",
        board: "GeForce RTX 4090",
        architecture: 0x19,
        implementation: 0x2,
        major_rev: 0xa,
        minor_rev: 0x1,
        device_id: 0x2684,
        class_code: 0x03_00_00,
        mmu: MmuVersion::V2,
        page_512m: true,
        window: WindowReg::Pbus,
        bind: BindRegs::Vf,
        fb_size: FbSizeReg::UsableFbSizeMb,
        fsp_scratch: None,
        display_fuse: 0x0082_0c04,
        display: true,
        storage_regs: &[0x0010_0c10, 0x0010_0c40],
        default_vram: 24 * GIB,
    },
    Chip {
        name: "gh100",
        board: "H100 SXM5 80GB",
        architecture: 0x18,
        implementation: 0x0,
        major_rev: 0xa,
        minor_rev: 0x1,
        device_id: 0x2330,
        class_code: 0x03_02_00,
        mmu: MmuVersion::V3,
        page_512m: true,
        window: WindowReg::XalEp { base_bits: 22 },
        bind: BindRegs::VfHopper,
        fb_size: FbSizeReg::UsableFbSizeMb,
        fsp_scratch: Some(0x0002_00bc),
        display_fuse: 0x0082_0c04,
        display: false,
        storage_regs: &[0x0010_0a34, 0x0010_0a38],
        default_vram: 80 * GIB,
    },
    Chip {
        name: "gb202",
        board: "GeForce RTX 5090",
        architecture: 0x1b,
        implementation: 0x2,
        major_rev: 0xa,
        minor_rev: 0x1,
        device_id: 0x2b85,
        class_code: 0x03_00_00,
        mmu: MmuVersion::V3,
        page_512m: true,
        window: WindowReg::XalEp { base_bits: 23 },
        bind: BindRegs::VfHopper,
        fb_size: FbSizeReg::UsableFbSizeMb,
        fsp_scratch: Some(0x00ad_00bc),
        display_fuse: 0x0082_0c04,
        display: true,
        storage_regs: &[0x008a_1d58, 0x008a_1d5c],
        default_vram: 32 * GIB,
    },
];

/// Architecture code reported under `--fault unknown-chip` (no such GPU).
pub const UNKNOWN_ARCHITECTURE: u8 = 0x1f;

impl Chip {
    /// Looks a chip up by its command-line name.
    pub fn by_name(name: &str) -> Option<&'static Chip> {
        CHIPS.iter().find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// Names of all chips, for usage messages.
    pub fn names() -> Vec<&'static str> {
        CHIPS.iter().map(|c| c.name).collect()
    }

    /// `NV_PMC_BOOT_0` for an architecture code.
    pub fn boot0_for(&self, architecture: u8) -> u32 {
        (u32::from(architecture & 0x1f) << 24)
            | (u32::from(self.implementation & 0xf) << 20)
            | (u32::from(self.major_rev & 0xf) << 4)
            | u32::from(self.minor_rev & 0xf)
    }

    /// `NV_PMC_BOOT_42` for an architecture code.
    pub fn boot42_for(&self, architecture: u8) -> u32 {
        (u32::from(architecture & 0x3f) << 24)
            | (u32::from(self.implementation & 0xf) << 20)
            | (u32::from(self.major_rev & 0xf) << 16)
            | (u32::from(self.minor_rev & 0xf) << 12)
    }

    /// `NV_PMC_BOOT_0` as the chip reports it.
    pub fn boot0(&self) -> u32 {
        self.boot0_for(self.architecture)
    }

    /// `NV_PMC_BOOT_42` as the chip reports it.
    pub fn boot42(&self) -> u32 {
        self.boot42_for(self.architecture)
    }

    /// PCI revision id (BOOT_0 7:0 are visible as the PCI revision).
    pub fn revision(&self) -> u8 {
        ((self.major_rev & 0xf) << 4) | (self.minor_rev & 0xf)
    }

    /// Chipset number as nova computes it: `arch << 4 | impl`.
    /// The architecture's name, as nova-core's `Architecture` gives it (Linux 7.3
    /// `drivers/gpu/nova-core/gpu.rs`).
    pub fn architecture_name(&self) -> &'static str {
        match self.architecture {
            0x16 => "Turing",
            0x17 => "Ampere",
            0x18 => "Hopper",
            0x19 => "Ada",
            0x1a | 0x1b => "Blackwell",
            _ => "unknown",
        }
    }

    /// The chip's table as the test harness reads it (`gpu-model chips --json`): one object per
    /// chip with its name, chipset code, architecture, MMU version and default VRAM.
    pub fn table_json() -> serde_json::Value {
        serde_json::Value::Array(
            CHIPS
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "name": c.name,
                        "display": c.name.to_uppercase(),
                        "board": c.board,
                        "chipset": c.chipset(),
                        "architecture": c.architecture_name(),
                        "mmu": match c.mmu {
                            MmuVersion::V2 => 2,
                            MmuVersion::V3 => 3,
                        },
                        "page_512m": c.page_512m,
                        "vram_gib": c.default_vram / GIB,
                    })
                })
                .collect(),
        )
    }

    pub fn chipset(&self) -> u32 {
        (u32::from(self.architecture) << 4) | u32::from(self.implementation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_registers() {
        let ga102 = Chip::by_name("ga102").unwrap();
        assert_eq!(ga102.boot42(), 0x172a_1000);
        assert_eq!(ga102.boot0(), 0x1720_00a1);
        assert_eq!(ga102.chipset(), 0x172);
        let table = [
            ("tu102", 0x162, 0x1620_00a1, 0x162a_1000),
            ("ad102", 0x192, 0x1920_00a1, 0x192a_1000),
            ("gh100", 0x180, 0x1800_00a1, 0x180a_1000),
            ("gb202", 0x1b2, 0x1b20_00a1, 0x1b2a_1000),
        ];
        for (name, chipset, boot0, boot42) in table {
            let c = Chip::by_name(name).unwrap();
            assert_eq!(c.chipset(), chipset, "{name}");
            assert_eq!(c.boot0(), boot0, "{name}");
            assert_eq!(c.boot42(), boot42, "{name}");
            assert_eq!(c.revision(), 0xa1);
            // The pre-Fermi check in nova: arch_0 (28:24) must be >= 0xc.
            assert!((c.boot0() >> 24) & 0x1f >= 0xc);
        }
    }

    #[test]
    fn window_register_field_widths() {
        let tu = Chip::by_name("tu102").unwrap().window;
        assert_eq!(tu.offset(), 0x1700);
        assert_eq!(tu.base_mask(), 0x00ff_ffff);
        assert_eq!(tu.writable_mask(), 0x03ff_ffff);
        let gh = Chip::by_name("gh100").unwrap().window;
        assert_eq!(gh.offset(), 0x10fd40);
        assert_eq!(gh.base_mask(), 0x003f_ffff);
        let gb = Chip::by_name("gb202").unwrap().window;
        assert_eq!(gb.base_mask(), 0x007f_ffff);
    }

    #[test]
    fn device_ids() {
        let ids: Vec<(&str, u16, u32)> = CHIPS
            .iter()
            .map(|c| (c.name, c.device_id, c.class_code))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("tu102", 0x1e04, 0x030000),
                ("ga102", 0x2204, 0x030000),
                ("ad102", 0x2684, 0x030000),
                ("gh100", 0x2330, 0x030200),
                ("gb202", 0x2b85, 0x030000),
            ]
        );
    }

    #[test]
    fn table_for_the_harness() {
        let t = Chip::table_json();
        let rows = t.as_array().unwrap();
        assert_eq!(rows.len(), CHIPS.len());
        let gh = rows.iter().find(|r| r["name"] == "gh100").unwrap();
        assert_eq!(gh["chipset"], 0x180);
        assert_eq!(gh["display"], "GH100");
        assert_eq!(gh["architecture"], "Hopper");
        assert_eq!(gh["mmu"], 3);
        assert_eq!(gh["vram_gib"], 80);
        let tu = rows.iter().find(|r| r["name"] == "tu102").unwrap();
        assert_eq!(
            (tu["chipset"].as_u64(), tu["mmu"].as_u64()),
            (Some(0x162), Some(2))
        );
        assert_eq!(tu["page_512m"], false);
    }
}
