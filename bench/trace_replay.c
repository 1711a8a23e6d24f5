/*
 * bench/trace_replay.c: replay real cache traces through a real stoa segment
 * and print the miss ratios beside the reference LRU and S3-FIFO figures of
 * ../shared/traces/README.md (libCacheSim, 1% and 10% of the working set).
 *
 * The program is a cache-aside client and uses only the public API: for each
 * request, stoa_get(); on a miss, count it and stoa_set() the object. The
 * miss ratio is over the whole trace, cold start included, as libCacheSim
 * reports it.
 *
 * The hard part is making "a cache of N objects" mean the same thing for stoa
 * as for the simulator. The references count objects (adaptsize: bytes),
 * while a segment has a size in bytes from which the header, slot table,
 * page descriptors and index are taken before the heap, which the allocator
 * carves into 64 KiB pages given to one size class each, and which itself
 * grows in whole 2 MiB arena steps. So:
 *
 *   w106, scarab  Every object gets the same value length (VLEN_DEFAULT,
 *                 chosen so that an item falls in the 4 KiB size class: 15
 *                 items a 64 KiB page, the finest capacity step that keeps
 *                 the replay fast). Calibration fills a fresh segment with
 *                 distinct keys until the handle's stats show an eviction,
 *                 then with as many again; stoa_info().items is then its
 *                 steady-state capacity. The segment is grown until that is
 *                 at least the target, then pages of ballast (below) are
 *                 added until the capacity is the nearest reachable.
 *   adaptsize     Values have the object's real size. The segment is sized
 *                 so that its heap less the ballast is the target (a
 *                 fraction of the distinct bytes); item bytes resident are
 *                 reported.
 *
 * The run then reports the capacity actually achieved (items or item bytes
 * resident at the end, from stoa_info), and, to separate capacity from
 * policy, the miss ratios of LRU, S3-FIFO and 2-bit CLOCK simulated here
 * (bench/trace_sim.h) at the target and at the achieved capacity.
 *
 * Traces are decompressed with `xz -dc` through popen() into memory (never
 * to disk; bench/trace_load.h). Segments live in a private STOA_DIR under /dev/shm that is
 * removed at exit. Figures are printed, never judged against a time.
 */
#include "bench/trace_load.h"
#include "bench/trace_sim.h"
#include "stoa/stoa.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define VLEN_DEFAULT  3968u             /* + key + item header + stamp: the 4 KiB class */
#define SEG_ALIGN     (64u << 10)       /* segment sizes tried are multiples of this */
#define CAL_MAX       12                /* segment sizes tried by a calibration */
#define MAX_SIZES     8

/* ---- traces and their reference figures ---------------------------------- */

static const struct trace_def trace_defs[] = {
        { "w106", "w106.trace.xz", FMT_U32BE, 4 },
        { "scarab", "scarab-recs.trace.xz", FMT_U64BE, 8 },
        { "adaptsize", "adaptsize-request.trace.xz", FMT_TEXT, 8 },
        { "scan", NULL, FMT_SCAN, 8 },  /* made here: a hot set, a one-time scan (trace_load.h) */
};
#define NTRACES (sizeof(trace_defs) / sizeof(trace_defs[0]))

struct ref {
        const char *trace;
        double size, lru, s3fifo;
};

/* From ../shared/traces/README.md (libCacheSim). */
static const struct ref refs[] = {
        { "w106", 0.01, 0.202, 0.188 },      { "w106", 0.10, 0.082, 0.078 },
        { "scarab", 0.01, 0.653, 0.573 },    { "scarab", 0.10, 0.394, 0.372 },
        { "adaptsize", 0.01, 0.754, 0.718 }, { "adaptsize", 0.10, 0.656, 0.622 },
};

static const struct ref *ref_find(const char *trace, double size)
{
        for (size_t i = 0; i < sizeof(refs) / sizeof(refs[0]); i++)
                if (!strcmp(refs[i].trace, trace) && refs[i].size > size - 1e-9 &&
                    refs[i].size < size + 1e-9)
                        return &refs[i];
        return NULL;
}

static uint64_t round_up(uint64_t x, uint64_t a)
{
        return (x + a - 1) / a * a;
}

