#!/usr/bin/env bash
# The README's code sample compiles as written and runs: the first ```c block
# of README.md is extracted, compiled against the built libstoa and run on a
# segment in a private $STOA_DIR.
#
# usage: test_readme.sh README.md INCLUDE_DIR LIBSTOA.a
set -u
README=${1:?usage: test_readme.sh README.md INCLUDE_DIR LIBSTOA.a}
INC=${2:?}
LIB=${3:?}
CC=${CC:-cc}

T=$(mktemp -d) || exit 1
base=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
STOA_DIR=$(mktemp -d "$base/stoa-readme.XXXXXX") || exit 1
export STOA_DIR
trap 'rm -rf "$T" "$STOA_DIR"' EXIT

awk '/^```c$/ { on = 1; next } on && /^```$/ { exit } on { print }' "$README" >"$T/sample.c"
if ! grep -q 'int main' "$T/sample.c"; then
        echo "not ok 1 - README.md has a C sample with a main()"
        exit 1
fi
echo "ok 1 - README.md has a C sample with a main()"
# As a user compiles it: C11, warnings on, nothing internal on the include path.
# SAMPLE_CFLAGS: -fsanitize=... when the library was built with a sanitizer.
if ! $CC -std=c11 -Wall -Wextra -Werror ${SAMPLE_CFLAGS:-} -I"$INC" -o "$T/sample" "$T/sample.c" "$LIB" \
        -lnuma -pthread -lm 2>"$T/cc.err"; then
        echo "not ok 2 - the sample compiles: $(cat "$T/cc.err")"
        exit 1
fi
echo "ok 2 - the sample compiles"
out=$("$T/sample" 2>&1)
if [ "$out" != '{...}' ]; then
        echo "not ok 3 - the sample runs and prints the value: $out"
        exit 1
fi
echo "ok 3 - the sample runs and prints the value"
echo "1..3"
