/*
 * tests/test_threads.c: many threads of one process on one handle, and on
 * several handles to the same segment.
 *
 * The other suites race processes; this one races threads, which is what
 * ThreadSanitizer can watch (the tsan build of `make test` runs it). Each
 * thread owns its own keys and keeps a private mirror of what it wrote, so
 * its reads of them are exact; it also reads everyone's keys (get, mget,
 * views, scan) and writes shared hot keys and counters, whose values
 * describe themselves (key, writer, sequence, length, a pattern over the
 * rest), so a torn or foreign value is seen from the value alone. Threads
 * come in two waves, so the second reuses the client slots the first gave
 * back when it exited.
 *
 * At the end: stoa_check() exact, every owned key read back through another
 * handle exactly as its mirror says, every counter the sum of its
 * increments; then every key deleted, and the heap back to what it was at
 * creation. STOA_STRESS_SCALE multiplies the operations.
 */
#include "stoa/stoa.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/harness.h"

#define MiB             (1ull << 20)
#define SEG_NAME        "threads"
#define NTHREADS        4u              /* per wave */
#define NWAVES          2u
#define NOWNERS         (NTHREADS * NWAVES)
#define KEYS_PER        192u            /* keys each thread owns */
#define NHOT            32u             /* keys every thread writes */
#define NCTR            8u              /* counters every thread increments */
#define KLEN            16u
#define VMIN            24u
#define VMAX            1500u           /* longest value; VMAX_EVICT on the small segment */
#define VMAX_EVICT      16000u
#define MGET_N          16u
#define VIEWS_HELD      4u
#define OPS             6000u           /* per thread, times STOA_STRESS_SCALE */
#define MAX_HANDLES     3u

/* ---- self-describing values ---------------------------------------------- */

struct vhdr {
        uint32_t key;           /* key id: owner * KEYS_PER + i, or hot id | HOT_BIT */
        uint32_t len;
        uint64_t seq;           /* writer << 48 | the writer's sequence number */
        uint64_t sum;
};
_Static_assert(sizeof(struct vhdr) == VMIN, "a value's header is its shortest form");

#define HOT_BIT         0x80000000u

/* The evict case: a segment too small for the values, so keys vanish. */
static bool evicting;

static uint64_t vsum(const struct vhdr *h)
{
        return mix64(((uint64_t)h->key << 32 | h->len) ^ mix64(h->seq));
}

static size_t val_make(uint8_t *v, uint32_t key, uint64_t seq, struct rng *r)
{
        size_t len = VMIN + (size_t)rnd_below(r, (evicting ? VMAX_EVICT : VMAX) - VMIN + 1);
        struct vhdr h = { key, (uint32_t)len, seq, 0 };

        h.sum = vsum(&h);
        memcpy(v, &h, sizeof(h));
        pattern(v + VMIN, len - VMIN, h.sum);
        return len;
}

/* NULL if v is a whole value of key `key`, else what is wrong with it. */
static const char *val_check(const void *v, size_t len, uint32_t key, uint64_t *ret_seq)
{
        struct vhdr h;

        if (len < VMIN)
                return "shorter than its header";
        memcpy(&h, v, sizeof(h));
        if (h.len != len)
                return "its length is not the one written";
        if (h.key != key)
                return "it belongs to another key";
        if (h.sum != vsum(&h))
                return "its header is torn";
        if (!is_pattern((const uint8_t *)v + VMIN, len - VMIN, h.sum))
                return "its bytes are torn";
        if (ret_seq)
                *ret_seq = h.seq;
        return NULL;
}

static void own_key(char *out, uint32_t id)
{
        snprintf(out, KLEN + 1, "t%02u-%011u", (id / KEYS_PER) % 100u, id % KEYS_PER);
}

static void hot_key(char *out, uint32_t h)
{
        snprintf(out, KLEN + 1, "hot-%012u", h);
}

static void ctr_key(char *out, uint32_t i)
{
        snprintf(out, KLEN + 1, "ctr-%012u", i);
}

/* ---- the threads ---------------------------------------------------------- */

