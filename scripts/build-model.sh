#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Build tools/gpu-model (release) with the host's cargo. Prints the binary's path.
set -e
. "$(dirname "$0")/lib.sh"

command -v cargo >/dev/null || die "cargo not found: install Rust (rustup or Debian's cargo) to build tools/gpu-model"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$NOVA_CACHE/gpu-model-target}
log "building tools/gpu-model"
cargo build --release --locked -q --manifest-path "$NOVA_TOP/tools/gpu-model/Cargo.toml" >&2 ||
	die "building tools/gpu-model failed"
echo "$CARGO_TARGET_DIR/release/gpu-model"
