/*
 * tests/test_cache_mp.c: the cache under many processes, through the public API.
 *
 * Every case runs in its own process (run_case) on its own segment in a
 * private $STOA_DIR, small enough (16 MiB) that memory is full and
 * eviction and reclamation run all the time, except the one crash variant
 * that is sized (64 MiB) so that nothing is ever evicted. Workers are
 * forked processes that open their own handle by name, as clients do. The bookkeeping they share
 * with the case process lives in a MAP_SHARED anonymous mapping (struct
 * mp_state). Checks inside a case process and its workers are CHECK()
 * macros that print and _exit(1) (cmocka's asserts would longjmp into a
 * forked copy of the runner); the runner asserts on the case's exit status.
 *
 * The cases:
 *   race     writers and readers race on shared and single-writer keys with
 *            every kind of read and write, then a quiescent check
 *   crash    hundreds of rounds: a random worker is SIGKILLed after 0-5 ms
 *            and replaced; periodically everything is stopped and checked
 *            (crash_evict on a full 16 MiB segment; crash_noevict on one big
 *            enough that an acknowledged write may never go missing)
 *   stopped  a reader SIGSTOPped inside a read section, then one SIGKILLed
 *            there (recovered by the writer alone, then by a sweep), then
 *            views held by an idle process, while a writer churns
 *   idle     clients that stored one value of each size and sit idle must
 *            not leave the heap unusable for a writer that comes later
 *   ns_churn one process writes and reads a namespace while another drops
 *            it (or flushes the segment) and recreates it, over and over;
 *            ns_kill the same with the dropper SIGKILLed at random points
 *            of its drops and flushes, each drop redone by the case process
 *
 * Values describe themselves: key id, writer (role) id, sequence number and
 * length, and bytes derived from a checksum of those (val_fill, val_check),
 * so any reader can tell a torn, stale, misplaced or foreign value from the
 * value alone. Each writer role numbers its writes 1, 2, 3... (continued by
 * the process that replaces a killed one) and records in ack[role][key] the
 * number of its last write to that key that returned 0, after it returned;
 * or 0 after any del of that key by this role, whatever del returned.
 *
 * What is checked, and why it is sound:
 *
 *  - Freshness: a reader loads ack[w][k] for every writer w before it reads
 *    k. A value of w's read under k must have seq >= that ack: w writes k in
 *    sequence, so once its write `a` returned, its earlier writes to k can
 *    never be seen again (a read may see another writer's value, nothing, or
 *    a later write of w, never an earlier one).
 *  - Nothing from the future: seq <= the highest seq w has started, loaded
 *    after the read.
 *  - Monotonic reads: in one process, successive reads of k that return a
 *    value of w return non-decreasing seqs of w (same argument).
 *  - Versions: one version names one value of a key; a value keeps its version.
 *  - Single-writer ("owned") keys: keys [0, nown) belong to role k % nwriters
 *    and nobody else writes them, so their owner knows exactly what each one
 *    holds: its ack, or nothing when that is 0. When the owner reads one it
 *    must read exactly that, or nothing if the segment evicts; the codes of
 *    add, replace, del and cas must agree with it (cas can never be -ESTALE).
 *  - Quiescent state (all writers stopped): an owned key holds exactly
 *    ack[owner][k], or nothing if that is 0; with an ack it may be absent only
 *    if the segment evicts (and has counted evictions), else that is a lost
 *    acknowledged write. A shared key (keys [nown, nkeys), all writers) holds
 *    nothing or the value of some writer w with seq == ack[w][k] exactly: w's
 *    last successful write to k linearised after all of w's earlier ones, and
 *    after a del by w (ack 0) none of w's values can be there, so any other
 *    seq of w is a stale value or a failed write made visible. With kills a
 *    killed writer's in-flight write to a shared key may or may not have
 *    happened, so there shared keys get freshness only (seq >= ack).
 *  - Kills: before each write a role records {op, key, seq} as in flight.
 *    The process that replaces a killed one first reads that key: it must
 *    hold the new value (the write happened: it becomes the ack), or the
 *    acked one (it did not), or nothing (a del happened, or an eviction;
 *    without eviction nothing is a lost write unless the op was a del or the
 *    ack was 0). From then on the owner's exact checks apply again: a dead
 *    process's write may not appear, or vanish, after the fact.
 *  - Counters (+1 increments by all writers): a value is a decimal integer
 *    no greater than the increments started, and, without eviction, no
 *    smaller than those acknowledged before the read started.
 *  - Memory: at each checkpoint, with everything stopped and swept, the
 *    segment's live item bytes equal what the keys read back hold, the heap
 *    in use lies between that and a generous bound of what those items need,
 *    and after every key is deleted it comes back to the figure right after
 *    the segment was created: no dead process's memory is lost. These
 *    figures and stoa_check's findings are collected and fail the case at
 *    its end, so that a leak does not hide the data checks of later rounds.
 *
 * A failure prints the segment's figures and clients (epochs, views, retired
 * blocks) and, for a key, what every role did to it (its op log).
 *
 * STOA_STRESS_SCALE (default 1) multiplies durations and rounds; STOA_SEED
 * fixes the seed (the schedule of kills stays timing dependent);
 * STOA_MP_SEGMENT_MIB changes the size of the memory-full segments, to see
 * whether a failure depends on it.
 */
#include "stoa/stoa.h"

#include <dirent.h>
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

#define KiB             1024u
#define MiB             (1ull << 20)
#define SEC             1000000000ull
#define MSEC            1000000ull
#define SEG_NAME        "cache-mp"
#define CASE_TIMEOUT_S  150u            /* per case, times STOA_STRESS_SCALE */

#define MAX_ROLES       8u              /* worker roles of a case */
#define MAX_KEYS        4000u           /* data keys: ids fit the short value form */
#define MAX_CTR         64u             /* counter keys */
#define KLEN            16u             /* every key: "key-%012u" or "ctr-%012u" */
#define MAXV            (160u * KiB)    /* longest value written */
#define MGET_MAX        32u
#define MGET_CAP        4096u           /* mget buffers: longer values come back -ENOBUFS */
#define HOLD_MAX        8u              /* views a worker holds at once */
#define RING            4096u           /* op log entries kept per role */
#define CHECKER         31u             /* writer id of the checker's own values */
#define CTR_BIT         0x80000000u     /* marks a counter's index in the op log */
#define NO_OWNER        UINT32_MAX

/* ---- self-describing values ------------------------------------------- */

/*
 * A value of 32 bytes or more starts with struct vhdr, whose sum covers its
 * fields; the rest is a byte stream derived from the sum, so every byte is
 * checked. A shorter one (8-31 bytes) is one word: a 16-bit check over key
 * (12 bits), writer (5), length - 8 (5) and seq (26), then bytes derived
 * from that word. Writers use the short form only while seq fits.
 */
#define SHORT_MAX       31u
#define SHORT_SEQ_LIM   (1ull << 26)
#define VHDR_MAGIC      0x3176616du
#define CHECK_MASK      0xffff000000000000ull

struct vhdr {
        uint32_t magic, key, writer, len;
        uint64_t seq, sum;
};
_Static_assert(sizeof(struct vhdr) == 32, "value header is 32 bytes");

struct vinfo {
        uint32_t key, writer;
        uint64_t seq;
};

static uint64_t vhdr_sum(const struct vhdr *h)
{
        return mix64(((uint64_t)h->magic << 32 | h->key) ^
                     mix64(((uint64_t)h->writer << 32 | h->len) ^ mix64(h->seq)));
}

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

static uint64_t short_word(uint32_t key, uint32_t writer, size_t len, uint64_t seq)
{
        uint64_t lo = (uint64_t)key << 36 | (uint64_t)writer << 31 | (uint64_t)(len - 8) << 26 | seq;

        return (mix64(lo) & CHECK_MASK) | lo;
}

static void val_fill(uint8_t *v, size_t len, uint32_t key, uint32_t writer, uint64_t seq)
{
        if (len <= SHORT_MAX) {
                uint64_t w = short_word(key, writer, len, seq);
                memcpy(v, &w, 8);
                bytes_fill(v + 8, len - 8, w);
                return;
        }
        struct vhdr h = { VHDR_MAGIC, key, writer, (uint32_t)len, seq, 0 };
        h.sum = vhdr_sum(&h);
        memcpy(v, &h, sizeof(h));
        bytes_fill(v + sizeof(h), len - sizeof(h), h.sum);
}

/* NULL if val is intact (*vi says whose it is), else what is wrong. */
static const char *val_check(const void *val, size_t len, struct vinfo *vi)
{
        const uint8_t *p = val;
        struct vhdr h;

        if (len < 8)
                return "shorter than any value written";
        if (len > MAXV)
                return "longer than any value written";
        if (len <= SHORT_MAX) {
                uint64_t w, lo;
                memcpy(&w, p, 8);
                lo = w & ~CHECK_MASK;
                if ((mix64(lo) & CHECK_MASK) != (w & CHECK_MASK))
                        return "short value: checksum";
                if (((lo >> 26) & 31) + 8 != len)
                        return "short value: length differs from the one written";
                if (!bytes_match(p + 8, len - 8, w))
                        return "short value: body";
                vi->key = (uint32_t)(lo >> 36) & 0xfff;
                vi->writer = (uint32_t)(lo >> 31) & 31;
                vi->seq = lo & (SHORT_SEQ_LIM - 1);
                return NULL;
        }
        memcpy(&h, p, sizeof(h));
        if (h.magic != VHDR_MAGIC)
                return "header magic";
        if (h.sum != vhdr_sum(&h))
                return "header checksum";
        if (h.len != len)
                return "length differs from the one written";
        if (!bytes_match(p + sizeof(h), len - sizeof(h), h.sum))
                return "body";
        vi->key = h.key;
        vi->writer = h.writer;
        vi->seq = h.seq;
        return NULL;
}

static uint64_t hash_bytes(const void *p, size_t n)
{
        const uint8_t *b = p;
        uint64_t h = n, v;
        size_t i = 0;

        for (; i + 8 <= n; i += 8) {
                memcpy(&v, b + i, 8);
                h = mix64(h ^ v);
        }
        for (; i < n; i++)
                h = mix64(h ^ b[i]);
        return h;
}

static void key_name(char *out, uint32_t id)
{
        snprintf(out, KLEN + 1, "key-%012" PRIu32, id);
}

static void ctr_name(char *out, uint32_t i)
{
        snprintf(out, KLEN + 1, "ctr-%012" PRIu32, i);
}

/* A counter's value: a decimal integer, nothing else. -1 if it is not one. */
static int64_t ctr_parse(const void *val, size_t len)
{
        const char *s = val;
        int64_t v = 0;

        if (len == 0 || len > 18)
                return -1;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -1;
                v = v * 10 + (s[i] - '0');
        }
        return v;
}

/* ---- the shared state of a case ------------------------------------------ */

enum op {
        OP_NONE, OP_SET, OP_DEL, OP_ADD, OP_REPLACE, OP_CAS, OP_INCR,
        OP_GET, OP_GETS, OP_MGET, OP_VIEW, OP_VREL, OP_SCAN, OP_CTR, OP_RESOLVE, OP_CHECK,
        OP_N
};
static const char *const op_name[OP_N] = {
        "none", "set", "del", "add", "replace", "cas", "incr",
        "get", "gets", "mget", "view", "release", "scan", "ctr-get", "resolve", "check",
};

static bool is_set_op(uint32_t op)
{
        return op == OP_SET || op == OP_ADD || op == OP_REPLACE || op == OP_CAS;
}

enum stat {
        ST_OPS, ST_WRITES, ST_WRITE_OK, ST_DELS, ST_INCRS, ST_READS, ST_HITS, ST_MISSES,
        ST_MGETS, ST_MGET_KEYS, ST_VIEWS, ST_VIEWS_KEPT, ST_SCANS, ST_SCAN_VISITS, ST_NOBUFS,
        ST_EAGAIN, ST_ENOMEM, ST_CAS_STALE, ST_OWN_GONE, ST_RES_APPLIED, ST_RES_NOT,
        ST_RES_ABSENT, ST_N
};
static const char *const stat_name[ST_N] = {
        "ops", "writes", "write_ok", "dels", "incrs", "reads", "hits", "misses",
        "mgets", "mget_keys", "views", "views_kept", "scans", "scan_visits", "nobufs",
        "eagain", "enomem", "cas_stale", "own_gone", "res_applied", "res_not", "res_absent",
};

/* One logged operation, for the history printed when a key fails a check. */
struct oprec {
        uint64_t t, seq;
        uint32_t op, key, gen, round, writer;
        int32_t ret;
};

enum phase { PH_NONE, PH_OPENING, PH_RESOLVING, PH_RUNNING, PH_STOPPING };

/*
 * One worker role. Written by the role's current process only (in_* and
 * ack by the process that resolves a dead one's write), read by all.
 */
struct role {
        _Atomic uint64_t seq;           /* highest sequence number started */
        _Atomic uint32_t in_op, in_key; /* the write in flight; OP_NONE: none */
        _Atomic uint64_t in_seq;
        _Atomic uint32_t phase, gen;
        _Atomic int stop;               /* stop this role only */
        _Atomic uint64_t heartbeat;     /* now_ns() at the last return of a write call */
        _Atomic uint64_t max_call;      /* slowest write call, ns */
        _Atomic uint64_t st[ST_N];
        _Atomic uint64_t nring;
        struct oprec ring[RING];
};

