/*
 * tests/test_wait.c: no call waits on a stopped client.
 *
 * Each case has a child client take one thing another client may need and
 * stop itself there with SIGSTOP (what `docker pause`, the cgroup freezer or
 * a debugger do): an arena lock, the claim on an item, a bucket's insert
 * lock, another slot's lists (as a thief), the recovery of a dead slot. The
 * case process then makes the calls that need it, and those that do not:
 * the first must return -EAGAIN at once, the others must succeed, and every
 * one must return (the bound asserted is a second, far above what a call
 * takes; the times seen are printed). Then the child is killed, and the
 * calls that needed what it held succeed: a dead holder is taken over.
 */
#include "cache/cache.h"
#include "client/client.h"
#include "shm/testpoint.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/harness.h"

#define SEG_NAME   "wait"
#define SEC        1000000000ull

/* A call that must return, and what it returned, with its time printed. */
#define TIMED(what, expr, want) do {                                                    \
        uint64_t t0_ = now_ns();                                                        \
        int r_ = (expr), w_ = (want);                                                   \
        double ms_ = (double)(now_ns() - t0_) / 1e6;                                    \
        fprintf(stderr, "    %-58s %-10s %8.3f ms\n", what, r_ ? stoa_strerror(r_) : "ok", ms_); \
        if (r_ != w_)                                                                   \
                fail_at(__FILE__, __LINE__, "%s: %d (%s), wanted %d (%s)", what, r_,    \
                        stoa_strerror(r_), w_, stoa_strerror(w_));                      \
        if (ms_ > 1000)                                                                 \
                fail_at(__FILE__, __LINE__, "%s took %.0f ms: it waited on a stopped "  \
                        "client", what, ms_);                                           \
} while (0)

static struct stoa *open_seg(void)
{
        struct stoa *c;

        CHECK_ERR(stoa_open(&c, SEG_NAME, &(struct stoa_options){ .size = 16u << 20,
                                                                   .flags = STOA_OPEN_NOHUGE,
                                                                   .nslots = 16 }), 0);
        return c;
}

static struct cache_thr *thr_of(struct stoa *c)
{
        struct cache_thr *t;
        struct core *core;

        CHECK_ERR(stoa_thread_(c, &t, &core), 0);
        return t;
}

/* Fork a child that runs fn and stops itself; return once it is stopped. */
static pid_t stopped_child(void (*fn)(void *), void *arg)
{
        int st;

        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                alarm(60);
                fn(arg);
                raise(SIGSTOP);
                for (;;)
                        pause();
        }
        CHECK(waitpid(pid, &st, WUNTRACED) == pid);
        CHECK(WIFSTOPPED(st));
        return pid;
}

static void kill_child(pid_t pid)
{
        int st;

        CHECK(kill(pid, SIGKILL) == 0);
        CHECK(waitpid(pid, &st, 0) == pid);
}

static void check_clean(struct stoa *c)
{
        CHECK(stoa_sweep(c) >= 0);
        CHECK_ERR(stoa_check(c, NULL, NULL), 0);
}

static void set_str(struct stoa *c, const char *k, const char *v)
{
        CHECK_ERR(stoa_set(c, k, strlen(k), v, strlen(v), 0), 0);
}

static int get_is(struct stoa *c, const char *k, const char *want)
{
        char buf[256];
        size_t n;
        int r = stoa_get(c, k, strlen(k), buf, sizeof(buf), &n);

        if (r == 0 && (n != strlen(want) || memcmp(buf, want, n)))
                return -EBADMSG;
        return r;
}

/* ==== an arena lock ========================================================= */

static void hold_arena(void *arg)
{
        struct cache_thr *t = thr_of(open_seg());

        (void)arg;
        CHECK_ERR(al_arena_lock(t->heap, 0), 0);
}

static void case_arena(void)
{
        struct stoa *c = open_seg();
        char big[3000];

        memset(big, 'b', sizeof(big));
        set_str(c, "small1", "a value whose class has a span");
        pid_t child = stopped_child(hold_arena, NULL);
        TIMED("get", get_is(c, "small1", "a value whose class has a span"), 0);
        TIMED("set, a class with room in our span",
              stoa_set(c, "small2", 6, "another value of the same size", 30, 0), 0);
        TIMED("set, a class we have no span of", stoa_set(c, "big", 3, big, sizeof(big), 0), -EAGAIN);
        TIMED("set again (the holder is known stopped)", stoa_set(c, "big", 3, big, sizeof(big), 0),
              -EAGAIN);
        TIMED("del", stoa_del(c, "small2", 6), 0);
        kill_child(child);
        TIMED("set, the holder now dead", stoa_set(c, "big", 3, big, sizeof(big), 0), 0);
        check_clean(c);
        stoa_close(c);
}

/* ==== the claim on an item ================================================== */

/* Claim "k" as a writer does (journal first), and stop before storing. */
static void claim_k(void *arg)
{
        struct stoa *c = open_seg();
        struct cache_thr *t = thr_of(c);
        struct cache *k = t->k;
        struct item *it;
        uint64_t zero = 0;

        (void)arg;
        _Atomic uint64_t *e = cache_lookup(t, 0, "k", 1, cache_hash(k, 0, "k", 1), &it);
        CHECK(e);
        t->cs->jnew = 0;
        t->cs->jentry = seg_off(k->s, (void *)e);
        t->cs->jold = seg_off(k->s, it);
        atomic_store(&t->cs->jop, CJ_STORE);
        CHECK(atomic_compare_exchange_strong(&it->owner, &zero, t->tag));
        cache_unprotect(t);
}

