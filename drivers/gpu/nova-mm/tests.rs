// SPDX-License-Identifier: GPL-2.0

//! Helpers of the KUnit suites, and the device suite on chip identity.

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
        *dst = *src as _;
    }
    test.status_comment[n] = 0;
}

/// Returns the chipset codes the harness declared with `nova_mm.expect_chipsets`, in order.
pub(crate) fn expected_chipsets() -> KVec<u32> {
    let mut v = KVec::new();
    let mut packed = crate::module_parameters::expect_chipsets.value();
    while packed != 0 {
        // CAST: masked to 12 bits.
        let code = (packed & 0xfff) as u32;
        if v.push(code, GFP_KERNEL).is_err() {
            break;
        }
        packed >>= 12;
    }
    v
}

#[kunit_tests(nova_mm_device_id)]
mod device_id {
    use super::*;
    use crate::{
        devices,
        driver::NovaMm,
        gpu::Spec,
        regs, //
    };
    use kernel::io::Io;

    /// Each bound GPU's identity read again through BAR0 is the one probe found, and the chips
    /// bound are the ones the model was told to be.
    #[test]
    fn identity_matches_model() -> Result {
        let mut expected = expected_chipsets();
        let mut seen = 0;
        let n = devices::for_each(|gpu: &NovaMm<'_>| {
            let boot0 = gpu.bar.read(regs::NV_PMC_BOOT_0).into_raw();
            let boot42 = gpu.bar.read(regs::NV_PMC_BOOT_42).into_raw();
            let spec = Spec::identify(boot0, boot42).map_err(Error::from)?;
            assert_eq!(spec, gpu.spec);
            // The PCI vendor must be NVIDIA's.
            assert_eq!(u32::from(gpu.pdev.vendor_id().as_raw()), 0x10de);
            let code = spec.chipset as u32;
            match expected.iter().position(|&c| c == code) {
                Some(i) => {
                    let _ = expected.remove(i);
                    seen += 1;
                }
                None if crate::module_parameters::expect_chipsets.value() != 0 => {
                    kernel::kunit::err(fmt!("unexpected chipset {:#x} bound\n", code));
                    return Err(EINVAL);
                }
                None => {}
            }
            Ok(())
        })?;
        if n == 0 {
            skip(c"no GPU bound");
            return Ok(());
        }
        // Every chip the harness started a model for was found.
        assert!(expected.is_empty());
        let _ = seen;
        Ok(())
    }
}