struct mp_state {
        struct fail_box fb;
        _Atomic int stop;                       /* stop every role */
        _Atomic uint32_t round;
        _Atomic uint64_t eagain_ok_until;       /* stopped case: -EAGAIN allowed until then */
        uint64_t t0;
        char stage[64];                         /* what the case process is doing, for messages */
        /* the checker's findings, for the case process */
        uint64_t present, present_before, live_bytes, live_bound, acked_gone;
        uint8_t present_map[MAX_KEYS + MAX_CTR];
        /* the stopped case's view holder */
        _Atomic int vh_ready, vh_go;
        _Atomic uint64_t ctr_try[MAX_CTR], ctr_ok[MAX_CTR];
        struct role role[MAX_ROLES];
        _Atomic uint64_t ack[MAX_ROLES][MAX_KEYS];
};

struct mp_cfg {
        const char *name;
        uint64_t seg_size;
        uint32_t nkeys, nown, nctr;     /* keys [0, nown) owned, the rest shared */
        uint32_t nwriters, nroles;      /* roles [0, nwriters) write, the rest only read */
        uint32_t write_pct;             /* writers: share of their ops that write */
        uint32_t mget_pct;              /* readers: share of their ops that are mgets */
        uint32_t short_pm, mid_pm, big_pm;      /* per mille: < 256 B, 4-32 KiB, > 32 KiB */
        uint32_t min_len, small_max, big_max;
        bool evict;                     /* memory is full: acked keys may be evicted */
        bool kills;                     /* writers die mid-write */
        bool churn;                     /* writers only set and del their own keys */
        bool strict_eagain;             /* -EAGAIN only while eagain_ok_until; no -ENOMEM */
        bool no_views;                  /* readers take no views (the stopped case tests them apart) */
};

static const struct mp_cfg *C;
static struct mp_state *S;
static uint64_t case_seed;

#define STAT(w, s) atomic_fetch_add_explicit(&S->role[(w)->role].st[(s)], 1, memory_order_relaxed)

static uint64_t stat_sum(enum stat s)
{
        uint64_t n = 0;

        for (uint32_t r = 0; r < C->nroles; r++)
                n += atomic_load(&S->role[r].st[s]);
        return n;
}

static uint32_t owner_of(uint32_t k)
{
        return k < C->nown ? k % C->nwriters : NO_OWNER;
}

static uint64_t ack_get(uint32_t w, uint32_t k)
{
        return atomic_load_explicit(&S->ack[w][k], memory_order_acquire);
}

static void ack_put(uint32_t w, uint32_t k, uint64_t seq)
{
        atomic_store_explicit(&S->ack[w][k], seq, memory_order_release);
}

/* Every writer's ack of k, taken before a read of k. */
struct snap {
        uint64_t ack[MAX_ROLES];
};

static void snap_take(uint32_t k, struct snap *sn)
{
        for (uint32_t w = 0; w < C->nwriters; w++)
                sn->ack[w] = k < C->nkeys ? ack_get(w, k) : 0;
}

/* Print what every role did to key k (newest last per role), for a failure. */
static void dump_key(uint32_t k)
{
        if (!S || !C)
                return;
        fprintf(stderr, "  history of %s %u (owner %d), round %u, t in ms from the case start:\n",
                k & CTR_BIT ? "counter" : "key", k & ~CTR_BIT,
                (k & CTR_BIT) || owner_of(k) == NO_OWNER ? -1 : (int)owner_of(k),
                atomic_load(&S->round));
        for (uint32_t r = 0; r < C->nroles; r++) {
                struct role *R = &S->role[r];
                uint64_t n = atomic_load(&R->nring), i0 = n > RING ? n - RING : 0, match = 0, shown = 0;

                for (uint64_t i = i0; i < n; i++)
                        match += R->ring[i % RING].key == k;
                for (uint64_t i = i0; i < n; i++) {
                        const struct oprec *e = &R->ring[i % RING];
                        if (e->key != k || e->op >= OP_N || shown++ + 30 < match)
                                continue;       /* the last 30 of each role */
                        fprintf(stderr, "    %9.3f role %u gen %u round %u: %-7s writer %2u seq %-8llu -> %d\n",
                                (double)(e->t - S->t0) / 1e6, r, e->gen, e->round, op_name[e->op],
                                e->writer, (unsigned long long)e->seq, e->ret);
                }
                if (!(k & CTR_BIT) && k < C->nkeys && r < C->nwriters)
                        fprintf(stderr, "    role %u: ack %llu; in flight %s key %u seq %llu; seq %llu\n", r,
                                (unsigned long long)ack_get(r, k), op_name[atomic_load(&R->in_op) % OP_N],
                                atomic_load(&R->in_key), (unsigned long long)atomic_load(&R->in_seq),
                                (unsigned long long)atomic_load(&R->seq));
        }
}

#define KFAIL(k, ...) do { dump_key(k); fail_at(__FILE__, __LINE__, __VA_ARGS__); } while (0)

/* ---- a worker process ---------------------------------------------------- */

struct held {
        struct stoa_view v;
        uint32_t key;
        uint64_t hash;
        struct vinfo vi;
};

struct worker {
        struct stoa *c;
        struct rng r;
        uint32_t role, gen;
        uint8_t *buf, *vbuf, *mbuf;
        struct held held[HOLD_MAX];
        unsigned nheld;
        uint64_t *seen;         /* [key * MAX_ROLES + writer]: highest seq read */
        uint64_t *ver;          /* [key]: last version read */
        uint64_t *ver_val;      /* [key]: writer << 56 | seq of that version */
};

static void oplog(const struct worker *w, uint32_t op, uint32_t k, uint32_t writer, uint64_t seq, int ret)
{
        struct role *R = &S->role[w->role];
        uint64_t i = atomic_load_explicit(&R->nring, memory_order_relaxed);

        R->ring[i % RING] = (struct oprec){ now_ns(), seq, op, k, w->gen,
                                            atomic_load_explicit(&S->round, memory_order_relaxed),
                                            writer, ret };
        atomic_store_explicit(&R->nring, i + 1, memory_order_release);
}

static uint64_t next_seq(struct worker *w)
{
        struct role *R = &S->role[w->role];
        uint64_t s = atomic_load(&R->seq) + 1;

        atomic_store(&R->seq, s);
        return s;
}

static void begin_op(struct worker *w, uint32_t op, uint32_t k, uint64_t seq)
{
        struct role *R = &S->role[w->role];

        atomic_store(&R->in_key, k);
        atomic_store(&R->in_seq, seq);
        atomic_store(&R->in_op, op);
}

static void end_op(struct worker *w)
{
        atomic_store(&S->role[w->role].in_op, OP_NONE);
}

static size_t pick_len(struct rng *r, uint64_t seq)
{
        uint32_t p = (uint32_t)rnd_below(r, 1000);
        size_t len;

        if (p < C->big_pm)
                len = 32 * KiB + 1 + rnd_below(r, C->big_max - 32 * KiB);
        else if (p < C->big_pm + C->mid_pm)
                len = C->small_max + 1 + rnd_below(r, 32 * KiB - C->small_max);
        else if (p < C->big_pm + C->mid_pm + C->short_pm)
                len = 8 + rnd_below(r, 248);
        else
                len = 256 + rnd_below(r, C->small_max - 255);
        if (len < C->min_len)
                len = C->min_len + rnd_below(r, C->small_max - C->min_len + 1);
        if (len <= SHORT_MAX && seq >= SHORT_SEQ_LIM)
                len = SHORT_MAX + 1;
        return len;
}

/*
 * Check a value read under key k against everything known (see the top of
 * the file). w is NULL for the checker, which keeps no per-process history.
 */
static struct vinfo verify_hit(struct worker *w, uint32_t k, const void *val, size_t len,
                               const struct snap *sn, uint64_t version, uint32_t op)
{
        struct vinfo vi = { 0, 0, 0 };
        const char *why = val_check(val, len, &vi);
        uint32_t o = owner_of(k);
        uint64_t started;

        if (why)
                KFAIL(k, "%s of key %u: bad value (%zu bytes): %s", op_name[op], k, len, why);
        if (vi.key != k)
                KFAIL(k, "%s of key %u: holds the value of key %u (writer %u seq %llu, %zu bytes)",
                      op_name[op], k, vi.key, vi.writer, (unsigned long long)vi.seq, len);
        if (vi.writer >= C->nwriters)
                KFAIL(k, "%s of key %u: value of unknown writer %u (seq %llu)", op_name[op], k,
                      vi.writer, (unsigned long long)vi.seq);
        if (o != NO_OWNER && vi.writer != o)
                KFAIL(k, "%s of key %u: value of writer %u, but only %u writes it", op_name[op], k,
                      vi.writer, o);
        if (vi.seq < sn->ack[vi.writer])
                KFAIL(k, "%s of key %u: stale: writer %u seq %llu, but its seq %llu to this key was "
                      "acknowledged before the read", op_name[op], k, vi.writer,
                      (unsigned long long)vi.seq, (unsigned long long)sn->ack[vi.writer]);
        started = atomic_load(&S->role[vi.writer].seq);
        if (vi.seq > started)
                KFAIL(k, "%s of key %u: writer %u seq %llu, never written (it started %llu)",
                      op_name[op], k, vi.writer, (unsigned long long)vi.seq, (unsigned long long)started);
        if (!w)
                return vi;
        if (o == w->role && vi.seq != sn->ack[o])
                KFAIL(k, "%s of key %u by its only writer: seq %llu, but its last acknowledged write "
                      "is %llu", op_name[op], k, (unsigned long long)vi.seq,
                      (unsigned long long)sn->ack[o]);
        uint64_t *last = &w->seen[(size_t)k * MAX_ROLES + vi.writer];
        if (vi.seq < *last)
                KFAIL(k, "%s of key %u: writer %u seq %llu read after its seq %llu was read: went back",
                      op_name[op], k, vi.writer, (unsigned long long)vi.seq, (unsigned long long)*last);
        *last = vi.seq;
        if (version) {
                uint64_t tag = (uint64_t)vi.writer << 56 | vi.seq;
                if (w->ver[k] == version && w->ver_val[k] != tag)
                        KFAIL(k, "%s of key %u: version %llu names two values (writer %u seq %llu, "
                              "before writer %u seq %llu)", op_name[op], k, (unsigned long long)version,
                              vi.writer, (unsigned long long)vi.seq, (unsigned)(w->ver_val[k] >> 56),
                              (unsigned long long)(w->ver_val[k] & ((1ull << 56) - 1)));
                if (w->ver_val[k] == tag && w->ver[k] && w->ver[k] != version)
                        KFAIL(k, "%s of key %u: writer %u seq %llu had version %llu, now %llu",
                              op_name[op], k, vi.writer, (unsigned long long)vi.seq,
                              (unsigned long long)w->ver[k], (unsigned long long)version);
                w->ver[k] = version;
                w->ver_val[k] = tag;
        }
        oplog(w, op, k, vi.writer, vi.seq, 0);
        return vi;
}

static void verify_miss(struct worker *w, uint32_t k, const struct snap *sn, uint32_t op)
{
        if (k >= C->nkeys)
                return;
        if (w && owner_of(k) == w->role && sn->ack[w->role] != 0) {
                if (!C->evict)
                        KFAIL(k, "%s of key %u by its only writer: absent, but seq %llu was acknowledged "
                              "and nothing is ever evicted here", op_name[op], k,
                              (unsigned long long)sn->ack[w->role]);
                STAT(w, ST_OWN_GONE);
        }
        if (w)
                oplog(w, op, k, 0, 0, -ENOENT);
}

static int dump_client(const struct stoa_client *cl, void *arg)
{
        (void)arg;
        fprintf(stderr, "    slot %3u pid %6u %-5s reading %#llx views %u retired %u (%.15s)\n", cl->slot,
                cl->pid, cl->alive ? "alive" : "DEAD", (unsigned long long)cl->reading,
                cl->views, cl->retired, cl->comm);
        return 0;
}

/* The segment's figures and clients, printed before a failure that may depend on them. */
static void dump_segment(struct stoa *c, const char *why)
{
        struct stoa_info in;

        if (stoa_info(c, &in) == 0)
                fprintf(stderr, "  segment when %s: items %llu (%llu bytes), heap %llu used %llu free %llu, "
                        "evictions %llu, clients %u dead %u\n", why, (unsigned long long)in.items,
                        (unsigned long long)in.item_bytes, (unsigned long long)in.heap_bytes,
                        (unsigned long long)in.used_bytes, (unsigned long long)in.free_bytes,
                        (unsigned long long)in.evictions, in.clients, in.dead_clients);
        stoa_clients(c, dump_client, NULL);
}

/*
 * One write call, with the policy on -EAGAIN and -ENOMEM: in the stopped
 * case only -EAGAIN, and only while a reader is stopped (then it is
 * returned and the op counts as not done); elsewhere both are retried, and
 * fail the test if they go on for a second.
 */