/* A segment size to try: `x` rounded up, and no smaller than stoa allows (ballast trims it). */
static uint64_t seg_size_for(uint64_t x)
{
        x = round_up(x, SEG_ALIGN);
        return x < STOA_SIZE_MIN ? STOA_SIZE_MIN : x;
}

/* ---- stoa segments ---------------------------------------------------------- */

static bool verbose, ballast_on = true;
static char seg_dir[64];
static unsigned seg_seq;

static void seg_dir_cleanup(void)
{
        DIR *d;
        struct dirent *e;
        char path[PATH_MAX];

        if (!seg_dir[0])
                return;
        d = opendir(seg_dir);
        if (d) {
                while ((e = readdir(d))) {
                        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                                continue;
                        path_join(path, sizeof(path), seg_dir, e->d_name);
                        unlink(path);
                }
                closedir(d);
        }
        rmdir(seg_dir);
        seg_dir[0] = 0;
}

/*
 * Killed (Ctrl-C, or a closed pipe: `| head`), remove the segment in use and
 * the directory, with async-signal-safe calls only, then die of the signal.
 */
static char seg_path_now[PATH_MAX];

static void on_signal(int sig)
{
        if (seg_path_now[0])
                unlink(seg_path_now);
        rmdir(seg_dir);
        signal(sig, SIG_DFL);
        raise(sig);
}

static void seg_dir_make(void)
{
        static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGPIPE };

        snprintf(seg_dir, sizeof(seg_dir), "/dev/shm/stoa-replay-XXXXXX");
        if (!mkdtemp(seg_dir)) {
                snprintf(seg_dir, sizeof(seg_dir), "/tmp/stoa-replay-XXXXXX");
                if (!mkdtemp(seg_dir))
                        die("mkdtemp", errno);
        }
        if (setenv("STOA_DIR", seg_dir, 1))
                die("setenv", errno);
        atexit(seg_dir_cleanup);
        for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
                signal(sigs[i], on_signal);
}

/*
 * A fresh segment of `size` bytes in the private STOA_DIR, 4 KiB pages.
 * NULL if the size is too small for a segment (-ENOSPC): calibration then
 * grows it.
 */
static struct stoa *seg_create(uint64_t size, char *ret_name, size_t cap)
{
        struct stoa_options o = { .size = size, .flags = STOA_OPEN_NOHUGE };
        struct stoa *c;
        int r;

        snprintf(ret_name, cap, "replay-%u", ++seg_seq);
        path_join(seg_path_now, sizeof(seg_path_now), seg_dir, ret_name);
        r = stoa_open(&c, ret_name, &o);
        if (r == -ENOSPC)
                return NULL;
        if (r) {
                fprintf(stderr, "trace-replay: stoa_open(size %" PRIu64 "): %s\n", size,
                        stoa_strerror(r));
                exit(1);
        }
        return c;
}

static void seg_destroy(struct stoa *c, const char *name)
{
        char path[PATH_MAX];

        stoa_close(c);
        path_join(path, sizeof(path), seg_dir, name);
        unlink(path);
}

static void key_encode(unsigned char *kb, uint64_t k, unsigned klen)
{
        for (unsigned i = 0; i < klen; i++)
                kb[i] = (unsigned char)(k >> (8 * (klen - 1 - i)));
}

/* ---- ballast ------------------------------------------------------------------ */

/*
 * A segment's heap grows in steps of whole arenas (2 MiB, 480 items of the
 * 4 KiB class), far coarser than a 1% cache. To land on the target, the
 * replay takes a slightly larger heap and fills the excess with ballast: one
 * value that is a run of whole 64 KiB pages, held by a zero-copy view for
 * the whole run. The view pins the memory, so even if an eviction hand
 * unlinks the ballast, its pages stay taken: capacity moves in steps of one
 * page (15 items, 0.6% of the smallest target). The ballast is never read
 * by the trace and its item is left out of the counts reported.
 */
#define PAGE_BYTES   (64u << 10)
static const char ballast_key[] = "stoa-replay-ballast";

struct ballast {
        unsigned pages;
        bool held;
        struct stoa_view v;
};

