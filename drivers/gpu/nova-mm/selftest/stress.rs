// SPDX-License-Identifier: GPL-2.0

//! Concurrent memory-management work: groups of work items that map, unmap, change access and
//! read and write through BAR1 at the same time, on shared and separate address spaces.
//!
//! The KUnit suite `nova_mm_device_concurrency` runs a bounded round on every GPU at once. With
//! `nova_mm.stress=1` every GPU also runs workers from module load until it goes away (rmmod or
//! hot-unplug): removal stops them and waits for the last one before anything they use is
//! released.

use kernel::sizes::SizeConstants;
use kernel::{
    ffi::c_void,
    new_condvar,
    new_mutex,
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        CondVar,
        Mutex, //
    },
    time::{
        Delta,
        Instant,
        Monotonic, //
    },
    workqueue, //
};

use crate::{
    mm::{
        pagetable::{
            Access,
            Entry, //
        },
        vmm::Vmm,
        vram::{
            AllocRequest,
            VramAllocation, //
        },
    },
    selftest::{
        Kept,
        TestedGpu, //
    },
};

counters! {
    /// Operation counts of a group of workers.
    pub(crate) struct StressStats / StressSnapshot {
        /// Maps completed (address-space and BAR1).
        maps,
        /// Unmaps completed.
        unmaps,
        /// Access changes completed.
        protects,
        /// BAR1 round trips checked (CPU through BAR1 against PRAMIN, both ways).
        bar1_checks,
        /// Operations that failed, or data that did not come back as written.
        errors,
        /// Workers that finished.
        finished,
    }
}

impl StressStats {
    /// All operations completed.
    pub(crate) fn ops(&self) -> u64 {
        self.maps.load(Relaxed)
            + self.unmaps.load(Relaxed)
            + self.protects.load(Relaxed)
            + self.bar1_checks.load(Relaxed)
    }
}

/// A set of running work items that can be told to stop and waited for.
#[pin_data]
pub(crate) struct WorkGroup {
    #[pin]
    running: Mutex<usize>,
    #[pin]
    done: CondVar,
    stop: Atomic<bool>,
    /// What the workers did.
    pub(crate) stats: StressStats,
}

/// What a worker works on, its lifetime erased for the work item: a GPU's self-test state and,
/// for an address-space worker, a reference to the space.
///
/// # Invariants
///
/// `gpu` points to the [`TestedGpu`] the worker was started on and `vmm`, if not null, is a
/// reference to one of its address spaces (from [`Arc::into_raw`]) that this value owns. Both
/// are only used by a worker of a [`WorkGroup`] that is joined before the GPU's data is dropped
/// (the KUnit suite joins before it returns from [`crate::selftest::devices::with_all`];
/// [`Stress`] is a field of the data, declared before everything the workers use, and joins
/// when dropped).
struct Target {
    gpu: *const c_void,
    vmm: *const c_void,
}

// SAFETY: `TestedGpu` and `Vmm` are `Sync` (checked in `devices`, and `Vmm`'s state is behind its
// lock), and by the invariant the pointees outlive every worker that gets the pointers.
unsafe impl Send for Target {}