static int write_call(struct worker *w, uint32_t op, const char *key, const void *val, size_t len,
                      uint64_t version, uint64_t *ret_ver, int64_t *ret_ctr)
{
        struct role *R = &S->role[w->role];
        uint64_t first_fail = 0;

        for (;;) {
                uint64_t t1 = now_ns(), t2, until;
                int r;

                switch (op) {
                case OP_SET: r = stoa_set(w->c, key, KLEN, val, len, 0); break;
                case OP_ADD: r = stoa_add(w->c, key, KLEN, val, len, 0); break;
                case OP_REPLACE: r = stoa_replace(w->c, key, KLEN, val, len, 0); break;
                case OP_CAS: r = stoa_cas(w->c, key, KLEN, val, len, 0, version, ret_ver); break;
                case OP_DEL: r = stoa_del(w->c, key, KLEN); break;
                default: r = stoa_incr(w->c, key, KLEN, 1, 0, ret_ctr); break;
                }
                t2 = now_ns();
                atomic_store(&R->heartbeat, t2);
                if (t2 - t1 > atomic_load(&R->max_call))
                        atomic_store(&R->max_call, t2 - t1);
                CHECKF(t2 - t1 < 3 * SEC, "%s of %.16s took %.1f s: a writer waits for something",
                       op_name[op], key, (double)(t2 - t1) / 1e9);
                if (r != -EAGAIN && r != -ENOMEM)
                        return r;
                STAT(w, r == -EAGAIN ? ST_EAGAIN : ST_ENOMEM);
                if (C->strict_eagain) {
                        /*
                         * Only while a reader is stopped. -ENOMEM then is the wrong code
                         * (the header says -EAGAIN): counted, and the case fails at its end.
                         */
                        until = atomic_load(&S->eagain_ok_until);
                        if (t2 > until)
                                dump_segment(w->c, r == -EAGAIN ? "-EAGAIN came" : "-ENOMEM came");
                        CHECKF(t2 <= until, "%s of %.16s (%zu bytes): %s, and no reader is stopped (stage: %s)",
                               op_name[op], key, len, r == -EAGAIN ? "-EAGAIN" : "-ENOMEM", S->stage);
                        sleep_us(100);
                        return r;
                }
                if (!first_fail)
                        first_fail = t2;
                if (t2 - first_fail >= SEC)
                        dump_segment(w->c, "a write kept failing");
                CHECKF(t2 - first_fail < SEC, "%s of %.16s (%zu bytes) fails with %s for over a second: "
                       "%s", op_name[op], key, len, r == -EAGAIN ? "-EAGAIN" : "-ENOMEM",
                       stoa_strerror(r));
                sleep_us(200);
        }
}

/* ---- reads ---- */

static bool all_bytes(const uint8_t *p, uint8_t b, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                if (p[i] != b)
                        return false;
        }
        return true;
}

static void op_get(struct worker *w, uint32_t k, bool gets)
{
        uint32_t op = gets ? OP_GETS : OP_GET;
        char key[KLEN + 1];
        struct snap sn;
        size_t cap = MAXV, vlen = 0;
        uint64_t ver = 0;
        int r;

        key_name(key, k);
        if (rnd_below(&w->r, 4) == 0)
                cap = 8 + rnd_below(&w->r, MGET_CAP);
        memset(w->buf, 0xa5, 64);
        snap_take(k, &sn);
        r = gets ? stoa_gets(w->c, key, KLEN, w->buf, cap, &vlen, &ver)
                 : stoa_get(w->c, key, KLEN, w->buf, cap, &vlen);
        STAT(w, ST_READS);
        if (r == -ENOBUFS) {
                CHECKF(vlen > cap, "%s of key %u: -ENOBUFS with a %zu-byte buffer for %zu bytes",
                       op_name[op], k, cap, vlen);
                CHECKF(all_bytes(w->buf, 0xa5, cap < 64 ? cap : 64),
                       "%s of key %u: -ENOBUFS, but the buffer was written", op_name[op], k);
                STAT(w, ST_NOBUFS);
                vlen = 0;
                r = gets ? stoa_gets(w->c, key, KLEN, w->buf, MAXV, &vlen, &ver)
                         : stoa_get(w->c, key, KLEN, w->buf, MAXV, &vlen);
        }
        if (r == 0) {
                CHECKF(!gets || ver != 0, "gets of key %u: version 0", k);
                verify_hit(w, k, w->buf, vlen, &sn, ver, op);
                STAT(w, ST_HITS);
        } else {
                CHECKF(r == -ENOENT, "%s of key %u: %d %s", op_name[op], k, r, stoa_strerror(r));
                verify_miss(w, k, &sn, op);
                STAT(w, ST_MISSES);
        }
}

/* Up to MGET_MAX distinct keys, some never written, one now and then with a zero length. */
static void op_mget(struct worker *w)
{
        struct stoa_getreq req[MGET_MAX];
        char keys[MGET_MAX][KLEN + 1];
        uint32_t ids[MGET_MAX], n = 1 + (uint32_t)rnd_below(&w->r, MGET_MAX);
        struct snap sn[MGET_MAX];
        int bad = rnd_below(&w->r, 16) == 0 ? (int)rnd_below(&w->r, n) : -1, hits, count = 0;

        for (uint32_t i = 0; i < n; i++) {
                bool dup;
                do {
                        ids[i] = (uint32_t)rnd_below(&w->r, C->nkeys + C->nkeys / 16 + 1);
                        dup = false;
                        for (uint32_t j = 0; j < i; j++)
                                dup |= ids[j] == ids[i];
                } while (dup);
                key_name(keys[i], ids[i] < C->nkeys ? ids[i] : 100000000u + ids[i]);
                snap_take(ids[i], &sn[i]);
                req[i] = (struct stoa_getreq){ keys[i], (int)i == bad ? 0 : KLEN,
                                               w->mbuf + (size_t)i * MGET_CAP, MGET_CAP, 0, 12345 };
        }
        hits = stoa_mget(w->c, req, n);
        STAT(w, ST_MGETS);
        CHECKF(hits >= 0 && hits <= (int)n, "mget of %u keys: %d %s", n, hits,
               hits < 0 ? stoa_strerror(hits) : "");
        for (uint32_t i = 0; i < n; i++) {
                uint32_t k = ids[i];
                STAT(w, ST_MGET_KEYS);
                if ((int)i == bad) {
                        CHECKF(req[i].err == -EINVAL, "mget: a zero-length key gave %d", req[i].err);
                        continue;
                }
                switch (req[i].err) {
                case 0:
                        count++;
                        CHECKF(k < C->nkeys, "mget: key %u, never written, found", k);
                        CHECKF(req[i].vlen <= MGET_CAP, "mget of key %u: %zu bytes in a %u-byte buffer",
                               k, req[i].vlen, MGET_CAP);
                        verify_hit(w, k, req[i].buf, req[i].vlen, &sn[i], 0, OP_MGET);
                        STAT(w, ST_HITS);
                        break;
                case -ENOENT:
                        verify_miss(w, k, &sn[i], OP_MGET);
                        STAT(w, ST_MISSES);
                        break;
                case -ENOBUFS: {
                        size_t vlen = 0;
                        int r;
                        CHECKF(k < C->nkeys, "mget: key %u, never written, -ENOBUFS", k);
                        CHECKF(req[i].vlen > MGET_CAP, "mget of key %u: -ENOBUFS for %zu bytes", k,
                               req[i].vlen);
                        STAT(w, ST_NOBUFS);
                        r = stoa_get(w->c, keys[i], KLEN, w->buf, MAXV, &vlen);
                        if (r == 0)
                                verify_hit(w, k, w->buf, vlen, &sn[i], 0, OP_GET);
                        else
                                CHECKF(r == -ENOENT, "get of key %u: %d %s", k, r, stoa_strerror(r));
                        break;
                }
                default:
                        fail_at(__FILE__, __LINE__, "mget of key %u: %d %s", k, req[i].err,
                                stoa_strerror(req[i].err));
                }
        }
        CHECKF(hits == count, "mget returned %d hits, its requests say %d", hits, count);
}

static void view_take(struct worker *w, uint32_t k)
{
        char key[KLEN + 1];
        struct snap sn;
        struct held *h = &w->held[w->nheld];
        int r;

        key_name(key, k);
        snap_take(k, &sn);
        memset(&h->v, 0, sizeof(h->v));
        r = stoa_view_get(w->c, key, KLEN, &h->v);
        STAT(w, ST_READS);
        if (r == -ENOENT) {
                verify_miss(w, k, &sn, OP_VIEW);
                STAT(w, ST_MISSES);
                return;
        }
        CHECKF(r == 0, "view of key %u, %u views held: %d %s", k, w->nheld, r, stoa_strerror(r));
        CHECKF(h->v.val && h->v.version, "view of key %u: no value or version 0", k);
        h->vi = verify_hit(w, k, h->v.val, h->v.vlen, &sn, h->v.version, OP_VIEW);
        h->key = k;
        h->hash = hash_bytes(h->v.val, h->v.vlen);
        w->nheld++;
        STAT(w, ST_VIEWS);
        STAT(w, ST_HITS);
}

/* The view's bytes are the ones it had when taken, whatever happened since. */
static void view_verify(const struct held *h, const char *when)
{
        struct vinfo vi;
        const char *why = val_check(h->v.val, h->v.vlen, &vi);

        if (why || vi.key != h->key || vi.writer != h->vi.writer || vi.seq != h->vi.seq ||
            hash_bytes(h->v.val, h->v.vlen) != h->hash)
                KFAIL(h->key, "view of key %u (writer %u seq %llu, %zu bytes) changed while held, %s: %s",
                      h->key, h->vi.writer, (unsigned long long)h->vi.seq, h->v.vlen, when,
                      why ? why : "now another value");
}

static void view_release(struct worker *w, unsigned i, const char *when)
{
        struct held *h = &w->held[i];

        view_verify(h, when);
        stoa_view_release(w->c, &h->v);
        if (rnd_below(&w->r, 8) == 0)
                stoa_view_release(w->c, &h->v);        /* a released view: a no-op */
        oplog(w, OP_VREL, h->key, h->vi.writer, h->vi.seq, 0);
        w->held[i] = w->held[--w->nheld];
        STAT(w, ST_VIEWS_KEPT);
}

struct scan_arg {
        struct worker *w;
        char prefix[KLEN + 1];
        size_t plen;
        uint64_t visits, stop_after;
};

static int scan_cb(const void *key, size_t klen, size_t vlen, void *arg)
{
        struct scan_arg *a = arg;
        char id[13];
        uint32_t k;

        CHECKF(klen == KLEN, "scan: a key of %zu bytes", klen);
        CHECKF(memcmp(key, a->prefix, a->plen) == 0, "scan for \"%s\": key %.16s", a->prefix,
               (const char *)key);
        memcpy(id, (const char *)key + 4, 12);
        id[12] = 0;
        k = (uint32_t)strtoul(id, NULL, 10);
        CHECKF(k < C->nkeys, "scan: key %.16s, never written", (const char *)key);
        CHECKF(vlen >= 8 && vlen <= MAXV, "scan: key %u with a %zu-byte value", k, vlen);
        if (rnd_below(&a->w->r, 4) == 0)
                op_get(a->w, k, false);         /* any call may be made from the callback */
        a->visits++;
        return a->stop_after && a->visits == a->stop_after ? 7 : 0;
}

static void op_scan(struct worker *w)
{
        struct scan_arg a = { .w = w };
        int r;

        if (rnd_below(&w->r, 8) == 0) {
                a.plen = 4;
                memcpy(a.prefix, "key-", 5);
        } else {
                key_name(a.prefix, (uint32_t)rnd_below(&w->r, C->nkeys));
                a.plen = KLEN - 1;              /* ten keys */
                a.prefix[a.plen] = 0;
        }
        if (rnd_below(&w->r, 8) == 0)
                a.stop_after = 3;
        r = stoa_scan(w->c, a.prefix, a.plen, scan_cb, &a);
        STAT(w, ST_SCANS);
        atomic_fetch_add(&S->role[w->role].st[ST_SCAN_VISITS], a.visits);
        if (a.stop_after && a.visits == a.stop_after)
                CHECKF(r == 7, "scan stopped by its callback returned %d, not the callback's 7", r);
        else
                CHECKF(r == 0, "scan for \"%s\": %d %s (%llu visited)", a.prefix, r, stoa_strerror(r),
                       (unsigned long long)a.visits);
}

static void op_ctr_get(struct worker *w)
{
        uint32_t i = (uint32_t)rnd_below(&w->r, C->nctr);
        uint64_t ok = atomic_load(&S->ctr_ok[i]), tried;
        char key[KLEN + 1];
        size_t vlen = 0;
        int64_t v;
        int r;

        ctr_name(key, i);
        r = stoa_get(w->c, key, KLEN, w->buf, MAXV, &vlen);
        STAT(w, ST_READS);
        tried = atomic_load(&S->ctr_try[i]);
        if (r == -ENOENT) {
                CHECKF(C->evict || ok == 0, "counter %u: absent after %llu acknowledged increments", i,
                       (unsigned long long)ok);
                return;
        }
        CHECKF(r == 0, "get of counter %u: %d %s", i, r, stoa_strerror(r));
        v = ctr_parse(w->buf, vlen);
        CHECKF(v >= 0, "counter %u: \"%.*s\" is not a decimal integer", i, (int)(vlen < 40 ? vlen : 40),
               (const char *)w->buf);
        CHECKF((uint64_t)v <= tried, "counter %u: %lld, but only %llu increments were started", i,
               (long long)v, (unsigned long long)tried);
        CHECKF(C->evict || (uint64_t)v >= ok, "counter %u: %lld, but %llu increments were acknowledged",
               i, (long long)v, (unsigned long long)ok);
        oplog(w, OP_CTR, i | CTR_BIT, 0, (uint64_t)v, 0);
}

/* ---- writes ---- */

static void op_write(struct worker *w, uint32_t k, uint32_t op)
{
        char key[KLEN + 1];
        bool own = owner_of(k) == w->role;
        uint64_t prev = ack_get(w->role, k), seq = next_seq(w);
        size_t len = pick_len(&w->r, seq);
        int r;

        key_name(key, k);
        val_fill(w->vbuf, len, k, w->role, seq);
        begin_op(w, op, k, seq);
        r = write_call(w, op, key, w->vbuf, len, 0, NULL, NULL);
        oplog(w, op, k, w->role, seq, r);
        STAT(w, ST_WRITES);
        if ((r == -EAGAIN || r == -ENOMEM) && C->strict_eagain) {
                end_op(w);      /* not done: a reader is stopped */
                return;
        }
        switch (op) {
        case OP_SET:
                CHECKF(r == 0, "set of key %u (%zu bytes): %d %s", k, len, r, stoa_strerror(r));
                break;
        case OP_ADD:
                CHECKF(r == 0 || r == -EEXIST, "add of key %u: %d %s", k, r, stoa_strerror(r));
                if (own && r == -EEXIST && prev == 0)
                        KFAIL(k, "add of key %u by its only writer: -EEXIST, but it was deleted (or never "
                              "written)", k);
                if (own && r == 0 && prev != 0) {
                        if (!C->evict)
                                KFAIL(k, "add of key %u by its only writer succeeded: acknowledged seq %llu "
                                      "is gone, and nothing is evicted here", k, (unsigned long long)prev);
                        STAT(w, ST_OWN_GONE);
                }
                break;
        case OP_REPLACE:
                CHECKF(r == 0 || r == -ENOENT, "replace of key %u: %d %s", k, r, stoa_strerror(r));
                if (own && r == 0 && prev == 0)
                        KFAIL(k, "replace of key %u by its only writer: done, but the key was deleted "
                              "(or never written)", k);
                if (own && r == -ENOENT && prev != 0) {
                        if (!C->evict)
                                KFAIL(k, "replace of key %u by its only writer: -ENOENT, but seq %llu was "
                                      "acknowledged and nothing is evicted here", k,
                                      (unsigned long long)prev);
                        STAT(w, ST_OWN_GONE);
                }
                break;
        }
        if (r == 0) {
                ack_put(w->role, k, seq);
                STAT(w, ST_WRITE_OK);
        }
        end_op(w);
}

