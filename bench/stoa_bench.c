/*
 * bench/stoa_bench.c: the cache's speed beside Redis, LMDB and this machine's
 * own memory latency, all measured in one run.
 *
 * Figures are printed, never judged: the exit status says only whether the
 * program could run. The issue's targets are printed beside the figures.
 *
 * Key sets. A set is a number of keys preloaded into a fresh segment:
 *   cached  8192 keys: a working set that fits in this machine's caches
 *   main    --keys (1M): the set Redis and LMDB are measured on as well
 *   1GiB    (full run only) enough keys that the items and the index lines
 *           they touch make ~1 GiB, for the "two dependent DRAM loads" target.
 *           The segment is 2 GiB: the index has one 7-entry bucket per KiB of
 *           segment, and 1.5 GiB (1M buckets) could not index the ~7.5M keys of
 *           64 B values that fill 1 GiB without conflicts evicting many.
 * Key i is --klen binary bytes ending in fmix64(i ^ seed) then i (a bijection:
 * keys are distinct and spread over the key space); its value is i then a
 * fixed pattern, so every GET checks that it got key i's value.
 *
 * Cases. Each runs in freshly forked workers (--procs), pinned one per CPU,
 * each with its own stoa handle / Redis connection / LMDB env, started
 * together through a pipe barrier: a warm-up, then --seconds measured. They
 * report through a shared mapping. Workloads: GET, SET, 95/5 and 50/50
 * GET/SET mixes, batched GET (stoa_mget; Redis pipelined; LMDB several GETs
 * in one read txn), and GET while another process SETs. Keys are drawn
 * uniformly, or from a zipfian of theta 0.99 (YCSB's generator, after Gray et
 * al. 1994) precomputed into a table so that drawing costs the same.
 *
 * Limits. In the same run a child chases pointers through a random cyclic
 * permutation of 64 B lines, over the working set of each key set and over
 * 1 GiB, with 4 KiB pages (MADV_NOHUGEPAGE) and with MAP_HUGETLB when the host
 * has hugepages: one chain is a dependent load, 16 interleaved chains give
 * the cost of an independent load. stoa's figures are also printed as
 * multiples of the limit for the segment's own page size.
 *
 * Noise. The machine is shared. Each worker also reads its own CPU time
 * (CLOCK_THREAD_CPUTIME_ID), so per-core costs ("cpu ns") do not count time it
 * spent descheduled, and the limits are CPU time too, each the median of five
 * runs; every case prints how much CPU other processes took meanwhile ("oth%")
 * and how much of the wall time the workers ran ("cpu%"). Ratios between
 * figures of one run are what to compare.
 *
 * Cleanup. Every file lives in one mkdtemp directory (STOA_DIR for the
 * segments, the LMDB env, redis' socket and log). A guardian process, forked
 * first, removes it when this process exits however it exits; redis-server
 * and the workers get PR_SET_PDEATHSIG, so they die with this process.
 *
 * One file because the build declares one source; by responsibility it reads
 * top to bottom: timer and histogram, keys and zipf, the three systems'
 * operations, workers, limits, key sets, reports.
 */
#include "bench/spsc.h"
#include "tools/cli.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif
#ifdef HAVE_LMDB
#include <lmdb.h>
#define LMDB_FLAGS      (MDB_NOSYNC | MDB_WRITEMAP | MDB_NOMETASYNC)
#define LMDB_FLAGS_STR  "MDB_NOSYNC|MDB_WRITEMAP|MDB_NOMETASYNC"
#endif

#define MAX_PROCS     16
#define MAX_BATCH     64
#define MAX_LIMS      16
#define MAX_RESULTS   160
#define STEP_CHECK    16                /* ops between two deadline checks */
#define SAMPLE_MASK   15u               /* time every 16th op (stoa, LMDB) */
#define ZTAB_BITS     20                /* 1M precomputed zipf draws */
#define ZIPF_THETA    0.99
#define KEY_SEED      0x5eedb0a7c0ffee11ull
#define CACHED_KEYS   8192u
#define CACHED_SIZE   (64ull << 20)
#define BIG_SIZE      (2048ull << 20)
#define BIG_WS        (1024ull << 20)
#define GIB           (1ull << 30)
#define VERIFY_N      1000u
#define NCHAINS       16                /* independent chains of the limit */
#define LIM_REPS      5                 /* limits: the median of this many */
#define HSUB_BITS     5                 /* histogram: 32 sub-buckets per octave, <3 % error */
#define HSUB          (1u << HSUB_BITS)
#define HIST_N        ((64u - HSUB_BITS + 1u) * HSUB)
#define MIB(x)        ((double)(x) / 1048576.0)

__extension__ typedef unsigned __int128 u128;

/* ---- timer ---------------------------------------------------------------- */

/*
 * Latency samples use the TSC (constant and invariant on every x86 this runs
 * on; calibrated against CLOCK_MONOTONIC at start). lfence keeps the timed op
 * from starting before the first read; rdtscp waits for it to finish.
 */
static double tsc_per_ns = 1.0;

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define HAVE_TSC 1
static inline uint64_t tick_now(void) { return __rdtsc(); }
static inline uint64_t tick_start(void)
{
        _mm_lfence();
        uint64_t t = __rdtsc();
        _mm_lfence();
        return t;
}
static inline uint64_t tick_end(void)
{
        unsigned aux;
        uint64_t t = __rdtscp(&aux);
        _mm_lfence();
        return t;
}
#else
static inline uint64_t tick_now(void) { return now_ns(); }
static inline uint64_t tick_start(void) { return now_ns(); }
static inline uint64_t tick_end(void) { return now_ns(); }
#endif

/*
 * This thread's CPU time. The machine is shared: time a worker spends
 * descheduled inflates wall-clock figures but not this one, so per-core costs
 * and the limits are also reported over CPU time.
 */
static uint64_t cpu_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

        return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;

        return x < y ? -1 : x > y;
}

/* Calibrates the TSC; returns the median cost of one timed empty interval, in ns. */
static double timer_calibrate(void)
{
        static uint64_t d[1001];

#ifdef HAVE_TSC
        uint64_t n0 = now_ns(), c0 = tick_now(), n1, c1;
        do {
                cpu_relax();
                n1 = now_ns();
        } while (n1 - n0 < 100000000ull);
        c1 = tick_now();
        tsc_per_ns = (double)(c1 - c0) / (double)(n1 - n0);
#endif
        for (unsigned i = 0; i < 1001; i++) {
                uint64_t t0 = tick_start();
                d[i] = tick_end() - t0;
        }
        qsort(d, 1001, sizeof(d[0]), cmp_u64);
        return (double)d[500] / tsc_per_ns;
}

/* ---- latency histogram: log-linear, in ticks -------------------------------- */

static inline unsigned hist_idx(uint64_t v)
{
        if (v < HSUB)
                return (unsigned)v;
        unsigned e = 63u - (unsigned)__builtin_clzll(v);
        return ((e - HSUB_BITS + 1u) << HSUB_BITS) | (unsigned)((v >> (e - HSUB_BITS)) & (HSUB - 1));
}

/* The middle of bucket i, in ticks. */
static double hist_val(unsigned i)
{
        if (i < HSUB)
                return i;
        unsigned e = (i >> HSUB_BITS) + HSUB_BITS - 1u, sub = i & (HSUB - 1);
        double lo = (double)((uint64_t)(HSUB + sub) << (e - HSUB_BITS));
        return lo + (double)(1ull << (e - HSUB_BITS)) / 2;
}

/* The p-quantile in ns, 0 if there are no samples. */
static double hist_pct(const uint64_t *h, double p)
{
        uint64_t total = 0, cum = 0;

        for (unsigned i = 0; i < HIST_N; i++)
                total += h[i];
        if (!total)
                return 0;
        uint64_t want = (uint64_t)ceil(p * (double)total);
        for (unsigned i = 0; i < HIST_N; i++) {
                cum += h[i];
                if (cum >= want)
                        return hist_val(i) / tsc_per_ns;
        }
        return 0;
}

/* ---- random numbers, keys, values ------------------------------------------ */

static inline uint64_t wyrand(uint64_t *s)
{
        *s += 0xa0761d6478bd642full;
        u128 t = (u128)*s * (*s ^ 0xe7037ed1a0b428dbull);
        return (uint64_t)(t >> 64) ^ (uint64_t)t;
}

/* murmur3's finaliser: a bijection of 64-bit words. */
static inline uint64_t fmix64(uint64_t k)
{
        k ^= k >> 33;
        k *= 0xff51afd7ed558ccdull;
        k ^= k >> 33;
        k *= 0xc4ceb9fe1a85ec53ull;
        k ^= k >> 33;
        return k;
}

/* Key i; bytes before the last 16 (klen > 16) are left as key_init set them. */
static volatile uint64_t chase_sink_u;

static inline void make_key(uint8_t *k, uint32_t klen, uint64_t i)
{
        uint64_t a = fmix64(i ^ KEY_SEED);

        if (klen >= 16) {
                memcpy(k + klen - 16, &a, 8);
                memcpy(k + klen - 8, &i, 8);
        } else {
                memcpy(k, &a, 8);
                memcpy(k + 8, &i, klen - 8);
        }
}

static void key_init(uint8_t *k, uint32_t klen)
{
        memset(k, 'k', klen);
}

static void val_init(uint8_t *v, uint32_t vlen)
{
        for (uint32_t j = 0; j < vlen; j++)
                v[j] = (uint8_t)('a' + j % 26);
}

static inline void make_val(uint8_t *v, uint32_t vlen, uint64_t i)
{
        memcpy(v, &i, vlen < 8 ? vlen : 8);
}

static inline bool val_ok(const void *v, size_t got, uint32_t vlen, uint64_t i)
{
        return got == vlen && memcmp(v, &i, vlen < 8 ? vlen : 8) == 0;
}

/*
 * What the loop around a GET costs without the GET: a uniform draw, making
 * the key, checking an 8-byte value. CPU ns per op.
 */
static double harness_ns(uint32_t klen, uint32_t vlen, uint64_t nkeys)
{
        uint8_t key[1024], val[64];
        uint64_t rng = KEY_SEED, bad = 0, c0 = cpu_ns();
        const unsigned n = 1u << 22;

        key_init(key, klen);
        val_init(val, vlen < 64 ? vlen : 64);
        for (unsigned k = 0; k < n; k++) {
                uint64_t i = (uint64_t)(((u128)wyrand(&rng) * nkeys) >> 64);
                make_key(key, klen, i);
                make_val(val, vlen < 64 ? vlen : 64, i);
                __asm__ __volatile__("" : : "r"(key), "r"(val) : "memory");
                bad += !val_ok(val, vlen, vlen, i);
        }
        chase_sink_u = bad;
        return (double)(cpu_ns() - c0) / n;
}

/* ---- zipf: YCSB's ZipfianGenerator (Gray et al., "Quickly generating
 * billion-record synthetic databases", SIGMOD 1994) ------------------------- */

struct zipf {
        double n, alpha, zetan, eta, two;
};

static void zipf_init(struct zipf *z, uint64_t n, double theta)
{
        double zeta2 = 1.0 + pow(0.5, theta);

        z->zetan = 0;
        for (uint64_t i = n; i >= 1; i--)       /* small terms first, for accuracy */
                z->zetan += pow((double)i, -theta);
        z->n = (double)n;
        z->alpha = 1.0 / (1.0 - theta);
        z->eta = (1.0 - pow(2.0 / (double)n, 1.0 - theta)) / (1.0 - zeta2 / z->zetan);
        z->two = zeta2;
}

static uint64_t zipf_next(const struct zipf *z, double u)
{
        double uz = u * z->zetan;

        if (uz < 1.0)
                return 0;
        if (uz < z->two)
                return 1;
        uint64_t r = (uint64_t)(z->n * pow(z->eta * u - z->eta + 1.0, z->alpha));
        return r >= (uint64_t)z->n ? (uint64_t)z->n - 1 : r;
}

/* ---- cases, results ---------------------------------------------------------- */

enum sys { SYS_STOA, SYS_REDIS, SYS_REDISP, SYS_LMDB, NSYS };
static const char *const sys_name[NSYS] = { "stoa", "redis", "redis-pipe", "lmdb" };

enum wl { WL_GET, WL_SET, WL_M95, WL_M50, WL_BATCH, WL_GETW, NWL };
static const char *const wl_name[NWL] = { "GET", "SET", "95/5", "50/50", "batch GET", "GET+writer" };
static const int wl_getpct[NWL] = { 100, 0, 95, 50, 100, 100 };

enum dist { D_UNIF, D_ZIPF };
static const char *const dist_name[2] = { "unif", "zipf" };

struct result {
        int set;
        enum sys sys;
        enum wl wl;
        enum dist dist;
        int nproc;              /* processes forked (GET+writer: 1 reader + 1 writer) */
        bool ok;
        char msg[200];
        double mops, mops_proc; /* summed over the readers; per reader */
        double ns_op;           /* per op per process, wall clock; batches: per key */
        double ns_cpu;          /* the same over the workers' own CPU time */
        double cpu_pct;         /* workers' CPU time over their wall time */
        double p50, p99, p999;  /* per op; batches and pipelines: per call */
        double get_p99, set_p99;
        uint64_t gets, hits, misses, bad, sets, errors;
        double w_mops;          /* GET+writer: the writer's SETs */
        double other_pct;       /* CPU other processes used meanwhile, % of all CPUs */
};

/* What a worker reports; one per worker in a shared mapping. */
struct wres {
        uint64_t gets, hits, misses, bad, sets, errors, calls;
        uint64_t t0, t1;        /* wall clock, ns */
        uint64_t c0, c1;        /* this process's CPU time, ns */
        char msg[160];
        uint64_t hist[2][HIST_N];       /* [0] GET or batch call, [1] SET, in ticks */
} __attribute__((aligned(64)));

/* One measured limit. */
struct lim {
        uint64_t ws;            /* bytes chased */
        bool huge;              /* MAP_HUGETLB 2 MiB pages, else 4 KiB */
        bool ok;
        double dep_ns, indep_ns;        /* medians of LIM_REPS */
        double dep_min, indep_min;
        double cpu_pct;                 /* CPU time of the chases over their wall time */
        char msg[120];
};

