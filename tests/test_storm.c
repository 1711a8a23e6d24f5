/*
 * tests/test_storm.c: kill storms and stop storms, through the public API.
 *
 * What a long torture from outside does to the cache, in a form that fits
 * `make test` and scales to minutes (STOA_STRESS_SCALE, or STOA_STORM_SECONDS
 * and STOA_STORM_ROUNDS for the length and number of kill-storm rounds).
 *
 *   kill   4 writers and 4 readers on 4,096 keys with self-describing values;
 *          every few milliseconds one of them, at random, is SIGKILLed and a
 *          new process takes its role. At the end of a round every worker is
 *          killed at once and stoa_check() runs straight away: dead clients
 *          not yet recovered are not problems. Then every killed writer's
 *          last write is settled, a sweep recovers the dead, and the segment
 *          is checked again, every key is read back exactly, every key is
 *          deleted and the heap comes back to what it was at creation.
 *          Throughout, no write may fail: nothing in this case is stopped,
 *          and a dead process must never make a live one's write fail.
 *   kill-evict  the same on a segment small enough to evict all the time:
 *          keys may vanish (evicted), nothing else is relaxed.
 *   stop   writers and readers run; one of them, at random, is SIGSTOPped at
 *          a random moment (what `docker pause` and debuggers do), and a
 *          fresh process opens the segment and makes 2,000 sets and 2,000
 *          gets of its own keys. Every one of its calls must return (at
 *          once with -EAGAIN when it needs what the stopped process holds),
 *          as must the calls of the other workers, which go on meanwhile.
 *
 * Values describe themselves (key, writer role, sequence number, length and
 * a checksum over them and every byte), so a torn, stale or foreign value is
 * seen from the value alone. Keys are single-writer: key k belongs to writer
 * k % NWRITERS, which numbers its writes 1, 2, 3 ... (continued by the
 * process that replaces a killed one). Shared bookkeeping, per key:
 *   state     the owner's last acknowledged op: seq << 1 | present
 *   started   the seq of the last op started on it
 *   dels      the seq of the last delete started on it
 *   voided    a seq found not done after its writer was killed: it may
 *             never appear afterwards
 * A reader snapshots state and voided before a read and started and dels
 * after it; a value must then have seq in [state.seq, started], never a
 * voided one, and equal to state.seq only if state says present; absence
 * needs state absent, a delete started since, or an evicting segment.
 */
#include "shm/seg.h"
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

#define MiB             (1ull << 20)
#define SEC             1000000000ull
#define MSEC            1000000ull
#define SEG_NAME        "storm"
#define NKEYS           4096u
#define NWRITERS        4u
#define NREADERS        4u
#define NROLES          (NWRITERS + NREADERS)
#define KLEN            16u
#define VMIN            32u
#define VMAX            6144u   /* largest value (kill-evict); buffers are this big */
#define VMAX_KEEP       2048u   /* largest value where nothing may be evicted (kill) */
#define VHDR_MAGIC      0x6d726f74u     /* "torm" */
#define PROBE_KEYS      512u
#define BLOCKED_NS      (2 * SEC)       /* a call this long is a blocked call */

/* ---- self-describing values ---------------------------------------------- */

struct vhdr {
        uint32_t magic, key, role, len;
        uint64_t seq, sum;
};
_Static_assert(sizeof(struct vhdr) == 32, "value header");

static void bytes_fill(uint8_t *p, size_t n, uint64_t seed)
{
        for (size_t i = 0; i < n; i += 8) {
                uint64_t v = mix64(seed + i);
                memcpy(p + i, &v, n - i < 8 ? n - i : 8);
        }
}

static bool bytes_match(const uint8_t *p, size_t n, uint64_t seed)
{
        for (size_t i = 0; i < n; i += 8) {
                uint64_t v = mix64(seed + i);
                if (memcmp(p + i, &v, n - i < 8 ? n - i : 8) != 0)
                        return false;
        }
        return true;
}

static uint64_t vhdr_sum(const struct vhdr *h)
{
        return mix64(((uint64_t)h->magic << 32 | h->key) ^
                     mix64(((uint64_t)h->role << 32 | h->len) ^ mix64(h->seq)));
}

static void val_fill(uint8_t *v, size_t len, uint32_t key, uint32_t role, uint64_t seq)
{
        struct vhdr h = { VHDR_MAGIC, key, role, (uint32_t)len, seq, 0 };

        h.sum = vhdr_sum(&h);
        memcpy(v, &h, sizeof(h));
        bytes_fill(v + sizeof(h), len - sizeof(h), h.sum);
}