static void op_del(struct worker *w, uint32_t k)
{
        char key[KLEN + 1];
        bool own = owner_of(k) == w->role;
        uint64_t prev = ack_get(w->role, k);
        int r;

        key_name(key, k);
        begin_op(w, OP_DEL, k, 0);
        r = write_call(w, OP_DEL, key, NULL, 0, 0, NULL, NULL);        /* a del retires too: -EAGAIN */
        oplog(w, OP_DEL, k, w->role, 0, r);
        STAT(w, ST_DELS);
        if ((r == -EAGAIN || r == -ENOMEM) && C->strict_eagain) {
                end_op(w);      /* not done: the ack stands */
                return;
        }
        CHECKF(r == 0 || r == -ENOENT, "del of key %u: %d %s", k, r, stoa_strerror(r));
        if (own && r == 0 && prev == 0)
                KFAIL(k, "del of key %u by its only writer removed something, but it was deleted (or "
                      "never written)", k);
        if (own && r == -ENOENT && prev != 0) {
                if (!C->evict)
                        KFAIL(k, "del of key %u by its only writer: -ENOENT, but seq %llu was acknowledged "
                              "and nothing is evicted here", k, (unsigned long long)prev);
                STAT(w, ST_OWN_GONE);
        }
        ack_put(w->role, k, 0);
        end_op(w);
}

static void op_cas(struct worker *w, uint32_t k)
{
        char key[KLEN + 1];
        bool own = owner_of(k) == w->role;
        uint64_t ver = 0, nver = 0, seq;
        size_t vlen = 0, len;
        struct snap sn;
        int r;

        key_name(key, k);
        snap_take(k, &sn);
        r = stoa_gets(w->c, key, KLEN, w->buf, MAXV, &vlen, &ver);
        STAT(w, ST_READS);
        if (r == -ENOENT) {
                verify_miss(w, k, &sn, OP_GETS);
                if (own && sn.ack[w->role] == 0) {
                        r = stoa_cas(w->c, key, KLEN, "12345678", 8, 0, 1 + rnd_below(&w->r, 1000000), &nver);
                        /* The item is allocated before the lookup: a full heap may answer first. */
                        CHECKF(r == -ENOENT || r == -ENOMEM || r == -EAGAIN, "cas of absent key %u: %d %s",
                               k, r, stoa_strerror(r));
                }
                return;
        }
        CHECKF(r == 0, "gets of key %u: %d %s", k, r, stoa_strerror(r));
        CHECKF(ver != 0, "gets of key %u: version 0", k);
        verify_hit(w, k, w->buf, vlen, &sn, ver, OP_GETS);
        seq = next_seq(w);
        len = pick_len(&w->r, seq);
        val_fill(w->vbuf, len, k, w->role, seq);
        begin_op(w, OP_CAS, k, seq);
        r = write_call(w, OP_CAS, key, w->vbuf, len, ver, &nver, NULL);
        oplog(w, OP_CAS, k, w->role, seq, r);
        STAT(w, ST_WRITES);
        if (r == 0) {
                CHECKF(nver != 0 && nver != ver, "cas of key %u: new version %llu after %llu", k,
                       (unsigned long long)nver, (unsigned long long)ver);
                ack_put(w->role, k, seq);
                STAT(w, ST_WRITE_OK);
        } else if (r == -ESTALE) {
                if (own)
                        KFAIL(k, "cas of key %u by its only writer: -ESTALE (version %llu was just read)",
                              k, (unsigned long long)ver);
                STAT(w, ST_CAS_STALE);
        } else if (r == -ENOENT) {
                if (own && !C->evict)
                        KFAIL(k, "cas of key %u by its only writer: -ENOENT right after gets, and nothing "
                              "is evicted here", k);
        } else {
                CHECKF((r == -EAGAIN || r == -ENOMEM) && C->strict_eagain, "cas of key %u: %d %s", k, r,
                       stoa_strerror(r));
        }
        end_op(w);
}

static void op_incr(struct worker *w)
{
        uint32_t i = (uint32_t)rnd_below(&w->r, C->nctr);
        uint64_t ok = atomic_load(&S->ctr_ok[i]), tried;
        char key[KLEN + 1];
        int64_t v = -1;
        int r;

        ctr_name(key, i);
        atomic_fetch_add(&S->ctr_try[i], 1);
        begin_op(w, OP_INCR, i | CTR_BIT, 0);
        r = write_call(w, OP_INCR, key, NULL, 0, 0, NULL, &v);
        oplog(w, OP_INCR, i | CTR_BIT, w->role, (uint64_t)v, r);
        STAT(w, ST_INCRS);
        if (r == 0) {
                tried = atomic_load(&S->ctr_try[i]);
                CHECKF(v >= 1 && (uint64_t)v <= tried, "incr of counter %u gave %lld, %llu increments "
                       "started", i, (long long)v, (unsigned long long)tried);
                CHECKF(C->evict || (uint64_t)v > ok, "incr of counter %u gave %lld, but %llu increments "
                       "were acknowledged before it", i, (long long)v, (unsigned long long)ok);
                atomic_fetch_add(&S->ctr_ok[i], 1);
        } else {
                CHECKF((r == -EAGAIN || r == -ENOMEM) && C->strict_eagain, "incr of counter %u: %d %s", i,
                       r, stoa_strerror(r));
        }
        end_op(w);
}

/*
 * The write a killed process of `role` had in flight: read its key and
 * settle what it holds now (see the top of the file). Run by the process
 * that replaces it, and by the checker for roles not replaced.
 */
static void resolve(struct stoa *c, uint32_t role, uint8_t *buf, struct worker *w)
{
        struct role *R = &S->role[role];
        uint32_t op = atomic_load(&R->in_op), k = atomic_load(&R->in_key);
        uint64_t s = atomic_load(&R->in_seq), a;
        char key[KLEN + 1];
        size_t vlen = 0;
        int r;

        if (op == OP_NONE)
                return;
        if (op == OP_INCR || owner_of(k) != role) {
                atomic_store(&R->in_op, OP_NONE);       /* counters and shared keys: nothing exact */
                return;
        }
        a = ack_get(role, k);
        key_name(key, k);
        r = stoa_get(c, key, KLEN, buf, MAXV, &vlen);
        if (r == 0) {
                struct vinfo vi = { 0, 0, 0 };
                const char *why = val_check(buf, vlen, &vi);
                if (why || vi.key != k || vi.writer != role)
                        KFAIL(k, "key %u after role %u was killed mid-%s: bad value (%s)", k, role,
                              op_name[op], why ? why : "another key's or writer's");
                if (vi.seq == s && is_set_op(op)) {
                        ack_put(role, k, s);
                        atomic_fetch_add(&R->st[ST_RES_APPLIED], 1);
                } else if (vi.seq == a) {
                        atomic_fetch_add(&R->st[ST_RES_NOT], 1);
                } else {
                        KFAIL(k, "key %u after role %u was killed mid-%s of seq %llu: holds seq %llu, "
                              "neither that nor the acknowledged %llu", k, role, op_name[op],
                              (unsigned long long)s, (unsigned long long)vi.seq, (unsigned long long)a);
                }
        } else {
                CHECKF(r == -ENOENT, "get of key %u: %d %s", k, r, stoa_strerror(r));
                if (a != 0 && op != OP_DEL && !C->evict)
                        KFAIL(k, "key %u after role %u was killed mid-%s of seq %llu: absent, but seq "
                              "%llu was acknowledged and nothing is evicted here", k, role, op_name[op],
                              (unsigned long long)s, (unsigned long long)a);
                ack_put(role, k, 0);
                atomic_fetch_add(&R->st[ST_RES_ABSENT], 1);
        }
        if (w)
                oplog(w, OP_RESOLVE, k, role, s, r);
        atomic_store(&R->in_op, OP_NONE);
}

static uint32_t own_key(struct worker *w)
{
        uint32_t n = (C->nown - w->role + C->nwriters - 1) / C->nwriters;

        return w->role + C->nwriters * (uint32_t)rnd_below(&w->r, n);
}

static void reader_op(struct worker *w)
{
        uint32_t p = (uint32_t)rnd_below(&w->r, 100), k = (uint32_t)rnd_below(&w->r, C->nkeys);

        if (w->nheld && (w->nheld == HOLD_MAX || rnd_below(&w->r, 3) == 0))
                view_release(w, (unsigned)rnd_below(&w->r, w->nheld), "released in turn");
        if (p < C->mget_pct) {
                op_mget(w);
                return;
        }
        p = (uint32_t)rnd_below(&w->r, 100);
        if (p < 40)
                op_get(w, k, false);
        else if (p < 55)
                op_get(w, k, true);
        else if (p < 85 && !C->no_views)
                view_take(w, k);
        else if (p < 85)
                op_get(w, k, false);
        else if (p < 90 || !C->nctr)
                op_scan(w);
        else
                op_ctr_get(w);
}

static void writer_op(struct worker *w)
{
        uint32_t p = (uint32_t)rnd_below(&w->r, 100), k;

        if (C->churn) {
                k = own_key(w);
                if (p < 10)
                        op_del(w, k);
                else
                        op_write(w, k, OP_SET);
                return;
        }
        if (p >= C->write_pct) {
                reader_op(w);
                return;
        }
        p = (uint32_t)rnd_below(&w->r, 100);
        if (p < 10 && C->nctr) {
                op_incr(w);
                return;
        }
        k = p < 55 || C->nown == C->nkeys ? own_key(w) : C->nown + (uint32_t)rnd_below(&w->r, C->nkeys - C->nown);
        p = (uint32_t)rnd_below(&w->r, 100);
        if (p < 60)
                op_write(w, k, OP_SET);
        else if (p < 70)
                op_del(w, k);
        else if (p < 78)
                op_write(w, k, OP_ADD);
        else if (p < 86)
                op_write(w, k, OP_REPLACE);
        else if (p < 96)
                op_cas(w, k);
        else
                op_get(w, k, rnd_below(&w->r, 2));
}

static void worker_init(struct worker *w, uint32_t role, uint32_t gen)
{
        memset(w, 0, sizeof(*w));
        w->role = role;
        w->gen = gen;
        w->r.s = mix64(case_seed ^ ((uint64_t)role << 40 | gen));
        w->buf = xcalloc(MAXV);
        w->vbuf = xcalloc(MAXV);
        w->mbuf = xcalloc((size_t)MGET_MAX * MGET_CAP);
        w->seen = xcalloc((size_t)C->nkeys * MAX_ROLES * sizeof(*w->seen));
        w->ver = xcalloc((size_t)C->nkeys * sizeof(*w->ver));
        w->ver_val = xcalloc((size_t)C->nkeys * sizeof(*w->ver_val));
}

static struct stoa *attach(void)
{
        struct stoa_options o = { .flags = STOA_OPEN_NOCREATE };
        struct stoa *c = NULL;

        CHECK_OK(stoa_open(&c, SEG_NAME, &o));
        return c;
}

__attribute__((noreturn))
static void worker_main(uint32_t role, uint32_t gen)
{
        struct role *R = &S->role[role];
        struct worker w;

        snprintf(who, sizeof(who), "%s role %u gen %u", C->name, role, gen);
        atomic_store(&R->gen, gen);
        atomic_store(&R->phase, PH_OPENING);
        worker_init(&w, role, gen);
        w.c = attach();
        atomic_store(&R->phase, PH_RESOLVING);
        if (role < C->nwriters)
                resolve(w.c, role, w.buf, &w);
        atomic_store(&R->phase, PH_RUNNING);
        while (!atomic_load_explicit(&S->stop, memory_order_relaxed) &&
               !atomic_load_explicit(&R->stop, memory_order_relaxed)) {
                if (role < C->nwriters)
                        writer_op(&w);
                else
                        reader_op(&w);
                STAT(&w, ST_OPS);
        }
        atomic_store(&R->phase, PH_STOPPING);
        while (w.nheld)
                view_release(&w, w.nheld - 1, "at the end");
        stoa_close(w.c);
        _exit(0);
}

/* ---- processes ----------------------------------------------------------- */

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

static void describe_status(int st, char *out, size_t n)
{
        if (WIFEXITED(st))
                snprintf(out, n, "exit %d", WEXITSTATUS(st));
        else if (WIFSIGNALED(st))
                snprintf(out, n, "signal %d%s", WTERMSIG(st),
                         WTERMSIG(st) == SIGALRM ? " (its watchdog: an operation blocked)" : "");
        else
                snprintf(out, n, "status %#x", st);
}