struct worker {
        pthread_t th;
        uint32_t id;                    /* owner number: its keys are id * KEYS_PER + i */
        struct stoa *c;
        uint64_t seed;
        uint64_t seq[KEYS_PER];         /* last acknowledged write; 0: never */
        bool present[KEYS_PER];
        int64_t incrs[NCTR];
        uint64_t ops[8];
};

enum { OP_SET, OP_GET, OP_DEL, OP_MGET, OP_VIEW, OP_HOT, OP_INCR, OP_SCAN };

struct scan_arg {
        uint32_t owner;
        unsigned visited;
};

static int scan_visit(const void *key, size_t klen, size_t vlen, void *arg)
{
        struct scan_arg *sa = arg;
        char want[8];

        snprintf(want, sizeof(want), "t%02u-", sa->owner);
        CHECKF(klen == KLEN && memcmp(key, want, 4) == 0, "scan of '%s' visited '%.*s'", want,
               (int)klen, (const char *)key);
        CHECKF(vlen >= VMIN && vlen <= VMAX_EVICT, "scan: value length %zu", vlen);
        sa->visited++;
        return 0;
}

/* A read of any key (id < NOWNERS * KEYS_PER, or hot | HOT_BIT): whole or absent. */
static void check_any(uint32_t id, int r, const void *v, size_t len, const char *what)
{
        const char *bad;

        CHECKF(r == 0 || r == -ENOENT, "%s of key %#x: %d %s", what, id, r, stoa_strerror(r));
        if (r == 0 && (bad = val_check(v, len, id, NULL)))
                fail_at(__FILE__, __LINE__, "%s of key %#x (%zu bytes): %s", what, id, len, bad);
}

static void op_own(struct worker *w, struct rng *rg, unsigned op, uint8_t *buf)
{
        uint32_t i = (uint32_t)rnd_below(rg, KEYS_PER), id = w->id * KEYS_PER + i;
        char key[KLEN + 1];
        size_t len = 0;
        uint64_t seq = 0;
        int r;

        own_key(key, id);
        switch (op) {
        case OP_SET:
                seq = (uint64_t)w->id << 48 | (w->seq[i] + 1);
                len = val_make(buf, id, seq, rg);
                CHECK_ERR(stoa_set(w->c, key, KLEN, buf, len, 0), 0);
                w->seq[i]++;
                w->present[i] = true;
                break;
        case OP_GET:
                r = stoa_get(w->c, key, KLEN, buf, VMAX_EVICT, &len);
                CHECKF(r == (w->present[i] ? 0 : -ENOENT) || (evicting && r == -ENOENT),
                       "get of own key %s: %d %s (present %d)", key, r, stoa_strerror(r),
                       w->present[i]);
                if (r == 0) {
                        const char *bad = val_check(buf, len, id, &seq);
                        CHECKF(!bad, "get of own key %s: %s", key, bad);
                        CHECKF(seq == ((uint64_t)w->id << 48 | w->seq[i]),
                               "get of own key %s: seq %#" PRIx64 ", wrote %" PRIu64, key, seq,
                               w->seq[i]);
                }
                break;
        case OP_DEL:
                r = stoa_del(w->c, key, KLEN);
                CHECKF(r == (w->present[i] ? 0 : -ENOENT) || (evicting && r == -ENOENT),
                       "del of own key %s: %d %s (present %d)", key, r, stoa_strerror(r),
                       w->present[i]);
                w->present[i] = false;
                break;
        }
}

/* A key of anyone's: an owned key of any thread (of either wave), or a hot one. */
static uint32_t any_key(struct rng *rg, char *key)
{
        if (rnd_below(rg, 4) == 0) {
                uint32_t h = (uint32_t)rnd_below(rg, NHOT);
                hot_key(key, h);
                return h | HOT_BIT;
        }
        uint32_t id = (uint32_t)rnd_below(rg, NOWNERS * KEYS_PER);
        own_key(key, id);
        return id;
}