impl Target {
    fn new<'a>(gpu: &TestedGpu<'a>, vmm: Option<Arc<Vmm<'a>>>) -> Self {
        Self {
            gpu: core::ptr::from_ref(gpu).cast(),
            vmm: vmm.map_or(core::ptr::null(), |v| Arc::into_raw(v).cast()),
        }
    }

    /// Runs `f` on the GPU and the address space.
    ///
    /// # Safety
    ///
    /// The GPU's data must still be valid (the invariant of [`Target`] holds).
    unsafe fn run(mut self, f: impl for<'a> FnOnce(&TestedGpu<'a>, Option<Arc<Vmm<'a>>>)) {
        // SAFETY: By the invariant, `gpu` points to a valid `TestedGpu` (our caller keeps it so)
        // of some lifetime, which the reference below does not outlive.
        let gpu = unsafe { &*self.gpu.cast::<TestedGpu<'_>>() };
        let vmm = core::mem::replace(&mut self.vmm, core::ptr::null());
        // SAFETY: By the invariant, a non-null `vmm` is a reference to one of the GPU's address
        // spaces from `Arc::into_raw`, owned by `self`, whose ownership moves to the `Arc`.
        let vmm = (!vmm.is_null()).then(|| unsafe { Arc::from_raw(vmm.cast::<Vmm<'_>>()) });
        f(gpu, vmm)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if !self.vmm.is_null() {
            // SAFETY: A target not run (its work item could not be queued) is dropped by the
            // code that made it, while the GPU's data is valid; the reference is ours.
            drop(unsafe { Arc::from_raw(self.vmm.cast::<Vmm<'_>>()) });
        }
    }
}

impl WorkGroup {
    /// A group with no workers.
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                running <- new_mutex!(0),
                done <- new_condvar!(),
                stop: Atomic::new(false),
                stats: StressStats::new(),
            }),
            GFP_KERNEL,
        )
    }

    /// Whether the workers were told to stop.
    fn stopping(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// Runs `f` as a work item on the kernel's unbound workqueue for long-running work.
    fn spawn(self: &Arc<Self>, f: impl FnOnce(&WorkGroup) + Send + 'static) -> Result {
        *self.running.lock() += 1;
        let me = self.clone();
        // SAFETY: `system_dfl_long_wq` is a C global, set up at boot and never freed. It is the
        // unbound queue for long-running work (`system_unbound_wq` is deprecated in 7.3, and
        // the kernel crate has no accessor for its replacement yet).
        let queue = unsafe { workqueue::Queue::from_raw(kernel::bindings::system_dfl_long_wq) };
        let r = queue.try_spawn(GFP_KERNEL, move || {
            f(&me);
            me.stats.finished.fetch_add(1, Relaxed);
            let mut n = me.running.lock();
            *n -= 1;
            me.done.notify_all();
        });
        if r.is_err() {
            let mut n = self.running.lock();
            *n -= 1;
            self.done.notify_all();
            return Err(ENOMEM);
        }
        Ok(())
    }

    /// Waits until every worker has returned.
    pub(crate) fn join(&self) {
        let mut n = self.running.lock();
        while *n > 0 {
            self.done.wait(&mut n);
        }
    }

    /// Tells the workers to stop after their current operation and waits for them.
    pub(crate) fn stop_and_join(&self) {
        self.stop.store(true, Relaxed);
        self.join();
    }
}

/// A small deterministic generator (xorshift64) for sizes and offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What one worker does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Job {
    /// Maps, checks the shadow, changes access and unmaps in the given address space.
    Space,
    /// Maps VRAM into BAR1, writes and reads it from the CPU and through PRAMIN, unmaps.
    Bar1,
}

/// How long a worker runs, and whether it leaves its last mapping for the harness.
#[derive(Clone, Copy)]
pub(crate) struct Bound {
    /// Stop after this long (or when told).
    pub(crate) time: Delta,
    /// Stop after this many rounds.
    pub(crate) rounds: u64,
    /// Keep the last mapping of a [`Job::Space`] worker until the GPU goes away and announce it
    /// (NOVA-MAP), so that the model's walker checks it after power-off.
    pub(crate) keep_last: bool,
}

fn record<T>(stats: &StressStats, r: Result<T>) -> Result<T> {
    if r.is_err() {
        stats.errors.fetch_add(1, Relaxed);
    }
    r
}

/// One round of a [`Job::Space`] worker: a mapping of 4 KiB, 64 KiB or 2 MiB pages, checked in
/// the shadow at each access, then released (or kept).
fn space_round<'a>(
    gpu: &TestedGpu<'a>,
    vmm: &Arc<Vmm<'a>>,
    rng: &mut Rng,
    st: &StressStats,
    keep: bool,
) -> Result {
    let mm = gpu.mm();
    let (page, n) = match rng.below(3) {
        0 => (u64::SZ_4K, 1 + rng.below(16)),
        1 => (u64::SZ_64K, 1 + rng.below(4)),
        _ => (u64::SZ_2M, 1),
    };
    let size = page * n;
    let mem = Arc::new(
        mm.vram()
            .alloc(&AllocRequest::new(size).contiguous().aligned(page))?,
        GFP_KERNEL,
    )?;
    let res = vmm.reserve(size, page, None, false)?;
    let mut m = res.map(0, &mem, 0, size, Access::ReadWrite)?;
    st.maps.fetch_add(1, Relaxed);
    check_mapping(vmm, &m, false)?;
    m.set_access(Access::ReadOnly)?;
    st.protects.fetch_add(1, Relaxed);
    check_mapping(vmm, &m, true)?;
    if keep {
        // For the harness: `NOVA-MAP <chipset> <pdb> <va> <pa> <len> <page> ro`, checked with
        // the model's own walker after power-off.
        for p in m.pieces() {
            pr_info!(
                "NOVA-MAP {:#x} {:#x} {:#x} {:#x} {:#x} {:#x} ro\n",
                gpu.spec().chipset.code(),
                vmm.pdb(),
                p.va,
                p.pa,
                p.len,
                p.page
            );
        }
        gpu.keep(Kept::Mapping(m))?;
        gpu.keep(Kept::Reservation(res))?;
        return Ok(());
    }
    drop(m);
    st.unmaps.fetch_add(1, Relaxed);
    drop(res);
    Ok(())
}

/// Whether every page of `m` translates, in the shadow, to its memory with `ro`.
fn check_mapping(vmm: &Vmm<'_>, m: &crate::mm::vmm::Mapping<'_>, ro: bool) -> Result {
    for p in m.pieces() {
        for off in [0, p.len - p.page] {
            let (e, sz) = vmm.lookup(p.va + off);
            if sz != p.page
                || e != (Entry::Page {
                    pa: p.pa + off,
                    read_only: ro,
                })
            {
                pr_err!(
                    "stress: VA {:#x} of {} does not translate to {:#x}\n",
                    p.va + off,
                    vmm.name(),
                    p.pa + off
                );
                return Err(EINVAL);
            }
        }
    }
    Ok(())
}

/// A round of a [`Job::Space`] worker in batches: up to eight maps of 4 KiB to 2 MiB pages, each
/// in a reservation of its own, in one batch; then one batch makes half of them read-only and
/// unmaps the others; then one unmaps the rest.
fn batch_round<'a>(
    vmm: &Arc<Vmm<'a>>,
    gpu: &TestedGpu<'a>,
    rng: &mut Rng,
    st: &StressStats,
) -> Result {
    let mm = gpu.mm();
    let k = 1 + rng.below(8);
    let mut mems = KVec::new();
    let mut res = KVec::new();
    for _ in 0..k {
        let (page, n) = match rng.below(3) {
            0 => (u64::SZ_4K, 1 + rng.below(16)),
            1 => (u64::SZ_64K, 1 + rng.below(4)),
            _ => (u64::SZ_2M, 1),
        };
        let size = page * n;
        let mem = mm
            .vram()
            .alloc(&AllocRequest::new(size).contiguous().aligned(page))?;
        mems.push(Arc::new(mem, GFP_KERNEL)?, GFP_KERNEL)?;
        res.push(vmm.reserve(size, page, None, false)?, GFP_KERNEL)?;
    }
    let mut b = vmm.batch();
    for (m, r) in mems.iter().zip(res.iter()) {
        b.map(r, 0, m, 0, m.size(), Access::ReadWrite)?;
    }
    let mut maps = KVec::new();
    for d in b.prepare()?.execute()? {
        maps.push(d.mapping()?, GFP_KERNEL)?;
    }
    st.maps.fetch_add(k, Relaxed);
    for m in maps.iter() {
        check_mapping(vmm, m, false)?;
    }
    let mut b = vmm.batch();
    for (i, m) in maps.iter().enumerate() {
        if i % 2 == 0 {
            b.protect(m, Access::ReadOnly)?;
        } else {
            b.unmap(m)?;
        }
    }
    b.prepare()?.execute()?;
    for (i, m) in maps.iter().enumerate() {
        if i % 2 == 0 {
            st.protects.fetch_add(1, Relaxed);
            check_mapping(vmm, m, true)?;
        } else {
            st.unmaps.fetch_add(1, Relaxed);
        }
    }
    let mut b = vmm.batch();
    for m in maps.iter().step_by(2) {
        b.unmap(m)?;
    }
    b.prepare()?.execute()?;
    st.unmaps.fetch_add(k.div_ceil(2), Relaxed);
    Ok(())
}

