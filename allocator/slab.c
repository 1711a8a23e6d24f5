/*
 * allocator/slab.c: per-slot heaps. The owner of a slab span allocates from
 * its private free bitmap with plain loads and stores; other slots free into
 * the span's atomic remote bitmap; the owner drains that when its private
 * bitmap runs dry. Large requests are page runs taken under the arena lock.
 *
 * Every operation writes the slot's journal before its first shared effect,
 * so a recovery can tell, for the one operation a dead slot had in flight,
 * whether it happened (docs/design.md 3.4, which this code follows step by
 * step; the comments name the steps).
 */
#include "allocator/alloc.h"
#include "shm/slots.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <numa.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ALL_WORDS ((1ull << AL_BITMAP_WORDS) - 1)      /* remote_summary, every word */

_Static_assert(AL_BITMAP_WORDS < 64, "remote_summary has a bit per bitmap word");

static inline struct slab_hdr *span_hdr(const struct al_ctx *c, uint32_t page)
{
        return seg_ptr(c->s, al_page_off(c, page));
}

static inline uint64_t *stamp_at(const struct al_ctx *c, uint64_t block_off)
{
        return (uint64_t *)(c->s->base + block_off);
}

static inline void journal(struct al_slot *as, int op, uint64_t off, uint64_t stamp)
{
        as->j.off = off;
        as->j.stamp = stamp;
        atomic_store_explicit(&as->j.op, (uint64_t)op, memory_order_release);
}

/* Journal a small-block operation with the counter it will bump (alloc.h). */
static inline void journal_block(struct al_slot *as, int op, uint64_t off, uint64_t stamp,
                                 unsigned ai, unsigned cls, uint64_t count)
{
        as->j.arena = ai;
        as->j.cls = cls;
        as->j.count = count;
        journal(as, op, off, stamp);
}

static inline void journal_clear(struct al_slot *as)
{
        atomic_store_explicit(&as->j.op, J_NONE, memory_order_release);
}

static int home_arena(const struct al_ctx *c)
{
        int cpu = sched_getcpu();
        int node = (cpu >= 0 && numa_available() >= 0) ? numa_node_of_cpu(cpu) : 0;
        int a = al_arena_for_node(c, node);

        return a < 0 ? 0 : a;
}

void al_heap_init(struct al_heap *h, struct al_ctx *c, uint32_t slot, uint32_t gen)
{
        h->ctx = c;
        h->slot = slot;
        h->gen = gen;
        h->as = slot_ext(c->s, slot);
        h->home = (uint32_t)home_arena(c);
}

/* ---- span stealing (design.md 3.7) -------------------------------------- */

static void lists_disown(struct al_heap *thief, struct al_slot *as, uint32_t slot);

/*
 * Enter an operation on our own lists. If a thief holds them, wait for it; if
 * it died meanwhile, our lists may be half-disowned: disown the rest
 * ourselves, which leaves them consistent (empty).
 */
static void op_begin(struct al_heap *h)
{
        struct al_slot *as = h->as;

        for (;;) {
                /*
                 * The asymmetric half of a Dekker pair: only a compiler barrier
                 * here; the thief pays with membarrier(GLOBAL), which puts a
                 * full barrier on every CPU between its CAS and its read of busy.
                 */
                atomic_store_explicit(&as->busy, 1, memory_order_relaxed);
                atomic_signal_fence(memory_order_seq_cst);
                uint64_t thief = atomic_load_explicit(&as->steal, memory_order_acquire);
                if (!thief)
                        return;
                atomic_store_explicit(&as->busy, 0, memory_order_release);
                for (unsigned spins = 0;
                     atomic_load_explicit(&as->steal, memory_order_acquire) == thief; spins++) {
                        if (spins % 1024 == 1023 &&
                            slot_is_dead(h->ctx->s, (uint32_t)(thief >> 32) - 1, (uint32_t)thief) == 1) {
                                uint64_t t = thief;
                                if (atomic_compare_exchange_strong(&as->steal, &t, olock_tag(h->slot, h->gen))) {
                                        lists_disown(h, as, h->slot);
                                        atomic_store_explicit(&as->steal, 0, memory_order_release);
                                }
                        }
                        sched_yield();
                }
        }
}

static inline void op_end(struct al_heap *h)
{
        atomic_store_explicit(&h->as->busy, 0, memory_order_release);
}

/* ---- owner lists (private to the owner) ---------------------------------- */

/* A link read from shared memory: page index + 1, or 0 (also for garbage). */
static inline uint32_t link_ok(const struct al_ctx *c, uint32_t link)
{
        return link && link - 1 < c->npages ? link : 0;
}

static void list_push(struct al_ctx *c, uint32_t *head, uint32_t page)
{
        struct page_desc *d = al_desc(c, page);

        *head = link_ok(c, *head);
        d->prev = 0;
        d->next = *head;
        if (*head)
                al_desc(c, *head - 1)->prev = page + 1;
        *head = page + 1;
}

