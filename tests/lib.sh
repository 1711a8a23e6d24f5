# tests/lib.sh: what the shell suites share (sourced, not run): a private
# $STOA_DIR and scratch directory $T, cleaned up on exit with the background
# processes listed in $pids, and TAP output (ok, not_ok, check, expect...).
#
# lib_setup TAG: STOA_DIR under /dev/shm (else /tmp), named for the suite.
lib_setup() {
        local base=/tmp
        [ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
        STOA_DIR=$(mktemp -d "$base/stoa-$1.XXXXXX") || exit 1
        export STOA_DIR
        T=$(mktemp -d) || exit 1
        pids=()
        trap lib_cleanup EXIT
}
lib_cleanup() {
        for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
        wait 2>/dev/null
        rm -rf "$STOA_DIR" "$T"
}

n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; }
# check DESC CONDITION...: the condition is a command (usually [ ... ]).
check() { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }

# run CMD...: sets rc, out (stdout file $T/out), err (stderr text).
run() {
        "$@" >"$T/out" 2>"$T/err"
        rc=$?
        err=$(cat "$T/err")
        # In a sanitizer build a report may come with an ordinary exit status.
        if grep -Eq 'Sanitizer|runtime error:' "$T/err"; then
                not_ok "sanitizer report from '$*': $(grep -Em1 'Sanitizer|runtime error:' "$T/err")"
        fi
}
# expect WANT_RC DESC CMD...: run and compare the exit status. A signal is
# always reported as such (exit status 128+N from the shell).
expect() {
        local want=$1 d=$2; shift 2
        run "$@"
        if [ "$rc" -eq "$want" ]; then
                ok "$d"
        elif [ "$rc" -ge 128 ]; then
                not_ok "$d: killed by signal $((rc - 128)) ($*)"
        else
                not_ok "$d: exit $rc, want $want; stderr: $err"
        fi
}