static void expect_exit0(pid_t pid, const char *what)
{
        int st = 0;
        char d[96];

        if (!wait_for(pid, 20000, &st)) {
                kill(pid, SIGKILL);
                wait_pid(pid);
                fail_at(__FILE__, __LINE__, "%s (pid %d) did not finish in 20 s: blocked", what, (int)pid);
        }
        check_box();
        describe_status(st, d, sizeof(d));
        CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s (pid %d): %s", what, (int)pid, d);
}

/* The case process's own view of its workers. */
static pid_t pids[MAX_ROLES];
static uint32_t gens[MAX_ROLES];

static void role_child(void *arg)
{
        uint32_t role = (uint32_t)(uintptr_t)arg;

        worker_main(role, gens[role]);
}

static void start_role(uint32_t role)
{
        gens[role]++;
        atomic_store(&S->role[role].stop, 0);
        pids[role] = harness_spawn(role_child, (void *)(uintptr_t)role);
}

static void stop_roles(void)
{
        char what[48];

        atomic_store(&S->stop, 1);
        for (uint32_t r = 0; r < C->nroles; r++) {
                if (!pids[r])
                        continue;
                snprintf(what, sizeof(what), "role %u", r);
                expect_exit0(pids[r], what);
                pids[r] = 0;
        }
        atomic_store(&S->stop, 0);
}

/* Sleep ms, failing early if a worker fails. */
static void run_for(uint64_t ms)
{
        uint64_t end = now_ns() + ms * MSEC;

        while (now_ns() < end) {
                check_box();
                sleep_us(20000);
        }
        check_box();
}

/* ---- the case process: segment, checks ----------------------------------- */

static struct stoa *H;                  /* the case process's handle */
static uint64_t baseline_used;          /* heap in use right after creation */
static unsigned checkpoints;
static uint64_t swept, dead_seen;

/*
 * Memory that does not add up, and what stoa_check finds, are collected, not
 * fatal at once, so that the data checks of later rounds still run;
 * mem_verdict() fails the case at its end. mem_lost is the most heap seen in
 * use with every key deleted, beyond the figure at creation.
 */
static unsigned mem_bad, check_bad, check_last = UINT32_MAX;
static uint64_t mem_lost;
static char mem_first[400], check_first[600];

struct check_msgs {
        unsigned n;
        char first[400];
};

static void check_report(const char *msg, void *arg)
{
        struct check_msgs *m = arg;

        if (++m->n <= 20)
                fprintf(stderr, "  stoa_check: %s\n", msg);
        if (m->n == 1)
                snprintf(m->first, sizeof(m->first), "%s", msg);
}

/*
 * stoa_check must find nothing. What it finds is collected like lost memory
 * (the case fails at its end), so that the later rounds still check the data.
 */
static void check_clean(const char *when)
{
        struct check_msgs m = { 0, "" };
        int r = stoa_check(H, check_report, &m);

        CHECKF(r >= 0, "%s: stoa_check: %d %s", when, r, stoa_strerror(r));
        if (r == 0)
                return;
        fprintf(stderr, "  CHECK: %s: stoa_check found %d problems\n", when, r);
        if (check_last == checkpoints)
                return;                 /* this checkpoint is counted already */
        check_last = checkpoints;
        if (!check_bad++)
                snprintf(check_first, sizeof(check_first), "%s: %d problems, the first: %s", when, r, m.first);
}

struct cl_scan {
        pid_t pid;
        unsigned n, alive, dead;
        bool found;
        struct stoa_client me;
};

static int cl_cb(const struct stoa_client *cl, void *arg)
{
        struct cl_scan *s = arg;

        s->n++;
        if (cl->alive)
                s->alive++;
        else
                s->dead++;
        if (s->pid && cl->pid == (uint32_t)s->pid) {
                s->found = true;
                s->me = *cl;
        }
        return 0;
}

static struct cl_scan clients_of(pid_t pid)
{
        struct cl_scan s;

        memset(&s, 0, sizeof(s));
        s.pid = pid;
        CHECK_OK(stoa_clients(H, cl_cb, &s));
        return s;
}

static struct stoa_info info_now(void)
{
        struct stoa_info in;

        CHECK_OK(stoa_info(H, &in));
        CHECKF(in.used_bytes + in.free_bytes <= in.heap_bytes, "info: %llu used + %llu free > %llu heap",
               (unsigned long long)in.used_bytes, (unsigned long long)in.free_bytes,
               (unsigned long long)in.heap_bytes);
        return in;
}

static void case_open(const struct mp_cfg *cfg)
{
        struct stoa_options o = { .size = cfg->seg_size, .flags = STOA_OPEN_NOHUGE, .nslots = 64 };
        const char *seed = getenv("STOA_SEED"), *mib = getenv("STOA_MP_SEGMENT_MIB");

        if (mib && cfg->evict)
                o.size = strtoull(mib, NULL, 10) * MiB;
        struct stoa_info in;

        C = cfg;
        S = shared_map(sizeof(*S));
        fail_box = &S->fb;
        S->t0 = now_ns();
        case_seed = seed ? strtoull(seed, NULL, 0) : mix64(now_ns() ^ (uint64_t)getpid());
        snprintf(who, sizeof(who), "%s", cfg->name);
        memset(pids, 0, sizeof(pids));
        memset(gens, 0, sizeof(gens));
        checkpoints = 0;
        swept = dead_seen = 0;
        mem_bad = check_bad = 0;
        check_last = UINT32_MAX;
        mem_lost = 0;
        mem_first[0] = check_first[0] = 0;
        CHECK(cfg->nkeys <= MAX_KEYS && cfg->nroles <= MAX_ROLES && cfg->nctr <= MAX_CTR);
        CHECK(cfg->nwriters >= 1 && cfg->nwriters <= cfg->nroles && cfg->nown <= cfg->nkeys);
        CHECK_OK(stoa_open(&H, SEG_NAME, &o));
        in = info_now();
        baseline_used = in.used_bytes;
        fprintf(stderr, "  %s: seed %#llx (STOA_SEED), segment %llu MiB (%s), heap %.1f MiB, %u keys "
                "(%u single-writer), %u counters, %u writers, %u readers\n", cfg->name,
                (unsigned long long)case_seed, (unsigned long long)(in.size >> 20), in.backing,
                (double)in.heap_bytes / MiB, cfg->nkeys, cfg->nown, cfg->nctr, cfg->nwriters,
                cfg->nroles - cfg->nwriters);
}

/* Generous bound of the heap an item needs: header, stamp, size-class rounding. */
static uint64_t item_bound(size_t vlen)
{
        uint64_t need = KLEN + vlen + 64;

        return need <= 32 * KiB ? need + need / 4 + 16 : (need + 64 * KiB - 1) / (64 * KiB) * 64 * KiB;
}

struct vis_arg {
        uint8_t *visits;
        uint32_t *lens;
        uint32_t n, base;
};

static int vis_cb(const void *key, size_t klen, size_t vlen, void *arg)
{
        struct vis_arg *a = arg;
        char id[13];
        uint32_t k;

        CHECKF(klen == KLEN, "scan: a key of %zu bytes", klen);
        memcpy(id, (const char *)key + 4, 12);
        id[12] = 0;
        k = (uint32_t)strtoul(id, NULL, 10);
        CHECKF(k < a->n, "scan: key %.16s, never written", (const char *)key);
        CHECKF(a->visits[a->base + k] < 255, "scan: key %u visited 255 times", k);
        a->visits[a->base + k]++;
        CHECKF(a->lens[a->base + k] == vlen, "scan: key %.16s with %zu bytes, get says %u",
               (const char *)key, vlen, a->lens[a->base + k]);
        return 0;
}

/* A write of the checker: -EAGAIN and -ENOMEM retried for a second, as the workers do. */
static int checker_retry(int r, uint64_t *first, const char *what, const char *key, struct stoa *c)
{
        if (r != -EAGAIN && r != -ENOMEM)
                return 0;
        if (!*first)
                *first = now_ns();
        if (now_ns() - *first > SEC) {
                dump_segment(c, "a write of the checker kept failing");
                fail_at(__FILE__, __LINE__, "%s of %.16s by the checker (every worker stopped) fails with %s "
                        "for a second", what, key, stoa_strerror(r));
        }
        sleep_us(1000);
        return 1;
}

/*
 * The quiescent check, in a child with a watchdog (no operation may block,
 * even with dead clients not yet recovered): settle every killed writer's
 * in-flight write, read every key and check it against the acks (exactly
 * for owned keys; for shared keys exactly too unless writers were killed),
 * check the counters, check that a scan visits exactly the keys present,
 * each once, with their lengths; then write every key (the same bytes back
 * if present, add + del if absent: the state is unchanged) and read it
 * back; then count what is present for the case process.
 */
static void checker_child(void *arg)
{
        uint8_t *buf = xcalloc(MAXV), *visits = xcalloc(MAX_KEYS + MAX_CTR);
        uint32_t *lens = xcalloc((MAX_KEYS + MAX_CTR) * sizeof(*lens));
        uint32_t nk = C->nkeys, nc = C->nctr;
        struct stoa *c;
        uint64_t gone = 0, present = 0, live = 0, bound = 0;
        char key[KLEN + 1];
        size_t vlen;
        int r;

        (void)arg;
        snprintf(who, sizeof(who), "%s checker", C->name);
        alarm(30);
        c = attach();
        for (uint32_t w = 0; w < C->nwriters; w++)
                resolve(c, w, buf, NULL);

        for (uint32_t k = 0; k < nk; k++) {
                uint32_t o = owner_of(k);
                struct snap sn;
                key_name(key, k);
                snap_take(k, &sn);
                vlen = 0;
                r = stoa_get(c, key, KLEN, buf, MAXV, &vlen);
                if (r == -ENOENT) {
                        if (o != NO_OWNER && sn.ack[o]) {
                                if (!C->evict)
                                        KFAIL(k, "key %u: absent at the check, but seq %llu of its only "
                                              "writer was acknowledged and nothing is evicted here: a lost "
                                              "write", k, (unsigned long long)sn.ack[o]);
                                gone++;
                        }
                        continue;
                }
                CHECKF(r == 0, "get of key %u: %d %s", k, r, stoa_strerror(r));
                struct vinfo vi = verify_hit(NULL, k, buf, vlen, &sn, 0, OP_CHECK);
                if (o != NO_OWNER && vi.seq != sn.ack[o])
                        KFAIL(k, "key %u at the check: seq %llu, but its only writer's last acknowledged "
                              "write is %s%llu", k, (unsigned long long)vi.seq,
                              sn.ack[o] ? "seq " : "a del, ", (unsigned long long)sn.ack[o]);
                if (o == NO_OWNER && !C->kills && vi.seq != sn.ack[vi.writer])
                        KFAIL(k, "shared key %u at the check: writer %u seq %llu, but that writer's last "
                              "write to it is %s%llu", k, vi.writer, (unsigned long long)vi.seq,
                              sn.ack[vi.writer] ? "seq " : "a del or nothing, ",
                              (unsigned long long)sn.ack[vi.writer]);
        }
        for (uint32_t i = 0; i < nc; i++) {
                uint64_t ok = atomic_load(&S->ctr_ok[i]), tried = atomic_load(&S->ctr_try[i]);
                int64_t v;
                ctr_name(key, i);
                r = stoa_get(c, key, KLEN, buf, MAXV, &vlen);
                if (r == -ENOENT) {
                        CHECKF(C->evict || ok == 0, "counter %u: absent after %llu acknowledged increments",
                               i, (unsigned long long)ok);
                        continue;
                }
                CHECKF(r == 0, "get of counter %u: %d %s", i, r, stoa_strerror(r));
                v = ctr_parse(buf, vlen);
                CHECKF(v >= 0 && (uint64_t)v <= tried && (C->evict || (uint64_t)v >= ok),
                       "counter %u at the check: %lld (\"%.*s\"); %llu increments acknowledged, %llu started",
                       i, (long long)v, (int)(vlen < 20 ? vlen : 20), (const char *)buf,
                       (unsigned long long)ok, (unsigned long long)tried);
        }

        S->present_before = 0;
        for (uint32_t k = 0; k < nk + nc; k++) {
                if (k >= nk)
                        ctr_name(key, k - nk);
                else
                        key_name(key, k);
                S->present_before += stoa_get(c, key, KLEN, buf, MAXV, &vlen) == 0;
        }

        /* Every key written, the state kept; read back exactly. */
        for (uint32_t k = 0; k < nk + nc; k++) {
                bool ctr = k >= nk;
                if (ctr)
                        ctr_name(key, k - nk);
                else
                        key_name(key, k);
                r = stoa_get(c, key, KLEN, buf, MAXV, &vlen);
                if (r == 0) {
                        uint64_t h = hash_bytes(buf, vlen);
                        size_t vlen2 = 0;
                        uint64_t first = 0;
                        while (checker_retry(r = stoa_set(c, key, KLEN, buf, vlen, 0), &first, "set", key, c))
                                ;
                        CHECKF(r == 0, "set of %.16s: %d %s", key, r, stoa_strerror(r));
                        CHECK_OK(stoa_get(c, key, KLEN, buf, MAXV, &vlen2));
                        CHECKF(vlen2 == vlen && hash_bytes(buf, vlen2) == h,
                               "%.16s: set back and read back differs", key);
                } else {
                        CHECKF(r == -ENOENT, "get of %.16s: %d %s", key, r, stoa_strerror(r));
                        if (ctr) {
                                int64_t v = -1;
                                uint64_t first = 0;
                                while (checker_retry(r = stoa_incr(c, key, KLEN, 0, 0, &v), &first, "incr", key, c))
                                        ;
                                CHECKF(r == 0 && v == 0, "incr of absent %.16s: %d, value %lld", key, r,
                                       (long long)v);
                        } else {
                                uint64_t first = 0;
                                val_fill(buf, 100, k, CHECKER, 1);
                                while (checker_retry(r = stoa_add(c, key, KLEN, buf, 100, 0), &first, "add", key, c))
                                        ;
                                CHECKF(r == 0, "add of absent %.16s: %d %s", key, r, stoa_strerror(r));
                                CHECK_OK(stoa_get(c, key, KLEN, buf, MAXV, &vlen));
                                CHECK_EQ(vlen, 100);
                        }
                        uint64_t first = 0;
                        while (checker_retry(r = stoa_del(c, key, KLEN), &first, "del", key, c))
                                ;
                        CHECKF(r == 0, "del of %.16s just written: %d %s", key, r, stoa_strerror(r));
                        r = stoa_get(c, key, KLEN, buf, MAXV, &vlen);
                        CHECKF(r == -ENOENT, "get of %.16s just deleted: %d %s", key, r, stoa_strerror(r));
                }
        }

        /* What is left (writing may have evicted some), and a scan must find exactly that. */
        memset(S->present_map, 0, sizeof(S->present_map));
        for (uint32_t k = 0; k < nk + nc; k++) {
                if (k >= nk)
                        ctr_name(key, k - nk);
                else
                        key_name(key, k);
                r = stoa_get(c, key, KLEN, buf, MAXV, &vlen);
                if (r == -ENOENT)
                        continue;
                CHECKF(r == 0, "get of %.16s: %d %s", key, r, stoa_strerror(r));
                S->present_map[k] = 1;
                lens[k] = (uint32_t)vlen;
                present++;
                live += KLEN + vlen;
                bound += item_bound(vlen);
        }
        struct vis_arg va = { visits, lens, nk, 0 };
        CHECK_OK(stoa_scan(c, "key-", 4, vis_cb, &va));
        va = (struct vis_arg){ visits, lens, nc, nk };
        CHECK_OK(stoa_scan(c, "ctr-", 4, vis_cb, &va));
        for (uint32_t k = 0; k < nk + nc; k++)
                CHECKF(visits[k] == S->present_map[k], "scan of a quiet segment visited %s %u %u times, "
                       "get says it is %s", k < nk ? "key" : "counter", k < nk ? k : k - nk, visits[k],
                       S->present_map[k] ? "present" : "absent");
        S->present = present;
        S->live_bytes = live;
        S->live_bound = bound;
        S->acked_gone = gone;
        stoa_close(c);
}

