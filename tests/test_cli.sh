#!/usr/bin/env bash
# The stoa tool, driven as a user would: create, set/get/del, --ns, --ttl,
# stat (text and JSON), clients (live and killed holders), check on a healthy
# and on scribbled segments, error paths and usage errors.
#
# usage: test_cli.sh PATH/TO/stoa     (meson passes the built tool)
# Prints one "ok N - ..." or "not ok N - ..." line per check; exits 1 if any
# check failed. Every segment lives in a private $STOA_DIR, removed at exit.
set -u

STOA=${1:?usage: test_cli.sh PATH/TO/stoa}
command -v python3 >/dev/null || { echo "test_cli.sh: python3 is needed" >&2; exit 1; }

# shellcheck source=tests/lib.sh
. "$(dirname "$0")/lib.sh"
lib_setup cli

# The last command's stderr is one line starting "stoa: " and matching RE.
err_is() {
        local lines
        lines=$(printf '%s\n' "$err" | grep -c .)
        if [ "$lines" -eq 1 ] && [[ $err == "stoa: "* ]] && grep -Eq -- "$2" <<<"$err"; then
                ok "$1"
        else
                not_ok "$1: stderr was: $err"
        fi
}
out_has() { if grep -Eq -- "$2" "$T/out"; then ok "$1"; else not_ok "$1: no /$2/ in: $(head -c 2000 "$T/out")"; fi; }
# A figure of "stoa stat" text output: stat_field "heap used".
stat_field() { sed -n "s/^$1  *\([0-9][0-9]*\).*/\1/p" "$T/out" | head -1; }
json() { python3 -c "import json,os; d=json.load(open('$T/out')); print($1)"; }

# ---- help and usage errors (exit 2) --------------------------------------
expect 0 "--help exits 0" "$STOA" --help
out_has "--help documents create" "stoa create NAME"
expect 2 "no arguments: usage error" "$STOA"
expect 2 "unknown verb" "$STOA" frobnicate s
err_is "unknown verb: one line" "unknown command 'frobnicate'"
expect 2 "get without a key" "$STOA" get s
err_is "get without a key: one line" "usage: stoa get NAME KEY"
expect 2 "set with too many arguments" "$STOA" set s k v extra
expect 2 "unknown option" "$STOA" stat s --bogus
err_is "unknown option: one line" "unknown option '--bogus'"
expect 2 "--ttl not a number" "$STOA" set s k v --ttl soon
err_is "--ttl not a number: one line" "bad --ttl"
expect 2 "--ttl negative" "$STOA" set s k v --ttl -1
expect 2 "--ttl without its argument" "$STOA" set s k v --ttl
err_is "--ttl without argument: one line" "needs an argument"
expect 2 "--ttl given to stat" "$STOA" stat s --ttl 5
err_is "option on the wrong verb: one line" "stat does not take --ttl"
expect 2 "--json given to get" "$STOA" get s k --json
expect 2 "--size garbage" "$STOA" create s --size 12q
expect 2 "empty key" "$STOA" get s ""

# ---- missing segments: exit 1, and never created ---------------------------
expect 1 "get on a missing segment" "$STOA" get nosuch k
err_is "missing segment: one clear line" "^stoa: segment nosuch: no such segment"
for verb in stat clients check; do
        expect 1 "$verb on a missing segment" "$STOA" $verb nosuch
done
expect 1 "set on a missing segment" "$STOA" set nosuch k v
check "inspecting a missing name created nothing" [ -z "$(ls -A "$STOA_DIR")" ]
printf 'just some text, long enough to be read as a header by a careless reader\n%.0s' \
        $(seq 100) >"$T/notaseg"
expect 1 "stat on a file that is not a segment" "$STOA" stat "$T/notaseg"
err_is "foreign file: one line" "not a stoa segment"

# ---- create ----------------------------------------------------------------
expect 0 "create a segment" "$STOA" create s --size 32m
out_has "create says where" "$STOA_DIR/s"
check "the segment file is in \$STOA_DIR" [ -f "$STOA_DIR/s" ]
expect 1 "create refuses an existing segment" "$STOA" create s --size 64m
err_is "existing segment: one line" "already exists"
expect 2 "create refuses a size below STOA_SIZE_MIN" "$STOA" create tiny --size 4k
err_is "too small: one line naming the minimum" "^stoa: --size '4k': too small; the smallest is 16 MiB"
check "a refused create leaves no file behind" [ ! -e "$STOA_DIR/tiny" ]

