// SPDX-License-Identifier: GPL-2.0

//! nova-mm: memory management for NVIDIA GPUs, Turing through Blackwell.
//!
//! A PCI driver that identifies the GPU and, in the layers below it, owns its video memory, page
//! tables, TLB invalidation and BAR1 mappings. See `Documentation/gpu/nova-mm/`.

// Without the self-tests, most of the memory-management API (address spaces, mappings, BAR1
// mappings) has no user inside the module: it is there for the driver built on top of it, which
// nova-mm does not contain. The self-test build uses every item, so dead code is still found
// there (make check builds both, with warnings as errors).
#![cfg_attr(not(CONFIG_NOVA_MM_SELFTESTS), allow(dead_code))]

use kernel::{
    driver::Registration,
    pci,
    prelude::*,
    InPlaceModule, //
};

// Checks for tests that must not end the test thread (see `selftest/tests.rs`).
/// Checks a condition inside a device closure; on failure logs where and returns `EINVAL`.
///
/// A failed KUnit assertion ends the test thread on the spot, which inside
/// [`crate::devices::for_each`] would leave the device list (and any PRAMIN window) locked for
/// good. Device closures check with this instead and the failure propagates as an error, which
/// fails the test after the locks are released.
#[cfg(CONFIG_NOVA_MM_SELFTESTS)]
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
#[cfg(CONFIG_NOVA_MM_SELFTESTS)]
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

#[macro_use]
mod counters;

mod bar;
mod chip;
mod debugfs;
mod driver;
mod fb;
mod gpu;
mod mm;
mod regs;

// Declared last, so that its device suites run after the unit suites.
#[cfg(CONFIG_NOVA_MM_SELFTESTS)]
mod selftest;

/// The PCI driver registered: the product's, or with the self-tests the product's with the test
/// harness around each GPU.
#[cfg(not(CONFIG_NOVA_MM_SELFTESTS))]
type Driver = driver::NovaMmDriver;
#[cfg(CONFIG_NOVA_MM_SELFTESTS)]
type Driver = selftest::Driver;

/// The module's name.
pub(crate) const MODULE_NAME: &core::ffi::CStr = <LocalModule as kernel::ModuleMetadata>::NAME;

#[pin_data(PinnedDrop)]
struct NovaMmModule {
    #[pin]
    _driver: Registration<pci::Adapter<Driver>>,
}

#[pinned_drop]
impl PinnedDrop for NovaMmModule {
    fn drop(self: Pin<&mut Self>) {
        // The driver is unregistered after this returns (its field is dropped then), and every
        // GPU's directory holds its own reference to the root, so dropping ours here only
        // removes the root once the last GPU is gone.
        #[cfg(CONFIG_NOVA_MM_SELFTESTS)]
        selftest::exit();
        debugfs::exit();
    }
}

impl InPlaceModule for NovaMmModule {
    fn init(module: &'static kernel::ThisModule) -> impl PinInit<Self, Error> {
        // SAFETY: Called once, from module initialization, before the driver is registered.
        unsafe { debugfs::init() };
        // SAFETY: Called once, from module initialization, after the debugfs root was created
        // and before the driver is registered.
        #[cfg(CONFIG_NOVA_MM_SELFTESTS)]
        unsafe {
            selftest::init()
        };

        try_pin_init!(Self {
            _driver <- Registration::new(MODULE_NAME, module),
            // Every GPU present has been probed by now.
            _: { after_probe()? },
        })
    }
}

/// What runs once every GPU present has been probed: with the self-tests, the stress workers.
fn after_probe() -> Result {
    #[cfg(CONFIG_NOVA_MM_SELFTESTS)]
    selftest::start()?;
    Ok(())
}

#[cfg(not(CONFIG_NOVA_MM_SELFTESTS))]
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
    },
}

// With the self-tests: the product's parameter, then those of the tests.
#[cfg(CONFIG_NOVA_MM_SELFTESTS)]
module! {
    type: NovaMmModule,
    name: "nova_mm",
    authors: ["nova-mm developers"],
    description: "Memory management for NVIDIA GPUs (Turing to Blackwell), with self-tests",
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