/// One round of a [`Job::Bar1`] worker: 64 KiB of VRAM mapped into BAR1; the CPU's writes
/// through BAR1 are read back through PRAMIN and the reverse, at both ends and one random
/// quadword.
fn bar1_round(gpu: &TestedGpu<'_>, rng: &mut Rng, st: &StressStats) -> Result {
    let mm = gpu.mm();
    let Some(bar) = &mm.bar1() else {
        return Ok(());
    };
    let size = u64::SZ_64K;
    let mem: Arc<VramAllocation> = Arc::new(
        mm.vram()
            .alloc(&AllocRequest::new(size).contiguous().aligned(u64::SZ_64K))?,
        GFP_KERNEL,
    )?;
    let m = bar.map(&mem, 0, size, Access::ReadWrite, None)?;
    st.maps.fetch_add(1, Relaxed);
    let pa = mem.start();
    let tag = rng.next();
    // Three distinct quadwords: the first, the last and one strictly between them (the same
    // one twice would read back this round's own PRAMIN write).
    let offs = [0, size - 8, (1 + rng.below(size / 8 - 2)) * 8];
    for &off in offs.iter() {
        m.write64(off, tag ^ off)?;
    }
    {
        let mut w = mm.pramin().access(mm.bar());
        for &off in offs.iter() {
            let got = w.read64(pa + off)?;
            if got != tag ^ off {
                pr_err!(
                    "stress: BAR1 {:#x} wrote {:#x}, VRAM {:#x} holds {:#x}\n",
                    m.offset() + off,
                    tag ^ off,
                    pa + off,
                    got
                );
                return Err(EIO);
            }
            w.write64(pa + off, !(tag ^ off))?;
        }
    }
    for &off in offs.iter() {
        let got = m.read64(off)?;
        if got != !(tag ^ off) {
            pr_err!(
                "stress: VRAM {:#x} holds {:#x}, BAR1 {:#x} reads {:#x}\n",
                pa + off,
                !(tag ^ off),
                m.offset() + off,
                got
            );
            return Err(EIO);
        }
    }
    st.bar1_checks.fetch_add(1, Relaxed);
    drop(m);
    st.unmaps.fetch_add(1, Relaxed);
    Ok(())
}