static void list_del(struct al_ctx *c, uint32_t *head, uint32_t page)
{
        struct page_desc *d = al_desc(c, page);

        d->prev = link_ok(c, d->prev);
        d->next = link_ok(c, d->next);
        if (d->prev)
                al_desc(c, d->prev - 1)->next = d->next;
        else
                *head = d->next;
        if (d->next)
                al_desc(c, d->next - 1)->prev = d->prev;
        d->next = d->prev = 0;
}

/* ---- bitmaps ------------------------------------------------------------- */

/*
 * Move remotely freed blocks of a span into its private bitmap. The FREE
 * stamp is written before the remote bit is cleared (release), which is what
 * lets a recovery decide a dead remote freer's journal (design 3.4).
 */
static uint32_t drain(struct al_ctx *c, uint32_t page, struct slab_hdr *sh)
{
        struct page_desc *d = al_desc(c, page);
        uint64_t base = al_page_off(c, page) + AL_SLAB_HDR;
        uint64_t summary = atomic_exchange_explicit(&sh->remote_summary, 0, memory_order_acquire);
        uint32_t n = 0;

        /* Shared metadata may be scribbled: never index past the span. */
        if (!al_desc_sane(c, page))
                return 0;
        summary &= ALL_WORDS & ((d->capacity + 63) / 64 >= 64 ? ~0ull :
                                (1ull << ((d->capacity + 63) / 64)) - 1);

        while (summary) {
                unsigned w = (unsigned)__builtin_ctzll(summary);
                summary &= summary - 1;
                uint64_t bits = atomic_load_explicit(&sh->remote_free[w], memory_order_acquire);
                if (w == (d->capacity - 1) / 64 && d->capacity % 64)
                        bits &= (1ull << (d->capacity % 64)) - 1;
                for (uint64_t b = bits; b; b &= b - 1) {
                        unsigned i = w * 64 + (unsigned)__builtin_ctzll(b);
                        *stamp_at(c, base + (uint64_t)i * d->block_size) = AL_STAMP_FREE;
                }
                uint64_t fresh = bits & ~sh->local_free[w];
                sh->local_free[w] |= bits;
                atomic_fetch_and_explicit(&sh->remote_free[w], ~bits, memory_order_release);
                n += (uint32_t)__builtin_popcountll(fresh);
                if (w < d->cursor)
                        d->cursor = w;
        }
        d->nfree += n;
        return n;
}

static uint32_t count_local_free(const struct slab_hdr *sh)
{
        uint32_t n = 0;

        for (unsigned w = 0; w < AL_BITMAP_WORDS; w++)
                n += (uint32_t)__builtin_popcountll(sh->local_free[w]);
        return n;
}

/*
 * A fresh span: every block free, and stamped free. The pages may have held
 * anything before (a run, another class); a stale non-FREE word where a stamp
 * now lies would let a slot that does not own the span "free" a block never
 * handed out (a stale pointer freed twice), since it can only check the stamp.
 */
static void span_format(struct al_ctx *c, uint32_t page, unsigned cls)
{
        struct slab_hdr *sh = span_hdr(c, page);
        uint32_t cap = al_class_capacity(cls), bs = al_class_size[cls];
        uint64_t base = al_page_off(c, page) + AL_SLAB_HDR;

        memset(sh, 0, sizeof(*sh));
        for (uint32_t i = 0; i < cap; i++) {
                sh->local_free[i / 64] |= 1ull << (i % 64);
                *stamp_at(c, base + (uint64_t)i * bs) = AL_STAMP_FREE;
        }
}

/* ---- getting spans ------------------------------------------------------- */

/* Adopt an abandoned span or carve a fresh one (arena lock). Page or UINT32_MAX. */
static uint32_t span_acquire(struct al_heap *h, unsigned ai, unsigned cls)
{
        struct al_ctx *c = h->ctx;
        struct arena *a = c->arena[ai];
        uint32_t page = UINT32_MAX;

        if (al_arena_lock(h, ai) < 0)
                return UINT32_MAX;
        a->abandoned[cls] = link_ok(c, a->abandoned[cls]);
        if (a->abandoned[cls] && !al_desc_sane(c, a->abandoned[cls] - 1))
                a->abandoned[cls] = 0;  /* damaged: forget the list rather than follow it */
        if (a->abandoned[cls]) {
                page = a->abandoned[cls] - 1;
                list_del(c, &a->abandoned[cls], page);
                al_desc(c, page)->full = 0;
                al_desc(c, page)->owner = h->slot + 1;
        } else {
                uint32_t span = al_class_span(cls);
                page = al_pages_take(c, ai, span);
                if (page != UINT32_MAX) {
                        span_format(c, page, cls);
                        for (uint32_t p = page + 1; p < page + span; p++) {
                                struct page_desc *t = al_desc(c, p);
                                t->span = page;
                                t->owner = 0;
                                t->state = PAGE_SLAB_TAIL;
                        }
                        struct page_desc *d = al_desc(c, page);
                        d->cls = (uint8_t)cls;
                        d->span = span;
                        d->capacity = al_class_capacity(cls);
                        d->block_size = al_class_size[cls];
                        d->nfree = d->capacity;
                        d->cursor = 0;
                        d->full = 0;
                        d->next = d->prev = 0;
                        d->owner = h->slot + 1;
                        d->state = PAGE_SLAB;   /* commit point */
                        a->slab_pages[cls] += span;
                }
        }
        al_arena_unlock(h, ai);
        return page;
}

