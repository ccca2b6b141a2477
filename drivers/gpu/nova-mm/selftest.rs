// SPDX-License-Identifier: GPL-2.0

//! The self-tests: built only with `CONFIG_NOVA_MM_SELFTESTS` (`make NOVA_MM_SELFTESTS=n` builds
//! the product alone).
//!
//! [`Driver`] is the product's PCI driver with a test harness around each GPU it binds: the
//! device list the KUnit device suites find the GPUs in, the `nova_mm.stress=1` workers, what
//! the tests leave mapped for the model's walker, and the markers the harness reads in the
//! kernel log. It reaches the product only through the product's API: [`NovaMm`] brings a GPU
//! up exactly as the product driver does.

use kernel::{
    debugfs::{
        Dir,
        Scope, //
    },
    device::Core,
    fmt, new_mutex, pci,
    prelude::*,
    sync::{
        atomic::Relaxed,
        global_lock,
        Arc,
        Mutex, //
    },
};

use crate::{
    bar::MmioStats,
    driver::{
        NovaMm,
        NovaMmDriver, //
    },
    gpu::{
        Gpu,
        Options, //
    },
    mm::{
        vmm::{
            Mapping,
            Reservation,
            Vmm, //
        },
        vram::VramAllocation,
    },
};

pub(crate) mod badinput;
pub(crate) mod bench;
pub(crate) mod devices;
pub(crate) mod helpers;
pub(crate) mod tests;

// Declared after `tests`, so that its suite runs after theirs: it leaves mappings in place.
pub(crate) mod stress;

use devices::Listed;
use stress::{
    Stress,
    WorkGroup, //
};

global_lock! {
    // SAFETY: Initialized in module initialization, before the driver is registered.
    unsafe(uninit) static DIR: Mutex<Option<Dir>> = None;
}

/// Sets the self-tests up, before the driver is registered.
///
/// # Safety
///
/// Must be called once, from module initialization, after the product's debugfs root exists and
/// before the driver is registered.
pub(crate) unsafe fn init() {
    // For the test harness: what follows belongs to this load (the page tables it checks in the
    // models' VRAM after power-off are those of the last load).
    pr_info!("NOVA-LOAD\n");
    // SAFETY: Called once, from module initialization, before the driver is registered.
    unsafe { devices::init() };
    // SAFETY: Called exactly once, before any use, as required of our caller.
    unsafe { DIR.init() };
    *DIR.lock() = crate::debugfs::root().map(|r| r.subdir(c"selftest"));
}

/// Starts what runs from load on: the stress workers of every GPU with `nova_mm.stress=1`.
/// Called once the driver is registered, when every GPU present has been probed.
pub(crate) fn start() -> Result {
    if crate::module_parameters::stress.value() {
        devices::for_each(Stress::start)?;
    }
    Ok(())
}

/// Removes the self-tests' debugfs directory.
pub(crate) fn exit() {
    *DIR.lock() = None;
}

/// Something the device tests leave mapped until the GPU goes away, so that the test harness can
/// check the page tables in the model's VRAM after power-off.
// Held only to keep it alive; never read.
#[allow(dead_code)]
pub(crate) enum Kept<'a> {
    /// An address space.
    Space(Arc<Vmm<'a>>),
    /// A reservation.
    Reservation(Reservation<'a>),
    /// A mapping.
    Mapping(Mapping<'a>),
    /// VRAM whose contents the harness checks in the model's dump.
    Memory(VramAllocation),
}

/// The last lines of a GPU for the harness, printed when everything else of it is gone.
struct Markers<'a> {
    pdev: &'a pci::Device<kernel::device::Bound>,
    mmio: Arc<MmioStats>,
    chipset: u32,
}

impl Drop for Markers<'_> {
    fn drop(&mut self) {
        let (r, w) = (
            self.mmio.reads.load(Relaxed),
            self.mmio.writes.load(Relaxed),
        );
        // The last MMIO of this GPU: what the harness compares with the model's totals, which
        // include the accesses made after debugfs was last read.
        pr_info!(
            "NOVA-FINAL {:#x} mmio_reads={} mmio_writes={}\n",
            self.chipset,
            r,
            w
        );
        bar0_final(self.pdev, &self.mmio);
    }
}