/* NULL if the value is intact and is key's (*ret_seq: its seq), else what is wrong. */
static const char *val_check(const void *val, size_t len, uint32_t key, uint32_t role,
                             uint64_t *ret_seq)
{
        struct vhdr h;

        if (len < VMIN || len > VMAX)
                return "a length no writer writes";
        memcpy(&h, val, sizeof(h));
        if (h.magic != VHDR_MAGIC || h.sum != vhdr_sum(&h))
                return "header checksum (torn or foreign)";
        if (h.len != len)
                return "length differs from the one written";
        if (!bytes_match((const uint8_t *)val + sizeof(h), len - sizeof(h), h.sum))
                return "body (torn)";
        if (h.key != key || h.role != role)
                return "another key's value";
        *ret_seq = h.seq;
        return NULL;
}

static void key_name(char *out, uint32_t k)
{
        snprintf(out, KLEN + 1, "storm-%010u", k);
}

/* ---- shared bookkeeping -------------------------------------------------- */

enum { OP_NONE, OP_SET, OP_DEL };
enum { ST_SETS, ST_DELS, ST_GETS, ST_HITS, ST_MGETS, ST_VIEWS, ST_EAGAIN, ST_FAILS,
       ST_RESOLVED_DONE, ST_RESOLVED_NOT, ST_N };

struct role {
        _Atomic uint64_t seq;           /* writers: last seq started */
        _Atomic uint32_t op, key;       /* the op in flight (op last) */
        _Atomic uint64_t op_seq;
        _Atomic uint64_t call_start;    /* 0 outside a call */
        _Atomic uint64_t max_call;      /* longest call, ns */
        _Atomic uint64_t st[ST_N];
        _Atomic int stop;
        _Atomic int running;            /* opened its handle, in its loop */
        char first_fail[256];
};

struct shared {
        struct fail_box fb;
        _Atomic uint64_t state[NKEYS];
        _Atomic uint64_t started[NKEYS];
        _Atomic uint64_t dels[NKEYS];
        _Atomic uint64_t voided[NKEYS];
        struct role role[NROLES + 1];   /* the last: the probe */
        _Atomic int eagain_ok;          /* a process is stopped: -EAGAIN is allowed */
        bool evicts;
        uint64_t seed;
};
static struct shared *S;

static uint32_t owner_of(uint32_t k)
{
        return k % NWRITERS;
}

static void call_begin(struct role *r)
{
        atomic_store_explicit(&r->call_start, now_ns(), memory_order_relaxed);
}

static void call_end(struct role *r)
{
        uint64_t t = now_ns() - atomic_load_explicit(&r->call_start, memory_order_relaxed);

        atomic_store_explicit(&r->call_start, 0, memory_order_relaxed);
        if (t > atomic_load_explicit(&r->max_call, memory_order_relaxed))
                atomic_store_explicit(&r->max_call, t, memory_order_relaxed);
}

static void count(struct role *r, unsigned what)
{
        atomic_fetch_add_explicit(&r->st[what], 1, memory_order_relaxed);
}

static uint64_t total(unsigned what)
{
        uint64_t n = 0;

        for (unsigned i = 0; i <= NROLES; i++)
                n += atomic_load(&S->role[i].st[what]);
        return n;
}

/* A write failed. Only -EAGAIN with a process stopped is not a failure. */
static void write_failed(struct role *r, const char *what, uint32_t k, int err)
{
        if (err == -EAGAIN && atomic_load(&S->eagain_ok)) {
                count(r, ST_EAGAIN);
                return;
        }
        count(r, ST_FAILS);
        if (!r->first_fail[0])
                snprintf(r->first_fail, sizeof(r->first_fail), "%s of key %u: %d %s (%s)", what, k,
                         err, stoa_strerror(err), seg_errdetail());
}

/* ---- checking one read --------------------------------------------------- */

struct snap {
        uint64_t state, voided;
};

static struct snap snap_take(uint32_t k)
{
        return (struct snap){ atomic_load(&S->state[k]), atomic_load(&S->voided[k]) };
}

/* A read of k returned (r, val, vlen): is it possible? */
static void verify_read(uint32_t k, const struct snap *sn, int r, const void *val, size_t vlen,
                        const char *how)
{
        uint64_t seq, st = atomic_load(&S->started[k]), del = atomic_load(&S->dels[k]);
        uint64_t aseq = sn->state >> 1;
        bool present = sn->state & 1;

        if (r == -ENOENT) {
                CHECKF(!present || del > aseq || S->evicts,
                       "%s of key %u: absent, but write %" PRIu64 " of it was acknowledged and no "
                       "delete started since (last started %" PRIu64 "): a lost write", how, k, aseq, st);
                return;
        }
        CHECKF(r == 0, "%s of key %u: %d %s", how, k, r, stoa_strerror(r));
        const char *why = val_check(val, vlen, k, owner_of(k), &seq);
        CHECKF(!why, "%s of key %u (%zu bytes): %s", how, k, vlen, why);
        CHECKF(seq >= aseq && seq <= st, "%s of key %u: seq %" PRIu64 ", outside [acknowledged %"
               PRIu64 ", started %" PRIu64 "]: %s", how, k, seq, aseq, st,
               seq < aseq ? "a stale value" : "a value from the future");
        CHECKF(seq != aseq || present, "%s of key %u: seq %" PRIu64 ", whose delete was "
               "acknowledged", how, k, seq);
        CHECKF(!sn->voided || seq != sn->voided, "%s of key %u: seq %" PRIu64 " appeared after its "
               "killed writer's write was found not done", how, k, seq);
}