struct ctl {
        struct wres w[MAX_PROCS];
        struct lim lim[4];      /* a limits child's answers */
};

/* ---- the run ---------------------------------------------------------------- */

struct opts {
        uint64_t keys, big_keys, size;
        uint32_t klen, vlen, batch, depth;
        double seconds, warm, lim_s;
        int procs[8], nprocs;
        bool quick, json, pin, big, redis, lmdb;
        uint32_t huge_flags;
        const char *dir, *redis_bin;
};

struct kset {
        const char *tag, *name;
        uint64_t keys, size;
        bool ok;
        char msg[200];
        struct stoa *h;         /* the parent's handle, for info, verify, check */
        struct stoa_info info;
        uint64_t page;          /* segment's page size, from smaps */
        char page_desc[160];
        uint64_t ws;            /* working set estimate */
        uint32_t *ztab;
        double ztop1;           /* share of draws on the hottest 1 % of keys */
        double zetan;           /* the zipf's normalisation */
        uint64_t hot_n, hot_missing;    /* hottest ranks checked after preload; absent */
        double hot_share;       /* share of zipf draws that fall on those absent keys */
        double load_s;
        int load_procs;
        unsigned verified, verify_n;
        int check;              /* stoa_check: problems, or negative error; INT_MIN not run */
        double check_s;
        char check_msg[200];
        int lim4k, limhuge;     /* indexes in bench.lims, -1 none */
};

struct cpu_use {
        double busy_s, steal_s, mine_s, wall_s;
};

struct bench {
        struct opts o;
        int ncpu;
        char dir[200], lmdb_dir[256], redis_sock[256], redis_log[256];
        int guard_fd;
        pid_t redis_pid;
        char redis_note[200], lmdb_note[200];
        char redis_info[400], lmdb_info[400];
        uint64_t lmdb_map;
        double timer_ovh, harness;
        struct ctl *ctl;
        struct kset sets[3];
        int nsets, main_set, big_set;
        struct lim lims[MAX_LIMS];
        int nlims;
        int lim_gib4k, lim_gibhuge;
        char huge_note[120];
        struct result res[MAX_RESULTS];
        int nres;
        struct cpu_use cpu0;
        double others_s, steal_s, wall_s;
        bool tty;
};

/* ---- workers ------------------------------------------------------------------ */

struct counts {
        uint64_t gets, hits, misses, bad, sets, errors, calls;
};

struct worker {
        const struct bench *B;
        const struct kset *ks;
        enum sys sys;
        bool batch;
        int get_pct;
        uint64_t get_thr;
        uint64_t rng, nkeys;
        const uint32_t *ztab;
        uint64_t zpos;
        uint32_t klen, vlen, nb;        /* nb: keys per batch or pipeline */
        size_t cap;
        uint8_t *key, *val, *buf;       /* key: nb keys; buf: nb values */
        uint64_t idx[MAX_BATCH];
        bool isget[MAX_BATCH];
        struct stoa_getreq reqs[MAX_BATCH];
        struct stoa *st;
#ifdef HAVE_HIREDIS
        redisContext *rc;
#endif
#ifdef HAVE_LMDB
        MDB_env *env;
        MDB_dbi dbi;
        MDB_txn *rtxn;
#endif
        uint64_t smask;
        bool stop;              /* a broken connection: no point going on */
        struct counts n;
        struct wres *r;
};

__attribute__((format(printf, 2, 3)))
static void worker_err(struct worker *w, const char *fmt, ...)
{
        va_list ap;

        w->n.errors++;
        if (w->r->msg[0])
                return;         /* keep the first */
        va_start(ap, fmt);
        vsnprintf(w->r->msg, sizeof(w->r->msg), fmt, ap);
        va_end(ap);
}

static inline uint64_t draw(struct worker *w)
{
        if (w->ztab)
                return w->ztab[w->zpos++ & ((1u << ZTAB_BITS) - 1)];
        return (uint64_t)(((u128)wyrand(&w->rng) * w->nkeys) >> 64);
}

static inline bool draw_get(struct worker *w)
{
        if (w->get_pct == 100)
                return true;
        return (wyrand(&w->rng) & 0xffffffffu) < w->get_thr;
}

static inline void got(struct worker *w, const void *v, size_t vlen, uint64_t i)
{
        w->n.hits++;
        if (!val_ok(v, vlen, w->vlen, i))
                w->n.bad++;
}

/* stoa */

static void stoa_get1(struct worker *w, uint64_t i)
{
        size_t vl = 0;
        int r = stoa_get(w->st, w->key, w->klen, w->buf, w->cap, &vl);

        w->n.gets++;
        if (r == 0)
                got(w, w->buf, vl, i);
        else if (r == -ENOENT)
                w->n.misses++;
        else
                worker_err(w, "stoa_get: %s (%d)", stoa_strerror(r), r);
}

static void stoa_set1(struct worker *w)
{
        int r = stoa_set(w->st, w->key, w->klen, w->val, w->vlen, 0);

        w->n.sets++;
        if (r)
                worker_err(w, "stoa_set: %s (%d)", stoa_strerror(r), r);
}

static void stoa_mget1(struct worker *w)
{
        uint32_t hits = 0;

        for (uint32_t j = 0; j < w->nb; j++)
                w->reqs[j].err = 1;     /* the library must overwrite it */
        int r = stoa_mget(w->st, w->reqs, w->nb);
        w->n.gets += w->nb;
        w->n.calls++;
        if (r < 0) {
                worker_err(w, "stoa_mget: %s (%d)", stoa_strerror(r), r);
                return;
        }
        for (uint32_t j = 0; j < w->nb; j++) {
                const struct stoa_getreq *q = &w->reqs[j];
                if (q->err == 0) {
                        hits++;
                        got(w, q->buf, q->vlen, w->idx[j]);
                } else if (q->err == -ENOENT) {
                        w->n.misses++;
                } else {
                        worker_err(w, "stoa_mget: key %u: err %d (%s)", j, q->err,
                                   stoa_strerror(q->err));
                }
        }
        if ((uint32_t)r != hits)
                worker_err(w, "stoa_mget returned %d but %u requests have err 0", r, hits);
}

/* Redis, over the unix socket */

#ifdef HAVE_HIREDIS
static void redis_reply(struct worker *w, redisReply *rep, bool get, uint64_t i)
{
        if (!rep) {
                worker_err(w, "redis: %s", w->rc->errstr[0] ? w->rc->errstr : "no reply");
                w->stop = true;
                return;
        }
        if (get) {
                w->n.gets++;
                if (rep->type == REDIS_REPLY_STRING)
                        got(w, rep->str, (size_t)rep->len, i);
                else if (rep->type == REDIS_REPLY_NIL)
                        w->n.misses++;
                else
                        worker_err(w, "redis GET: reply type %d %s", rep->type,
                                   rep->type == REDIS_REPLY_ERROR ? rep->str : "");
        } else {
                w->n.sets++;
                if (rep->type != REDIS_REPLY_STATUS || strcmp(rep->str, "OK") != 0)
                        worker_err(w, "redis SET: reply type %d %s", rep->type,
                                   rep->type == REDIS_REPLY_ERROR ? rep->str : "");
        }
        freeReplyObject(rep);
}

static int redis_append(struct worker *w, bool get)
{
        const char *argv[3] = { get ? "GET" : "SET", (const char *)w->key, (const char *)w->val };
        size_t len[3] = { 3, w->klen, w->vlen };

        return redisAppendCommandArgv(w->rc, get ? 2 : 3, argv, len);
}

static void redis_op1(struct worker *w, bool get, uint64_t i)
{
        const char *argv[3] = { get ? "GET" : "SET", (const char *)w->key, (const char *)w->val };
        size_t len[3] = { 3, w->klen, w->vlen };

        redis_reply(w, redisCommandArgv(w->rc, get ? 2 : 3, argv, len), get, i);
}

/* One pipeline of nb commands, mixed as the workload says; timed whole. */
static void redis_pipe1(struct worker *w, bool sample)
{
        uint64_t t0 = sample ? tick_start() : 0;

        for (uint32_t j = 0; j < w->nb; j++) {
                w->idx[j] = draw(w);
                w->isget[j] = draw_get(w);
                make_key(w->key, w->klen, w->idx[j]);
                if (!w->isget[j])
                        make_val(w->val, w->vlen, w->idx[j]);
                if (redis_append(w, w->isget[j]) != REDIS_OK) {
                        worker_err(w, "redis: %s", w->rc->errstr);
                        w->stop = true;
                        return;
                }
        }
        for (uint32_t j = 0; j < w->nb && !w->stop; j++) {
                void *rep = NULL;
                if (redisGetReply(w->rc, &rep) != REDIS_OK)
                        rep = NULL;
                redis_reply(w, rep, w->isget[j], w->idx[j]);
        }
        w->n.calls++;
        if (sample)
                w->r->hist[0][hist_idx(tick_end() - t0)]++;
}
#endif

/* LMDB: a read txn per GET (reset/renew), a write txn per SET */

#ifdef HAVE_LMDB
static void lmdb_get_in(struct worker *w, uint8_t *key, uint8_t *buf, uint64_t i)
{
        MDB_val k = { .mv_size = w->klen, .mv_data = key }, v;
        int r = mdb_get(w->rtxn, w->dbi, &k, &v);

        w->n.gets++;
        if (r == 0) {
                memcpy(buf, v.mv_data, v.mv_size < w->cap ? v.mv_size : w->cap);
                got(w, buf, v.mv_size, i);
        } else if (r == MDB_NOTFOUND) {
                w->n.misses++;
        } else {
                worker_err(w, "mdb_get: %s", mdb_strerror(r));
        }
}

static void lmdb_get1(struct worker *w, uint64_t i)
{
        int r = mdb_txn_renew(w->rtxn);

        if (r) {
                worker_err(w, "mdb_txn_renew: %s", mdb_strerror(r));
                w->stop = true;
                return;
        }
        lmdb_get_in(w, w->key, w->buf, i);
        mdb_txn_reset(w->rtxn);
}

/* nb GETs in one read txn. */
static void lmdb_batch1(struct worker *w)
{
        int r = mdb_txn_renew(w->rtxn);

        if (r) {
                worker_err(w, "mdb_txn_renew: %s", mdb_strerror(r));
                w->stop = true;
                return;
        }
        for (uint32_t j = 0; j < w->nb; j++)
                lmdb_get_in(w, w->key + (size_t)j * w->klen, w->buf + j * w->cap, w->idx[j]);
        mdb_txn_reset(w->rtxn);
        w->n.calls++;
}

static void lmdb_set1(struct worker *w)
{
        MDB_val k = { .mv_size = w->klen, .mv_data = w->key };
        MDB_val v = { .mv_size = w->vlen, .mv_data = w->val };
        MDB_txn *t;
        int r = mdb_txn_begin(w->env, NULL, 0, &t);

        w->n.sets++;
        if (r == 0) {
                r = mdb_put(t, w->dbi, &k, &v, 0);
                if (r == 0)
                        r = mdb_txn_commit(t);
                else
                        mdb_txn_abort(t);
        }
        if (r)
                worker_err(w, "lmdb SET: %s", mdb_strerror(r));
}
#endif

/* One op of a GET/SET workload (or one pipeline, or one batch). */
static inline void step(struct worker *w, bool sample)
{
#ifdef HAVE_HIREDIS
        if (w->sys == SYS_REDISP) {
                redis_pipe1(w, sample);
                return;
        }
#endif
        if (w->batch) {
                for (uint32_t j = 0; j < w->nb; j++) {
                        w->idx[j] = draw(w);
                        make_key(w->key + (size_t)j * w->klen, w->klen, w->idx[j]);
                }
                uint64_t t0 = sample ? tick_start() : 0;
                if (w->sys == SYS_STOA)
                        stoa_mget1(w);
#ifdef HAVE_LMDB
                else
                        lmdb_batch1(w);
#endif
                if (sample)
                        w->r->hist[0][hist_idx(tick_end() - t0)]++;
                return;
        }
        uint64_t i = draw(w);
        bool get = draw_get(w);
        make_key(w->key, w->klen, i);
        if (!get)
                make_val(w->val, w->vlen, i);
        uint64_t t0 = sample ? tick_start() : 0;
        switch (w->sys) {
        case SYS_STOA:
                if (get)
                        stoa_get1(w, i);
                else
                        stoa_set1(w);
                break;
#ifdef HAVE_HIREDIS
        case SYS_REDIS:
                redis_op1(w, get, i);
                break;
#endif
#ifdef HAVE_LMDB
        case SYS_LMDB:
                if (get)
                        lmdb_get1(w, i);
                else
                        lmdb_set1(w);
                break;
#endif
        default:
                break;
        }
        if (sample)
                w->r->hist[!get][hist_idx(tick_end() - t0)]++;
}

static void run_for(struct worker *w, double secs, bool measure)
{
        uint64_t end = tick_now() + (uint64_t)(secs * 1e9 * tsc_per_ns), n = 0;

        do {
                for (int k = 0; k < STEP_CHECK; k++)
                        step(w, measure && (n++ & w->smask) == 0);
        } while (tick_now() < end && !w->stop);
}

/* ---- forking workers ----------------------------------------------------------- */

struct sync {
        int ready, go;
};

static void sync_ready(const struct sync *s)
{
        char c = 'r';

        while (write(s->ready, &c, 1) < 0 && errno == EINTR)
                ;
}

static void sync_go(const struct sync *s)
{
        char c;

        while (read(s->go, &c, 1) < 0 && errno == EINTR)
                ;
}

typedef int (*child_fn)(struct bench *B, int id, int nproc, void *arg, const struct sync *s);

static void pin(const struct bench *B, int i)
{
        cpu_set_t set;

        if (!B->o.pin || B->ncpu < 1)
                return;
        CPU_ZERO(&set);
        CPU_SET(i % B->ncpu, &set);
        sched_setaffinity(0, sizeof(set), &set);
}

static int64_t ms_left(uint64_t deadline)
{
        uint64_t t = now_ns();

        return t >= deadline ? 0 : (int64_t)((deadline - t) / 1000000u) + 1;
}