static void ballast_add(struct stoa *c, struct ballast *b)
{
        size_t vlen = (size_t)b->pages * PAGE_BYTES - 256;   /* 256: item header and key fit */
        unsigned char *val;
        int r;

        b->held = false;
        if (!b->pages)
                return;
        val = xcalloc(vlen, 1);
        r = stoa_set(c, ballast_key, sizeof(ballast_key) - 1, val, vlen, 0);
        if (r)
                die("ballast: stoa_set", r);
        r = stoa_view_get(c, ballast_key, sizeof(ballast_key) - 1, &b->v);
        if (r)
                die("ballast: stoa_view_get", r);
        b->held = true;
        free(val);
}

/* Items and item bytes of `info` without the ballast's, if it is still linked. */
static void ballast_discount(struct stoa *c, const struct ballast *b, struct stoa_info *info,
                             bool *ret_linked)
{
        uint32_t ttl;

        *ret_linked = b->pages && stoa_ttl(c, ballast_key, sizeof(ballast_key) - 1, &ttl) == 0;
        if (*ret_linked) {
                info->items -= 1;
                info->item_bytes -= sizeof(ballast_key) - 1 + b->v.vlen;
        }
}

static void ballast_release(struct stoa *c, struct ballast *b)
{
        if (b->held)
                stoa_view_release(c, &b->v);
        b->held = false;
}

/* ---- calibration ------------------------------------------------------------ */

struct capm {                           /* one segment size and ballast measured */
        uint64_t seg_size;
        unsigned ballast;               /* pages */
        uint64_t first_inserts;         /* distinct keys set when the first eviction showed */
        uint64_t first_items;           /* items resident then */
        uint64_t items;                 /* after as many inserts again: the capacity */
        uint64_t heap_bytes, used_bytes, index_buckets, index_entries;
        uint64_t set_fails;
};

static void measure_capacity(unsigned klen, size_t vlen, uint64_t seg_size, unsigned ballast,
                             struct capm *m)
{
        static unsigned char val[1u << 16];
        char name[32];
        struct stoa *c = seg_create(seg_size, name, sizeof(name));
        struct ballast b = { .pages = ballast };
        struct stoa_info info;
        struct stoa_stats st;
        uint64_t limit = seg_size / vlen + 1024, i;
        unsigned char kb[8];
        bool linked;

        memset(m, 0, sizeof(*m));
        m->seg_size = seg_size;
        m->ballast = ballast;
        if (!c)
                return;
        ballast_add(c, &b);
        for (i = 0; i < limit; i++) {
                key_encode(kb, i + 1, klen);
                memcpy(val, &i, sizeof(i));
                if (stoa_set(c, kb, klen, val, vlen, 0))
                        m->set_fails++;
                if (m->first_inserts)
                        continue;
                stoa_stats_get(c, &st);
                if (st.evictions) {
                        m->first_inserts = i + 1;
                        if (stoa_info(c, &info) == 0) {
                                ballast_discount(c, &b, &info, &linked);
                                m->first_items = info.items;
                        }
                        limit = 2 * (i + 1) + 1024;
                }
        }
        if (stoa_info(c, &info) == 0) {
                ballast_discount(c, &b, &info, &linked);
                if (verbose)
                        fprintf(stderr, "  cal: segment %" PRIu64 " heap %" PRIu64 " ballast %u%s"
                                " buckets %" PRIu64 ": first eviction after %" PRIu64
                                " sets (%" PRIu64 " items), steady %" PRIu64 " items\n",
                                seg_size, info.heap_bytes, ballast,
                                ballast && !linked ? " (evicted)" : "", info.index_buckets,
                                m->first_inserts, m->first_items, info.items);
                m->items = info.items;
                m->heap_bytes = info.heap_bytes;
                m->used_bytes = info.used_bytes;
                m->index_buckets = info.index_buckets;
                m->index_entries = info.index_entries;
        }
        ballast_release(c, &b);
        seg_destroy(c, name);
}

static uint64_t dist(uint64_t a, uint64_t b)
{
        return a > b ? a - b : b - a;
}

static bool better(const struct capm *m, const struct capm *best, uint64_t target)
{
        uint64_t d = dist(m->items, target), bd = dist(best->items, target);

        return d < bd || (d == bd && m->items > best->items);
}

