// SPDX-License-Identifier: GPL-2.0

//! Registers of the GPU read or written by nova-mm, outside of the memory-management areas.
//!
//! Offsets and fields are from NVIDIA's manuals (open-gpu-doc `dev_master.ref.txt`,
//! `dev_boot.ref.txt`) and nova-core.

use kernel::io::register;

// PMC

register! {
    /// Basic revision information about the GPU (`NV_PMC_BOOT_0`, `nv_ref.h`).
    pub(crate) NV_PMC_BOOT_0(u32) @ 0x00000000 {
        /// Lower bits of the architecture.
        28:24   architecture_0;
        /// Implementation version of the architecture.
        23:20   implementation;
        /// Most significant bit of the architecture.
        8:8     architecture_1;
        /// Major revision of the chip.
        7:4     major_revision;
        /// Minor revision of the chip.
        3:0     minor_revision;
    }

    /// Extended architecture information (`NV_PMC_BOOT_42`, `nv_ref.h`), the identity of Turing
    /// and later.
    pub(crate) NV_PMC_BOOT_42(u32) @ 0x00000a00 {
        /// Architecture value.
        29:24   architecture;
        /// Implementation version of the architecture.
        23:20   implementation;
        /// Major revision of the chip.
        19:16   major_revision;
        /// Minor revision of the chip.
        15:12   minor_revision;
    }
}
