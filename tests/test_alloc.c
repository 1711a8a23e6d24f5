/*
 * tests/test_alloc.c: the allocator against real segments.
 *
 * Every case runs in its own process (run_case) on a fresh segment in a
 * private $STOA_DIR, and uses the real thing: core_open, core_thread_enter,
 * then al_alloc / al_free / al_commit on the slot's heap. Cases that need
 * more processes fork workers that attach by name, as clients do; the crash
 * cases SIGKILL them and check what recovery leaves behind.
 *
 * Inside a case process and its workers, checks are CHECK() macros that
 * print and _exit(1): cmocka's asserts would longjmp into a forked copy of
 * the runner. The runner asserts on each case process's exit status.
 *
 * Multi-process cases keep an ownership table in a MAP_SHARED mapping, one
 * word per 16 bytes of heap (the smallest block), saying who holds the block
 * that starts there. Taking a block the table says someone else holds means
 * the allocator handed it out twice, and the case fails on the spot.
 *
 * The crash-point case reproduces, one by one, the states that a process
 * killed at each step of docs/design.md 3.4 leaves behind: a real operation
 * is run and then wound back by exactly the stores the allocator would not
 * yet have made (a counter bump, the journal clear, the remote OR), or the
 * first stores of a locked update are made by hand. These need the
 * allocator's internals (allocator/alloc.h) and change with them.
 *
 * STOA_STRESS_SCALE (default 1) multiplies the iteration counts.
 */
#include "allocator/heap.h"
#include "client/core.h"
#include "shm/slots.h"
#include "shm/testpoint.h"
#include "stoa/stoa.h"

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
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
#define SEG_NAME        "alloc-test"
#define CASE_TIMEOUT_S  150u            /* per case, times STOA_STRESS_SCALE */

/* ---- patterns ----------------------------------------------------------- */
/* Fill [off, off+len) with a sequence derived from `seed`; check it. */
static void fill(struct core *c, uint64_t off, size_t len, uint64_t seed)
{
        uint8_t *p = seg_ptr(c->seg, off);

        for (size_t i = 0; i < len; i += 8) {
                uint64_t v = mix64(seed + i);
                memcpy(p + i, &v, len - i < 8 ? len - i : 8);
        }
}

static bool filled(struct core *c, uint64_t off, size_t len, uint64_t seed)
{
        const uint8_t *p = seg_ptr(c->seg, off);

        for (size_t i = 0; i < len; i += 8) {
                uint64_t v = mix64(seed + i);
                if (memcmp(p + i, &v, len - i < 8 ? len - i : 8) != 0)
                        return false;
        }
        return true;
}

/*
 * Self-describing pattern of a worker's block (at least 32 bytes): a header
 * {owner << 32 | size, offset, sequence, checksum of those}, then bytes
 * derived from the checksum over the first and last PAT_EDGE bytes of the
 * rest (all of it in a small block), so that a process can verify a block it
 * knows nothing about.
 */
#define PAT_HDR   32u
#define PAT_EDGE  2048u

struct pat_hdr {
        uint64_t tag, off, seq, sum;
};

static uint64_t pat_sum(uint64_t tag, uint64_t off, uint64_t seq)
{
        return mix64(tag ^ mix64(off ^ mix64(seq)));
}

static void pat_ranges(size_t size, size_t r[2][2])
{
        size_t a_end = size < PAT_HDR + PAT_EDGE ? size : PAT_HDR + PAT_EDGE;
        size_t b_beg = size > a_end + PAT_EDGE ? size - PAT_EDGE : a_end;

        r[0][0] = PAT_HDR;
        r[0][1] = a_end;
        r[1][0] = b_beg;
        r[1][1] = size;
}

static void pat_write(struct core *c, uint64_t off, size_t size, uint32_t owner, uint64_t seq)
{
        struct pat_hdr h = { (uint64_t)owner << 32 | (uint32_t)size, off, seq, 0 };
        size_t r[2][2];

        h.sum = pat_sum(h.tag, h.off, h.seq);
        pat_ranges(size, r);
        for (int i = 0; i < 2; i++)
                fill(c, off + r[i][0], r[i][1] - r[i][0], h.sum + r[i][0]);
        memcpy(seg_ptr(c->seg, off), &h, sizeof(h));
}

/* NULL if the block at `off` carries an intact pattern (its size in *ret_size). */
static const char *pat_check(struct core *c, uint64_t off, size_t *ret_size)
{
        struct pat_hdr h;
        size_t r[2][2], size;

        memcpy(&h, seg_ptr(c->seg, off), sizeof(h));
        if (h.off != off)
                return "header names another offset";
        if (h.sum != pat_sum(h.tag, h.off, h.seq))
                return "header checksum";
        size = (uint32_t)h.tag;
        if (size < PAT_HDR || size > al_usable(&c->al, off))
                return "size in header exceeds the block";
        pat_ranges(size, r);
        for (int i = 0; i < 2; i++) {
                if (!filled(c, off + r[i][0], r[i][1] - r[i][0], h.sum + r[i][0]))
                        return "body changed";
        }
        if (ret_size)
                *ret_size = size;
        return NULL;
}

#define PAT_VERIFY(c, off, want_size) do {                                              \
        size_t sz_ = 0;                                                                 \
        const char *why_ = pat_check((c), (off), &sz_);                                 \
        CHECKF(!why_, "block %#llx: pattern broken: %s", (unsigned long long)(off), why_); \
        CHECKF((want_size) == 0 || sz_ == (size_t)(want_size),                          \
               "block %#llx: size %zu in header, %zu expected",                         \
               (unsigned long long)(off), sz_, (size_t)(want_size));                    \
} while (0)

/* ---- segments and the allocator's view ---------------------------------- */

static struct core *seg_create(uint64_t size, uint32_t nslots)
{
        struct core_config cfg;
        struct core *c = NULL;

        core_config_default(&cfg);
        cfg.size = size;
        cfg.nslots = nslots;
        cfg.huge = SEG_HUGE_REFUSE;
        cfg.flags = SEG_OPEN_EXCL;
        CHECK_OK(core_open(&c, SEG_NAME, &cfg));
        CHECK_EQ(c->al.narenas, 1);
        return c;
}

static struct core *seg_attach(void)
{
        struct core *c = NULL;

        CHECK_OK(core_open(&c, SEG_NAME, NULL));
        return c;
}

static struct arena *arena0(const struct core *c)
{
        return c->al.arena[0];
}

static uint64_t heap_bytes(const struct core *c)
{
        return (uint64_t)arena0(c)->npages * AL_PAGE_SIZE;
}

static bool in_heap(const struct core *c, uint64_t off, uint64_t len)
{
        uint64_t lo = arena0(c)->heap_off;

        return off >= lo && off + len <= lo + heap_bytes(c);
}

static uint32_t head_page(const struct core *c, uint32_t page)
{
        const struct page_desc *d = al_desc(&c->al, page);

        return d->state == PAGE_SLAB_TAIL || d->state == PAGE_RUN_TAIL ? d->span : page;
}

/* Span (or run) head page of the block whose user offset is `off`. */
static uint32_t head_of(const struct core *c, uint64_t off)
{
        uint32_t p = al_page_of(&c->al, off - AL_STAMP_SIZE);

        CHECK(p != UINT32_MAX);
        return head_page(c, p);
}

static struct slab_hdr *span_of(const struct core *c, uint32_t head)
{
        return seg_ptr(c->seg, al_page_off(&c->al, head));
}

/* Index of a slab block in its span. */
static uint32_t block_idx(const struct core *c, uint64_t off)
{
        uint32_t h = head_of(c, off);
        const struct page_desc *d = al_desc(&c->al, h);

        CHECK_EQ(d->state, PAGE_SLAB);
        return (uint32_t)((off - AL_STAMP_SIZE - al_page_off(&c->al, h) - AL_SLAB_HDR) /
                          d->block_size);
}

/* Whether block `i` of a span is free: in the private bitmap or the remote one. */
static bool bit_free(struct slab_hdr *sh, uint64_t i)
{
        uint64_t m = 1ull << (i % 64);

        return (sh->local_free[i / 64] & m) || (atomic_load(&sh->remote_free[i / 64]) & m);
}

/* Whether the allocation that starts at user offset `off` is live. */
static bool block_allocated(const struct core *c, uint64_t off)
{
        uint64_t blk = off - AL_STAMP_SIZE;
        uint32_t p = al_page_of(&c->al, blk);

        if (p == UINT32_MAX)
                return false;
        p = head_page(c, p);
        const struct page_desc *d = al_desc(&c->al, p);
        uint64_t po = al_page_off(&c->al, p);
        if (d->state == PAGE_RUN)
                return blk == po;
        if (d->state != PAGE_SLAB || blk < po + AL_SLAB_HDR ||
            (blk - po - AL_SLAB_HDR) % d->block_size != 0)
                return false;
        uint64_t i = (blk - po - AL_SLAB_HDR) / d->block_size;
        return i < d->capacity && !bit_free(span_of(c, p), i);
}

/* Live small blocks and runs, counted from the page descriptors and bitmaps. */
static uint64_t count_allocated(const struct core *c)
{
        const struct arena *a = arena0(c);
        uint64_t n = 0;

        for (uint32_t p = a->first_page; p < a->first_page + a->npages; p++) {
                const struct page_desc *d = al_desc(&c->al, p);
                if (d->state == PAGE_RUN)
                        n++;
                if (d->state != PAGE_SLAB)
                        continue;
                for (uint32_t i = 0; i < d->capacity; i++)
                        n += !bit_free(span_of(c, p), i);
        }
        return n;
}

static uint64_t lock_word(const struct core *c)
{
        return atomic_load(&arena0(c)->lock.word);
}

static uint64_t repairs(const struct core *c)
{
        return __atomic_load_n(&arena0(c)->repairs, __ATOMIC_RELAXED);
}

__attribute__((format(printf, 2, 3)))
static void report(void *arg, const char *fmt, ...)
{
        unsigned *n = arg;
        va_list ap;

        if (n && ++*n > 20)
                return;
        va_start(ap, fmt);
        fprintf(stderr, "  al_check: ");
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
}

#define CHECK_CLEAN(c) do {                                                             \
        struct al_check_result cr_;                                                     \
        unsigned nrep_ = 0;                                                             \
        int r_ = al_check(&(c)->al, report, &nrep_, &cr_);                              \
        CHECKF(r_ == 0 && cr_.problems == 0, "al_check: %d, %llu problems", r_,         \
               (unsigned long long)cr_.problems);                                       \
} while (0)

/* Bytes in use, as the statistics say: the sum and each class. */
static uint64_t used_bytes(const struct core *c)
{
        struct al_stats st;

        al_stats(&c->al, &st);
        for (unsigned k = 0; k < al_nclasses; k++) {
                CHECKF(st.a[0].cls[k].allocs >= st.a[0].cls[k].frees,
                       "class %u: %llu frees > %llu allocs", k,
                       (unsigned long long)st.a[0].cls[k].frees,
                       (unsigned long long)st.a[0].cls[k].allocs);
        }
        return st.used_bytes;
}

static uint64_t free_bytes(const struct core *c)
{
        struct al_stats st;

        al_stats(&c->al, &st);
        return st.a[0].free_bytes;
}

/*
 * Nothing allocated, and every page not free is an abandoned span: a span
 * whose owner died or left while others held blocks in it stays on its
 * arena's abandoned list, even once they are all freed (remotely), until a
 * heap that needs its class adopts it.
 */
static void check_rest_abandoned(const struct core *c, const char *when)
{
        const struct arena *a = arena0(c);
        unsigned spans = 0;

        CHECK_EQ(count_allocated(c), 0);
        CHECK_EQ(used_bytes(c), 0);
        for (uint32_t p = a->first_page; p < a->first_page + a->npages; p++) {
                const struct page_desc *d = al_desc(&c->al, p);
                if (d->state == PAGE_FREE || d->state == PAGE_SLAB_TAIL)
                        continue;
                CHECKF(d->state == PAGE_SLAB && d->owner == 0, "page %u: state %u, owner %u",
                       p, d->state, d->owner);
                spans++;
        }
        if (spans)
                fprintf(stderr, "  %s: %u abandoned spans left, all their blocks free\n", when, spans);
}

/* ---- processes ----------------------------------------------------------- */

static int wait_pid(pid_t pid)
{
        int st;

        while (waitpid(pid, &st, 0) < 0)
                CHECK(errno == EINTR);
        return st;
}

static void expect_exit0(pid_t pid)
{
        int st = wait_pid(pid);

        check_box();
        CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d: status %#x", (int)pid, st);
}

static void expect_killed(pid_t pid)
{
        int st = wait_pid(pid);

        check_box();
        CHECKF(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "worker %d: status %#x", (int)pid, st);
}

/* ---- the ownership table ------------------------------------------------ */

#define OWN_FREEING  0x80000000u    /* | owner: its free is under way */
#define OWN_POOL     0x7fffffffu    /* in the crash case's pool */

struct own_table {
        uint64_t heap_off, n;
        _Atomic uint64_t takeovers;     /* blocks re-handed while their freer was finishing */
        _Atomic uint32_t e[];
};
static struct own_table *own;

static void own_init(const struct core *c)
{
        uint64_t n = heap_bytes(c) / 16;

        own = shared_map(sizeof(*own) + n * sizeof(own->e[0]));
        own->heap_off = arena0(c)->heap_off;
        own->n = n;
}

static _Atomic uint32_t *own_entry(uint64_t off)
{
        uint64_t i = (off - own->heap_off) >> 4;

        CHECKF(off >= own->heap_off && i < own->n, "offset %#llx outside the heap",
               (unsigned long long)off);
        return &own->e[i];
}

