// SPDX-License-Identifier: GPL-2.0

//! The list of bound GPUs, for the KUnit device suites.
//!
//! KUnit suites of a module run after its `init` returned, when the PCI driver has already probed
//! every GPU present. The device suites find the GPUs here.

use kernel::{
    prelude::*,
    sync::global_lock, //
};

use crate::driver::NovaMm;

/// A pointer to the driver data of a bound GPU.
///
/// # Invariants
///
/// The pointee is valid while the pointer is in [`DEVICES`]: it is added when the data is fully
/// initialized and removed by [`Listed::drop`] before any other field of the data is dropped.
#[derive(Clone, Copy, PartialEq, Eq)]
struct DevicePtr(*const NovaMm<'static>);

// SAFETY: `NovaMm` is `Sync` (checked below; its mutable hardware state is behind locks) and the
// pointer is only dereferenced under the `DEVICES` lock, while the invariant of `DevicePtr` holds.
unsafe impl Send for DevicePtr {}

// SAFETY: A shared `DevicePtr` only gives out its address (to copy or compare it); it is
// dereferenced in `for_each` alone, under the `DEVICES` lock.
unsafe impl Sync for DevicePtr {}

// The device suites use a GPU's driver data from the KUnit thread, so it must be `Sync`.
const _: () = {
    const fn assert_sync<T: Sync>() {}
    assert_sync::<NovaMm<'static>>();
};

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
    pub(crate) unsafe fn new(data: *const NovaMm<'_>) -> Result<Self> {
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
pub(crate) fn for_each(mut f: impl FnMut(&NovaMm<'_>) -> Result) -> Result<usize> {
    let list = DEVICES.lock();
    for p in list.iter() {
        // SAFETY: By the invariant of `DevicePtr`, the pointee is valid while it is in the list,
        // and we hold the list's lock.
        f(unsafe { &*p.0 })?;
    }
    Ok(list.len())
}

/// Calls `f` with every bound GPU at once, with the device list locked (no GPU can be unbound
/// until `f` returns).
pub(crate) fn with_all<R>(f: impl FnOnce(&[&NovaMm<'_>]) -> Result<R>) -> Result<R> {
    let list = DEVICES.lock();
    let mut gpus = KVec::with_capacity(list.len(), GFP_KERNEL)?;
    for p in list.iter() {
        // SAFETY: By the invariant of `DevicePtr`, the pointee is valid while it is in the list,
        // and we hold the list's lock until `f` returns.
        gpus.push(unsafe { &*p.0 }, GFP_KERNEL)?;
    }
    f(&gpus)
}