/* ---- workers ------------------------------------------------------------- */

static struct stoa *attach(void)
{
        struct stoa *c;
        int r;

        for (int tries = 0;; tries++) {
                r = stoa_open(&c, SEG_NAME, &(struct stoa_options){ .flags = STOA_OPEN_NOCREATE });
                if (r == 0)
                        return c;
                CHECKF(r == STOA_E_NOSLOT && tries < 2000, "stoa_open: %d %s", r, stoa_strerror(r));
                sleep_us(1000);
        }
}

/*
 * The op a killed writer had in flight: it happened or it did not, and the
 * key says which. From here on it is decided: a write found not done is
 * voided (it may never appear), one found done is acknowledged.
 */
static void resolve(struct stoa *c, uint32_t w, uint8_t *buf)
{
        struct role *R = &S->role[w];
        uint32_t op = atomic_load(&R->op), k = atomic_load(&R->key);
        uint64_t seq = atomic_load(&R->op_seq), st = atomic_load(&S->state[k]), got = 0;
        char key[KLEN + 1];
        size_t vlen = 0;
        int r;

        if (op == OP_NONE)
                return;
        key_name(key, k);
        r = stoa_get(c, key, KLEN, buf, VMAX, &vlen);
        CHECKF(r == 0 || r == -ENOENT, "settling key %u: %d %s", k, r, stoa_strerror(r));
        if (r == 0) {
                const char *why = val_check(buf, vlen, k, w, &got);
                CHECKF(!why, "settling key %u: %s", k, why);
        }
        if (op == OP_SET && r == 0 && got == seq) {
                atomic_store(&S->state[k], seq << 1 | 1);
                count(R, ST_RESOLVED_DONE);
        } else if (op == OP_DEL && r == -ENOENT) {
                atomic_store(&S->state[k], seq << 1);
                count(R, ST_RESOLVED_DONE);
        } else {
                /* Not done: the key holds what was acknowledged (or was evicted). */
                CHECKF((r == 0 && got == st >> 1 && (st & 1)) || (r == -ENOENT && (!(st & 1) || S->evicts)),
                       "key %u after its writer was killed during %s %" PRIu64 ": %s seq %" PRIu64
                       ", acknowledged %" PRIu64 " (%s)", k, op == OP_SET ? "set" : "del", seq,
                       r ? "absent" : "holds", got, st >> 1, st & 1 ? "present" : "deleted");
                if (op == OP_SET)
                        atomic_store(&S->voided[k], seq);
                count(R, ST_RESOLVED_NOT);
        }
        atomic_store(&R->op, OP_NONE);
}

static void writer_loop(struct stoa *c, uint32_t w, struct rng *rg, uint8_t *buf)
{
        struct role *R = &S->role[w];
        char key[KLEN + 1];

        while (!atomic_load(&R->stop)) {
                uint32_t k = (uint32_t)rnd_below(rg, NKEYS / NWRITERS) * NWRITERS + w;
                uint64_t seq = atomic_load(&R->seq) + 1;
                bool del = rnd_below(rg, 100) < 8;
                /* 4096 keys of 3 KiB on average: more than the 16 MiB of kill-evict holds. */
                size_t vmax = S->evicts ? VMAX : VMAX_KEEP;
                size_t len = VMIN + (size_t)rnd_below(rg, vmax - VMIN + 1);
                int r;

                key_name(key, k);
                if (!del)
                        val_fill(buf, len, k, w, seq);
                /* In flight first, so that a kill from here on is settled by the next one. */
                atomic_store(&R->seq, seq);
                atomic_store(&S->started[k], seq);
                if (del)
                        atomic_store(&S->dels[k], seq);
                atomic_store(&R->key, k);
                atomic_store(&R->op_seq, seq);
                atomic_store(&R->op, del ? OP_DEL : OP_SET);
                call_begin(R);
                r = del ? stoa_del(c, key, KLEN) : stoa_set(c, key, KLEN, buf, len, 0);
                call_end(R);
                if (r == 0 || (del && r == -ENOENT)) {
                        atomic_store(&S->state[k], seq << 1 | !del);
                        count(R, del ? ST_DELS : ST_SETS);
                } else {
                        /* Failed: nothing happened; the key keeps what it had. */
                        write_failed(R, del ? "del" : "set", k, r);
                        if (!del)
                                atomic_store(&S->voided[k], seq);
                }
                atomic_store(&R->op, OP_NONE);

                /* Now and then the owner reads a key of its own: exactly what it acknowledged. */
                if (rnd_below(rg, 16) == 0) {
                        uint32_t o = (uint32_t)rnd_below(rg, NKEYS / NWRITERS) * NWRITERS + w;
                        struct snap sn = snap_take(o);
                        size_t vlen = 0;
                        uint64_t got;
                        key_name(key, o);
                        call_begin(R);
                        r = stoa_get(c, key, KLEN, buf, VMAX, &vlen);
                        call_end(R);
                        verify_read(o, &sn, r, buf, vlen, "the owner's get");
                        if (r == 0) {
                                val_check(buf, vlen, o, w, &got);
                                CHECKF(got == sn.state >> 1, "the owner's get of key %u: seq %" PRIu64
                                       ", it acknowledged %" PRIu64, o, got, sn.state >> 1);
                        }
                }
        }
}

