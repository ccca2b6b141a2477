#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Build tools/gpu-model (release), with the host's cargo or the build root's
# (see model_cargo in lib.sh).
set -e
. "$(dirname "$0")/lib.sh"

[ "$MODEL_IN_ROOT" = 0 ] || "$NOVA_TOP/scripts/setup.sh"
log "building tools/gpu-model ($([ "$MODEL_IN_ROOT" = 1 ] && echo "build root's cargo" || echo "host cargo"))"
model_cargo build --release --locked -q >&2 || die "building tools/gpu-model failed (the cargo output is above); the first build fetches crates from crates.io, so check the network, then run: cd tools/gpu-model && cargo build --release"