/* Read n bytes before deadline; false on EOF (a child died first) or timeout. */
static bool gather(int fd, int n, uint64_t deadline, bool *timed_out)
{
        char buf[MAX_PROCS];
        int have = 0;

        while (have < n) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                int r = poll(&p, 1, (int)ms_left(deadline));
                if (r < 0 && errno == EINTR)
                        continue;
                if (r == 0) {
                        *timed_out = true;
                        return false;
                }
                ssize_t k = read(fd, buf, (size_t)(n - have));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return false;
                have += (int)k;
        }
        return true;
}

/* Wait for EOF on fd: every child that held its write end has exited. */
static bool wait_eof(int fd, uint64_t deadline)
{
        char c;

        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                int r = poll(&p, 1, (int)ms_left(deadline));
                if (r < 0 && errno == EINTR)
                        continue;
                if (r == 0)
                        return false;
                ssize_t k = read(fd, &c, 1);
                if (k == 0 || (k < 0 && errno != EINTR))
                        return true;
        }
}

/*
 * Forks nproc children running fn; they set up, say ready, wait for go, run,
 * and exit. Returns 0 when all exited 0, else -1 with a reason in msg.
 */
static int run_procs(struct bench *B, int nproc, child_fn fn, void *arg, double timeout_s,
                     char *msg, size_t msglen)
{
        int ready[2] = { -1, -1 }, go[2] = { -1, -1 }, done[2] = { -1, -1 };
        pid_t pid[MAX_PROCS];
        int nforked = 0, bad = 0;
        bool timed_out = false;
        pid_t parent = getpid();

        memset(B->ctl->w, 0, sizeof(B->ctl->w));
        if (pipe2(ready, O_CLOEXEC) || pipe2(go, O_CLOEXEC) || pipe2(done, O_CLOEXEC)) {
                snprintf(msg, msglen, "pipe: %s", strerror(errno));
                goto out;
        }
        fflush(NULL);
        for (int i = 0; i < nproc; i++) {
                pid[i] = fork();
                if (pid[i] < 0) {
                        snprintf(msg, msglen, "fork: %s", strerror(errno));
                        break;
                }
                if (pid[i] == 0) {
                        prctl(PR_SET_PDEATHSIG, SIGKILL);
                        if (getppid() != parent)
                                _exit(1);
                        close(ready[0]);
                        close(go[1]);
                        close(done[0]);
                        close(B->guard_fd);
                        pin(B, i);
                        struct sync s = { .ready = ready[1], .go = go[0] };
                        _exit(fn(B, i, nproc, arg, &s) ? 1 : 0);
                }
                nforked++;
        }
        close(ready[1]);
        close(done[1]);
        ready[1] = done[1] = -1;
        uint64_t deadline = now_ns() + (uint64_t)((timeout_s + 60) * 1e9);
        bool ok = nforked == nproc && gather(ready[0], nforked, deadline, &timed_out);
        close(go[1]);           /* everyone starts */
        go[1] = -1;
        if (ok && !wait_eof(done[0], deadline))
                timed_out = true;
        if (timed_out) {
                snprintf(msg, msglen, "timed out after %.0f s (a hang?); workers killed",
                         timeout_s + 60);
                for (int i = 0; i < nforked; i++)
                        kill(pid[i], SIGKILL);
        }
        for (int i = 0; i < nforked; i++) {
                int st = 0;
                while (waitpid(pid[i], &st, 0) < 0 && errno == EINTR)
                        ;
                if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                        continue;
                if (!bad++ && !timed_out) {
                        if (B->ctl->w[i].msg[0])
                                snprintf(msg, msglen, "worker %d: %s", i, B->ctl->w[i].msg);
                        else if (WIFSIGNALED(st))
                                snprintf(msg, msglen, "worker %d killed by signal %d (%s)", i,
                                         WTERMSIG(st), strsignal(WTERMSIG(st)));
                        else
                                snprintf(msg, msglen, "worker %d exited %d", i, WEXITSTATUS(st));
                }
        }
        if (nforked == nproc && !bad && !timed_out)
                return 0;
out:
        if (!msg[0])
                snprintf(msg, msglen, "failed");
        for (int k = 0; k < 2; k++) {
                if (ready[k] >= 0)
                        close(ready[k]);
                if (go[k] >= 0)
                        close(go[k]);
                if (done[k] >= 0)
                        close(done[k]);
        }
        return -1;
}

/* ---- a measured case ----------------------------------------------------------- */

static int worker_open(struct worker *w)
{
        const struct bench *B = w->B;

        (void)B;        /* unused when built without Redis and LMDB */
        switch (w->sys) {
        case SYS_STOA: {
                int r = stoa_open(&w->st, w->ks->name,
                                  &(struct stoa_options){ .flags = STOA_OPEN_NOCREATE });
                if (r) {
                        worker_err(w, "stoa_open %s: %s (%d)", w->ks->name, stoa_strerror(r), r);
                        return r;
                }
                return 0;
        }
#ifdef HAVE_HIREDIS
        case SYS_REDIS:
        case SYS_REDISP:
                w->rc = redisConnectUnix(B->redis_sock);
                if (!w->rc || w->rc->err) {
                        worker_err(w, "redis connect %s: %s", B->redis_sock,
                                   w->rc ? w->rc->errstr : "out of memory");
                        return -ECONNREFUSED;
                }
                return 0;
#endif
#ifdef HAVE_LMDB
        case SYS_LMDB: {
                MDB_txn *t;
                int r = mdb_env_create(&w->env);
                if (r == 0)
                        r = mdb_env_set_mapsize(w->env, (size_t)B->lmdb_map);
                if (r == 0)
                        r = mdb_env_open(w->env, B->lmdb_dir, LMDB_FLAGS, 0600);
                if (r == 0 && (r = mdb_txn_begin(w->env, NULL, MDB_RDONLY, &t)) == 0) {
                        r = mdb_dbi_open(t, NULL, 0, &w->dbi);
                        mdb_txn_abort(t);
                }
                if (r == 0 && (r = mdb_txn_begin(w->env, NULL, MDB_RDONLY, &w->rtxn)) == 0)
                        mdb_txn_reset(w->rtxn);
                if (r)
                        worker_err(w, "lmdb open %s: %s", B->lmdb_dir, mdb_strerror(r));
                return r ? -EIO : 0;
        }
#endif
        default:
                worker_err(w, "%s: not built in", w->sys == SYS_LMDB ? "LMDB" : "Redis");
                return -ENOSYS;
        }
}

static void worker_close(struct worker *w)
{
        stoa_close(w->st);
#ifdef HAVE_HIREDIS
        if (w->rc)
                redisFree(w->rc);
#endif
#ifdef HAVE_LMDB
        if (w->rtxn)
                mdb_txn_abort(w->rtxn);
        if (w->env)
                mdb_env_close(w->env);
#endif
}

/* Fills a worker for case c; the buffers are the child's own, freed by _exit. */
static int worker_init(struct worker *w, struct bench *B, const struct kset *ks,
                       const struct result *c, int id, int nproc)
{
        bool writer = c->wl == WL_GETW && id == nproc - 1;

        *w = (struct worker){ .B = B, .ks = ks, .sys = c->sys, .r = &B->ctl->w[id],
                              .klen = B->o.klen, .vlen = B->o.vlen, .nkeys = ks->keys };
        w->batch = c->wl == WL_BATCH && c->sys != SYS_REDISP;
        w->get_pct = writer ? 0 : wl_getpct[c->wl];
        w->get_thr = (uint64_t)w->get_pct * (1ull << 32) / 100;
        w->rng = KEY_SEED ^ fmix64(now_ns() + (uint64_t)id * 0x9e3779b97f4a7c15ull);
        w->ztab = c->dist == D_ZIPF ? ks->ztab : NULL;
        w->zpos = ((uint64_t)id << ZTAB_BITS) / (uint64_t)nproc + (wyrand(&w->rng) & 0xffff);
        w->nb = c->sys == SYS_REDISP ? B->o.depth : w->batch ? B->o.batch : 1;
        w->cap = (size_t)w->vlen + 64;  /* room to notice a value that is too long */
        w->smask = c->sys == SYS_REDIS || c->sys == SYS_REDISP || w->batch ? 0 : SAMPLE_MASK;
        w->key = malloc((size_t)w->nb * w->klen);
        w->val = malloc(w->vlen ? w->vlen : 1);
        w->buf = malloc((size_t)w->nb * w->cap);
        if (!w->key || !w->val || !w->buf) {
                worker_err(w, "out of memory");
                return -ENOMEM;
        }
        for (uint32_t j = 0; j < w->nb; j++) {
                key_init(w->key + (size_t)j * w->klen, w->klen);
                w->reqs[j] = (struct stoa_getreq){ .key = w->key + (size_t)j * w->klen,
                                                   .klen = w->klen, .buf = w->buf + j * w->cap,
                                                   .cap = w->cap };
        }
        val_init(w->val, w->vlen);
        return worker_open(w);
}

struct case_arg {
        const struct result *c;
        const struct kset *ks;
};

static int case_child(struct bench *B, int id, int nproc, void *arg, const struct sync *s)
{
        const struct case_arg *a = arg;
        struct worker w;
        int e = worker_init(&w, B, a->ks, a->c, id, nproc);

        sync_ready(s);
        sync_go(s);
        if (e == 0) {
                run_for(&w, B->o.warm, false);
                memset(&w.n, 0, sizeof(w.n));
                w.r->c0 = cpu_ns();
                w.r->t0 = now_ns();
                if (!w.stop)
                        run_for(&w, B->o.seconds, true);
                w.r->t1 = now_ns();
                w.r->c1 = cpu_ns();
                w.r->gets = w.n.gets;
                w.r->hits = w.n.hits;
                w.r->misses = w.n.misses;
                w.r->bad = w.n.bad;
                w.r->sets = w.n.sets;
                w.r->errors = w.n.errors;
                w.r->calls = w.n.calls;
        }
        worker_close(&w);
        return e;
}

static void figures(struct bench *B, struct result *c)
{
        static uint64_t all[HIST_N], hg[HIST_N], hs[HIST_N];
        int readers = c->wl == WL_GETW ? c->nproc - 1 : c->nproc;
        double rate = 0, cpu = 0, wall = 0, ops = 0;

        memset(hg, 0, sizeof(hg));
        memset(hs, 0, sizeof(hs));
        for (int i = 0; i < c->nproc; i++) {
                const struct wres *w = &B->ctl->w[i];
                double dur = (double)(w->t1 - w->t0) / 1e9;
                if (i >= readers) {
                        c->w_mops = dur > 0 ? (double)w->sets / dur / 1e6 : 0;
                        c->errors += w->errors;
                        continue;
                }
                rate += dur > 0 ? (double)(w->gets + w->sets) / dur : 0;
                cpu += (double)(w->c1 - w->c0);
                wall += (double)(w->t1 - w->t0);
                ops += (double)(w->gets + w->sets);
                c->gets += w->gets;
                c->hits += w->hits;
                c->misses += w->misses;
                c->bad += w->bad;
                c->sets += w->sets;
                c->errors += w->errors;
                for (unsigned k = 0; k < HIST_N; k++) {
                        hg[k] += w->hist[0][k];
                        hs[k] += w->hist[1][k];
                }
        }
        for (unsigned k = 0; k < HIST_N; k++)
                all[k] = hg[k] + hs[k];
        c->mops = rate / 1e6;
        c->mops_proc = c->mops / readers;
        c->ns_op = c->mops_proc > 0 ? 1e3 / c->mops_proc : 0;
        c->ns_cpu = ops > 0 ? cpu / ops : 0;
        c->cpu_pct = wall > 0 ? 100 * cpu / wall : 0;
        c->p50 = hist_pct(all, 0.50);
        c->p99 = hist_pct(all, 0.99);
        c->p999 = hist_pct(all, 0.999);
        c->get_p99 = hist_pct(hg, 0.99);
        c->set_p99 = hist_pct(hs, 0.99);
}

static void cpu_use(struct cpu_use *u)
{
        unsigned long long v[8] = { 0 };
        double tck = (double)sysconf(_SC_CLK_TCK);
        struct rusage self, kids;
        FILE *f = fopen("/proc/stat", "r");

        /* cpu  user nice system idle iowait irq softirq steal */
        if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                         &v[3], &v[4], &v[5], &v[6], &v[7]) != 8)
                memset(v, 0, sizeof(v));
        if (f)
                fclose(f);
        u->busy_s = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / tck;
        u->steal_s = (double)v[7] / tck;
        getrusage(RUSAGE_SELF, &self);
        getrusage(RUSAGE_CHILDREN, &kids);
        u->mine_s = (double)(self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec +
                             kids.ru_stime.tv_sec) +
                    (double)(self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec +
                             kids.ru_stime.tv_usec) / 1e6;
        u->wall_s = (double)now_ns() / 1e9;
}

/* CPU seconds our redis-server used so far (it is ours, not a neighbour's). */
static double redis_cpu_s(const struct bench *B)
{
        char path[64], buf[1024];
        unsigned long long ut = 0, st = 0;

        if (B->redis_pid <= 0)
                return 0;
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)B->redis_pid);
        FILE *f = fopen(path, "r");
        if (!f)
                return 0;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *p = strrchr(buf, ')');
        /* after "pid (comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt
         * cmajflt utime stime */
        if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                         &ut, &st) != 2)
                return 0;
        return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static const char *wl_label(const struct bench *B, const struct result *c, char *buf, size_t len)
{
        if (c->wl == WL_BATCH && c->sys == SYS_STOA)
                snprintf(buf, len, "mget x%u", B->o.batch);
        else if (c->wl == WL_BATCH)
                snprintf(buf, len, "%u GET/txn", B->o.batch);
        else
                snprintf(buf, len, "%s", wl_name[c->wl]);
        return buf;
}