/* Give an owned, entirely free span back to its arena. */
static void span_release(struct al_heap *h, uint32_t page)
{
        struct al_ctx *c = h->ctx;
        struct page_desc *d = al_desc(c, page);
        unsigned ai = d->arena, cls = al_cls_of(d);
        uint32_t span = d->span;

        if (al_arena_lock(h, ai) < 0)
                return;
        c->arena[ai]->slab_pages[cls] -= span;
        al_pages_give(c, ai, page, span);
        al_arena_unlock(h, ai);
}

/*
 * Disowning (docs/design.md 3.6). A span with no free block leaves its owner:
 * owner 0, on no list. The remote free that turns its summary from 0 to
 * non-zero lists it on the arena's abandoned list, where any slot adopts it.
 * So memory freed into spans is reusable by every slot, not only by the one
 * that filled them (which may be idle). The disowner stores owner 0 then
 * reads the summary; the freer sets the summary then reads the owner; both
 * sequentially consistent, so at least one of them sees the other and lists
 * the span. `full` of an ownerless span says it is listed (arena lock).
 */
static void disown_locked(struct al_ctx *c, unsigned ai, uint32_t page)
{
        struct page_desc *d = al_desc(c, page);
        struct slab_hdr *sh = span_hdr(c, page);

        __atomic_store_n(&d->owner, 0, __ATOMIC_SEQ_CST);
        atomic_thread_fence(memory_order_seq_cst);
        d->full = 0;
        if (d->nfree > 0 || atomic_load_explicit(&sh->remote_summary, memory_order_seq_cst)) {
                list_push(c, &c->arena[ai]->abandoned[al_cls_of(d)], page);
                d->full = 1;
        }
}

static void span_disown(struct al_heap *h, uint32_t page)
{
        unsigned ai = al_desc(h->ctx, page)->arena;

        if (al_arena_lock(h, ai) < 0)
                return;         /* stays owned; found again by abandon_all */
        disown_locked(h->ctx, ai, page);
        al_arena_unlock(h, ai);
}

/* After a remote free that found the summary empty: list a disowned span. */
static void list_if_disowned(struct al_heap *h, uint32_t page)
{
        struct al_ctx *c = h->ctx;
        struct page_desc *d = al_desc(c, page);
        unsigned ai = d->arena;

        if (__atomic_load_n(&d->owner, __ATOMIC_SEQ_CST) != 0)
                return;
        if (al_arena_lock(h, ai) < 0)
                return;
        if (d->state == PAGE_SLAB && d->owner == 0 && !d->full) {
                list_push(c, &c->arena[ai]->abandoned[al_cls_of(d)], page);
                d->full = 1;
        }
        al_arena_unlock(h, ai);
}

/* A page with free blocks for (arena, class), or UINT32_MAX. */
static uint32_t refill(struct al_heap *h, unsigned ai, unsigned cls)
{
        struct al_ctx *c = h->ctx;
        uint32_t page = span_acquire(h, ai, cls);

        if (page == UINT32_MAX)
                return UINT32_MAX;
        struct page_desc *d = al_desc(c, page);
        drain(c, page, span_hdr(c, page));
        d->nfree = count_local_free(span_hdr(c, page));
        d->full = 0;
        list_push(c, &h->as->avail[ai][cls], page);
        return page;
}

/*
 * Give back to the arena every abandoned span that frees have emptied, in
 * every class: memory a class no longer needs becomes pages any class or run
 * can take. Called when an allocation finds no memory. Returns pages freed.
 */