/*
 * The segment and ballast whose steady-state capacity is nearest `target`
 * objects: first a segment that holds at least the target, found by growing
 * a guess by the measured bytes per item; then the ballast, a page at a time
 * worth ~15 items, bracketed until neighbouring ballasts straddle the target.
 */
static void calibrate_objects(unsigned klen, size_t vlen, uint64_t target, struct capm *best,
                              int *ret_tries)
{
        uint64_t s = seg_size_for((2u << 20) + target * (vlen + klen + 256));
        struct capm m;
        int n = 0;

        measure_capacity(klen, vlen, s, 0, &m);
        n++;
        while (m.items < target && n < CAL_MAX) {
                /* heap bytes an item takes, plus one arena step of slack */
                double per = m.items ? (double)m.heap_bytes / (double)m.items : (double)vlen * 2;
                s = round_up(s + (uint64_t)((double)(target - m.items) * per * 1.02) + (2u << 20),
                             SEG_ALIGN);
                measure_capacity(klen, vlen, s, 0, &m);
                n++;
        }
        *best = m;
        if (m.items <= target || !m.heap_bytes || !ballast_on) {
                *ret_tries = n;
                return;
        }
        double per_page = (double)m.items * PAGE_BYTES / (double)m.heap_bytes;
        long lo = 0, hi = -1;           /* ballast known to leave >= / < target */
        long b = (long)((double)(m.items - target) / per_page);

        while (n < CAL_MAX) {
                if (b <= lo || (hi >= 0 && b >= hi))
                        break;
                measure_capacity(klen, vlen, s, (unsigned)b, &m);
                n++;
                if (better(&m, best, target))
                        *best = m;
                if (m.items == target)
                        break;
                if (m.items > target)
                        lo = b;
                else
                        hi = b;
                long step = lround(((double)m.items - (double)target) / per_page);
                if (step == 0)
                        step = m.items > target ? 1 : -1;
                b += step;
                if (b <= lo)
                        b = lo + 1;
                if (hi >= 0 && b >= hi)
                        b = hi - 1;
        }
        *ret_tries = n;
}

static uint64_t heap_of(uint64_t seg_size)
{
        struct stoa_info info;
        char name[32];
        struct stoa *c = seg_create(seg_size, name, sizeof(name));
        int r;

        if (!c)
                return 0;
        r = stoa_info(c, &info);
        if (r)
                die("stoa_info", r);
        if (verbose)
                fprintf(stderr, "  cal: segment %" PRIu64 " heap %" PRIu64 "\n", seg_size,
                        info.heap_bytes);
        seg_destroy(c, name);
        return info.heap_bytes;
}

/*
 * A segment whose heap holds at least `target` bytes, and the ballast that
 * brings it nearest the target.
 */
static void calibrate_heap(uint64_t target, struct capm *cal, int *ret_tries)
{
        uint64_t s = seg_size_for(target + (target >> 3) + (4u << 20)), h = 0;
        int n = 0;

        for (;;) {
                h = heap_of(s);
                n++;
                if (h >= target || n >= CAL_MAX)
                        break;
                s += round_up(h ? target - h : 2u << 20, SEG_ALIGN);
        }
        memset(cal, 0, sizeof(*cal));
        cal->seg_size = s;
        cal->heap_bytes = h;
        if (ballast_on && h > target)
                cal->ballast = (unsigned)((h - target + PAGE_BYTES / 2) / PAGE_BYTES);
        *ret_tries = n;
}

/* ---- replay ----------------------------------------------------------------- */

struct result {
        const struct trace *t;
        double size;
        uint64_t target;                /* objects, or bytes for adaptsize */
        struct capm cal;                /* the calibration chosen */
        int cal_tries;
        uint64_t seg_size;
        unsigned ballast;               /* pages */
        bool ballast_linked;            /* still in the index at the end (else pinned only) */
        uint64_t misses, hits, bad_hits, get_errs;
        uint64_t set_e2big, set_enomem, set_eagain, set_other;
        struct stoa_info end;           /* at the end of the replay */
        struct stoa_stats st;
        double secs;
        double lru_t, lru_a, s3_t, s3_a;        /* simulated at target / achieved */
        double clock_a;                 /* 2-bit CLOCK simulated at achieved */
};

