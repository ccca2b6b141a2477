// SPDX-License-Identifier: GPL-2.0

//! Memory management of the GPU: video memory, the PRAMIN window and TLB invalidation.

pub(crate) mod pramin;
pub(crate) mod tlb;
pub(crate) mod vram;