static void op_mget(struct worker *w, struct rng *rg, uint8_t *bufs)
{
        struct stoa_getreq req[MGET_N];
        char keys[MGET_N][KLEN + 1];
        uint32_t ids[MGET_N];
        int hits = 0, r;

        for (unsigned j = 0; j < MGET_N; j++) {
                ids[j] = any_key(rg, keys[j]);
                req[j] = (struct stoa_getreq){ .key = keys[j], .klen = KLEN,
                                               .buf = bufs + (size_t)j * VMAX_EVICT,
                                               .cap = VMAX_EVICT };
        }
        r = stoa_mget(w->c, req, MGET_N);
        CHECKF(r >= 0, "mget: %d %s", r, stoa_strerror(r));
        for (unsigned j = 0; j < MGET_N; j++) {
                check_any(ids[j], req[j].err, req[j].buf, req[j].vlen, "mget");
                hits += req[j].err == 0;
        }
        CHECK_INT(r, ==, hits);
}

static void op_views(struct worker *w, struct rng *rg, struct stoa_view *held, unsigned *nheld)
{
        char key[KLEN + 1];
        uint32_t id = any_key(rg, key);
        struct stoa_view v = { 0 };
        int r;

        if (*nheld == VIEWS_HELD || (*nheld && rnd_below(rg, 2))) {
                unsigned j = (unsigned)rnd_below(rg, *nheld);
                /* A held view's bytes stay as they were, whatever was written since. */
                struct vhdr h;
                memcpy(&h, held[j].val, sizeof(h));
                check_any(h.key, 0, held[j].val, held[j].vlen, "a held view");
                stoa_view_release(w->c, &held[j]);
                held[j] = held[--*nheld];
                return;
        }
        r = stoa_view_get(w->c, key, KLEN, &v);
        check_any(id, r, v.val, v.vlen, "view_get");
        if (r == 0)
                held[(*nheld)++] = v;
}

static void op_hot(struct worker *w, struct rng *rg, uint8_t *buf)
{
        uint32_t h = (uint32_t)rnd_below(rg, NHOT), id = h | HOT_BIT;
        char key[KLEN + 1];
        size_t len = 0;
        uint64_t version = 0;
        int r;

        hot_key(key, h);
        switch (rnd_below(rg, 4)) {
        case 0:
                len = val_make(buf, id, (uint64_t)w->id << 48 | w->ops[OP_HOT], rg);
                CHECK_ERR(stoa_set(w->c, key, KLEN, buf, len, 0), 0);
                break;
        case 1:
                r = stoa_get(w->c, key, KLEN, buf, VMAX_EVICT, &len);
                check_any(id, r, buf, len, "get of a hot key");
                break;
        case 2:
                r = stoa_del(w->c, key, KLEN);
                CHECKF(r == 0 || r == -ENOENT, "del of a hot key: %d %s", r, stoa_strerror(r));
                break;
        default:        /* read, then write only if nobody came between */
                r = stoa_gets(w->c, key, KLEN, buf, VMAX_EVICT, &len, &version);
                check_any(id, r, buf, len, "gets of a hot key");
                if (r != 0)
                        break;
                len = val_make(buf, id, (uint64_t)w->id << 48 | w->ops[OP_HOT], rg);
                r = stoa_cas(w->c, key, KLEN, buf, len, 0, version, NULL);
                CHECKF(r == 0 || r == -ESTALE || r == -ENOENT, "cas of a hot key: %d %s", r,
                       stoa_strerror(r));
                break;
        }
}