# ---- set / get / del ---------------------------------------------------------
expect 0 "set" "$STOA" set s greeting hello
expect 0 "get" "$STOA" get s greeting
check "get prints the value, no newline when stdout is not a tty" \
        [ "$(od -An -c "$T/out" | tr -s ' ')" = " h e l l o" ]
expect 0 "set overwrites" "$STOA" set s greeting "hello again"
expect 0 "get after overwrite" "$STOA" get s greeting
check "the new value is read" [ "$(cat "$T/out")" = "hello again" ]
printf 'bin\000ary\nvalue\377' >"$T/bin"
run "$STOA" set s bin - <"$T/bin"
check "set - reads binary stdin (exit $rc)" [ "$rc" -eq 0 ]
expect 0 "get binary" "$STOA" get s bin
check "binary value round-trips byte for byte" cmp -s "$T/out" "$T/bin"
head -c 300000 /dev/urandom >"$T/big"
run "$STOA" set s big - <"$T/big"
check "set a 300 KB value (exit $rc: $err)" [ "$rc" -eq 0 ]
expect 0 "get a value larger than the first buffer" "$STOA" get s big
check "300 KB value round-trips" cmp -s "$T/out" "$T/big"
expect 0 "set a value that starts with '-' after --" "$STOA" set s -- dash -x
expect 0 "get it" "$STOA" get s dash
check "value '-x' stored" [ "$(cat "$T/out")" = "-x" ]
expect 0 "set an empty value" "$STOA" set s empty ""
expect 0 "get an empty value" "$STOA" get s empty
check "empty value is empty" [ ! -s "$T/out" ]
expect 0 "del" "$STOA" del s greeting
expect 1 "get after del" "$STOA" get s greeting
err_is "not found message" "^stoa: greeting: not found$"
expect 1 "del of an absent key" "$STOA" del s greeting
err_is "del absent: not found" "^stoa: greeting: not found$"
expect 0 "the segment by path, not by name" "$STOA" get "$STOA_DIR/s" dash

# ---- namespaces --------------------------------------------------------------
expect 0 "set in namespace a" "$STOA" set s --ns a k in-a
expect 0 "set the same key in the default namespace" "$STOA" set s k in-default
expect 0 "get --ns a" "$STOA" get --ns a s k
check "namespace a has its own value" [ "$(cat "$T/out")" = "in-a" ]
expect 0 "get default" "$STOA" get s k
check "default namespace keeps its value" [ "$(cat "$T/out")" = "in-default" ]
expect 1 "key of namespace a is absent from namespace b" "$STOA" get --ns b s dash
expect 0 "del --ns a" "$STOA" del --ns a s k
expect 0 "default key survives a del in namespace a" "$STOA" get s k