static uint32_t trim_op(struct al_heap *h)
{
        struct al_ctx *c = h->ctx;
        uint32_t freed = 0;

        /* Our own emptied spans first: each class keeps one at the head of its list. */
        for (unsigned ai = 0; ai < c->narenas; ai++) {
                for (unsigned cls = 0; cls < al_nclasses; cls++) {
                        uint32_t *avail = &h->as->avail[ai][cls], guard = c->npages;
                        uint32_t next = link_ok(c, *avail);
                        while (next && guard--) {
                                uint32_t p = next - 1;
                                struct page_desc *d = al_desc(c, p);
                                next = link_ok(c, d->next);
                                if (!al_desc_sane(c, p) || d->owner != h->slot + 1)
                                        break;
                                drain(c, p, span_hdr(c, p));
                                if (d->nfree != d->capacity)
                                        continue;
                                list_del(c, avail, p);
                                freed += d->span;
                                span_release(h, p);
                        }
                }
        }
        for (unsigned ai = 0; ai < c->narenas; ai++) {
                struct arena *a = c->arena[ai];
                if (al_arena_lock(h, ai) < 0)
                        continue;
                for (unsigned cls = 0; cls < al_nclasses; cls++) {
                        uint32_t next = link_ok(c, a->abandoned[cls]), guard = c->npages;
                        while (next && guard--) {
                                uint32_t p = next - 1;
                                struct page_desc *d = al_desc(c, p);
                                struct slab_hdr *sh = span_hdr(c, p);
                                next = link_ok(c, d->next);
                                if (!al_desc_sane(c, p) || d->state != PAGE_SLAB)
                                        break;  /* a damaged list: stop here */
                                drain(c, p, sh);
                                d->nfree = count_local_free(sh);
                                if (d->nfree != d->capacity)
                                        continue;
                                list_del(c, &a->abandoned[cls], p);
                                d->full = 0;
                                a->slab_pages[cls] -= d->span;
                                freed += d->span;
                                al_pages_give(c, ai, p, d->span);
                        }
                }
                al_arena_unlock(h, ai);
        }
        return freed;
}

/* ---- small allocations --------------------------------------------------- */

static int find_free(struct page_desc *d, struct slab_hdr *sh)
{
        for (unsigned w = d->cursor; w < AL_BITMAP_WORDS && w * 64 < d->capacity; w++) {
                if (sh->local_free[w]) {
                        unsigned bit = w * 64 + (unsigned)__builtin_ctzll(sh->local_free[w]);
                        if (bit >= d->capacity) {       /* scribbled: not a block */
                                sh->local_free[w] = 0;
                                continue;
                        }
                        d->cursor = w;
                        return (int)bit;
                }
        }
        d->cursor = AL_BITMAP_WORDS;
        return -1;
}

static int slab_alloc(struct al_heap *h, unsigned ai, unsigned cls, uint64_t *ret_off)
{
        struct al_ctx *c = h->ctx;
        struct al_slot *as = h->as;
        uint32_t *avail = &as->avail[ai][cls];

        for (uint32_t guard = 0;; guard++) {
                if (guard > c->npages + 64) {   /* a list that never ends: scribbled */
                        *avail = 0;
                        seg_set_errdetail("allocator lists are corrupt");
                        return STOA_E_CORRUPT;
                }
                uint32_t page;
                *avail = link_ok(c, *avail);
                if (*avail && !al_desc_sane(c, *avail - 1))
                        *avail = 0;     /* damaged: drop the list */
                if (*avail) {
                        page = *avail - 1;
                } else {
                        page = refill(h, ai, cls);
                        if (page == UINT32_MAX)
                                return -ENOMEM;
                }
                struct page_desc *d = al_desc(c, page);
                struct slab_hdr *sh = span_hdr(c, page);
                int bit = find_free(d, sh);
                if (bit < 0 && drain(c, page, sh) > 0)
                        bit = find_free(d, sh);
                if (bit < 0) {
                        list_del(c, avail, page);
                        span_disown(h, page);
                        continue;
                }
                uint64_t block = al_page_off(c, page) + AL_SLAB_HDR +
                                 (uint64_t)bit * d->block_size;
                uint64_t stamp = (uint64_t)h->slot << 48 | (++as->seq & 0xffffffffffffull);
                journal_block(as, J_ALLOC, block + AL_STAMP_SIZE, stamp,  /* step 1 */
                              ai, cls, as->c.allocs[ai][cls]);
                sh->local_free[bit / 64] &= ~(1ull << (bit % 64));        /* step 2 */
                d->nfree--;
                *stamp_at(c, block) = stamp;
                as->c.allocs[ai][cls]++;
                *ret_off = block + AL_STAMP_SIZE;
                return 0;
        }
}

/* ---- runs ---------------------------------------------------------------- */