static int set_retry(struct stoa *c, const void *k, unsigned klen, const void *v, size_t vlen)
{
        int r = stoa_set(c, k, klen, v, vlen, 0);

        for (int i = 0; r == -EAGAIN && i < 100; i++) {
                stoa_sweep(c);
                r = stoa_set(c, k, klen, v, vlen, 0);
        }
        return r;
}

/* --verbose: what the heap looked like when a set found no memory. */
static void enomem_report(struct stoa *c, size_t vlen, size_t i)
{
        static struct stoa_info info;

        if (stoa_info(c, &info) == 0)
                fprintf(stderr, "  request %zu: stoa_set of %zu bytes: -ENOMEM with heap %" PRIu64
                        ", used %" PRIu64 ", free %" PRIu64 ", %" PRIu64 " items of %" PRIu64
                        " bytes\n", i, vlen, info.heap_bytes, info.used_bytes, info.free_bytes,
                        info.items, info.item_bytes);
}

static void replay(struct result *res, size_t vlen_fixed)
{
        const struct trace *t = res->t;
        unsigned klen = t->def->klen;
        size_t cap = (t->req_size ? t->max_size : vlen_fixed) + 64;
        unsigned char *val = xcalloc(cap, 1), *buf = xcalloc(cap, 1), kb[8];
        char name[32];
        struct stoa *c = seg_create(res->seg_size, name, sizeof(name));
        struct ballast bal = { .pages = res->ballast };
        double t0;

        if (!c)
                die("stoa_open", ENOSPC);
        ballast_add(c, &bal);
        t0 = now_s();

        for (size_t i = 0; i < t->nreq; i++) {
                uint64_t key = t->obj_key[t->req_obj[i]];
                size_t vlen = t->req_size ? t->req_size[i] : vlen_fixed, got = 0;
                size_t tag = vlen < sizeof(key) ? vlen : sizeof(key);

                key_encode(kb, key, klen);
                int r = stoa_get(c, kb, klen, buf, cap, &got);
                if (r == 0) {
                        res->hits++;
                        /* adaptsize objects may change size: a hit is a hit, as in libCacheSim */
                        if (memcmp(buf, &key, got < sizeof(key) ? got : sizeof(key)))
                                res->bad_hits++;
                        continue;
                }
                if (r != -ENOENT)
                        res->get_errs++;
                res->misses++;
                memcpy(val, &key, tag);         /* the value names its key: hits are checked */
                r = set_retry(c, kb, klen, val, vlen);
                if (r == -E2BIG) {
                        res->set_e2big++;
                } else if (r == -ENOMEM) {
                        if (++res->set_enomem <= 5 && verbose)
                                enomem_report(c, vlen, i);
                } else if (r == -EAGAIN) {
                        res->set_eagain++;
                } else if (r) {
                        res->set_other++;
                }
        }
        res->secs = now_s() - t0;
        stoa_stats_get(c, &res->st);
        int r = stoa_info(c, &res->end);
        if (r)
                die("stoa_info", r);
        ballast_discount(c, &bal, &res->end, &res->ballast_linked);
        ballast_release(c, &bal);
        seg_destroy(c, name);
        free(val);
        free(buf);
}

static void run_one(struct result *res, const struct trace *t, double size, size_t vlen)
{
        bool bytes = t->req_size != NULL;
        uint64_t achieved;

        memset(res, 0, sizeof(*res));
        res->t = t;
        res->size = size;
        res->target = (uint64_t)((double)(bytes ? t->distinct_bytes : t->nobj) * size);
        if (bytes)
                calibrate_heap(res->target, &res->cal, &res->cal_tries);
        else
                calibrate_objects(t->def->klen, vlen, res->target, &res->cal, &res->cal_tries);
        res->seg_size = res->cal.seg_size;
        res->ballast = res->cal.ballast;
        replay(res, vlen);
        achieved = bytes ? res->end.item_bytes : res->end.items;
        struct sim_trace st = { t->nreq, t->nobj, t->req_obj, t->req_size };
        res->lru_t = sim_lru(&st, res->target);
        res->s3_t = sim_s3fifo(&st, res->target);
        res->lru_a = achieved ? sim_lru(&st, achieved) : 1.0;
        res->s3_a = achieved ? sim_s3fifo(&st, achieved) : 1.0;
        res->clock_a = achieved ? sim_clock2(&st, achieved) : 1.0;
}