#define MGET_N   16u
#define VIEWS_N  4u

static void reader_loop(struct stoa *c, uint32_t role, struct rng *rg, uint8_t *buf)
{
        struct role *R = &S->role[role];
        struct stoa_view views[VIEWS_N];
        uint32_t vkey[VIEWS_N];
        uint64_t vseq[VIEWS_N];
        char key[KLEN + 1], mkeys[MGET_N][KLEN + 1];
        static uint8_t mbuf[MGET_N][VMAX];

        memset(views, 0, sizeof(views));
        while (!atomic_load(&R->stop)) {
                unsigned what = (unsigned)rnd_below(rg, 10);
                if (what < 6) {
                        uint32_t k = (uint32_t)rnd_below(rg, NKEYS);
                        struct snap sn = snap_take(k);
                        size_t vlen = 0;
                        key_name(key, k);
                        call_begin(R);
                        int r = stoa_get(c, key, KLEN, buf, VMAX, &vlen);
                        call_end(R);
                        verify_read(k, &sn, r, buf, vlen, "get");
                        count(R, ST_GETS);
                        if (r == 0)
                                count(R, ST_HITS);
                } else if (what < 9) {
                        struct stoa_getreq q[MGET_N];
                        struct snap sn[MGET_N];
                        uint32_t ks[MGET_N];
                        for (unsigned i = 0; i < MGET_N; i++) {
                                ks[i] = (uint32_t)rnd_below(rg, NKEYS);
                                key_name(mkeys[i], ks[i]);
                                sn[i] = snap_take(ks[i]);
                                q[i] = (struct stoa_getreq){ .key = mkeys[i], .klen = KLEN,
                                                             .buf = mbuf[i], .cap = VMAX };
                        }
                        call_begin(R);
                        int n = stoa_mget(c, q, MGET_N);
                        call_end(R);
                        CHECKF(n >= 0, "mget: %d %s", n, stoa_strerror(n));
                        for (unsigned i = 0; i < MGET_N; i++)
                                verify_read(ks[i], &sn[i], q[i].err, mbuf[i], q[i].vlen, "mget");
                        count(R, ST_MGETS);
                } else {
                        /* Views: take one; the one it replaces is verified unchanged, released. */
                        unsigned slot = (unsigned)rnd_below(rg, VIEWS_N);
                        if (views[slot].val) {
                                uint64_t seq;
                                const char *why = val_check(views[slot].val, views[slot].vlen, vkey[slot],
                                                            owner_of(vkey[slot]), &seq);
                                CHECKF(!why && seq == vseq[slot], "a view of key %u changed while "
                                       "held: %s", vkey[slot], why ? why : "another seq");
                                stoa_view_release(c, &views[slot]);
                        }
                        uint32_t k = (uint32_t)rnd_below(rg, NKEYS);
                        struct snap sn = snap_take(k);
                        key_name(key, k);
                        call_begin(R);
                        int r = stoa_view_get(c, key, KLEN, &views[slot]);
                        call_end(R);
                        verify_read(k, &sn, r, views[slot].val, views[slot].vlen, "view");
                        if (r == 0) {
                                vkey[slot] = k;
                                val_check(views[slot].val, views[slot].vlen, k, owner_of(k), &vseq[slot]);
                        } else {
                                memset(&views[slot], 0, sizeof(views[slot]));
                        }
                        count(R, ST_VIEWS);
                }
        }
        for (unsigned i = 0; i < VIEWS_N; i++)
                stoa_view_release(c, &views[i]);
}

static void worker_main(uint32_t role, uint64_t seed)
{
        uint8_t *buf = malloc(VMAX);
        struct rng rg = { mix64(seed) };
        struct stoa *c;

        CHECK(buf);
        snprintf(who, sizeof(who), "%s %u", role < NWRITERS ? "writer" : "reader", role);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        c = attach();
        if (role < NWRITERS)
                resolve(c, role, buf);
        atomic_store(&S->role[role].running, 1);
        if (role < NWRITERS)
                writer_loop(c, role, &rg, buf);
        else
                reader_loop(c, role, &rg, buf);
        stoa_close(c);
        free(buf);
        _exit(0);
}

/* ---- the case process ---------------------------------------------------- */

static pid_t pids[NROLES];
static uint64_t spawned;

