// SPDX-License-Identifier: GPL-2.0

//! The list of bound GPUs, for the KUnit device suites.
//!
//! KUnit suites of a module run after its `init` returned, when the PCI driver has already probed
//! every GPU present. The device suites find the GPUs here.

use kernel::{
    ffi::c_void,
    prelude::*,
    sync::global_lock, //
};

use crate::selftest::TestedGpu;

/// A pointer to the driver data of a bound GPU.
///
/// # Invariants
///
/// The pointee is valid while the pointer is in [`DEVICES`]: it is added when the data is fully
/// initialized and removed by [`Listed::drop`] before any other field of the data is dropped.
#[derive(Clone, Copy, PartialEq, Eq)]
struct DevicePtr(*const c_void);

// SAFETY: `NovaMm` is `Sync` (checked below; its mutable hardware state is behind locks) and the
// pointer is only dereferenced under the `DEVICES` lock, while the invariant of `DevicePtr` holds.
unsafe impl Send for DevicePtr {}

// SAFETY: A shared `DevicePtr` only gives out its address (to copy or compare it); it is
// dereferenced in `for_each` alone, under the `DEVICES` lock.
unsafe impl Sync for DevicePtr {}

// The device suites use a GPU's driver data from the KUnit thread, so it must be `Sync`.
const _: () = {
    const fn assert_sync<T: Sync>() {}
    #[allow(clippy::extra_unused_lifetimes)]
    const fn check<'a>() {
        assert_sync::<TestedGpu<'a>>();
    }
};

impl DevicePtr {
    /// Returns the GPU pointed to.
    ///
    /// # Safety
    ///
    /// The pointer must be in [`DEVICES`], whose lock the caller holds for as long as it uses
    /// the reference.
    unsafe fn get<'r>(self) -> &'r TestedGpu<'r> {
        // SAFETY: By the invariant of `DevicePtr` the pointee, a `TestedGpu` of some lifetime
        // that outlives its stay in the list, is valid while the caller holds the lock; the
        // reference, of a lifetime no longer than that, cannot outlive either.
        unsafe { &*self.0.cast::<TestedGpu<'r>>() }
    }
}

global_lock! {
    // SAFETY: Initialized in module initialization, before the driver is registered.
    unsafe(uninit) static DEVICES: Mutex<KVec<DevicePtr>> = KVec::new();
}

/// Initializes the device list.
///
/// # Safety
///
/// Must be called once, from module initialization, before the driver is registered.
pub(crate) unsafe fn init() {
    // SAFETY: Called exactly once, before any use, as required of our caller.
    unsafe { DEVICES.init() };
}

/// The presence of a GPU in the device list; dropping it removes the GPU.
pub(crate) struct Listed(DevicePtr);

impl Listed {
    /// Adds the driver data at `data` to the device list.
    ///
    /// # Safety
    ///
    /// `data` must point to fully initialized driver data that stays valid and pinned until the
    /// returned value is dropped, and the returned value must be dropped before any other part of
    /// the data.
    pub(crate) unsafe fn new(data: *const TestedGpu<'_>) -> Result<Self> {
        let ptr = DevicePtr(data.cast());
        DEVICES.lock().push(ptr, GFP_KERNEL)?;
        Ok(Self(ptr))
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        let mut list = DEVICES.lock();
        if let Some(i) = list.iter().position(|p| *p == self.0) {
            let _ = list.remove(i);
        }
        // The list is a static, never dropped: its buffer goes with the last GPU, else every
        // unload of the module would leak it (kmemleak on the debug kernel reports it).
        if list.is_empty() {
            *list = KVec::new();
        }
    }
}

/// Calls `f` on every bound GPU, with the device list locked (no GPU can be unbound meanwhile).
///
/// Returns the number of GPUs visited.
pub(crate) fn for_each(mut f: impl FnMut(&TestedGpu<'_>) -> Result) -> Result<usize> {
    let list = DEVICES.lock();
    for p in list.iter() {
        // SAFETY: By the invariant of `DevicePtr`, the pointee is valid while it is in the list,
        // and we hold the list's lock.
        f(unsafe { p.get() })?;
    }
    Ok(list.len())
}

/// Calls `f` with every bound GPU at once, with the device list locked (no GPU can be unbound
/// until `f` returns).
pub(crate) fn with_all<R>(f: impl FnOnce(&[&TestedGpu<'_>]) -> Result<R>) -> Result<R> {
    let list = DEVICES.lock();
    let mut gpus = KVec::with_capacity(list.len(), GFP_KERNEL)?;
    for p in list.iter() {
        // SAFETY: By the invariant of `DevicePtr`, the pointee is valid while it is in the list,
        // and we hold the list's lock until `f` returns.
        gpus.push(unsafe { p.get() }, GFP_KERNEL)?;
    }
    f(&gpus)
}