static void run_case(struct bench *B, int si, enum sys sys, enum wl wl, enum dist d, int nproc)
{
        char lb[32];

        if (B->nres == MAX_RESULTS)
                return;
        struct result *c = &B->res[B->nres++];
        *c = (struct result){ .set = si, .sys = sys, .wl = wl, .dist = d, .nproc = nproc };
        struct case_arg a = { .c = c, .ks = &B->sets[si] };
        if (B->tty)
                fprintf(stderr, "\r\033[K  %s: %s %s %s %dp ...", B->sets[si].tag, sys_name[sys],
                        wl_label(B, c, lb, sizeof(lb)), dist_name[d], nproc);
        struct cpu_use u0, u1;
        double r0 = redis_cpu_s(B);
        cpu_use(&u0);
        c->ok = run_procs(B, nproc, case_child, &a, B->o.warm + B->o.seconds, c->msg,
                          sizeof(c->msg)) == 0;
        cpu_use(&u1);
        double others = (u1.busy_s - u0.busy_s) - (u1.mine_s - u0.mine_s) -
                        (redis_cpu_s(B) - r0);
        double wall = u1.wall_s - u0.wall_s;
        c->other_pct = others > 0 && wall > 0 ? 100 * others / (wall * B->ncpu) : 0;
        if (!c->ok)
                return;
        figures(B, c);
        for (int i = 0; i < nproc; i++) {
                if (B->ctl->w[i].msg[0]) {
                        snprintf(c->msg, sizeof(c->msg), "%s", B->ctl->w[i].msg);
                        break;
                }
        }
}

static const struct result *find(const struct bench *B, int si, enum sys sys, enum wl wl,
                                 enum dist d, int nproc)
{
        for (int i = 0; i < B->nres; i++) {
                const struct result *c = &B->res[i];
                if (c->ok && c->set == si && c->sys == sys && c->wl == wl && c->dist == d &&
                    c->nproc == nproc)
                        return c;
        }
        return NULL;
}

/* ---- the machine's limits: pointer chases ------------------------------------- */

static void *volatile chase_sink;

/* Both chases: ns of CPU time per load; t[0] += their wall time, t[1] their CPU time. */
static double chase_dep(void *p, double secs, uint64_t *t)
{
        uint64_t loads = 0, t0, t1, c0, end;

        for (unsigned k = 0; k < (1u << 16); k++)      /* warm the caches and the TLB */
                p = *(void **)p;
        c0 = cpu_ns();
        t0 = now_ns();
        end = t0 + (uint64_t)(secs * 1e9);
        do {
                for (unsigned k = 0; k < 4096; k++)
                        p = *(void **)p;
                loads += 4096;
        } while ((t1 = now_ns()) < end);
        chase_sink = p;
        uint64_t c = cpu_ns() - c0;
        t[0] += t1 - t0;
        t[1] += c;
        return (double)c / (double)loads;
}

#define CHASE16(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) \
                   X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#define C_DECL(k) void *c##k = s[k];
#define C_STEP(k) c##k = *(void **)c##k;
#define C_SINK(k) chase_sink = c##k;

/* NCHAINS chains at once: the loads of one step do not depend on each other. */
static double chase_indep(void *const *s, double secs, uint64_t *t)
{
        uint64_t loads = 0, t0, t1, cpu0, end;

        CHASE16(C_DECL)
        for (unsigned k = 0; k < (1u << 12); k++) {
                CHASE16(C_STEP)
        }
        cpu0 = cpu_ns();
        t0 = now_ns();
        end = t0 + (uint64_t)(secs * 1e9);
        do {
                for (unsigned k = 0; k < 1024; k++) {
                        CHASE16(C_STEP)
                }
                loads += 1024 * NCHAINS;
        } while ((t1 = now_ns()) < end);
        CHASE16(C_SINK)
        uint64_t c = cpu_ns() - cpu0;
        t[0] += t1 - t0;
        t[1] += c;
        return (double)c / (double)loads;
}

static void measure_limit(struct lim *L, double secs)
{
        size_t n = L->ws / 64 < 4 * NCHAINS ? 4 * NCHAINS : L->ws / 64;
        size_t unit = L->huge ? (2u << 20) : 4096u;
        size_t map = (n * 64 + unit - 1) / unit * unit;
        uint8_t *mem = mmap(NULL, map, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | (L->huge ? MAP_HUGETLB : 0), -1, 0);
        void *start[NCHAINS];
        uint64_t s = KEY_SEED;

        if (mem == MAP_FAILED) {
                snprintf(L->msg, sizeof(L->msg), "mmap%s: %s", L->huge ? " MAP_HUGETLB" : "",
                         strerror(errno));
                return;
        }
        if (!L->huge)
                madvise(mem, map, MADV_NOHUGEPAGE);
        uint32_t *perm = malloc(n * sizeof(*perm));
        if (!perm) {
                snprintf(L->msg, sizeof(L->msg), "out of memory");
                munmap(mem, map);
                return;
        }
        for (size_t i = 0; i < n; i++)
                perm[i] = (uint32_t)i;
        for (size_t i = n - 1; i > 0; i--) {   /* Sattolo: one cycle through all lines */
                size_t j = (size_t)(((u128)wyrand(&s) * i) >> 64);
                uint32_t t = perm[i];
                perm[i] = perm[j];
                perm[j] = t;
        }
        for (size_t k = 0; k < n; k++)
                *(void **)(mem + (size_t)perm[k] * 64) = mem + (size_t)perm[(k + 1) % n] * 64;
        for (int c = 0; c < NCHAINS; c++)
                start[c] = mem + (size_t)perm[(size_t)c * n / NCHAINS] * 64;
        free(perm);
        /* Alternated and repeated, the median taken: a neighbour's burst spoils one of five. */
        double dep[LIM_REPS], ind[LIM_REPS];
        uint64_t t[2] = { 0, 0 };
        for (int k = 0; k < LIM_REPS; k++) {
                dep[k] = chase_dep(start[0], secs / LIM_REPS, t);
                ind[k] = chase_indep(start, secs / LIM_REPS, t);
        }
        L->cpu_pct = 100.0 * (double)t[1] / (double)t[0];
        qsort(dep, LIM_REPS, sizeof(dep[0]), cmp_dbl);
        qsort(ind, LIM_REPS, sizeof(ind[0]), cmp_dbl);
        L->dep_ns = dep[LIM_REPS / 2];
        L->indep_ns = ind[LIM_REPS / 2];
        L->dep_min = dep[0];
        L->indep_min = ind[0];
        L->ok = true;
        munmap(mem, map);
}

struct lim_arg {
        struct lim req[4];
        int n;
};

static int lim_child(struct bench *B, int id, int nproc, void *arg, const struct sync *s)
{
        const struct lim_arg *a = arg;

        sync_ready(s);
        sync_go(s);
        for (int k = 0; k < a->n; k++) {
                B->ctl->lim[k] = a->req[k];
                measure_limit(&B->ctl->lim[k], B->o.lim_s);
        }
        return 0;
}

/* Measures the limits at ws with 4 KiB pages and (if the host has them) 2 MiB. */
static void limits_at(struct bench *B, uint64_t ws, int *ret_4k, int *ret_huge)
{
        struct lim_arg a = { .n = 0 };
        char msg[200] = "";

        *ret_4k = *ret_huge = -1;
        for (int i = 0; i < B->nlims; i++) {
                if (B->lims[i].ws == ws)
                        *(B->lims[i].huge ? ret_huge : ret_4k) = i;
        }
        if (*ret_4k >= 0 || B->nlims + 2 > MAX_LIMS)
                return;
        a.req[a.n++] = (struct lim){ .ws = ws };
        if (!B->huge_note[0])
                a.req[a.n++] = (struct lim){ .ws = ws, .huge = true };
        memset(B->ctl->lim, 0, sizeof(B->ctl->lim));
        if (B->tty)
                fprintf(stderr, "\r\033[K  limits over %.1f MiB ...", MIB(ws));
        int r = run_procs(B, 1, lim_child, &a, 300, msg, sizeof(msg));
        for (int k = 0; k < a.n; k++) {
                struct lim *L = &B->lims[B->nlims];
                *L = B->ctl->lim[k];
                L->ws = ws;
                L->huge = a.req[k].huge;
                if (r && !L->ok && !L->msg[0])
                        snprintf(L->msg, sizeof(L->msg), "%s", msg);
                if (L->huge && !L->ok)
                        snprintf(B->huge_note, sizeof(B->huge_note), "%s", L->msg);
                *(L->huge ? ret_huge : ret_4k) = B->nlims++;
        }
}

/* The limit that matches a key set's pages: hugetlb if the segment has 2 MiB pages. */
static const struct lim *lim_for(const struct bench *B, const struct kset *ks)
{
        int i = ks->page >= (2u << 20) && ks->limhuge >= 0 ? ks->limhuge : ks->lim4k;

        return i >= 0 && B->lims[i].ok ? &B->lims[i] : NULL;
}

static const struct lim *lim_gib(const struct bench *B, uint64_t page)
{
        int i = page >= (2u << 20) && B->lim_gibhuge >= 0 ? B->lim_gibhuge : B->lim_gib4k;

        return i >= 0 && B->lims[i].ok ? &B->lims[i] : NULL;
}

/* ---- Redis and LMDB: servers and preloads ----------------------------------------- */

#ifdef HAVE_HIREDIS
static bool find_prog(const char *name, char *buf, size_t len)
{
        const char *path = getenv("PATH");

        if (strchr(name, '/')) {
                snprintf(buf, len, "%s", name);
                return access(buf, X_OK) == 0;
        }
        for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
                const char *e = strchr(p, ':');
                size_t n = e ? (size_t)(e - p) : strlen(p);
                snprintf(buf, len, "%.*s/%s", (int)n, p, name);
                if (n && access(buf, X_OK) == 0)
                        return true;
                p += n + (e != NULL);
        }
        return false;
}
#endif

static void redis_stop(struct bench *B)
{
        if (B->redis_pid <= 0)
                return;
        kill(B->redis_pid, SIGTERM);
        for (int k = 0; k < 200; k++) {         /* 2 s, then SIGKILL */
                if (waitpid(B->redis_pid, NULL, WNOHANG) == B->redis_pid) {
                        B->redis_pid = 0;
                        return;
                }
                usleep(10000);
        }
        kill(B->redis_pid, SIGKILL);
        waitpid(B->redis_pid, NULL, 0);
        B->redis_pid = 0;
}

/* atexit: whatever path leads out, redis-server does not outlive us. */
static struct bench *exit_bench;

static void at_exit(void)
{
        if (exit_bench && exit_bench->redis_pid > 0 && getpid() != exit_bench->redis_pid)
                redis_stop(exit_bench);
}

#ifdef HAVE_HIREDIS
static void log_tail(const char *path, char *out, size_t len)
{
        char buf[4096];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        off_t end = fd >= 0 ? lseek(fd, 0, SEEK_END) : -1;
        ssize_t n;

        out[0] = 0;
        if (end < 0) {
                if (fd >= 0)
                        close(fd);
                return;
        }
        lseek(fd, end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0, SEEK_SET);
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        buf[n > 0 ? n : 0] = 0;
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
                buf[--n] = 0;
        char *last = strrchr(buf, '\n');
        snprintf(out, len, "%.150s", last ? last + 1 : buf);
}

/* A command of a few space-separated words, e.g. "CONFIG GET save". */
static redisReply *redis_cmd(redisContext *rc, const char *cmd)
{
        char buf[128], *save = NULL;
        const char *argv[8];
        size_t len[8];
        int n = 0;

        snprintf(buf, sizeof(buf), "%s", cmd);
        for (char *t = strtok_r(buf, " ", &save); t && n < 8; t = strtok_r(NULL, " ", &save)) {
                argv[n] = t;
                len[n++] = strlen(t);
        }
        return redisCommandArgv(rc, n, argv, len);
}

/* Starts redis-server and connects to it; NULL with redis_note set on failure. */
static redisContext *redis_spawn(struct bench *B, const char *bin)
{
        char tail[200];
        redisContext *rc;

        snprintf(B->redis_sock, sizeof(B->redis_sock), "%s/redis.sock", B->dir);
        snprintf(B->redis_log, sizeof(B->redis_log), "%s/redis.log", B->dir);
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
                snprintf(B->redis_note, sizeof(B->redis_note), "fork: %s", strerror(errno));
                return NULL;
        }
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                int fd = open(B->redis_log, O_WRONLY | O_CREAT | O_APPEND, 0600);
                int nul = open("/dev/null", O_RDONLY);
                if (fd >= 0) {
                        dup2(fd, 1);
                        dup2(fd, 2);
                }
                if (nul >= 0)
                        dup2(nul, 0);
                execl(bin, bin, "--port", "0", "--unixsocket", B->redis_sock,
                      "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                      "--dir", B->dir, "--logfile", B->redis_log, "--daemonize", "no",
                      (char *)NULL);
                dprintf(2, "exec %s: %s\n", bin, strerror(errno));
                _exit(127);
        }
        B->redis_pid = pid;
        uint64_t deadline = now_ns() + 10000000000ull;
        for (;;) {
                if (waitpid(pid, NULL, WNOHANG) == pid) {
                        B->redis_pid = 0;
                        log_tail(B->redis_log, tail, sizeof(tail));
                        snprintf(B->redis_note, sizeof(B->redis_note),
                                 "redis-server exited at start: %s", tail);
                        return NULL;
                }
                rc = redisConnectUnix(B->redis_sock);
                if (rc && !rc->err)
                        return rc;
                if (rc)
                        redisFree(rc);
                if (now_ns() > deadline) {
                        snprintf(B->redis_note, sizeof(B->redis_note),
                                 "redis-server did not listen on %.150s within 10 s", B->redis_sock);
                        return NULL;
                }
                usleep(20000);
        }
}

/* Pipelined SETs of every key, 1024 at a time. */
static int redis_preload(struct bench *B, redisContext *rc, const struct kset *ks)
{
        uint8_t *key = malloc(B->o.klen), *val = malloc(B->o.vlen ? B->o.vlen : 1);
        int e = 0;

        if (!key || !val) {
                snprintf(B->redis_note, sizeof(B->redis_note), "out of memory");
                e = -1;
                goto out;
        }
        key_init(key, B->o.klen);
        val_init(val, B->o.vlen);
        for (uint64_t i = 0; i < ks->keys && !e;) {
                uint64_t n = ks->keys - i < 1024 ? ks->keys - i : 1024;
                for (uint64_t j = 0; j < n; j++) {
                        const char *argv[3] = { "SET", (const char *)key, (const char *)val };
                        size_t len[3] = { 3, B->o.klen, B->o.vlen };
                        make_key(key, B->o.klen, i + j);
                        make_val(val, B->o.vlen, i + j);
                        redisAppendCommandArgv(rc, 3, argv, len);
                }
                for (uint64_t j = 0; j < n && !e; j++) {
                        void *r = NULL;
                        if (redisGetReply(rc, &r) != REDIS_OK || !r) {
                                snprintf(B->redis_note, sizeof(B->redis_note), "preload: %s",
                                         rc->errstr);
                                e = -1;
                        }
                        if (r)
                                freeReplyObject(r);
                }
                i += n;
        }
out:
        free(key);
        free(val);
        return e;
}

