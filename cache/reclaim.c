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
        while (h - atomic_load_explicit(&cs->rtail, memory_order_relaxed) >= CACHE_RING)
                cache_reclaim(t, 1000);
        cs->ring[h % CACHE_RING].off = off;
        cs->ring[h % CACHE_RING].epoch = r;
        atomic_store_explicit(&cs->rhead, h + 1, memory_order_release);
        return 0;
}

/* The oldest epoch a reader holds, and which slot holds it. UINT64_MAX: none. */
static uint64_t min_epoch(struct cache *k, uint32_t *ret_slot)
{
        uint32_t hw = atomic_load_explicit(&k->hdr->slots_hw, memory_order_acquire);
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

static bool views_active(struct cache *k)
{
        uint32_t hw = atomic_load_explicit(&k->hdr->slots_hw, memory_order_acquire);

        for (uint32_t s = 0; s < hw; s++)
                if (atomic_load_explicit(&cache_slot_of(k, s)->nviews, memory_order_acquire))
                        return true;
        return false;
}

bool cache_pinned(struct cache *k, uint64_t off)
{
        uint32_t hw = atomic_load_explicit(&k->hdr->slots_hw, memory_order_acquire);

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

static void pause_us(unsigned us)
{
        struct timespec ts = { 0, (long)us * 1000 };

        nanosleep(&ts, NULL);
}

static uint64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int cache_reclaim(struct cache_thr *t, unsigned wait_ms)
{
        struct cache *k = t->k;
        struct cache_slot *cs = t->cs;
        uint64_t deadline = wait_ms ? now_ms() + wait_ms : 0;
        int freed = 0;

        for (unsigned round = 0;; round++) {
                uint32_t blocker = UINT32_MAX;
                uint64_t min = min_epoch(k, &blocker);
                bool pins = views_active(k), blocked = false;
                uint32_t head = atomic_load_explicit(&cs->rhead, memory_order_relaxed);
                uint32_t tail = atomic_load_explicit(&cs->rtail, memory_order_relaxed);

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
                if (!blocked || !wait_ms || now_ms() >= deadline)
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

/* ---- recovery of a dead slot --------------------------------------------- */

static _Atomic uint64_t *entry_at(struct cache *k, uint64_t off)
{
        uint64_t lo = k->hdr->index_off, hi = lo + k->hdr->nbuckets * sizeof(struct bucket);
        uint64_t ilo = k->hdr->intern_off, ihi = ilo + (uint64_t)k->hdr->intern_cap * 8;

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

/* Decide the dead slot's journalled store. Returns the new block if it stays published. */
static uint64_t resolve_store(struct cache_thr *t)
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
        if (n && !pub && al_stamp(k->al, n) == cs->jstamp)
                al_free(t->heap, n);
        return pub ? n : 0;
}

static uint64_t resolve_intern(struct cache_thr *t)
{
        struct cache_slot *cs = t->cs;
        _Atomic uint64_t *e = cs->jentry ? entry_at(t->k, cs->jentry) : NULL;
        uint64_t n = cs->jnew;

        if (!n)
                return 0;
        if (e && ent_off(atomic_load(e)) == n)
                return n;
        if (al_stamp(t->k->al, n) == cs->jstamp)
                al_free(t->heap, n);
        return 0;
}

uint64_t cache_recover_slot(struct cache *k, struct al_heap *dead, uint32_t slot)
{
        struct cache_slot *cs = cache_slot_of(k, slot);
        struct cache_thr t = {
                .k = k, .heap = dead, .cs = cs, .slot = slot, .gen = dead->gen,
                .tag = olock_tag(slot, dead->gen),
        };
        uint64_t published = 0;

        atomic_store_explicit(&cs->epoch, 0, memory_order_release);
        for (unsigned v = 0; v < CACHE_VIEWS; v++)
                atomic_store_explicit(&cs->views[v], 0, memory_order_release);
        atomic_store_explicit(&cs->nviews, 0, memory_order_release);

        uint64_t jf = atomic_load_explicit(&cs->jfree, memory_order_acquire);
        if (jf) {
                if (al_stamp(k->al, jf) == cs->jfree_stamp) {
                        for (unsigned i = 0; i < CACHE_RING; i++)
                                if (cs->ring[i].off == jf)
                                        cs->ring[i].off = 0;
                        al_free(dead, jf);
                }
                atomic_store(&cs->jfree, 0);
        }
        switch (atomic_load_explicit(&cs->jop, memory_order_acquire)) {
        case CJ_STORE:
                published = resolve_store(&t);
                break;
        case CJ_INTERN:
                published = resolve_intern(&t);
                break;
        default:
                break;
        }
        atomic_store_explicit(&cs->jop, CJ_NONE, memory_order_release);
        /* What readers allow now; the rest waits for the slot's next owner. */
        cache_reclaim(&t, 20);
        return published;
}
