// SPDX-License-Identifier: GPL-2.0

//! Firmware parameters and the layout of video memory (placeholder, being written).
