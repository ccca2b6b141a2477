// SPDX-License-Identifier: GPL-2.0

//! nova-mm: memory management for NVIDIA GPUs, Turing through Blackwell.
//!
//! A PCI driver that identifies the GPU and, in the layers below it, owns its video memory, page
//! tables, TLB invalidation and BAR1 mappings. See `Documentation/gpu/nova-mm/`.

use kernel::{
    driver::Registration,
    pci,
    prelude::*,
    InPlaceModule, //
};

mod devices;
mod driver;
mod fb;
mod gpu;
mod mm;
mod regs;
mod tests;

/// The module's name.
pub(crate) const MODULE_NAME: &core::ffi::CStr = <LocalModule as kernel::ModuleMetadata>::NAME;

#[pin_data]
struct NovaMmModule {
    #[pin]
    _driver: Registration<pci::Adapter<driver::NovaMmDriver>>,
}

impl InPlaceModule for NovaMmModule {
    fn init(module: &'static kernel::ThisModule) -> impl PinInit<Self, Error> {
        // SAFETY: Called once, from module initialization, before the driver is registered.
        unsafe { devices::init() };

        try_pin_init!(Self {
            _driver <- Registration::new(MODULE_NAME, module),
        })
    }
}

module! {
    type: NovaMmModule,
    name: "nova_mm",
    authors: ["nova-mm developers"],
    description: "Memory management for NVIDIA GPUs (Turing to Blackwell)",
    license: "GPL v2",
    params: {
        expect_chipsets: u64 {
            default: 0,
            description: "Chipset codes the device tests expect (12 bits each, e.g. 0x180172)",
        },
    },
}
