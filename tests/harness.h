/*
 * tests/harness.h: what the test suites share (include after cmocka.h): the
 * checks that fail a case from any of its processes or threads, time, random
 * numbers and patterns, and the fork-per-case runner.
 *
 * Each case runs in its own process, on its own $STOA_DIR, under an alarm, so
 * that one crash or hang fails that case and not the ones after it.
 */
#ifndef STOA_TESTS_HARNESS_H
#define STOA_TESTS_HARNESS_H

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "stoa/stoa.h"

#define HARNESS_SKIP    77      /* exit status of a skipped case */

/* ---- failing from any process or thread of a case ------------------------ */

/*
 * The first failure of any process of a case, in shared memory, for the case
 * process to report (check_box()). `who` names the process in messages;
 * harness_on_fail, if set, prints more (test_seg: seg_errdetail()).
 */
struct fail_box {
        _Atomic int failed;
        char msg[1024];
};
__attribute__((unused)) static struct fail_box *fail_box;
__attribute__((unused)) static char who[64] = "case";
__attribute__((unused)) static void (*harness_on_fail)(void);

__attribute__((format(printf, 3, 4), noreturn, unused))
static void fail_at(const char *file, int line, const char *fmt, ...)
{
        char msg[700];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        fprintf(stderr, "[pid %d, %s] %s:%d: %s\n", (int)getpid(), who, file, line, msg);
        if (harness_on_fail)
                harness_on_fail();
        fflush(stderr);
        if (fail_box) {
                int expect = 0;
                if (atomic_compare_exchange_strong(&fail_box->failed, &expect, 1))
                        snprintf(fail_box->msg, sizeof(fail_box->msg), "%s: %s:%d: %s", who, file,
                                 line, msg);
        }
        _exit(1);
}

#define CHECK(c) do { if (!(c)) fail_at(__FILE__, __LINE__, "check failed: %s", #c); } while (0)
#define CHECKF(c, ...) do { if (!(c)) fail_at(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#define CHECK_INT(a, op, b) do {                                                        \
        long long a_ = (long long)(a), b_ = (long long)(b);                             \
        if (!(a_ op b_))                                                                \
                fail_at(__FILE__, __LINE__, "check failed: %s %s %s (%lld vs %lld)",    \
                        #a, #op, #b, a_, b_);                                           \
} while (0)
#define CHECK_U64(a, op, b) do {                                                        \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);  \
        if (!(a_ op b_))                                                                \
                fail_at(__FILE__, __LINE__, "check failed: %s %s %s (%llu vs %llu)",    \
                        #a, #op, #b, a_, b_);                                           \
} while (0)
#define CHECK_EQ(a, b) CHECK_INT(a, ==, b)
/* expr returns 0 or more (success), or a negative error code. */
#define CHECK_OK(expr) do {                                                             \
        int r_ = (expr);                                                                \
        if (r_ < 0)                                                                     \
                fail_at(__FILE__, __LINE__, "%s: %d %s", #expr, r_, stoa_strerror(r_)); \
} while (0)
/* expr returns exactly `want`. */
#define CHECK_ERR(expr, want) do {                                                      \
        long long r_ = (long long)(expr), w_ = (long long)(want);                       \
        if (r_ != w_)                                                                   \
                fail_at(__FILE__, __LINE__, "%s returned %lld (%s), wanted %s = %lld (%s)", \
                        #expr, r_, stoa_strerror((int)r_), #want, w_,                   \
                        stoa_strerror((int)w_));                                        \
} while (0)
/* A system call: -1 and errno on failure. */
#define CHECK_SYS(expr) do {                                                            \
        if ((expr) < 0) fail_at(__FILE__, __LINE__, "%s: %s", #expr, strerror(errno));  \
} while (0)
#define CHECK_HAS(str, sub) do {                                                        \
        const char *s_ = (str);                                                         \
        if (!s_ || !strstr(s_, (sub)))                                                  \
                fail_at(__FILE__, __LINE__, "'%s' does not contain '%s'",               \
                        s_ ? s_ : "(null)", sub);                                       \
} while (0)

/* In the case process: fail if any of its helpers did. */
__attribute__((unused)) static void check_box(void)
{
        if (fail_box && atomic_load(&fail_box->failed))
                fail_at(__FILE__, __LINE__, "a worker failed: %s", fail_box->msg);
}

/* Skip the case (exit status HARNESS_SKIP), saying why. */
__attribute__((noreturn, format(printf, 1, 2), unused))
static void case_skip(const char *fmt, ...)
{
        va_list ap;

        printf("    skipped: ");
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
        fflush(stdout);
        _exit(HARNESS_SKIP);
}