static uint64_t own_off(uint64_t i)
{
        return own->heap_off + i * 16 + AL_STAMP_SIZE;
}

/*
 * `me` was just handed `off` by al_alloc. The entry must be free; or marked
 * as being freed, if the freer's al_free got past its commit point and the
 * block came round again before the freer cleared its mark.
 */
static void own_take(uint64_t off, uint32_t me)
{
        _Atomic uint32_t *e = own_entry(off);
        uint32_t cur = 0;

        while (!atomic_compare_exchange_strong(e, &cur, me)) {
                if (cur == 0)
                        continue;       /* the freer cleared its mark meanwhile: take it */
                CHECKF(cur & OWN_FREEING, "block %#llx handed out twice: held by %#x, given to %#x",
                       (unsigned long long)off, cur, me);
                atomic_fetch_add(&own->takeovers, 1);
        }
}

static void own_move(uint64_t off, uint32_t from, uint32_t to)
{
        uint32_t cur = from;

        CHECKF(atomic_compare_exchange_strong(own_entry(off), &cur, to),
               "block %#llx: held by %#x, %#x expected", (unsigned long long)off, cur, from);
}

static void own_free_begin(uint64_t off, uint32_t me)
{
        own_move(off, me, me | OWN_FREEING);
}

static void own_free_end(uint64_t off, uint32_t me)
{
        uint32_t cur = me | OWN_FREEING;

        /* Fails only if the block was already handed out again: fine. */
        atomic_compare_exchange_strong(own_entry(off), &cur, 0);
}

/* Recovery's question for a block a dead slot had just allocated. */
static bool own_published(uint64_t off, void *arg)
{
        (void)arg;
        if (!own || off < own->heap_off || ((off - own->heap_off) >> 4) >= own->n)
                return false;
        uint32_t v = atomic_load(own_entry(off));
        return v != 0 && !(v & OWN_FREEING);
}

/* ==== 1. unit: size classes, runs, limits, bad frees ====================== */

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

        return x < y ? -1 : x > y;
}

static struct al_class_stats class_stats(const struct core *c, unsigned k)
{
        struct al_stats st;

        al_stats(&c->al, &st);
        return st.a[0].cls[k];
}

/*
 * One class: its boundary sizes, then a whole span and one block more, each
 * block patterned over its full usable size; then free them all.
 */
static void check_class(struct core *c, struct core_thread *t, unsigned k)
{
        size_t hi = al_class_size[k] - AL_STAMP_SIZE;
        size_t lo = k ? al_class_size[k - 1] - AL_STAMP_SIZE + 1 : 1;
        uint32_t cap = al_class_capacity(k), span = al_class_span(k), n = cap + 1;
        struct al_class_stats before = class_stats(c, k), now;

        CHECK_EQ(al_size_class(lo), k);
        CHECK_EQ(al_size_class(hi), k);
        if (k)
                CHECK_EQ(al_size_class(lo - 1), k - 1);
        CHECK_EQ(al_size_class(hi + 1), k + 1 < al_nclasses ? (int)k + 1 : -1);
        CHECK(cap >= 1 && cap <= 64 * AL_BITMAP_WORDS);
        CHECK(AL_SLAB_HDR + (uint64_t)cap * al_class_size[k] <= (uint64_t)span * AL_PAGE_SIZE);

        uint64_t *off = calloc(n, sizeof(*off)), *stamp = calloc(n, sizeof(*stamp));
        uint64_t *sorted = calloc(n, sizeof(*sorted));
        CHECK(off && stamp && sorted);
        for (uint32_t i = 0; i < n; i++) {
                size_t want = i & 1 ? lo : hi;
                CHECK_OK(al_alloc(&t->heap, want, -1, &off[i]));
                al_commit(&t->heap);
                CHECKF(off[i] % 8 == 0, "class %u: %#llx not 8-byte aligned", k,
                       (unsigned long long)off[i]);
                CHECK_EQ(al_usable(&c->al, off[i]), hi);
                CHECK(in_heap(c, off[i] - AL_STAMP_SIZE, hi + AL_STAMP_SIZE));
                stamp[i] = al_stamp(&c->al, off[i]);
                CHECK(stamp[i] != AL_STAMP_FREE && (stamp[i] >> 48) == t->slot);
                fill(c, off[i], hi, mix64(k) + i);
        }
        /* The first `cap` blocks fill one span; the last one needed a second. */
        uint32_t h0 = head_of(c, off[0]);
        const struct page_desc *d = al_desc(&c->al, h0);
        /* Full, it was disowned when the next allocation found it so (design 3.6). */
        CHECK(d->state == PAGE_SLAB && d->cls == k && d->span == span && d->owner == 0);
        for (uint32_t i = 0; i < cap; i++)
                CHECKF(head_of(c, off[i]) == h0, "class %u block %u: not in the first span", k, i);
        CHECK(head_of(c, off[cap]) != h0);
        for (uint32_t p = h0 + 1; p < h0 + span; p++)
                CHECK(al_desc(&c->al, p)->state == PAGE_SLAB_TAIL && al_desc(&c->al, p)->span == h0);
        /* Disjoint, stamps and patterns intact after all the writes. */
        memcpy(sorted, off, n * sizeof(*off));
        qsort(sorted, n, sizeof(*sorted), cmp_u64);
        for (uint32_t i = 0; i + 1 < n; i++)
                CHECKF(sorted[i] + hi + AL_STAMP_SIZE <= sorted[i + 1], "class %u: blocks overlap", k);
        for (uint32_t i = 0; i < n; i++) {
                CHECKF(filled(c, off[i], hi, mix64(k) + i), "class %u block %u: pattern changed", k, i);
                CHECK_EQ(al_stamp(&c->al, off[i]), stamp[i]);
        }
        now = class_stats(c, k);
        CHECK_EQ(now.block_size, al_class_size[k]);
        CHECK_EQ(now.allocs - before.allocs, n);
        CHECK_EQ(now.used_bytes, (uint64_t)n * al_class_size[k]);
        CHECK_EQ(now.held_bytes, 2ull * span * AL_PAGE_SIZE);
        CHECK_CLEAN(c);

        for (uint32_t i = 0; i < n; i++)
                CHECK_OK(al_free(&t->heap, off[i]));
        now = class_stats(c, k);
        CHECK_EQ(now.frees - before.frees, n);
        CHECK_EQ(now.used_bytes, 0);
        /*
         * The owned second span is kept for reuse. The first, disowned when
         * full, took the frees remotely: it waits emptied on the abandoned
         * list until an allocation adopts it or al_trim() gives it back;
         * al_trim() gives back the emptied one we own too.
         */
        CHECK_EQ(now.held_bytes, 2ull * span * AL_PAGE_SIZE);
        CHECK_EQ(al_trim(&t->heap), 2 * span);
        now = class_stats(c, k);
        CHECK_EQ(now.held_bytes, 0);
        CHECK_CLEAN(c);
        free(off);
        free(stamp);
        free(sorted);
}

static void case_classes(void)
{
        struct core *c = seg_create(64 * MiB, 8);
        struct core_thread t;

        CHECK_OK(core_thread_enter(c, &t));
        CHECK(al_nclasses >= 1 && al_nclasses <= AL_NCLASSES);
        CHECK_EQ(al_class_size[al_nclasses - 1], AL_MAX_SMALL);
        for (unsigned k = 0; k < al_nclasses; k++) {
                CHECK(al_class_size[k] % 16 == 0 && (k == 0 || al_class_size[k] > al_class_size[k - 1]));
                check_class(c, &t, k);
        }
        core_thread_leave(&t);
        CHECK_EQ(free_bytes(c), heap_bytes(c));
        CHECK_CLEAN(c);
        core_close(c);
}

static void case_runs(void)
{
        struct core *c = seg_create(32 * MiB, 8);
        struct core_thread t;
        uint64_t arena = heap_bytes(c), off, offs[8];
        static const size_t sizes[] = {
                AL_MAX_SMALL - AL_STAMP_SIZE + 1, AL_PAGE_SIZE - AL_STAMP_SIZE,
                AL_PAGE_SIZE - AL_STAMP_SIZE + 1, 1 * MiB, 1 * MiB + 12345,
        };
        const unsigned ns = sizeof(sizes) / sizeof(sizes[0]);
        uint64_t asked = 0, pages = 0;

        CHECK_OK(core_thread_enter(c, &t));
        /* Requests the arena can never hold, or that are nonsense. */
        CHECK_EQ(al_alloc(&t.heap, arena - AL_STAMP_SIZE + 1, -1, &off), -E2BIG);
        CHECK_EQ(al_alloc(&t.heap, arena, -1, &off), -E2BIG);
        CHECK_EQ(al_alloc(&t.heap, c->seg->size, -1, &off), -E2BIG);
        CHECK_EQ(al_alloc(&t.heap, 1ull << 62, -1, &off), -E2BIG);
        CHECK_EQ(al_alloc(&t.heap, SIZE_MAX - 3, -1, &off), -E2BIG);
        CHECK_EQ(al_alloc(&t.heap, SIZE_MAX, -1, &off), -E2BIG);
        CHECK_EQ(al_alloc(&t.heap, 0, -1, &off), -EINVAL);
        CHECK_EQ(al_alloc(&t.heap, 100, -1, NULL), -EINVAL);
        CHECK_EQ(used_bytes(c), 0);
        CHECK_CLEAN(c);

        /* The whole arena, exactly: then nothing else fits. */
        CHECK_OK(al_alloc(&t.heap, arena - AL_STAMP_SIZE, -1, &off));
        al_commit(&t.heap);
        CHECK_EQ(al_usable(&c->al, off), arena - AL_STAMP_SIZE);
        CHECK_EQ(free_bytes(c), 0);
        CHECK_EQ(al_alloc(&t.heap, 1, -1, &offs[0]), -ENOMEM);
        CHECK_EQ(al_alloc(&t.heap, AL_PAGE_SIZE, -1, &offs[0]), -ENOMEM);
        CHECK_CLEAN(c);
        CHECK_OK(al_free(&t.heap, off));
        CHECK_EQ(free_bytes(c), arena);

        for (unsigned i = 0; i < ns; i++) {
                uint64_t np = (sizes[i] + AL_STAMP_SIZE + AL_PAGE_SIZE - 1) / AL_PAGE_SIZE;
                CHECK_EQ(al_size_class(sizes[i]), -1);
                CHECK_OK(al_alloc(&t.heap, sizes[i], -1, &offs[i]));
                al_commit(&t.heap);
                off = offs[i];
                CHECK((off - AL_STAMP_SIZE - arena0(c)->heap_off) % AL_PAGE_SIZE == 0);
                CHECK_EQ(al_usable(&c->al, off), np * AL_PAGE_SIZE - AL_STAMP_SIZE);
                CHECK(in_heap(c, off - AL_STAMP_SIZE, np * AL_PAGE_SIZE));
                uint32_t h = head_of(c, off);
                CHECK(al_desc(&c->al, h)->state == PAGE_RUN && al_desc(&c->al, h)->span == np);
                for (uint32_t p = h + 1; p < h + np; p++)
                        CHECK(al_desc(&c->al, p)->state == PAGE_RUN_TAIL && al_desc(&c->al, p)->span == h);
                CHECK(al_stamp(&c->al, off) >> 48 == t.slot);
                fill(c, off, al_usable(&c->al, off), mix64(i));
                asked += sizes[i];
                pages += np;
        }
        for (unsigned i = 0; i < ns; i++)
                CHECKF(filled(c, offs[i], al_usable(&c->al, offs[i]), mix64(i)), "run %u overwritten", i);
        struct al_stats st;
        al_stats(&c->al, &st);
        CHECK_EQ(st.a[0].run_bytes, asked);
        CHECK_EQ(st.used_bytes, asked);
        CHECK_EQ(st.held_bytes, pages * AL_PAGE_SIZE);
        CHECK_EQ(st.a[0].run_allocs, ns + 1);
        CHECK_EQ(st.a[0].run_frees, 1);
        CHECK_EQ(st.a[0].peak_used_bytes, arena);
        CHECK_EQ(st.fragmentation_bytes, 0);
        CHECK_CLEAN(c);
        for (unsigned i = 0; i < ns; i++)
                CHECK_OK(al_free(&t.heap, offs[i]));
        al_stats(&c->al, &st);
        CHECK_EQ(st.used_bytes, 0);
        CHECK_EQ(st.held_bytes, 0);
        CHECK_EQ(st.a[0].run_frees, ns + 1);
        CHECK_CLEAN(c);
        core_thread_leave(&t);
        core_close(c);
}

