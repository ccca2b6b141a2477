// SPDX-License-Identifier: GPL-2.0

//! The PCI driver: binds NVIDIA display controllers, maps BAR0 and identifies the chip.

use kernel::{
    debugfs::Scope,
    device::{
        Bound,
        Core, //
    },
    pci,
    pci::{
        Class,
        ClassMask,
        Vendor, //
    },
    prelude::*,
    sync::Arc, //
};

use crate::{
    bar::{
        Bar0,
        BAR0_SIZE, //
    },
    debugfs::{
        self,
        DebugData, //
    },
    devices::Listed,
    fb::{
        FbLayout,
        FwParams, //
    },
    gpu::Spec,
    mm::GpuMm,
    regs, //
};

/// Per-GPU driver data.
#[pin_data]
pub(crate) struct NovaMm<'bound> {
    // Declared first so that it is dropped first: the GPU leaves the device list before anything
    // else of it goes away.
    _listed: Listed,
    /// Workers started with `nova_mm.stress=1`; dropped next, which stops them and waits for them
    /// while everything they use is still there.
    pub(crate) stress: crate::stress::Stress,
    /// The PCI device.
    pub(crate) pdev: &'bound pci::Device<Bound>,
    // Dropped before the state it shows.
    _debugfs: Option<Pin<KBox<Scope<DebugData>>>>,
    /// The chip's identity.
    pub(crate) spec: Spec,
    /// The layout of VRAM: usable and reserved ranges.
    pub(crate) layout: Arc<FbLayout>,
    /// Memory management: BAR0, VRAM, PRAMIN, TLB, page tables, address spaces.
    pub(crate) mm: GpuMm<'bound>,
}

/// The nova-mm PCI driver.
pub(crate) struct NovaMmDriver;

kernel::pci_device_table!(
    PCI_TABLE,
    <NovaMmDriver as pci::Driver>::IdInfo,
    [
        // NVIDIA GPUs show up as VGA or 3D controllers.
        (
            pci::DeviceId::from_class_and_vendor(
                Class::DISPLAY_VGA,
                ClassMask::ClassSubclass,
                Vendor::NVIDIA
            ),
            ()
        ),
        (
            pci::DeviceId::from_class_and_vendor(
                Class::DISPLAY_3D,
                ClassMask::ClassSubclass,
                Vendor::NVIDIA
            ),
            ()
        ),
    ]
);

/// Reads the GPU's identity registers and identifies the chip.
fn identify(pdev: &pci::Device<Bound>, bar: &Bar0<'_>) -> Result<Spec> {
    let boot0 = bar.read(regs::NV_PMC_BOOT_0).into_raw();
    let boot42 = bar.read(regs::NV_PMC_BOOT_42).into_raw();
    Spec::identify(boot0, boot42)
        .inspect_err(|e| dev_err!(pdev, "{}; not binding\n", e))
        .map_err(Error::from)
}

impl pci::Driver for NovaMmDriver {
    type IdInfo = ();
    type Data<'bound> = NovaMm<'bound>;
    const ID_TABLE: pci::IdTable<Self::IdInfo> = &PCI_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        pin_init::pin_init_scope(move || {
            let readonly = crate::module_parameters::readonly.value();
            pdev.enable_device_mem()?;
            if !readonly {
                pdev.set_master();
            }
            let pdev: &'bound pci::Device<Bound> = pdev;
            let bar = Arc::new(
                Bar0::new(
                    pdev,
                    pdev.iomap_region_sized::<BAR0_SIZE>(0, c"nova-mm/bar0")?,
                )?,
                GFP_KERNEL,
            )?;
            let spec = identify(pdev, &bar)?;
            dev_info!(pdev, "{}\n", spec);

            let params = FwParams::read(&bar, spec.chipset)
                .inspect_err(|e| dev_err!(pdev, "firmware state not usable: {:?}\n", e))?;
            let layout = Arc::new(
                FbLayout::from_fw_params(spec.chipset, &params).inspect_err(|e| {
                    dev_err!(pdev, "cannot lay out VRAM: {:?}\n", e);
                })?,
                GFP_KERNEL,
            )?;
            // The allocator manages the largest usable range.
            let usable = layout
                .usable()
                .iter()
                .max_by_key(|r| r.end - r.start)
                .cloned()
                .ok_or(ENOSPC)?;
            let mut mm = GpuMm::new(bar.clone(), &spec, usable.clone())?;
            if readonly {
                dev_info!(
                    pdev,
                    "read-only mode (nova_mm.readonly=1): identified and laid out, nothing written; BAR1 not bound, no PRAMIN access, no invalidate\n"
                );
                dev_info!(pdev, "{}", *layout);
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
            let stress = crate::stress::Stress::new(spec.chipset as u32)?;
            let dbg = debugfs::create(
                DebugData {
                    spec,
                    layout: layout.clone(),
                    vram: mm.vram.clone(),
                    pramin: mm.pramin.clone(),
                    tlb: mm.tlb.clone(),
                    pool: mm.pool.clone(),
                    spaces: mm.spaces.clone(),
                    bar1: mm.bar1.as_ref().map(|b| b.info()),
                    zero_fill_writes: mm.zero_fill_writes.clone(),
                    mmio: bar.stats().clone(),
                    stress: stress.group().clone(),
                },
                pdev.as_ref().name(),
            );

            Ok(try_pin_init!(&this in NovaMm {
                stress,
                pdev,
                _debugfs: dbg,
                spec,
                layout,
                mm,
                // SAFETY: Every other field is initialized at this point (fields are initialized
                // in the order written here), the data is pinned, and `_listed` is declared
                // first, so it is dropped before the rest.
                _listed: unsafe { Listed::new(this.as_ptr()) }?,
            }))
        })
    }
}
