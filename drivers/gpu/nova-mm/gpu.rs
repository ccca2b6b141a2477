// SPDX-License-Identifier: GPL-2.0

//! The GPU: [`Gpu`] brings one up, in the order nova-core's `Gpu::new` does: BAR0, the chip's
//! identity (see [`crate::chip`]), the VRAM layout the firmware left, the memory management and
//! BAR1.

use kernel::{
    device::Bound,
    pci,
    prelude::*,
    sync::Arc, //
};

use crate::{
    bar::{
        Bar0,
        MmioStats,
        BAR0_SIZE, //
    },
    chip::Spec,
    fb::{
        FbLayout,
        FwParams, //
    },
    mm::{
        GpuMm,
        MmState, //
    },
    regs, //
};

/// How a GPU is brought up.
#[derive(Clone, Copy, Default)]
pub(crate) struct Options {
    /// Identify the chip and lay out VRAM, write nothing to the GPU: no BAR1 bind, no PRAMIN
    /// access, no invalidate.
    pub(crate) readonly: bool,
    /// Place the page tables (and the BAR1 instance block) in the top this many bytes of usable
    /// VRAM; 0: from the bottom.
    pub(crate) tables_top: u64,
}

/// What a GPU shows of itself (debugfs): its identity, its VRAM layout and the state of its
/// memory management that does not borrow the device.
pub(crate) struct GpuInfo {
    /// The chip's identity.
    pub(crate) spec: Spec,
    /// The layout of VRAM: usable and reserved ranges.
    pub(crate) layout: FbLayout,
    /// Allocators, PRAMIN, TLB, address spaces and counters.
    pub(crate) mm: Arc<MmState>,
}

/// One GPU, brought up: its identity, its VRAM layout and its memory management.
pub(crate) struct Gpu<'a> {
    pdev: &'a pci::Device<Bound>,
    info: Arc<GpuInfo>,
    mm: GpuMm<'a>,
}

/// Reads the GPU's identity registers and identifies the chip.
fn identify(pdev: &pci::Device<Bound>, bar: &Bar0<'_>) -> Result<Spec> {
    let boot0 = bar.read(regs::NV_PMC_BOOT_0).into_raw();
    let boot42 = bar.read(regs::NV_PMC_BOOT_42).into_raw();
    Spec::identify(boot0, boot42)
        .inspect_err(|e| dev_err!(pdev, "{}; not binding\n", e))
        .map_err(Error::from)
}

impl<'a> Gpu<'a> {
    /// Brings up the GPU of `pdev`, whose BAR0 accesses are counted in `mmio`: maps BAR0,
    /// identifies the chip, reads the VRAM layout the firmware left, builds the memory
    /// management over the largest usable range and, unless read-only or firmware owns the GPU,
    /// binds BAR1 (a GPU whose BAR1 cannot be bound stays usable through PRAMIN).
    ///
    /// # Errors
    ///
    /// `ENODEV` for an unsupported chip; the errors of the BAR0 mapping, of the firmware state
    /// and of the VRAM layout; `ENOSPC` without usable VRAM; `ENOMEM`.
    pub(crate) fn new(
        pdev: &'a pci::Device<Bound>,
        opts: Options,
        mmio: Arc<MmioStats>,
    ) -> Result<Self> {
        let bar = pdev.iomap_region_sized::<BAR0_SIZE>(0, c"nova-mm/bar0")?;
        let bar = Arc::new(Bar0::new(pdev, bar, mmio), GFP_KERNEL)?;
        let spec = identify(pdev, &bar)?;
        dev_info!(pdev, "{}\n", spec);

        let params = FwParams::read(&bar, spec.chipset)
            .inspect_err(|e| dev_err!(pdev, "firmware state not usable: {:?}\n", e))?;
        let layout = FbLayout::from_fw_params(spec.chipset, &params)
            .inspect_err(|e| dev_err!(pdev, "cannot lay out VRAM: {}\n", e))?;
        // The allocator manages the largest usable range.
        let usable = layout
            .usable()
            .iter()
            .max_by_key(|r| r.end - r.start)
            .cloned()
            .ok_or(ENOSPC)?;
        if let Some(wpr2) = &layout.wpr2 {
            dev_warn!(
                pdev,
                "WPR2 is set ({:#x}..{:#x}): firmware owns part of the GPU; VRAM from {:#x} up is not used\n",
                wpr2.start,
                wpr2.end,
                usable.end
            );
        }
        let tables = (opts.tables_top != 0)
            .then(|| usable.end.saturating_sub(opts.tables_top).max(usable.start)..usable.end);
        let mut mm = GpuMm::new(bar, &spec, usable.clone(), tables).inspect_err(|e| {
            dev_err!(
                pdev,
                "no memory management over usable VRAM {:#x}..{:#x}: {:?}\n",
                usable.start,
                usable.end,
                e
            )
        })?;
        if opts.readonly {
            dev_info!(
                pdev,
                "read-only mode (nova_mm.readonly=1): identified and laid out, nothing written; BAR1 not bound, no PRAMIN access, no invalidate\n"
            );
            dev_info!(pdev, "{}", layout);
        } else if let Err(e) = mm.bind_bar1(pdev, layout.wpr2.is_some()) {
            // Without BAR1 the GPU's VRAM is still usable through PRAMIN.
            dev_err!(pdev, "BAR1 not usable, going on without it: {:?}\n", e);
        }
        dev_info!(
            pdev,
            "VRAM {} MiB, usable {:#x}..{:#x} ({} MiB)\n",
            params.fb_size >> 20,
            usable.start,
            usable.end,
            (usable.end - usable.start) >> 20
        );
        let info = Arc::new(
            GpuInfo {
                spec,
                layout,
                mm: mm.state().clone(),
            },
            GFP_KERNEL,
        )?;
        Ok(Self { pdev, info, mm })
    }

    /// Returns the PCI device.
    pub(crate) fn pdev(&self) -> &'a pci::Device<Bound> {
        self.pdev
    }

    /// Returns the chip's identity.
    pub(crate) fn spec(&self) -> &Spec {
        &self.info.spec
    }

    /// Returns the layout of VRAM: usable and reserved ranges.
    pub(crate) fn layout(&self) -> &FbLayout {
        &self.info.layout
    }

    /// Returns what the GPU shows of itself (for debugfs).
    pub(crate) fn info(&self) -> &Arc<GpuInfo> {
        &self.info
    }

    /// Returns the memory management: VRAM, PRAMIN, TLB, page tables, address spaces, BAR1.
    pub(crate) fn mm(&self) -> &GpuMm<'a> {
        &self.mm
    }
}
