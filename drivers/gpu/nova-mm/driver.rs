// SPDX-License-Identifier: GPL-2.0

//! The PCI driver: binds NVIDIA display controllers, maps BAR0 and identifies the chip.

use kernel::{
    device::{
        Bound,
        Core, //
    },
    io::Io,
    pci,
    pci::{
        Class,
        ClassMask,
        Vendor, //
    },
    prelude::*,
    sizes::SZ_16M,
};

use crate::{
    devices::Listed,
    gpu::Spec,
    regs, //
};

/// Size of the BAR0 mapping: all of the GPU's registers and the PRAMIN aperture.
pub(crate) const BAR0_SIZE: usize = SZ_16M;

/// The mapped BAR0 of a GPU.
pub(crate) type Bar0<'a> = pci::Bar<'a, BAR0_SIZE>;

/// Per-GPU driver data.
#[pin_data]
pub(crate) struct NovaMm<'bound> {
    // Declared first so that it is dropped first: the GPU leaves the device list before anything
    // else of it goes away.
    _listed: Listed,
    /// The PCI device.
    pub(crate) pdev: &'bound pci::Device<Bound>,
    /// BAR0: registers and the PRAMIN aperture.
    pub(crate) bar: Bar0<'bound>,
    /// The chip's identity.
    pub(crate) spec: Spec,
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
            pdev.enable_device_mem()?;
            pdev.set_master();
            let pdev: &'bound pci::Device<Bound> = pdev;
            let bar = pdev.iomap_region_sized::<BAR0_SIZE>(0, c"nova-mm/bar0")?;
            let spec = identify(pdev, &bar)?;
            dev_info!(pdev, "{}\n", spec);

            Ok(try_pin_init!(&this in NovaMm {
                pdev,
                bar,
                spec,
                // SAFETY: Every other field is initialized at this point (fields are initialized
                // in the order written here), the data is pinned, and `_listed` is declared
                // first, so it is dropped before the rest.
                _listed: unsafe { Listed::new(this.as_ptr()) }?,
            }))
        })
    }
}
