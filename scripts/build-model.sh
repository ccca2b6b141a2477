#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Build tools/gpu-model (release), with the host's cargo or the build root's
# (see model_cargo in lib.sh).
set -e
. "$(dirname "$0")/lib.sh"

[ "$MODEL_IN_ROOT" = 0 ] || "$NOVA_TOP/scripts/setup.sh"
log "building tools/gpu-model ($([ "$MODEL_IN_ROOT" = 1 ] && echo "build root's cargo" || echo "host cargo"))"
# The target folder lives in the cache and is shared by every clone, and cargo decides what to
# rebuild from file times: a clone whose sources are older than another clone's last build
# would run that build. The hash of the model's sources keys its own crate (the dependencies
# stay built).
src_hash=$(cd "$NOVA_TOP/tools/gpu-model" && find Cargo.toml Cargo.lock src -type f -print0 |
	sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
stamp_dir=$MODEL_TARGET
[ "$MODEL_IN_ROOT" = 0 ] || stamp_dir=$ROOT$MODEL_TARGET
# One build at a time: make check builds the model from two runs at once (the debug kernel's
# runs go on beside the others), and a second run that had read the old stamp cleaned the
# binary the first had just built, under its guest.
mkdir -p "$stamp_dir"
exec 9>"$stamp_dir/nova-mm-build.lock"
flock 9
if [ "$(cat "$stamp_dir/nova-mm-source" 2>/dev/null)" != "$src_hash" ]; then
	model_cargo clean --release -p gpu-model -q >&2 2>/dev/null || true
fi
model_cargo build --release --locked -q >&2 || die "building tools/gpu-model failed (the cargo output is above); the first build fetches crates from crates.io, so check the network, then run: cd tools/gpu-model && cargo build --release"
mkdir -p "$stamp_dir"
echo "$src_hash" >"$stamp_dir/nova-mm-source"