/* ---- output ------------------------------------------------------------------ */

static void fmt_amount(char *out, size_t cap, uint64_t v, bool bytes)
{
        if (bytes)
                snprintf(out, cap, "%.2f MB", (double)v / 1e6);
        else
                snprintf(out, cap, "%" PRIu64, v);
}

static void print_table(const struct result *rs, size_t n)
{
        printf("\n| trace | size | objects (target/achieved) | stoa miss | LRU | S3-FIFO | <= S3-FIFO? | replay time | ops/s |\n");
        printf("|---|---|---|---|---|---|---|---|---|\n");
        for (size_t i = 0; i < n; i++) {
                const struct result *r = &rs[i];
                bool bytes = r->t->req_size != NULL;
                const struct ref *ref = ref_find(r->t->def->name, r->size);
                double miss = (double)r->misses / (double)r->t->nreq;
                /* Without libCacheSim's figures (the made-up traces), the simulation's at the target. */
                double lru = ref ? ref->lru : r->lru_t, s3 = ref ? ref->s3fifo : r->s3_t;
                const char *mark = ref ? "" : "*";
                char a[32], b[32], verdict[48];

                fmt_amount(a, sizeof(a), r->target, bytes);
                fmt_amount(b, sizeof(b), bytes ? r->end.item_bytes : r->end.items, bytes);
                if (miss <= s3 + 0.0005)                /* the references have 3 decimals */
                        snprintf(verdict, sizeof(verdict), "yes (%+.3f)", miss - s3);
                else
                        snprintf(verdict, sizeof(verdict), "NO (+%.3f)", miss - s3);
                printf("| %s | %g%% | %s / %s%s | %.4f | %.3f%s | %.3f%s | %s | %.2f s | %.0f |\n",
                       r->t->def->name, r->size * 100, a, b, bytes ? " (bytes)" : "", miss,
                       lru, mark, s3, mark, verdict, r->secs, (double)r->t->nreq / r->secs);
        }
}

static void print_details(const struct result *rs, size_t n, size_t vlen)
{
        printf("\nDetails. cal: segments tried; for w106/scarab the chosen calibration's first\n"
               "eviction (after N distinct sets, items resident) and steady-state items. end: at the\n"
               "end of the replay. sim: LRU and S3-FIFO simulated here (libCacheSim semantics) at\n"
               "the target and at the capacity stoa achieved; CLOCK-2bit (stoa's policy) at the\n"
               "capacity stoa achieved.\n\n");
        printf("| trace | size | segment | heap | ballast | cal | end items / index entries / buckets | "
               "item bytes | used bytes | evictions | set fails E2BIG/ENOMEM/EAGAIN/other | bad hits / get errors | "
               "sim LRU tgt / ach | sim S3-FIFO tgt / ach | sim CLOCK-2bit ach |\n");
        printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for (size_t i = 0; i < n; i++) {
                const struct result *r = &rs[i];
                printf("| %s | %g%% | %.2f MiB | %.2f MiB | %u pages%s | ", r->t->def->name,
                       r->size * 100, (double)r->seg_size / 1048576.0,
                       (double)r->end.heap_bytes / 1048576.0, r->ballast,
                       r->ballast && !r->ballast_linked ? " (unlinked, pinned)" : "");
                if (r->t->req_size)
                        printf("%d: heap - ballast = %.3f MB for %.3f MB | ", r->cal_tries,
                               (double)(r->cal.heap_bytes - (uint64_t)r->ballast * PAGE_BYTES) / 1e6,
                               (double)r->target / 1e6);
                else
                        printf("%d: %" PRIu64 " (%" PRIu64 ") -> %" PRIu64 " | ", r->cal_tries,
                               r->cal.first_inserts, r->cal.first_items, r->cal.items);
                printf("%" PRIu64 " / %" PRIu64 " / %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | %" PRIu64
                       " | %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64 " | %" PRIu64 " / %" PRIu64
                       " | %.4f / %.4f | %.4f / %.4f | %.4f |\n",
                       r->end.items, r->end.index_entries, r->end.index_buckets, r->end.item_bytes,
                       r->end.used_bytes, r->st.evictions, r->set_e2big, r->set_enomem,
                       r->set_eagain, r->set_other, r->bad_hits, r->get_errs, r->lru_t, r->lru_a, r->s3_t, r->s3_a,
                       r->clock_a);
        }
        printf("\n* scan is made by the bench (a hot set, a one-time scan, the hot set again): its\n"
               "LRU and S3-FIFO are simulated here at the target, not libCacheSim's.\n"
               "w106/scarab/scan: every value is %zu bytes (an item in the 4 KiB size class, 15 a page).\n"
               "Used bytes include the ballast; items and item bytes do not.\n"
               "Miss ratio is over the whole trace, cold start included (as libCacheSim reports it).\n"
               "ops/s = requests / replay time; a request is a stoa_get, plus a stoa_set on a miss.\n",
               vlen);
}

