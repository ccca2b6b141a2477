// SPDX-License-Identifier: GPL-2.0

//! Chip identification: `NV_PMC_BOOT_0` and `NV_PMC_BOOT_42` to chipset, architecture and MMU
//! version.
//!
//! Turing and later are identified by `NV_PMC_BOOT_42`; `NV_PMC_BOOT_0` only screens out chips
//! older than Fermi, whose `NV_PMC_BOOT_42` may not exist.

use kernel::{
    fmt,
    prelude::*, //
};

use crate::regs::{
    NV_PMC_BOOT_0,
    NV_PMC_BOOT_42, //
};

macro_rules! define_chipset {
    ({ $($variant:ident = $value:expr),* $(,)* }) => {
        /// A GPU chipset supported by nova-mm: `(architecture << 4) | implementation`.
        #[derive(fmt::Debug, Copy, Clone, PartialEq, Eq, PartialOrd, Ord)]
        pub(crate) enum Chipset {
            $(
                #[doc = concat!("The ", stringify!($variant), " chipset.")]
                $variant = $value,
            )*
        }

        impl Chipset {
            /// Every supported chipset.
            pub(crate) const ALL: &'static [Chipset] = &[$(Chipset::$variant,)*];

            /// Returns the chipset whose code is `value`, if it is supported.
            pub(crate) const fn from_code(value: u32) -> Option<Self> {
                match value {
                    $($value => Some(Chipset::$variant),)*
                    _ => None,
                }
            }

            /// Returns the chipset's code, `(architecture << 4) | implementation`, e.g. 0x172.
            pub(crate) const fn code(self) -> u32 {
                // CAST: the enum's discriminants are the chipset codes, all below 0x200.
                self as u32
            }

            /// Returns the name of the chipset, e.g. `GA102`.
            pub(crate) const fn name(self) -> &'static str {
                match self {
                    $(Chipset::$variant => stringify!($variant),)*
                }
            }
        }
    };
}

define_chipset!({
    // Turing
    TU102 = 0x162,
    TU104 = 0x164,
    TU106 = 0x166,
    TU117 = 0x167,
    TU116 = 0x168,
    // Ampere
    GA100 = 0x170,
    GA102 = 0x172,
    GA103 = 0x173,
    GA104 = 0x174,
    GA106 = 0x176,
    GA107 = 0x177,
    // Hopper
    GH100 = 0x180,
    // Ada
    AD102 = 0x192,
    AD103 = 0x193,
    AD104 = 0x194,
    AD106 = 0x196,
    AD107 = 0x197,
    // Blackwell GB10x
    GB100 = 0x1a0,
    GB102 = 0x1a2,
    // Blackwell GB20x
    GB202 = 0x1b2,
    GB203 = 0x1b3,
    GB205 = 0x1b5,
    GB206 = 0x1b6,
    GB207 = 0x1b7,
});

/// GPU architecture, the `ARCHITECTURE` field of `NV_PMC_BOOT_42`.
#[derive(fmt::Debug, Copy, Clone, PartialEq, Eq)]
pub(crate) enum Architecture {
    /// Turing (TU10x, TU11x).
    Turing = 0x16,
    /// Ampere (GA10x).
    Ampere = 0x17,
    /// Hopper (GH100).
    Hopper = 0x18,
    /// Ada Lovelace (AD10x).
    Ada = 0x19,
    /// Blackwell data centre (GB10x).
    BlackwellGB10x = 0x1a,
    /// Blackwell consumer (GB20x).
    BlackwellGB20x = 0x1b,
}

impl Architecture {
    /// Returns the marketing name of the architecture.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Turing => "Turing",
            Self::Ampere => "Ampere",
            Self::Hopper => "Hopper",
            Self::Ada => "Ada",
            Self::BlackwellGB10x | Self::BlackwellGB20x => "Blackwell",
        }
    }

    /// Returns the page-table format of the architecture's MMU.
    pub(crate) const fn mmu_version(self) -> MmuVersion {
        match self {
            Self::Turing | Self::Ampere | Self::Ada => MmuVersion::V2,
            Self::Hopper | Self::BlackwellGB10x | Self::BlackwellGB20x => MmuVersion::V3,
        }
    }
}

/// Page-table format of the GPU's MMU.
#[derive(fmt::Debug, Copy, Clone, PartialEq, Eq)]
pub(crate) enum MmuVersion {
    /// Version 2: 5 levels, 49-bit virtual addresses (Pascal to Ada).
    V2,
    /// Version 3: 6 levels, 57-bit virtual addresses, PCF fields (Hopper, Blackwell).
    V3,
}

impl MmuVersion {
    /// Returns the version number.
    pub(crate) const fn number(self) -> u32 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }
}