static int run_alloc(struct al_heap *h, unsigned ai, size_t bytes, uint64_t *ret_off)
{
        struct al_ctx *c = h->ctx;
        struct arena *a = c->arena[ai];
        int r;

        if (bytes > (uint64_t)c->pcount[ai] * AL_PAGE_SIZE - AL_STAMP_SIZE)
                return -E2BIG;  /* checked before adding the stamp, which could wrap */
        uint64_t need = bytes + AL_STAMP_SIZE;
        uint32_t n = (uint32_t)((need + AL_PAGE_SIZE - 1) >> AL_PAGE_SHIFT);
        uint64_t stamp = (uint64_t)h->slot << 48 | (++h->as->seq & 0xffffffffffffull);
        r = al_arena_lock(h, ai);
        if (r < 0)
                return r;
        uint32_t page = al_pages_take(c, ai, n);
        if (page == UINT32_MAX) {
                al_arena_unlock(h, ai);
                return -ENOMEM;
        }
        uint64_t off = al_page_off(c, page);
        journal(h->as, J_RUN_ALLOC, off + AL_STAMP_SIZE, stamp);
        *stamp_at(c, off) = stamp;
        for (uint32_t p = page + 1; p < page + n; p++) {
                struct page_desc *t = al_desc(c, p);
                t->span = page;
                t->owner = 0;
                t->state = PAGE_RUN_TAIL;
        }
        struct page_desc *d = al_desc(c, page);
        d->span = n;
        d->owner = 0;
        d->run_stamp = stamp;
        d->run_bytes = bytes;
        d->state = PAGE_RUN;    /* commit point */
        a->run_pages += n;
        a->run_bytes += bytes;
        a->run_allocs++;
        al_arena_unlock(h, ai);
        *ret_off = off + AL_STAMP_SIZE;
        return 0;
}

/* Free a run if it is still the allocation `stamp` names (arena lock inside). */
static int run_free(struct al_heap *h, uint32_t page, uint64_t stamp)
{
        struct al_ctx *c = h->ctx;
        struct page_desc *d = al_desc(c, page);
        unsigned ai = d->arena;
        struct arena *a = c->arena[ai];
        int r = al_arena_lock(h, ai);

        if (r < 0)
                return r;
        if (d->state != PAGE_RUN || d->run_stamp != stamp) {
                al_arena_unlock(h, ai);
                return -EINVAL;
        }
        a->run_pages -= d->span;
        a->run_bytes -= d->run_bytes;
        a->run_frees++;
        /*
         * The descriptor's state is the commit point; the stamp is cleared
         * after it. Cleared first, a holder killed in between would leave a
         * RUN that the journal no longer names (it compares stamps): leaked.
         */
        al_pages_give(c, ai, page, d->span);
        d->run_stamp = AL_STAMP_FREE;
        al_arena_unlock(h, ai);
        return 0;
}

/* ---- the API ------------------------------------------------------------- */

static int alloc_op(struct al_heap *h, size_t bytes, int node, uint64_t *ret_off)
{
        struct al_ctx *c = h->ctx;
        int cls = al_size_class(bytes);
        unsigned first;
        int r = -ENOMEM;

        if (!ret_off || bytes == 0)
                return -EINVAL;
        if (node >= 0) {
                int a = al_arena_for_node(c, node);
                if (a < 0) {
                        seg_set_errdetail("the segment has no arena on NUMA node %d", node);
                        return -ENODEV;
                }
                first = (unsigned)a;
        } else {
                first = h->home;
        }
        for (unsigned k = 0; k < c->narenas; k++) {
                unsigned ai = (first + k) % c->narenas;
                r = cls >= 0 ? slab_alloc(h, ai, (unsigned)cls, ret_off)
                             : run_alloc(h, ai, bytes, ret_off);
                if (r != -ENOMEM || node >= 0)
                        break;
        }
        if (r == -ENOMEM)
                seg_set_errdetail("no free memory for %zu bytes%s", bytes,
                                  node >= 0 ? " on that node" : " in any arena");
        return r;
}

void al_commit(struct al_heap *h)
{
        journal_clear(h->as);
}

/* Locate a block: its span head page and index. -EINVAL if `off` is not one. */
static int locate(const struct al_ctx *c, uint64_t off, uint32_t *ret_page, uint32_t *ret_idx)
{
        if (off < AL_STAMP_SIZE)
                return -EINVAL;
        uint64_t block = off - AL_STAMP_SIZE;
        uint32_t page = al_page_of(c, block);
        if (page == UINT32_MAX)
                return -EINVAL;
        const struct page_desc *d = al_desc(c, page);
        if (d->state == PAGE_SLAB_TAIL || d->state == PAGE_RUN_TAIL) {
                page = d->span;
                if (page >= c->npages)
                        return -EINVAL;
                d = al_desc(c, page);
        }
        if (!al_desc_sane(c, page))
                return -EINVAL;
        if (d->state == PAGE_RUN) {
                if (block != al_page_off(c, page))
                        return -EINVAL;
                *ret_page = page;
                *ret_idx = UINT32_MAX;
                return 0;
        }
        if (d->state != PAGE_SLAB)
                return -EINVAL;
        uint64_t rel = block - al_page_off(c, page);
        if (rel < AL_SLAB_HDR || (rel - AL_SLAB_HDR) % d->block_size != 0)
                return -EINVAL;
        uint64_t idx = (rel - AL_SLAB_HDR) / d->block_size;
        if (idx >= d->capacity)
                return -EINVAL;
        *ret_page = page;
        *ret_idx = (uint32_t)idx;
        return 0;
}

