// SPDX-License-Identifier: GPL-2.0

//! What the unit suites (at the end of the files they test) and the device suites share: KUnit
//! skips and the page-size rule the tests check the page tables against. It uses nothing of the
//! rest of the module, so that the unit suites in the product's files depend on the self-tests
//! no further than this.

use kernel::{
    bindings,
    prelude::*, //
};

/// Marks the running KUnit test as skipped, with `reason` as its KTAP comment.
///
/// Does nothing outside a KUnit test.
pub(crate) fn skip(reason: &CStr) {
    // SAFETY: `kunit_get_current_test()` has no preconditions.
    let test = unsafe { bindings::kunit_get_current_test() };
    if test.is_null() {
        return;
    }
    // SAFETY: `test` is the running test, valid for the duration of the call; only this test's
    // thread writes its status while it runs.
    let test = unsafe { &mut *test };
    test.status = bindings::kunit_status_KUNIT_SKIPPED;
    let reason = reason.to_bytes();
    let n = reason.len().min(test.status_comment.len() - 1);
    for (dst, src) in test.status_comment.iter_mut().zip(&reason[..n]) {
        // CAST: `c_char` is `i8` or `u8` depending on the architecture; this is a byte copy.
        *dst = *src as kernel::ffi::c_char;
    }
    test.status_comment[n] = 0;
}

/// In read-only mode (`nova_mm.readonly=1`) marks the running test skipped and returns true:
/// nothing may be written to the GPU then.
pub(crate) fn skip_if_readonly() -> bool {
    if crate::module_parameters::readonly.value() {
        skip(c"read-only mode (nova_mm.readonly=1): nothing is written to the GPU");
        return true;
    }
    false
}

/// With `nova_mm.quick=1` marks the running test skipped and returns true. The load/unload
/// cycles set it after the first load for the tests that take seconds on the debug kernel:
/// the slow unit tests (logic no load changes), the bad-input table and the zero-fill test.
pub(crate) fn skip_if_quick() -> bool {
    if crate::module_parameters::quick.value() {
        skip(c"nova_mm.quick=1: a slow unit test, run at the first load");
        return true;
    }
    false
}

/// On a kernel built with KASAN (the debug kernel of `make check`) marks the running test
/// skipped and returns true: for the unit tests of pure logic that take a minute there (the
/// reference kernel runs them; nothing about them depends on the kernel's checkers).
pub(crate) fn skip_if_debug_kernel() -> bool {
    if cfg!(CONFIG_KASAN) {
        skip(c"a long logic test: run on the reference kernel, not under KASAN");
        return true;
    }
    false
}

/// The page that must map `va` -> `pa` with `left` bytes to go, by the tests' own rule: the
/// largest page both addresses are aligned to that fits (512 MiB only if `huge`).
pub(crate) fn oracle_page(va: u64, pa: u64, left: u64, huge: bool) -> u64 {
    for s in [1u64 << 29, 1 << 21, 1 << 16] {
        if (huge || s != 1 << 29) && va % s == 0 && pa % s == 0 && left >= s {
            return s;
        }
    }
    4096
}

/// The pages that must map `size` bytes from `va` to `pa` ([`oracle_page`]), as runs of one
/// size: `(va, pa, len, page)`.
pub(crate) fn oracle_pages(
    va: u64,
    pa: u64,
    size: u64,
    huge: bool,
) -> Result<KVec<(u64, u64, u64, u64)>> {
    let mut out: KVec<(u64, u64, u64, u64)> = KVec::new();
    let mut off = 0;
    while off < size {
        let page = oracle_page(va + off, pa + off, size - off, huge);
        match out.last_mut() {
            Some(r) if r.3 == page => r.2 += page,
            _ => out.push((va + off, pa + off, page, page), GFP_KERNEL)?,
        }
        off += page;
    }
    Ok(out)
}