/* Run the arena out of pages, with runs and then with the largest class. */
static void case_exhaust(void)
{
        struct core *c = seg_create(32 * MiB, 8);
        struct core_thread t;
        uint32_t npages = arena0(c)->npages, n = 0;
        uint64_t *off = calloc(npages * 8u, sizeof(*off)), small, extra;
        int r;

        CHECK(off);
        CHECK_OK(core_thread_enter(c, &t));
        while ((r = al_alloc(&t.heap, AL_MAX_SMALL, -1, &off[n])) == 0) {
                al_commit(&t.heap);
                CHECK(++n <= npages);
        }
        CHECK_EQ(r, -ENOMEM);
        CHECK_EQ(n, npages);
        CHECK_EQ(free_bytes(c), 0);
        CHECK_EQ(al_alloc(&t.heap, 100, -1, &small), -ENOMEM);
        CHECK_EQ(al_alloc(&t.heap, 1, -1, &small), -ENOMEM);
        CHECK_CLEAN(c);
        /* One page back: a small block fits, in that page; a run does not. */
        CHECK_OK(al_free(&t.heap, off[n / 2]));
        CHECK_OK(al_alloc(&t.heap, 100, -1, &small));
        al_commit(&t.heap);
        CHECK_EQ(head_of(c, small), head_of(c, off[n / 2]));
        CHECK_OK(al_alloc(&t.heap, 100, -1, &extra));
        al_commit(&t.heap);
        CHECK_EQ(al_alloc(&t.heap, AL_MAX_SMALL, -1, &extra), -ENOMEM);
        CHECK_OK(al_free(&t.heap, extra));
        CHECK_OK(al_free(&t.heap, small));
        for (uint32_t i = 0; i < n; i++) {
                if (i != n / 2)
                        CHECK_OK(al_free(&t.heap, off[i]));
        }
        CHECK_CLEAN(c);
        core_thread_leave(&t);
        CHECK_EQ(free_bytes(c), heap_bytes(c));

        /* The largest class: exactly (pages / span) spans of `cap` blocks. */
        unsigned k = al_nclasses - 1;
        uint32_t span = al_class_span(k), cap = al_class_capacity(k);
        CHECK_OK(core_thread_enter(c, &t));
        n = 0;
        while ((r = al_alloc(&t.heap, al_class_size[k] - AL_STAMP_SIZE, -1, &off[n])) == 0) {
                al_commit(&t.heap);
                CHECK(++n <= npages * 8u);
        }
        CHECK_EQ(r, -ENOMEM);
        CHECK_EQ(n, (npages / span) * cap);
        CHECK_CLEAN(c);
        uint64_t again;
        CHECK_OK(al_free(&t.heap, off[n / 3]));
        CHECK_OK(al_alloc(&t.heap, al_class_size[k] - AL_STAMP_SIZE, -1, &again));
        al_commit(&t.heap);
        CHECK_EQ(again, off[n / 3]);
        CHECK_EQ(al_alloc(&t.heap, 1, -1, &small), -ENOMEM);
        for (uint32_t i = 0; i < n; i++)
                CHECK_OK(al_free(&t.heap, off[i]));
        CHECK_EQ(used_bytes(c), 0);
        CHECK_CLEAN(c);
        core_thread_leave(&t);
        CHECK_EQ(free_bytes(c), heap_bytes(c));
        free(off);
        core_close(c);
}

/* A bad free returns -EINVAL and changes nothing at all. */
#define BAD_FREE(h, off) do {                                                           \
        struct al_stats s0_, s1_;                                                       \
        al_stats(&c->al, &s0_);                                                         \
        CHECKF(al_free((h), (off)) == -EINVAL, "free of %s (%#llx) accepted", #off,     \
               (unsigned long long)(off));                                              \
        al_stats(&c->al, &s1_);                                                         \
        CHECKF(memcmp(&s0_, &s1_, sizeof(s0_)) == 0, "free of %s changed the stats", #off); \
        CHECK_CLEAN(c);                                                                 \
} while (0)

static void case_bad_free(void)
{
        struct core *c = seg_create(32 * MiB, 8);
        struct core_thread t, t2;
        uint64_t a, b, r, x;
        const size_t asz = 100, rsz = 200000;

        CHECK_OK(core_thread_enter(c, &t));
        CHECK_OK(core_thread_enter(c, &t2));
        CHECK(t.slot != t2.slot);
        CHECK_OK(al_alloc(&t.heap, asz, -1, &a));
        CHECK_OK(al_alloc(&t.heap, asz, -1, &b));
        CHECK_OK(al_alloc(&t.heap, rsz, -1, &r));
        al_commit(&t.heap);
        size_t ua = al_usable(&c->al, a);
        fill(c, a, ua, 1);
        fill(c, b, ua, 2);
        fill(c, r, rsz, 3);
        uint64_t span_off = al_page_off(&c->al, head_of(c, a));
        uint64_t last_page = arena0(c)->heap_off + heap_bytes(c) - AL_PAGE_SIZE;
        uint64_t next = b + ua + AL_STAMP_SIZE;         /* never allocated */

        CHECK(!block_allocated(c, next) && block_allocated(c, a));
        BAD_FREE(&t.heap, 0);
        BAD_FREE(&t.heap, AL_STAMP_SIZE);
        BAD_FREE(&t.heap, a + 1);
        BAD_FREE(&t.heap, a + 4);
        BAD_FREE(&t.heap, a - 4);
        BAD_FREE(&t.heap, a + 8);
        BAD_FREE(&t.heap, a + 16);
        BAD_FREE(&t.heap, a + ua);
        BAD_FREE(&t2.heap, a + 8);
        BAD_FREE(&t.heap, span_off + 8);
        BAD_FREE(&t.heap, span_off + 64);
        BAD_FREE(&t.heap, span_off + AL_SLAB_HDR - 8);
        BAD_FREE(&t.heap, span_off + AL_SLAB_HDR);
        BAD_FREE(&t2.heap, span_off + AL_SLAB_HDR);
        BAD_FREE(&t.heap, next);
        BAD_FREE(&t2.heap, next);
        BAD_FREE(&t.heap, r + 8);
        BAD_FREE(&t.heap, r + AL_PAGE_SIZE);
        BAD_FREE(&t.heap, r + AL_PAGE_SIZE + 8);
        BAD_FREE(&t2.heap, r + AL_PAGE_SIZE);
        BAD_FREE(&t.heap, last_page + AL_STAMP_SIZE);
        BAD_FREE(&t.heap, arena0(c)->heap_off - 64);
        BAD_FREE(&t.heap, c->seg->size + AL_STAMP_SIZE);
        BAD_FREE(&t.heap, UINT64_MAX);
        BAD_FREE(&t.heap, UINT64_MAX - 7);
        CHECK(filled(c, a, ua, 1) && filled(c, b, ua, 2) && filled(c, r, rsz, 3));

        /* Double frees: by the owner, then by another slot. */
        CHECK_OK(al_free(&t.heap, a));
        BAD_FREE(&t.heap, a);
        BAD_FREE(&t2.heap, a);
        /* A remote free, then again by the same slot and by the owner. */
        CHECK_OK(al_free(&t2.heap, b));
        BAD_FREE(&t2.heap, b);
        BAD_FREE(&t.heap, b);
        /* The owner drains b (allocating the class until it comes round). */
        do {
                CHECK_OK(al_alloc(&t.heap, asz, -1, &x));
                al_commit(&t.heap);
        } while (x != b && x != a);
        CHECK(filled(c, r, rsz, 3));
        /* A run. */
        CHECK_OK(al_free(&t.heap, r));
        BAD_FREE(&t.heap, r);
        BAD_FREE(&t2.heap, r);
        CHECK_CLEAN(c);
        core_thread_leave(&t2);
        core_thread_leave(&t);
        CHECK_EQ(used_bytes(c), al_class_size[al_size_class(asz)]);
        core_close(c);
}

/*
 * A stale pointer freed again after its page went round: freed by its
 * owner, the span given back, the page reused as a run and then carved
 * afresh for the same class. The block was never handed out since, so a
 * free of it by a slot that does not own the new span is a double free.
 */
static void case_stale_free(void)
{
        struct core *c = seg_create(32 * MiB, 8);
        struct core_thread t, t2;
        uint64_t y0, y1, r, z;
        const size_t sz = 200;

        CHECK_OK(core_thread_enter(c, &t2));
        CHECK_OK(al_alloc(&t2.heap, sz, -1, &y0));
        CHECK_OK(al_alloc(&t2.heap, sz, -1, &y1));
        al_commit(&t2.heap);
        uint32_t page = head_of(c, y0);
        CHECK_OK(al_free(&t2.heap, y0));
        CHECK_OK(al_free(&t2.heap, y1));
        core_thread_leave(&t2);
        CHECK_EQ(al_desc(&c->al, page)->state, PAGE_FREE);

        CHECK_OK(core_thread_enter(c, &t));
        CHECK_OK(al_alloc(&t.heap, AL_PAGE_SIZE - AL_STAMP_SIZE, -1, &r));
        al_commit(&t.heap);
        CHECK_EQ(head_of(c, r), page);
        fill(c, r, AL_PAGE_SIZE - AL_STAMP_SIZE, 0xa5);
        CHECK_OK(al_free(&t.heap, r));
        CHECK_OK(al_alloc(&t.heap, sz, -1, &z));
        al_commit(&t.heap);
        CHECK_EQ(z, y0);
        CHECK(!block_allocated(c, y1));

        CHECK_OK(core_thread_enter(c, &t2));
        BAD_FREE(&t2.heap, y1);
        BAD_FREE(&t.heap, y1);
        CHECK_OK(al_free(&t.heap, z));
        CHECK_EQ(used_bytes(c), 0);
        CHECK_CLEAN(c);
        core_thread_leave(&t2);
        core_thread_leave(&t);
        core_close(c);
}

/*
 * A remote free is two ORs: the block's bit, then its word's summary bit.
 * A freer paused between them (preempted, SIGSTOPped) can see its block
 * drained and handed out again meanwhile, and then set a summary bit over a
 * word that holds no free block. Its summary going from 0 to non-zero still
 * makes it list the span, or mark it when the lock is held; if the lock's
 * next holder then finds nothing free and leaves that stale bit set, the
 * next real free sees a summary already non-zero, takes it that the span
 * is listed, and the span is lost to every slot (the stop storm's "ownerless
 * span with K free blocks on no list ... summary 0x1, nfree 0").
 */
static void case_stale_summary(void)
{
        struct core *c = seg_create(32 * MiB, 8);
        struct core_thread ta, tb, tc, td, tf;
        const size_t sz = 6000;
        const unsigned cls = (unsigned)al_size_class(sz), cap = al_class_capacity(cls);
        uint64_t x[64], y[3], extra;

        CHECK(cap >= 3 && cap < 64);
        CHECK_OK(core_thread_enter(c, &ta));
        CHECK_OK(core_thread_enter(c, &tb));
        CHECK_OK(core_thread_enter(c, &tc));
        CHECK_OK(core_thread_enter(c, &td));
        CHECK_OK(core_thread_enter(c, &tf));
        /* A fills span S; its next allocation disowns S (full: on no list). */
        for (unsigned i = 0; i < cap; i++) {
                CHECK_OK(al_alloc(&ta.heap, sz, -1, &x[i]));
                al_commit(&ta.heap);
        }
        uint32_t s = head_of(c, x[0]), i4, i9;
        CHECK_EQ(head_of(c, x[cap - 1]), s);
        CHECK_OK(al_alloc(&ta.heap, sz, -1, &extra));
        al_commit(&ta.heap);
        CHECK_EQ(al_desc(&c->al, s)->owner, 0);
        CHECK_OK(al_locate(&c->al, x[1], &s, &i4));
        CHECK_OK(al_locate(&c->al, x[2], &s, &i9));
        struct slab_hdr *sh = span_of(c, s);

        /* F frees x[1] remotely and is paused after the block's bit. */
        atomic_fetch_or(&sh->remote_free[i4 / 64], 1ull << (i4 % 64));
        /* Meanwhile B frees x[2] (0 -> 1: S is listed), and C adopts S, drains both and refills it. */
        CHECK_OK(al_free(&tb.heap, x[2]));
        for (unsigned i = 0; i < 3; i++) {
                CHECK_OK(al_alloc(&tc.heap, sz, -1, &y[i]));
                al_commit(&tc.heap);
        }
        CHECK_EQ(head_of(c, y[0]), s);
        CHECK_EQ(head_of(c, y[1]), s);
        CHECK(head_of(c, y[2]) != s);
        CHECK_EQ(al_desc(&c->al, s)->owner, 0);
        CHECK_EQ(atomic_load(&sh->remote_free[i4 / 64]), 0);
        /* F goes on with the arena locked (by a stopped client, say): S is marked. */
        CHECK_OK(al_arena_lock(&td.heap, 0));
        CHECK_EQ(atomic_fetch_or(&sh->remote_summary, 1ull << (i4 / 64)), 0);
        tf.heap.as->c.frees[0][cls]++;
        al_list_if_disowned(&tf.heap, s);
        CHECK(al_relist_marked(&c->al, s));
        al_arena_unlock(&td.heap, 0);
        /* The lock's next holder finds nothing free in S. */
        CHECK_OK(al_arena_lock(&td.heap, 0));
        al_arena_unlock(&td.heap, 0);
        /* A real free into S now must list it where slots look. */
        CHECK_OK(al_free(&tb.heap, y[0]));
        CHECK_CLEAN(c);
        CHECK_OK(al_alloc(&tb.heap, sz, -1, &y[0]));
        al_commit(&tb.heap);
        CHECK_EQ(head_of(c, y[0]), s);

        CHECK_OK(al_free(&tb.heap, y[0]));
        CHECK_OK(al_free(&tc.heap, y[1]));
        CHECK_OK(al_free(&tc.heap, y[2]));
        CHECK_OK(al_free(&ta.heap, extra));
        for (unsigned i = 0; i < cap; i++)
                if (i != 1 && i != 2)
                        CHECK_OK(al_free(&ta.heap, x[i]));
        core_thread_leave(&tf);
        core_thread_leave(&td);
        core_thread_leave(&tc);
        core_thread_leave(&tb);
        core_thread_leave(&ta);
        CHECK_EQ(used_bytes(c), 0);
        CHECK_CLEAN(c);
        core_close(c);
}

/*
 * Two arenas (both on node 0: the host may have one node). An allocation
 * for "any node" falls over to the other arena when its home is full; one
 * for a given node does not; one that no single arena can hold is -E2BIG.
 */
