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

// Checks for tests that must not end the test thread (see `tests.rs`).
/// Checks a condition inside a device closure; on failure logs where and returns `EINVAL`.
///
/// A failed KUnit assertion ends the test thread on the spot, which inside
/// [`crate::devices::for_each`] would leave the device list (and any PRAMIN window) locked for
/// good. Device closures check with this instead and the failure propagates as an error, which
/// fails the test after the locks are released.
macro_rules! ensure {
    ($cond:expr) => {
        if !$cond {
            kernel::kunit::err(fmt!(
                "    # {}:{}: check failed: {}\n",
                file!(),
                line!(),
                stringify!($cond)
            ));
            return Err(EINVAL);
        }
    };
}

/// Like [`ensure!`], for equality; logs both values.
macro_rules! ensure_eq {
    ($a:expr, $b:expr) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            kernel::kunit::err(fmt!(
                "    # {}:{}: check failed: {} == {} ({:?} != {:?})\n",
                file!(),
                line!(),
                stringify!($a),
                stringify!($b),
                a,
                b
            ));
            return Err(EINVAL);
        }
    }};
}

mod badinput;
mod bar;
mod bench;
mod debugfs;
mod devices;
mod driver;
mod fb;
mod gpu;
mod mm;
mod regs;
mod tests;

// Declared after `tests`, so that its suite runs after theirs: it leaves mappings in place.
mod stress;

/// The module's name.
pub(crate) const MODULE_NAME: &core::ffi::CStr = <LocalModule as kernel::ModuleMetadata>::NAME;

#[pin_data(PinnedDrop)]
struct NovaMmModule {
    #[pin]
    _driver: Registration<pci::Adapter<driver::NovaMmDriver>>,
}

#[pinned_drop]
impl PinnedDrop for NovaMmModule {
    fn drop(self: Pin<&mut Self>) {
        // The driver is unregistered after this returns (its field is dropped then), and every
        // GPU's directory holds its own reference to the root, so dropping ours here only
        // removes the root once the last GPU is gone.
        debugfs::exit();
    }
}

impl InPlaceModule for NovaMmModule {
    fn init(module: &'static kernel::ThisModule) -> impl PinInit<Self, Error> {
        // For the test harness: what follows belongs to this load (the page tables it checks
        // in the models' VRAM after power-off are those of the last load).
        pr_info!("NOVA-LOAD\n");
        // SAFETY: Called once, from module initialization, before the driver is registered.
        unsafe { devices::init() };
        // SAFETY: Called once, from module initialization, before the driver is registered.
        unsafe { debugfs::init() };

        try_pin_init!(Self {
            _driver <- Registration::new(MODULE_NAME, module),
            // Every GPU present has been probed by now.
            _: {
                if module_parameters::stress.value() {
                    devices::for_each(stress::Stress::start)?;
                }
            },
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
        readonly: bool {
            default: false,
            description: "Read-only first contact: identify the chip, read the firmware state and lay out VRAM, print it, write nothing to the GPU",
        },
        expect_chipsets: u64 {
            default: 0,
            description: "Chipset codes the device tests expect (12 bits each, e.g. 0x180172)",
        },
        expect_vram_gib: u64 {
            default: 0,
            description: "VRAM sizes in GiB the device tests expect, 12 bits each, in the order of expect_chipsets",
        },
        expect_tlb_hang: bool {
            default: false,
            description: "The device tests expect TLB invalidates to never complete (model fault injection)",
        },
        expect_bar1_faults: bool {
            default: false,
            description: "The device tests may cause BAR1 faults and read-only writes (declared expected in the models)",
        },
        stress: bool {
            default: false,
            description: "Run concurrent map/unmap/protect/BAR1 workers on every GPU from load until it goes away (rmmod or unplug)",
        },
        quick: bool {
            default: false,
            description: "Skip the tests that take seconds on a debug kernel (for load/unload cycles after the first)",
        },
        pt_top_gib: u64 {
            default: 0,
            description: "Place page tables and the BAR1 instance block in the top N GiB of usable VRAM (device tests of high addresses; 0: from the bottom)",
        },
        bench: bool {
            default: false,
            description: "Run the page-table benchmarks (suite nova_mm_bench) at load",
        },
    },
}
