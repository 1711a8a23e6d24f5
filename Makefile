# The README's two commands. Everything else is meson.
#   make run   install missing packages, build, start the supervisor on the default segment
#   make test  install missing packages, build (plain, ASan+UBSan, TSan, libFuzzer),
#              run every suite, the shared-handle thread cases under TSan, a short fuzz run
#   make test-tsan  only the ThreadSanitizer part
#   make fuzz  a long fuzz run of every target (FUZZ_SECONDS each, default 600)
#
# The plain build finds optional features as it likes (meson 'auto'); the
# sanitizer build is configured with every optional feature disabled, so each
# `make test` also proves the build on a machine without the optional packages.

BUILD      ?= build
BUILD_SAN  ?= build-san
BUILD_TSAN ?= build-tsan
BUILD_FUZZ ?= build-fuzz
FUZZ_TARGETS := attach scribble
FUZZ_SECONDS ?= 600
FUZZ_SHORT   ?= 25
MESON_OPTS ?= -Dwerror=true
DEBS       := gcc make meson ninja-build pkg-config \
              libck-dev libnuma-dev libcmocka-dev \
              clang-14 libclang-rt-14-dev
BENCH_DEBS := redis-server liblmdb-dev libhiredis-dev
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps bench-deps build build-san build-tsan build-fuzz run test test-tsan test-fuzz \
        fuzz test-fast bench clean

all: build

# Installs only what is missing; apt-get update runs once, and only if needed.
deps:
	@missing=$$(for p in $(DEBS) $(EXTRA_DEBS); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing:" $$missing; \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

bench-deps:
	@$(MAKE) --no-print-directory deps EXTRA_DEBS="$(BENCH_DEBS)"

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_OPTS)

$(BUILD_SAN)/build.ninja:
	meson setup $(BUILD_SAN) $(MESON_OPTS) -Dauto_features=disabled \
	    -Db_sanitize=address,undefined -Db_lundef=false

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

build-san: deps $(BUILD_SAN)/build.ninja
	ninja -C $(BUILD_SAN)

# ThreadSanitizer needs clang: gcc refuses atomic_thread_fence under -fsanitize=thread.
$(BUILD_TSAN)/build.ninja:
	CC=clang-14 meson setup $(BUILD_TSAN) $(MESON_OPTS) -Dauto_features=disabled \
	    -Db_sanitize=thread -Db_lundef=false

# Only what it runs: test_threads (see docs/testing.md).
build-tsan: deps $(BUILD_TSAN)/build.ninja
	ninja -C $(BUILD_TSAN) tests/test_threads

# Threads of one process sharing one handle. Left out (docs/testing.md): three
# handles (each maps the segment at its own address, and TSan cannot relate an
# atomic in one mapping to the same word in another, as across processes), and
# the evicting case (its hands read descriptors and items optimistically).
test-tsan: build-tsan
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan.supp \
	    meson test -C $(BUILD_TSAN) --no-rebuild --print-errorlogs --suite threads \
	    --test-args test_one_handle

run: build
	./$(BUILD)/tools/stoad

# libFuzzer targets (tests/fuzz), ASan+UBSan, coverage without trace-cmp
# (the index walks of stoa_check would spend most of the time in its hooks).
$(BUILD_FUZZ)/build.ninja:
	CC=clang-14 meson setup $(BUILD_FUZZ) $(MESON_OPTS) -Dauto_features=disabled -Dtests=false \
	    -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
	    -Dc_args='-fsanitize=fuzzer-no-link -fno-sanitize-coverage=trace-cmp'

build-fuzz: deps $(BUILD_FUZZ)/build.ninja
	ninja -C $(BUILD_FUZZ) $(addprefix tests/fuzz/fuzz_,$(FUZZ_TARGETS))

# Each target for SECONDS, from the seed corpus (tests/fuzz/corpus/T, read
# only) and what earlier runs found ($(BUILD_FUZZ)/corpus/T). A crash, leak,
# UBSan report or 10 s hang fails it, its input left in $(BUILD_FUZZ)/artifacts.
FUZZ_RUN = for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(BUILD_FUZZ)/corpus/$$t $(BUILD_FUZZ)/artifacts && \
	    echo "fuzz_$$t: $$SECONDS s" && \
	    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    ./$(BUILD_FUZZ)/tests/fuzz/fuzz_$$t -max_total_time=$$SECONDS -timeout=10 \
	        -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix=$(BUILD_FUZZ)/artifacts/ \
	        $(BUILD_FUZZ)/corpus/$$t tests/fuzz/corpus/$$t 2>$(BUILD_FUZZ)/fuzz_$$t.log \
	    || { tail -60 $(BUILD_FUZZ)/fuzz_$$t.log; exit 1; }; \
	    grep -E '^stat::number_of_executed_units|^Done' $(BUILD_FUZZ)/fuzz_$$t.log; \
	done

test-fuzz: build-fuzz
	@SECONDS=$(FUZZ_SHORT); $(FUZZ_RUN)

fuzz: build-fuzz
	@SECONDS=$(FUZZ_SECONDS); $(FUZZ_RUN)

# The plain build runs every suite; the sanitizer build runs them again; then
# TSan on threads sharing handles, and each fuzz target for FUZZ_SHORT seconds.
test: build build-san
	meson test -C $(BUILD) --print-errorlogs --num-processes 2
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    meson test -C $(BUILD_SAN) --print-errorlogs --num-processes 2 --no-suite bench
	$(MAKE) --no-print-directory test-tsan
	$(MAKE) --no-print-directory test-fuzz

test-fast: build
	meson test -C $(BUILD) --print-errorlogs --num-processes 2

bench: bench-deps build
	meson test -C $(BUILD) --benchmark --verbose

clean:
	rm -rf $(BUILD) $(BUILD_SAN) $(BUILD_TSAN) $(BUILD_FUZZ)
