/*
 * cache/reclaim.c: epoch-based reclamation across processes, views, and the
 * recovery of a dead slot's cache state (docs/cache-design.md, modelled on
 * DPDK's rte_rcu_qsbr).
 *
 * A reader publishes the global epoch in its slot before it looks at the
 * index (store, full fence, load) and 0 when it leaves. A writer that
 * unlinks a block retires it with epoch r = fetch_add(global, 1): a reader
 * that could still see the block entered at an epoch <= r, and one that
 * entered later synchronizes with the fetch_add and sees the unlink. So a
 * block is freed once every slot's epoch is 0 or > r. A slot whose epoch
 * holds the rest back is checked for liveness (its OFD lock): a dead one is
 * recovered, a live one (stopped, say) is waited for, never forced.
 */
#include "cache/cache.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <time.h>

uint32_t cache_ring_used(const struct cache_slot *cs)
{
        return atomic_load_explicit(&cs->rhead, memory_order_acquire) -
               atomic_load_explicit(&cs->rtail, memory_order_acquire);
}

int cache_retire(struct cache_thr *t, uint64_t off)
{
        struct cache_slot *cs = t->cs;
        uint64_t r = atomic_fetch_add_explicit(&t->k->hdr->epoch, 1, memory_order_seq_cst);
        uint32_t h = atomic_load_explicit(&cs->rhead, memory_order_relaxed);

        /* Callers leave room before they unlink (cache_store's check); never overwrite. */
        for (int tries = 0; h - atomic_load_explicit(&cs->rtail, memory_order_relaxed) >= CACHE_RING &&
                            tries < 100; tries++)
                cache_reclaim(t, 100);
        if (h - atomic_load_explicit(&cs->rtail, memory_order_relaxed) >= CACHE_RING)
                return -EAGAIN;         /* only a scribbled ring gets here: the block leaks */
        cs->ring[h % CACHE_RING].off = off;
        cs->ring[h % CACHE_RING].epoch = r;
        atomic_store_explicit(&cs->rhead, h + 1, memory_order_release);
        return 0;
}

/* The oldest epoch a reader holds, and which slot holds it. UINT64_MAX: none. */
static uint64_t min_epoch(struct cache *k, uint32_t *ret_slot)
{
        uint32_t hw = cache_slots_hw(k);
        uint64_t min = UINT64_MAX;

        atomic_thread_fence(memory_order_seq_cst);
        for (uint32_t s = 0; s < hw; s++) {
                uint64_t e = atomic_load_explicit(&cache_slot_of(k, s)->epoch, memory_order_acquire);
                if (e && e < min) {
                        min = e;
                        *ret_slot = s;
                }
        }
        return min;
}

/*
 * Does a reader's epoch (not a view's pin) hold back retired memory, in any
 * slot's ring? Then a failed allocation is -EAGAIN (wait for the reader),
 * not -ENOMEM.
 */
bool cache_ring_blocked(struct cache_thr *t)
{
        uint32_t blocker = UINT32_MAX;
        uint64_t min = min_epoch(t->k, &blocker);

        for (uint32_t s = 0; s < cache_slots_hw(t->k); s++) {
                struct cache_slot *cs = cache_slot_of(t->k, s);
                uint32_t head = atomic_load_explicit(&cs->rhead, memory_order_acquire);
                uint32_t tail = atomic_load_explicit(&cs->rtail, memory_order_acquire);
                if (head - tail > CACHE_RING)
                        continue;
                for (uint32_t i = tail; i != head; i++)
                        if (cs->ring[i % CACHE_RING].off && cs->ring[i % CACHE_RING].epoch >= min)
                                return true;
        }
        return false;
}

static bool views_active(struct cache *k)
{
        uint32_t hw = cache_slots_hw(k);

        for (uint32_t s = 0; s < hw; s++)
                if (atomic_load_explicit(&cache_slot_of(k, s)->nviews, memory_order_acquire))
                        return true;
        return false;
}

bool cache_pinned(struct cache *k, uint64_t off)
{
        uint32_t hw = cache_slots_hw(k);

        for (uint32_t s = 0; s < hw; s++) {
                struct cache_slot *cs = cache_slot_of(k, s);
                if (!atomic_load_explicit(&cs->nviews, memory_order_acquire))
                        continue;
                for (unsigned v = 0; v < CACHE_VIEWS; v++)
                        if (atomic_load_explicit(&cs->views[v], memory_order_acquire) == off)
                                return true;
        }
        return false;
}

