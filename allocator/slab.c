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
 *
 * Nothing here waits for another process for more than the olock's bound:
 * an allocation that needs an arena lock a stopped process holds fails with
 * -EAGAIN, a free never waits at all (an owner whose lists a thief holds
 * frees as a remote slot would; a span to relist is marked for the lock's
 * next holder), and only the free of a page run can say -EAGAIN.
 */
#include "allocator/heap.h"
#include "shm/testpoint.h"
#include "shm/slots.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <numa.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>

/*
 * libnuma fills its per-node CPU masks lazily, on the first numa_node_of_cpu(),
 * with plain stores: two threads taking their first slot at once race in it
 * (ThreadSanitizer saw one read a mask another was still writing). Once per
 * slot claim, so a process-wide lock costs nothing.
 */
static pthread_mutex_t numa_mu = PTHREAD_MUTEX_INITIALIZER;

static int home_arena(const struct al_ctx *c)
{
        int cpu = sched_getcpu(), node = 0;

        if (cpu >= 0 && numa_available() >= 0) {
                pthread_mutex_lock(&numa_mu);
                node = numa_node_of_cpu(cpu);
                pthread_mutex_unlock(&numa_mu);
        }
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
        h->lists_stale = false;
}

/* ---- owner lists (private to the owner) ---------------------------------- */

void al_list_push(struct al_ctx *c, uint32_t *head, uint32_t page)
{
        struct page_desc *d = al_desc(c, page);

        *head = link_ok(c, *head);
        d->prev = 0;
        d->next = *head;
        if (*head)
                al_desc(c, *head - 1)->prev = page + 1;
        *head = page + 1;
}

/*
 * Take `page` off the list at `head`. Its links are believed only where its
 * neighbours link back to it: a page whose list was cut short by a crash (a
 * thief or a recovery killed part way) keeps stale links, and following them
 * blindly would write into other lists, or leave `head` naming a page that
 * is no longer on it.
 */
void al_list_del(struct al_ctx *c, uint32_t *head, uint32_t page)
{
        struct page_desc *d = al_desc(c, page);
        uint32_t prev = link_ok(c, d->prev), next = link_ok(c, d->next);

        if (next && al_desc(c, next - 1)->prev != page + 1)
                next = 0;               /* stale: the rest of the list is not ours to relink */
        if (*head == page + 1)
                *head = next;
        else if (prev && al_desc(c, prev - 1)->next == page + 1)
                al_desc(c, prev - 1)->next = next;
        else
                next = 0;               /* not on this list: touch no neighbour */
        if (next)
                al_desc(c, next - 1)->prev = *head == next ? 0 : prev;
        d->next = d->prev = 0;
}

/* ---- bitmaps ------------------------------------------------------------- */

/*
 * Move remotely freed blocks of a span into its private bitmap. The FREE
 * stamp is written before the remote bit is cleared (release), which is what
 * lets a recovery decide a dead remote freer's journal (design 3.4).
 */
uint32_t al_drain(struct al_ctx *c, uint32_t page, struct slab_hdr *sh)
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
                        __atomic_store_n(stamp_at(c, base + (uint64_t)i * d->block_size),
                                         AL_STAMP_FREE, __ATOMIC_RELAXED);
                }
                uint64_t fresh = bits & ~sh->local_free[w];
                sh->local_free[w] |= bits;
                atomic_fetch_and_explicit(&sh->remote_free[w], ~bits, memory_order_release);
                TEST_POINT("drain-moved");
                n += (uint32_t)__builtin_popcountll(fresh);
                if (w < d->cursor)
                        d->cursor = w;
        }
        d->nfree += n;
        return n;
}

uint32_t al_count_local_free(const struct slab_hdr *sh)
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

/* ---- getting and giving spans -------------------------------------------- */

/*
 * Adopt an abandoned span or carve a fresh one (arena lock). The page, or
 * UINT32_MAX with *ret_err -ENOMEM (none) or -EAGAIN (the lock is held).
 */