/* "field:value" of an INFO section, into out; "?" if absent. */
static void redis_info_field(redisContext *rc, const char *section, const char *field, char *out,
                             size_t len)
{
        char cmd[64], pat[64];
        redisReply *rep;

        snprintf(out, len, "?");
        snprintf(cmd, sizeof(cmd), "INFO %s", section);
        snprintf(pat, sizeof(pat), "\n%s:", field);
        rep = redis_cmd(rc, cmd);
        if (rep && rep->type == REDIS_REPLY_STRING) {
                const char *v = strstr(rep->str, pat);
                if (v)
                        snprintf(out, len, "%.*s", (int)strcspn(v + strlen(pat), "\r\n"),
                                 v + strlen(pat));
        }
        if (rep)
                freeReplyObject(rep);
}

/* Starts a private redis-server and preloads the main set. 0, or -1 with redis_note set. */
static int redis_setup(struct bench *B, const struct kset *ks)
{
        char bin[512], ver[32], mem[32];
        redisContext *rc;
        redisReply *rep;

        if (!find_prog(B->o.redis_bin, bin, sizeof(bin))) {
                snprintf(B->redis_note, sizeof(B->redis_note), "skipped (not installed)");
                return -1;
        }
        if (!(rc = redis_spawn(B, bin)))
                goto err;
        rep = redis_cmd(rc, "CONFIG GET save");
        bool nosave = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
                      rep->element[1]->len == 0;
        if (rep)
                freeReplyObject(rep);
        uint64_t t0 = now_ns();
        if (redis_preload(B, rc, ks))
                goto err;
        double load_s = (double)(now_ns() - t0) / 1e9;
        long long dbsize = -1;
        rep = redis_cmd(rc, "DBSIZE");
        if (rep && rep->type == REDIS_REPLY_INTEGER)
                dbsize = rep->integer;
        if (rep)
                freeReplyObject(rep);
        redis_info_field(rc, "server", "redis_version", ver, sizeof(ver));
        redis_info_field(rc, "memory", "used_memory_human", mem, sizeof(mem));
        snprintf(B->redis_info, sizeof(B->redis_info),
                 "redis-server %s over a unix socket (--save '' %s, --appendonly no; server "
                 "not pinned); preload %llu pipelined SETs in %.2f s, DBSIZE %lld, "
                 "used_memory %s", ver, nosave ? "confirmed" : "NOT confirmed",
                 (unsigned long long)ks->keys, load_s, dbsize, mem);
        redisFree(rc);
        return 0;
err:
        if (rc)
                redisFree(rc);
        redis_stop(B);
        return -1;
}
#endif

#ifdef HAVE_LMDB
static int lmdb_setup(struct bench *B, const struct kset *ks)
{
        MDB_env *env = NULL;
        MDB_txn *t = NULL;
        MDB_dbi dbi;
        MDB_stat st;
        MDB_envinfo ei;
        uint8_t *key = malloc(B->o.klen), *val = malloc(B->o.vlen ? B->o.vlen : 1);
        int r;

        snprintf(B->lmdb_dir, sizeof(B->lmdb_dir), "%s/lmdb", B->dir);
        B->lmdb_map = ks->keys * (uint64_t)(B->o.klen + B->o.vlen + 64) * 4 + (256ull << 20);
        if (!key || !val) {
                r = ENOMEM;
                goto err;
        }
        if (mkdir(B->lmdb_dir, 0700) && errno != EEXIST) {
                r = errno;
                goto err;
        }
        if ((r = mdb_env_create(&env)) || (r = mdb_env_set_mapsize(env, (size_t)B->lmdb_map)) ||
            (r = mdb_env_open(env, B->lmdb_dir, LMDB_FLAGS, 0600)))
                goto err;
        uint64_t t0 = now_ns();
        key_init(key, B->o.klen);
        val_init(val, B->o.vlen);
        for (uint64_t i = 0; i < ks->keys; i++) {
                if (!t && ((r = mdb_txn_begin(env, NULL, 0, &t)) ||
                           (r = mdb_dbi_open(t, NULL, 0, &dbi))))
                        goto err;
                make_key(key, B->o.klen, i);
                make_val(val, B->o.vlen, i);
                MDB_val k = { .mv_size = B->o.klen, .mv_data = key };
                MDB_val v = { .mv_size = B->o.vlen, .mv_data = val };
                if ((r = mdb_put(t, dbi, &k, &v, 0)))
                        goto err;
                if ((i + 1) % 65536 == 0 || i + 1 == ks->keys) {
                        r = mdb_txn_commit(t);
                        t = NULL;
                        if (r)
                                goto err;
                }
        }
        double load_s = (double)(now_ns() - t0) / 1e9;
        mdb_env_stat(env, &st);
        mdb_env_info(env, &ei);
        snprintf(B->lmdb_info, sizeof(B->lmdb_info),
                 "LMDB %d.%d.%d, env in the tmp dir, flags %s; GET = one read txn "
                 "(renew/reset), SET = one write txn each; preload %llu puts in %.2f s, "
                 "%zu entries, %.1f MiB of pages", MDB_VERSION_MAJOR, MDB_VERSION_MINOR,
                 MDB_VERSION_PATCH, LMDB_FLAGS_STR, (unsigned long long)ks->keys, load_s,
                 st.ms_entries, MIB((double)(ei.me_last_pgno + 1) * st.ms_psize));
        mdb_env_close(env);
        free(key);
        free(val);
        return 0;
err:
        snprintf(B->lmdb_note, sizeof(B->lmdb_note), "setup failed: %s", mdb_strerror(r));
        if (t)
                mdb_txn_abort(t);
        if (env)
                mdb_env_close(env);
        free(key);
        free(val);
        return -1;
}
#endif

/* ---- key sets ---------------------------------------------------------------------- */

/* The segment's page size, as the kernel maps it into this process (smaps). */
static void seg_pages(struct kset *ks)
{
        FILE *f = fopen("/proc/self/smaps", "r");
        char line[1024];
        bool in = false;
        unsigned long kps = 0, v, size = 0, pmd = 0;

        ks->page = 4096;
        if (!f) {
                snprintf(ks->page_desc, sizeof(ks->page_desc), "4 KiB pages assumed (smaps: %s)",
                         strerror(errno));
                return;
        }
        while (fgets(line, sizeof(line), f)) {
                unsigned long a, b;
                if (sscanf(line, "%lx-%lx ", &a, &b) == 2) {
                        char *nl = strchr(line, '\n');
                        if (nl)
                                *nl = 0;
                        size_t pl = strlen(ks->info.path), ll = strlen(line);
                        in = pl && ll >= pl && strcmp(line + ll - pl, ks->info.path) == 0;
                        continue;
                }
                if (!in)
                        continue;
                if (sscanf(line, "KernelPageSize: %lu kB", &v) == 1 && v > kps)
                        kps = v;
                else if (sscanf(line, "Size: %lu kB", &v) == 1)
                        size += v;
                else if (sscanf(line, "ShmemPmdMapped: %lu kB", &v) == 1 ||
                         sscanf(line, "FilePmdMapped: %lu kB", &v) == 1)
                        pmd += v;
        }
        fclose(f);
        if (kps)
                ks->page = (uint64_t)kps << 10;
        snprintf(ks->page_desc, sizeof(ks->page_desc),
                 "%s pages (smaps: KernelPageSize %lu kB, %.0f of %.0f MiB mapped by 2 MiB THP)",
                 ks->page >= (2u << 20) ? "2 MiB" : "4 KiB", kps, (double)pmd / 1024,
                 (double)size / 1024);
}

static int load_child(struct bench *B, int id, int nproc, void *arg, const struct sync *s)
{
        const struct kset *ks = arg;
        struct result c = { .sys = SYS_STOA, .wl = WL_SET };
        struct worker w;
        int e = worker_init(&w, B, ks, &c, id, nproc);
        uint64_t lo = ks->keys * (uint64_t)id / (uint64_t)nproc;
        uint64_t hi = ks->keys * (uint64_t)(id + 1) / (uint64_t)nproc;

        sync_ready(s);
        sync_go(s);
        w.r->t0 = now_ns();
        for (uint64_t i = lo; i < hi && e == 0; i++) {
                int r, tries = 0;
                make_key(w.key, w.klen, i);
                make_val(w.val, w.vlen, i);
                while ((r = stoa_set(w.st, w.key, w.klen, w.val, w.vlen, 0)) == -EAGAIN &&
                       tries++ < 1000)
                        usleep(100);
                w.n.sets++;
                if (r)
                        worker_err(&w, "preload stoa_set key %llu: %s (%d)",
                                   (unsigned long long)i, stoa_strerror(r), r);
        }
        w.r->t1 = now_ns();
        w.r->sets = w.n.sets;
        w.r->errors = w.n.errors;
        worker_close(&w);
        return e;
}

/*
 * Keys whose items and touched index lines make ~1 GiB, at the heap bytes per
 * item the main set showed, in the freshly created (empty) segment ks.
 */
static uint64_t big_keys(const struct bench *B, const struct kset *ks)
{
        const struct stoa_info *in = &B->sets[B->main_set].info;
        double per = in->items && in->used_bytes ? (double)in->used_bytes / (double)in->items :
                     B->o.klen + B->o.vlen + 48;
        double idx = (double)ks->info.index_buckets * 64;
        double k = ((double)BIG_WS - idx) / per;

        if (B->o.big_keys)
                return B->o.big_keys;
        if (k < (double)ks->info.index_buckets)        /* fewer keys than buckets */
                k = (double)BIG_WS / (per + 64);
        return k < 2 ? 2 : (uint64_t)k;
}

static void check_report(const char *msg, void *arg)
{
        struct kset *ks = arg;

        if (!ks->check_msg[0])
                snprintf(ks->check_msg, sizeof(ks->check_msg), "%s", msg);
}

static int make_ztab(struct kset *ks)
{
        struct zipf z;
        uint64_t s = KEY_SEED ^ ks->keys, top = ks->keys / 100 ? ks->keys / 100 : 1, nt = 0;

        ks->ztab = malloc(sizeof(uint32_t) << ZTAB_BITS);
        if (!ks->ztab)
                return -ENOMEM;
        zipf_init(&z, ks->keys, ZIPF_THETA);
        ks->zetan = z.zetan;
        for (uint32_t k = 0; k < (1u << ZTAB_BITS); k++) {
                double u = (double)(wyrand(&s) >> 11) * 0x1p-53;
                ks->ztab[k] = (uint32_t)zipf_next(&z, u);
                nt += ks->ztab[k] < top;
        }
        ks->ztop1 = (double)nt / (double)(1u << ZTAB_BITS);
        return 0;
}

/* Creates the segment, preloads it, verifies; measures the limits at its working set. */
static int set_prepare(struct bench *B, struct kset *ks)
{
        int r;

        ks->check = INT32_MIN;
        ks->lim4k = ks->limhuge = -1;
        r = stoa_open(&ks->h, ks->name, &(struct stoa_options){ .size = ks->size,
                                                                  .flags = B->o.huge_flags });
        if (r) {
                snprintf(ks->msg, sizeof(ks->msg), "stoa_open %s (%.0f MiB): %s (%d)", ks->name,
                         MIB(ks->size), stoa_strerror(r), r);
                return r;
        }
        if ((r = stoa_info(ks->h, &ks->info))) {
                snprintf(ks->msg, sizeof(ks->msg), "stoa_info: %s (%d)", stoa_strerror(r), r);
                return r;
        }
        seg_pages(ks);
        if (!ks->keys)
                ks->keys = big_keys(B, ks);
        if (B->tty)
                fprintf(stderr, "\r\033[K  %s: preloading %llu keys ...", ks->tag,
                        (unsigned long long)ks->keys);
        if (make_ztab(ks)) {
                snprintf(ks->msg, sizeof(ks->msg), "out of memory");
                return -ENOMEM;
        }
        ks->load_procs = B->ncpu >= 2 && ks->keys >= 65536 ? 2 : 1;
        uint64_t t0 = now_ns();
        r = run_procs(B, ks->load_procs, load_child, ks, (double)ks->keys / 1e5 + 60, ks->msg,
                      sizeof(ks->msg));
        ks->load_s = (double)(now_ns() - t0) / 1e9;
        if (r)
                return r;
        for (int i = 0; i < ks->load_procs; i++) {
                if (B->ctl->w[i].errors) {
                        snprintf(ks->msg, sizeof(ks->msg), "preload: %llu errors; first: %s",
                                 (unsigned long long)B->ctl->w[i].errors, B->ctl->w[i].msg);
                        return -EIO;
                }
        }
        /* Verify a sample through the parent's own handle. */
        uint8_t *key = malloc(B->o.klen), *buf = malloc(B->o.vlen + 64u);
        uint64_t s = KEY_SEED;
        if (!key || !buf) {
                free(key);
                free(buf);
                snprintf(ks->msg, sizeof(ks->msg), "out of memory");
                return -ENOMEM;
        }
        key_init(key, B->o.klen);
        ks->verify_n = VERIFY_N;
        for (unsigned k = 0; k < VERIFY_N; k++) {
                uint64_t i = (uint64_t)(((u128)wyrand(&s) * ks->keys) >> 64);
                size_t vl = 0;
                make_key(key, B->o.klen, i);
                r = stoa_get(ks->h, key, B->o.klen, buf, B->o.vlen + 64u, &vl);
                ks->verified += r == 0 && val_ok(buf, vl, B->o.vlen, i);
        }
        /* The lossy index evicts on conflicts; which of the hottest zipf keys did it take? */
        ks->hot_n = ks->keys < 100000 ? ks->keys : 100000;
        for (uint64_t i = 0; i < ks->hot_n; i++) {
                size_t vl;
                make_key(key, B->o.klen, i);
                if (stoa_get(ks->h, key, B->o.klen, buf, B->o.vlen + 64u, &vl) == -ENOENT) {
                        ks->hot_missing++;
                        ks->hot_share += pow((double)(i + 1), -ZIPF_THETA) / ks->zetan;
                }
        }
        free(key);
        free(buf);
        if ((r = stoa_info(ks->h, &ks->info))) {
                snprintf(ks->msg, sizeof(ks->msg), "stoa_info: %s (%d)", stoa_strerror(r), r);
                return r;
        }
        if (ks->keys <= 16000000) {
                t0 = now_ns();
                ks->check = stoa_check(ks->h, check_report, ks);
                ks->check_s = (double)(now_ns() - t0) / 1e9;
        }
        uint64_t lines = ks->keys < ks->info.index_buckets ? ks->keys : ks->info.index_buckets;
        uint64_t heap = ks->info.used_bytes ? ks->info.used_bytes :
                        ks->keys * (uint64_t)(B->o.klen + B->o.vlen + 48);
        ks->ws = (lines * 64 + heap + 4095) & ~4095ull;
        limits_at(B, ks->ws, &ks->lim4k, &ks->limhuge);
        return 0;
}