static pid_t spawn_role(uint32_t role)
{
        uint64_t seed = mix64(S->seed ^ (++spawned << 8) ^ role);

        atomic_store(&S->role[role].stop, 0);
        atomic_store(&S->role[role].running, 0);
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0)
                worker_main(role, seed);
        return pid;
}

static int wait_pid(pid_t pid)
{
        int st;

        while (waitpid(pid, &st, 0) < 0)
                CHECK(errno == EINTR);
        return st;
}

/* Wait up to ms for pid to end; false if it has not. */
static bool wait_for(pid_t pid, unsigned ms, int *st)
{
        uint64_t end = now_ns() + ms * MSEC;

        for (;;) {
                pid_t r = waitpid(pid, st, WNOHANG);
                if (r == pid)
                        return true;
                CHECK(r == 0 || errno == EINTR);
                if (now_ns() > end)
                        return false;
                sleep_us(1000);
        }
}

/* Where a blocked process is (printed before a failure; gdb may be absent). */
static void dump_stack(pid_t pid)
{
        char cmd[160];

        snprintf(cmd, sizeof(cmd), "gdb -p %d -batch -ex 'thread apply all bt' 2>/dev/null | "
                 "grep -E '^#' >&2", (int)pid);
        if (system(cmd) != 0)
                fprintf(stderr, "    (no stack of pid %d: gdb missing or failed)\n", (int)pid);
}

/* No call of a running (not stopped) role has lasted BLOCKED_NS. */
static void watch(const bool *stopped)
{
        uint64_t t = now_ns();

        check_box();
        for (uint32_t i = 0; i < NROLES; i++) {
                uint64_t s = atomic_load(&S->role[i].call_start);
                if (stopped && stopped[i])
                        continue;
                if (s && t > s && t - s >= BLOCKED_NS) {
                        dump_stack(pids[i]);
                        fail_at(__FILE__, __LINE__, "%s %u has been inside one call for %.0f ms: it "
                                "is blocked", i < NWRITERS ? "writer" : "reader", i, (double)(t - s) / 1e6);
                }
        }
}

static struct stoa *H;
static uint64_t baseline_used;

struct check_msgs {
        unsigned n;
        char first[400];
};

static void check_report(const char *msg, void *arg)
{
        struct check_msgs *m = arg;

        if (++m->n <= 20)
                fprintf(stderr, "    stoa_check: %s\n", msg);
        if (m->n == 1)
                snprintf(m->first, sizeof(m->first), "%s", msg);
}

static int count_dead(const struct stoa_client *cl, void *arg)
{
        *(unsigned *)arg += !cl->alive;
        return 0;
}

static unsigned dead_clients(void)
{
        unsigned n = 0;

        CHECK_OK(stoa_clients(H, count_dead, &n));
        return n;
}