# ---- namespaces: reads create nothing; list, drop, flush ------------------------
"$STOA" create nsx --size 32m >/dev/null
for i in $(seq 1 40); do "$STOA" get nsx k --ns "typo$i" 2>/dev/null; done
"$STOA" del nsx k --ns typo0 2>/dev/null
expect 0 "ns list" "$STOA" ns nsx list
check "forty gets and a del in missing namespaces created none" [ "$(cat "$T/out")" = "default" ]
expect 0 "a set creates its namespace" "$STOA" set nsx k v --ns web
expect 0 "--ns default is the default namespace" "$STOA" set nsx k dv --ns default
expect 0 "ns list after writes" "$STOA" ns nsx list
check "ns list: default and web, once each" [ "$(cat "$T/out")" = "$(printf 'default\nweb')" ]
expect 0 "get --ns default" "$STOA" get nsx k --ns default
check "--ns default reads the default namespace" [ "$(cat "$T/out")" = "dv" ]
expect 0 "stat after --ns default" "$STOA" stat nsx
check "stat shows no section twice" [ "$(grep '^namespace' "$T/out" | sort | uniq -d)" = "" ]
check "stat shows the default section once" [ "$(grep -c '^namespace "default"' "$T/out")" = 1 ]
expect 1 "dropping the default namespace is refused" "$STOA" ns nsx drop default
err_is "drop default: a clear refusal" "^stoa: the default namespace cannot be dropped"
expect 1 "dropping a missing namespace" "$STOA" ns nsx drop nosuch
err_is "drop missing: no namespace" "^stoa: segment nsx: no namespace 'nosuch'$"
expect 2 "ns with an unknown sub-command" "$STOA" ns nsx frob
expect 2 "ns drop without a name" "$STOA" ns nsx drop
expect 0 "ns drop web" "$STOA" ns nsx drop web
expect 1 "the dropped namespace's key is gone" "$STOA" get nsx k --ns web
expect 0 "ns list after the drop" "$STOA" ns nsx list
check "ns list: web is gone" [ "$(cat "$T/out")" = "default" ]
expect 0 "the default key survives the drop" "$STOA" get nsx k
expect 0 "set in web again" "$STOA" set nsx k2 v2 --ns web
expect 0 "flush" "$STOA" flush nsx
expect 1 "flushed: default key gone" "$STOA" get nsx k
expect 1 "flushed: web key gone" "$STOA" get nsx k2 --ns web
expect 0 "check after drop and flush" "$STOA" check nsx
expect 1 "flush of a missing segment" "$STOA" flush nosuchseg

# ---- time to live ------------------------------------------------------------
expect 0 "set --ttl 1" "$STOA" set s short v --ttl 1
expect 0 "set --ttl 1000" "$STOA" set s long v --ttl 1000
expect 0 "a ttl key is there at once" "$STOA" get s short
sleep 2.2
expect 1 "expired after its ttl" "$STOA" get s short
err_is "expired: not found" "^stoa: short: not found$"
expect 0 "a long ttl key is still there" "$STOA" get s long
expect 0 "a key without ttl is still there" "$STOA" get s dash

# ---- stat on a segment with known traffic ------------------------------------
"$STOA" create st --size 32m >/dev/null
for i in 1 2 3; do "$STOA" set st "key$i" "value-$i" || not_ok "stat setup: set key$i"; done
"$STOA" set st --ns web w1 xx || not_ok "stat setup: ns web"
"$STOA" set st --ns web w2 yyyy || not_ok "stat setup: ns web"
ns_odd='q"uo\te'$'\t''d'
"$STOA" set st --ns "$ns_odd" odd 1 || not_ok "stat setup: ns with a quote, backslash and tab"
"$STOA" get st key1 >/dev/null || not_ok "stat setup: hit key1"
"$STOA" get st key2 >/dev/null || not_ok "stat setup: hit key2"
"$STOA" get st nope 2>/dev/null && not_ok "stat setup: a miss found something"
"$STOA" del st key3 || not_ok "stat setup: del"

expect 0 "stat" "$STOA" stat st
out_has "stat names the segment file" "^segment +$STOA_DIR/st$"
out_has "stat shows the backing" "^backing +[a-z]+"
check "stat size is 32 MiB ($(stat_field size))" [ "$(stat_field size)" = $((32 << 20)) ]
check "stat items: 5 live ($(stat_field items))" [ "$(stat_field items)" = 5 ]
check "stat hits: 2 ($(stat_field hits))" [ "$(stat_field hits)" = 2 ]
check "stat misses: 1 ($(stat_field misses))" [ "$(stat_field misses)" = 1 ]
check "stat sets: 6 ($(stat_field sets))" [ "$(stat_field sets)" = 6 ]
check "stat dels: 1 ($(stat_field dels))" [ "$(stat_field dels)" = 1 ]
out_has "stat hit ratio 2/3" "^hit ratio +0\.666[67]"
check "heap used + free <= heap" [ $(($(stat_field "heap used") + $(stat_field "heap free"))) -le "$(stat_field heap)" ]
out_has "stat has a section for namespace web" '^namespace "web"$'
out_has "an odd namespace name is escaped for the terminal" '^namespace "q"uo\\x5cte\\x09d"$'