/// The body of one worker.
fn work<'a>(
    gpu: &TestedGpu<'a>,
    g: &WorkGroup,
    job: Job,
    vmm: Option<Arc<Vmm<'a>>>,
    seed: u64,
    b: Bound,
) {
    let start = Instant::<Monotonic>::now();
    let mut rng = Rng(seed | 1);
    let mut round = 0;
    while !g.stopping() && round < b.rounds && start.elapsed() < b.time {
        round += 1;
        let last = b.keep_last && round == b.rounds;
        let r = match (job, &vmm) {
            // Every other round in batches, on shared and separate address spaces alike; the
            // last one (which may stay mapped for the model's walker) singly.
            (Job::Space, Some(v)) if round % 2 == 0 && !last => {
                batch_round(v, gpu, &mut rng, &g.stats)
            }
            (Job::Space, Some(v)) => space_round(gpu, v, &mut rng, &g.stats, last),
            (Job::Bar1, _) => bar1_round(gpu, &mut rng, &g.stats),
            (Job::Space, None) => Err(EINVAL),
        };
        if let Err(e) = record(&g.stats, r) {
            let what = match job {
                Job::Bar1 => "bar1",
                Job::Space => "space",
            };
            // For the harness: `NOVA-STRESS-ERROR <chipset> job=<job> round=<n> error=<error>`.
            dev_err!(
                gpu.pdev(),
                "NOVA-STRESS-ERROR {:#x} job={} round={} error={:?}\n",
                gpu.spec().chipset.code(),
                what,
                round,
                e
            );
            // A GPU that went away, or a hung invalidate, fails every later round too.
            break;
        }
    }
}