static void set_release(struct bench *B, struct kset *ks)
{
        char path[sizeof(ks->info.path)];

        snprintf(path, sizeof(path), "%s", ks->info.path);
        stoa_close(ks->h);
        ks->h = NULL;
        if (path[0])
                unlink(path);   /* frees its memory now; the directory goes at exit */
        free(ks->ztab);
        ks->ztab = NULL;
}

static void run_set(struct bench *B, int si)
{
        struct kset *ks = &B->sets[si];
        const struct opts *o = &B->o;

        ks->ok = set_prepare(B, ks) == 0;
        if (!ks->ok)
                return;
        bool main_set = si == B->main_set, big = si == B->big_set;
        for (int d = D_UNIF; d <= D_ZIPF; d++) {
                if (!main_set && d == D_ZIPF && !big)
                        continue;       /* the cached set: uniform only */
                for (int p = 0; p < o->nprocs; p++) {
                        for (int wl = WL_GET; wl <= WL_M50; wl++) {
                                if (!main_set && wl != WL_GET && !(wl == WL_SET && !big))
                                        continue;
                                run_case(B, si, SYS_STOA, wl, d, o->procs[p]);
                        }
                        if (main_set || d == D_UNIF)
                                run_case(B, si, SYS_STOA, WL_BATCH, d, o->procs[p]);
                }
                if (main_set)
                        run_case(B, si, SYS_STOA, WL_GETW, d, 2);
        }
        if (!main_set)
                return;
        if (!o->redis) {
                snprintf(B->redis_note, sizeof(B->redis_note), "skipped (--no-redis)");
        } else {
#ifdef HAVE_HIREDIS
                if (redis_setup(B, ks) == 0) {
                        for (int sys = SYS_REDIS; sys <= SYS_REDISP; sys++)
                                for (int d = D_UNIF; d <= D_ZIPF; d++)
                                        for (int p = 0; p < o->nprocs; p++)
                                                for (int wl = WL_GET; wl <= WL_M50; wl++)
                                                        run_case(B, si, sys, wl, d, o->procs[p]);
                }
                redis_stop(B);
#else
                snprintf(B->redis_note, sizeof(B->redis_note), "skipped (built without hiredis)");
#endif
        }
        if (!o->lmdb) {
                snprintf(B->lmdb_note, sizeof(B->lmdb_note), "skipped (--no-lmdb)");
                return;
        }
#ifdef HAVE_LMDB
        if (lmdb_setup(B, ks) == 0) {
                for (int d = D_UNIF; d <= D_ZIPF; d++) {
                        for (int p = 0; p < o->nprocs; p++) {
                                for (int wl = WL_GET; wl <= WL_BATCH; wl++)
                                        run_case(B, si, SYS_LMDB, wl, d, o->procs[p]);
                        }
                        run_case(B, si, SYS_LMDB, WL_GETW, d, 2);
                }
        }
#else
        snprintf(B->lmdb_note, sizeof(B->lmdb_note), "skipped (built without LMDB)");
#endif
}

/* ---- reports ------------------------------------------------------------------------ */

static const char *procs_label(const struct result *c, char *buf, size_t len)
{
        if (c->wl == WL_GETW)
                snprintf(buf, len, "1+1w");
        else
                snprintf(buf, len, "%d", c->nproc);
        return buf;
}

/* "108 = 1.04x" */
static const char *ratio_cell(double v, double den, char *buf, size_t len)
{
        if (v <= 0 || den <= 0)
                snprintf(buf, len, "-");
        else
                snprintf(buf, len, "%.0f = %.2fx", v, v / den);
        return buf;
}

static void print_row(const struct bench *B, const struct result *c)
{
        char lb[32], pb[8], notes[300] = "";
        size_t n = 0;

        printf("  %-10s %-11s %-4s %5s", sys_name[c->sys], wl_label(B, c, lb, sizeof(lb)),
               dist_name[c->dist], procs_label(c, pb, sizeof(pb)));
        if (!c->ok) {
                printf("  FAILED: %s\n", c->msg);
                return;
        }
        if (c->wl == WL_GETW)
                n += (size_t)snprintf(notes + n, sizeof(notes) - n, " writer %.3f M SET/s;",
                                      c->w_mops);
        if ((c->wl == WL_M95 || c->wl == WL_M50) && c->sys != SYS_REDISP)
                n += (size_t)snprintf(notes + n, sizeof(notes) - n, " p99 GET %.0f SET %.0f;",
                                      c->get_p99, c->set_p99);
        if (c->bad)
                n += (size_t)snprintf(notes + n, sizeof(notes) - n, " %llu WRONG VALUES;",
                                      (unsigned long long)c->bad);
        if (c->errors || c->msg[0])
                n += (size_t)snprintf(notes + n, sizeof(notes) - n, " %llu errors: %s",
                                      (unsigned long long)c->errors, c->msg);
        char hit[16] = "-";
        if (c->gets)
                snprintf(hit, sizeof(hit), "%.1f", 100.0 * (double)c->hits / (double)c->gets);
        printf(" %8.3f %8.3f %8.1f %8.1f %4.0f %7.0f %7.0f %8.0f %6s %4.0f%s\n", c->mops,
               c->mops_proc, c->ns_op, c->ns_cpu, c->cpu_pct, c->p50, c->p99, c->p999, hit,
               c->other_pct, notes);
}

static void print_header_row(void)
{
        printf("  %-10s %-11s %-4s %5s %8s %8s %8s %8s %4s %7s %7s %8s %6s %4s  %s\n", "system",
               "workload", "dist", "procs", "Mops/s", "/proc", "ns/op", "cpu ns", "cpu%", "p50",
               "p99", "p99.9", "hit%", "oth%", "notes");
}

static void print_lim(const struct lim *L, const char *what)
{
        if (L->ok)
                printf("  %-22s %8.1f MiB  %-12s %9.1f ns %12.2f ns   (min %.1f, %.2f; cpu %.0f%%)\n",
                       what, MIB(L->ws), L->huge ? "2 MiB huge" : "4 KiB", L->dep_ns,
                       L->indep_ns, L->dep_min, L->indep_min, L->cpu_pct);
        else
                printf("  %-22s %8.1f MiB  %-12s not available: %s\n", what, MIB(L->ws),
                       L->huge ? "2 MiB huge" : "4 KiB", L->msg);
}

static void print_lim_header(void)
{
        printf("  %-22s %12s  %-12s %12s %15s   (median of %d; min; on-CPU share)\n", "",
               "working set", "pages", "dependent", "independent", LIM_REPS);
}

static void print_ratios(const struct bench *B, int si)
{
        const struct kset *ks = &B->sets[si];
        const struct lim *L = lim_for(B, ks);
        char lb[32], pb[8], c1[32], c2[32], c3[32], c4[32];

        if (!L) {
                printf("  (no limit measured for this working set: no ratios)\n");
                return;
        }
        printf("\n  stoa as multiples of the limits at %.1f MiB (%s pages): x dep = over one "
               "dependent load\n  (%.1f ns); batches: cpu ns/op is per key over one independent "
               "load (%.2f ns), latencies\n  per call over %u independent loads. cpu ns/op and "
               "the limits are both over CPU time\n", MIB(L->ws), L->huge ? "2 MiB" : "4 KiB",
               L->dep_ns, L->indep_ns, B->o.batch);
        printf("  %-11s %-4s %5s %18s %18s %18s %18s\n", "workload", "dist", "procs",
               "cpu ns/op", "p50", "p99", "p99.9");
        for (int i = 0; i < B->nres; i++) {
                const struct result *c = &B->res[i];
                if (c->set != si || c->sys != SYS_STOA || !c->ok)
                        continue;
                bool batch = c->wl == WL_BATCH;
                double d1 = batch ? L->indep_ns : L->dep_ns;
                double dl = batch ? L->indep_ns * B->o.batch : L->dep_ns;
                printf("  %-11s %-4s %5s %18s %18s %18s %18s  %s\n", wl_label(B, c, lb, sizeof(lb)),
                       dist_name[c->dist], procs_label(c, pb, sizeof(pb)),
                       ratio_cell(c->ns_cpu, d1, c1, sizeof(c1)),
                       ratio_cell(c->p50, dl, c2, sizeof(c2)),
                       ratio_cell(c->p99, dl, c3, sizeof(c3)),
                       ratio_cell(c->p999, dl, c4, sizeof(c4)), batch ? "x indep" : "x dep");
        }
}

static void print_set(const struct bench *B, int si)
{
        const struct kset *ks = &B->sets[si];
        const struct stoa_info *in = &ks->info;

        printf("\n== key set \"%s\": %llu keys ==\n", ks->tag, (unsigned long long)ks->keys);
        if (!ks->ok) {
                printf("  FAILED: %s\n", ks->msg);
                return;
        }
        printf("  segment %.0f MiB, %s, %s\n  %s\n", MIB(in->size), in->backing, in->path,
               ks->page_desc);
        printf("  after preload: %llu items (%.1f MiB keys+values), heap %.1f of %.1f MiB used, "
               "index %llu buckets (%.1f MiB), %llu evictions\n",
               (unsigned long long)in->items, MIB(in->item_bytes), MIB(in->used_bytes),
               MIB(in->heap_bytes), (unsigned long long)in->index_buckets,
               MIB(in->index_buckets * 64), (unsigned long long)in->evictions);
        printf("  working set ~%.1f MiB (one 64 B index line per key + heap in use)\n",
               MIB(ks->ws));
        printf("  preload: %llu SETs by %d process%s in %.2f s (%.2f M/s); %u of %u random keys "
               "read back intact\n", (unsigned long long)ks->keys, ks->load_procs,
               ks->load_procs > 1 ? "es" : "", ks->load_s, (double)ks->keys / ks->load_s / 1e6,
               ks->verified, ks->verify_n);
        if (ks->check == INT32_MIN)
                printf("  stoa_check: not run (more than 16M keys: it would take long)\n");
        else if (ks->check < 0)
                printf("  stoa_check: error %s (%d)\n", stoa_strerror(ks->check), ks->check);
        else
                printf("  stoa_check: %d problems in %.2f s%s%s\n", ks->check, ks->check_s,
                       ks->check_msg[0] ? "; first: " : "", ks->check_msg);
        printf("  zipf (theta %.2f) over %llu keys: the hottest 1%% of keys draw %.1f%% of ops\n",
               ZIPF_THETA, (unsigned long long)ks->keys, 100 * ks->ztop1);
        printf("  of the %llu hottest zipf keys, %llu are absent after preload (index conflicts "
               "evict\n  the lowest-frequency entry, and nothing has been read yet): they draw "
               "%.2f%% of zipf ops\n", (unsigned long long)ks->hot_n,
               (unsigned long long)ks->hot_missing, 100 * ks->hot_share);
        printf("  limits measured for this set (ns per load; independent = %d chains "
               "interleaved):\n", NCHAINS);
        print_lim_header();
        if (ks->lim4k >= 0)
                print_lim(&B->lims[ks->lim4k], "this set");
        if (ks->limhuge >= 0)
                print_lim(&B->lims[ks->limhuge], "this set");
        if (si == B->main_set) {
                printf("  redis: %s\n", B->redis_note[0] ? B->redis_note : B->redis_info);
                printf("  lmdb: %s\n", B->lmdb_note[0] ? B->lmdb_note : B->lmdb_info);
        }
        printf("\n");
        print_header_row();
        for (int i = 0; i < B->nres; i++) {
                if (B->res[i].set == si)
                        print_row(B, &B->res[i]);
        }
        print_ratios(B, si);
}

/* ---- targets: printed beside the figures, never asserted --------------------------- */

struct target {
        char what[120];
        char got[240];
        int met;                /* 1, 0, -1 not measured */
};

static int first_proc(const struct bench *B)
{
        int m = B->o.procs[0];

        for (int p = 1; p < B->o.nprocs; p++)
                m = B->o.procs[p] < m ? B->o.procs[p] : m;
        return m;
}