/// Every BAR0 access of one binding: the harness adds these up over every load (probes that
/// gave up included) and compares them with the model's totals.
fn bar0_final(pdev: &pci::Device<kernel::device::Bound>, mmio: &MmioStats) {
    pr_info!(
        "NOVA-BAR0-FINAL dev={} mmio_reads={} mmio_writes={}\n",
        pdev.as_ref().name(),
        mmio.reads.load(Relaxed),
        mmio.writes.load(Relaxed)
    );
}

/// A GPU bound by the product driver, with the self-tests' state around it.
#[pin_data]
pub(crate) struct TestedGpu<'bound> {
    // Declared first so that it is dropped first: the GPU leaves the device list before anything
    // else of it goes away.
    _listed: Listed,
    /// Workers started with `nova_mm.stress=1`; dropped next, which stops them and waits for them
    /// while everything they use is still there.
    stress: Stress,
    // Dropped before the workers' counts it shows.
    _stress_dir: Option<Pin<KBox<Scope<Arc<WorkGroup>>>>>,
    /// The product's driver data: the GPU's debugfs directory and the GPU.
    drv: NovaMm<'bound>,
    /// What the tests left mapped. Dropped after the GPU, which retired its address spaces and
    /// put BAR1 back in physical mode: released with no MMIO.
    kept: Pin<KBox<Mutex<KVec<Kept<'bound>>>>>,
    _markers: Markers<'bound>,
}

impl<'bound> TestedGpu<'bound> {
    /// Returns the GPU.
    pub(crate) fn gpu(&self) -> &Gpu<'bound> {
        self.drv.gpu()
    }

    /// Keeps `k` until the GPU goes away.
    ///
    /// # Errors
    ///
    /// `ENOMEM`; `k` is dropped then.
    pub(crate) fn keep(&self, k: Kept<'bound>) -> Result {
        self.kept.lock().push(k, GFP_KERNEL)?;
        Ok(())
    }
}

impl<'bound> core::ops::Deref for TestedGpu<'bound> {
    type Target = Gpu<'bound>;

    fn deref(&self) -> &Gpu<'bound> {
        self.gpu()
    }
}

/// Creates the debugfs file `selftest/<pci device>/stress` with the counts of `group`.
fn stress_dir(group: &Arc<WorkGroup>, name: &CStr) -> Option<Pin<KBox<Scope<Arc<WorkGroup>>>>> {
    let dir = DIR.lock().clone()?;
    let scope = dir.scope(group.clone(), name, |g, dir| {
        dir.read_callback_file(c"stress", g, &show_stress);
    });
    KBox::pin_init(scope, GFP_KERNEL).ok()
}

fn show_stress(g: &Arc<WorkGroup>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "ops: {}", g.stats.ops())?;
    g.stats.show(f, "")
}

/// The product's PCI driver, each GPU it binds wrapped in a [`TestedGpu`].
pub(crate) struct Driver;

impl pci::Driver for Driver {
    type IdInfo = <NovaMmDriver as pci::Driver>::IdInfo;
    type Data<'bound> = TestedGpu<'bound>;
    const ID_TABLE: pci::IdTable<Self::IdInfo> = <NovaMmDriver as pci::Driver>::ID_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        pin_init::pin_init_scope(move || {
            let opts = Options {
                readonly: crate::module_parameters::readonly.value(),
                // The device tests of high addresses put the page tables (and the BAR1 instance
                // block) in the top `pt_top_gib` GiB of usable VRAM.
                tables_top: crate::module_parameters::pt_top_gib.value() << 30,
            };
            let mmio = MmioStats::new_shared()?;
            let drv = NovaMm::new(pdev, opts, mmio.clone()).inspect_err(|_| {
                // The accesses of a probe that gave up count too.
                bar0_final(pdev, &mmio);
            })?;
            let chipset = drv.gpu().spec().chipset.code();
            let stress = Stress::new(chipset)?;
            let stress_dir = stress_dir(stress.group(), pdev.as_ref().name());
            let pdev: &'bound pci::Device<kernel::device::Bound> = pdev;
            Ok(try_pin_init!(&this in TestedGpu {
                stress,
                _stress_dir: stress_dir,
                drv,
                kept: KBox::pin_init(new_mutex!(KVec::new()), GFP_KERNEL)?,
                _markers: Markers { pdev, mmio, chipset },
                // SAFETY: Every other field is initialized at this point (fields are initialized
                // in the order written here), the data is pinned, and `_listed` is declared
                // first, so it is dropped before the rest.
                _listed: unsafe { Listed::new(this.as_ptr()) }?,
            }))
        })
    }
}