static void case_two_arenas(void)
{
        struct core_config cfg;
        struct core *c = NULL;
        struct core_thread t;
        struct al_stats st;
        uint64_t off, small, *runs;
        uint32_t n = 0;
        int r;

        core_config_default(&cfg);
        cfg.size = 64 * MiB;
        cfg.nslots = 8;
        cfg.huge = SEG_HUGE_REFUSE;
        cfg.flags = SEG_OPEN_EXCL;
        cfg.nnodes = 2;
        cfg.nodes[0] = cfg.nodes[1] = 0;
        r = core_open(&c, SEG_NAME, &cfg);
        if (r == -EPERM || r == -ENOSYS || r == -ENODEV) {
                fprintf(stderr, "  cannot bind two arenas to node 0 here: %s\n", seg_errdetail());
                _exit(77);
        }
        CHECK_OK(r);
        CHECK_EQ(c->al.narenas, 2);
        const struct arena *a0 = c->al.arena[0], *a1 = c->al.arena[1];
        CHECK_EQ(a1->first_page, a0->npages);
        CHECK(a0->heap_off % (2 * MiB) == 0 && a1->heap_off % (2 * MiB) == 0);
        CHECK(a1->heap_off >= a0->heap_off + (uint64_t)a0->npages * AL_PAGE_SIZE);
        CHECK_OK(core_thread_enter(c, &t));
        CHECK_EQ(t.heap.home, 0);
        runs = calloc(a0->npages, sizeof(*runs));
        CHECK(runs);

        while ((r = al_alloc(&t.heap, AL_MAX_SMALL, 0, &runs[n])) == 0) {
                al_commit(&t.heap);
                CHECK_EQ(al_arena_of_page(&c->al, head_of(c, runs[n])), 0);
                CHECK(++n <= a0->npages);
        }
        CHECK_EQ(r, -ENOMEM);
        CHECK_EQ(n, a0->npages);
        CHECK_EQ(al_alloc(&t.heap, 100, 0, &off), -ENOMEM);             /* that node only */
        CHECK_OK(al_alloc(&t.heap, 100, -1, &small));                   /* any node */
        al_commit(&t.heap);
        CHECK_EQ(al_arena_of_page(&c->al, head_of(c, small)), 1);
        CHECK_EQ(al_alloc(&t.heap, 100, 7, &off), -ENODEV);
        CHECK_EQ(al_alloc(&t.heap, (uint64_t)a1->npages * AL_PAGE_SIZE, -1, &off), -E2BIG);
        al_stats(&c->al, &st);
        int k = al_size_class(100);
        CHECK_EQ(st.narenas, 2);
        CHECK_EQ(st.a[0].free_bytes, 0);
        CHECK_EQ(st.a[0].cls[k].allocs, 0);
        CHECK_EQ(st.a[1].cls[k].allocs, 1);
        CHECK_EQ(st.a[0].run_bytes, (uint64_t)n * AL_MAX_SMALL);
        CHECK_EQ(st.used_bytes, (uint64_t)n * AL_MAX_SMALL + al_class_size[k]);
        CHECK_CLEAN(c);

        CHECK_OK(al_free(&t.heap, runs[--n]));
        CHECK_OK(al_alloc(&t.heap, 100, 0, &off));                      /* room again on node 0 */
        al_commit(&t.heap);
        CHECK_EQ(al_arena_of_page(&c->al, head_of(c, off)), 0);
        CHECK_OK(al_free(&t.heap, off));
        CHECK_OK(al_free(&t.heap, small));
        while (n)
                CHECK_OK(al_free(&t.heap, runs[--n]));
        CHECK_CLEAN(c);
        core_thread_leave(&t);
        al_stats(&c->al, &st);
        CHECK_EQ(st.used_bytes, 0);
        CHECK_EQ(st.held_bytes, 0);
        CHECK_EQ(st.a[0].free_bytes, st.a[0].total_bytes);
        CHECK_EQ(st.a[1].free_bytes, st.a[1].total_bytes);
        free(runs);
        core_close(c);
}

/* ==== 2. statistics ======================================================== */

static void case_stats(void)
{
        struct core *c = seg_create(32 * MiB, 8);
        struct core_thread t, t2;
        struct al_stats st;
        /* class index, blocks allocated, blocks freed by the owner, by another slot */
        struct { size_t size; unsigned n, own_frees, remote_frees; } plan[] = {
                { 1, 10, 2, 1 }, { 250, 5, 0, 2 }, { AL_MAX_SMALL - AL_STAMP_SIZE, 3, 1, 0 },
                { 2000, 40, 0, 0 },
        };
        const unsigned np = sizeof(plan) / sizeof(plan[0]);
        uint64_t off[64], run1, run2;
        const uint64_t r1 = 100000, r2 = 1 * MiB;

        CHECK_OK(core_thread_enter(c, &t));
        CHECK_OK(core_thread_enter(c, &t2));
        al_stats(&c->al, &st);
        CHECK_EQ(st.narenas, 1);
        CHECK_EQ(st.nclasses, al_nclasses);
        CHECK_EQ(st.used_bytes, 0);
        CHECK_EQ(st.held_bytes, 0);
        CHECK_EQ(st.a[0].total_bytes, heap_bytes(c));
        CHECK_EQ(st.a[0].free_bytes, heap_bytes(c));

        for (unsigned i = 0; i < np; i++) {
                CHECK(plan[i].n <= 64);
                for (unsigned j = 0; j < plan[i].n; j++) {
                        CHECK_OK(al_alloc(&t.heap, plan[i].size, -1, &off[j]));
                        al_commit(&t.heap);
                }
                for (unsigned j = 0; j < plan[i].own_frees; j++)
                        CHECK_OK(al_free(&t.heap, off[j]));
                for (unsigned j = 0; j < plan[i].remote_frees; j++)
                        CHECK_OK(al_free(&t2.heap, off[plan[i].own_frees + j]));
        }
        CHECK_OK(al_alloc(&t.heap, r1, -1, &run1));
        CHECK_OK(al_alloc(&t2.heap, r2, -1, &run2));
        al_commit(&t.heap);
        al_commit(&t2.heap);

        uint64_t used = 0, held_slab = 0, run_pages;
        run_pages = (r1 + AL_STAMP_SIZE + AL_PAGE_SIZE - 1) / AL_PAGE_SIZE +
                    (r2 + AL_STAMP_SIZE + AL_PAGE_SIZE - 1) / AL_PAGE_SIZE;
        al_stats(&c->al, &st);
        for (unsigned k = 0; k < al_nclasses; k++) {
                const struct al_class_stats *cs = &st.a[0].cls[k];
                uint64_t allocs = 0, frees = 0, spans = 0;
                for (unsigned i = 0; i < np; i++) {
                        if (al_size_class(plan[i].size) != (int)k)
                                continue;
                        allocs += plan[i].n;
                        frees += plan[i].own_frees + plan[i].remote_frees;
                        spans += (plan[i].n + al_class_capacity(k) - 1) / al_class_capacity(k);
                }
                CHECK_EQ(cs->block_size, al_class_size[k]);
                CHECK_EQ(cs->allocs, allocs);
                CHECK_EQ(cs->frees, frees);
                CHECK_EQ(cs->used_bytes, (allocs - frees) * al_class_size[k]);
                CHECK_EQ(cs->held_bytes, spans * al_class_span(k) * AL_PAGE_SIZE);
                used += cs->used_bytes;
                held_slab += cs->held_bytes;
        }
        CHECK_EQ(st.a[0].run_bytes, r1 + r2);
        CHECK_EQ(st.a[0].run_allocs, 2);
        CHECK_EQ(st.a[0].run_frees, 0);
        CHECK_EQ(st.used_bytes, used + r1 + r2);
        CHECK_EQ(st.held_bytes, held_slab + run_pages * AL_PAGE_SIZE);
        CHECK_EQ(st.fragmentation_bytes, held_slab - used);
        CHECK_EQ(st.a[0].free_bytes, heap_bytes(c) - st.held_bytes);
        CHECK(st.a[0].peak_used_bytes >= st.held_bytes);
        CHECK_EQ(st.a[0].peak_used_bytes, st.held_bytes);      /* nothing was given back yet */
        CHECK_CLEAN(c);

        /* Give the big run back: held and used drop, the peak stays. */
        uint64_t peak = st.a[0].peak_used_bytes;
        CHECK_OK(al_free(&t.heap, run2));       /* a run freed by another slot */
        al_stats(&c->al, &st);
        CHECK_EQ(st.a[0].run_bytes, r1);
        CHECK_EQ(st.a[0].run_frees, 1);
        CHECK_EQ(st.used_bytes, used + r1);
        CHECK_EQ(st.a[0].peak_used_bytes, peak);
        CHECK_EQ(st.held_bytes + (r2 + AL_STAMP_SIZE + AL_PAGE_SIZE - 1) / AL_PAGE_SIZE * AL_PAGE_SIZE,
                 peak);
        /* Counters live in the slots: they outlast the slot's holder. */
        core_thread_leave(&t2);
        al_stats(&c->al, &st);
        CHECK_EQ(st.used_bytes, used + r1);
        CHECK_CLEAN(c);
        core_thread_leave(&t);
        core_close(c);
}

/* ==== 3. several processes exchanging blocks ================================ */

/*
 * XN processes, one slot each, allocate mixed sizes (about 1% runs), pattern
 * every block, free some themselves and pass others to another process
 * through a single-producer ring in shared memory; the receiver checks the
 * pattern and the table, and frees the block (a remote free, mostly). At the
 * end each frees what it holds; the parent checks the quiet segment, then
 * lets them leave and checks that every page went back.
 */

#define XN       4u             /* processes */
#define XRING    256u           /* blocks in flight from one process to another */
#define XLIVE    512u           /* blocks a process holds at most */
#define XSLOTS   16u            /* slots of the segment */

struct xring {
        _Atomic uint64_t head, tail;    /* sender advances head, receiver tail */
        uint64_t off[XRING];
};

struct xshared {
        struct fail_box fb;
        _Atomic uint32_t ready, done, freed, leave;
        _Atomic uint64_t allocs, runs, sent, received, enomem;
        struct xring ring[XN][XN];      /* [from][to] */
};

struct blk {
        uint64_t off;
        size_t size;
};

/* A request size: mostly small and skewed small, sometimes a run. */
static size_t pick_size(struct rng *r, unsigned run_permille)
{
        if (rnd_below(r, 1000) < run_permille)
                return AL_MAX_SMALL + rnd_below(r, 256u << 10);
        unsigned bits = 5 + (unsigned)rnd_below(r, rnd_below(r, 10) == 0 ? 10 : 7);
        size_t s = ((size_t)1 << bits) + rnd_below(r, (size_t)1 << bits);
        return s > AL_MAX_SMALL - AL_STAMP_SIZE ? AL_MAX_SMALL - AL_STAMP_SIZE : s;
}

struct xworker {
        struct xshared *x;
        unsigned id;
        uint32_t me;
        struct core *c;
        struct core_thread t;
        struct rng r;
        struct blk live[XLIVE];
        unsigned nlive;
        uint64_t seq;
};

static void x_free(struct xworker *w, uint64_t off, size_t size)
{
        PAT_VERIFY(w->c, off, size);
        own_free_begin(off, w->me);
        CHECK_OK(al_free(&w->t.heap, off));
        own_free_end(off, w->me);
}

static void x_free_live(struct xworker *w, unsigned i)
{
        struct blk b = w->live[i];

        w->live[i] = w->live[--w->nlive];
        x_free(w, b.off, b.size);
}

static void x_alloc(struct xworker *w)
{
        size_t size = pick_size(&w->r, 10);
        uint64_t off;
        int r;

        if (w->nlive == XLIVE)
                x_free_live(w, (unsigned)rnd_below(&w->r, w->nlive));
        r = al_alloc(&w->t.heap, size, -1, &off);
        if (r == -ENOMEM) {
                atomic_fetch_add(&w->x->enomem, 1);
                if (w->nlive)
                        x_free_live(w, (unsigned)rnd_below(&w->r, w->nlive));
                return;
        }
        CHECK_OK(r);
        own_take(off, w->me);
        al_commit(&w->t.heap);
        CHECK(al_usable(&w->c->al, off) >= size);
        pat_write(w->c, off, size, w->me, ++w->seq);
        w->live[w->nlive++] = (struct blk){ off, size };
        atomic_fetch_add(&w->x->allocs, 1);
        if (size > AL_MAX_SMALL - AL_STAMP_SIZE)
                atomic_fetch_add(&w->x->runs, 1);
}

static void x_send(struct xworker *w)
{
        unsigned to = (w->id + 1 + (unsigned)rnd_below(&w->r, XN - 1)) % XN;
        struct xring *q = &w->x->ring[w->id][to];
        uint64_t head = atomic_load_explicit(&q->head, memory_order_relaxed);

        if (!w->nlive || head - atomic_load_explicit(&q->tail, memory_order_acquire) >= XRING)
                return;
        unsigned i = (unsigned)rnd_below(&w->r, w->nlive);
        struct blk b = w->live[i];
        w->live[i] = w->live[--w->nlive];
        PAT_VERIFY(w->c, b.off, b.size);
        own_move(b.off, w->me, to + 1);
        q->off[head % XRING] = b.off;
        atomic_store_explicit(&q->head, head + 1, memory_order_release);
        atomic_fetch_add(&w->x->sent, 1);
}

