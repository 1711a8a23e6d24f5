#!/usr/bin/env bash
# stoad (and stoa rm) driven as an operator would: bad arguments refused with
# a message and exit 2; NAME honoured; an existing segment that differs from
# what was asked refused; SIGHUP ignored; one supervisor per segment, and a
# SIGKILLed one does not block the next; `stoa rm` refuses while clients are
# attached; a removed segment file is noticed (ALERT, exit 3); permission
# errors name the file and the access needed.
#
# usage: test_stoad.sh PATH/TO/stoad PATH/TO/stoa
set -u

STOAD=${1:?usage: test_stoad.sh PATH/TO/stoad PATH/TO/stoa}
STOA=${2:?usage: test_stoad.sh PATH/TO/stoad PATH/TO/stoa}

# shellcheck source=tests/lib.sh
. "$(dirname "$0")/lib.sh"
lib_setup stoad
chmod 755 "$STOA_DIR"           # uid nobody must reach the files below

err_has() { if grep -Eq -- "$2" <<<"$err"; then ok "$1"; else not_ok "$1: stderr was: $err"; fi; }
log_has() { if grep -Eq -- "$3" "$2"; then ok "$1"; else not_ok "$1: no /$3/ in: $(cat "$2")"; fi; }
# Start stoad in the background, its stderr in $T/$1.log; sets $bg.
start() {
        local log=$1; shift
        "$STOAD" "$@" 2>"$T/$log.log" &
        bg=$!
        pids+=("$bg")
        for _ in $(seq 100); do grep -q watching "$T/$log.log" && return 0; sleep 0.05; done
        return 1
}
# Wait up to $2 seconds for pid $1 to exit; sets wrc to its status.
wait_exit() {
        local i
        for ((i = 0; i < $2 * 20; i++)); do
                kill -0 "$1" 2>/dev/null || { wait "$1"; wrc=$?; return 0; }
                sleep 0.05
        done
        wrc=-1
        return 1
}

# ---- usage errors: exit 2, one line saying what is wrong and the limits ----
expect 2 "--interval abc refused" "$STOAD" --interval abc --once
err_has "--interval abc: says what a duration is" "not a duration"
expect 2 "--interval 0 refused" "$STOAD" --interval 0 --once
err_has "--interval 0: names the shortest" "shortest is 0.01 s"
expect 2 "--interval -1 refused" "$STOAD" --interval -1 --once
expect 2 "--mode 999 refused" "$STOAD" --mode 999 --once
err_has "--mode 999: not a mode" "not a file mode"
expect 2 "--mode rw refused" "$STOAD" --mode rw --once
expect 2 "--mode 0400 refused (owner cannot write)" "$STOAD" --mode 0400 --once
expect 2 "--size -5m refused" "$STOAD" --size -5m --once
err_has "--size -5m: gives the limits" "from 16 MiB to 64 TiB"
expect 2 "--size 99999999999g refused" "$STOAD" --size 99999999999g --once
err_has "--size 99999999999g: names the largest" "largest is 64 TiB"
expect 2 "--size 0 refused" "$STOAD" --size 0 --once
err_has "--size 0: names the smallest" "smallest is 16 MiB"
expect 2 "--size 8m refused (below STOA_SIZE_MIN)" "$STOAD" --size 8m --once
expect 2 "--huge sometimes refused" "$STOAD" --huge sometimes --once
expect 2 "two NAMEs refused" "$STOAD" a b --once
expect 2 "NAME and a different --name refused" "$STOAD" a --name b --once
check "no usage error created a segment" [ -z "$(ls "$STOA_DIR")" ]

# ---- NAME is honoured ------------------------------------------------------
expect 0 "stoad NAME --once" "$STOAD" seg1 --once --size 16m
check "NAME created seg1, not default" [ -e "$STOA_DIR/seg1" ] && [ ! -e "$STOA_DIR/default" ]

