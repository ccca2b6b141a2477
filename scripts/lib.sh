# SPDX-License-Identifier: GPL-2.0
# Common settings and helpers for the nova-mm scripts (sourced, not run).

NOVA_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Expensive, reusable pieces live outside the clone; override with NOVA_MM_CACHE.
NOVA_CACHE=${NOVA_MM_CACHE:-$HOME/.cache/nova-mm}
# Per-clone outputs (module build copies, initramfs, sockets, logs). Created here, once, so
# that every entry point works from a fresh clone.
NOVA_BUILD=$NOVA_TOP/build
mkdir -p "$NOVA_BUILD"
DEBIAN_MIRROR=${NOVA_MM_MIRROR:-http://deb.debian.org/debian}

# Packages of the build root (trixie), and those taken from trixie-backports.
# Packages are ensured on every run (installing only what is missing), so the
# list can grow without rebuilding the root.
ROOT_PKGS="make gcc libc6-dev bc bison flex libelf-dev libssl-dev cpio kmod xz-utils rsync python3 busybox-static rustc rust-src rustfmt rust-clippy bindgen libclang-dev cargo ca-certificates clang-19 lld-19 llvm-19"
ROOT_BPO_PKGS="linux-source-7.3 qemu-system-x86"
ROOT=$NOVA_CACHE/root-trixie-v1
KCACHE=$NOVA_CACHE/kernel

# Which kernel the build, module and guest steps use: "ref" (the reference
# kernel, GCC) or "debug" (lockdep, KASAN, kmemleak, UBSAN, debug objects; LLVM).
NOVA_KERNEL=${NOVA_MM_KERNEL:-ref}
case "$NOVA_KERNEL" in
ref) KMAKE_ARGS=(); MODULE_OUT=$NOVA_BUILD/module ;;
debug) KMAKE_ARGS=(LLVM=-19); MODULE_OUT=$NOVA_BUILD/module-debug ;;
*) printf '[nova-mm] error: NOVA_MM_KERNEL=%s: use ref or debug\n' "$NOVA_KERNEL" >&2; exit 1 ;;
esac

log() { printf '[nova-mm] %s\n' "$*" >&2; }
die() { printf '[nova-mm] error: %s\n' "$*" >&2; exit 1; }

need_root() {
	[ "$(id -u)" = 0 ] || die "this step needs root (debootstrap, chroot, mount namespaces); run it as root"
}

# in_root CMD...: run CMD inside the build root, in a private mount namespace
# so that no mount outlives the call. The clone and the cache are visible at
# the same paths inside as outside.
in_root() {
	need_root
	mkdir -p "$KCACHE"
	# The script is an argument, not standard input, so that CMD keeps the caller's (an
	# interactive guest console needs it).
	unshare -m --propagation private -- /bin/bash -c "$IN_ROOT_SCRIPT" bash "$ROOT" "$NOVA_TOP" "$NOVA_CACHE" "$@"
}
IN_ROOT_SCRIPT='
set -e
root=$1 top=$2 cache=$3; shift 3
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
for d in "$top" "$cache/kernel"; do
	mkdir -p "$root$d"
	mount --bind "$d" "$root$d"
done
exec chroot "$root" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
	/bin/bash -c "cd \"\$1\" && shift && exec \"\$@\"" bash "$top" "$@"
'

# The GPU model is built and run with the host's cargo when there is one, else
# (or with NOVA_MM_MODEL_IN_ROOT=1) with the build root's cargo, inside it.
if [ "${NOVA_MM_MODEL_IN_ROOT:-}" = 1 ] || { [ "${NOVA_MM_MODEL_IN_ROOT:-}" != 0 ] && ! command -v cargo >/dev/null; }; then
	MODEL_IN_ROOT=1
	MODEL_TARGET=/var/cache/nova-mm/gpu-model-target
else
	MODEL_IN_ROOT=0
	MODEL_TARGET=$NOVA_CACHE/gpu-model-target
fi

# model_cargo ARGS...: cargo for tools/gpu-model (run from tools/gpu-model).
model_cargo() {
	if [ "$MODEL_IN_ROOT" = 1 ]; then
		local ca=()
		# A host-installed CA bundle (e.g. a proxy's) is what the network needs.
		if [ -n "${SSL_CERT_FILE:-}" ] && [ -f "$SSL_CERT_FILE" ]; then
			mkdir -p "$ROOT/usr/local/share/nova-mm"
			cp "$SSL_CERT_FILE" "$ROOT/usr/local/share/nova-mm/host-ca.crt"
			ca=(SSL_CERT_FILE=/usr/local/share/nova-mm/host-ca.crt CARGO_HTTP_CAINFO=/usr/local/share/nova-mm/host-ca.crt)
		fi
		in_root /usr/bin/env "${ca[@]}" CARGO_TARGET_DIR="$MODEL_TARGET" \
			/bin/sh -c 'cd tools/gpu-model && exec cargo "$@"' cargo "$@"
	else
		(cd "$NOVA_TOP/tools/gpu-model" && CARGO_TARGET_DIR=$MODEL_TARGET cargo "$@")
	fi
}

# model_run ARGS...: run the built GPU model.
model_run() {
	if [ "$MODEL_IN_ROOT" = 1 ]; then
		in_root "$MODEL_TARGET/release/gpu-model" "$@"
	else
		"$MODEL_TARGET/release/gpu-model" "$@"
	fi
}

# kunit_suites: the KUnit suites the guest must run, comma-separated: every
# #[kunit_tests(...)] of the module, and the kernel's own gpu_buddy suite.
kunit_suites() {
	local s
	s=$(grep -rhoE 'kunit_tests\([a-z0-9_]+\)' "$NOVA_TOP/drivers/gpu/nova-mm" |
		sed 's/kunit_tests(\(.*\))/\1/' | sort -u | paste -sd,)
	echo "$s,gpu_buddy"
}