/* Verify and free what others sent; returns how many. */
static unsigned x_receive(struct xworker *w)
{
        unsigned n = 0;

        for (unsigned from = 0; from < XN; from++) {
                struct xring *q = &w->x->ring[from][w->id];
                uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
                while (tail < atomic_load_explicit(&q->head, memory_order_acquire)) {
                        uint64_t off = q->off[tail % XRING];
                        atomic_store_explicit(&q->tail, ++tail, memory_order_release);
                        CHECKF(atomic_load(own_entry(off)) == w->me, "received %#llx, table says %#x",
                               (unsigned long long)off, atomic_load(own_entry(off)));
                        x_free(w, off, 0);
                        n++;
                }
        }
        if (n)
                atomic_fetch_add(&w->x->received, n);
        return n;
}

static void x_worker(void *arg)
{
        struct xworker *w = arg;
        struct xshared *x = w->x;
        unsigned iters = 250000 * stress_scale();

        w->c = seg_attach();
        CHECK_OK(core_thread_enter(w->c, &w->t));
        w->me = w->id + 1;
        w->r.s = mix64(w->id + 1000);
        atomic_fetch_add(&x->ready, 1);
        while (atomic_load(&x->ready) < XN)
                sched_yield();
        for (unsigned i = 0; i < iters; i++) {
                x_receive(w);
                unsigned op = (unsigned)rnd_below(&w->r, 100);
                if (op < 50 || !w->nlive)
                        x_alloc(w);
                else if (op < 72)
                        x_free_live(w, (unsigned)rnd_below(&w->r, w->nlive));
                else
                        x_send(w);
        }
        atomic_fetch_add(&x->done, 1);
        for (;;) {
                bool all_done = atomic_load(&x->done) == XN;
                if (x_receive(w) == 0 && all_done)
                        break;
                if (!all_done)
                        sched_yield();
        }
        while (w->nlive)
                x_free_live(w, w->nlive - 1);
        /* Quiet now; the parent looks at the segment before anyone leaves. */
        atomic_fetch_add(&x->freed, 1);
        while (!atomic_load(&x->leave))
                sleep_us(1000);
        core_thread_leave(&w->t);
        core_close(w->c);
}

/* Wait for *ctr to reach `want`, failing if a worker dies first. */
static void wait_count(_Atomic uint32_t *ctr, uint32_t want, const pid_t *pids, unsigned n)
{
        while (atomic_load(ctr) < want) {
                check_box();
                for (unsigned i = 0; i < n; i++) {
                        int st;
                        pid_t r = waitpid(pids[i], &st, WNOHANG);
                        CHECKF(r == 0, "worker %d ended early (status %#x)", (int)pids[i], st);
                }
                sleep_us(2000);
        }
}

/* Spans held per (slot, class), as seen on a quiet segment. */
static void report_spans(const struct core *c, const char *when)
{
        const struct arena *a = arena0(c);
        unsigned per[XSLOTS][AL_NCLASSES];
        unsigned spans = 0, empty = 0, undrained = 0, abandoned = 0, most = 0;

        memset(per, 0, sizeof(per));
        for (uint32_t p = a->first_page; p < a->first_page + a->npages; p++) {
                const struct page_desc *d = al_desc(&c->al, p);
                if (d->state != PAGE_SLAB)
                        continue;
                struct slab_hdr *sh = span_of(c, p);
                unsigned lf = 0, rf = 0;
                for (unsigned w = 0; w < AL_BITMAP_WORDS; w++) {
                        lf += (unsigned)__builtin_popcountll(sh->local_free[w]);
                        rf += (unsigned)__builtin_popcountll(atomic_load(&sh->remote_free[w]));
                }
                spans++;
                empty += lf + rf == d->capacity;
                undrained += rf != 0;
                if (d->owner == 0) {
                        abandoned++;
                } else if (d->owner <= XSLOTS) {
                        unsigned v = ++per[d->owner - 1][d->cls];
                        most = v > most ? v : most;
                }
        }
        fprintf(stderr, "  %s: %u spans held (%u entirely free, %u with undrained remote frees, "
                "%u abandoned); at most %u spans of one class in one slot\n",
                when, spans, empty, undrained, abandoned, most);
}

static void case_exchange(void)
{
        struct core *c = seg_create(64 * MiB, XSLOTS);
        struct xshared *x = shared_map(sizeof(*x));
        struct xworker *w = calloc(XN, sizeof(*w));
        pid_t pids[XN];

        fail_box = &x->fb;
        own_init(c);
        for (unsigned i = 0; i < XN; i++) {
                w[i].x = x;
                w[i].id = i;
                pids[i] = harness_spawn(x_worker, &w[i]);
        }
        wait_count(&x->freed, XN, pids, XN);

        /* Everything was freed, by its owner or (mostly) by another process. */
        CHECK_CLEAN(c);
        struct al_stats st;
        al_stats(&c->al, &st);
        CHECK_EQ(st.used_bytes, 0);
        CHECK_EQ(st.a[0].run_bytes, 0);
        for (unsigned k = 0; k < al_nclasses; k++)
                CHECKF(st.a[0].cls[k].used_bytes == 0, "class %u: %llu bytes in use", k,
                       (unsigned long long)st.a[0].cls[k].used_bytes);
        CHECK_EQ(count_allocated(c), 0);
        for (uint64_t i = 0; i < own->n; i++)
                CHECKF(atomic_load(&own->e[i]) == 0, "block %#llx still held by %#x",
                       (unsigned long long)own_off(i), atomic_load(&own->e[i]));
        fprintf(stderr, "  exchange: %llu allocations (%llu runs), %llu sent and freed remotely, "
                "%llu out-of-memory, %llu re-handed while their freer finished\n",
                (unsigned long long)x->allocs, (unsigned long long)x->runs,
                (unsigned long long)x->received, (unsigned long long)x->enomem,
                (unsigned long long)own->takeovers);
        CHECK_EQ(x->sent, x->received);
        CHECK(x->received > 0 && x->runs > 0);
        report_spans(c, "exchange, all freed, before leaving");
        fprintf(stderr, "  held %llu KiB, fragmentation %llu KiB\n",
                (unsigned long long)st.held_bytes >> 10,
                (unsigned long long)st.fragmentation_bytes >> 10);

        atomic_store(&x->leave, 1);
        for (unsigned i = 0; i < XN; i++)
                expect_exit0(pids[i]);
        /* Leaving drains every span and gives the empty ones back: all are. */
        CHECK_CLEAN(c);
        CHECK_EQ(used_bytes(c), 0);
        CHECK_EQ(free_bytes(c), heap_bytes(c));
        fail_box = NULL;
        free(w);
        core_close(c);
}

/* ==== 4. processes killed at random moments ================================= */

/*
 * Three children at a time: one allocates runs all the time (so it often
 * holds the arena lock), one loops on small blocks with little else to do
 * (so kills land inside the allocator), one mixes sizes. They park blocks in
 * a shared pool, where another child verifies and frees them (remote frees).
 * Each round the parent SIGKILLs one at a random moment (the runs child, a
 * few times, while its tag is in the arena lock word), recovers its slot as
 * the supervisor would, and starts another. Every CEPOCH rounds it kills them
 * all and checks that the allocator holds exactly the blocks the table says
 * someone holds, the dead included, then frees those.
 *
 * The table is the "published" answer for recovery: a child records a block
 * after al_alloc returns and before al_commit. Before al_free it marks the
 * entry FREEING rather than clearing it, so that a child killed between the
 * mark and al_free's commit point leaves a block that is still allocated and
 * still known; at a full stop the parent frees those that are.
 */

#define CN       3u             /* children alive at once */
#define CPOOL    64u            /* blocks parked for any child to take */
#define CEPOCH   25u            /* rounds between full stops */

enum { MODE_MIXED, MODE_RUNS, MODE_TIGHT };

struct cchild {
        _Atomic uint32_t ready;
        uint32_t slot, gen;
};

struct cshared {
        struct fail_box fb;
        _Atomic uint64_t pool[CPOOL];
        _Atomic uint64_t allocs, frees, runs, enomem, parked, unparked;
        uint32_t nchild;
        struct cchild child[];
};
static struct cshared *cs;

struct cworker {
        uint32_t id;
        unsigned mode, max_live;
        struct core *c;
        struct core_thread t;
        struct rng r;
        struct blk live[XLIVE];
        unsigned nlive;
        uint64_t seq;
};

static void c_free(struct cworker *w, unsigned i)
{
        struct blk b = w->live[i];

        w->live[i] = w->live[--w->nlive];
        PAT_VERIFY(w->c, b.off, b.size);
        own_free_begin(b.off, w->id);
        CHECK_OK(al_free(&w->t.heap, b.off));
        own_free_end(b.off, w->id);
        atomic_fetch_add(&cs->frees, 1);
}

static size_t c_size(struct cworker *w)
{
        switch (w->mode) {
        case MODE_RUNS:
                return (1 + rnd_below(&w->r, 8)) * AL_PAGE_SIZE - AL_STAMP_SIZE - rnd_below(&w->r, 512);
        case MODE_TIGHT:
                return 32 + rnd_below(&w->r, 224);
        default:
                return pick_size(&w->r, 20);
        }
}

static void c_alloc(struct cworker *w)
{
        size_t size = c_size(w);
        uint64_t off;
        int r;

        if (w->nlive >= w->max_live)
                c_free(w, (unsigned)rnd_below(&w->r, w->nlive));
        r = al_alloc(&w->t.heap, size, -1, &off);
        if (r == -ENOMEM) {
                atomic_fetch_add(&cs->enomem, 1);
                if (w->nlive)
                        c_free(w, (unsigned)rnd_below(&w->r, w->nlive));
                return;
        }
        CHECK_OK(r);
        own_take(off, w->id);           /* recorded: now "published" */
        al_commit(&w->t.heap);
        pat_write(w->c, off, size, w->id, ++w->seq);
        w->live[w->nlive++] = (struct blk){ off, size };
        atomic_fetch_add(&cs->allocs, 1);
        if (size > AL_MAX_SMALL - AL_STAMP_SIZE)
                atomic_fetch_add(&cs->runs, 1);
}

/* Park a block in the pool, for another child to verify and free (remotely). */
static void c_park(struct cworker *w)
{
        _Atomic uint64_t *cell = &cs->pool[rnd_below(&w->r, CPOOL)];
        uint64_t expect = 0;

        if (!w->nlive || atomic_load(cell))
                return;
        unsigned i = (unsigned)rnd_below(&w->r, w->nlive);
        struct blk b = w->live[i];
        PAT_VERIFY(w->c, b.off, b.size);
        own_move(b.off, w->id, OWN_POOL);
        if (!atomic_compare_exchange_strong(cell, &expect, b.off)) {
                own_move(b.off, OWN_POOL, w->id);
                return;
        }
        w->live[i] = w->live[--w->nlive];
        atomic_fetch_add(&cs->parked, 1);
}

static void c_unpark(struct cworker *w)
{
        uint64_t off = atomic_exchange(&cs->pool[rnd_below(&w->r, CPOOL)], 0);
        size_t size = 0;

        if (!off)
                return;
        own_move(off, OWN_POOL, w->id);
        const char *why = pat_check(w->c, off, &size);
        CHECKF(!why, "parked block %#llx: %s", (unsigned long long)off, why);
        if (w->nlive == XLIVE)
                c_free(w, 0);
        w->live[w->nlive++] = (struct blk){ off, size };
        atomic_fetch_add(&cs->unparked, 1);
        if (rnd_below(&w->r, 2))
                c_free(w, w->nlive - 1);
}

static void c_worker(void *arg)
{
        struct cworker *w = arg;
        struct cchild *ch = &cs->child[w->id];

        w->c = seg_attach();
        w->c->published = own_published;
        CHECK_OK(core_thread_enter(w->c, &w->t));
        w->r.s = mix64(w->id * 7919ull);
        w->max_live = w->mode == MODE_RUNS ? 4 : w->mode == MODE_TIGHT ? 32 : 256;
        ch->slot = w->t.slot;
        ch->gen = w->t.gen;
        atomic_store(&ch->ready, 1);
        for (;;) {
                unsigned op = (unsigned)rnd_below(&w->r, 100);
                if (op < 45 || !w->nlive)
                        c_alloc(w);
                else if (op < 75)
                        c_free(w, (unsigned)rnd_below(&w->r, w->nlive));
                else if (op < 88)
                        c_park(w);
                else
                        c_unpark(w);
        }
}

struct kid {
        pid_t pid;
        uint32_t id, slot, gen;
        unsigned mode;
};

static uint32_t next_kid_id;

static void kid_start(struct kid *k, unsigned mode)
{
        struct cworker *w = calloc(1, sizeof(*w));
        struct cchild *ch;

        CHECK(w && next_kid_id < cs->nchild);
        w->id = next_kid_id++;
        w->mode = mode;
        k->id = w->id;
        k->mode = mode;
        k->pid = harness_spawn(c_worker, w);
        free(w);
        ch = &cs->child[k->id];
        while (!atomic_load(&ch->ready)) {
                int st;
                check_box();
                CHECKF(waitpid(k->pid, &st, WNOHANG) == 0, "child %u ended (status %#x)", k->id, st);
                sleep_us(100);
        }
        k->slot = ch->slot;
        k->gen = ch->gen;
}

/*
 * SIGKILL a child (when `at_lock`, preferably while its tag is in the arena
 * lock word), then recover its slot as the supervisor would. Returns whether
 * it died holding the arena lock.
 */