static uint32_t span_acquire(struct al_heap *h, unsigned ai, unsigned cls, int *ret_err)
{
        struct al_ctx *c = h->ctx;
        struct arena *a = c->arena[ai];
        uint32_t page = UINT32_MAX;
        int r = al_arena_lock(h, ai);

        if (r < 0) {
                *ret_err = r;
                return UINT32_MAX;
        }
        a->abandoned[cls] = link_ok(c, a->abandoned[cls]);
        if (a->abandoned[cls] && !al_desc_sane(c, a->abandoned[cls] - 1))
                a->abandoned[cls] = 0;  /* damaged: forget the list rather than follow it */
        if (a->abandoned[cls]) {
                page = a->abandoned[cls] - 1;
                al_list_del(c, &a->abandoned[cls], page);
                al_desc(c, page)->full = 0;
                __atomic_store_n(&al_desc(c, page)->owner, h->slot + 1, __ATOMIC_RELAXED);
        } else {
                uint32_t span = al_class_span(cls);
                page = al_pages_take(c, ai, span);
                if (page != UINT32_MAX) {
                        span_format(c, page, cls);
                        for (uint32_t p = page + 1; p < page + span; p++) {
                                struct page_desc *t = al_desc(c, p);
                                t->span = page;
                                __atomic_store_n(&t->owner, 0, __ATOMIC_RELAXED);
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
                        __atomic_store_n(&d->owner, h->slot + 1, __ATOMIC_RELAXED);
                        d->state = PAGE_SLAB;   /* commit point */
                        a->slab_pages[cls] += span;
                }
        }
        al_arena_unlock(h, ai);
        *ret_err = -ENOMEM;
        return page;
}

/*
 * Give an owned, entirely free span back to its arena, taking it off `list`.
 * False (and the span stays, empty, on the list) if the lock is held.
 */
static bool span_release(struct al_heap *h, uint32_t *list, uint32_t page)
{
        struct al_ctx *c = h->ctx;
        struct page_desc *d = al_desc(c, page);
        unsigned ai = d->arena, cls = al_cls_of(d);
        uint32_t span = d->span;

        if (al_arena_lock(h, ai) < 0)
                return false;
        al_list_del(c, list, page);
        c->arena[ai]->slab_pages[cls] -= span;
        al_pages_give(c, ai, page, span);
        al_arena_unlock(h, ai);
        return true;
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
void al_disown_locked(struct al_ctx *c, unsigned ai, uint32_t page)
{
        struct page_desc *d = al_desc(c, page);
        struct slab_hdr *sh = span_hdr(c, page);

        __atomic_store_n(&d->owner, 0, __ATOMIC_SEQ_CST);
        atomic_thread_fence(memory_order_seq_cst);
        d->full = 0;
        if (d->nfree > 0 || atomic_load_explicit(&sh->remote_summary, memory_order_seq_cst))
                al_list_abandoned(c, ai, page);
}

/* Disown a full span of ours, taking it off `list`. 0, or -EAGAIN (lock held: it stays). */
static int span_disown(struct al_heap *h, uint32_t *list, uint32_t page)
{
        unsigned ai = al_desc(h->ctx, page)->arena;
        int r = al_arena_lock(h, ai);

        if (r < 0)
                return r;
        al_list_del(h->ctx, list, page);
        al_disown_locked(h->ctx, ai, page);
        al_arena_unlock(h, ai);
        return 0;
}

void al_list_if_disowned(struct al_heap *h, uint32_t page)
{
        struct al_ctx *c = h->ctx;
        struct page_desc *d = al_desc(c, page);
        unsigned ai = d->arena;

        if (ai >= c->narenas || __atomic_load_n(&d->owner, __ATOMIC_SEQ_CST) != 0)
                return;
        if (al_arena_trylock(h, ai) < 0) {
                al_relist_later(c, ai, page);   /* the lock's next holder lists it */
                return;
        }
        if (d->state == PAGE_SLAB && d->owner == 0 && !d->full)
                al_list_abandoned(c, ai, page);
        al_arena_unlock(h, ai);
}

/* A page with free blocks for (arena, class), or UINT32_MAX with *ret_err. */
static uint32_t refill(struct al_heap *h, unsigned ai, unsigned cls, int *ret_err)
{
        struct al_ctx *c = h->ctx;
        uint32_t page = span_acquire(h, ai, cls, ret_err);

        if (page == UINT32_MAX)
                return UINT32_MAX;
        struct page_desc *d = al_desc(c, page);
        al_drain(c, page, span_hdr(c, page));
        /*
         * Counted afresh, and searched from the start: the count and the
         * cursor are hints its last drainer may have left behind the bitmap
         * (killed between moving the bits and lowering the cursor).
         */
        d->nfree = al_count_local_free(span_hdr(c, page));
        d->cursor = 0;
        d->full = 0;
        al_list_push(c, &h->as->avail[ai][cls], page);
        return page;
}

/*
 * Give back to the arena every abandoned span that frees have emptied, in
 * every class: memory a class no longer needs becomes pages any class or run
 * can take. Called when an allocation finds no memory. Returns pages freed.
 * An arena whose lock is held is passed over.
 */
uint32_t al_trim_op(struct al_heap *h)
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
                                al_drain(c, p, span_hdr(c, p));
                                if (d->nfree != d->capacity)
                                        continue;
                                uint32_t span = d->span;
                                if (!span_release(h, avail, p))
                                        break;
                                freed += span;
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
                                /*
                                 * Ownerless, only remote frees add to it: with no
                                 * summary bit, its count (kept by drains, redone
                                 * by a rebuild) says it is not empty. Cheap, as a
                                 * full segment that cannot evict trims on every
                                 * allocation that fails.
                                 */
                                if (!atomic_load_explicit(&sh->remote_summary, memory_order_acquire) &&
                                    d->nfree < d->capacity)
                                        continue;
                                al_drain(c, p, sh);
                                d->nfree = al_count_local_free(sh);
                                if (d->nfree != d->capacity)
                                        continue;
                                al_list_del(c, &a->abandoned[cls], p);
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
        int r;

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
                        page = refill(h, ai, cls, &r);
                        if (page == UINT32_MAX)
                                return r;
                }
                struct page_desc *d = al_desc(c, page);
                struct slab_hdr *sh = span_hdr(c, page);
                int bit = find_free(d, sh);
                if (bit < 0 && al_drain(c, page, sh) > 0)
                        bit = find_free(d, sh);
                if (bit < 0) {
                        if ((r = span_disown(h, avail, page)) < 0)
                                return r;
                        continue;
                }
                uint64_t block = al_page_off(c, page) + AL_SLAB_HDR +
                                 (uint64_t)bit * d->block_size;
                uint64_t stamp = (uint64_t)h->slot << 48 | (++as->seq & 0xffffffffffffull);
                journal_block(as, J_ALLOC, block + AL_STAMP_SIZE, stamp,  /* step 1 */
                              ai, cls, as->c.allocs[ai][cls]);
                sh->local_free[bit / 64] &= ~(1ull << (bit % 64));        /* step 2 */
                d->nfree--;
                __atomic_store_n(stamp_at(c, block), stamp, __ATOMIC_RELAXED);
                __atomic_store_n(&as->c.allocs[ai][cls], as->c.allocs[ai][cls] + 1,
                                 __ATOMIC_RELAXED);
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
                __atomic_store_n(&t->owner, 0, __ATOMIC_RELAXED);
                t->state = PAGE_RUN_TAIL;
        }
        struct page_desc *d = al_desc(c, page);
        d->span = n;
        __atomic_store_n(&d->owner, 0, __ATOMIC_RELAXED);
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

