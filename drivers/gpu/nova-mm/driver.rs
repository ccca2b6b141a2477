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
    bar::MmioStats,
    debugfs::{
        self,
        DebugData, //
    },
    gpu::{
        Gpu,
        Options, //
    },
};

/// Per-GPU driver data.
#[pin_data]
pub(crate) struct NovaMm<'bound> {
    // Dropped before the state it shows.
    _debugfs: Option<Pin<KBox<Scope<DebugData>>>>,
    gpu: Gpu<'bound>,
}

impl<'bound> NovaMm<'bound> {
    /// Brings up the GPU of `pdev` with `opts` (see [`Gpu::new`]), its BAR0 accesses counted in
    /// `mmio`, and gives it a debugfs directory.
    pub(crate) fn new(
        pdev: &'bound pci::Device<Core<'_>>,
        opts: Options,
        mmio: Arc<MmioStats>,
    ) -> Result<Self> {
        pdev.enable_device_mem()?;
        if !opts.readonly {
            pdev.set_master();
        }
        let pdev: &'bound pci::Device<Bound> = pdev;
        let gpu = Gpu::new(pdev, opts, mmio)?;
        Ok(Self {
            _debugfs: debugfs::create(gpu.info().clone(), pdev.as_ref().name()),
            gpu,
        })
    }

    /// Returns the GPU.
    pub(crate) fn gpu(&self) -> &Gpu<'bound> {
        &self.gpu
    }
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

impl pci::Driver for NovaMmDriver {
    type IdInfo = ();
    type Data<'bound> = NovaMm<'bound>;
    const ID_TABLE: pci::IdTable<Self::IdInfo> = &PCI_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        let opts = Options {
            readonly: crate::module_parameters::readonly.value(),
            ..Options::default()
        };
        MmioStats::new_shared().and_then(|mmio| NovaMm::new(pdev, opts, mmio))
    }
}