static bool kid_kill(struct core *c, struct kid *k, bool at_lock)
{
        uint64_t tag = olock_tag(k->slot, k->gen), rep0;
        bool held;

        if (at_lock) {
                uint64_t until = now_ns() + 5000000;
                for (unsigned i = 0; lock_word(c) != tag; i++) {
                        if ((i & 255) == 0 && now_ns() > until)
                                break;
                }
        }
        rep0 = repairs(c);
        CHECK_EQ(kill(k->pid, SIGKILL), 0);
        expect_killed(k->pid);
        k->pid = 0;
        held = lock_word(c) == tag;
        CHECK_EQ(slot_recover_dead(c->seg, k->slot), 1);
        CHECK_EQ(atomic_load(&slot_hdr(c->seg, k->slot)->state), SLOT_FREE);
        CHECKF(lock_word(c) != tag, "arena lock still held by dead slot %u", k->slot);
        if (held)
                CHECKF(repairs(c) > rep0, "arena lock taken from a dead holder without a repair");
        return held;
}

/* Report allocated blocks the ownership table knows nothing about. */
static void report_untracked(const struct core *c)
{
        const struct arena *a = arena0(c);
        unsigned n = 0;

        for (uint32_t p = a->first_page; p < a->first_page + a->npages && n < 10; p++) {
                const struct page_desc *d = al_desc(&c->al, p);
                uint64_t po = al_page_off(&c->al, p);
                if (d->state == PAGE_RUN && !atomic_load(own_entry(po + AL_STAMP_SIZE))) {
                        fprintf(stderr, "  untracked run at %#llx (stamp %#llx)\n",
                                (unsigned long long)po + AL_STAMP_SIZE,
                                (unsigned long long)al_stamp(&c->al, po + AL_STAMP_SIZE));
                        n++;
                }
                if (d->state != PAGE_SLAB)
                        continue;
                for (uint32_t i = 0; i < d->capacity && n < 10; i++) {
                        uint64_t off = po + AL_SLAB_HDR + (uint64_t)i * d->block_size + AL_STAMP_SIZE;
                        if (block_allocated(c, off) && !atomic_load(own_entry(off))) {
                                fprintf(stderr, "  untracked block %#llx (class %u, owner %u, stamp %#llx)\n",
                                        (unsigned long long)off, d->cls, d->owner,
                                        (unsigned long long)al_stamp(&c->al, off));
                                n++;
                        }
                }
        }
}

/*
 * With every child dead and recovered: the allocator must hold exactly the
 * blocks the table says someone holds (the dead included), no lock may be
 * left held, and after the supervisor frees all of them nothing is in use.
 */
static void crash_settle(struct core *c, struct kid *kids, unsigned *died_holding)
{
        uint64_t tracked = 0, allocated;
        struct core_thread t;

        for (unsigned i = 0; i < CN; i++) {
                if (kids[i].pid)
                        *died_holding += kid_kill(c, &kids[i], false);
        }
        CHECK_EQ(slots_sweep(c->seg), 0);
        CHECK_EQ(lock_word(c), 0);
        CHECK_CLEAN(c);
        for (uint64_t i = 0; i < own->n; i++) {
                uint32_t v = atomic_load(&own->e[i]);
                if (!v)
                        continue;
                bool live = block_allocated(c, own_off(i));
                if (v & OWN_FREEING) {
                        /* Killed around al_free: the block is free, or its free never began. */
                        tracked += live;
                        if (!live)
                                atomic_store(&own->e[i], 0);
                        continue;
                }
                CHECKF(live, "block %#llx is held by %#x per the table, but free",
                       (unsigned long long)own_off(i), v);
                tracked++;
        }
        allocated = count_allocated(c);
        if (allocated != tracked)
                report_untracked(c);
        CHECK_EQ(allocated, tracked);

        CHECK_OK(core_thread_enter(c, &t));
        for (uint64_t i = 0; i < own->n; i++) {
                uint32_t v = atomic_load(&own->e[i]);
                if (!v)
                        continue;
                if (v == OWN_POOL)
                        PAT_VERIFY(c, own_off(i), 0);
                CHECK_OK(al_free(&t.heap, own_off(i)));
                atomic_store(&own->e[i], 0);
        }
        for (unsigned i = 0; i < CPOOL; i++)
                atomic_store(&cs->pool[i], 0);
        core_thread_leave(&t);
        CHECK_CLEAN(c);
        CHECK_EQ(count_allocated(c), 0);
        CHECK_EQ(used_bytes(c), 0);
}

static void case_crash(void)
{
        struct core *c = seg_create(64 * MiB, 16);
        unsigned rounds = 200 * stress_scale(), nchild = rounds + (rounds / CEPOCH + 2) * CN + 8;
        unsigned died_holding = 0, lock_aimed = 0, settles = 0;
        uint64_t rep0 = repairs(c);
        struct kid kids[CN];
        struct rng r = { 4242 };
        static const unsigned modes[CN] = { MODE_RUNS, MODE_TIGHT, MODE_MIXED };

        cs = shared_map(sizeof(*cs) + nchild * sizeof(cs->child[0]));
        cs->nchild = nchild;
        fail_box = &cs->fb;
        own_init(c);
        c->published = own_published;
        next_kid_id = 1;
        for (unsigned i = 0; i < CN; i++)
                kid_start(&kids[i], modes[i]);
        for (unsigned round = 0; round < rounds; round++) {
                sleep_us((unsigned)rnd_below(&r, 3000));
                unsigned v = (unsigned)rnd_below(&r, CN);
                /* Each death holding the lock costs the next taker about a second (olock). */
                bool at_lock = kids[v].mode == MODE_RUNS && died_holding < 3 * stress_scale();
                lock_aimed += at_lock;
                died_holding += kid_kill(c, &kids[v], at_lock);
                check_box();
                if ((round + 1) % CEPOCH == 0 || round + 1 == rounds) {
                        crash_settle(c, kids, &died_holding);
                        settles++;
                        if (round + 1 < rounds) {
                                for (unsigned i = 0; i < CN; i++)
                                        kid_start(&kids[i], modes[i]);
                        }
                } else {
                        kid_start(&kids[v], kids[v].mode);
                }
        }
        /* No arena lock is left held: the supervisor takes it at once. */
        struct core_thread t;
        CHECK_OK(core_thread_enter(c, &t));
        CHECK_OK(al_arena_lock(&t.heap, 0));
        CHECK_EQ(lock_word(c), olock_tag(t.slot, t.gen));
        al_arena_unlock(&t.heap, 0);
        core_thread_leave(&t);
        CHECK_EQ(lock_word(c), 0);
        fprintf(stderr, "  crash: %u kills in %u rounds, %u full stops; %u aimed at the arena lock, "
                "%u died holding it; %llu repairs; %llu allocations (%llu runs), %llu frees, "
                "%llu parked, %llu taken from the pool, %llu re-handed while their freer finished, "
                "%llu out-of-memory\n",
                next_kid_id - 1, rounds, settles, lock_aimed, died_holding,
                (unsigned long long)(repairs(c) - rep0), (unsigned long long)cs->allocs,
                (unsigned long long)cs->runs, (unsigned long long)cs->frees,
                (unsigned long long)cs->parked, (unsigned long long)cs->unparked,
                (unsigned long long)own->takeovers, (unsigned long long)cs->enomem);
        CHECK(repairs(c) - rep0 >= died_holding);
        fail_box = NULL;
        core_close(c);
}

/* ==== 5. recovery when a new thread claims a dead slot ====================== */

struct claim_shared {
        struct fail_box fb;
        uint32_t slot, gen;
        uint64_t a[10], b, pending, run;
};

static void claim_child(void *arg)
{
        struct claim_shared *cl = arg;
        struct core *c = seg_attach();
        struct core_thread t;

        CHECK_OK(core_thread_enter(c, &t));
        cl->slot = t.slot;
        cl->gen = t.gen;
        for (unsigned i = 0; i < 10; i++)
                CHECK_OK(al_alloc(&t.heap, 100, -1, &cl->a[i]));        /* a partial span */
        CHECK_OK(al_alloc(&t.heap, 1000, -1, &cl->b));                  /* an emptied span */
        CHECK_OK(al_free(&t.heap, cl->b));
        CHECK_OK(al_alloc(&t.heap, 300000, -1, &cl->run));              /* a run, kept */
        CHECK_OK(al_alloc(&t.heap, 3000, -1, &cl->pending));    /* never committed nor published */
        raise(SIGKILL);
}

static bool on_list(const struct core *c, uint32_t head, uint32_t page)
{
        for (unsigned n = 0; head && n < 100000; n++) {
                if (head - 1 == page)
                        return true;
                head = al_desc(&c->al, head - 1)->next;
        }
        return false;
}

static void case_claim(void)
{
        struct core *c = seg_create(32 * MiB, 8);
        struct claim_shared *cl = shared_map(sizeof(*cl));
        struct core_thread t0, t1;
        uint64_t x;

        fail_box = &cl->fb;
        CHECK_OK(core_thread_enter(c, &t0));
        expect_killed(harness_spawn(claim_child, cl));
        CHECK(cl->slot != t0.slot);
        struct slot_hdr *sh = slot_hdr(c->seg, cl->slot);
        uint32_t rec0 = sh->recovered;
        uint32_t pa = head_of(c, cl->a[0]), pb = head_of(c, cl->b), pp = head_of(c, cl->pending);
        unsigned ka = (unsigned)al_size_class(100);
        CHECK_EQ(atomic_load(&sh->state), SLOT_LIVE);
        CHECK_EQ(al_desc(&c->al, pa)->owner, cl->slot + 1);
        CHECK(block_allocated(c, cl->pending));
        /* A remote free into the dead slot's span, before anyone recovers it. */
        CHECK_OK(al_free(&t0.heap, cl->a[0]));

        /*
         * A claim takes a free slot while there is one (a dead slot is not a
         * new client's work); with every other slot held, the next claim gets
         * the dead slot and recovers it first.
         */
        struct core_thread fill[8];
        unsigned nfill = 0;
        for (;;) {
                CHECK(nfill < 8);
                CHECK_OK(core_thread_enter(c, &fill[nfill]));
                if (fill[nfill].slot == cl->slot)
                        break;
                CHECK_EQ(sh->recovered, rec0);          /* free slots first */
                nfill++;
        }
        t1 = fill[nfill];
        CHECK_EQ(nfill, 6);                             /* 8 slots: t0, the dead one, 6 free */
        for (unsigned i = 0; i < nfill; i++)
                core_thread_leave(&fill[i]);
        CHECK_EQ(t1.slot, cl->slot);
        CHECK_EQ(sh->recovered, rec0 + 1);
        CHECK(t1.gen != cl->gen);
        CHECK_EQ(atomic_load(&sh->state), SLOT_LIVE);
        CHECK_EQ(al_desc(&c->al, pb)->state, PAGE_FREE);        /* empty: back to the arena */
        CHECK(!block_allocated(c, cl->pending));                /* journalled, unpublished: freed */
        CHECK_EQ(al_desc(&c->al, pp)->state, PAGE_FREE);
        CHECK_EQ(al_desc(&c->al, pa)->state, PAGE_SLAB);        /* partial: abandoned */
        CHECK_EQ(al_desc(&c->al, pa)->owner, 0);
        CHECK(on_list(c, arena0(c)->abandoned[ka], pa));
        CHECK(block_allocated(c, cl->run));
        CHECK_CLEAN(c);
        CHECK_EQ(used_bytes(c), 9ull * al_class_size[ka] + 300000);

        for (unsigned i = 1; i < 10; i++)
                CHECK_OK(al_free(&t1.heap, cl->a[i]));
        CHECK_OK(al_free(&t1.heap, cl->run));
        CHECK_EQ(used_bytes(c), 0);
        CHECK_CLEAN(c);
        /* The abandoned span is adopted by the next heap that needs its class. */
        CHECK_OK(al_alloc(&t1.heap, 100, -1, &x));
        al_commit(&t1.heap);
        CHECK_EQ(head_of(c, x), pa);
        CHECK_EQ(al_desc(&c->al, pa)->owner, t1.slot + 1);
        CHECK(!on_list(c, arena0(c)->abandoned[ka], pa));
        CHECK_OK(al_free(&t1.heap, x));
        core_thread_leave(&t1);
        core_thread_leave(&t0);
        CHECK_EQ(free_bytes(c), heap_bytes(c));
        CHECK_CLEAN(c);
        fail_box = NULL;
        core_close(c);
}

/* ==== 6. the crash points of docs/design.md 3.4, one at a time ============= */

struct pt_shared {
        struct fail_box fb;
        _Atomic uint32_t step;
        uint32_t slot, gen;
        bool published;
        uint64_t off[8];
};
static struct pt_shared *pt;

static bool pt_published(uint64_t off, void *arg)
{
        (void)arg;
        return pt->published && off == pt->off[0];
}

static struct al_slot *slot_al(struct core_thread *t)
{
        return t->heap.as;
}

/* A crash-point child: attach, claim a slot, say which. */
static struct core *pt_enter(struct core_thread *t)
{
        struct core *c = seg_attach();

        CHECK_OK(core_thread_enter(c, t));
        pt->slot = t->slot;
        pt->gen = t->gen;
        return c;
}

static void pt_wait(uint32_t step)
{
        while (atomic_load(&pt->step) < step)
                sleep_us(200);
}

/* Alloc killed after clearing the bit and stamping, before counting (row 2). */
static void pt_alloc_child(void *arg)
{
        struct core_thread t;
        int k = al_size_class(200);

        (void)arg;
        pt_enter(&t);
        CHECK_OK(al_alloc(&t.heap, 200, -1, &pt->off[1]));     /* committed, kept */
        al_commit(&t.heap);
        CHECK_OK(al_alloc(&t.heap, 200, -1, &pt->off[0]));
        slot_al(&t)->c.allocs[0][k]--;
        raise(SIGKILL);
}