/* ---- where the traces are ----------------------------------------------------- */

static bool is_trace_dir(const char *dir)
{
        char p[PATH_MAX];

        path_join(p, sizeof(p), dir, trace_defs[0].file);
        return access(p, R_OK) == 0;
}

static void strip_last(char *path)     /* "a/b/c" -> "a/b"; "c" -> "." */
{
        char *s = strrchr(path, '/');

        if (!s)
                strcpy(path, ".");
        else if (s == path)
                path[1] = 0;
        else
                *s = 0;
}

/* Try dir/../shared/traces and dir/shared/traces for dir and each ancestor. */
static bool walk_up(const char *start, char *out, size_t cap)
{
        char dir[PATH_MAX], cand[PATH_MAX];

        if (!realpath(start, dir))
                return false;
        for (;;) {
                path_join(cand, sizeof(cand), dir, "../shared/traces");
                if (is_trace_dir(cand) && realpath(cand, out) && strlen(out) < cap)
                        return true;
                path_join(cand, sizeof(cand), dir, "shared/traces");
                if (is_trace_dir(cand) && realpath(cand, out) && strlen(out) < cap)
                        return true;
                if (!strcmp(dir, "/"))
                        return false;
                strip_last(dir);
        }
}

/*
 * --dir, else $STOA_TRACES, else ../shared/traces beside the repository,
 * which is found from this file's compiled-in path (__FILE__ is relative to
 * the build directory, the parent of the executable's), the executable's own
 * path, or the working directory.
 */
static void find_traces(const char *opt, char *out, size_t cap)
{
        char exe[PATH_MAX], p[PATH_MAX * 2];
        const char *env = getenv("STOA_TRACES");
        ssize_t n;

        if (opt || (env && *env)) {
                snprintf(out, cap, "%s", opt ? opt : env);
                if (!is_trace_dir(out)) {
                        fprintf(stderr, "trace-replay: no %s in %s\n", trace_defs[0].file, out);
                        exit(1);
                }
                return;
        }
        n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        exe[n > 0 ? n : 0] = 0;
        strip_last(exe);
        if (__FILE__[0] == '/') {
                snprintf(p, sizeof(p), "%s", __FILE__);
        } else {
                snprintf(p, sizeof(p), "%s/../%s", exe, __FILE__);
        }
        strip_last(p);
        if (walk_up(p, out, cap) || (exe[0] && walk_up(exe, out, cap)) || walk_up(".", out, cap))
                return;
        fprintf(stderr, "trace-replay: cannot find shared/traces; use --dir or STOA_TRACES\n");
        exit(1);
}

/* ---- main ------------------------------------------------------------------- */

static void usage(FILE *f)
{
        fprintf(f, "usage: trace-replay [--trace w106|scarab|adaptsize|scan] [--sizes 0.01,0.1]\n"
                   "                    [--dir TRACES] [--value-size BYTES] [--verbose]\n"
                   "                    [--no-ballast]\n"
                   "Replays real traces through a stoa segment (cache-aside) and prints the miss\n"
                   "ratios beside libCacheSim's LRU and S3-FIFO. STOA_TRACES also sets the folder.\n"
                   "scan is made here: a hot set, a one-time scan of many keys, the hot set again.\n");
}