static void *worker_main(void *arg)
{
        struct worker *w = arg;
        struct rng rg = { w->seed };
        uint8_t *bufs = xmalloc((size_t)MGET_N * VMAX_EVICT);
        struct stoa_view held[VIEWS_HELD];
        unsigned nheld = 0, ops = OPS * stress_scale();
        char key[KLEN + 1];

        for (unsigned n = 0; n < ops; n++) {
                unsigned p = (unsigned)rnd_below(&rg, 100), op;

                op = p < 25 ? OP_SET : p < 42 ? OP_GET : p < 50 ? OP_DEL : p < 60 ? OP_MGET :
                     p < 72 ? OP_VIEW : p < 90 ? OP_HOT : p < 99 ? OP_INCR : OP_SCAN;
                w->ops[op]++;
                switch (op) {
                case OP_SET: case OP_GET: case OP_DEL:
                        op_own(w, &rg, op, bufs);
                        break;
                case OP_MGET:
                        op_mget(w, &rg, bufs);
                        break;
                case OP_VIEW:
                        op_views(w, &rg, held, &nheld);
                        break;
                case OP_HOT:
                        op_hot(w, &rg, bufs);
                        break;
                case OP_INCR: {
                        uint32_t i = (uint32_t)rnd_below(&rg, NCTR);
                        ctr_key(key, i);
                        CHECK_ERR(stoa_incr(w->c, key, KLEN, 1, 0, NULL), 0);
                        w->incrs[i]++;
                        break;
                }
                case OP_SCAN: {
                        struct scan_arg sa = { (uint32_t)rnd_below(&rg, NOWNERS), 0 };
                        char prefix[8];
                        snprintf(prefix, sizeof(prefix), "t%02u-", sa.owner);
                        CHECK_ERR(stoa_scan(w->c, prefix, 4, scan_visit, &sa), 0);
                        CHECK_U64(sa.visited, <=, KEYS_PER);
                        break;
                }
                }
        }
        while (nheld)
                stoa_view_release(w->c, &held[--nheld]);
        free(bufs);
        return NULL;
}

/* ---- the cases ------------------------------------------------------------ */

struct check_msgs {
        int n;
        char first[300];
};

static void check_report(const char *msg, void *arg)
{
        struct check_msgs *m = arg;

        if (m->n++ == 0)
                snprintf(m->first, sizeof(m->first), "%s", msg);
        fprintf(stderr, "    check: %s\n", msg);
}

static void check_exact(struct stoa *c, const char *when)
{
        struct check_msgs m = { 0, "" };
        int r = stoa_check(c, check_report, &m);

        CHECKF(r == 0, "%s: stoa_check found %d problem(s); the first: %s", when, r, m.first);
}

static struct stoa *open_seg(void)
{
        struct stoa *c = NULL;

        CHECK_ERR(stoa_open(&c, SEG_NAME, &(struct stoa_options){ .size = (evicting ? 16 : 64) * MiB,
                                                                   .flags = STOA_OPEN_NOHUGE,
                                                                   .nslots = 64 }), 0);
        return c;
}