static void case_claim(void)
{
        struct stoa *c = open_seg();

        set_str(c, "k", "v1");
        set_str(c, "other", "o");
        pid_t child = stopped_child(claim_k, NULL);
        TIMED("get of the claimed key", get_is(c, "k", "v1"), 0);
        TIMED("set of the claimed key", stoa_set(c, "k", 1, "v2", 2, 0), -EAGAIN);
        TIMED("del of the claimed key", stoa_del(c, "k", 1), -EAGAIN);
        TIMED("set of another key", stoa_set(c, "other", 5, "o2", 2, 0), 0);
        kill_child(child);
        TIMED("set of the key, its claimer dead", stoa_set(c, "k", 1, "v3", 2, 0), 0);
        TIMED("get", get_is(c, "k", "v3"), 0);
        check_clean(c);
        stoa_close(c);
}

/* ==== a bucket's insert lock =================================================== */

static void lock_bucket_of_new(void *arg)
{
        struct cache_thr *t = thr_of(open_seg());
        struct cache *k = t->k;
        uint64_t b0, b1;
        bool broken;

        (void)arg;
        cache_buckets(k, cache_hash(k, 0, "new", 3), &b0, &b1);
        CHECK_ERR(olock_acquire(k->s, &k->index[b0].lock, t->slot, t->gen, &broken), 0);
}

static void case_insert_lock(void)
{
        struct stoa *c = open_seg();

        set_str(c, "present", "p");
        pid_t child = stopped_child(lock_bucket_of_new, NULL);
        TIMED("set of a new key whose bucket is locked", stoa_set(c, "new", 3, "n", 1, 0), -EAGAIN);
        TIMED("update of a present key (takes no lock)", stoa_set(c, "present", 7, "p2", 2, 0), 0);
        TIMED("get", get_is(c, "present", "p2"), 0);
        kill_child(child);
        TIMED("set of the new key, the holder dead", stoa_set(c, "new", 3, "n", 1, 0), 0);
        check_clean(c);
        stoa_close(c);
}

/* ==== a thief holding our lists ================================================ */

static uint32_t victim_slot;

static void steal_victim(void *arg)
{
        struct cache_thr *t = thr_of(open_seg());
        struct al_slot *as = slot_ext(t->k->s, victim_slot);
        uint64_t zero = 0;

        (void)arg;
        CHECK(atomic_compare_exchange_strong(&as->steal, &zero, t->tag));
}

static void case_thief(void)
{
        struct stoa *c = open_seg();
        char v[100];

        memset(v, 'v', sizeof(v));
        set_str(c, "mine", "m");
        victim_slot = thr_of(c)->slot;
        pid_t child = stopped_child(steal_victim, NULL);
        TIMED("set (needs our lists)", stoa_set(c, "x", 1, v, sizeof(v), 0), -EAGAIN);
        TIMED("get", get_is(c, "mine", "m"), 0);
        TIMED("del (frees as a remote client would)", stoa_del(c, "mine", 4), 0);
        kill_child(child);
        TIMED("set, the thief dead", stoa_set(c, "x", 1, v, sizeof(v), 0), 0);
        check_clean(c);
        stoa_close(c);
}

/* ==== a recovery in progress ================================================== */

static void stop_here(const char *point)
{
        if (!strcmp(point, "cache-decide"))
                raise(SIGSTOP);
}

static uint32_t dead_slot;

/* Recover the dead slot, and stop in the middle of it. */
static void recover_and_stop(void *arg)
{
        struct stoa *c = open_seg();
        struct core *core = stoa_core_(c);

        (void)arg;
        stoa_test_hook = stop_here;
        slot_recover_dead(core->seg, dead_slot);
        fail_at(__FILE__, __LINE__, "the recovery passed its stop");
}

static void case_recovery(void)
{
        struct stoa *c = open_seg();
        int st;

        set_str(c, "k", "v1");
        /* A writer that dies holding the claim on "k". */
        pid_t writer = stopped_child(claim_k, NULL);
        for (uint32_t i = 0; i < 16; i++)
                if (slot_hdr(stoa_core_(c)->seg, i)->pid == (uint32_t)writer)
                        dead_slot = i;
        kill_child(writer);
        /* A recoverer that stops inside its recovery (a hook stops it, not stopped_child). */
        fflush(NULL);
        pid_t rec = fork();
        CHECK(rec >= 0);
        if (rec == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                recover_and_stop(NULL);
        }
        CHECK(waitpid(rec, &st, WUNTRACED) == rec && WIFSTOPPED(st));
        TIMED("get of the key", get_is(c, "k", "v1"), 0);
        TIMED("set of the key (claimed by the dead, recovery stopped)", stoa_set(c, "k", 1, "v2", 2, 0),
              -EAGAIN);
        TIMED("set of another key", stoa_set(c, "z", 1, "z", 1, 0), 0);
        kill_child(rec);
        TIMED("set of the key, the recoverer dead too", stoa_set(c, "k", 1, "v3", 2, 0), 0);
        TIMED("get", get_is(c, "k", "v3"), 0);
        check_clean(c);
        stoa_close(c);
}

/* ==== runner ================================================================== */

#define CASE(name) static void test_##name(void **state) { (void)state; \
        harness_run_case("wait", 60, case_##name); }
CASE(arena)
CASE(claim)
CASE(insert_lock)
CASE(thief)
CASE(recovery)

int main(int argc, char **argv)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_arena),
                cmocka_unit_test(test_claim),
                cmocka_unit_test(test_insert_lock),
                cmocka_unit_test(test_thief),
                cmocka_unit_test(test_recovery),
        };

        if (argc > 1)
                cmocka_set_test_filter(argv[1]);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