static size_t parse_sizes(const char *s, double *out)
{
        size_t n = 0;
        char *end;

        while (*s && n < MAX_SIZES) {
                double v = strtod(s, &end);
                if (end == s || v <= 0 || v > 1) {
                        fprintf(stderr, "trace-replay: bad --sizes\n");
                        exit(2);
                }
                out[n++] = v;
                s = *end == ',' ? end + 1 : end;
                if (*end && *end != ',') {
                        fprintf(stderr, "trace-replay: bad --sizes\n");
                        exit(2);
                }
        }
        return n;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "trace", required_argument, NULL, 't' },
                { "sizes", required_argument, NULL, 's' },
                { "dir", required_argument, NULL, 'd' },
                { "value-size", required_argument, NULL, 'v' },
                { "verbose", no_argument, NULL, 'V' },
                { "no-ballast", no_argument, NULL, 'B' },
                { "help", no_argument, NULL, 'h' },
                { NULL, 0, NULL, 0 },
        };
        const char *only = NULL, *dir_opt = NULL;
        double sizes[MAX_SIZES] = { 0.01, 0.10 };
        size_t nsizes = 2, vlen = VLEN_DEFAULT, nres = 0;
        struct result *res = xcalloc(NTRACES * MAX_SIZES, sizeof(*res));
        struct trace traces[NTRACES];
        char dir[PATH_MAX];
        double t_all = now_s();
        int ch;

        while ((ch = getopt_long(argc, argv, "t:s:d:v:Vh", opts, NULL)) != -1) {
                switch (ch) {
                case 't': only = optarg; break;
                case 's': nsizes = parse_sizes(optarg, sizes); break;
                case 'd': dir_opt = optarg; break;
                case 'v': vlen = strtoul(optarg, NULL, 0); break;
                case 'V': verbose = true; break;
                case 'B': ballast_on = false; break;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        }
        if (vlen < 8 || vlen > (1u << 16)) {
                fprintf(stderr, "trace-replay: --value-size must be 8..65536\n");
                return 2;
        }
        find_traces(dir_opt, dir, sizeof(dir));
        seg_dir_make();
        setvbuf(stdout, NULL, _IOLBF, 0);
        printf("trace-replay: traces in %s, segments in %s\n", dir, seg_dir);

        for (size_t ti = 0; ti < NTRACES; ti++) {
                struct trace *t = &traces[ti];
                double t0 = now_s();

                if (only && strcmp(only, trace_defs[ti].name))
                        continue;
                trace_load(t, &trace_defs[ti], dir);
                printf("%s: %zu requests, %zu objects, %" PRIu64 " distinct bytes, loaded in %.2f s\n",
                       t->def->name, t->nreq, t->nobj, t->distinct_bytes, t->load_s);
                for (size_t si = 0; si < nsizes; si++) {
                        struct result *r = &res[nres++];
                        run_one(r, t, sizes[si], vlen);
                        printf("  %g%%: miss %.4f (%" PRIu64 " of %zu), target %" PRIu64
                               ", achieved %" PRIu64 ", replay %.2f s\n",
                               sizes[si] * 100, (double)r->misses / (double)t->nreq, r->misses,
                               t->nreq, r->target, t->req_size ? r->end.item_bytes : r->end.items,
                               r->secs);
                }
                printf("  %s total (load, calibrate, replay, simulate): %.2f s\n", t->def->name,
                       now_s() - t0);
        }
        if (!nres) {
                fprintf(stderr, "trace-replay: no trace named %s\n", only ? only : "");
                return 2;
        }
        print_table(res, nres);
        print_details(res, nres, vlen);
        printf("total run time %.1f s\n", now_s() - t_all);
        for (size_t ti = 0; ti < NTRACES; ti++)
                if (!only || !strcmp(only, trace_defs[ti].name))
                        trace_free(&traces[ti]);
        free(res);
        return 0;
}