static void run_threads(unsigned nhandles)
{
        static struct worker w[NOWNERS];
        struct stoa *hs[MAX_HANDLES];
        struct stoa_info in;
        uint64_t baseline, t0 = now_ns(), seed = mix64(now_ns() ^ (uint64_t)getpid());
        uint8_t *buf = xmalloc(VMAX_EVICT);
        char key[KLEN + 1];

        const char *s = getenv("STOA_SEED");
        if (s)
                seed = strtoull(s, NULL, 0);
        for (unsigned h = 0; h < nhandles; h++)
                hs[h] = open_seg();
        CHECK_ERR(stoa_info(hs[0], &in), 0);
        baseline = in.used_bytes;

        for (uint32_t wave = 0; wave < NWAVES; wave++) {
                for (uint32_t t = 0; t < NTHREADS; t++) {
                        struct worker *x = &w[wave * NTHREADS + t];
                        memset(x, 0, sizeof(*x));
                        x->id = wave * NTHREADS + t;
                        x->c = hs[x->id % nhandles];
                        x->seed = mix64(seed + x->id);
                        CHECK_INT(pthread_create(&x->th, NULL, worker_main, x), ==, 0);
                }
                for (uint32_t t = 0; t < NTHREADS; t++)
                        CHECK_INT(pthread_join(w[wave * NTHREADS + t].th, NULL), ==, 0);
        }
        check_exact(hs[0], "after the threads");

        /* Every owned key as its owner last wrote it, read through another handle. */
        for (uint32_t o = 0; o < NOWNERS; o++) {
                struct stoa *c = hs[(o + 1) % nhandles];
                for (uint32_t i = 0; i < KEYS_PER; i++) {
                        uint32_t id = o * KEYS_PER + i;
                        size_t len = 0;
                        uint64_t seq = 0;
                        own_key(key, id);
                        int r = stoa_get(c, key, KLEN, buf, VMAX_EVICT, &len);
                        CHECKF(r == (w[o].present[i] ? 0 : -ENOENT) || (evicting && r == -ENOENT),
                               "final get of %s: %d %s", key,
                               r, stoa_strerror(r));
                        if (r == 0) {
                                const char *bad = val_check(buf, len, id, &seq);
                                CHECKF(!bad, "final get of %s: %s", key, bad);
                                CHECK_U64(seq, ==, (uint64_t)o << 48 | w[o].seq[i]);
                        }
                }
        }
        for (uint32_t i = 0; i < NCTR; i++) {
                int64_t want = 0, got = 0;
                for (uint32_t o = 0; o < NOWNERS; o++)
                        want += w[o].incrs[i];
                ctr_key(key, i);
                if (evicting)   /* an evicted counter starts again from 0 */
                        break;
                if (want)
                        CHECK_ERR(stoa_incr(hs[nhandles - 1], key, KLEN, 0, 0, &got), 0);
                CHECKF(got == want, "counter %u is %" PRId64 " after %" PRId64 " increments", i, got,
                       want);
        }

        /* Everything deleted: all the memory comes back. */
        for (uint32_t id = 0; id < NOWNERS * KEYS_PER + NHOT + NCTR; id++) {
                if (id < NOWNERS * KEYS_PER)
                        own_key(key, id);
                else if (id < NOWNERS * KEYS_PER + NHOT)
                        hot_key(key, id - NOWNERS * KEYS_PER);
                else
                        ctr_key(key, id - NOWNERS * KEYS_PER - NHOT);
                int r = stoa_del(hs[id % nhandles], key, KLEN);
                CHECKF(r == 0 || r == -ENOENT, "del of %s: %d %s", key, r, stoa_strerror(r));
        }
        /*
         * Blocks retired through a handle wait in its thread's slot until that
         * slot reclaims them (or gives them back on close): close the others.
         */
        for (unsigned h = 1; h < nhandles; h++)
                stoa_close(hs[h]);
        for (int i = 0; i < 100; i++) {
                CHECK_OK(stoa_sweep(hs[0]));
                CHECK_ERR(stoa_info(hs[0], &in), 0);
                if (in.items == 0 && in.used_bytes == baseline)
                        break;
                sleep_ms(10);
        }
        check_exact(hs[0], "with every key deleted");
        CHECKF(in.items == 0 && in.used_bytes == baseline, "every key deleted: %" PRIu64 " items, %"
               PRIu64 " bytes of heap in use, %" PRIu64 " at creation", in.items, in.used_bytes,
               baseline);

        uint64_t total[8] = { 0 };
        for (uint32_t o = 0; o < NOWNERS; o++)
                for (unsigned k = 0; k < 8; k++)
                        total[k] += w[o].ops[k];
        fprintf(stderr, "  %u threads in %u waves on %u handle(s), seed %#" PRIx64 " (STOA_SEED): %"
                PRIu64 " sets, %" PRIu64 " gets, %" PRIu64 " dels, %" PRIu64 " mgets, %" PRIu64
                " views, %" PRIu64 " hot, %" PRIu64 " incrs, %" PRIu64 " scans, %" PRIu64
                " evictions in %.0f ms\n", NOWNERS, NWAVES, nhandles, seed, total[OP_SET],
                total[OP_GET], total[OP_DEL], total[OP_MGET], total[OP_VIEW], total[OP_HOT],
                total[OP_INCR], total[OP_SCAN], in.evictions, ms_since(t0));
        stoa_close(hs[0]);
        free(buf);
}

static void case_one_handle(void) { run_threads(1); }
static void case_three_handles(void) { run_threads(3); }
static void case_evict(void) { evicting = true; run_threads(2); }

static void test_one_handle(void **state) { (void)state; harness_run_case("threads", 120, case_one_handle); }
static void test_three_handles(void **state) { (void)state; harness_run_case("threads", 120, case_three_handles); }
static void test_evict(void **state) { (void)state; harness_run_case("threads", 120, case_evict); }

int main(int argc, char **argv)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_one_handle),
                cmocka_unit_test(test_three_handles),
                cmocka_unit_test(test_evict),
        };

        if (argc > 1)
                cmocka_set_test_filter(argv[1]);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