/* Delete every key, in a child with a watchdog; the case process checks the memory after. */
static void deleter_child(void *arg)
{
        uint8_t buf[64];
        char key[KLEN + 1];
        size_t vlen;
        struct stoa *c;
        int r;

        (void)arg;
        snprintf(who, sizeof(who), "%s deleter", C->name);
        alarm(30);
        c = attach();
        for (uint32_t k = 0; k < C->nkeys + C->nctr; k++) {
                if (k >= C->nkeys)
                        ctr_name(key, k - C->nkeys);
                else
                        key_name(key, k);
                uint64_t first = 0;
                while (checker_retry(r = stoa_del(c, key, KLEN), &first, "del", key, c))
                        ;
                CHECKF(r == (S->present_map[k] ? 0 : -ENOENT), "del of %.16s (%s at the check): %d %s",
                       key, S->present_map[k] ? "present" : "absent", r, stoa_strerror(r));
                r = stoa_get(c, key, KLEN, buf, sizeof(buf), &vlen);
                CHECKF(r == -ENOENT, "get of %.16s after its del: %d %s", key, r, stoa_strerror(r));
        }
        stoa_close(c);
}

/* Sweep until the heap in use is within [lo, hi] (reclamation may lag a little); false if it never is. */
static bool settle_used(uint64_t lo, uint64_t hi, struct stoa_info *in)
{
        for (int i = 0; i < 30; i++) {
                int r = stoa_sweep(H);
                CHECKF(r >= 0, "stoa_sweep: %d %s", r, stoa_strerror(r));
                swept += (uint64_t)r;
                *in = info_now();
                if (in->used_bytes >= lo && in->used_bytes <= hi)
                        return true;
                sleep_us(5000);
        }
        return false;
}

/*
 * Everything stopped: check, then empty the segment and check that all of
 * its memory came back. Leaves the acks and counters at zero for a restart.
 */
static void checkpoint(const char *when)
{
        struct stoa_info in;
        struct cl_scan cs;
        uint64_t t = now_ns();
        int r;

        check_box();
        in = info_now();
        dead_seen += in.dead_clients;
        expect_exit0(harness_spawn(checker_child, NULL), "the checker");

        /* Dead clients recovered, every slot alive; the segment consistent. */
        r = stoa_sweep(H);
        CHECKF(r >= 0, "stoa_sweep: %d %s", r, stoa_strerror(r));
        swept += (uint64_t)r;
        cs = clients_of(0);
        CHECKF(cs.dead == 0 && cs.alive == 1, "%s: after a sweep, %u dead and %u live clients "
               "(only this process should be left)", when, cs.dead, cs.alive);
        check_clean(when);
        in = info_now();
        CHECKF(in.dead_clients == 0, "%s: info says %u dead clients after a sweep", when, in.dead_clients);
        CHECKF(in.items == S->present, "%s: info says %llu items, %llu keys are there", when,
               (unsigned long long)in.items, (unsigned long long)S->present);
        CHECKF(in.item_bytes == S->live_bytes, "%s: info says %llu item bytes, the keys there hold %llu",
               when, (unsigned long long)in.item_bytes, (unsigned long long)S->live_bytes);
        bool within = settle_used(baseline_used + S->live_bytes, baseline_used + S->live_bound, &in);
        uint64_t used_live = in.used_bytes;

        /* Every key deleted: all the memory comes back, however the writers died. */
        expect_exit0(harness_spawn(deleter_child, NULL), "the deleter");
        bool back = settle_used(baseline_used, baseline_used, &in);
        if (!within || !back) {
                char msg[400];
                dump_segment(H, "the memory does not add up");
                struct check_msgs m = { 0, "" };
                fprintf(stderr, "  stoa_check says %d\n", stoa_check(H, check_report, &m));
                snprintf(msg, sizeof(msg), "%s: with %llu items holding %llu bytes (needing at most %llu), "
                         "%lld bytes of heap were in use; after deleting them all and sweeping, %llu, "
                         "against %llu expected", when, (unsigned long long)S->present,
                         (unsigned long long)S->live_bytes, (unsigned long long)S->live_bound,
                         (long long)(used_live - baseline_used),
                         (unsigned long long)in.used_bytes, (unsigned long long)baseline_used);
                fprintf(stderr, "  MEMORY: %s\n", msg);
                if (!mem_bad++)
                        snprintf(mem_first, sizeof(mem_first), "%s", msg);
                if (in.used_bytes > baseline_used && in.used_bytes - baseline_used > mem_lost)
                        mem_lost = in.used_bytes - baseline_used;
        }
        CHECKF(in.items == 0 && in.item_bytes == 0, "%s: every key deleted, info says %llu items, %llu bytes",
               when, (unsigned long long)in.items, (unsigned long long)in.item_bytes);
        check_clean(when);
        cs = clients_of(0);
        CHECKF(cs.dead == 0 && cs.alive == 1, "%s: %u dead and %u live clients at the end", when, cs.dead,
               cs.alive);
        CHECKF(C->evict || in.evictions == 0, "%s: %llu evictions in a segment meant never to evict",
               when, (unsigned long long)in.evictions);
        checkpoints++;
        fprintf(stderr, "    %s: %llu keys present (%llu before the checker wrote them all; %llu acked ones evicted), heap in use %.2f MiB with "
                "them, %.2f MiB empty (= at creation), free %.2f of %.2f MiB; %llu evictions so far; "
                "%.0f ms\n", when, (unsigned long long)S->present, (unsigned long long)S->present_before,
                (unsigned long long)S->acked_gone,
                (double)used_live / MiB, (double)in.used_bytes / MiB, (double)in.free_bytes / MiB,
                (double)in.heap_bytes / MiB, (unsigned long long)in.evictions, ms_since(t));
        memset((void *)S->ack, 0, sizeof(S->ack));
        memset((void *)S->ctr_try, 0, sizeof(S->ctr_try));
        memset((void *)S->ctr_ok, 0, sizeof(S->ctr_ok));
}

static void mem_verdict(void)
{
        CHECKF(check_bad == 0, "stoa_check found problems at %u of %u checkpoints; %s", check_bad,
               checkpoints, check_first);
        CHECKF(mem_bad == 0, "the heap did not add up at %u of %u checkpoints; up to %llu bytes in use "
               "with every key deleted and every client gone or swept; first: %s", mem_bad,
               checkpoints, (unsigned long long)mem_lost, mem_first);
}

static void print_ops(void)
{
        char line[1024];
        size_t n = 0;

        for (unsigned s = 0; s < ST_N; s++) {
                uint64_t v = stat_sum((enum stat)s);
                if (v)
                        n += (size_t)snprintf(line + n, sizeof(line) - n, " %s %llu", stat_name[s],
                                              (unsigned long long)v);
                if (n >= sizeof(line) - 40)
                        break;
        }
        fprintf(stderr, "    ops:%s\n", line);
}

/* ==== 1. writers and readers race, memory full ============================ */

static const struct mp_cfg race_cfg = {
        .name = "race", .seg_size = 16 * MiB,
        .nkeys = 4000, .nown = 2000, .nctr = 32, .nwriters = 3, .nroles = 6,
        .write_pct = 85, .mget_pct = 25,
        .short_pm = 350, .mid_pm = 0, .big_pm = 5, .min_len = 8, .small_max = 4096,
        .big_max = MAXV, .evict = true,
};

static void case_race(void)
{
        uint64_t t = now_ns(), ms = 3000ull * stress_scale();
        struct stoa_info in;

        case_open(&race_cfg);
        for (uint32_t r = 0; r < C->nroles; r++)
                start_role(r);
        run_for(ms);
        stop_roles();
        in = info_now();
        checkpoint("after the race");
        fprintf(stderr, "  race: %.1f s of 3 writers and 3 readers, %llu evictions, %llu acknowledged "
                "single-writer keys evicted at the end, %llu dead clients seen, %.0f ms in all\n",
                (double)ms / 1000, (unsigned long long)in.evictions, (unsigned long long)S->acked_gone,
                (unsigned long long)dead_seen, ms_since(t));
        print_ops();
        CHECKF(in.evictions > 0, "memory never filled: no eviction in a %llu MiB segment",
               (unsigned long long)(in.size >> 20));
        CHECKF(stat_sum(ST_WRITE_OK) > 1000 && stat_sum(ST_HITS) > 1000, "too little work done");
        mem_verdict();
        stoa_close(H);
}

/* ==== 2. SIGKILL at random, hundreds of times ============================= */

static const struct mp_cfg crash_evict_cfg = {
        .name = "crash-evict", .seg_size = 16 * MiB,
        .nkeys = 4000, .nown = 2000, .nctr = 16, .nwriters = 3, .nroles = 4,
        .write_pct = 70, .mget_pct = 25,
        .short_pm = 300, .mid_pm = 0, .big_pm = 15, .min_len = 8, .small_max = 4096,
        .big_max = MAXV, .evict = true, .kills = true,
};

static const struct mp_cfg crash_noevict_cfg = {
        .name = "crash-noevict", .seg_size = 64 * MiB,
        .nkeys = 600, .nown = 300, .nctr = 16, .nwriters = 3, .nroles = 4,
        .write_pct = 70, .mget_pct = 25,
        .short_pm = 300, .mid_pm = 30, .big_pm = 3, .min_len = 8, .small_max = 4096,
        .big_max = 48 * KiB, .evict = false, .kills = true,
};

static void run_crash(const struct mp_cfg *cfg)
{
        unsigned rounds = 300 * stress_scale(), every = 30, kills = 0, by_phase[5] = { 0 };
        unsigned mid_write = 0;
        uint64_t t = now_ns();
        struct rng r;
        char when[64];

        case_open(cfg);
        r.s = mix64(case_seed);
        for (uint32_t i = 0; i < C->nroles; i++)
                start_role(i);
        for (unsigned round = 0; round < rounds; round++) {
                uint32_t v = (uint32_t)rnd_below(&r, C->nroles);
                int st;

                atomic_store(&S->round, round);
                sleep_us(rnd_below(&r, 5001));
                check_box();
                kill(pids[v], SIGKILL);
                st = wait_pid(pids[v]);
                check_box();
                CHECKF(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "round %u: role %u: status %#x", round,
                       v, st);
                kills++;
                by_phase[atomic_load(&S->role[v].phase) % 5]++;
                mid_write += atomic_load(&S->role[v].phase) == PH_RUNNING &&
                             atomic_load(&S->role[v].in_op) != OP_NONE;
                atomic_store(&S->role[v].phase, PH_NONE);
                start_role(v);
                if ((round + 1) % every == 0 || round + 1 == rounds) {
                        stop_roles();
                        snprintf(when, sizeof(when), "checkpoint %u, round %u", checkpoints + 1, round + 1);
                        checkpoint(when);
                        if (round + 1 < rounds) {
                                for (uint32_t i = 0; i < C->nroles; i++)
                                        start_role(i);
                        }
                }
        }
        struct stoa_info in = info_now();
        fprintf(stderr, "  %s: %u rounds, %u kills (%u while opening, %u settling a dead one's write, %u "
                "running, %u of them mid-write); killed writes found done %llu, not done %llu, key gone "
                "%llu; %u checkpoints; %llu dead clients seen at checkpoints, %llu recovered by sweeps; "
                "%llu evictions; %.1f s\n", cfg->name, rounds, kills, by_phase[PH_OPENING],
                by_phase[PH_RESOLVING], by_phase[PH_RUNNING], mid_write,
                (unsigned long long)stat_sum(ST_RES_APPLIED), (unsigned long long)stat_sum(ST_RES_NOT),
                (unsigned long long)stat_sum(ST_RES_ABSENT), checkpoints, (unsigned long long)dead_seen,
                (unsigned long long)swept, (unsigned long long)in.evictions, ms_since(t) / 1000);
        print_ops();
        CHECKF(C->evict == (in.evictions > 0), "%llu evictions in %s", (unsigned long long)in.evictions,
               cfg->name);
        CHECKF(stat_sum(ST_WRITE_OK) > 1000 && kills == rounds, "too little work done");
        mem_verdict();
        stoa_close(H);
}

