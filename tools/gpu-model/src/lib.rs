// SPDX-License-Identifier: MIT OR Apache-2.0

//! gpu-model: a userspace model of the memory subsystem of an NVIDIA GPU
//! (Turing..Blackwell), attached to QEMU as a PCI device over vfio-user.
//!
//! It is an independent implementation written from NVIDIA's published
//! manuals (open-gpu-doc, the nvhw reference headers), not from any
//! driver's code. One module per hardware unit:
//!
//! - [`chip`]: personalities (PCI identity, BOOT registers, layouts).
//! - [`pci`]: configuration space and the vfio-user region table.
//! - [`regs`]: the BAR0 register map and dispatch.
//! - [`fw`]: firmware-left registers and reserved VRAM.
//! - [`vram`]: sparse, poisoned VRAM.
//! - [`pramin`]: the BAR0 window into VRAM.
//! - [`mmu`]: the page-table walker ([`mmu::v2`], [`mmu::v3`] formats).
//! - [`tlb`]: cached translations and the invalidate registers.
//! - [`bar1`]: BAR1 instance-block binding.
//! - [`gpu`]: the core tying the units together, testable without sockets.
//! - [`report`]: rule checker records, counters, JSON report.
//! - [`backend`], [`protocol`]: the vfio-user device and server loop.
//! - [`control`], [`app`], [`cli`]: control socket, program flow, options.
//! - [`hostile`]: `--hostile <seed>`, firmware registers drawn at random per reset.
//! - [`walk`]: the offline `gpu-model walk` command over a VRAM dump.

pub mod app;
pub mod backend;
pub mod bar1;
pub mod chip;
pub mod cli;
pub mod control;
pub mod fw;
pub mod gpu;
pub mod hostile;
pub mod mmu;
pub mod pci;
pub mod pramin;
pub mod pri;
pub mod protocol;
pub mod regs;
pub mod report;
pub mod sequence;
pub mod shared;
pub mod tlb;
pub mod vram;
pub mod walk;
