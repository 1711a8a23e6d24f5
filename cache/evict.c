/*
 * cache/evict.c: making room, and expiry.
 *
 * Eviction is CLOCK over memory: a hand per size class walks the class's
 * blocks in address order. A linked item whose frequency counter (2 bits,
 * bumped by hits) is non-zero has it lowered and is passed over; one at 0,
 * or expired, is unlinked and retired. The hit path so costs one store that
 * is skipped once the counter saturates, and there is no queue to keep in
 * order: nothing to update on a SET, nothing for a dying writer to tear.
 * A block is an item only if the index points at it, so the hand checks
 * that inside a read section before it claims anything.
 *
 * When a class has nothing to give (a workload moved to other sizes), the
 * "any" hand walks every page and empties spans of any class; emptied spans
 * go back to the arena (al_trim) for the class that needs them.
 */
#include "cache/cache.h"

#include <errno.h>

/* Is `it` (at off) the item an index entry points at? Returns the entry. */
static _Atomic uint64_t *linked_entry(struct cache *k, struct item *it, uint64_t off)
{
        uint64_t h = cache_hash(it->ns, it->data, it->klen), b[2];
        uint64_t want = ent_make(h, off);

        cache_buckets(k, h, &b[0], &b[1]);
        for (int i = 0; i < 2; i++) {
                struct bucket *bk = &k->index[b[i]];
                for (unsigned w = 0; w < CACHE_WAYS; w++)
                        if (atomic_load_explicit(&bk->e[w], memory_order_acquire) == want)
                                return &bk->e[w];
        }
        return NULL;
}

enum { V_SKIP, V_SPARED, V_EVICTED, V_EXPIRED };

/* Look at one block (inside a read section). */
static int visit(struct cache_thr *t, uint64_t off, uint32_t now, bool force)
{
        struct cache *k = t->k;

        if (al_stamp(k->al, off) == AL_STAMP_FREE)
                return V_SKIP;
        struct item *it = cache_item(k, off);
        if (!it || atomic_load_explicit(&it->owner, memory_order_relaxed))
                return V_SKIP;
        _Atomic uint64_t *e = linked_entry(k, it, off);
        if (!e)
                return V_SKIP;          /* being written, retired, or not an item */
        bool expired = cache_expired(it, now);
        uint8_t f = atomic_load_explicit(&it->freq, memory_order_relaxed);
        if (!expired && f > 0 && !force) {
                atomic_store_explicit(&it->freq, f - 1, memory_order_relaxed);
                return V_SPARED;
        }
        unsigned ns = it->ns;
        if (cache_unlink(t, e, it) < 0)
                return V_SKIP;
        cache_count(t, ns, expired ? CNT_EXPIRED : CNT_EVICT);
        if (expired)
                t->cnt_expired++;
        else
                t->cnt_evict++;
        return expired ? V_EXPIRED : V_EVICTED;
}

/*
 * Advance hand `which` until `want` items are unlinked or `budget` blocks
 * seen. `force` evicts whatever is linked (emptying spans for another class).
 */