/*
 * Free one ring cell. jfree names the block first, so a recovery finds a
 * block whose cell was cleared but whose free did not happen (it compares
 * the stamp, so a free that did happen is not repeated).
 */
static void free_cell(struct cache_thr *t, struct retired *rt)
{
        struct cache_slot *cs = t->cs;
        uint64_t off = rt->off;

        cs->jfree_stamp = al_stamp(t->k->al, off);
        cs->jfree = off;
        atomic_thread_fence(memory_order_release);
        rt->off = 0;
        al_free(t->heap, off);
        atomic_store_explicit(&cs->jfree, 0, memory_order_release);
}

/*
 * A view can pin a cell for as long as its holder likes; sitting at the tail,
 * it would keep the ring from advancing past the cells behind it. Pinned
 * cells at the tail move to the head: the copy first, then the old cell is
 * cleared, so a crash in between leaves a duplicate that recovery removes
 * (dedup_ring), never a lost block.
 */
static void move_pinned(struct cache_thr *t)
{
        struct cache_slot *cs = t->cs;

        for (int n = 0; n < 8; n++) {
                uint32_t head = atomic_load_explicit(&cs->rhead, memory_order_relaxed);
                uint32_t tail = atomic_load_explicit(&cs->rtail, memory_order_relaxed);
                struct retired *rt = &cs->ring[tail % CACHE_RING];
                if (head - tail < CACHE_RING / 4 || head - tail >= CACHE_RING - 1 || !rt->off ||
                    !cache_pinned(t->k, rt->off))
                        return;
                cs->ring[head % CACHE_RING] = *rt;
                atomic_store_explicit(&cs->rhead, head + 1, memory_order_release);
                rt->off = 0;
                while (tail != head + 1 && !cs->ring[tail % CACHE_RING].off)
                        tail++;
                atomic_store_explicit(&cs->rtail, tail, memory_order_release);
        }
}

static void pause_us(unsigned us)
{
        struct timespec ts = { 0, (long)us * 1000 };

        nanosleep(&ts, NULL);
}

int cache_reclaim(struct cache_thr *t, unsigned wait_ms)
{
        struct cache *k = t->k;
        struct cache_slot *cs = t->cs;
        uint64_t deadline = wait_ms ? cache_clock_ms() + wait_ms : 0;
        int freed = 0;

        for (unsigned round = 0;; round++) {
                uint32_t blocker = UINT32_MAX;
                uint64_t min = min_epoch(k, &blocker);
                bool pins = views_active(k), blocked = false;
                uint32_t head = atomic_load_explicit(&cs->rhead, memory_order_relaxed);
                uint32_t tail = atomic_load_explicit(&cs->rtail, memory_order_relaxed);

                if (head - tail > CACHE_RING) {         /* scribbled: drop rather than spin */
                        atomic_store_explicit(&cs->rtail, head, memory_order_release);
                        return freed;
                }
                for (uint32_t i = tail; i != head; i++) {
                        struct retired *rt = &cs->ring[i % CACHE_RING];
                        if (!rt->off)
                                continue;
                        if (rt->epoch >= min) {
                                blocked = true;
                                break;          /* later cells are younger still */
                        }
                        if (pins && cache_pinned(k, rt->off))
                                continue;       /* a view holds it: stays, others go */
                        free_cell(t, rt);
                        freed++;
                }
                while (tail != head && !cs->ring[tail % CACHE_RING].off)
                        tail++;
                atomic_store_explicit(&cs->rtail, tail, memory_order_release);
                if (pins)
                        move_pinned(t);
                if (!blocked || !wait_ms || cache_clock_ms() >= deadline)
                        return freed;
                if (blocker != t->slot && blocker != UINT32_MAX) {
                        struct cache_slot *bs = cache_slot_of(k, blocker);
                        if (slot_is_dead(k->s, blocker, bs->gen) == 1)
                                slot_recover_dead(k->s, blocker);
                }
                if (round < 16)
                        sched_yield();
                else
                        pause_us(50);
        }
}