/* Returns the summary before: 0 means this free may have to list the span. */
static uint64_t remote_free(struct slab_hdr *sh, uint32_t idx)
{
        atomic_fetch_or_explicit(&sh->remote_free[idx / 64], 1ull << (idx % 64),
                                 memory_order_release);
        return atomic_fetch_or_explicit(&sh->remote_summary, 1ull << (idx / 64),
                                        memory_order_seq_cst);
}

static int free_op(struct al_heap *h, uint64_t off)
{
        struct al_ctx *c = h->ctx;
        struct al_slot *as = h->as;
        uint32_t page, idx;

        if (locate(c, off, &page, &idx) < 0) {
                seg_set_errdetail("free of %#llx: not an allocated block", (unsigned long long)off);
                return -EINVAL;
        }
        uint64_t *stampp = stamp_at(c, off - AL_STAMP_SIZE);
        uint64_t stamp = *stampp;
        if (idx == UINT32_MAX) {
                journal(as, J_RUN_FREE, off, stamp);
                int r = run_free(h, page, stamp);
                journal_clear(as);
                return r;
        }
        struct page_desc *d = al_desc(c, page);
        struct slab_hdr *sh = span_hdr(c, page);
        uint64_t mask = 1ull << (idx % 64);
        unsigned ai = d->arena, cls = al_cls_of(d);

        if (stamp == AL_STAMP_FREE ||
            (atomic_load_explicit(&sh->remote_free[idx / 64], memory_order_relaxed) & mask)) {
                seg_set_errdetail("free of %#llx: block is already free", (unsigned long long)off);
                return -EINVAL;
        }
        if (d->owner == h->slot + 1) {
                if (sh->local_free[idx / 64] & mask) {
                        seg_set_errdetail("free of %#llx: block is already free",
                                          (unsigned long long)off);
                        return -EINVAL;
                }
                journal_block(as, J_FREE, off, stamp, ai, cls, as->c.frees[ai][cls]);
                *stampp = AL_STAMP_FREE;
                sh->local_free[idx / 64] |= mask;
                d->nfree++;
                if (idx / 64 < d->cursor)
                        d->cursor = idx / 64;
                as->c.frees[ai][cls]++;
                journal_clear(as);
                if (d->nfree == d->capacity && as->avail[ai][cls] != page + 1) {
                        list_del(c, &as->avail[ai][cls], page);
                        span_release(h, page);
                }
                return 0;
        }
        journal_block(as, J_RFREE, off, stamp, ai, cls, as->c.frees[ai][cls]);
        uint64_t before = remote_free(sh, idx);
        as->c.frees[ai][cls]++;
        if (before == 0)
                list_if_disowned(h, page);
        journal_clear(as);
        return 0;
}

size_t al_usable(const struct al_ctx *c, uint64_t off)
{
        uint32_t page, idx;

        if (locate(c, off, &page, &idx) < 0)
                return 0;
        const struct page_desc *d = al_desc(c, page);
        if (idx == UINT32_MAX)
                return (size_t)d->span * AL_PAGE_SIZE - AL_STAMP_SIZE;
        return d->block_size - AL_STAMP_SIZE;
}

uint64_t al_stamp(const struct al_ctx *c, uint64_t off)
{
        return off >= AL_STAMP_SIZE && off < c->s->size ? *stamp_at(c, off - AL_STAMP_SIZE) : 0;
}

/* ---- giving pages up ----------------------------------------------------- */

/*
 * Hand every span owned by `slot` to the arenas: entirely free spans become
 * free pages, the others go on the arena's abandoned list for any slot to
 * adopt. Scans the descriptors (not the slot's lists) so that a span the
 * slot took but had not yet linked is found too. `h` names the lock holder.
 */
static void abandon_all(struct al_heap *h, uint32_t slot, struct al_recovery *rec)
{
        struct al_ctx *c = h->ctx;

        for (unsigned ai = 0; ai < c->narenas; ai++) {
                struct arena *a = c->arena[ai];
                if (al_arena_lock(h, ai) < 0)
                        continue;
                for (uint32_t p = c->pfirst[ai]; p < c->pfirst[ai] + c->pcount[ai]; p++) {
                        struct page_desc *d = al_desc(c, p);
                        if (d->state != PAGE_SLAB || d->owner != slot + 1 || !al_desc_sane(c, p))
                                continue;
                        struct slab_hdr *sh = span_hdr(c, p);
                        /*
                         * Every word, not only those the summary flags: an
                         * owner killed in a drain may have taken the summary
                         * and left bits in remote_free (design 3.4, "drain").
                         */
                        atomic_fetch_or_explicit(&sh->remote_summary, ALL_WORDS,
                                                 memory_order_relaxed);
                        drain(c, p, sh);
                        d->nfree = count_local_free(sh);
                        d->full = 0;
                        d->cursor = 0;
                        if (d->nfree == d->capacity) {
                                a->slab_pages[al_cls_of(d)] -= d->span;
                                al_pages_give(c, ai, p, d->span);
                                if (rec)
                                        rec->pages_freed++;
                        } else {
                                disown_locked(c, ai, p);
                                if (rec)
                                        rec->pages_abandoned++;
                        }
                }
                al_arena_unlock(h, ai);
        }
        memset(h->as->avail, 0, sizeof(h->as->avail));
}