expect 0 "stat --json" "$STOA" stat st --json
check "stat --json is one valid JSON document" python3 -m json.tool "$T/out" /dev/null
check "JSON: items 5, hits 2, misses 1" [ "$(json 'd["items"], d["hits"], d["misses"]')" = "5 2 1" ]
check "JSON: size and path" [ "$(json 'd["segment"]["size"], d["segment"]["path"]')" = "$((32 << 20)) $STOA_DIR/st" ]
check "JSON: hit ratio" [ "$(json 'round(d["hit_ratio"], 4)')" = 0.6667 ]
check "JSON: namespace web has 2 items" \
        [ "$(json '[x["items"] for x in d["namespaces"] if x["name"] == "web"]')" = "[2]" ]
check "JSON: the odd namespace name survives escaping exactly" \
        [ "$(NS=$ns_odd json '[x["name"] for x in d["namespaces"]].count(os.environ["NS"])')" = 1 ]
check "JSON: items add up over namespaces" \
        [ "$(json 'sum(x["items"] for x in d["namespaces"]) == d["items"]')" = True ]
check "JSON: clients within the slot table" \
        [ "$(json '0 <= d["clients"]["alive"] + d["clients"]["dead"] <= d["clients"]["slots"]')" = True ]

# ---- clients: two holders blocked in a write, then killed --------------------
head -c 1000000 /dev/urandom >"$T/mb"
"$STOA" set st mb - <"$T/mb" || not_ok "clients setup: 1 MB value"
holders=()
for i in 1 2; do
        mkfifo "$T/fifo$i"
        # shellcheck disable=SC2217 # the reader opens the fifo and never reads it
        sleep 60 <"$T/fifo$i" &
        pids+=($!)
        "$STOA" get st mb >"$T/fifo$i" &    # blocks writing, holding its slot
        holders+=($!)
        pids+=($!)
done
for _ in $(seq 50); do                     # until both hold a slot
        "$STOA" clients st >"$T/out" 2>/dev/null
        grep -Eq "^[0-9]+ +alive +${holders[0]} " "$T/out" &&
                grep -Eq "^[0-9]+ +alive +${holders[1]} " "$T/out" && break
        sleep 0.1
done
expect 0 "clients" "$STOA" clients st
out_has "clients prints a header" "^SLOT +STATE +PID +PIDNS +COMM +SINCE +READING +VIEWS +RETIRED$"
for p in "${holders[@]}"; do
        out_has "clients shows holder $p alive" "^[0-9]+ +alive +$p +[0-9]+ +stoa +[0-9]{4}-[0-9]{2}-[0-9]{2} "
done
check "clients lists the 2 holders and no other (bar this tool)" \
        [ "$(grep -E '^[0-9]+ +alive ' "$T/out" | grep -vc '(this tool)$')" = 2 ]
out_has "clients summary counts what it listed" "^$(grep -Ec '^[0-9]+ +(alive|DEAD) ' "$T/out") client\(s\), 0 dead$"
expect 0 "clients --json" "$STOA" clients st --json
check "clients --json is valid JSON" python3 -m json.tool "$T/out" /dev/null
check "clients --json: 2 alive besides this tool" \
        [ "$(json 'sum(c["alive"] and not c["self"] for c in d["clients"])')" = 2 ]
check "clients --json: count and dead agree with the list" \
        [ "$(json 'd["count"] == len(d["clients"]) and d["dead"] == sum(not c["alive"] for c in d["clients"])')" = True ]
kill -9 "${holders[@]}"
wait "${holders[@]}" 2>/dev/null
# A killed holder's slot is dead until someone recovers it (the next client
# to claim that slot does). It must never show as alive again.
expect 0 "clients after the holders were killed" "$STOA" clients st
for p in "${holders[@]}"; do
        check "killed holder $p is not shown alive" bash -c "! grep -Eq '^[0-9]+ +alive +$p ' '$T/out'"
done
dead_listed=$(grep -c ' DEAD ' "$T/out")
out_has "clients summary counts the dead it listed" "^[0-9]+ client\(s\), $dead_listed dead$"
alive_listed=$(grep -E '^[0-9]+ +alive ' "$T/out" | grep -vc '(this tool)$')
check "no live client is left but perhaps this tool ($alive_listed)" [ "$alive_listed" = 0 ]
expect 0 "stat after the holders were killed" "$STOA" stat st
check "stat: no live client but perhaps this tool ($(stat_field "clients alive"))" \
        [ "$(stat_field "clients alive")" -le 1 ]