static int targets(const struct bench *B, struct target *t)
{
        int n = 0, p1 = first_proc(B);
        const struct result *c;
        const struct lim *L;

        /* 1: GET hit >= 10 M/s per core, cache-resident */
        t[n] = (struct target){ .what = "GET hit >= 10 M ops/s per core, working set in cache",
                                .met = -1 };
        if ((c = find(B, 0, SYS_STOA, WL_GET, D_UNIF, p1)) && c->ns_cpu > 0) {
                snprintf(t[n].got, sizeof(t[n].got), "%.2f M/s per CPU-second (%.2f M/s wall, "
                         "on CPU %.0f%%; %d proc, %llu keys, ~%.1f MiB)", 1e3 / c->ns_cpu,
                         c->mops_proc, c->cpu_pct, p1, (unsigned long long)B->sets[0].keys,
                         MIB(B->sets[0].ws));
                t[n].met = 1e3 / c->ns_cpu >= 10;
        }
        n++;
        /* 2: GET within 2x of two dependent DRAM loads at ~1 GiB */
        t[n] = (struct target){ .what = "GET within 2x of two dependent DRAM loads, ~1 GiB set",
                                .met = -1 };
        snprintf(t[n].got, sizeof(t[n].got), "not measured (%s)",
                 B->big_set < 0 ? "the 1 GiB set runs in the full run only" : "failed");
        if (B->big_set >= 0 && (c = find(B, B->big_set, SYS_STOA, WL_GET, D_UNIF, p1)) &&
            (L = lim_gib(B, B->sets[B->big_set].page))) {
                double bound = 2 * 2 * L->dep_ns;
                snprintf(t[n].got, sizeof(t[n].got), "%.1f cpu ns/GET = %.2fx of two dependent "
                         "loads (%.1f ns at 1 GiB); bound %.0f ns (wall: %.1f ns/GET)",
                         c->ns_cpu, c->ns_cpu / (2 * L->dep_ns), 2 * L->dep_ns, bound, c->ns_op);
                t[n].met = c->ns_cpu <= bound;
        }
        n++;
        /* 3: SET >= 2 M/s per core */
        t[n] = (struct target){ .what = "SET >= 2 M ops/s per core", .met = -1 };
        if ((c = find(B, B->main_set, SYS_STOA, WL_SET, D_UNIF, p1)) && c->ns_cpu > 0) {
                const struct result *z = find(B, B->main_set, SYS_STOA, WL_SET, D_ZIPF, p1);
                snprintf(t[n].got, sizeof(t[n].got), "%.2f M/s per CPU-second uniform, %.2f "
                         "zipf (wall %.2f, %.2f); %d proc, main set", 1e3 / c->ns_cpu,
                         z && z->ns_cpu > 0 ? 1e3 / z->ns_cpu : 0, c->mops_proc,
                         z ? z->mops_proc : 0, p1);
                t[n].met = 1e3 / c->ns_cpu >= 2;
        }
        n++;
        /* 4: batched GET within 3x of the independent-load limit per key */
        for (int si = B->main_set; si >= 0; si = si == B->main_set ? B->big_set : -1) {
                t[n] = (struct target){ .met = -1 };
                snprintf(t[n].what, sizeof(t[n].what), "batched GET within 3x of the "
                         "independent-load limit per key (%s set)", B->sets[si].tag);
                if ((c = find(B, si, SYS_STOA, WL_BATCH, D_UNIF, p1)) &&
                    (L = lim_for(B, &B->sets[si]))) {
                        snprintf(t[n].got, sizeof(t[n].got), "mget x%u: %.1f cpu ns/key = %.2fx "
                                 "of %.2f ns (wall: %.1f ns/key)", B->o.batch, c->ns_cpu,
                                 c->ns_cpu / L->indep_ns, L->indep_ns, c->ns_op);
                        t[n].met = c->ns_cpu <= 3 * L->indep_ns;
                }
                n++;
        }
        /* 5: p99 GET < 1 us while a writer runs */
        for (int d = D_UNIF; d <= D_ZIPF; d++) {
                t[n] = (struct target){ .met = -1 };
                snprintf(t[n].what, sizeof(t[n].what), "p99 GET < 1 us while a writer SETs "
                         "(%s)", d == D_UNIF ? "uniform" : "zipf");
                if ((c = find(B, B->main_set, SYS_STOA, WL_GETW, d, 2))) {
                        snprintf(t[n].got, sizeof(t[n].got), "p99 %.0f ns (p99.9 %.0f) with the "
                                 "writer at %.2f M SET/s", c->p99, c->p999, c->w_mops);
                        t[n].met = c->p99 < 1000;
                }
                n++;
        }
        return n;
}

static void print_compare(const struct bench *B)
{
        int si = B->main_set;
        char lb[32];

        if (si < 0 || !B->sets[si].ok)
                return;
        printf("\n== main set: stoa against Redis and LMDB (Mops/s summed over client "
               "processes; x = stoa / other) ==\n");
        printf("  batch GET: stoa mget x%u | redis GET pipelined %u deep | LMDB %u GETs per "
               "read txn\n", B->o.batch, B->o.depth, B->o.batch);
        printf("  %-11s %-4s %5s %9s %9s %11s %9s %9s %9s %9s\n", "workload", "dist", "procs",
               "stoa", "redis", "redis-pipe", "lmdb", "x redis", "x pipe", "x lmdb");
        for (int wl = WL_GET; wl <= WL_BATCH; wl++) {
                for (int d = D_UNIF; d <= D_ZIPF; d++) {
                        for (int p = 0; p < B->o.nprocs; p++) {
                                int np = B->o.procs[p];
                                const struct result *s = find(B, si, SYS_STOA, wl, d, np);
                                const struct result *r = wl == WL_BATCH ? NULL :
                                                         find(B, si, SYS_REDIS, wl, d, np);
                                const struct result *rp = find(B, si, SYS_REDISP,
                                                               wl == WL_BATCH ? WL_GET : wl, d, np);
                                const struct result *l = find(B, si, SYS_LMDB, wl, d, np);
                                char v[4][16], x[3][16];
                                const struct result *o[4] = { s, r, rp, l };
                                for (int k = 0; k < 4; k++)
                                        snprintf(v[k], sizeof(v[k]), o[k] ? "%.3f" : "-",
                                                 o[k] ? o[k]->mops : 0);
                                for (int k = 0; k < 3; k++)
                                        snprintf(x[k], sizeof(x[k]), s && o[k + 1] &&
                                                 o[k + 1]->mops > 0 ? "%.1f" : "-",
                                                 s && o[k + 1] && o[k + 1]->mops > 0 ?
                                                 s->mops / o[k + 1]->mops : 0);
                                struct result tmp = { .wl = wl, .sys = SYS_STOA };
                                printf("  %-11s %-4s %5d %9s %9s %11s %9s %9s %9s %9s\n",
                                       wl == WL_BATCH ? "batch GET" : wl_label(B, &tmp, lb,
                                                                               sizeof(lb)),
                                       dist_name[d], np, v[0], v[1], v[2], v[3], x[0], x[1],
                                       x[2]);
                        }
                }
        }
        printf("\n  GET while another process SETs (1 reader + 1 writer):\n");
        printf("  %-6s %-4s %12s %9s %9s %9s %14s\n", "system", "dist", "reader Mops", "p50",
               "p99", "p99.9", "writer M SET/s");
        for (int d = D_UNIF; d <= D_ZIPF; d++) {
                for (int sys = SYS_STOA; sys < NSYS; sys++) {
                        const struct result *c = find(B, si, sys, WL_GETW, d, 2);
                        if (c)
                                printf("  %-6s %-4s %12.3f %9.0f %9.0f %9.0f %14.3f\n",
                                       sys_name[sys], dist_name[d], c->mops, c->p50, c->p99,
                                       c->p999, c->w_mops);
                }
        }
}

static void print_end(const struct bench *B)
{
        struct target t[8];
        int n = targets(B, t);

        print_compare(B);
        printf("\n== this machine's limits, all measured in this run (1 process; ns per load) "
               "==\n");
        print_lim_header();
        for (int i = 0; i < B->nlims; i++) {
                const char *what = "";
                for (int s = 0; s < B->nsets; s++) {
                        if (B->sets[s].lim4k == i || B->sets[s].limhuge == i)
                                what = B->sets[s].tag;
                }
                if (i == B->lim_gib4k || i == B->lim_gibhuge)
                        what = "1 GiB";
                print_lim(&B->lims[i], what);
        }
        printf("\n== targets (printed beside the figures; not asserted) ==\n");
        for (int i = 0; i < n; i++)
                printf("  %-72s %s\n    %s\n", t[i].what,
                       t[i].met < 0 ? "n/a" : t[i].met ? "met" : "NOT met", t[i].got);
        printf("\nduring the run (%.0f s wall, %d CPUs) other processes used %.1f CPU-s and the "
               "host stole %.1f;\nboth skew figures when not near 0. Compare ratios within one "
               "run.\n", B->wall_s, B->ncpu, B->others_s, B->steal_s);
}

static void print_intro(const struct bench *B)
{
        const struct opts *o = &B->o;

        printf("stoa-bench%s: %u B keys, %u B values; %.2f s measured per case after %.2f s "
               "warm-up; procs", o->quick ? " --quick" : "", o->klen, o->vlen, o->seconds,
               o->warm);
        for (int p = 0; p < o->nprocs; p++)
                printf("%s%d", p ? "," : " ", o->procs[p]);
        printf("; workers %s; build %s\n", o->pin ? "pinned one per CPU" : "not pinned",
#if defined(__OPTIMIZE__) && defined(NDEBUG)
               "optimised, NDEBUG"
#elif defined(__OPTIMIZE__)
               "optimised, asserts on"
#else
               "not optimised"
#endif
        );
        printf("tmp dir %s (STOA_DIR, LMDB env, redis socket); %d CPUs\n", B->dir, B->ncpu);
#ifdef HAVE_TSC
        printf("latency: every 16th op timed with rdtsc (%.3f GHz, calibrated against "
               "CLOCK_MONOTONIC);\n", tsc_per_ns);
#else
        printf("latency: every 16th op timed with CLOCK_MONOTONIC;\n");
#endif
        printf("  Redis: every op; batches and pipelines: every call, latency per call. Each "
               "sample includes\n  the timer's own %.0f ns (median of an empty interval). "
               "Histogram buckets: 3%% wide.\n", B->timer_ovh);
        printf("keys: binary, fmix64(i ^ seed) then i; values: i then a pattern, checked on "
               "every GET;\nthe loop's own cost per op (draw, key, check; no library call): "
               "%.1f cpu ns\nzipf: YCSB's generator (Gray et al.), theta %.2f, rank r = key r, "
               "drawn from a table of %u\n", B->harness, ZIPF_THETA, 1u << ZTAB_BITS);
        printf("Mops/s: ops summed over the processes that GET, wall clock; /proc: per "
               "process; ns/op:\n1e3 / (/proc), per key for batches; cpu ns: the same over the "
               "workers' own CPU time\n(CLOCK_THREAD_CPUTIME_ID: time spent descheduled on this "
               "shared machine does not count;\nfor Redis it is the client's own cost, without "
               "the wait); cpu%%: the workers' CPU time over\nwall time; p50/p99/p99.9 in ns; "
               "hit%% of GETs; oth%%: CPU that other processes (not this\nrun's; redis-server "
               "counts as ours) used during the case, %% of all CPUs. The limits\nare ns of CPU "
               "time per load, the median of %d runs.\n", LIM_REPS);
        fflush(stdout);
}

/* ---- JSON ---------------------------------------------------------------------------- */

static void json_str(const char *s)
{
        putchar('"');
        for (; *s; s++) {
                if (*s == '"' || *s == '\\')
                        printf("\\%c", *s);
                else if ((unsigned char)*s < 0x20)
                        printf("\\u%04x", (unsigned char)*s);
                else
                        putchar(*s);
        }
        putchar('"');
}

static void json_config(const struct bench *B)
{
        const struct opts *o = &B->o;

        printf("{\"bench\": \"stoa\", \"config\": {\"quick\": %s, \"klen\": %u, \"vlen\": %u, "
               "\"seconds\": %.3f, \"warm_seconds\": %.3f, \"batch\": %u, \"redis_depth\": %u, "
               "\"pinned\": %s, \"cpus\": %d, \"tsc_ghz\": %.4f, \"timer_overhead_ns\": %.1f, "
               "\"harness_cpu_ns_per_op\": %.2f, \"sample_every\": %u, \"zipf_theta\": %.2f, \"wall_seconds\": %.1f, "
               "\"others_cpu_seconds\": %.2f, \"steal_cpu_seconds\": %.2f, \"redis\": ",
               o->quick ? "true" : "false", o->klen, o->vlen, o->seconds, o->warm, o->batch,
               o->depth, o->pin ? "true" : "false", B->ncpu, tsc_per_ns, B->timer_ovh,
               B->harness, SAMPLE_MASK + 1, ZIPF_THETA, B->wall_s, B->others_s, B->steal_s);
        json_str(B->redis_note[0] ? B->redis_note : B->redis_info);
        printf(", \"lmdb\": ");
        json_str(B->lmdb_note[0] ? B->lmdb_note : B->lmdb_info);
        printf("}");
}

static void json_limits_sets(const struct bench *B)
{
        printf(",\n \"limits\": [");
        for (int i = 0; i < B->nlims; i++) {
                const struct lim *L = &B->lims[i];
                printf("%s\n  {\"ws_bytes\": %llu, \"pages\": \"%s\", \"ok\": %s, "
                       "\"dependent_ns\": %.2f, \"independent_ns\": %.3f, \"dependent_min_ns\": "
                       "%.2f, \"independent_min_ns\": %.3f, \"cpu_pct\": %.1f, \"msg\": ",
                       i ? "," : "", (unsigned long long)L->ws, L->huge ? "2M" : "4K",
                       L->ok ? "true" : "false", L->dep_ns, L->indep_ns, L->dep_min,
                       L->indep_min, L->cpu_pct);
                json_str(L->msg);
                printf("}");
        }
        printf("],\n \"sets\": [");
        for (int s = 0; s < B->nsets; s++) {
                const struct kset *ks = &B->sets[s];
                printf("%s\n  {\"tag\": \"%s\", \"keys\": %llu, \"ok\": %s, \"msg\": ",
                       s ? "," : "", ks->tag, (unsigned long long)ks->keys,
                       ks->ok ? "true" : "false");
                json_str(ks->msg);
                printf(", \"segment_bytes\": %llu, \"backing\": ",
                       (unsigned long long)ks->info.size);
                json_str(ks->info.backing);
                printf(", \"page_bytes\": %llu, \"items\": %llu, \"used_bytes\": %llu, "
                       "\"index_buckets\": %llu, \"evictions\": %llu, \"ws_bytes\": %llu, "
                       "\"preload_seconds\": %.3f, \"verified\": %u, \"check\": %d, "
                       "\"zipf_top1pct_share\": %.4f, \"hot_missing\": %llu, "
                       "\"hot_missing_zipf_share\": %.5f}",
                       (unsigned long long)ks->page, (unsigned long long)ks->info.items,
                       (unsigned long long)ks->info.used_bytes,
                       (unsigned long long)ks->info.index_buckets,
                       (unsigned long long)ks->info.evictions, (unsigned long long)ks->ws,
                       ks->load_s, ks->verified, ks->check == INT32_MIN ? -1 : ks->check,
                       ks->ztop1, (unsigned long long)ks->hot_missing, ks->hot_share);
        }
        printf("]");
}