int cache_view_pin(struct cache_thr *t, uint64_t off)
{
        struct cache_slot *cs = t->cs;

        for (unsigned v = 0; v < CACHE_VIEWS; v++) {
                if (atomic_load_explicit(&cs->views[v], memory_order_relaxed))
                        continue;
                atomic_store_explicit(&cs->views[v], off, memory_order_relaxed);
                atomic_store_explicit(&cs->nviews, atomic_load(&cs->nviews) + 1,
                                      memory_order_relaxed);
                return (int)v;
        }
        return -EMFILE;
}

void cache_view_unpin(struct cache_thr *t, uint64_t off)
{
        struct cache_slot *cs = t->cs;

        for (unsigned v = 0; v < CACHE_VIEWS; v++) {
                if (atomic_load_explicit(&cs->views[v], memory_order_relaxed) != off)
                        continue;
                atomic_store_explicit(&cs->views[v], 0, memory_order_release);
                atomic_store_explicit(&cs->nviews, atomic_load(&cs->nviews) - 1,
                                      memory_order_release);
                return;
        }
}

/*
 * Rings of slots nobody holds: a client that left while a reader held its
 * retired blocks back left them there. Take each such slot for a moment
 * (its lock byte), free what readers allow now, and give it back. Returns
 * blocks freed.
 */
int cache_adopt_orphans(struct cache *k)
{
        int freed = 0;

        for (uint32_t s = 0; s < cache_slots_hw(k); s++) {
                struct cache_slot *cs = cache_slot_of(k, s);
                uint32_t gen;
                if (atomic_load_explicit(&slot_hdr(k->s, s)->state, memory_order_acquire) != SLOT_FREE ||
                    !cache_ring_used(cs) || slot_claim_at(k->s, s, &gen) < 0)
                        continue;
                struct al_heap h;
                al_heap_init(&h, k->al, s, gen);
                struct cache_thr t = { .k = k, .heap = &h, .cs = cs, .slot = s, .gen = gen,
                                       .tag = olock_tag(s, gen) };
                cs->gen = gen;
                freed += cache_reclaim(&t, 0);
                al_heap_abandon(&h);
                slot_release(k->s, s);
        }
        return freed;
}

/* ---- recovery of a dead slot --------------------------------------------- */

static _Atomic uint64_t *entry_at(struct cache *k, uint64_t off)
{
        uint64_t lo = k->index_off, hi = lo + k->nbuckets * sizeof(struct bucket);
        uint64_t ilo = k->intern_off, ihi = ilo + (uint64_t)k->intern_cap * 8;

        if (off % 8 || !((off >= lo && off < hi) || (off >= ilo && off < ihi)))
                return NULL;
        return (_Atomic uint64_t *)(k->s->base + off);
}

static bool ring_has_last(const struct cache_slot *cs, uint64_t off)
{
        uint32_t h = atomic_load_explicit(&cs->rhead, memory_order_relaxed);

        return h != atomic_load_explicit(&cs->rtail, memory_order_relaxed) &&
               cs->ring[(h - 1) % CACHE_RING].off == off;
}

/*
 * Decide the dead slot's journalled store, without touching the allocator
 * (whose own journal recovery must see first, or its record of the one
 * operation in flight would be overwritten). Returns the new block if it
 * stays published; *ret_free is set to a block that must be freed after.
 */
static uint64_t resolve_store(struct cache_thr *t, uint64_t *ret_free)
{
        struct cache *k = t->k;
        struct cache_slot *cs = t->cs;
        uint64_t n = cs->jnew, o = cs->jold;
        _Atomic uint64_t *e = cs->jentry ? entry_at(k, cs->jentry) : NULL;
        uint64_t tag = olock_tag(t->slot, cs->gen);
        bool pub = false;

        if (o) {
                struct item *oi = cache_item(k, o);
                if (oi && atomic_load_explicit(&oi->owner, memory_order_acquire) == tag) {
                        if (e && ent_off(atomic_load(e)) == o) {
                                atomic_store(&oi->owner, 0);    /* claimed, not stored: undo */
                        } else {
                                pub = true;                     /* stored: O is ours to retire */
                                if (!ring_has_last(cs, o))
                                        cache_retire(t, o);
                        }
                }
        } else if (n && e) {
                struct item *ni = cache_item(k, n);
                /* The entry first: once replaced, a published item keeps its claim. */
                pub = ent_off(atomic_load(e)) == n ||
                      (ni && atomic_load_explicit(&ni->owner, memory_order_acquire));
        }
        if (n && !pub)
                *ret_free = n;
        return pub ? n : 0;
}