/* ---- time, memory, environment ------------------------------------------- */

static inline uint64_t now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline double ms_since(uint64_t t)
{
        return (double)(now_ns() - t) / 1e6;
}

static inline void sleep_us(uint64_t us)
{
        struct timespec ts = { (time_t)(us / 1000000u), (long)(us % 1000000u) * 1000 };

        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
                ;
}

static inline void sleep_ms(unsigned ms)
{
        sleep_us((uint64_t)ms * 1000u);
}

/* Memory shared with the case's forked helpers. */
static inline void *shared_map(size_t len)
{
        void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

        CHECK(p != MAP_FAILED);
        return p;
}

static inline void *xmalloc(size_t n)
{
        void *p = malloc(n ? n : 1);

        CHECK(p != NULL);
        return p;
}

static inline void *xcalloc(size_t n)
{
        void *p = calloc(1, n ? n : 1);

        CHECK(p != NULL);
        return p;
}

static inline unsigned env_unsigned(const char *name, unsigned def)
{
        const char *s = getenv(name);

        return s && *s ? (unsigned)strtoul(s, NULL, 10) : def;
}

/* ---- random numbers and patterns ----------------------------------------- */

/* splitmix64's finaliser: a good 64-bit mix. */
static inline uint64_t mix64(uint64_t x)
{
        x += 0x9e3779b97f4a7c15ull;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
        return x ^ (x >> 31);
}

struct rng {
        uint64_t s;
};

static inline uint64_t rnd(struct rng *r)
{
        r->s += 0x9e3779b97f4a7c15ull;
        return mix64(r->s);
}

static inline uint64_t rnd_below(struct rng *r, uint64_t n)
{
        return n ? rnd(r) % n : 0;
}

/* Bytes derived from seed; is_pattern() checks them. */
static inline void pattern(void *buf, size_t len, uint64_t seed)
{
        uint8_t *p = buf;

        for (size_t i = 0; i < len; i += 8) {
                uint64_t v = mix64(seed * 0x100000001b3ull + i);
                memcpy(p + i, &v, len - i < 8 ? len - i : 8);
        }
}

static inline bool is_pattern(const void *buf, size_t len, uint64_t seed)
{
        const uint8_t *p = buf;

        for (size_t i = 0; i < len; i += 8) {
                uint64_t v = mix64(seed * 0x100000001b3ull + i);
                if (memcmp(p + i, &v, len - i < 8 ? len - i : 8) != 0)
                        return false;
        }
        return true;
}

/* STOA_STRESS_SCALE: multiplies iteration counts and timeouts (1-1000). */
static inline unsigned stress_scale(void)
{
        const char *s = getenv("STOA_STRESS_SCALE");
        long v = s ? strtol(s, NULL, 10) : 1;

        return v < 1 ? 1u : v > 1000 ? 1000u : (unsigned)v;
}

static inline void harness_remove_dir(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *e;

        if (d) {
                while ((e = readdir(d))) {
                        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                                unlinkat(dirfd(d), e->d_name, 0);
                }
                closedir(d);
        }
        rmdir(dir);
}

/*
 * Run one case in its own process, on its own $STOA_DIR (stoa-test-TAG-*),
 * with an alarm of timeout_s x STOA_STRESS_SCALE. Exit status 77: skipped.
 */
static inline void harness_run_case(const char *tag, unsigned timeout_s, void (*fn)(void))
{
        char dir[96];
        int st;

        snprintf(dir, sizeof(dir), "/dev/shm/stoa-test-%s-XXXXXX", tag);
        if (!mkdtemp(dir)) {
                snprintf(dir, sizeof(dir), "/tmp/stoa-test-%s-XXXXXX", tag);
                assert_non_null(mkdtemp(dir));
        }
        assert_int_equal(setenv("STOA_DIR", dir, 1), 0);
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                alarm(timeout_s * stress_scale());
                fn();
                _exit(0);
        }
        while (waitpid(pid, &st, 0) < 0)
                assert_int_equal(errno, EINTR);
        harness_remove_dir(dir);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
                skip();
        if (WIFSIGNALED(st))
                fail_msg("case process killed by signal %d%s", WTERMSIG(st),
                         WTERMSIG(st) == SIGALRM ? " (timed out: something waits for ever)" : "");
        assert_int_equal(WEXITSTATUS(st), 0);
}

/* Fork a child that runs fn and exits 0; it dies with this process (PR_SET_PDEATHSIG). */
static inline pid_t harness_spawn(void (*fn)(void *), void *arg)
{
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                fn(arg);
                _exit(0);
        }
        return pid;
}

#endif /* STOA_TESTS_HARNESS_H */