# ---- an existing segment must be what was asked explicitly -----------------
expect 0 "same size accepted" "$STOAD" seg1 --once --size 16m
expect 0 "no options: taken as it is" "$STOAD" seg1 --once
expect 1 "different --size refused" "$STOAD" seg1 --once --size 32m
err_has "size: says what it is and what was asked" "exists with size 16 MiB; --size asked for 32 MiB"
expect 1 "different --mode refused" "$STOAD" seg1 --once --mode 0660
err_has "mode: says what it is and what was asked" "exists with mode 0600; --mode asked for 0660"
if [ "$("$STOA" stat seg1 | sed -n 's/^backing  *//p')" != hugetlb-2m ]; then
        expect 1 "--huge require refused on a 4 KiB segment" "$STOAD" seg1 --once --huge require
        err_has "huge: says what it is and what was asked" "exists on 4 KiB pages.*--huge require"
fi

# ---- SIGHUP, one supervisor, SIGKILL ---------------------------------------
check "stoad starts watching" start a seg1 --interval 0.2
first=$bg
kill -HUP "$first"
sleep 0.3
check "SIGHUP: stoad still runs" kill -0 "$first"
log_has "SIGHUP: logged as ignored" "$T/a.log" "SIGHUP.*ignored"
expect 1 "a second stoad on the segment refuses" "$STOAD" seg1
err_has "the second names the first's pid" "already supervised by pid $first"
expect 0 "--once (no supervision) still reports beside it" "$STOAD" seg1 --once
kill -9 "$first"
wait "$first" 2>/dev/null
check "after SIGKILL of the first, a new stoad runs" start b seg1 --interval 0.2
second=$bg

# ---- stoa rm: refused while attached; a removed file is noticed ------------
expect 1 "stoa rm refuses while stoad is attached" "$STOA" rm seg1
err_has "rm names the client: pid and comm" "pid $second \\(stoad\\)"
check "the file is still there" [ -e "$STOA_DIR/seg1" ]
expect 0 "stoa rm --force removes it" "$STOA" rm seg1 --force
check "the file is gone" [ ! -e "$STOA_DIR/seg1" ]
wait_exit "$second" 2
check "stoad noticed the removal within 2 s and exited 3 (exit $wrc)" [ "$wrc" = 3 ]
log_has "stoad said so on an ALERT line" "$T/b.log" "ALERT: .*seg1.*removed"

expect 0 "stoa create seg2" "$STOA" create seg2 --size 16m
expect 0 "stoa rm of an unused segment" "$STOA" rm seg2
check "seg2 is gone" [ ! -e "$STOA_DIR/seg2" ]
expect 1 "stoa rm of a missing segment" "$STOA" rm seg2
err_has "missing: said so" "no such segment"

check "stoad on seg3" start c seg3 --size 16m --interval 5
third=$bg
rm -f "$STOA_DIR/seg3"
wait_exit "$third" 2
check "raw rm noticed within 2 s despite --interval 5 (exit $wrc)" [ "$wrc" = 3 ]
log_has "raw rm: ALERT" "$T/c.log" "ALERT"

# ---- permissions: the file and the access needed are named -----------------
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
        as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
        expect 0 "a private segment" "$STOAD" priv --once --size 16m
        expect 1 "stoad as nobody on a 0600 segment: refused" as_nobody "$STOAD" priv --once
        err_has "names the file and read-write access" "$STOA_DIR/priv: permission denied: needs read-write access"
        chmod 0755 "$STOA_DIR"
        mkdir -m 0755 "$STOA_DIR/ro"
        expect 1 "stoad as nobody in a directory it cannot write: refused" \
                as_nobody env STOA_DIR="$STOA_DIR/ro" "$STOAD" new --once
        err_has "names the directory and write access" "needs write access to the directory $STOA_DIR/ro"
else
        ok "# SKIP permission checks need root and setpriv"
fi

echo "1..$n"
[ "$fails" -eq 0 ]