/* Own free killed after setting the bit, before the count (row 4). */
static void pt_free_child(void *arg)
{
        struct core_thread t;
        int k = al_size_class(200);

        (void)arg;
        pt_enter(&t);
        CHECK_OK(al_alloc(&t.heap, 200, -1, &pt->off[0]));
        CHECK_OK(al_alloc(&t.heap, 200, -1, &pt->off[1]));
        al_commit(&t.heap);
        CHECK_OK(al_free(&t.heap, pt->off[0]));
        slot_al(&t)->c.frees[0][k]--;
        atomic_store(&slot_al(&t)->j.op, J_FREE);
        raise(SIGKILL);
}

/*
 * Own free killed right after its journal (row 3), with a thief's tag left in
 * the slot's steal word by a thief that died: recovery must settle the free
 * before anyone disowns the span, or it judges the free by the wrong owner.
 */
static void pt_stalethief_child(void *arg)
{
        struct core_thread t;
        struct core *c = pt_enter(&t);
        struct al_slot *as = slot_al(&t);
        int k = al_size_class(200);

        (void)arg;
        CHECK_OK(al_alloc(&t.heap, 200, -1, &pt->off[0]));
        CHECK_OK(al_alloc(&t.heap, 200, -1, &pt->off[1]));
        al_commit(&t.heap);
        as->j.off = pt->off[0];
        as->j.stamp = al_stamp(&c->al, pt->off[0]);
        as->j.arena = 0;
        as->j.cls = (uint32_t)k;
        as->j.count = as->c.frees[0][k];
        atomic_store(&as->j.op, J_FREE);
        atomic_store(&as->steal, olock_tag(t.slot, t.gen - 1));        /* a thief long dead */
        raise(SIGKILL);
}

/*
 * An allocation handed out, never published, from a span that then filled
 * up; the slot goes idle and a thief disowns its spans (the full one goes
 * on no list: no block of it is free). Then the slot is killed.
 */
/*
 * Allocate `size` blocks until the first one's span is full; each committed
 * but the last, which stays journalled. Returns the last; *ret_first the first.
 */
static uint64_t pt_fill_span(struct core *c, struct core_thread *t, size_t size,
                             uint64_t *ret_first)
{
        uint32_t pg = UINT32_MAX;

        for (;;) {
                uint64_t off;
                CHECK_OK(al_alloc(&t->heap, size, -1, &off));
                if (pg == UINT32_MAX) {
                        pg = head_of(c, off);
                        *ret_first = off;
                }
                CHECKF(head_of(c, off) == pg, "the span filled up unseen");
                if (al_desc(&c->al, pg)->nfree == 0)
                        return off;
                al_commit(&t->heap);
        }
}

static void pt_fullspan_child(void *arg)
{
        struct core_thread t;
        struct core *c = pt_enter(&t);
        uint64_t first;

        (void)arg;
        pt->off[0] = pt_fill_span(c, &t, 200, &first);  /* journalled, not committed */
        atomic_store(&pt->step, 1);
        pause();                /* idle: the parent steals, then kills */
}

/* Remote free killed after the OR (row 6), or before it (row 5: `arg` non-NULL). */
static void pt_rfree_child(void *arg)
{
        struct core_thread t;
        struct core *c = pt_enter(&t);
        uint64_t off = pt->off[0];
        int k = al_size_class(200);

        CHECK_OK(al_free(&t.heap, off));
        slot_al(&t)->c.frees[0][k]--;
        if (arg) {
                uint32_t i = block_idx(c, off);
                struct slab_hdr *sh = span_of(c, head_of(c, off));
                atomic_fetch_and(&sh->remote_free[i / 64], ~(1ull << (i % 64)));
                atomic_fetch_and(&sh->remote_summary, ~(1ull << (i / 64)));
        }
        atomic_store(&slot_al(&t)->j.op, J_RFREE);
        raise(SIGKILL);
}

/*
 * A drain killed after it took the summary (`arg` NULL), or after it also
 * moved the bits to the private bitmap, of a span whose blocks the parent has
 * all freed remotely.
 */
static void pt_drain_child(void *arg)
{
        struct core_thread t;
        struct core *c = pt_enter(&t);

        for (unsigned i = 0; i < 3; i++)
                CHECK_OK(al_alloc(&t.heap, 200, -1, &pt->off[i]));
        al_commit(&t.heap);
        atomic_store(&pt->step, 1);
        pt_wait(2);
        uint32_t h = head_of(c, pt->off[0]);
        struct slab_hdr *sh = span_of(c, h);
        uint64_t summary = atomic_exchange(&sh->remote_summary, 0);
        CHECK(summary != 0);
        if (arg) {
                for (unsigned w = 0; w < AL_BITMAP_WORDS; w++) {
                        uint64_t bits = atomic_load(&sh->remote_free[w]);
                        for (uint64_t b = bits; b; b &= b - 1) {
                                uint64_t blk = al_page_off(&c->al, h) + AL_SLAB_HDR +
                                               (w * 64u + (unsigned)__builtin_ctzll(b)) *
                                               (uint64_t)al_desc(&c->al, h)->block_size;
                                *(uint64_t *)seg_ptr(c->seg, blk) = AL_STAMP_FREE;
                        }
                        sh->local_free[w] |= bits;
                }
        }
        raise(SIGKILL);
}

/*
 * A trim's drain of an abandoned span killed after it took the summary, the
 * arena lock held (row 7 for spans no one owns): the remote bits are still
 * there, no summary bit points at them. `pt->off[0]` names a block of it.
 */
static void pt_trimdrain_child(void *arg)
{
        struct core_thread t;
        struct core *c = pt_enter(&t);
        struct slab_hdr *sh = span_of(c, head_of(c, pt->off[0]));

        (void)arg;
        CHECK_OK(al_arena_lock(&t.heap, 0));
        CHECK(atomic_exchange(&sh->remote_summary, 0) != 0);
        raise(SIGKILL);
}

/* A child killed at one named test point (shm/testpoint.h). */
static const char *kill_at;

static void kill_here(const char *point)
{
        if (!strcmp(point, kill_at))
                raise(SIGKILL);
}

/*
 * Fill one span of 3000-byte blocks, then leave: the full span is disowned
 * (on no list: no block of it is free), with its search cursor past the end.
 */
static void pt_fillspan_child(void *arg)
{
        struct core_thread t;
        struct core *c = pt_enter(&t);
        uint64_t extra;

        (void)arg;
        pt_fill_span(c, &t, 3000, &pt->off[0]);
        CHECK_OK(al_alloc(&t.heap, 3000, -1, &extra));  /* finds it full: disowned */
        CHECK_OK(al_free(&t.heap, extra));
        al_commit(&t.heap);
        core_thread_leave(&t);
        _exit(0);
}

/* A trim killed in its drain of a span, after moving the bits, before the cursor. */
static void pt_trimcursor_child(void *arg)
{
        struct core_thread t;

        (void)arg;
        pt_enter(&t);
        kill_at = "drain-moved";
        stoa_test_hook = kill_here;
        al_trim(&t.heap);
        _exit(3);
}

/* A client that takes 3 blocks and leaves (its span abandoned, 3 blocks in use). */
static void pt_leave_child(void *arg)
{
        struct core_thread t;

        (void)arg;
        pt_enter(&t);
        for (unsigned i = 0; i < 3; i++)
                CHECK_OK(al_alloc(&t.heap, 200, -1, &pt->off[i]));
        al_commit(&t.heap);
        core_thread_leave(&t);
        _exit(0);
}

/* Die holding the arena lock (row 8), after taking a span. */
static void pt_lock_child(void *arg)
{
        struct core_thread t;

        (void)arg;
        pt_enter(&t);
        CHECK_OK(al_alloc(&t.heap, 200, -1, &pt->off[0]));
        al_commit(&t.heap);
        CHECK_OK(al_arena_lock(&t.heap, 0));
        raise(SIGKILL);
}

/* Die in span_acquire: pages taken, tails written, head not yet committed (row 9). */
static void pt_acquire_child(void *arg)
{
        struct core_thread t;
        struct core *c = pt_enter(&t);
        uint32_t n = al_class_span(al_nclasses - 1);

        (void)arg;
        CHECK(n > 1);
        CHECK_OK(al_arena_lock(&t.heap, 0));
        uint32_t page = al_pages_take(&c->al, 0, n);
        CHECK(page != UINT32_MAX);
        pt->off[0] = page;
        for (uint32_t p = page + 1; p < page + n; p++) {
                al_desc(&c->al, p)->span = page;
                al_desc(&c->al, p)->state = PAGE_SLAB_TAIL;
        }
        raise(SIGKILL);
}

/* Die freeing a run: its head descriptor is FREE, the tails not yet. */
static void pt_runfree_child(void *arg)
{
        struct core_thread t;
        struct core *c = pt_enter(&t);
        struct al_slot *as = slot_al(&t);
        uint64_t off;

        (void)arg;
        CHECK_OK(al_alloc(&t.heap, 4 * AL_PAGE_SIZE, -1, &off));
        al_commit(&t.heap);
        pt->off[0] = off;
        as->j.off = off;
        as->j.stamp = al_stamp(&c->al, off);
        atomic_store(&as->j.op, J_RUN_FREE);
        CHECK_OK(al_arena_lock(&t.heap, 0));
        al_desc(&c->al, head_of(c, off))->state = PAGE_FREE;
        raise(SIGKILL);
}

/* Run `child` to its death; return its slot, not yet recovered. */
static uint32_t pt_run(void (*child)(void *), void *arg)
{
        atomic_store(&pt->step, 0);
        memset(pt->off, 0, sizeof(pt->off));
        expect_killed(harness_spawn(child, arg));
        return pt->slot;
}

static void pt_recover_at(struct core *c, uint32_t slot, int line)
{
        int r = slot_recover_dead(c->seg, slot);

        CHECKF(r == 1, "line %d: recovery of slot %u: %d (state %u)", line, slot, r,
               atomic_load(&slot_hdr(c->seg, slot)->state));
        CHECK_EQ(lock_word(c), 0);
        CHECK_CLEAN(c);
}
#define pt_recover(c, slot) pt_recover_at((c), (slot), __LINE__)

/* A recoverer killed at one named step of its recovery. */
static uint32_t kill_slot;

static void pt_recoverer_child(void *arg)
{
        struct core *c = seg_attach();

        (void)arg;
        c->published = pt_published;
        stoa_test_hook = kill_here;
        slot_recover_dead(c->seg, kill_slot);
        _exit(3);               /* the point was never reached */
}

/* Recover `slot` in a child killed at `point`; false if it never got there. */
static bool recover_killed_at(uint32_t slot, const char *point)
{
        int st;

        kill_at = point;
        kill_slot = slot;
        pid_t pid = harness_spawn(pt_recoverer_child, NULL);
        while (waitpid(pid, &st, 0) < 0)
                CHECK(errno == EINTR);
        CHECKF(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) == 3),
               "recoverer killed at %s: status %#x", point, st);
        return WIFSIGNALED(st);
}

/* Free every block of the span at `pg` that is still allocated. */
static void free_span(struct core *c, struct core_thread *t, uint32_t pg)
{
        const struct page_desc *d = al_desc(&c->al, pg);
        uint64_t base = al_page_off(&c->al, pg) + AL_SLAB_HDR + AL_STAMP_SIZE;

        for (uint32_t b = 0; b < d->capacity; b++)
                if (block_allocated(c, base + (uint64_t)b * d->block_size))
                        CHECK_OK(al_free(&t->heap, base + (uint64_t)b * d->block_size));
}