static void case_crash_evict(void)
{
        run_crash(&crash_evict_cfg);
}

static void case_crash_noevict(void)
{
        run_crash(&crash_noevict_cfg);
}

/* ==== 3. a stopped reader ================================================= */

static const struct mp_cfg stopped_cfg = {
        .name = "stopped", .seg_size = 16 * MiB,
        .nkeys = 3000, .nown = 3000, .nctr = 0, .nwriters = 1, .nroles = 2,
        .write_pct = 100, .mget_pct = 70,
        .min_len = 1024, .small_max = 4096, .big_max = MAXV,
        .evict = true, .churn = true, .strict_eagain = true, .no_views = true,
};

#define VH_N 16u

/* Takes VH_N views, then holds them (outside any call) until told to check and release them. */
static void view_holder_child(void *arg)
{
        struct held h[VH_N];
        struct stoa *c;
        struct rng r = { mix64(case_seed ^ 77) };
        char key[KLEN + 1];
        unsigned n = 0, tries = 0;
        uint64_t end;

        (void)arg;
        snprintf(who, sizeof(who), "view holder");
        c = attach();
        while (n < VH_N) {
                uint32_t k = (uint32_t)rnd_below(&r, C->nkeys);
                struct vinfo vi;
                const char *why;
                CHECKF(++tries < 100000, "no key found to view");
                key_name(key, k);
                memset(&h[n].v, 0, sizeof(h[n].v));
                int rr = stoa_view_get(c, key, KLEN, &h[n].v);
                if (rr == -ENOENT)
                        continue;
                CHECKF(rr == 0, "view of key %u: %d %s", k, rr, stoa_strerror(rr));
                why = val_check(h[n].v.val, h[n].v.vlen, &vi);
                CHECKF(!why && vi.key == k, "view of key %u: %s", k, why ? why : "another key's value");
                h[n].key = k;
                h[n].vi = vi;
                h[n].hash = hash_bytes(h[n].v.val, h[n].v.vlen);
                n++;
        }
        atomic_store(&S->vh_ready, 1);
        end = now_ns() + 60 * SEC;
        while (!atomic_load(&S->vh_go) && now_ns() < end)
                sleep_us(1000);
        for (unsigned i = 0; i < n; i++) {
                view_verify(&h[i], "by a process that held it, idle, while a writer churned");
                stoa_view_release(c, &h[i].v);
        }
        stoa_close(c);
}

/*
 * Stop the reader (SIGSTOP) until it is caught inside a read section (its
 * slot holds an epoch), at most `tries` times; it is left stopped.
 */
static bool stop_in_section(pid_t pid, struct rng *r, unsigned tries, unsigned *used, struct stoa_client *ret)
{
        for (unsigned i = 0; i < tries; i++) {
                int st;
                struct cl_scan cs;

                CHECK(kill(pid, SIGSTOP) == 0);
                while (waitpid(pid, &st, WUNTRACED) < 0)
                        CHECK(errno == EINTR);
                CHECKF(WIFSTOPPED(st), "the reader did not stop: status %#x", st);
                cs = clients_of(pid);
                CHECKF(cs.found && cs.me.alive == 1, "the stopped reader (pid %d) is %s", (int)pid,
                       cs.found ? "reported dead" : "not among the clients");
                *used = i + 1;
                *ret = cs.me;
                if (cs.me.reading != 0)
                        return true;
                CHECK(kill(pid, SIGCONT) == 0);
                sleep_us(rnd_below(r, 3000));
                check_box();
        }
        return false;
}

/* The writer goes on while the reader is stopped: no call blocks, some still succeed or -EAGAIN. */
static void churn_while_stopped(pid_t reader, uint64_t ms, uint64_t *ret_ok, uint64_t *ret_eagain,
                                uint64_t *ret_enomem)
{
        struct role *W = &S->role[0];
        uint64_t ok0 = atomic_load(&W->st[ST_WRITE_OK]), ea0 = atomic_load(&W->st[ST_EAGAIN]);
        uint64_t nm0 = atomic_load(&W->st[ST_ENOMEM]);
        uint64_t end = now_ns() + ms * MSEC;
        struct cl_scan cs;

        while (now_ns() < end) {
                run_for(100);
                uint64_t hb = atomic_load(&W->heartbeat);
                CHECKF(now_ns() - hb < 2 * SEC, "the writer has not returned from a call for %.0f ms while "
                       "a reader is stopped: it blocks", ms_since(hb));
        }
        /* A sweep must not take a stopped reader's slot. */
        int r = stoa_sweep(H);
        CHECKF(r >= 0, "stoa_sweep: %d %s", r, stoa_strerror(r));
        cs = clients_of(reader);
        CHECKF(cs.found && cs.me.alive == 1, "after a sweep the stopped reader is %s",
               cs.found ? "reported dead" : "gone from the clients");
        *ret_ok = atomic_load(&W->st[ST_WRITE_OK]) - ok0;
        *ret_eagain = atomic_load(&W->st[ST_EAGAIN]) - ea0;
        *ret_enomem = atomic_load(&W->st[ST_ENOMEM]) - nm0;
}

/* After the reader resumed or died: the writer gets no -EAGAIN after grace_ms (it checks) and writes. */
static void writer_recovers(uint64_t grace_ms, uint64_t run_ms, const char *what)
{
        struct role *W = &S->role[0];
        uint64_t ok0;

        atomic_store(&S->eagain_ok_until, now_ns() + grace_ms * MSEC);
        run_for(grace_ms);
        ok0 = atomic_load(&W->st[ST_WRITE_OK]);
        run_for(run_ms);
        CHECKF(atomic_load(&W->st[ST_WRITE_OK]) - ok0 > 100, "%s: the writer made %llu writes in %llu ms",
               what, (unsigned long long)(atomic_load(&W->st[ST_WRITE_OK]) - ok0),
               (unsigned long long)run_ms);
}

static void set_stage(const char *what)
{
        snprintf(S->stage, sizeof(S->stage), "%s, %.0f ms into the case", what, ms_since(S->t0));
}

static void case_stopped(void)
{
        struct role *W;
        struct rng r;
        struct cl_scan cs;
        struct stoa_client me;
        uint64_t ok, ea, nm, ok0, t = now_ns();
        unsigned tries;
        bool caught;
        int st;

        case_open(&stopped_cfg);
        r.s = mix64(case_seed ^ 3);
        W = &S->role[0];
        atomic_store(&S->eagain_ok_until, 0);
        set_stage("the writer alone");
        start_role(0);
        run_for(500);

        /* A: a reader stopped inside a read section; then it resumes. */
        set_stage("a reader runs");
        start_role(1);
        run_for(300);
        caught = stop_in_section(pids[1], &r, 300, &tries, &me);
        /* It holds back the one item it is reading: the writer never gets -EAGAIN. */
        atomic_store(&S->eagain_ok_until, 0);
        churn_while_stopped(pids[1], 1500, &ok, &ea, &nm);
        cs = clients_of(pids[1]);
        fprintf(stderr, "  stopped: reader %s a read after %u tries (reading %#llx); while stopped "
                "1.5 s: %llu writes, %llu -EAGAIN, %llu -ENOMEM, slowest call %.1f ms, "
                "%u retired on its slot\n", caught ? "stopped inside" : "NOT caught in", tries,
                (unsigned long long)me.reading, (unsigned long long)ok, (unsigned long long)ea,
                (unsigned long long)nm,
                (double)atomic_load(&W->max_call) / 1e6, cs.me.retired);
        CHECKF(ok > 100, "the writer made %llu writes in 1.5 s while a reader was stopped",
               (unsigned long long)ok);
        CHECK(kill(pids[1], SIGCONT) == 0);
        set_stage("more than 1 s after the reader resumed");
        writer_recovers(1000, 1000, "after SIGCONT");
        atomic_store(&S->role[1].stop, 1);
        expect_exit0(pids[1], "the resumed reader");
        pids[1] = 0;

        /* B, C: a reader killed inside a read section, recovered by the writer alone, then by a sweep. */
        for (int sweep = 0; sweep < 2; sweep++) {
                set_stage("a reader runs");
                start_role(1);
                run_for(300);
                caught = stop_in_section(pids[1], &r, 300, &tries, &me);
                atomic_store(&S->eagain_ok_until, 0);
                churn_while_stopped(pids[1], 500, &ok, &ea, &nm);
                pid_t dead = pids[1];
                CHECK(kill(dead, SIGKILL) == 0);
                st = wait_pid(dead);
                CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
                pids[1] = 0;
                uint64_t t_kill = now_ns();
                set_stage(sweep ? "more than 1 s after a reader was killed and swept"
                                : "more than 3 s after a reader was killed (no sweep)");
                if (sweep) {
                        int n = stoa_sweep(H);  /* the writer may have recovered it first */
                        CHECKF(n >= 0, "stoa_sweep: %d %s", n, stoa_strerror(n));
                        swept += (uint64_t)n;
                        cs = clients_of(dead);
                        CHECKF(!cs.found && cs.dead == 0, "after the sweep the killed reader's slot is %s",
                               cs.found ? "still listed" : "gone, but others are dead");
                }
                writer_recovers(sweep ? 1000 : 3000, 1000,
                                sweep ? "after the kill and a sweep" : "after the kill, with no sweep");
                cs = clients_of(dead);
                fprintf(stderr, "  stopped: reader killed %s a read section (%u tries; %llu writes, %llu "
                        "-EAGAIN, %llu -ENOMEM while it was stopped), %s: the writer writes again, no -EAGAIN "
                        "after the grace (checked over %.0f ms); its slot %s\n", caught ? "inside" : "NOT caught in", tries, (unsigned long long)ok,
                        (unsigned long long)ea, (unsigned long long)nm, sweep ? "then a sweep" : "no sweep", ms_since(t_kill),
                        !cs.found ? "recovered" : cs.me.alive ? "alive?!" : "dead, not yet recovered");
        }
        atomic_store(&S->eagain_ok_until, 0);

        /* Last, D: views held by an idle process hold back nothing else (no -EAGAIN allowed). */
        set_stage("views held by an idle process");
        pid_t vh = harness_spawn(view_holder_child, NULL);
        while (!atomic_load(&S->vh_ready))
                run_for(5);
        cs = clients_of(vh);
        CHECKF(cs.found && cs.me.alive && cs.me.views == VH_N && cs.me.reading == 0,
               "the view holder: found %d alive %d views %u reading %#llx", cs.found, cs.me.alive,
               cs.me.views, (unsigned long long)cs.me.reading);
        ok0 = atomic_load(&W->st[ST_WRITE_OK]);
        run_for(1000);
        ok = atomic_load(&W->st[ST_WRITE_OK]) - ok0;
        CHECKF(ok > 100, "the writer made %llu writes in a second while %u views were held", (unsigned long long)ok,
               VH_N);
        atomic_store(&S->vh_go, 1);
        expect_exit0(vh, "the view holder");
        fprintf(stderr, "  stopped: %u views held by an idle reader for 1 s: %llu writes, no -EAGAIN, views "
                "intact\n", VH_N, (unsigned long long)ok);

        stop_roles();
        checkpoint("after the stopped reader");
        fprintf(stderr, "  stopped: %.1f s in all\n", ms_since(t) / 1000);
        print_ops();
        CHECKF(stat_sum(ST_ENOMEM) == 0, "while a reader was stopped the writer got -ENOMEM %llu times "
               "(and -EAGAIN %llu times): a stopped reader holding reclamation back must give -EAGAIN",
               (unsigned long long)stat_sum(ST_ENOMEM), (unsigned long long)stat_sum(ST_EAGAIN));
        mem_verdict();
        stoa_close(H);
}

/* ==== 4. idle clients and a full heap ===================================== */

/*
 * Clients that each stored a little of every size once and then sit idle
 * (the shape of a fleet of worker processes) must not leave the heap
 * unusable: a writer that comes later must be able to store its values,
 * evicting whatever it has to, and fill at least half of the heap with them.
 * Two idle clients, each one value of every size class (about 35 values,
 * 300 KiB), then 8000 sets of 3000 bytes over 4000 keys (12 MB: more than
 * the 10 MiB heap of a 16 MiB segment, STOA_SIZE_MIN, holds).
 */
static const struct mp_cfg idle_cfg = {
        .name = "idle", .seg_size = 16 * MiB,
        .nkeys = 4000, .nown = 4000, .nwriters = 1, .nroles = 1, .small_max = 4096, .evict = true,
};

static void idle_child(void *arg)
{
        unsigned id = (unsigned)(uintptr_t)arg, fails = 0, n = 0;
        uint8_t *v = xcalloc(32 * KiB);
        char key[KLEN + 1];
        struct stoa *c;

        snprintf(who, sizeof(who), "idle client %u", id);
        c = attach();
        for (size_t sz = 16; sz <= 32000; sz += sz / 4, n++) {
                snprintf(key, sizeof(key), "idl%u-%011zu", id, sz);
                fails += stoa_set(c, key, KLEN, v, sz, 0) != 0;
        }
        fprintf(stderr, "  idle: client %u stored %u of %u values, one of each size, and now sits idle\n", id,
                n - fails, n);
        atomic_fetch_add(&S->vh_ready, 1);
        for (;;)
                pause();
}