static void case_open(uint64_t size, bool evicts)
{
        const char *seed = getenv("STOA_SEED");
        struct stoa_info in;

        S = mmap(NULL, sizeof(*S), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        CHECK(S != MAP_FAILED);
        fail_box = &S->fb;
        S->evicts = evicts;
        S->seed = seed ? strtoull(seed, NULL, 0) : mix64(now_ns() ^ (uint64_t)getpid());
        CHECK_OK(stoa_open(&H, SEG_NAME, &(struct stoa_options){ .size = size,
                                                                  .flags = STOA_OPEN_NOHUGE,
                                                                  .nslots = 64 }));
        CHECK_OK(stoa_info(H, &in));
        baseline_used = in.used_bytes;
        fprintf(stderr, "  seed %#" PRIx64 " (STOA_SEED), segment %" PRIu64 " MiB, heap %.1f MiB\n",
                S->seed, in.size >> 20, (double)in.heap_bytes / MiB);
}

/*
 * Everything killed: check straight away (dead clients not yet recovered
 * are not problems), settle the killed writers' last writes, sweep, check
 * again, read every key back exactly, delete every key, and see the heap
 * come back to what it was at creation.
 */
static void settle_and_check(const char *when)
{
        struct check_msgs m = { 0, "" };
        unsigned dead = dead_clients();
        uint8_t *buf = malloc(VMAX);
        char key[KLEN + 1];
        struct stoa *c;
        struct stoa_info in;
        uint64_t present = 0, bytes = 0;
        int r;

        CHECK(buf);
        r = stoa_check(H, check_report, &m);
        CHECKF(r == 0, "%s: stoa_check straight after the kills (%u dead clients not yet recovered) "
               "found %d problem(s); the first: %s", when, dead, r, m.first);

        /* Settle in a fresh process, as a restarted writer would. */
        pid_t p = fork();
        CHECK(p >= 0);
        if (p == 0) {
                snprintf(who, sizeof(who), "settler");
                alarm(30);
                c = attach();
                for (uint32_t w = 0; w < NWRITERS; w++)
                        resolve(c, w, buf);
                stoa_close(c);
                _exit(0);
        }
        int st = wait_pid(p);
        check_box();
        CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: the settler: status %#x", when, st);

        r = stoa_sweep(H);
        CHECKF(r >= 0, "stoa_sweep: %d %s", r, stoa_strerror(r));
        CHECKF(dead_clients() == 0, "%s: dead clients left after a sweep", when);
        m = (struct check_msgs){ 0, "" };
        r = stoa_check(H, check_report, &m);
        CHECKF(r == 0, "%s: stoa_check after a sweep found %d problem(s); the first: %s", when, r,
               m.first);

        /* Every key holds exactly what its writer acknowledged. */
        for (uint32_t k = 0; k < NKEYS; k++) {
                struct snap sn = snap_take(k);
                size_t vlen = 0;
                uint64_t seq = 0;
                key_name(key, k);
                r = stoa_get(H, key, KLEN, buf, VMAX, &vlen);
                verify_read(k, &sn, r, buf, vlen, "the final get");
                if (r == 0) {
                        val_check(buf, vlen, k, owner_of(k), &seq);
                        CHECKF(seq == sn.state >> 1, "key %u holds seq %" PRIu64 ", its writer "
                               "acknowledged %" PRIu64, k, seq, sn.state >> 1);
                        present++;
                        bytes += KLEN + vlen;
                } else {
                        CHECKF(!(sn.state & 1) || S->evicts, "key %u is gone: acknowledged seq %"
                               PRIu64 " lost", k, sn.state >> 1);
                }
        }
        CHECK_OK(stoa_info(H, &in));
        CHECKF(in.items == present && in.item_bytes == bytes, "%s: info says %" PRIu64 " items of %"
               PRIu64 " bytes; the keys read back are %" PRIu64 " of %" PRIu64, when, in.items,
               in.item_bytes, present, bytes);

        /* Every key deleted: all the memory comes back, whoever died holding what. */
        for (uint32_t k = 0; k < NKEYS; k++) {
                key_name(key, k);
                r = stoa_del(H, key, KLEN);
                CHECKF(r == 0 || r == -ENOENT, "del of key %u: %d %s", k, r, stoa_strerror(r));
                atomic_store(&S->state[k], 0);
                atomic_store(&S->voided[k], 0);
        }
        for (int i = 0; i < 50; i++) {
                CHECK(stoa_sweep(H) >= 0);
                CHECK_OK(stoa_info(H, &in));
                if (in.used_bytes == baseline_used)
                        break;
                sleep_us(10000);
        }
        m = (struct check_msgs){ 0, "" };
        r = stoa_check(H, check_report, &m);
        CHECKF(r == 0, "%s: stoa_check with every key deleted found %d problem(s); the first: %s",
               when, r, m.first);
        CHECKF(in.items == 0 && in.used_bytes == baseline_used, "%s: every key deleted and swept: %"
               PRIu64 " items, %" PRIu64 " bytes of heap in use, %" PRIu64 " at creation", when,
               in.items, in.used_bytes, baseline_used);
        fprintf(stderr, "    %s: %u dead clients at the check; %" PRIu64 " keys present (%" PRIu64
                " bytes); heap back to %" PRIu64 " bytes after deleting them\n", when, dead, present,
                bytes, in.used_bytes);
        free(buf);
}

static void fail_summary(void)
{
        for (uint32_t i = 0; i <= NROLES; i++)
                if (S->role[i].first_fail[0])
                        fprintf(stderr, "    role %u, first failed write: %s\n", i, S->role[i].first_fail);
}

static void run_kill_storm(uint64_t size, bool evicts, const char *name)
{
        unsigned rounds = env_unsigned("STOA_STORM_ROUNDS", 2);
        unsigned secs = env_unsigned("STOA_STORM_SECONDS", 4 * stress_scale());
        uint64_t kills = 0, t0 = now_ns();
        struct rng rg;
        char when[64];

        case_open(size, evicts);
        rg.s = mix64(S->seed ^ 1);
        for (unsigned round = 0; round < rounds; round++) {
                uint64_t end = now_ns() + secs * SEC, rk = 0;
                for (uint32_t i = 0; i < NROLES; i++)
                        pids[i] = spawn_role(i);
                while (now_ns() < end) {
                        sleep_us(500 + rnd_below(&rg, 4500));
                        watch(NULL);
                        uint32_t v = (uint32_t)rnd_below(&rg, NROLES);
                        CHECK(kill(pids[v], SIGKILL) == 0);
                        int st = wait_pid(pids[v]);
                        check_box();
                        CHECKF(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "round %u: role %u ended "
                               "with status %#x before it was killed", round, v, st);
                        pids[v] = spawn_role(v);
                        rk++;
                }
                /* Everyone at once, at a random moment of whatever they were doing. */
                for (uint32_t i = 0; i < NROLES; i++)
                        kill(pids[i], SIGKILL);
                for (uint32_t i = 0; i < NROLES; i++)
                        wait_pid(pids[i]);
                check_box();
                kills += rk + NROLES;
                uint64_t fails = total(ST_FAILS);
                fprintf(stderr, "  %s round %u: %u s, %" PRIu64 " kills; %" PRIu64 " sets, %" PRIu64
                        " dels, %" PRIu64 " gets (%" PRIu64 " hits), %" PRIu64 " mgets, %" PRIu64
                        " views; killed writes found done %" PRIu64 ", not done %" PRIu64
                        "; failed writes %" PRIu64 "\n", name, round, secs, rk + NROLES,
                        total(ST_SETS), total(ST_DELS), total(ST_GETS), total(ST_HITS),
                        total(ST_MGETS), total(ST_VIEWS), total(ST_RESOLVED_DONE),
                        total(ST_RESOLVED_NOT), fails);
                if (fails)
                        fail_summary();
                CHECKF(fails == 0, "%s round %u: %" PRIu64 " writes failed although no process was "
                       "stopped (a dead process must never fail a write)", name, round, fails);
                snprintf(when, sizeof(when), "%s round %u", name, round);
                settle_and_check(when);
        }
        uint64_t maxc = 0;
        for (uint32_t i = 0; i < NROLES; i++)
                if (atomic_load(&S->role[i].max_call) > maxc)
                        maxc = atomic_load(&S->role[i].max_call);
        fprintf(stderr, "  %s: %u rounds of %u s passed, %" PRIu64 " kills, slowest call %.2f ms, "
                "%.1f s in all\n", name, rounds, secs, kills, (double)maxc / 1e6,
                (double)(now_ns() - t0) / 1e9);
        stoa_close(H);
}

static void case_kill(void)
{
        run_kill_storm(64 * MiB, false, "kill");
}

static void case_kill_evict(void)
{
        run_kill_storm(16 * MiB, true, "kill-evict");
}

/* ---- the stop storm ------------------------------------------------------ */

struct probe_result {
        uint64_t sets_ok, sets_eagain, gets, hits, max_ns, total_ns;
        int failed;
};

/* A fresh client: 2,000 sets and 2,000 gets of keys of its own. */
static void probe_main(struct probe_result *res, uint64_t seed)
{
        struct role *R = &S->role[NROLES];
        uint8_t buf[VMAX];
        struct rng rg = { mix64(seed) };
        char key[KLEN + 1];
        struct stoa *c;
        uint64_t t0 = now_ns();

        snprintf(who, sizeof(who), "probe");
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        call_begin(R);
        c = attach();
        call_end(R);
        for (unsigned i = 0; i < 2000; i++) {
                uint32_t k = (uint32_t)rnd_below(&rg, PROBE_KEYS);
                size_t len = VMIN + (size_t)rnd_below(&rg, 1024);
                snprintf(key, sizeof(key), "probe-%010u", k);
                val_fill(buf, len, k, 99, i + 1);
                uint64_t t = now_ns();
                call_begin(R);
                int r = stoa_set(c, key, KLEN, buf, len, 0);
                call_end(R);
                t = now_ns() - t;
                res->max_ns = t > res->max_ns ? t : res->max_ns;
                if (r == 0)
                        res->sets_ok++;
                else if (r == -EAGAIN)
                        res->sets_eagain++;
                else
                        fail_at(__FILE__, __LINE__, "probe set: %d %s", r, stoa_strerror(r));
                size_t vlen = 0;
                t = now_ns();
                call_begin(R);
                r = stoa_get(c, key, KLEN, buf, VMAX, &vlen);
                call_end(R);
                t = now_ns() - t;
                res->max_ns = t > res->max_ns ? t : res->max_ns;
                res->gets++;
                CHECKF(r == 0 || r == -ENOENT, "probe get: %d %s", r, stoa_strerror(r));
                if (r == 0) {
                        uint64_t seq;
                        const char *why = val_check(buf, vlen, k, 99, &seq);
                        CHECKF(!why, "probe get of its key %u: %s", k, why);
                        res->hits++;
                }
        }
        call_begin(R);
        stoa_close(c);
        call_end(R);
        res->total_ns = now_ns() - t0;
        _exit(0);
}

static void case_stop(void)
{
        unsigned trials = env_unsigned("STOA_STOP_TRIALS", 20 * stress_scale());
        struct probe_result *res;
        struct rng rg;
        bool stopped[NROLES];
        uint64_t worst = 0, eagain_trials = 0, t0 = now_ns();
        unsigned by_role[2] = { 0, 0 };

        case_open(32 * MiB, true);
        res = mmap(NULL, sizeof(*res), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        CHECK(res != MAP_FAILED);
        rg.s = mix64(S->seed ^ 2);
        atomic_store(&S->eagain_ok, 1);
        for (uint32_t i = 0; i < NROLES; i++)
                pids[i] = spawn_role(i);
        for (unsigned t = 0; t < trials; t++) {
                uint32_t v = (uint32_t)rnd_below(&rg, NROLES);
                int st;

                memset(stopped, 0, sizeof(stopped));
                sleep_us(20000 + rnd_below(&rg, 30000));
                while (!atomic_load(&S->role[v].running))
                        sleep_us(1000);
                sleep_us(rnd_below(&rg, 3000));
                CHECK(kill(pids[v], SIGSTOP) == 0);
                CHECK(waitpid(pids[v], &st, WUNTRACED) == pids[v] && WIFSTOPPED(st));
                stopped[v] = true;
                by_role[v >= NWRITERS]++;

                memset(res, 0, sizeof(*res));
                fflush(NULL);
                pid_t p = fork();
                CHECK(p >= 0);
                if (p == 0)
                        probe_main(res, mix64(S->seed ^ t));
                uint64_t end = now_ns() + 20 * SEC;
                bool done = false;
                while (!done && now_ns() < end) {
                        done = waitpid(p, &st, WNOHANG) == p;
                        watch(stopped);
                        uint64_t s = atomic_load(&S->role[NROLES].call_start);
                        if (s && now_ns() - s >= BLOCKED_NS) {
                                dump_stack(p);
                                fail_at(__FILE__, __LINE__, "trial %u: with %s %u stopped, the probe "
                                        "has been inside one call for %.0f ms: blocked", t,
                                        v < NWRITERS ? "writer" : "reader", v,
                                        (double)(now_ns() - s) / 1e6);
                        }
                        if (!done)
                                sleep_us(2000);
                }
                if (!done) {
                        dump_stack(p);
                        fail_at(__FILE__, __LINE__, "trial %u: with %s %u stopped, the probe did not "
                                "finish 4,000 calls in 20 s", t, v < NWRITERS ? "writer" : "reader", v);
                }
                CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "trial %u: the probe: status %#x", t, st);
                if (res->max_ns > worst)
                        worst = res->max_ns;
                eagain_trials += res->sets_eagain > 0;
                fprintf(stderr, "    trial %2u: %s %u stopped: probe %" PRIu64 " sets ok, %" PRIu64
                        " -EAGAIN, %" PRIu64 "/%" PRIu64 " gets hit, slowest call %.2f ms, all in %.0f ms\n",
                        t, v < NWRITERS ? "writer" : "reader", v, res->sets_ok, res->sets_eagain,
                        res->hits, res->gets, (double)res->max_ns / 1e6, (double)res->total_ns / 1e6);
                CHECK(kill(pids[v], SIGCONT) == 0);
        }
        /*
         * A call that began while the last victim was stopped may still end in
         * -EAGAIN after it runs again (a waiter gives a holder up to a second):
         * that is still the stop's doing. Past that, -EAGAIN is a failure.
         */
        sleep_us(1500 * 1000);
        atomic_store(&S->eagain_ok, 0);
        for (uint32_t i = 0; i < NROLES; i++)
                atomic_store(&S->role[i].stop, 1);
        for (uint32_t i = 0; i < NROLES; i++) {
                int st;
                CHECKF(wait_for(pids[i], 20000, &st), "role %u did not stop within 20 s", i);
                CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "role %u: status %#x", i, st);
        }
        check_box();
        uint64_t maxc = 0;
        for (uint32_t i = 0; i < NROLES; i++)
                if (atomic_load(&S->role[i].max_call) > maxc)
                        maxc = atomic_load(&S->role[i].max_call);
        fprintf(stderr, "  stop: %u trials (%u writers, %u readers stopped): slowest probe call %.2f ms, "
                "%" PRIu64 " trials with some -EAGAIN; slowest call of a running worker %.2f ms; "
                "%" PRIu64 " worker writes -EAGAIN, %.1f s in all\n", trials, by_role[0], by_role[1],
                (double)worst / 1e6, eagain_trials, (double)maxc / 1e6, total(ST_EAGAIN),
                (double)(now_ns() - t0) / 1e9);
        for (uint32_t i = 0; i < NROLES; i++)
                if (S->role[i].first_fail[0])
                        fprintf(stderr, "    role %u, first failed write: %s\n", i, S->role[i].first_fail);
        CHECKF(total(ST_FAILS) == 0, "%" PRIu64 " worker writes failed otherwise than -EAGAIN",
               total(ST_FAILS));
        for (uint32_t k = 0; k < PROBE_KEYS; k++) {
                char key[KLEN + 1];
                snprintf(key, sizeof(key), "probe-%010u", k);
                int r = stoa_del(H, key, KLEN);
                CHECKF(r == 0 || r == -ENOENT, "del of probe key %u: %d %s", k, r, stoa_strerror(r));
        }
        settle_and_check("after the stop storm");
        stoa_close(H);
}

/* ---- runner -------------------------------------------------------------- */

static void test_kill(void **state) { (void)state; harness_run_case("storm", 600, case_kill); }
static void test_kill_evict(void **state) { (void)state; harness_run_case("storm", 600, case_kill_evict); }
static void test_stop(void **state) { (void)state; harness_run_case("storm", 600, case_stop); }

int main(int argc, char **argv)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_kill),
                cmocka_unit_test(test_kill_evict),
                cmocka_unit_test(test_stop),
        };

        if (argc > 1)
                cmocka_set_test_filter(argv[1]);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