static void case_crash_points(void)
{
        struct core *c = seg_create(32 * MiB, 8);
        struct core_thread t;
        uint32_t slot, pg;
        uint64_t off, rep0, freeb;
        int k = al_size_class(200);

        pt = shared_map(sizeof(*pt));
        fail_box = &pt->fb;
        c->published = pt_published;
        CHECK_OK(core_thread_enter(c, &t));

        /* Row 2: the block was handed out; not published, so it is freed. */
        pt->published = false;
        slot = pt_run(pt_alloc_child, NULL);
        pt_recover(c, slot);
        CHECK(!block_allocated(c, pt->off[0]) && block_allocated(c, pt->off[1]));
        CHECK_EQ(used_bytes(c), al_class_size[k]);
        CHECK_OK(al_free(&t.heap, pt->off[1]));
        CHECK_EQ(used_bytes(c), 0);

        /* Row 2 again: published, so it is kept (and counted). */
        pt->published = true;
        slot = pt_run(pt_alloc_child, NULL);
        pt_recover(c, slot);
        CHECK(block_allocated(c, pt->off[0]) && block_allocated(c, pt->off[1]));
        CHECK_EQ(used_bytes(c), 2ull * al_class_size[k]);
        CHECK_OK(al_free(&t.heap, pt->off[0]));
        CHECK_OK(al_free(&t.heap, pt->off[1]));
        CHECK_EQ(used_bytes(c), 0);
        pt->published = false;

        /* Row 4: own free, bit set, count not yet. */
        slot = pt_run(pt_free_child, NULL);
        pt_recover(c, slot);
        CHECK(!block_allocated(c, pt->off[0]) && block_allocated(c, pt->off[1]));
        CHECK_OK(al_free(&t.heap, pt->off[1]));
        CHECK_EQ(used_bytes(c), 0);

        /* Row 3 with a dead thief's tag in the steal word. */
        slot = pt_run(pt_stalethief_child, NULL);
        pt_recover(c, slot);
        CHECKF(!block_allocated(c, pt->off[0]), "an own free journalled by a slot whose steal "
               "word names a dead thief: the block leaked");
        CHECK(block_allocated(c, pt->off[1]));
        CHECK_EQ(used_bytes(c), al_class_size[k]);
        CHECK_OK(al_free(&t.heap, pt->off[1]));
        CHECK_EQ(used_bytes(c), 0);

        /* Rows 6 and 5: a remote free of the parent's block, after or before the OR. */
        for (int before = 0; before < 2; before++) {
                uint64_t keep;
                CHECK_OK(al_alloc(&t.heap, 200, -1, &keep));
                CHECK_OK(al_alloc(&t.heap, 200, -1, &off));
                al_commit(&t.heap);
                pt->off[0] = off;
                atomic_store(&pt->step, 0);
                expect_killed(harness_spawn(pt_rfree_child, before ? pt : NULL));
                pt_recover(c, pt->slot);
                CHECK(!block_allocated(c, off));
                CHECK_EQ(used_bytes(c), al_class_size[k]);
                CHECK_OK(al_free(&t.heap, keep));
                CHECK_EQ(used_bytes(c), 0);
                CHECK_CLEAN(c);
        }

        /* Row 6, and the owner gives the span back before the freer is recovered. */
        CHECK_OK(al_alloc(&t.heap, 200, -1, &off));
        al_commit(&t.heap);
        pt->off[0] = off;
        expect_killed(harness_spawn(pt_rfree_child, NULL));
        slot = pt->slot;
        pg = head_of(c, off);
        core_thread_leave(&t);                  /* drains: the span is empty, given back */
        CHECK_EQ(al_desc(&c->al, pg)->state, PAGE_FREE);
        pt_recover(c, slot);
        CHECK_EQ(used_bytes(c), 0);
        CHECK_OK(core_thread_enter(c, &t));

        /* Row 7: a drain killed at two points; all blocks are free, so is the span. */
        for (int moved = 0; moved < 2; moved++) {
                atomic_store(&pt->step, 0);
                pid_t pid = harness_spawn(pt_drain_child, moved ? pt : NULL);
                pt_wait(1);
                for (unsigned i = 0; i < 3; i++)
                        CHECK_OK(al_free(&t.heap, pt->off[i]));
                atomic_store(&pt->step, 2);
                expect_killed(pid);
                pg = head_of(c, pt->off[0]);
                pt_recover(c, pt->slot);
                CHECKF(al_desc(&c->al, pg)->state == PAGE_FREE,
                       "span of a dead drainer, all blocks free, kept (state %u, owner %u)",
                       al_desc(&c->al, pg)->state, al_desc(&c->al, pg)->owner);
                CHECK_EQ(used_bytes(c), 0);
        }

        /*
         * Row 7, the trim's drain of an abandoned span, killed with the lock
         * held: the next taker rebuilds, restores the summary from the remote
         * bits, and the span (all free) goes back to the arena.
         */
        {
                atomic_store(&pt->step, 0);
                pid_t pid = harness_spawn(pt_leave_child, NULL);
                int st;
                while (waitpid(pid, &st, 0) < 0)
                        CHECK(errno == EINTR);
                CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
                pg = head_of(c, pt->off[0]);
                CHECK_EQ(al_desc(&c->al, pg)->owner, 0);
                for (unsigned i = 0; i < 3; i++)
                        CHECK_OK(al_free(&t.heap, pt->off[i]));         /* remote frees */
                rep0 = repairs(c);
                expect_killed(harness_spawn(pt_trimdrain_child, NULL));
                slot = pt->slot;
                pt_recover(c, slot);            /* takes the lock from the dead: a rebuild */
                CHECK_EQ(repairs(c), rep0 + 1);
                al_trim(&t.heap);
                CHECKF(al_desc(&c->al, pg)->state == PAGE_FREE,
                       "abandoned span whose trim was killed mid-drain, all blocks free, kept "
                       "(state %u, owner %u): its remote frees are hidden", al_desc(&c->al, pg)->state,
                       al_desc(&c->al, pg)->owner);
                CHECK_EQ(used_bytes(c), 0);
                CHECK_CLEAN(c);
        }

        /*
         * Row 7, the trim's drain killed after moving a span's remote bits to
         * its private map, before lowering the span's search cursor (left
         * past the end when the span filled up). The next taker of the lock
         * relinks the span; whoever adopts it must find the free block, not
         * loop over the span as if it were full ("allocator lists are corrupt").
         */
        {
                int k3 = al_size_class(3000);
                int st;
                pid_t pid = harness_spawn(pt_fillspan_child, NULL);
                while (waitpid(pid, &st, 0) < 0)
                        CHECK(errno == EINTR);
                CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
                pg = head_of(c, pt->off[0]);
                CHECK_EQ(al_desc(&c->al, pg)->owner, 0);
                al_trim(&t.heap);               /* nothing else waits for a drain */
                CHECK_OK(al_free(&t.heap, pt->off[0]));         /* remote: lists the span */
                rep0 = repairs(c);
                pid = harness_spawn(pt_trimcursor_child, NULL);
                while (waitpid(pid, &st, 0) < 0)
                        CHECK(errno == EINTR);
                CHECKF(WIFSIGNALED(st), "the trim never drained the span (status %#x)", st);
                slot = pt->slot;
                int r = al_alloc(&t.heap, 3000, -1, &off);      /* takes the lock: a rebuild */
                CHECKF(r == 0, "allocation from a relinked span whose drain was cut short: %d (%s)",
                       r, seg_errdetail());
                CHECK_EQ(repairs(c), rep0 + 1);
                CHECK_EQ(head_of(c, off), pg);
                CHECK_OK(al_free(&t.heap, off));
                pt_recover(c, slot);
                if (al_desc(&c->al, pg)->state == PAGE_SLAB && al_desc(&c->al, pg)->cls == k3)
                        free_span(c, &t, pg);
                CHECK_EQ(used_bytes(c), 0);
                CHECK_CLEAN(c);
        }

        /* Row 8: dead holder of the arena lock, recovered by its own slot's recoverer. */
        rep0 = repairs(c);
        slot = pt_run(pt_lock_child, NULL);
        CHECK_EQ(lock_word(c), olock_tag(slot, pt->gen));
        pt_recover(c, slot);            /* would wait for itself for ever */
        CHECK_EQ(repairs(c), rep0 + 1);
        CHECK_OK(al_free(&t.heap, pt->off[0]));
        CHECK_EQ(used_bytes(c), 0);

        /* Row 8: dead holder of the arena lock; a live slot takes it and repairs. */
        rep0 = repairs(c);
        slot = pt_run(pt_lock_child, NULL);
        uint64_t t0 = now_ns();
        CHECK_OK(al_alloc(&t.heap, 2 * AL_PAGE_SIZE, -1, &off));
        al_commit(&t.heap);
        fprintf(stderr, "  a dead holder's arena lock was taken over after %.0f ms\n",
                (double)(now_ns() - t0) / 1e6);
        CHECK_EQ(repairs(c), rep0 + 1);
        CHECK_EQ(lock_word(c), 0);
        CHECK_CLEAN(c);
        pt_recover(c, slot);
        CHECK_OK(al_free(&t.heap, off));
        CHECK_OK(al_free(&t.heap, pt->off[0]));
        CHECK_EQ(used_bytes(c), 0);

        /* Row 9: pages taken for a span, tails written, then death. */
        freeb = free_bytes(c);
        slot = pt_run(pt_acquire_child, NULL);
        pg = (uint32_t)pt->off[0];
        CHECK_OK(al_alloc(&t.heap, AL_PAGE_SIZE, -1, &off));   /* takes the lock: repairs */
        CHECK_OK(al_free(&t.heap, off));
        CHECK_CLEAN(c);
        for (uint32_t p = pg; p < pg + al_class_span(al_nclasses - 1); p++)
                CHECKF(al_desc(&c->al, p)->state == PAGE_FREE, "page %u left in state %u", p,
                       al_desc(&c->al, p)->state);
        CHECK_EQ(free_bytes(c), freeb);
        pt_recover(c, slot);

        /* A run being freed: head given back, tails not yet. */
        freeb = free_bytes(c);
        slot = pt_run(pt_runfree_child, NULL);
        pg = head_of(c, pt->off[0]);
        pt_recover(c, slot);
        for (uint32_t p = pg; p < pg + 5; p++)
                CHECKF(al_desc(&c->al, p)->state == PAGE_FREE, "page %u left in state %u", p,
                       al_desc(&c->al, p)->state);
        CHECK_EQ(free_bytes(c), freeb);
        CHECK_EQ(used_bytes(c), 0);

        /*
         * Recovery itself killed at each of its steps, then run again by
         * another client: every step is safe to redo (counters are set, not
         * bumped; a block is freed only while it still carries its stamp).
         */
        static const char *const steps[] = { "journal-counted", "journal-acted", "journal-settled",
                                             "abandon-span" };
        for (unsigned i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
                /* An allocation handed out, never published. */
                pt->published = false;
                slot = pt_run(pt_alloc_child, NULL);
                bool hit = recover_killed_at(slot, steps[i]);
                if (hit)
                        pt_recover(c, slot);    /* else the child recovered it all */
                CHECK_EQ(atomic_load(&slot_hdr(c->seg, slot)->state), SLOT_FREE);
                CHECK_CLEAN(c);
                CHECKF(!block_allocated(c, pt->off[0]) && block_allocated(c, pt->off[1]),
                       "recovery killed at %s (%s) and redone: the blocks", steps[i],
                       hit ? "reached" : "not reached");
                CHECK_EQ(used_bytes(c), al_class_size[k]);
                CHECK_OK(al_free(&t.heap, pt->off[1]));
                CHECK_EQ(used_bytes(c), 0);

                /* A remote free of the parent's block, killed before its OR. */
                uint64_t keep;
                CHECK_OK(al_alloc(&t.heap, 200, -1, &keep));
                CHECK_OK(al_alloc(&t.heap, 200, -1, &off));
                al_commit(&t.heap);
                pt->off[0] = off;
                atomic_store(&pt->step, 0);
                expect_killed(harness_spawn(pt_rfree_child, pt));
                slot = pt->slot;
                if (recover_killed_at(slot, steps[i]))
                        pt_recover(c, slot);
                CHECK_EQ(atomic_load(&slot_hdr(c->seg, slot)->state), SLOT_FREE);
                CHECKF(!block_allocated(c, off), "remote free, recovery killed at %s and redone: "
                       "the block is still allocated", steps[i]);
                CHECK_EQ(used_bytes(c), al_class_size[k]);
                CHECK_OK(al_free(&t.heap, keep));
                CHECK_EQ(used_bytes(c), 0);
                CHECK_CLEAN(c);
        }

        /*
         * The same allocation, but its span was disowned while full before
         * the slot died: recovery frees the block as a remote free, which
         * lists the span. Killed between the two, the redo must list it.
         */
        for (unsigned i = 0; i < 2; i++) {
                atomic_store(&pt->step, 0);
                pt->published = false;
                pid_t pid = harness_spawn(pt_fullspan_child, NULL);
                pt_wait(1);
                slot = pt->slot;
                pg = head_of(c, pt->off[0]);
                al_steal_idle(&t.heap);
                CHECKF(al_desc(&c->al, pg)->owner == 0 && !al_desc(&c->al, pg)->full,
                       "the full span was not disowned (owner %u, full %u)",
                       al_desc(&c->al, pg)->owner, al_desc(&c->al, pg)->full);
                kill(pid, SIGKILL);
                expect_killed(pid);
                bool hit = i == 0 || recover_killed_at(slot, "journal-acted");
                if (hit)
                        pt_recover(c, slot);
                CHECKF(!block_allocated(c, pt->off[0]), "unpublished block of a disowned span "
                       "kept (recovery %s)", i ? "killed after its remote free, redone" : "whole");
                CHECK_CLEAN(c);
                free_span(c, &t, pg);
                CHECK_EQ(used_bytes(c), 0);
                CHECK_CLEAN(c);
        }

        core_thread_leave(&t);
        CHECK_CLEAN(c);
        check_rest_abandoned(c, "crash points");
        fail_box = NULL;
        core_close(c);
}

/* ==== runner ================================================================ */

/* Run one case in its own process, on its own $STOA_DIR. Exit status 77: skipped. */
static void run_case(void (*fn)(void))
{
        harness_run_case("alloc", CASE_TIMEOUT_S, fn);
}

static void test_classes(void **state) { (void)state; run_case(case_classes); }
static void test_runs(void **state) { (void)state; run_case(case_runs); }
static void test_exhaust(void **state) { (void)state; run_case(case_exhaust); }
static void test_bad_free(void **state) { (void)state; run_case(case_bad_free); }
static void test_stale_free(void **state) { (void)state; run_case(case_stale_free); }
static void test_stale_summary(void **state) { (void)state; run_case(case_stale_summary); }
static void test_two_arenas(void **state) { (void)state; run_case(case_two_arenas); }
static void test_stats(void **state) { (void)state; run_case(case_stats); }
static void test_exchange(void **state) { (void)state; run_case(case_exchange); }
static void test_crash(void **state) { (void)state; run_case(case_crash); }
static void test_claim(void **state) { (void)state; run_case(case_claim); }
static void test_crash_points(void **state) { (void)state; run_case(case_crash_points); }

/* An optional argument runs only the tests whose names match it (cmocka's filter). */
int main(int argc, char **argv)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_classes),
                cmocka_unit_test(test_runs),
                cmocka_unit_test(test_exhaust),
                cmocka_unit_test(test_bad_free),
                cmocka_unit_test(test_stale_free),
                cmocka_unit_test(test_stale_summary),
                cmocka_unit_test(test_two_arenas),
                cmocka_unit_test(test_stats),
                cmocka_unit_test(test_exchange),
                cmocka_unit_test(test_claim),
                cmocka_unit_test(test_crash_points),
                cmocka_unit_test(test_crash),
        };

        if (argc > 1)
                cmocka_set_test_filter(argv[1]);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
