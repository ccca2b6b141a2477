# SPDX-License-Identifier: GPL-2.0
# Tallies and the guest-run judge shared by check.sh and soak.sh (sourced, after lib.sh).
# The caller sets logs (a directory), kunit_py, passed=0 and failed=0.

pass() { passed=$((passed + 1)); echo "ok - $1"; }
fail() { failed=$((failed + 1)); echo "not ok - $1${2:+: $2}"; }
# step NAME CMD...: one check, its output in build/check/NAME.log.
step() {
	local name=$1; shift
	if "$@" >"$logs/$name.log" 2>&1; then pass "$name"; else fail "$name" "see $logs/$name.log"; fi
}

# guest_boot NAME CHIPS...: boot a guest (environment as guest.sh takes it); its log in
# $logs/guest-NAME.log, QEMU's exit status in $logs/guest-NAME.rc.
guest_boot() {
	local name=$1; shift
	set +e
	scripts/guest.sh "$name" "$@" >"$logs/guest-$name.log" 2>&1
	echo $? >"$logs/guest-$name.rc"
	set -e
}

# guest_judge NAME ARGS...: judge a booted guest with guest-results.py ARGS; adds to the tally.
guest_judge() {
	local name=$1; shift
	local qrc
	qrc=$(cat "$logs/guest-$name.rc" 2>/dev/null || echo "none")
	[ "$qrc" = 0 ] || fail "guest $name: QEMU" "exit $qrc; see $logs/guest-$name.log and $NOVA_BUILD/guest/$name/console.log"
	local res
	res=$(in_root python3 scripts/guest-results.py "$NOVA_BUILD/guest/$name" --kunit-py "$kunit_py" "$@" || true)
	echo "$res" | grep -v '^RESULTS '
	local line
	line=$(echo "$res" | grep '^RESULTS ' || echo "RESULTS 0 1")
	set -- $line
	passed=$((passed + $2))
	failed=$((failed + $3))
}

# guest NAME ARGS -- CHIPS: boot a guest and judge it.
guest() {
	local name=$1; shift
	local judge=()
	while [ "$1" != "--" ]; do judge+=("$1"); shift; done
	shift
	log "guest run '$name': $*"
	guest_boot "$name" "$@"
	guest_judge "$name" "${judge[@]}"
}