static void case_idle(void)
{
        uint8_t v[3000];
        char key[KLEN + 1];
        pid_t idle[2];
        struct stoa_info in;
        unsigned stored = 0, retried = 0;

        case_open(&idle_cfg);
        memset(v, 0x5a, sizeof(v));
        for (unsigned i = 0; i < 2; i++) {
                idle[i] = harness_spawn(idle_child, (void *)(uintptr_t)i);
                while (atomic_load(&S->vh_ready) < (int)i + 1)
                        run_for(5);
        }
        in = info_now();
        fprintf(stderr, "  idle: with both idle: %llu items, heap %llu used %llu free %llu\n",
                (unsigned long long)in.items, (unsigned long long)in.heap_bytes,
                (unsigned long long)in.used_bytes, (unsigned long long)in.free_bytes);
        for (unsigned i = 0; i < 8000; i++) {
                uint64_t first = 0;
                int r;
                key_name(key, i % C->nkeys);
                while ((r = stoa_set(H, key, KLEN, v, sizeof(v), 0)) == -ENOMEM || r == -EAGAIN) {
                        if (!first)
                                first = now_ns();
                        retried++;
                        if (now_ns() - first > SEC) {
                                dump_segment(H, "a set kept failing");
                                fail_at(__FILE__, __LINE__, "set #%u of 3000 bytes fails with %s for a second, "
                                        "%u stored before; two idle clients hold the heap", i, stoa_strerror(r),
                                        stored);
                        }
                        sleep_us(1000);
                }
                CHECKF(r == 0, "set #%u: %d %s", i, r, stoa_strerror(r));
                stored++;
        }
        in = info_now();
        fprintf(stderr, "  idle: a third client stored 8000 values of 3000 bytes (%u retries): %llu items "
                "(%llu bytes), %llu evictions, heap used %llu free %llu of %llu\n", retried,
                (unsigned long long)in.items, (unsigned long long)in.item_bytes,
                (unsigned long long)in.evictions, (unsigned long long)in.used_bytes,
                (unsigned long long)in.free_bytes, (unsigned long long)in.heap_bytes);
        if (in.item_bytes < in.heap_bytes / 2)
                dump_segment(H, "the heap was mostly unusable");
        CHECKF(in.item_bytes >= in.heap_bytes / 2, "a writer can keep only %llu bytes of items in a %llu-byte "
               "heap: the rest is held by two idle clients that stored about 300 KiB between them",
               (unsigned long long)in.item_bytes, (unsigned long long)in.heap_bytes);
        for (unsigned i = 0; i < 2; i++) {
                kill(idle[i], SIGKILL);
                wait_pid(idle[i]);
        }
        CHECK(stoa_sweep(H) >= 0);
        check_clean("after the idle clients");
        mem_verdict();
        stoa_close(H);
}

/* ==== namespaces dropped under a writer ===================================== */

#define NS_NAME         "churn"
#define NS_KEYS         128u

/*
 * The writer's record and the dropper's count, shared. done_seq is the last
 * seq whose set returned 0: a dropper that loads it before a drop knows that
 * every value with a seq up to it was written before the drop began, so no
 * read after the drop may return one (a stale value). The writer is the
 * only writer of its keys, so its own read right after a set must return
 * that very value, or nothing (a drop came between): anything else is stale.
 */
struct ns_state {
        _Atomic uint64_t done_seq;
        _Atomic int stop;
        _Atomic int pause, paused;              /* the writer between calls, for an exact check */
        _Atomic uint64_t drops, flushes, writes, lost, redone;
};
static struct ns_state *NSS;

static struct stoa *ns_attach(const char *ns)
{
        struct stoa_options o = { .flags = STOA_OPEN_NOCREATE, .ns = ns };
        struct stoa *c;

        CHECK_OK(stoa_open(&c, SEG_NAME, &o));
        return c;
}

/* A value of the churn namespace: intact, of the key it was read under, not from the future. */
static struct vinfo ns_verify(const void *val, size_t len, uint32_t key, const char *what)
{
        struct vinfo vi = { 0 };
        const char *bad = val_check(val, len, &vi);

        CHECKF(!bad, "%s: key %u: a torn value (%s)", what, key, bad);
        CHECKF(vi.key == key && vi.writer == 0, "%s: key %u holds the value of key %u writer %u",
               what, key, vi.key, vi.writer);
        CHECKF(vi.seq <= atomic_load(&NSS->done_seq) + 1, "%s: key %u: seq %llu from the future",
               what, key, (unsigned long long)vi.seq);
        return vi;
}

static void ns_writer(void *arg)
{
        struct stoa *c = ns_attach(NS_NAME);
        struct rng r = { mix64(case_seed ^ 0x5eed) };
        uint8_t *v = xmalloc(4096), *buf = xmalloc(4096);
        char key[KLEN + 1];
        uint64_t seq = atomic_load(&NSS->done_seq);

        (void)arg;
        snprintf(who, sizeof(who), "ns writer");
        while (!atomic_load(&NSS->stop)) {
                if (atomic_load(&NSS->pause)) {
                        atomic_store(&NSS->paused, 1);
                        while (atomic_load(&NSS->pause) && !atomic_load(&NSS->stop))
                                sleep_us(100);
                        atomic_store(&NSS->paused, 0);
                        continue;
                }
                uint32_t k = (uint32_t)(++seq % NS_KEYS);
                size_t len = 8 + (size_t)rnd_below(&r, 2000), vl = 0;
                key_name(key, k);
                val_fill(v, len, k, 0, seq);
                int rc;
                while ((rc = stoa_set(c, key, KLEN, v, len, 0)) == -EAGAIN)
                        sleep_us(200);
                CHECKF(rc == 0, "set key %u: %d %s", k, rc, stoa_strerror(rc));
                atomic_store(&NSS->done_seq, seq);
                atomic_fetch_add(&NSS->writes, 1);
                rc = stoa_get(c, key, KLEN, buf, 4096, &vl);
                CHECKF(rc == 0 || rc == -ENOENT, "get key %u: %d %s", k, rc, stoa_strerror(rc));
                if (rc == 0) {
                        struct vinfo vi = ns_verify(buf, vl, k, "read back");
                        CHECKF(vi.seq == seq, "read back key %u: seq %llu, just wrote %llu (stale)", k,
                               (unsigned long long)vi.seq, (unsigned long long)seq);
                } else {
                        atomic_fetch_add(&NSS->lost, 1);        /* a drop came between */
                }
                /* Another key: intact and its own, if there. */
                uint32_t o = (uint32_t)rnd_below(&r, NS_KEYS);
                key_name(key, o);
                rc = stoa_get(c, key, KLEN, buf, 4096, &vl);
                CHECKF(rc == 0 || rc == -ENOENT, "get key %u: %d %s", o, rc, stoa_strerror(rc));
                if (rc == 0)
                        ns_verify(buf, vl, o, "read");
        }
        stoa_close(c);
        free(v);
        free(buf);
}

/* After a drop or flush that began with done_seq at s0, no value up to s0 may be read. */
static void ns_no_stale(struct stoa *c, uint64_t s0, const char *what)
{
        uint8_t buf[4096];
        char key[KLEN + 1];
        size_t vl;

        for (uint32_t k = 0; k < NS_KEYS; k++) {
                key_name(key, k);
                int rc = stoa_get(c, key, KLEN, buf, sizeof(buf), &vl);
                CHECKF(rc == 0 || rc == -ENOENT, "%s: get key %u: %d %s", what, k, rc, stoa_strerror(rc));
                if (rc < 0)
                        continue;
                struct vinfo vi = ns_verify(buf, vl, k, what);
                CHECKF(vi.seq > s0, "%s: key %u holds seq %llu, written before it began (done %llu): "
                       "a stale value", what, k, (unsigned long long)vi.seq, (unsigned long long)s0);
        }
}

static void ns_dropper(void *arg)
{
        struct stoa *c = ns_attach(NS_NAME);
        struct rng r = { mix64(case_seed ^ (uint64_t)getpid()) };
        bool kills = arg != NULL;

        snprintf(who, sizeof(who), "ns dropper");
        /* Created before the first drop (the writer may not have written yet). */
        CHECK_OK(stoa_set(c, "marker", 6, "m", 1, 0));
        while (!atomic_load(&NSS->stop)) {
                uint64_t s0 = atomic_load(&NSS->done_seq);
                bool flush = rnd_below(&r, 8) == 0;
                int rc;
                while ((rc = flush ? stoa_flush(c) : stoa_ns_drop(c, NS_NAME)) == -EAGAIN)
                        sleep_us(200);
                /* A drop may find the name gone: the case process redid a killed dropper's drop. */
                CHECKF(rc == 0 || (rc == -ENOENT && !flush && kills), "%s: %d %s",
                       flush ? "flush" : "drop", rc, stoa_strerror(rc));
                atomic_fetch_add(flush ? &NSS->flushes : &NSS->drops, 1);
                ns_no_stale(c, s0, flush ? "after a flush" : "after a drop");
                /* Recreate it (the writer may have first). */
                CHECK_OK(stoa_set(c, "marker", 6, "m", 1, 0));
                sleep_us(rnd_below(&r, 2000));
        }
        stoa_close(c);
}

static void case_ns_run(bool kills)
{
        static const struct mp_cfg cfg = {
                .name = "ns_churn", .seg_size = 32 * MiB, .nkeys = NS_KEYS, .nwriters = 1, .nroles = 1,
        };
        struct rng r;

        case_open(&cfg);
        r.s = mix64(case_seed);
        NSS = shared_map(sizeof(*NSS));
        pid_t w = harness_spawn(ns_writer, NULL);
        pid_t d = harness_spawn(ns_dropper, kills ? (void *)1 : NULL);
        uint64_t end = now_ns() + 3 * SEC * stress_scale(), kills_done = 0;
        while (now_ns() < end) {
                check_box();
                if (!kills) {
                        sleep_us(20000);
                        continue;
                }
                /* Kill the dropper at a random point (often inside a drop's walk), then redo its drop. */
                sleep_us(rnd_below(&r, 4000));
                kill(d, SIGKILL);
                wait_pid(d);
                kills_done++;
                /* The check is exact on a quiet segment: the writer waits between two calls. */
                atomic_store(&NSS->pause, 1);
                while (!atomic_load(&NSS->paused))
                        sleep_us(100);
                check_clean("after a dropper was killed");
                int rc;
                while ((rc = stoa_ns_drop(H, NS_NAME)) == -EAGAIN)
                        sleep_us(200);
                CHECKF(rc == 0 || rc == -ENOENT, "redo of the drop: %d %s", rc, stoa_strerror(rc));
                atomic_fetch_add(&NSS->redone, 1);
                check_clean("after the drop was redone");
                atomic_store(&NSS->pause, 0);
                d = harness_spawn(ns_dropper, (void *)1);
        }
        atomic_store(&NSS->stop, 1);
        expect_exit0(w, "the ns writer");
        expect_exit0(d, "the ns dropper");
        check_box();
        fprintf(stderr, "  %s: %llu writes (%llu read back as gone), %llu drops, %llu flushes, %llu "
                "droppers killed and their drops redone\n", kills ? "ns_kill" : "ns_churn",
                (unsigned long long)NSS->writes, (unsigned long long)NSS->lost,
                (unsigned long long)NSS->drops, (unsigned long long)NSS->flushes,
                (unsigned long long)kills_done);
        /*
         * Enough drops ran: with kills, the redone ones count (a dropper killed
         * within 4 ms of its start seldom finishes one on a loaded machine).
         */
        uint64_t dropped = NSS->drops + NSS->flushes + atomic_load(&NSS->redone);
        CHECKF(dropped > 10, "only %llu drops and flushes in the run", (unsigned long long)dropped);
        CHECK_OK(stoa_sweep(H));
        check_clean("after the churn");

        /* Every key gone (the namespace dropped, the segment flushed): all memory back but its name's. */
        struct stoa_info in;
        int rc = stoa_ns_drop(H, NS_NAME);
        CHECKF(rc == 0 || rc == -ENOENT, "the last drop: %d %s", rc, stoa_strerror(rc));
        CHECK_OK(stoa_flush(H));
        bool back = settle_used(baseline_used, baseline_used + 64, &in);
        CHECKF(in.items == 0, "%llu items after a drop and a flush", (unsigned long long)in.items);
        CHECKF(back, "%llu bytes of heap in use with every key gone, %llu at creation (the name \""
               NS_NAME "\" is one small block)", (unsigned long long)in.used_bytes,
               (unsigned long long)baseline_used);
        check_clean("with every key gone");
        mem_verdict();
        stoa_close(H);
}

static void case_ns_churn(void)
{
        case_ns_run(false);
}

static void case_ns_kill(void)
{
        case_ns_run(true);
}

/* ==== runner ================================================================ */

/* Run one case in its own process, on its own $STOA_DIR. Exit status 77: skipped. */
static void run_case(void (*fn)(void))
{
        harness_run_case("cache-mp", CASE_TIMEOUT_S, fn);
}

static void test_race(void **state) { (void)state; run_case(case_race); }
static void test_crash_evict(void **state) { (void)state; run_case(case_crash_evict); }
static void test_crash_noevict(void **state) { (void)state; run_case(case_crash_noevict); }
static void test_stopped(void **state) { (void)state; run_case(case_stopped); }
static void test_idle(void **state) { (void)state; run_case(case_idle); }
static void test_ns_churn(void **state) { (void)state; run_case(case_ns_churn); }
static void test_ns_kill(void **state) { (void)state; run_case(case_ns_kill); }

/* An optional argument runs only the tests whose names match it (cmocka's filter). */
int main(int argc, char **argv)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_race),
                cmocka_unit_test(test_crash_evict),
                cmocka_unit_test(test_crash_noevict),
                cmocka_unit_test(test_stopped),
                cmocka_unit_test(test_idle),
                cmocka_unit_test(test_ns_churn),
                cmocka_unit_test(test_ns_kill),
        };

        if (argc > 1)
                cmocka_set_test_filter(argv[1]);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