int al_run_free(struct al_heap *h, uint32_t page, uint64_t stamp)
{
        struct al_ctx *c = h->ctx;
        struct page_desc *d = al_desc(c, page);
        unsigned ai = d->arena;
        struct arena *a;
        int r = al_arena_lock(h, ai);

        if (r < 0)
                return r;
        a = c->arena[ai];
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

/* ---- the operations ------------------------------------------------------ */

static int alloc_op(struct al_heap *h, size_t bytes, int node, uint64_t *ret_off)
{
        struct al_ctx *c = h->ctx;
        int cls = al_size_class(bytes);
        unsigned first;
        int r = -ENOMEM;
        bool locked_out = false;

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
                locked_out |= r == -EAGAIN;
                if ((r != -ENOMEM && r != -EAGAIN) || node >= 0)
                        break;
        }
        if (r == -ENOMEM && locked_out)
                r = -EAGAIN;    /* memory may be free behind a lock a stopped client holds */
        if (r == -ENOMEM)
                seg_set_errdetail("no free memory for %zu bytes%s", bytes,
                                  node >= 0 ? " on that node" : " in any arena");
        return r;
}

void al_commit(struct al_heap *h)
{
        journal_clear(h->as);
}

int al_locate(const struct al_ctx *c, uint64_t off, uint32_t *ret_page, uint32_t *ret_idx)
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

uint64_t al_remote_free(struct slab_hdr *sh, uint32_t idx)
{
        atomic_fetch_or_explicit(&sh->remote_free[idx / 64], 1ull << (idx % 64),
                                 memory_order_release);
        return atomic_fetch_or_explicit(&sh->remote_summary, 1ull << (idx / 64),
                                        memory_order_seq_cst);
}

static int already_free(uint64_t off)
{
        seg_set_errdetail("free of %#llx: block is already free", (unsigned long long)off);
        return -EINVAL;
}

/*
 * Free the block at `off`. `expect` (non-zero) is the stamp it must still
 * carry, for frees that may come late (recovery's): a block freed since, and
 * maybe handed out again, is left alone. `own` says our lists are ours (we
 * are inside al_op_begin); without them the free is made as a remote one.
 */