check "stat: dead clients as clients listed ($(stat_field "clients dead") vs $dead_listed)" \
        [ "$(stat_field "clients dead")" = "$dead_listed" ]

# ---- check ---------------------------------------------------------------------
# The killed holders' slots are still dead: check judges their journals as
# their recovery will, and says so apart (exit 0: nothing is damaged).
expect 0 "check a healthy segment with dead clients" "$STOA" check st
if [ "$dead_listed" -gt 0 ]; then
        out_has "check says consistent, the dead apart" \
                "^segment st: consistent \($dead_listed dead client\(s\) awaiting recovery; "
else
        out_has "check says consistent" "^segment st: consistent$"
fi
"$(dirname "$STOA")/stoad" --name st --once >/dev/null 2>&1 || not_ok "stoad --once recovers the dead"
expect 0 "check after a sweep" "$STOA" check st
out_has "check says consistent" "^segment st: consistent$"
expect 0 "check the first segment (overwrites, ttl, big values)" "$STOA" check s

# Scribble over one item's key in the file: its index entry then names an item
# whose key does not hash to that bucket. Only the key bytes change.
"$STOA" create scrib --size 32m >/dev/null
for i in $(seq 100 199); do "$STOA" set scrib "scribkey-$i" "scribvalue-$i" || break; done
offs=$(grep -obUa 'scribkey-150' "$STOA_DIR/scrib" | cut -d: -f1)
check "the key is found in the segment file" [ -n "$offs" ]
for off in $offs; do
        printf 'XXXXXXXXXXXX' | dd of="$STOA_DIR/scrib" bs=1 seek="$off" conv=notrunc status=none
done
expect 1 "check finds a scribbled key" "$STOA" check scrib
out_has "check reports the problem" "^problem: "
out_has "check summary counts problems" "^segment scrib: [1-9][0-9]* problem\(s\) found(, [0-9]+ shown)?$"
expect 1 "the scribbled key is no longer found" "$STOA" get scrib scribkey-150
expect 0 "other keys still read" "$STOA" get scrib scribkey-151

# Garbage over the whole index region (found in the header's region table:
# struct seg_header, regions at byte 152, 24 bytes each: kind u32, node i32,
# off u64, size u64; kind 5 is the index). The tool must report, not crash.
region() {      # region FILE KIND -> "off size" of the first region of KIND
        python3 - "$1" "$2" <<'EOF'
import struct, sys
h = open(sys.argv[1], 'rb').read(4096)
n = struct.unpack_from('<I', h, 60)[0]
for i in range(min(n, 32)):
    kind, node, off, size = struct.unpack_from('<IiQQ', h, 152 + 24 * i)
    if kind == int(sys.argv[2]):
        print(off, size)
        break
EOF
}
"$STOA" create garb --size 32m >/dev/null
for i in $(seq 1 100); do "$STOA" set garb "k$i" "v$i" || break; done
read -r ioff isize < <(region "$STOA_DIR/garb" 5)
check "the header lists an index region (${ioff:-none})" [ -n "${ioff:-}" ]
if [ -n "${ioff:-}" ]; then
        head -c "$isize" /dev/urandom | dd of="$STOA_DIR/garb" bs=64k seek="$ioff" oflag=seek_bytes \
                conv=notrunc status=none
fi
expect 1 "check on a garbage index: problems, no crash" "$STOA" check garb
out_has "garbage index: summary" "^segment garb: [1-9][0-9]* problem\(s\) found(, [0-9]+ shown)?$"
for args in "stat garb" "stat garb --json" "get garb k7" "clients garb"; do
        # shellcheck disable=SC2086 # $args is several words
        run "$STOA" $args
        check "'stoa $args' on a garbage index exits without a signal (exit $rc)" [ "$rc" -lt 128 ]
done

# Garbage over the middle of the heap (kind 4): some items' headers and keys.
"$STOA" create heap --size 32m >/dev/null
for i in $(seq 1 300); do
        printf -v val "%*s" $((i % 50 * 20 + 1)) ""
        "$STOA" set heap "hk$i" "${val// /v}" || break
