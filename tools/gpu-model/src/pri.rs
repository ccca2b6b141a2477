// SPDX-License-Identifier: MIT OR Apache-2.0

//! The PRI bus's answer to a read it cannot serve.

/// What an unimplemented register reads as.
///
/// NVIDIA hardware answers a read that no PRI target claims with an error
/// code whose upper 12 bits are 0xbad (OGKM `GPU_READ_PRI_ERROR_MASK`
/// 0xFFF00000 / `GPU_READ_PRI_ERROR_CODE` 0xBAD00000: "HW will return 0xbad
/// in the upper 3 nibbles"); 0xbadf1100 is the value commonly seen for
/// absent registers on Turing..Ada boards. The exact low bits are an
/// inference.
pub const PRI_ERROR_VALUE: u32 = 0xbadf_1100;