impl Chipset {
    /// Returns the chipset's architecture.
    pub(crate) const fn arch(self) -> Architecture {
        match self {
            Self::TU102 | Self::TU104 | Self::TU106 | Self::TU117 | Self::TU116 => {
                Architecture::Turing
            }
            Self::GA100 | Self::GA102 | Self::GA103 | Self::GA104 | Self::GA106 | Self::GA107 => {
                Architecture::Ampere
            }
            Self::GH100 => Architecture::Hopper,
            Self::AD102 | Self::AD103 | Self::AD104 | Self::AD106 | Self::AD107 => {
                Architecture::Ada
            }
            Self::GB100 | Self::GB102 => Architecture::BlackwellGB10x,
            Self::GB202 | Self::GB203 | Self::GB205 | Self::GB206 | Self::GB207 => {
                Architecture::BlackwellGB20x
            }
        }
    }

    /// Returns the page-table format of the chipset's MMU.
    pub(crate) const fn mmu_version(self) -> MmuVersion {
        self.arch().mmu_version()
    }

    /// Whether the MMU takes 512 MiB pages (a PTE at PD1): every architecture but Turing
    /// (open-gpu-kernel-modules `uvm_ampere_mmu.c` adds 512 MiB to the Turing page sizes).
    pub(crate) const fn has_512m_pages(self) -> bool {
        !matches!(self.arch(), Architecture::Turing)
    }
}

/// Why a GPU was not identified.
#[derive(fmt::Debug, Copy, Clone, PartialEq, Eq)]
pub(crate) enum IdentifyError {
    /// `NV_PMC_BOOT_0` names a chip older than Fermi.
    PreFermi {
        /// The raw `NV_PMC_BOOT_0` value.
        boot0: u32,
    },
    /// `NV_PMC_BOOT_42` names a chipset nova-mm does not support.
    Unsupported {
        /// The raw `NV_PMC_BOOT_42` value.
        boot42: u32,
    },
}

impl fmt::Display for IdentifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::PreFermi { boot0 } => {
                write!(f, "GPU older than Fermi (NV_PMC_BOOT_0 = {boot0:#010x})")
            }
            Self::Unsupported { boot42 } => write!(
                f,
                "unsupported or unknown chip: NV_PMC_BOOT_42 = {boot42:#010x} (chipset {:#x})",
                chipset_code(boot42)
            ),
        }
    }
}

impl From<IdentifyError> for Error {
    fn from(_: IdentifyError) -> Error {
        ENODEV
    }
}

/// Revision of a chip, from `NV_PMC_BOOT_42`.
#[derive(fmt::Debug, Copy, Clone, PartialEq, Eq)]
pub(crate) struct Revision {
    /// Major revision (the letter: 0xa is "A").
    pub(crate) major: u8,
    /// Minor revision.
    pub(crate) minor: u8,
}

/// The identity of a GPU: chipset and revision.
#[derive(fmt::Debug, Copy, Clone, PartialEq, Eq)]
pub(crate) struct Spec {
    /// The chipset.
    pub(crate) chipset: Chipset,
    /// The chip revision.
    pub(crate) revision: Revision,
}

/// Returns the chipset code `(architecture << 4) | implementation` of a `NV_PMC_BOOT_42` value.
fn chipset_code(boot42: u32) -> u32 {
    let reg = NV_PMC_BOOT_42::from_raw(boot42);
    (reg.architecture().get() << 4) | reg.implementation().get()
}

impl Spec {
    /// Identifies a GPU from its `NV_PMC_BOOT_0` and `NV_PMC_BOOT_42` values.
    ///
    /// # Errors
    ///
    /// [`IdentifyError::PreFermi`] for chips older than Fermi, [`IdentifyError::Unsupported`]
    /// for any `NV_PMC_BOOT_42` that does not name a Turing or later chipset.
    pub(crate) fn identify(boot0: u32, boot42: u32) -> Result<Spec, IdentifyError> {
        // From NVIDIA's open-gpu-doc: GF100 is architecture 0xc; older chips leave the MSB of
        // the architecture (bit 8) clear.
        const ARCHITECTURE_GF100: u32 = 0xc;

        let b0 = NV_PMC_BOOT_0::from_raw(boot0);
        if b0.architecture_1().get() == 0 && b0.architecture_0().get() < ARCHITECTURE_GF100 {
            return Err(IdentifyError::PreFermi { boot0 });
        }
        let chipset = Chipset::from_code(chipset_code(boot42))
            .ok_or(IdentifyError::Unsupported { boot42 })?;
        let reg = NV_PMC_BOOT_42::from_raw(boot42);
        Ok(Spec {
            chipset,
            revision: Revision {
                // CAST: both fields are 4 bits wide.
                major: reg.major_revision().get() as u8,
                minor: reg.minor_revision().get() as u8,
            },
        })
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NVIDIA {} ({}), MMU v{}, rev {:x}{:x}",
            self.chipset.name(),
            self.chipset.arch().name(),
            self.chipset.mmu_version().number(),
            self.revision.major,
            self.revision.minor
        )
    }
}