static uint64_t resolve_intern(struct cache_thr *t, uint64_t *ret_free)
{
        struct cache_slot *cs = t->cs;
        _Atomic uint64_t *e = cs->jentry ? entry_at(t->k, cs->jentry) : NULL;
        uint64_t n = cs->jnew;

        if (!n)
                return 0;
        if (e && ent_off(atomic_load(e)) == n)
                return n;
        *ret_free = n;
        return 0;
}

/* Drop the older copy of a cell duplicated by a move_pinned() cut short. */
static void dedup_ring(struct cache_slot *cs)
{
        uint32_t head = atomic_load_explicit(&cs->rhead, memory_order_relaxed);
        uint32_t tail = atomic_load_explicit(&cs->rtail, memory_order_relaxed);

        if (head - tail > CACHE_RING) {         /* scribbled: keep what can be trusted */
                atomic_store(&cs->rtail, head);
                return;
        }
        for (uint32_t i = tail; i != head; i++) {
                struct retired *a = &cs->ring[i % CACHE_RING];
                for (uint32_t j = i + 1; a->off && j != head; j++)
                        if (cs->ring[j % CACHE_RING].off == a->off)
                                a->off = 0;
        }
}

/*
 * Phase 1 of a dead slot's recovery (before the allocator's): drop its reader
 * state and views, settle its journalled store in the index, and say which
 * block stays published. Phase 2 (cache_recover_finish) frees what must be.
 */
uint64_t cache_recover_slot(struct cache *k, struct al_heap *dead, uint32_t slot,
                            uint64_t *ret_free)
{
        struct cache_slot *cs = cache_slot_of(k, slot);
        struct cache_thr t = {
                .k = k, .heap = dead, .cs = cs, .slot = slot, .gen = dead->gen,
                .tag = olock_tag(slot, dead->gen),
        };
        uint64_t published = 0;

        *ret_free = 0;
        atomic_store_explicit(&cs->epoch, 0, memory_order_release);
        for (unsigned v = 0; v < CACHE_VIEWS; v++)
                atomic_store_explicit(&cs->views[v], 0, memory_order_release);
        atomic_store_explicit(&cs->nviews, 0, memory_order_release);
        dedup_ring(cs);
        switch (atomic_load_explicit(&cs->jop, memory_order_acquire)) {
        case CJ_STORE:
                published = resolve_store(&t, ret_free);
                break;
        case CJ_INTERN:
                published = resolve_intern(&t, ret_free);
                break;
        default:
                break;
        }
        return published;
}

void cache_recover_finish(struct cache *k, struct al_heap *dead, uint32_t slot, uint64_t unpub)
{
        struct cache_slot *cs = cache_slot_of(k, slot);
        struct cache_thr t = {
                .k = k, .heap = dead, .cs = cs, .slot = slot, .gen = dead->gen,
                .tag = olock_tag(slot, dead->gen),
        };

        /* Blocks the allocator's recovery has freed already carry another stamp now. */
        uint64_t jf = atomic_load_explicit(&cs->jfree, memory_order_acquire);
        if (jf) {
                for (unsigned i = 0; i < CACHE_RING; i++)
                        if (cs->ring[i].off == jf)
                                cs->ring[i].off = 0;
                if (al_stamp(k->al, jf) == cs->jfree_stamp)
                        al_free(dead, jf);
                atomic_store(&cs->jfree, 0);
        }
        if (unpub && al_stamp(k->al, unpub) == cs->jstamp)
                al_free(dead, unpub);
        al_commit(dead);
        atomic_store_explicit(&cs->jop, CJ_NONE, memory_order_release);
        /*
         * What readers allow now, without waiting (the slot's lock byte is
         * held meanwhile); the rest is an orphan ring (cache_adopt_orphans).
         */
        cache_reclaim(&t, 0);
        al_commit(dead);
}
