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
 * New keys first pass through a small queue, as in S3-FIFO (Yang et al.,
 * SOSP'23): a ring of their offsets in insertion order. While it holds more
 * than a tenth of the items, eviction takes from its head: an item hit at
 * least twice since it entered is promoted (its count cleared; from then on
 * only the hand judges it), any other is evicted and its key goes to the
 * ghost. The hand passes over items still marked FREQ_SMALL (clearing the
 * mark), so a one-hit wonder is gone after a tenth of the cache's turnover
 * and does not push hot items out. The ring holds hints: each position is an
 * offset and the low bits of the block's allocator stamp, checked and then
 * judged as the hand judges any block, so a stale, lost or doubled position
 * (a writer that died between its insert and its push, a ring that wrapped)
 * costs some precision and nothing else.
 *
 * When a class has nothing to give (a workload moved to other sizes), the
 * "any" hand walks every page and empties spans of any class; emptied spans
 * go back to the arena (al_trim) for the class that needs them.
 */
#include "cache/cache.h"

#include <errno.h>

/*
 * The ghost: keys evicted lately. Each 64-bit word of the table holds two
 * of them, as a 16-bit fingerprint and a 16-bit stamp of the eviction clock
 * (in units of GHOST_UNITS of the table's capacity, so a stamp wraps only
 * after 64 times that many evictions); a new one takes the older lane of
 * its word. A key set again while its ghost is younger than GHOST_AGE times
 * the number of linked items was evicted too early: it skips the small queue
 * and goes straight to the hand, as S3-FIFO's ghost sends such keys to its
 * main queue, and leaves the ghost. The table is lossy (lanes are stored,
 * not CASed): a lost or stale ghost changes one key's queue, nothing else.
 * The item count is re-estimated (entries in the index) once per that many
 * evictions.
 */
#define RECOUNT_MIN     4096u   /* evictions between recounts of the items, at least */
#define GHOST_AGE       2u      /* measured on ../shared/traces: 1x lost 0.0003-0.002 */
#define GHOST_UNITS     1024u   /* clock units a table's worth of evictions spans */
#define LANE_BITS       32u
#define LANE_MASK       0xffffffffull

/* The ghost's word for a key's hash and its fingerprint (never 0, which is an empty lane). */
static _Atomic uint64_t *ghost_word(struct cache *k, uint64_t hash, uint32_t *ret_fp)
{
        uint64_t g = cache_mum(hash, 0x9fb21c651e98df25ull);
        uint32_t fp = (uint32_t)(g >> 48);

        *ret_fp = fp ? fp : 1;
        return &k->ghost[g & k->ghost_mask];
}

static uint32_t ghost_clock(const struct cache *k, uint64_t evictions)
{
        return (uint32_t)(evictions >> k->ghost_shift) & 0xffff;
}

static uint32_t lane_age(uint32_t lane, uint32_t clock)
{
        return (clock - lane) & 0xffff;
}

void cache_ghost_put(struct cache *k, uint64_t hash)
{
        uint64_t n = atomic_fetch_add_explicit(&k->hdr->evictions, 1, memory_order_relaxed);
        uint64_t live = atomic_load_explicit(&k->hdr->live_est, memory_order_relaxed);
        uint64_t at = atomic_load_explicit(&k->hdr->counted_at, memory_order_relaxed);
        uint32_t fp, clock = ghost_clock(k, n);
        _Atomic uint64_t *gw = ghost_word(k, hash, &fp);
        uint64_t w = atomic_load_explicit(gw, memory_order_relaxed);
        uint32_t l0 = (uint32_t)w, l1 = (uint32_t)(w >> LANE_BITS);

        /* The empty lane, else the older one. */
        unsigned lane = !l0 ? 0 : !l1 ? 1 : lane_age(l0, clock) >= lane_age(l1, clock) ? 0 : 1;
        uint64_t v = (uint64_t)(fp << 16 | clock);
        w = lane ? (w & LANE_MASK) | v << LANE_BITS : (w & ~LANE_MASK) | v;
        atomic_store_explicit(gw, w, memory_order_relaxed);
        /* Counted at the second eviction too: the small queue's share needs a count. */
        bool due = n - at >= (live > RECOUNT_MIN ? live : RECOUNT_MIN) || (!live && n > at);
        if (due && atomic_compare_exchange_strong(&k->hdr->counted_at, &at, n)) {
                uint64_t cnt = 0;
                for (uint64_t b = 0; b < k->nbuckets; b++)
                        for (unsigned x = 0; x < CACHE_WAYS; x++)
                                cnt += atomic_load_explicit(&k->index[b].e[x],
                                                            memory_order_relaxed) != 0;
                atomic_store_explicit(&k->hdr->live_est, cnt, memory_order_relaxed);
        }
}

bool cache_ghost_hit(struct cache *k, uint64_t hash)
{
        uint64_t n = atomic_load_explicit(&k->hdr->evictions, memory_order_relaxed);

        if (!n)
                return false;   /* nothing evicted yet: skip the table's cache miss */
        uint32_t fp, clock = ghost_clock(k, n);
        _Atomic uint64_t *gw = ghost_word(k, hash, &fp);
        uint64_t w = atomic_load_explicit(gw, memory_order_relaxed);
        uint64_t live = atomic_load_explicit(&k->hdr->live_est, memory_order_relaxed);
        uint64_t window = (GHOST_AGE * (live ? live : k->nbuckets)) >> k->ghost_shift;

        for (unsigned lane = 0; lane < 2; lane++) {
                uint32_t l = (uint32_t)(w >> (lane * LANE_BITS));
                if (l && l >> 16 == fp && lane_age(l, clock) <= window) {
                        /* Found: it leaves the ghost (a racing put may be lost: lossy). */
                        atomic_store_explicit(gw, w & ~(LANE_MASK << (lane * LANE_BITS)),
                                              memory_order_relaxed);
                        return true;
                }
        }
        return false;
}

/*
 * The small queue. A position is off/8 : 44 | the block's stamp, low 20 bits,
 * : 20; 0 is empty. Writers of new keys push (one fetch-and-add on the tail);
 * evictors take positions from the head by CAS and exchange them with 0, so
 * each is judged once. A push that finds the ring full overwrites the oldest
 * position: that item leaves the queue unjudged, as main's.
 */
#define SMALL_SHARE      10u                    /* the queue's share of the items: 1/10 */
#define SMALL_PROMOTE    2u                     /* hits in the queue that promote an item */
#define SMALL_OFF_BITS   44u
#define SMALL_STAMP_MASK ((1ull << (64 - SMALL_OFF_BITS)) - 1)

void cache_small_push(struct cache *k, uint64_t off, uint64_t stamp)
{
        uint64_t pos = atomic_fetch_add_explicit(&k->hdr->small_tail, 1, memory_order_relaxed);

        atomic_store_explicit(&k->small[pos & k->small_mask],
                              off >> 3 | (stamp & SMALL_STAMP_MASK) << SMALL_OFF_BITS,
                              memory_order_release);
}

uint64_t cache_small_queued(const struct cache *k)
{
        uint64_t h = atomic_load_explicit(&k->hdr->small_head, memory_order_relaxed);
        uint64_t t = atomic_load_explicit(&k->hdr->small_tail, memory_order_relaxed);

        return t <= h ? 0 : t - h > k->small_mask ? k->small_mask + 1 : t - h;
}

/* Is `it` (at off) the item an index entry points at? Returns the entry. */
static _Atomic uint64_t *linked_entry(struct cache *k, struct item *it, uint64_t off,
                                      uint64_t *ret_hash)
{
        uint64_t h = cache_hash(k, item_nskey(it), it->data, it->klen), b[2];

        *ret_hash = h;
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

/*
 * Tuning of the allocation path (cache_alloc), each a trade between how soon
 * memory comes back and what looking for it costs a write.
 */
#define SPARSE_DIVISOR          4u      /* a span at most 1/4 used is emptied (evict_sparse) */
#define STEAL_EVERY             64u     /* short allocations between looks at idle slots */
#define STEAL_ROUND             8u      /* ... and always at this round of one allocation */
#define STEAL_MIN_MS            100u    /* a look costs a membarrier: at most this often */
#define RECOVER_EVERY           16u     /* rounds between recoveries of dead clients */
#define RECOVER_MIN_MS          10u     /* ... and at most this often */
#define CLASS_ROUNDS            4u      /* rounds that try the class's own hand first */
#define CLASS_WANT              8u      /* items it unlinks a round */
#define CLASS_BUDGET            4096u   /* blocks it looks at a round */
#define SMALL_BUDGET            64u     /* small queue positions judged a round, at most */
#define ADOPT_EVERY             16u     /* rounds between passes over orphaned rings */
#define MAX_ROUNDS              4096u   /* an allocation gives up after this many */

enum { V_SKIP, V_SPARED, V_EVICTED, V_EXPIRED };

/* Who judges a block: the hand (CLOCK), the small queue's head, or a forced emptying. */
enum judge { BY_HAND, BY_SMALL, BY_FORCE };

/*
 * The item's fate at frequency `f`; returns the frequency to store, or -1 to
 * evict. The hand passes over an item the small queue has not judged yet
 * (clearing its mark, so that one whose position was lost is judged by the
 * hand next time) and otherwise runs CLOCK; the queue promotes an item hit
 * SMALL_PROMOTE times, with its count cleared, as S3-FIFO does.
 */
static int judge(enum judge by, uint8_t f)
{
        unsigned hits = f & FREQ_HITS;

        switch (by) {
        case BY_HAND:
                if (f & FREQ_SMALL)
                        return (int)hits;
                return hits ? (int)hits - 1 : -1;
        case BY_SMALL:
                return hits >= SMALL_PROMOTE ? 0 : -1;
        case BY_FORCE:
                break;
        }
        return -1;
}

/*
 * Look at one block. What it holds is read unprotected to find whether it is
 * a linked item (a block freed meanwhile reads as garbage, bounds-checked);
 * it is protected before anything is done to it.
 */
static int visit(struct cache_thr *t, uint64_t off, uint32_t now, enum judge by)
{
        struct cache *k = t->k;

        if (al_stamp(k->al, off) == AL_STAMP_FREE)
                return V_SKIP;
        struct item *it = cache_item(k, off);
        if (!it || atomic_load_explicit(&it->owner, memory_order_relaxed))
                return V_SKIP;
        uint64_t hash;
        _Atomic uint64_t *e = linked_entry(k, it, off, &hash);
        if (!e || !cache_protect(t, e, ent_make(hash, off))) {
                cache_unprotect(t);
                return V_SKIP;          /* being written, retired, or not an item */
        }
        /* An item of a dropped namespace goes first, as an expired one (uncounted). */
        bool stale = cache_ns_stale(k, it), expired = stale || cache_expired(it, now);
        int fate = expired ? -1 : judge(by, atomic_load_explicit(&it->freq, memory_order_relaxed));
        int v = V_SKIP;
        unsigned ns = it->ns < CACHE_NS_MAX ? it->ns : 0;      /* counters' index */
        if (fate >= 0) {
                atomic_store_explicit(&it->freq, (uint8_t)fate, memory_order_relaxed);
                v = V_SPARED;
        } else if (cache_unlink(t, e, it) == 0) {
                if (!stale)
                        cache_count_removal(t, ns, expired);
                if (!expired)
                        cache_ghost_put(k, hash);
                v = expired ? V_EXPIRED : V_EVICTED;
        }
        cache_unprotect(t);
        return v;
}

/*
 * Advance hand `which` until `want` items are unlinked, `budget` blocks are
 * seen, or `pages` pages are passed. BY_FORCE evicts whatever is linked: that
 * empties whole spans, whose pages then go back to the arena for another
 * class or a run.
 */
static unsigned evict_hand(struct cache_thr *t, unsigned which, unsigned want, uint32_t budget,
                           uint32_t pages, enum judge by)
{
        struct cache *k = t->k;
        struct al_ctx *al = k->al;
        uint64_t pos = atomic_load_explicit(&k->hdr->hand[which], memory_order_relaxed);
        uint32_t page = (uint32_t)(pos >> 16), blk = (uint32_t)(pos & 0xffff);
        uint32_t now = cache_now(k), steps = 0, passed = 0;
        unsigned got = 0;

        while (got < want && steps++ < budget && passed < pages) {
                if (cache_ring_short(t->cs))
                        break;
                if (page >= al->npages) {
                        page = 0;
                        blk = 0;
                }
                const struct page_desc *d = al_desc(al, page);
                uint8_t st = __atomic_load_n(&d->state, __ATOMIC_ACQUIRE);
                uint32_t span = d->span ? d->span : 1;
                if (st == PAGE_SLAB && (which == HAND_ANY || d->cls == which)) {
                        uint64_t off = al_span_block(al, page, blk);
                        if (!off) {             /* past its last block, or not a span now */
                                page += span;
                                passed += span;
                                blk = 0;
                                continue;
                        }
                        blk++;
                        int v = visit(t, off, now, by);
                        got += v == V_EVICTED || v == V_EXPIRED;
                } else if (st == PAGE_RUN && (which == HAND_ANY || which == HAND_RUN)) {
                        int v = visit(t, al_run_block(al, page), now, by);
                        got += v == V_EVICTED || v == V_EXPIRED;
                        page += span;
                        passed += span;
                        blk = 0;
                } else {
                        uint32_t step = (st == PAGE_SLAB || st == PAGE_RUN) ? span : 1;
                        page += step;
                        passed += step;
                        blk = 0;
                }
        }
        atomic_store_explicit(&k->hdr->hand[which], (uint64_t)page << 16 | blk,
                              memory_order_relaxed);
        return got;
}

/*
 * Judge items from the small queue's head while it holds more than its share,
 * until `want` items of class `cls` (AL_NCLASSES: a run) are evicted or
 * `budget` positions taken. Items of other classes it evicts are counted in
 * *ret_other: their memory is free for their class's next writes.
 */
static unsigned evict_small(struct cache_thr *t, int cls, unsigned want, unsigned budget,
                            unsigned *ret_other)
{
        struct cache *k = t->k;
        uint64_t n = k->small_mask + 1;
        uint64_t share = atomic_load_explicit(&k->hdr->live_est, memory_order_relaxed) / SMALL_SHARE;
        uint32_t now = cache_now(k);
        unsigned got = 0;

        *ret_other = 0;
        for (unsigned steps = 0; got < want && steps < budget && !cache_ring_short(t->cs); steps++) {
                uint64_t h = atomic_load_explicit(&k->hdr->small_head, memory_order_relaxed);
                uint64_t tl = atomic_load_explicit(&k->hdr->small_tail, memory_order_acquire);
                if (tl - h > n && tl > h) {     /* overwritten: they left as main's */
                        atomic_compare_exchange_strong(&k->hdr->small_head, &h, tl - n);
                        continue;
                }
                if (tl <= h || tl - h <= share)
                        break;                  /* within its share: main's turn */
                if (!atomic_compare_exchange_strong(&k->hdr->small_head, &h, h + 1))
                        continue;
                uint64_t pos = atomic_exchange_explicit(&k->small[h & k->small_mask], 0,
                                                        memory_order_acquire);
                uint64_t off = (pos & ((1ull << SMALL_OFF_BITS) - 1)) << 3;
                if (!pos || ((al_stamp(k->al, off) ^ pos >> SMALL_OFF_BITS) & SMALL_STAMP_MASK))
                        continue;               /* freed meanwhile (or reused) */
                struct item *it = cache_item(k, off);
                if (!it)
                        continue;
                int c = al_size_class(sizeof(*it) + it->klen + it->vlen);
                int v = visit(t, off, now, BY_SMALL);
                if (v != V_EVICTED && v != V_EXPIRED)
                        continue;
                if ((c < 0 ? AL_NCLASSES : (unsigned)c) == (unsigned)cls)
                        got++;
                else
                        (*ret_other)++;
        }
        return got;
}

/*
 * Empty sparse spans of any class: ones at most a quarter used. A class whose
 * items are gone keeps its spans alive with a few stragglers (values an idle
 * client stored once, say); evicting those gives whole spans back to the
 * arena, so memory moves to the class that needs it, as memcached's slab
 * rebalancer moves pages. Walks at most `pages` pages from the "any" hand.
 */
static unsigned evict_sparse(struct cache_thr *t, uint32_t pages)
{
        struct cache *k = t->k;
        struct al_ctx *al = k->al;
        uint64_t pos = atomic_load_explicit(&k->hdr->hand[HAND_ANY], memory_order_relaxed);
        uint32_t page = (uint32_t)(pos >> 16), passed = 0, now = cache_now(k);
        unsigned got = 0;

        while (passed < pages && cache_ring_used(t->cs) < CACHE_RING / 2) {
                if (page >= al->npages)
                        page = 0;
                uint32_t cap = al_span_capacity(al, page), step = 1;
                if (cap) {
                        step = __atomic_load_n(&al_desc(al, page)->span, __ATOMIC_RELAXED);
                        step = step ? step : 1;
                        uint32_t nfree = al_span_free_blocks(al, page);
                        if (nfree < cap && (cap - nfree) * SPARSE_DIVISOR <= cap) {
                                uint64_t off;
                                for (uint32_t b = 0; (off = al_span_block(al, page, b)) != 0; b++) {
                                        int v = visit(t, off, now, BY_FORCE);
                                        got += v == V_EVICTED || v == V_EXPIRED;
                                }
                        }
                }
                page += step;
                passed += step;
        }
        atomic_store_explicit(&k->hdr->hand[HAND_ANY], (uint64_t)page << 16, memory_order_relaxed);
        return got;
}

/*
 * Allocate, making room as needed: reclaim what we retired and trim emptied
 * spans; evict from the class in CLOCK order; when that does not help (the
 * class has no memory of its own, or a run needs contiguous pages), empty
 * spans of any class in address order, so that freed pages lie together.
 * Fails with -ENOMEM when a whole revolution finds nothing to evict, and with
 * -EAGAIN when what was evicted cannot be freed because a reader (stopped,
 * say) holds its epoch.
 */
int cache_alloc(struct cache_thr *t, size_t bytes, uint64_t *ret_off)
{
        int r = al_alloc(t->heap, bytes, -1, ret_off);

        if (r != -ENOMEM)
                return r;               /* the common case: no room to make */
        int cls = al_size_class(bytes);
        unsigned hand = cls < 0 ? HAND_RUN : (unsigned)cls;
        uint32_t npages = t->k->al->npages, idle = 0;
        uint32_t need = cls < 0 ? (uint32_t)((bytes + AL_STAMP_SIZE + AL_PAGE_SIZE - 1) /
                                             AL_PAGE_SIZE) : al_class_span((unsigned)cls);

        unsigned got = 0;

        for (unsigned round = 0;; round++) {
                if (round > 0 && (r = al_alloc(t->heap, bytes, -1, ret_off)) != -ENOMEM)
                        return r;
                /*
                 * Now and then (not on every miss: it looks at every slot),
                 * take the spans of idle clients: memory freed into them is
                 * free for everyone only once they are disowned.
                 */
                uint32_t stolen = 0;
                if (++t->since_steal >= STEAL_EVERY || round == STEAL_ROUND) {
                        uint64_t now = cache_clock_ms();
                        if (now - t->last_steal_ms >= STEAL_MIN_MS) {
                                t->last_steal_ms = now;
                                t->since_steal = 0;
                                stolen = al_steal_idle(t->heap);
                        }
                }
                /* Dead clients' memory (their spans, their rings) comes back with their recovery. */
                if (round == 1 || round % RECOVER_EVERY == RECOVER_EVERY - 1) {
                        uint64_t now = cache_clock_ms();
                        if (now - t->last_recover_ms >= RECOVER_MIN_MS) {
                                t->last_recover_ms = now;
                                stolen += (uint32_t)cache_recover_dead(t->k);
                        }
                }
                /*
                 * Trimming walks every abandoned span: only when something
                 * may have emptied one (a first try, or what we just evicted
                 * or freed). A segment that cannot evict would pay it on every
                 * round of every write.
                 */
                uint32_t freed = (uint32_t)cache_reclaim(t) + stolen;
                if (round == 0 || got || freed)
                        freed += al_trim(t->heap);
                if (freed > 0) {
                        r = al_alloc(t->heap, bytes, -1, ret_off);
                        if (r != -ENOMEM)
                                return r;
                }
                got = 0;
                if (round < CLASS_ROUNDS) {
                        unsigned other;
                        got = evict_small(t, (int)hand, CLASS_WANT, SMALL_BUDGET, &other);
                        if (!got)
                                got = evict_hand(t, hand, CLASS_WANT, CLASS_BUDGET, UINT32_MAX,
                                                 BY_HAND);
                        got += other;
                }
                got += evict_sparse(t, 2 * need + 2);
                if (got == 0)   /* whole spans, any class, in address order */
                        got = evict_hand(t, HAND_ANY, UINT32_MAX, UINT32_MAX, need + 1, BY_FORCE);
                if (!got && round % ADOPT_EVERY == ADOPT_EVERY - 1)
                        got = (unsigned)cache_adopt_orphans(t->k);

                idle = got ? 0 : idle + need + 1;
                if (idle > npages + need || round >= MAX_ROUNDS)
                        break;          /* a whole revolution with nothing to evict */
        }
        if (cache_ring_blocked(t)) {
                seg_set_errdetail("evicted memory is held back by readers' views (or a reader "
                                  "that does not advance); see stoa clients");
                return -EAGAIN;
        }
        seg_set_errdetail("no memory for %zu bytes and nothing left to evict", bytes);
        return -ENOMEM;
}

uint64_t cache_expire_sweep(struct cache_thr *t, uint64_t budget)
{
        struct cache *k = t->k;
        uint32_t now = cache_now(k);
        uint64_t n = 0;

        if (budget > k->nbuckets)
                budget = k->nbuckets;
        uint64_t b = atomic_fetch_add(&k->hdr->sweep, budget);
        for (uint64_t i = 0; i < budget; i++) {
                struct bucket *bk = &k->index[(b + i) % k->nbuckets];
                for (unsigned w = 0; w < CACHE_WAYS; w++) {
                        uint64_t e = atomic_load_explicit(&bk->e[w], memory_order_acquire);
                        struct item *it = e ? cache_item(k, ent_off(e)) : NULL;
                        /* Unprotected first (most are not expired), then protected to act. */
                        if (!it || !(cache_expired(it, now) || cache_ns_stale(k, it)))
                                continue;
                        if (cache_ring_short(t->cs)) {
                                cache_reclaim(t);
                                if (cache_ring_short(t->cs))
                                        goto out;
                        }
                        if (!cache_protect(t, &bk->e[w], e))
                                continue;
                        /* Items of a dropped namespace go too, uncounted (no namespace has them). */
                        bool expired = cache_expired(it, now), stale = cache_ns_stale(k, it);
                        unsigned ns = it->ns;
                        if ((expired || stale) && cache_unlink(t, &bk->e[w], it) == 0 && !stale) {
                                cache_count_removal(t, ns, true);
                                n++;
                        }
                }
        }
out:
        cache_unprotect(t);
        return n;
}