void al_heap_abandon(struct al_heap *h)
{
        op_begin(h);
        journal_clear(h->as);
        abandon_all(h, h->slot, NULL);
        trim_op(h);
        op_end(h);
}

int al_alloc(struct al_heap *h, size_t bytes, int node, uint64_t *ret_off)
{
        op_begin(h);
        int r = alloc_op(h, bytes, node, ret_off);
        op_end(h);
        return r;
}

int al_free(struct al_heap *h, uint64_t off)
{
        op_begin(h);
        int r = free_op(h, off);
        op_end(h);
        return r;
}

uint32_t al_trim(struct al_heap *h)
{
        op_begin(h);
        uint32_t n = trim_op(h);
        op_end(h);
        return n;
}

/* Disown every span on a slot's avail lists (its lists are ours: steal held). */
static void lists_disown(struct al_heap *thief, struct al_slot *as, uint32_t slot)
{
        struct al_ctx *c = thief->ctx;

        for (unsigned ai = 0; ai < c->narenas; ai++) {
                struct arena *a = c->arena[ai];
                if (al_arena_lock(thief, ai) < 0)
                        continue;
                for (unsigned cls = 0; cls < al_nclasses; cls++) {
                        uint32_t next = link_ok(c, as->avail[ai][cls]), guard = c->npages;
                        as->avail[ai][cls] = 0;
                        while (next && guard--) {
                                uint32_t p = next - 1;
                                struct page_desc *d = al_desc(c, p);
                                next = link_ok(c, d->next);
                                if (!al_desc_sane(c, p) || d->state != PAGE_SLAB ||
                                    d->owner != slot + 1)
                                        break;
                                d->next = d->prev = 0;
                                drain(c, p, span_hdr(c, p));
                                d->nfree = count_local_free(span_hdr(c, p));
                                if (d->nfree == d->capacity) {
                                        a->slab_pages[al_cls_of(d)] -= d->span;
                                        al_pages_give(c, ai, p, d->span);
                                } else {
                                        disown_locked(c, ai, p);
                                }
                        }
                }
                al_arena_unlock(thief, ai);
        }
}

uint32_t al_steal_idle(struct al_heap *h)
{
        struct al_ctx *c = h->ctx;
        uint32_t before = 0, after = 0, n = 0;
        uint64_t mine = olock_tag(h->slot, h->gen);

        for (unsigned ai = 0; ai < c->narenas; ai++)
                before += __atomic_load_n(&c->arena[ai]->free_pages, __ATOMIC_RELAXED);
        /* Mark every idle-looking slot, then one barrier on every CPU, then look again. */
        for (uint32_t s = 0; s < slots_count(c->s); s++) {
                struct al_slot *as = slot_ext(c->s, s);
                uint64_t zero = 0;
                if (s == h->slot || atomic_load_explicit(&slot_hdr(c->s, s)->state,
                                                         memory_order_acquire) != SLOT_LIVE ||
                    atomic_load_explicit(&as->busy, memory_order_relaxed))
                        continue;
                n += atomic_compare_exchange_strong(&as->steal, &zero, mine);
        }
        if (!n)
                return 0;
        bool fenced = syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) == 0;
        for (uint32_t s = 0; s < slots_count(c->s); s++) {
                struct al_slot *as = slot_ext(c->s, s);
                if (atomic_load_explicit(&as->steal, memory_order_acquire) != mine)
                        continue;
                /* Without the barrier (seccomp may forbid it) nothing is taken. */
                if (fenced && !atomic_load_explicit(&as->busy, memory_order_seq_cst))
                        lists_disown(h, as, s);
                atomic_store_explicit(&as->steal, 0, memory_order_release);
        }
        for (unsigned ai = 0; ai < c->narenas; ai++)
                after += __atomic_load_n(&c->arena[ai]->free_pages, __ATOMIC_RELAXED);
        return after > before ? after - before : 0;
}

/* ---- recovery of a dead slot --------------------------------------------- */

/*
 * Resolve the dead slot's journal (design 3.4). Returns 0 none, 1 freed, 2 kept.
 * For a small block it also sets the counter the operation bumps to its value
 * before the operation, plus one if the operation took effect (or is redone).
 */