done
read -r hoff _ < <(region "$STOA_DIR/heap" 4)
check "the header lists a heap region (${hoff:-none})" [ -n "${hoff:-}" ]
if [ -n "${hoff:-}" ]; then
        used=$(grep -obUa 'hk150' "$STOA_DIR/heap" | head -1 | cut -d: -f1)
        [ -n "$used" ] || used=$hoff
        head -c 65536 /dev/urandom | dd of="$STOA_DIR/heap" bs=64k seek="$((used - 32768))" \
                oflag=seek_bytes conv=notrunc status=none
fi
run "$STOA" check heap
check "check on a scribbled heap: exit 1 (exit $rc)" [ "$rc" -eq 1 ]
for args in "stat heap" "get heap hk150" "get heap hk5" "clients heap"; do
        # shellcheck disable=SC2086 # $args is several words
        run "$STOA" $args
        check "'stoa $args' on a scribbled heap exits without a signal (exit $rc)" [ "$rc" -lt 128 ]
done

# One flipped byte in the header: attaching refuses the segment (checksum).
"$STOA" create hdr --size 32m >/dev/null
printf '\001' | dd of="$STOA_DIR/hdr" bs=1 seek=100 conv=notrunc status=none
expect 1 "a corrupt header is refused" "$STOA" stat hdr
err_is "corrupt header: one line" "^stoa: segment hdr: .*corrupt"

# A segment file cut short: refused, never a SIGBUS.
"$STOA" create short --size 32m >/dev/null
truncate -s 1M "$STOA_DIR/short"
expect 1 "a truncated segment is refused" "$STOA" check short
err_is "truncated segment: one line" "^stoa: segment short: .*(truncated|shorter)"

# ---- errors in stoa's words --------------------------------------------------
"$STOA" create words --size 16m >/dev/null
long=$(head -c 4097 /dev/zero | tr '\0' k)
expect 1 "set with a 4097-byte key fails" "$STOA" set words "$long" v
err_is "long key: the length and the limit" "key is 4097 bytes; the limit is 4096"
expect 1 "get of a missing key" "$STOA" get words absent
err_is "missing key: not found" "^stoa: absent: not found$"
expect 2 "create --size 0 refused" "$STOA" create zero --size 0
err_is "--size 0: the smallest" "smallest is 16 MiB"
expect 2 "create --size 99999999999g refused" "$STOA" create huge --size 99999999999g
err_is "--size 99999999999g: the largest" "largest is 64 TiB"

# ---- a user who may only read the file inspects it ---------------------------
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
        as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
        chmod 0755 "$STOA_DIR"
        "$STOA" create ro --size 16m >/dev/null
        "$STOA" set ro k v >/dev/null
        chmod 0644 "$STOA_DIR/ro"
        expect 0 "nobody: stat on a 0644 segment" as_nobody "$STOA" stat ro
        out_has "nobody: stat shows the item" "^items  *1$"
        out_has "nobody: stat counted no client of its own" "^clients alive  *0$"
        expect 0 "nobody: clients on a 0644 segment" as_nobody "$STOA" clients ro
        out_has "nobody: no slot taken" "^0 client\(s\), 0 dead"
        expect 0 "nobody: check on a 0644 segment" as_nobody "$STOA" check ro
        out_has "nobody: consistent" "consistent"
        expect 1 "nobody: set refused" as_nobody "$STOA" set ro k w
        err_is "nobody: names the file and the access needed" \
                "$STOA_DIR/ro: permission denied: needs read-write access; the file is mode 0644"
        expect 1 "nobody: rm refused" as_nobody "$STOA" rm ro
        err_is "nobody: rm says the directory" "cannot remove .*ro"
        chmod 0600 "$STOA_DIR/ro"
        expect 1 "nobody: stat on a 0600 segment refused" as_nobody "$STOA" stat ro
        err_is "nobody: names the file and read access" "$STOA_DIR/ro: permission denied: needs read access"
        expect 0 "root: the value is unchanged" "$STOA" get ro k
        check "root: value v" [ "$(cat "$T/out")" = v ]
else
        ok "# SKIP read-only user checks need root and setpriv"
fi

echo "1..$n"
[ "$fails" -eq 0 ] || { echo "$fails of $n checks failed" >&2; exit 1; }