static void json_cases(const struct bench *B)
{
        char lb[32];

        printf(",\n \"cases\": [");
        for (int i = 0; i < B->nres; i++) {
                const struct result *c = &B->res[i];
                const struct lim *L = lim_for(B, &B->sets[c->set]);
                printf("%s\n  {\"set\": \"%s\", \"system\": \"%s\", \"workload\": ",
                       i ? "," : "", B->sets[c->set].tag, sys_name[c->sys]);
                json_str(wl_label(B, c, lb, sizeof(lb)));
                printf(", \"dist\": \"%s\", \"procs\": %d, \"ok\": %s, \"mops\": %.4f, "
                       "\"mops_per_proc\": %.4f, \"ns_per_op\": %.2f, \"cpu_ns_per_op\": %.2f, "
                       "\"cpu_pct\": %.1f, \"p50_ns\": %.0f, "
                       "\"p99_ns\": %.0f, \"p999_ns\": %.0f, \"get_p99_ns\": %.0f, "
                       "\"set_p99_ns\": %.0f, \"gets\": %llu, \"hits\": %llu, \"misses\": %llu, "
                       "\"wrong_values\": %llu, \"sets\": %llu, \"errors\": %llu, "
                       "\"writer_mops\": %.4f, \"others_cpu_pct\": %.1f",
                       dist_name[c->dist], c->nproc, c->ok ? "true" : "false", c->mops,
                       c->mops_proc, c->ns_op, c->ns_cpu, c->cpu_pct, c->p50, c->p99, c->p999,
                       c->get_p99, c->set_p99,
                       (unsigned long long)c->gets, (unsigned long long)c->hits,
                       (unsigned long long)c->misses, (unsigned long long)c->bad,
                       (unsigned long long)c->sets, (unsigned long long)c->errors, c->w_mops,
                       c->other_pct);
                if (c->sys == SYS_STOA && L && c->ok) {
                        double d = c->wl == WL_BATCH ? L->indep_ns : L->dep_ns;
                        printf(", \"x_%s\": %.3f", c->wl == WL_BATCH ? "indep" : "dep",
                               c->ns_cpu / d);
                }
                printf(", \"msg\": ");
                json_str(c->msg);
                printf("}");
        }
        printf("]");
}

static void print_json(const struct bench *B)
{
        struct target t[8];
        int nt = targets(B, t);

        json_config(B);
        json_limits_sets(B);
        json_cases(B);
        printf(",\n \"targets\": [");
        for (int i = 0; i < nt; i++) {
                printf("%s\n  {\"target\": ", i ? "," : "");
                json_str(t[i].what);
                printf(", \"met\": %s, \"measured\": ",
                       t[i].met < 0 ? "null" : t[i].met ? "true" : "false");
                json_str(t[i].got);
                printf("}");
        }
        printf("]}\n");
}

/* ---- options, tmp dir, main ------------------------------------------------------------ */

static void usage(FILE *f)
{
        fprintf(f,
                "usage: stoa-bench [--quick] [--seconds S] [--keys N] [--klen B] [--vlen B]\n"
                "                  [--procs 1,2] [--batch N] [--depth N] [--size BYTES]\n"
                "                  [--big-keys N] [--no-big] [--no-redis] [--no-lmdb]\n"
                "                  [--huge auto|require|refuse] [--no-pin] [--dir DIR]\n"
                "                  [--redis-server PATH] [--json]\n"
                "  --quick      short run (0.2 s per case, no 1 GiB set) for meson test --benchmark\n"
                "  --seconds    measured seconds per case (default 3; warm-up 10%% more)\n"
                "  --keys       keys of the main set (default 1M)\n"
                "  --klen/vlen  key and value bytes (16, 64); klen 8..1024, vlen 0..65536\n"
                "  --procs      process counts to run (default 1,2)\n"
                "  --batch      keys per stoa_mget and per LMDB batch txn (16; up to %d)\n"
                "  --depth      Redis pipeline depth (16; up to %d)\n"
                "  --size       main segment size (default: from keys, klen and vlen)\n"
                "  --big-keys   keys of the 1 GiB set (default: what fills ~1 GiB)\n"
                "  --no-big     skip the 1 GiB set\n"
                "  --huge       hugepages for the segments (auto: if the host has them)\n"
                "  --dir        where to make the tmp dir (default /dev/shm, else $TMPDIR, /tmp)\n"
                "  --json       one JSON object on stdout instead of the tables\n", MAX_BATCH,
                MAX_BATCH);
}

static int parse_list(const char *s, struct opts *o)
{
        char *end;

        o->nprocs = 0;
        while (*s) {
                long v = strtol(s, &end, 10);
                if (end == s || v < 1 || v > MAX_PROCS || o->nprocs == 8)
                        return -1;
                o->procs[o->nprocs++] = (int)v;
                s = *end == ',' ? end + 1 : end;
                if (*end && *end != ',')
                        return -1;
        }
        return o->nprocs ? 0 : -1;
}

static uint64_t parse_size(const char *s)
{
        uint64_t v;

        return cli_parse_size(s, &v) == 0 ? v : UINT64_MAX;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
        static const struct option lo[] = {
                { "quick", no_argument, NULL, 'q' },
                { "seconds", required_argument, NULL, 's' },
                { "keys", required_argument, NULL, 'k' },
                { "klen", required_argument, NULL, 'K' },
                { "vlen", required_argument, NULL, 'V' },
                { "procs", required_argument, NULL, 'p' },
                { "batch", required_argument, NULL, 'b' },
                { "depth", required_argument, NULL, 'd' },
                { "size", required_argument, NULL, 'S' },
                { "big-keys", required_argument, NULL, 'B' },
                { "no-big", no_argument, NULL, 'G' },
                { "no-redis", no_argument, NULL, 'R' },
                { "no-lmdb", no_argument, NULL, 'L' },
                { "huge", required_argument, NULL, 'H' },
                { "no-pin", no_argument, NULL, 'P' },
                { "dir", required_argument, NULL, 'D' },
                { "redis-server", required_argument, NULL, 'r' },
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        double secs = -1;
        int ch;

        *o = (struct opts){ .keys = 1000000, .klen = 16, .vlen = 64, .batch = 16, .depth = 16,
                            .big = true, .redis = true, .lmdb = true, .pin = true,
                            .redis_bin = "redis-server", .procs = { 1, 2 }, .nprocs = 2 };
        while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
                switch (ch) {
                case 'q': o->quick = true; break;
                case 's': secs = strtod(optarg, NULL); break;
                case 'k': o->keys = parse_size(optarg); break;
                case 'K': o->klen = (uint32_t)parse_size(optarg); break;
                case 'V': o->vlen = (uint32_t)parse_size(optarg); break;
                case 'p':
                        if (parse_list(optarg, o)) {
                                fprintf(stderr, "stoa-bench: --procs: a list like 1,2 (1..%d)\n",
                                        MAX_PROCS);
                                return -1;
                        }
                        break;
                case 'b': o->batch = (uint32_t)parse_size(optarg); break;
                case 'd': o->depth = (uint32_t)parse_size(optarg); break;
                case 'S': o->size = parse_size(optarg); break;
                case 'B': o->big_keys = parse_size(optarg); break;
                case 'G': o->big = false; break;
                case 'R': o->redis = false; break;
                case 'L': o->lmdb = false; break;
                case 'H':
                        if (strcmp(optarg, "require") == 0)
                                o->huge_flags = STOA_OPEN_HUGE;
                        else if (strcmp(optarg, "refuse") == 0)
                                o->huge_flags = STOA_OPEN_NOHUGE;
                        else if (strcmp(optarg, "auto") != 0)
                                return usage(stderr), -1;
                        break;
                case 'P': o->pin = false; break;
                case 'D': o->dir = optarg; break;
                case 'r': o->redis_bin = optarg; break;
                case 'j': o->json = true; break;
                case 'h': usage(stdout); exit(0);
                default: usage(stderr); return -1;
                }
        }
        o->seconds = secs > 0 ? secs : o->quick ? 0.2 : 3.0;
        o->warm = o->seconds / 10 < 0.05 ? 0.05 : o->seconds / 10 > 0.5 ? 0.5 : o->seconds / 10;
        o->lim_s = o->quick ? 0.1 : 0.4;
        if (o->quick)
                o->big = false;
        if (optind < argc || o->keys < 2 || o->keys > UINT32_MAX || o->klen < 8 ||
            o->klen > 1024 || o->vlen > 65536 || o->batch < 1 || o->batch > MAX_BATCH ||
            o->depth < 1 || o->depth > MAX_BATCH || o->size == UINT64_MAX ||
            (o->big_keys && o->big_keys > UINT32_MAX) || !(secs < 0 || secs > 0)) {
                usage(stderr);
                return -1;
        }
        return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)flag;
        (void)ftw;
        remove(path);
        return 0;
}

/*
 * The guardian: forked before anything else, it waits for the read end of a
 * pipe whose only write end is ours to close (when we exit, by any path, even
 * SIGKILL), then removes the tmp dir. It ignores the terminal's signals so a
 * Ctrl-C reaches it only through our death.
 */
static int guardian(struct bench *B)
{
        int p[2];

        if (pipe2(p, O_CLOEXEC))
                return -errno;
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                char c;
                int nul = open("/dev/null", O_RDWR);
                signal(SIGINT, SIG_IGN);
                signal(SIGTERM, SIG_IGN);
                signal(SIGHUP, SIG_IGN);
                signal(SIGQUIT, SIG_IGN);
                close(p[1]);
                if (nul >= 0) {
                        dup2(nul, 0);
                        dup2(nul, 1);
                        dup2(nul, 2);
                }
                setsid();
                while (read(p[0], &c, 1) < 0 && errno == EINTR)
                        ;
                nftw(B->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
                _exit(0);
        }
        close(p[0]);
        B->guard_fd = p[1];
        return 0;
}

static int make_dir(struct bench *B)
{
        const char *base = B->o.dir;
        struct stat st;

        if (!base)
                base = stat("/dev/shm", &st) == 0 && access("/dev/shm", W_OK) == 0 ? "/dev/shm" :
                       getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(B->dir, sizeof(B->dir), "%s/stoa-bench.XXXXXX", base);
        if (!mkdtemp(B->dir)) {
                fprintf(stderr, "stoa-bench: mkdtemp %s: %s\n", B->dir, strerror(errno));
                return -1;
        }
        if (guardian(B) < 0) {
                fprintf(stderr, "stoa-bench: cannot fork the cleanup process: %s\n",
                        strerror(errno));
                rmdir(B->dir);
                return -1;
        }
        setenv("STOA_DIR", B->dir, 1);
        return 0;
}

static uint64_t round_up(uint64_t v, uint64_t to)
{
        return (v + to - 1) / to * to;
}

/* The main segment: room for every key twice over, so no GET misses by eviction. */
static uint64_t main_size(const struct opts *o)
{
        uint64_t per = o->klen + o->vlen + 64;

        if (o->size)
                return o->size;
        return round_up(o->keys * per * 2 + (64ull << 20), 2u << 20);
}


int main(int argc, char **argv)
{
        static struct bench Bs;
        struct bench *B = &Bs;
        struct cpu_use u;

        if (parse_opts(argc, argv, &B->o) < 0)
                return 2;
        B->ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
        B->tty = isatty(2);
        B->main_set = B->big_set = -1;
        B->lim_gib4k = B->lim_gibhuge = -1;
        B->guard_fd = -1;
        signal(SIGPIPE, SIG_IGN);
        B->ctl = mmap(NULL, sizeof(struct ctl), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (B->ctl == MAP_FAILED) {
                fprintf(stderr, "stoa-bench: mmap: %s\n", strerror(errno));
                return 1;
        }
        if (make_dir(B) < 0)
                return 1;
        exit_bench = B;
        atexit(at_exit);
        B->timer_ovh = timer_calibrate();
        B->harness = harness_ns(B->o.klen, B->o.vlen, B->o.keys);
        if (!B->o.json)
                print_intro(B);
        cpu_use(&B->cpu0);

        B->sets[0] = (struct kset){ .tag = "cached", .name = "cached", .keys = CACHED_KEYS,
                                    .size = CACHED_SIZE };
        B->sets[1] = (struct kset){ .tag = "main", .name = "main", .keys = B->o.keys,
                                    .size = main_size(&B->o) };
        B->main_set = 1;
        B->nsets = 2;
        for (int si = 0; si < 2; si++) {
                run_set(B, si);
                if (B->tty)
                        fprintf(stderr, "\r\033[K");
                if (!B->o.json)
                        print_set(B, si);
                fflush(stdout);
                if (B->sets[si].h)
                        set_release(B, &B->sets[si]);
        }
        /* The 1 GiB limit always; the 1 GiB set in the full run. */
        limits_at(B, BIG_WS, &B->lim_gib4k, &B->lim_gibhuge);
        if (B->o.big) {
                B->big_set = B->nsets++;
                B->sets[B->big_set] = (struct kset){ .tag = "1GiB", .name = "big",
                                                     .keys = 0, .size = BIG_SIZE };
                run_set(B, B->big_set);
                if (B->tty)
                        fprintf(stderr, "\r\033[K");
                if (!B->o.json)
                        print_set(B, B->big_set);
                if (B->sets[B->big_set].h)
                        set_release(B, &B->sets[B->big_set]);
        }
        cpu_use(&u);
        B->wall_s = u.wall_s - B->cpu0.wall_s;
        B->steal_s = u.steal_s - B->cpu0.steal_s;
        B->others_s = u.busy_s - B->cpu0.busy_s - (u.mine_s - B->cpu0.mine_s);
        if (B->others_s < 0)
                B->others_s = 0;        /* tick granularity */
        if (B->o.json)
                print_json(B);
        else
                print_end(B);
        fflush(stdout);
        redis_stop(B);
        nftw(B->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        close(B->guard_fd);
        return 0;
}