static int resolve_journal(struct al_heap *h, al_published_fn published, void *arg)
{
        struct al_ctx *c = h->ctx;
        struct al_slot *as = h->as;
        int op = (int)atomic_load_explicit(&as->j.op, memory_order_acquire);
        uint64_t off = as->j.off, stamp = as->j.stamp, *count = NULL;
        uint32_t page, idx;

        if (op == J_ALLOC || op == J_FREE || op == J_RFREE) {
                if (as->j.arena >= c->narenas || as->j.cls >= al_nclasses)
                        return 0;
                count = op == J_ALLOC ? &as->c.allocs[as->j.arena][as->j.cls]
                                      : &as->c.frees[as->j.arena][as->j.cls];
        }
        if (op == J_NONE)
                return 0;
        if (locate(c, off, &page, &idx) < 0) {
                /* The block's span has been given back: the free took effect. */
                if (op == J_FREE || op == J_RFREE)
                        *count = as->j.count + 1;
                return 0;
        }
        struct page_desc *d = al_desc(c, page);
        if (op == J_RUN_ALLOC || op == J_RUN_FREE) {
                if (idx != UINT32_MAX || d->state != PAGE_RUN || d->run_stamp != stamp)
                        return 0;       /* never committed, or already freed */
                if (op == J_RUN_ALLOC && published && published(off, arg))
                        return 2;
                return run_free(h, page, stamp) == 0 ? 1 : 0;
        }
        if (idx == UINT32_MAX)
                return 0;
        struct slab_hdr *sh = span_hdr(c, page);
        uint64_t mask = 1ull << (idx % 64);
        uint64_t rbit = atomic_load_explicit(&sh->remote_free[idx / 64], memory_order_acquire) & mask;
        bool own = d->owner == h->slot + 1;
        bool lbit = own && (sh->local_free[idx / 64] & mask);
        uint64_t cur = *stamp_at(c, off - AL_STAMP_SIZE);

        switch (op) {
        case J_ALLOC:
                if (!own) {
                        /*
                         * Disowned since (stolen while idle, after the allocation
                         * returned): still ours if the stamp is and no free bit is.
                         */
                        if (cur != stamp || rbit || (sh->local_free[idx / 64] & mask))
                                return 0;
                        *count = as->j.count + 1;
                        if (published && published(off, arg))
                                return 2;
                        as->c.frees[d->arena][al_cls_of(d)]++;
                        if (remote_free(sh, idx) == 0)
                                list_if_disowned(h, page);
                        return 1;
                }
                /*
                 * A clear bit: handed out by this operation, counted once. A
                 * set bit: not handed out yet (not counted either), or handed
                 * out, freed remotely and drained since (counted already).
                 */
                if (!lbit)
                        *count = as->j.count + 1;
                if (rbit || lbit)
                        return 0;       /* not handed out, or freed since */
                if (published && published(off, arg))
                        return 2;
                break;
        case J_FREE:
                *count = as->j.count + 1;       /* it happened, or happens below */
                if (rbit || lbit || !own)
                        return 0;       /* the free happened */
                break;
        case J_RFREE:
                *count = as->j.count + 1;
                if (rbit) {             /* happened; make sure the owner will see it */
                        atomic_fetch_or_explicit(&sh->remote_summary, 1ull << (idx / 64),
                                                 memory_order_seq_cst);
                        list_if_disowned(h, page);
                        return 0;
                }
                if (cur != stamp)
                        return 0;       /* drained (and maybe reused) since */
                if (remote_free(sh, idx) == 0)
                        list_if_disowned(h, page);
                return 1;
        default:
                return 0;
        }
        /* Own span, block allocated and not published: free it. */
        *stamp_at(c, off - AL_STAMP_SIZE) = AL_STAMP_FREE;
        sh->local_free[idx / 64] |= mask;
        if (op == J_ALLOC)
                as->c.frees[d->arena][al_cls_of(d)]++;        /* a free of its own; J_FREE's is counted */
        return 1;
}

int al_recover_slot(struct al_ctx *c, uint32_t dead, al_published_fn published, void *arg,
                    struct al_recovery *ret)
{
        struct al_heap h;
        struct al_recovery rec = { 0 };

        /*
         * Recovery takes arena locks in the dead slot's name, under the slot's
         * current generation: shm/slots.c moved it past the dead owner's before
         * calling us, so a lock word the dead owner left reads as dead, and
         * ours as alive (the recoverer holds the slot's byte).
         */
        al_heap_init(&h, c, dead, atomic_load_explicit(&slot_hdr(c->s, dead)->gen,
                                                       memory_order_acquire));
        op_begin(&h);   /* a thief at work on the dead slot's lists finishes first */
        rec.journal_op = (int)atomic_load_explicit(&h.as->j.op, memory_order_acquire);
        rec.journal_action = resolve_journal(&h, published, arg);
        journal_clear(h.as);
        abandon_all(&h, dead, &rec);
        rec.pages_freed += trim_op(&h);
        op_end(&h);
        if (ret)
                *ret = rec;
        return 0;
}