static unsigned evict_hand(struct cache_thr *t, unsigned which, unsigned want, uint32_t budget,
                           bool force)
{
        struct cache *k = t->k;
        struct al_ctx *al = k->al;
        uint64_t pos = atomic_load_explicit(&k->hdr->hand[which], memory_order_relaxed);
        uint32_t page = (uint32_t)(pos >> 16), blk = (uint32_t)(pos & 0xffff);
        uint32_t now = cache_now(k), steps = 0;
        unsigned got = 0;

        cache_rd_enter(t);
        while (got < want && steps++ < budget) {
                if (cache_ring_used(t->cs) > CACHE_RING - 8)
                        break;
                if (page >= al->npages) {
                        page = 0;
                        blk = 0;
                }
                const struct page_desc *d = al_desc(al, page);
                uint8_t st = __atomic_load_n(&d->state, __ATOMIC_ACQUIRE);
                uint32_t span = d->span ? d->span : 1;
                if (st == PAGE_SLAB && (which == HAND_ANY || d->cls == which)) {
                        uint32_t cap = d->capacity, bs = d->block_size;
                        if (blk >= cap || bs == 0 || cap > AL_BITMAP_WORDS * 64) {
                                page += span;
                                blk = 0;
                                continue;
                        }
                        uint64_t off = al_page_off(al, page) + AL_SLAB_HDR +
                                       (uint64_t)blk * bs + AL_STAMP_SIZE;
                        blk++;
                        int v = visit(t, off, now, force);
                        got += v == V_EVICTED || v == V_EXPIRED;
                } else if (st == PAGE_RUN && (which == HAND_ANY || which == HAND_RUN)) {
                        int v = visit(t, al_page_off(al, page) + AL_STAMP_SIZE, now, force);
                        got += v == V_EVICTED || v == V_EXPIRED;
                        page += span;
                        blk = 0;
                } else {
                        page += (st == PAGE_SLAB || st == PAGE_RUN) ? span : 1;
                        blk = 0;
                }
                if (steps % 64 == 0) {          /* never hold the epoch for long */
                        cache_rd_leave(t);
                        cache_rd_enter(t);
                }
        }
        cache_rd_leave(t);
        atomic_store_explicit(&k->hdr->hand[which], (uint64_t)page << 16 | blk,
                              memory_order_relaxed);
        return got;
}

int cache_alloc(struct cache_thr *t, size_t bytes, uint64_t *ret_off)
{
        int cls = al_size_class(bytes);
        unsigned hand = cls < 0 ? HAND_RUN : (unsigned)cls;
        uint32_t pages = t->k->al->npages;
        int r;

        for (unsigned round = 0;; round++) {
                r = al_alloc(t->heap, bytes, -1, ret_off);
                if (r != -ENOMEM)
                        return r;
                /* What we retired earlier may be free by now; emptied spans go back. */
                if (cache_reclaim(t, round ? 5 : 0) + al_trim(t->heap) > 0) {
                        r = al_alloc(t->heap, bytes, -1, ret_off);
                        if (r != -ENOMEM)
                                return r;
                }
                if (round >= 32)
                        break;
                /* Evict from the class itself, CLOCK order; then from any page. */
                unsigned got = evict_hand(t, hand, 8, 4096, false);
                if (got == 0 || round >= 4)
                        got += evict_hand(t, HAND_ANY, 64, 2 * pages + 4096, round >= 8);
                if (got == 0 && cache_ring_used(t->cs) == 0)
                        break;          /* nothing left to evict or to wait for */
                cache_reclaim(t, 10);
                al_trim(t->heap);
        }
        seg_set_errdetail("no memory for %zu bytes and nothing left to evict", bytes);
        return -ENOMEM;
}

uint64_t cache_expire_sweep(struct cache_thr *t, uint64_t budget)
{
        struct cache *k = t->k;
        uint32_t now = cache_now(k);
        uint64_t n = 0;

        if (budget > k->hdr->nbuckets)
                budget = k->hdr->nbuckets;
        uint64_t b = atomic_fetch_add(&k->hdr->sweep, budget);
        cache_rd_enter(t);
        for (uint64_t i = 0; i < budget; i++) {
                struct bucket *bk = &k->index[(b + i) & k->mask];
                for (unsigned w = 0; w < CACHE_WAYS; w++) {
                        uint64_t e = atomic_load_explicit(&bk->e[w], memory_order_acquire);
                        struct item *it = e ? cache_item(k, ent_off(e)) : NULL;
                        if (!it || !cache_expired(it, now))
                                continue;
                        if (cache_ring_used(t->cs) > CACHE_RING - 8) {
                                cache_rd_leave(t);
                                cache_reclaim(t, 100);
                                cache_rd_enter(t);
                                if (cache_ring_used(t->cs) > CACHE_RING - 8)
                                        goto out;
                                continue;
                        }
                        unsigned ns = it->ns;
                        if (cache_unlink(t, &bk->e[w], it) == 0) {
                                cache_count(t, ns, CNT_EXPIRED);
                                t->cnt_expired++;
                                n++;
                        }
                }
                if (i % 64 == 63) {
                        cache_rd_leave(t);
                        cache_rd_enter(t);
                }
        }
out:
        cache_rd_leave(t);
        return n;
}