/// Starts workers on `gpu` in `group`: `shared` of them on one new address space, `separate`
/// on an address space each, and one BAR1 worker if BAR1 is bound.
///
/// # Safety
///
/// `gpu` must stay valid until `group` is joined.
pub(crate) unsafe fn start(
    group: &Arc<WorkGroup>,
    gpu: &TestedGpu<'_>,
    shared: usize,
    separate: usize,
    b: Bound,
) -> Result {
    let va = 1u64 << 32..1u64 << 40;
    let mut spaces = KVec::new();
    if shared > 0 {
        let v = gpu.mm().new_vmm("stress-shared", va.clone())?;
        for _ in 0..shared {
            spaces.push(v.clone(), GFP_KERNEL)?;
        }
    }
    for _ in 0..separate {
        spaces.push(gpu.mm().new_vmm("stress-own", va.clone())?, GFP_KERNEL)?;
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15 ^ u64::from(gpu.spec().chipset.code());
    for v in spaces.into_iter() {
        seed = seed.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(1);
        let s = seed;
        let t = Target::new(gpu, Some(v));
        group.spawn(move |grp| {
            // SAFETY: By the invariant of `Target` (kept by our caller): the group is joined
            // before the data goes.
            unsafe { t.run(|gpu, v| work(gpu, grp, Job::Space, v, s, b)) }
        })?;
    }
    if gpu.mm().bar1().is_some() {
        let s = seed ^ 0xba51;
        let t = Target::new(gpu, None);
        group.spawn(move |grp| {
            // SAFETY: As above.
            unsafe { t.run(|gpu, _| work(gpu, grp, Job::Bar1, None, s, b)) }
        })?;
    }
    Ok(())
}

/// Workers that run on one GPU from module load until the GPU goes away (`nova_mm.stress=1`).
///
/// A field of the GPU's driver data, declared before everything the workers use: dropping it
/// stops the workers and waits for the last one.
pub(crate) struct Stress {
    group: Arc<WorkGroup>,
    started: Atomic<bool>,
    chipset: u32,
}

impl Stress {
    /// No workers yet.
    pub(crate) fn new(chipset: u32) -> Result<Self> {
        Ok(Self {
            group: WorkGroup::new()?,
            started: Atomic::new(false),
            chipset,
        })
    }

    /// The group the workers run in (debugfs shows its counts).
    pub(crate) fn group(&self) -> &Arc<WorkGroup> {
        &self.group
    }

    /// Starts the workers of `gpu`, whose field this is: two on a shared address space, one on
    /// its own, one on BAR1, until the GPU goes away.
    pub(crate) fn start(gpu: &TestedGpu<'_>) -> Result {
        if gpu.stress.started.xchg(true, Relaxed) {
            return Err(EBUSY);
        }
        let forever = Bound {
            time: Delta::from_millis(i64::MAX / 2),
            rounds: u64::MAX,
            keep_last: false,
        };
        // SAFETY: `gpu.stress` is a field of `gpu`, declared before everything the workers use;
        // dropping it joins the group before the rest of `gpu` goes.
        unsafe { start(&gpu.stress.group, gpu, 2, 1, forever) }
    }
}

impl Drop for Stress {
    fn drop(&mut self) {
        if self.started.load(Relaxed) {
            let g = &self.group;
            g.stop_and_join();
            let s = &g.stats;
            pr_info!(
                "NOVA-STRESS {:#x} ops={} maps={} unmaps={} protects={} bar1_checks={} errors={} workers={}\n",
                self.chipset,
                s.ops(),
                s.maps.load(Relaxed),
                s.unmaps.load(Relaxed),
                s.protects.load(Relaxed),
                s.bar1_checks.load(Relaxed),
                s.errors.load(Relaxed),
                s.finished.load(Relaxed)
            );
        }
    }
}

#[kunit_tests(nova_mm_device_concurrency)]
mod device_concurrency {
    use super::*;
    use crate::{
        selftest::devices,
        selftest::tests::{
            skip,
            skip_if_readonly, //
        },
    };

    /// Snapshot of what must come back once the workers are gone.
    #[derive(PartialEq, Eq, Debug)]
    struct Held {
        /// Free VRAM plus what the page-table pool holds (it keeps its chunks).
        vram_free: u64,
        vram_allocations: u64,
        tables: u64,
        spaces: usize,
    }

    fn held(gpu: &TestedGpu<'_>) -> Held {
        let v = gpu.mm().vram().stats();
        let (chunks, bytes) = gpu.mm().pool().footprint();
        Held {
            vram_free: v.free + bytes,
            vram_allocations: v.allocations - chunks,
            tables: gpu.mm().pool().in_use(),
            spaces: gpu.mm().spaces().len(),
        }
    }

    /// On every GPU at once, for a bounded time: three workers on one shared address space,
    /// two with an address space each (every other round of theirs in batches: concurrent
    /// batches on one address space and on several), one through BAR1 (VRAM written by the CPU and read back
    /// through PRAMIN, and the reverse). Every operation succeeds, every worker did work, the
    /// counts agree with the address spaces' own, and once the workers are gone the VRAM, the
    /// page-table pool and the address spaces are as before but for each worker's last mapping,
    /// which stays for the model's walker.
    #[test]
    fn concurrent_map_unmap_protect_bar1() -> Result {
        if skip_if_readonly() {
            return Ok(());
        }
        if crate::module_parameters::expect_tlb_hang.value() {
            skip(c"invalidates hang");
            return Ok(());
        }
        devices::with_all(|gpus| {
            if gpus.is_empty() {
                skip(c"no GPU bound");
                return Ok(());
            }
            let mut before = KVec::new();
            for g in gpus {
                before.push(held(g), GFP_KERNEL)?;
            }
            let group = WorkGroup::new()?;
            let b = Bound {
                time: Delta::from_millis(1500),
                rounds: 200,
                keep_last: false,
            };
            let mut workers = 0;
            for g in gpus {
                // SAFETY: The group is joined below, before `with_all` returns and unlocks
                // the device list.
                let r = unsafe { start(&group, g, 3, 2, b) };
                workers += 5 + usize::from(g.mm().bar1().is_some());
                if r.is_err() {
                    group.stop_and_join();
                    return r;
                }
            }
            group.join();
            let s = &group.stats;
            pr_info!(
                "NOVA-CONCURRENCY gpus={} workers={} maps={} unmaps={} protects={} bar1_checks={} errors={}\n",
                gpus.len(),
                workers,
                s.maps.load(Relaxed),
                s.unmaps.load(Relaxed),
                s.protects.load(Relaxed),
                s.bar1_checks.load(Relaxed),
                s.errors.load(Relaxed)
            );
            ensure_eq!(s.errors.load(Relaxed), 0);
            ensure_eq!(s.finished.load(Relaxed), workers as u64);
            ensure!(s.maps.load(Relaxed) >= 2 * workers as u64);
            ensure_eq!(s.maps.load(Relaxed), s.unmaps.load(Relaxed));
            for (g, b0) in gpus.iter().zip(before.iter()) {
                ensure_eq!(&held(g), b0);
            }
            Ok(())
        })
    }

    /// The same with each address-space worker's last mapping left in place: the model's walker
    /// checks them after power-off (NOVA-MAP).
    #[test]
    fn concurrent_mappings_checked_by_the_model() -> Result {
        if skip_if_readonly() || crate::module_parameters::expect_tlb_hang.value() {
            return Ok(());
        }
        devices::with_all(|gpus| {
            let group = WorkGroup::new()?;
            let b = Bound {
                time: Delta::from_millis(60_000),
                rounds: 10,
                keep_last: true,
            };
            for g in gpus {
                // SAFETY: Joined below, before the device list is unlocked.
                let r = unsafe { start(&group, g, 2, 1, b) };
                if r.is_err() {
                    group.stop_and_join();
                    return r;
                }
            }
            group.join();
            ensure_eq!(group.stats.errors.load(Relaxed), 0);
            Ok(())
        })
    }
}
