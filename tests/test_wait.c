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

/* ==== an entry being moved to its other bucket ================================== */

static _Atomic uint32_t *mv_acked;      /* keys the mover wrote and saw acknowledged */

static const char *mv_point = "move-copied";   /* where the mover stops */

static void stop_at_move(const char *point)
{
        if (!strcmp(point, mv_point))
                raise(SIGSTOP);
}

/* Write small keys until a full pair of buckets makes an insert move an entry; stop there. */
static void fill_until_move(void *arg)
{
        struct stoa *c = open_seg();
        char key[16], val[64];

        (void)arg;
        stoa_test_hook = stop_at_move;
        for (uint32_t i = 0;; i++) {
                snprintf(key, sizeof(key), "mv:%08u", i);
                memset(val, 'a' + (int)(i % 26), sizeof(val));
                CHECK_ERR(stoa_set(c, key, strlen(key), val, sizeof(val), 0), 0);
                atomic_store(mv_acked, i + 1);
        }
}

/* Entries of the index that hold item `x` (2 while it is being moved). */
static unsigned links_of(struct stoa *c, uint64_t x)
{
        struct cache *k = thr_of(c)->k;
        struct item *it = cache_item(k, x);
        uint64_t b[2];
        unsigned n = 0;

        CHECK(it);
        uint64_t h = cache_hash(k, item_nskey(it), it->data, it->klen);
        cache_buckets(k, h, &b[0], &b[1]);
        for (int i = 0; i < 2; i++)
                for (unsigned w = 0; w < CACHE_WAYS; w++)
                        n += atomic_load(&k->index[b[i]].e[w]) == ent_make(h, x);
        return n;
}

/*
 * A mover stopped at `point`, then killed: while it is stopped its key reads
 * and its writers are told -EAGAIN; once it is dead, recovery leaves the item
 * linked once and unclaimed, and every key the mover had written is there.
 */