static int free_op(struct al_heap *h, uint64_t off, uint64_t expect, bool own)
{
        struct al_ctx *c = h->ctx;
        struct al_slot *as = h->as;
        uint32_t page, idx;

        if (al_locate(c, off, &page, &idx) < 0) {
                seg_set_errdetail("free of %#llx: not an allocated block", (unsigned long long)off);
                return -EINVAL;
        }
        uint64_t *stampp = stamp_at(c, off - AL_STAMP_SIZE);
        if (idx == UINT32_MAX) {
                uint64_t stamp = stamp_load(c, off - AL_STAMP_SIZE);
                if (expect && stamp != expect)
                        return already_free(off);
                journal(as, J_RUN_FREE, off, stamp);
                int r = al_run_free(h, page, stamp);
                journal_clear(as);
                return r;
        }
        struct page_desc *d = al_desc(c, page);
        struct slab_hdr *sh = span_hdr(c, page);
        uint64_t mask = 1ull << (idx % 64);
        unsigned ai = d->arena, cls = al_cls_of(d);

        /*
         * The remote bit first (acquire), then the stamp: a drain writes the
         * FREE stamp before it clears the bit (release), so a clear bit read
         * here means the stamp read next is the drain's or later. In the other
         * order a drain between the two loads would let a second free of the
         * block pass, and the block be handed out twice (design 3.4).
         */
        if (atomic_load_explicit(&sh->remote_free[idx / 64], memory_order_acquire) & mask)
                return already_free(off);
        uint64_t stamp = stamp_load(c, off - AL_STAMP_SIZE);
        if (stamp == AL_STAMP_FREE || (expect && stamp != expect))
                return already_free(off);
        /*
         * Relaxed: only this slot makes a span its own, so a span that is ours
         * reads as ours; others change owner (a disown, a thief) with atomics,
         * and a thief is kept out by the busy/steal pair (steal.c), not by
         * this load. It was a plain load: a data race with their stores.
         */
        if (own && __atomic_load_n(&d->owner, __ATOMIC_RELAXED) == h->slot + 1) {
                if (sh->local_free[idx / 64] & mask)
                        return already_free(off);
                journal_block(as, J_FREE, off, stamp, ai, cls, as->c.frees[ai][cls]);
                __atomic_store_n(stampp, AL_STAMP_FREE, __ATOMIC_RELAXED);
                sh->local_free[idx / 64] |= mask;
                d->nfree++;
                if (idx / 64 < d->cursor)
                        d->cursor = idx / 64;
                __atomic_store_n(&as->c.frees[ai][cls], as->c.frees[ai][cls] + 1, __ATOMIC_RELAXED);
                journal_clear(as);
                if (d->nfree == d->capacity && as->avail[ai][cls] != page + 1)
                        span_release(h, &as->avail[ai][cls], page);
                return 0;
        }
        journal_block(as, J_RFREE, off, stamp, ai, cls, as->c.frees[ai][cls]);
        uint64_t before = al_remote_free(sh, idx);
        __atomic_store_n(&as->c.frees[ai][cls], as->c.frees[ai][cls] + 1, __ATOMIC_RELAXED);
        if (before == 0)
                al_list_if_disowned(h, page);
        journal_clear(as);
        return 0;
}

size_t al_usable(const struct al_ctx *c, uint64_t off)
{
        uint32_t page, idx;

        if (al_locate(c, off, &page, &idx) < 0)
                return 0;
        const struct page_desc *d = al_desc(c, page);
        if (idx == UINT32_MAX)
                return (size_t)d->span * AL_PAGE_SIZE - AL_STAMP_SIZE;
        return d->block_size - AL_STAMP_SIZE;
}

uint64_t al_stamp(const struct al_ctx *c, uint64_t off)
{
        return off >= AL_STAMP_SIZE && off < c->s->size ? stamp_load(c, off - AL_STAMP_SIZE) : 0;
}

/* ---- the API ------------------------------------------------------------- */

int al_alloc(struct al_heap *h, size_t bytes, int node, uint64_t *ret_off)
{
        int r = al_op_begin(h);

        if (r < 0)
                return r;
        r = alloc_op(h, bytes, node, ret_off);
        al_op_end(h);
        return r;
}

static int free_any(struct al_heap *h, uint64_t off, uint64_t expect)
{
        /* A thief at work on our lists: free as a remote slot would, without them. */
        bool own = al_op_begin(h) == 0;
        int r = free_op(h, off, expect, own);

        if (own)
                al_op_end(h);
        return r;
}

int al_free(struct al_heap *h, uint64_t off)
{
        return free_any(h, off, 0);
}

int al_free_stamped(struct al_heap *h, uint64_t off, uint64_t stamp)
{
        return stamp ? free_any(h, off, stamp) : -EINVAL;
}

uint32_t al_trim(struct al_heap *h)
{
        if (al_op_begin(h) < 0)
                return 0;
        uint32_t n = al_trim_op(h);
        al_op_end(h);
        return n;
}