#[cfg(CONFIG_NOVA_MM_SELFTESTS)]
#[kunit_tests(nova_mm_chip_id)]
mod tests {
    use super::*;

    /// Builds a `NV_PMC_BOOT_42` value as a Turing+ GPU reports it.
    fn boot42(chipset: u32, major: u32, minor: u32) -> u32 {
        ((chipset >> 4) << 24) | ((chipset & 0xf) << 20) | (major << 16) | (minor << 12)
    }

    /// Builds the matching `NV_PMC_BOOT_0` value (architecture in 28:24, implementation 23:20).
    fn boot0(chipset: u32) -> u32 {
        (((chipset >> 4) & 0x1f) << 24) | ((chipset & 0xf) << 20) | ((chipset >> 8) & 1) << 8 | 0xa1
    }

    #[test]
    fn table() -> Result {
        // (chipset code, expected chipset, architecture name, MMU version)
        let table: &[(u32, Chipset, &str, u32)] = &[
            (0x162, Chipset::TU102, "Turing", 2),
            (0x164, Chipset::TU104, "Turing", 2),
            (0x166, Chipset::TU106, "Turing", 2),
            (0x167, Chipset::TU117, "Turing", 2),
            (0x168, Chipset::TU116, "Turing", 2),
            (0x170, Chipset::GA100, "Ampere", 2),
            (0x172, Chipset::GA102, "Ampere", 2),
            (0x173, Chipset::GA103, "Ampere", 2),
            (0x174, Chipset::GA104, "Ampere", 2),
            (0x176, Chipset::GA106, "Ampere", 2),
            (0x177, Chipset::GA107, "Ampere", 2),
            (0x180, Chipset::GH100, "Hopper", 3),
            (0x192, Chipset::AD102, "Ada", 2),
            (0x193, Chipset::AD103, "Ada", 2),
            (0x194, Chipset::AD104, "Ada", 2),
            (0x196, Chipset::AD106, "Ada", 2),
            (0x197, Chipset::AD107, "Ada", 2),
            (0x1a0, Chipset::GB100, "Blackwell", 3),
            (0x1a2, Chipset::GB102, "Blackwell", 3),
            (0x1b2, Chipset::GB202, "Blackwell", 3),
            (0x1b3, Chipset::GB203, "Blackwell", 3),
            (0x1b5, Chipset::GB205, "Blackwell", 3),
            (0x1b6, Chipset::GB206, "Blackwell", 3),
            (0x1b7, Chipset::GB207, "Blackwell", 3),
        ];
        assert_eq!(table.len(), Chipset::ALL.len());
        for &(code, chipset, arch, mmu) in table {
            let spec = Spec::identify(boot0(code), boot42(code, 0xa, 1));
            assert_eq!(spec.map(|s| s.chipset), Ok(chipset));
            assert_eq!(chipset.code(), code);
            assert_eq!(chipset.arch().name(), arch);
            assert_eq!(chipset.mmu_version().number(), mmu);
        }
        Ok(())
    }

    #[test]
    fn ga102_emulator_values() -> Result {
        // The values a GA102 rev A1 reports (HARDWARE.md: 0x172A1000 / 0x172000A1).
        let spec = Spec::identify(0x1720_00a1, 0x172a_1000).map_err(Error::from)?;
        assert_eq!(spec.chipset, Chipset::GA102);
        assert_eq!(
            spec.revision,
            Revision {
                major: 0xa,
                minor: 1
            }
        );
        Ok(())
    }

    #[test]
    fn rejects() -> Result {
        // Older, unknown or garbage chips, with the value that is named in the error.
        let unsupported: &[u32] = &[
            boot42(0x140, 0xa, 1), // GV100 (Volta): too old for nova-mm.
            boot42(0x13b, 0xa, 1), // GP10B (Pascal).
            boot42(0x169, 0xa, 1), // Unknown Turing implementation.
            boot42(0x1c0, 0xa, 1), // A future architecture.
            0,
            0xffff_ffff, // A GPU that fell off the bus.
            0xbadf_1100, // A PRI error pattern.
        ];
        for &b42 in unsupported {
            assert_eq!(
                Spec::identify(0x1720_00a1, b42),
                Err(IdentifyError::Unsupported { boot42: b42 })
            );
        }
        // NV50 (G80) era: architecture 0x5 in BOOT_0, no architecture MSB.
        assert_eq!(
            Spec::identify(0x0500_00a1, boot42(0x172, 0xa, 1)),
            Err(IdentifyError::PreFermi { boot0: 0x0500_00a1 })
        );
        assert_eq!(Error::from(IdentifyError::PreFermi { boot0: 0 }), ENODEV);
        Ok(())
    }
}