static void run_move(const char *point, unsigned links)
{
        struct stoa *c = open_seg();
        struct cache *k = thr_of(c)->k;
        char key[STOA_KEY_MAX], val[64], buf[64];
        size_t n;

        mv_acked = mmap(NULL, sizeof(*mv_acked), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        CHECK(mv_acked != MAP_FAILED);
        mv_point = point;
        pid_t mover = stopped_child(fill_until_move, NULL);
        uint32_t acked = atomic_load(mv_acked), slot = UINT32_MAX;
        for (uint32_t i = 0; i < 16; i++)
                if (slot_hdr(stoa_core_(c)->seg, i)->pid == (uint32_t)mover)
                        slot = i;
        CHECK(slot != UINT32_MAX);
        uint64_t x = atomic_load(&cache_slot_of(k, slot)->jmove);
        CHECK(x != 0);
        CHECK_INT(links_of(c, x), ==, links);
        struct item *it = cache_item(k, x);
        size_t klen = it->klen;
        memcpy(key, it->data, klen);
        memcpy(val, it->data + klen, sizeof(val));

        /* Stopped mid-move: its key reads, its writers are told -EAGAIN, other keys write. */
        TIMED("get of the key being moved", stoa_get(c, key, klen, buf, sizeof(buf), &n), 0);
        CHECK(n == sizeof(val) && !memcmp(buf, val, n));
        TIMED("set of the key being moved", stoa_set(c, key, klen, "new", 3, 0), -EAGAIN);
        TIMED("set of another key", stoa_set(c, "other", 5, "o", 1, 0), 0);

        /* Killed mid-move: its recovery leaves the item linked once and unclaimed. */
        kill_child(mover);
        CHECK_INT(cache_recover_dead(k), ==, 1);
        CHECK_INT(atomic_load(&cache_slot_of(k, slot)->jmove), ==, 0);
        CHECK_INT(links_of(c, x), ==, 1);
        CHECK_INT(atomic_load(&it->owner), ==, 0);
        TIMED("get of the moved key", stoa_get(c, key, klen, buf, sizeof(buf), &n), 0);
        CHECK(n == sizeof(val) && !memcmp(buf, val, n));
        TIMED("set of the key, its mover dead", stoa_set(c, key, klen, "new", 3, 0), 0);
        TIMED("get", stoa_get(c, key, klen, buf, sizeof(buf), &n), 0);
        CHECK(n == 3 && !memcmp(buf, "new", 3));
        /* Every key the mover had acknowledged is there, once. */
        for (uint32_t i = 0; i < acked; i++) {
                char kk[16];
                snprintf(kk, sizeof(kk), "mv:%08u", i);
                CHECK_ERR(stoa_get(c, kk, strlen(kk), buf, sizeof(buf), &n), 0);
        }
        check_clean(c);
        munmap((void *)mv_acked, sizeof(*mv_acked));
        stoa_close(c);
}

static void case_move(void)
{
        run_move("move-copied", 2);     /* linked at both its entries */
        run_move("move-cleared", 1);    /* at its new entry only, still claimed */
}

/*
 * Displacement end to end: a reader loops over 2,000 keys written first
 * while this process fills the index to 90% of the heap with new keys, whose
 * inserts move entries (the old keys' too) along paths of one to three
 * moves. No key is lost to the index and none is unreadable. (The window of
 * a single move is too narrow to hit here; move_race below aims at it.)
 */
struct mv_share {
        _Atomic uint32_t stop;
        _Atomic uint64_t gets, misses;
};

/* One read of `key` by a mover-test reader: counted, and counted again if it missed. */
static void mv_read(struct mv_share *sh, struct stoa *c, const char *key)
{
        char buf[64];
        size_t n;
        int r = stoa_get(c, key, strlen(key), buf, sizeof(buf), &n);

        CHECK(r == 0 || r == -ENOENT);
        atomic_fetch_add(&sh->gets, 1);
        if (r == -ENOENT)
                atomic_fetch_add(&sh->misses, 1);
}

static void read_hot(void *arg)
{
        struct mv_share *sh = arg;
        struct stoa *c = open_seg();
        char key[16];

        for (uint32_t i = 0; !atomic_load(&sh->stop); i = (i + 7) % 2000) {
                snprintf(key, sizeof(key), "hot:%06u", i);
                mv_read(sh, c, key);
        }
        stoa_close(c);
}

static void case_move_readers(void)
{
        struct stoa *c = open_seg();
        struct cache *k = thr_of(c)->k;
        struct stoa_info in;
        char key[16], val[64];
        int st;

        struct mv_share *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        CHECK(sh != MAP_FAILED);
        memset(val, 'h', sizeof(val));
        for (uint32_t i = 0; i < 2000; i++) {
                snprintf(key, sizeof(key), "hot:%06u", i);
                CHECK_ERR(stoa_set(c, key, strlen(key), val, sizeof(val), 0), 0);
        }
        pid_t reader = harness_spawn(read_hot, sh);
        uint64_t moves0 = atomic_load(&k->hdr->moves);
        CHECK_ERR(stoa_info(c, &in), 0);
        for (uint32_t i = 0; in.used_bytes * 10 < in.heap_bytes * 9; i++) {
                snprintf(key, sizeof(key), "new:%06u", i);
                CHECK_ERR(stoa_set(c, key, strlen(key), val, sizeof(val), 0), 0);
                if (i % 4096 == 0)
                        CHECK_ERR(stoa_info(c, &in), 0);
        }
        atomic_store(&sh->stop, 1);
        CHECK(waitpid(reader, &st, 0) == reader && WIFEXITED(st) && WEXITSTATUS(st) == 0);
        uint64_t moves = atomic_load(&k->hdr->moves) - moves0;
        fprintf(stderr, "    %llu entries moved; the reader made %llu gets, %llu missed\n",
                (unsigned long long)moves, (unsigned long long)atomic_load(&sh->gets),
                (unsigned long long)atomic_load(&sh->misses));
        CHECK(moves > 0);
        CHECK_INT(atomic_load(&sh->misses), ==, 0);
        CHECK_ERR(stoa_info(c, &in), 0);
        CHECK_INT(in.conflicts, ==, 0);
        check_clean(c);
        munmap(sh, sizeof(*sh));
        stoa_close(c);
}

/*
 * The window a move opens: a key moved from its second bucket to its first
 * between a reader's scans of the two. One key is moved back and forth as
 * fast as this process can while another reads it in a loop: no read may
 * miss it (each lookup that misses looks again if moves ran meanwhile).
 */
static void read_one(void *arg)
{
        struct mv_share *sh = arg;
        struct stoa *c = open_seg();

        while (!atomic_load(&sh->stop))
                mv_read(sh, c, "pingpong");
        stoa_close(c);
}

static void case_move_race(void)
{
        struct stoa *c = open_seg();
        struct cache_thr *t = thr_of(c);
        struct cache *k = t->k;
        uint64_t b[2], moved = 0;
        int st;

        struct mv_share *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        CHECK(sh != MAP_FAILED);
        set_str(c, "pingpong", "v");
        uint64_t h = cache_hash(k, 0, "pingpong", 8);
        cache_buckets(k, h, &b[0], &b[1]);
        pid_t reader = harness_spawn(read_one, sh);
        while (atomic_load(&sh->gets) == 0)
                sched_yield();
        uint64_t end = now_ns() + SEC / 2;
        while (now_ns() < end) {
                for (int i = 0; i < 2; i++) {
                        for (unsigned w = 0; w < CACHE_WAYS; w++) {
                                uint64_t e = atomic_load(&k->index[b[i]].e[w]);
                                if (e && ent_tag(e) == ent_tag(h))
                                        moved += cache_move(t, b[i], w, e);
                        }
                }
        }
        atomic_store(&sh->stop, 1);
        CHECK(waitpid(reader, &st, 0) == reader && WIFEXITED(st) && WEXITSTATUS(st) == 0);
        fprintf(stderr, "    %llu moves of one key; the reader made %llu gets, %llu missed\n",
                (unsigned long long)moved, (unsigned long long)atomic_load(&sh->gets),
                (unsigned long long)atomic_load(&sh->misses));
        CHECK(moved > 1000);
        CHECK_INT(atomic_load(&sh->misses), ==, 0);
        TIMED("get", get_is(c, "pingpong", "v"), 0);
        check_clean(c);
        munmap(sh, sizeof(*sh));
        stoa_close(c);
}

/*
 * Moves under SIGKILL: two writers insert small unique keys into an index
 * already 55% full (85% at the end), so that many inserts move entries
 * (near 95% a search of 64 entries sometimes finds no path), and are killed at
 * random every millisecond or so and restarted. Afterwards every key written
 * before and every write acknowledged is there, the index holds each item
 * once, and no claim is left.
 */
#define MK_WRITERS 2
#define MK_KEYS 17000u          /* per writer: the index ends near 85% full */

struct mk_share {
        _Atomic uint32_t acked[MK_WRITERS];
};

static void mk_writer(struct mk_share *sh, unsigned w)
{
        struct stoa *c = open_seg();
        char key[16];

        for (uint32_t i = atomic_load(&sh->acked[w]); i < MK_KEYS; i++) {
                snprintf(key, sizeof(key), "w%u:%08u", w, i);
                int r = stoa_set(c, key, strlen(key), "12345678", 8, 0);
                CHECKF(r == 0, "set %s: %d (%s)", key, r, stoa_strerror(r));
                atomic_store(&sh->acked[w], i + 1);
        }
        stoa_close(c);
        _exit(0);
}

static pid_t mk_spawn(struct mk_share *sh, unsigned w)
{
        fflush(NULL);
        pid_t p = fork();
        CHECK(p >= 0);
        if (p == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                mk_writer(sh, w);
        }
        return p;
}

static void case_move_kills(void)
{
        struct stoa *c = open_seg();
        struct cache *k = thr_of(c)->k;
        struct stoa_info in;
        char key[16], buf[16];
        uint32_t pre = 0, kills = 0;
        size_t n;
        pid_t pid[MK_WRITERS];
        bool done[MK_WRITERS] = { false };
        uint32_t born[MK_WRITERS] = { 0 };      /* acked[] when each was spawned */

        struct mk_share *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        CHECK(sh != MAP_FAILED);
        memset(sh, 0, sizeof(*sh));
        CHECK_ERR(stoa_info(c, &in), 0);
        while (in.index_entries * 100 < in.index_buckets * in.index_ways * 55) {
                for (uint32_t j = 0; j < 1024; j++, pre++) {
                        snprintf(key, sizeof(key), "pre:%08u", pre);
                        CHECK_ERR(stoa_set(c, key, strlen(key), "12345678", 8, 0), 0);
                }
                CHECK_ERR(stoa_info(c, &in), 0);
        }
        uint64_t moves0 = atomic_load(&k->hdr->moves);
        for (unsigned w = 0; w < MK_WRITERS; w++)
                pid[w] = mk_spawn(sh, w);
        struct rng { uint64_t s; } rg = { 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid() };
        for (unsigned left = MK_WRITERS; left;) {
                rg.s ^= rg.s << 13; rg.s ^= rg.s >> 7; rg.s ^= rg.s << 17;
                struct timespec ts = { 0, (long)(100000 + rg.s % 400000) };
                nanosleep(&ts, NULL);
                unsigned w = (unsigned)(rg.s >> 32) % MK_WRITERS;
                int st;
                for (unsigned v = 0; v < MK_WRITERS; v++)
                        if (!done[v] && waitpid(pid[v], &st, WNOHANG) == pid[v]) {
                                CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %u: %#x", v, st);
                                done[v] = true;
                                left--;
                        }
                /*
                 * Only a writer that acknowledged a write since its start: each
                 * life then makes progress however slow the build (ASan) or the
                 * machine, and the kill still lands at a random point of a write.
                 */
                if (done[w] || atomic_load(&sh->acked[w]) == born[w])
                        continue;
                CHECK(kill(pid[w], SIGKILL) == 0);
                CHECK(waitpid(pid[w], &st, 0) == pid[w]);
                if (WIFEXITED(st)) {
                        CHECKF(WEXITSTATUS(st) == 0, "writer %u: %#x", w, st);
                        done[w] = true;
                        left--;
                        continue;
                }
                kills++;
                born[w] = atomic_load(&sh->acked[w]);
                pid[w] = mk_spawn(sh, w);
        }
        cache_recover_dead(k);
        CHECK_ERR(stoa_info(c, &in), 0);
        fprintf(stderr, "    %u kills; %llu entries moved; index %.1f%% full, %llu conflicts\n", kills,
                (unsigned long long)(atomic_load(&k->hdr->moves) - moves0),
                100.0 * (double)in.index_entries / (double)(in.index_buckets * in.index_ways),
                (unsigned long long)in.conflicts);
        CHECK(kills >= 5);
        for (uint32_t i = 0; i < pre; i++) {
                snprintf(key, sizeof(key), "pre:%08u", i);
                CHECKF(stoa_get(c, key, strlen(key), buf, sizeof(buf), &n) == 0, "%s is gone", key);
        }
        for (unsigned w = 0; w < MK_WRITERS; w++)
                for (uint32_t i = 0; i < atomic_load(&sh->acked[w]); i++) {
                        snprintf(key, sizeof(key), "w%u:%08u", w, i);
                        CHECKF(stoa_get(c, key, strlen(key), buf, sizeof(buf), &n) == 0,
                               "%s, acknowledged, is gone", key);
                }
        CHECK_INT(in.conflicts, ==, 0);
        check_clean(c);
        munmap(sh, sizeof(*sh));
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
CASE(move)
CASE(move_readers)
CASE(move_race)
CASE(move_kills)

int main(int argc, char **argv)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_arena),
                cmocka_unit_test(test_claim),
                cmocka_unit_test(test_insert_lock),
                cmocka_unit_test(test_thief),
                cmocka_unit_test(test_recovery),
                cmocka_unit_test(test_move),
                cmocka_unit_test(test_move_readers),
                cmocka_unit_test(test_move_race),
                cmocka_unit_test(test_move_kills),
        };

        if (argc > 1)
                cmocka_set_test_filter(argv[1]);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
