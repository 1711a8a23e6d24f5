/*
 * cache/reclaim.c: reclamation of unlinked items across processes (hazard
 * pointers and views), and the recovery of a dead slot's cache state
 * (docs/cache-design.md 4 and 8).
 *
 * A reader publishes the offset of the item it is about to read in its slot
 * and then checks that the index still points at it (cache_protect); a view
 * keeps an item's offset in its slot's view table for as long as it is held.
 * A writer unlinks an item (an entry store) before it retires it into its
 * slot's ring, and the ring is reclaimed by reading every slot's hazard
 * pointer and views after that: a cell that none names is freed. A reader
 * that passed its check before the unlink is seen by the reclaimer (the
 * check and the scan are two halves of a Dekker pair, each side a full
 * barrier); one that checks after it sees the unlink and looks again.
 *
 * So a reader never waits, and a reader that stops (SIGSTOP, a frozen
 * container, a debugger) or dies in the middle of a read holds back the one
 * item it was reading: nothing else. A dead slot's pointer and views are
 * cleared when it is recovered.
 */
#include "cache/cache.h"
#include "shm/testpoint.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

uint32_t cache_ring_used(const struct cache_slot *cs)
{
        return atomic_load_explicit(&cs->rhead, memory_order_acquire) -
               atomic_load_explicit(&cs->rtail, memory_order_acquire);
}

int cache_retire(struct cache_thr *t, uint64_t off)
{
        struct cache_slot *cs = t->cs;
        uint32_t h = atomic_load_explicit(&cs->rhead, memory_order_relaxed);

        /* Callers leave room before they unlink (ring_room); never overwrite. */
        if (h - atomic_load_explicit(&cs->rtail, memory_order_relaxed) >= CACHE_RING) {
                cache_reclaim(t);
                if (h - atomic_load_explicit(&cs->rtail, memory_order_relaxed) >= CACHE_RING)
                        return -EAGAIN; /* only a scribbled ring gets here: the block leaks */
        }
        cs->ring[h % CACHE_RING].stamp = al_stamp(t->k->al, off);
        cs->ring[h % CACHE_RING].off = off;
        atomic_store_explicit(&cs->rhead, h + 1, memory_order_release);
        return 0;
}

/* ---- who reads what ------------------------------------------------------ */

/*
 * The blocks that readers hold: every slot's hazard pointer, then every view.
 * Pointers before views: a reader that turns its protection into a view
 * stores the view, then clears the pointer (release); a pointer read as
 * cleared therefore shows the view. NULL (fall back to cache_pinned per
 * cell) if there are more than fit.
 */
struct pins {
        uint64_t v[512];
        unsigned n;
        bool overflow;
};

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

        return x < y ? -1 : x > y;
}

static void pins_collect(struct cache *k, struct pins *p, bool views)
{
        uint32_t hw = cache_slots_hw(k);

        p->n = 0;
        p->overflow = false;
        atomic_thread_fence(memory_order_seq_cst);
        for (uint32_t s = 0; s < hw; s++) {
                uint64_t v = atomic_load_explicit(&cache_slot_of(k, s)->hp, memory_order_seq_cst);
                if (v && p->n < sizeof(p->v) / 8)
                        p->v[p->n++] = v;
                else if (v)
                        p->overflow = true;
        }
        for (uint32_t s = 0; s < hw && views; s++) {
                struct cache_slot *cs = cache_slot_of(k, s);
                if (!atomic_load_explicit(&cs->nviews, memory_order_acquire))
                        continue;
                for (unsigned i = 0; i < CACHE_VIEWS; i++) {
                        uint64_t v = atomic_load_explicit(&cs->views[i], memory_order_acquire);
                        if (v && p->n < sizeof(p->v) / 8)
                                p->v[p->n++] = v;
                        else if (v)
                                p->overflow = true;
                }
        }
        qsort(p->v, p->n, sizeof(p->v[0]), cmp_u64);
}

static bool pins_has(struct cache *k, const struct pins *p, uint64_t off)
{
        if (p->overflow)
                return cache_pinned(k, off);
        return bsearch(&off, p->v, p->n, sizeof(p->v[0]), cmp_u64) != NULL;
}

static bool hp_names(struct cache *k, uint64_t off)
{
        uint32_t hw = cache_slots_hw(k);

        atomic_thread_fence(memory_order_seq_cst);
        for (uint32_t s = 0; s < hw; s++)
                if (atomic_load_explicit(&cache_slot_of(k, s)->hp, memory_order_seq_cst) == off)
                        return true;
        return false;
}

bool cache_pinned(struct cache *k, uint64_t off)
{
        uint32_t hw = cache_slots_hw(k);

        if (hp_names(k, off))
                return true;
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
 * Readers in the middle of a read (hazard pointers) hold back retired memory:
 * an allocation that finds nothing else is -EAGAIN then (they will move on).
 * Views are held as long as their holders like: memory they pin is not free,
 * and an allocation that finds nothing else is -ENOMEM.
 */
bool cache_ring_blocked(struct cache_thr *t)
{
        struct pins *p = malloc(sizeof(*p));
        bool blocked = false;

        if (!p)
                return true;
        pins_collect(t->k, p, false);
        for (uint32_t s = 0; s < cache_slots_hw(t->k) && !blocked; s++) {
                struct cache_slot *cs = cache_slot_of(t->k, s);
                uint32_t head = atomic_load_explicit(&cs->rhead, memory_order_acquire);
                uint32_t tail = atomic_load_explicit(&cs->rtail, memory_order_acquire);
                if (head - tail > CACHE_RING)
                        continue;
                for (uint32_t i = tail; i != head && !blocked; i++) {
                        uint64_t off = cs->ring[i % CACHE_RING].off;
                        blocked = off && (p->overflow ? hp_names(t->k, off) :
                                          bsearch(&off, p->v, p->n, sizeof(p->v[0]), cmp_u64) != NULL);
                }
        }
        free(p);
        return blocked;
}

/* ---- freeing ------------------------------------------------------------- */

/*
 * Free one ring cell. jfree names the block first, so a recovery finds a
 * block whose cell was cleared but whose free did not happen (it frees it
 * only if the stamp is still the one journalled, so a free that did happen is
 * not repeated). False if the free must wait (a page run whose arena a
 * stopped client has locked): the cell stays.
 */
static bool free_cell(struct cache_thr *t, struct retired *rt)
{
        struct cache_slot *cs = t->cs;
        uint64_t off = rt->off, stamp = rt->stamp;

        cs->jfree_stamp = stamp;
        atomic_store_explicit(&cs->jfree, off, memory_order_release);
        rt->off = 0;
        int r = stamp ? al_free_stamped(t->heap, off, stamp) : al_free(t->heap, off);
        if (r == -EAGAIN)
                rt->off = off;
        atomic_store_explicit(&cs->jfree, 0, memory_order_release);
        return r != -EAGAIN;
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

int cache_reclaim(struct cache_thr *t)
{
        struct cache_slot *cs = t->cs;
        uint32_t head = atomic_load_explicit(&cs->rhead, memory_order_relaxed);
        uint32_t tail = atomic_load_explicit(&cs->rtail, memory_order_relaxed);
        struct pins p;
        int freed = 0;
        bool held = false;

        if (head == tail)
                return 0;
        if (head - tail > CACHE_RING) {         /* scribbled: drop rather than spin */
                atomic_store_explicit(&cs->rtail, head, memory_order_release);
                return 0;
        }
        pins_collect(t->k, &p, true);
        for (uint32_t i = tail; i != head; i++) {
                struct retired *rt = &cs->ring[i % CACHE_RING];
                if (!rt->off)
                        continue;
                if (pins_has(t->k, &p, rt->off) || !free_cell(t, rt)) {
                        held = true;    /* a reader has it: it stays, the others go */
                        continue;
                }
                freed++;
        }
        while (tail != head && !cs->ring[tail % CACHE_RING].off)
                tail++;
        atomic_store_explicit(&cs->rtail, tail, memory_order_release);
        if (held)
                move_pinned(t);
        return freed;
}

/* ---- views --------------------------------------------------------------- */

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

void cache_views_drop(struct cache_thr *t)
{
        struct cache_slot *cs = t->cs;

        for (unsigned v = 0; v < CACHE_VIEWS; v++)
                atomic_store_explicit(&cs->views[v], 0, memory_order_release);
        atomic_store_explicit(&cs->nviews, 0, memory_order_release);
}

/*
 * Rings of slots nobody holds: a client that left while a reader held its
 * retired blocks back left them there, and one that left while an arena was
 * locked left spans on its lists. Take each such slot for a moment (its lock
 * byte), free what readers allow now, hand its spans back, and give it back.
 * Returns blocks freed.
 */
static bool holds_spans(const struct al_slot *as)
{
        for (unsigned a = 0; a < AL_MAX_ARENAS; a++)
                for (unsigned c = 0; c < AL_NCLASSES; c++)
                        if (as->avail[a][c])
                                return true;
        return false;
}

int cache_adopt_orphans(struct cache *k)
{
        int freed = 0;

        for (uint32_t s = 0; s < cache_slots_hw(k); s++) {
                struct cache_slot *cs = cache_slot_of(k, s);
                uint32_t gen;
                if (atomic_load_explicit(&slot_hdr(k->s, s)->state, memory_order_acquire) != SLOT_FREE ||
                    (!cache_ring_used(cs) && !holds_spans(slot_ext(k->s, s))) ||
                    slot_claim_at(k->s, s, &gen) < 0)
                        continue;
                struct al_heap h;
                al_heap_init(&h, k->al, s, gen);
                struct cache_thr t = { .k = k, .heap = &h, .cs = cs, .slot = s, .gen = gen,
                                       .tag = olock_tag(s, gen) };
                cs->gen = gen;
                freed += cache_reclaim(&t);
                al_heap_abandon(&h);
                slot_release(k->s, s);
        }
        return freed;
}

int cache_recover_dead(struct cache *k)
{
        int n = 0;

        for (uint32_t s = 0; s < cache_slots_hw(k); s++) {
                if (atomic_load_explicit(&slot_hdr(k->s, s)->state, memory_order_acquire) != SLOT_LIVE ||
                    slot_is_alive(k->s, s) != 0)
                        continue;
                n += slot_recover_dead(k->s, s) == 1;
        }
        return n;
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

static bool ring_has(const struct cache_slot *cs, uint64_t off)
{
        uint32_t h = atomic_load_explicit(&cs->rhead, memory_order_relaxed);
        uint32_t tail = atomic_load_explicit(&cs->rtail, memory_order_relaxed);

        if (h - tail > CACHE_RING)
                return false;
        for (uint32_t i = tail; i != h; i++)
                if (cs->ring[i % CACHE_RING].off == off)
                        return true;
        return false;
}

/*
 * Decide the dead slot's journalled store, without touching the allocator
 * (whose own journal recovery must see first, or its record of the one
 * operation in flight would be overwritten). Returns the new block if it
 * stays published; *ret_free is set to a block that must be freed after.
 * Safe to redo: a claim undone is no longer ours; an old item retired is in
 * the ring, which is not reclaimed until the journal is closed.
 */
static uint64_t resolve_store(struct cache_thr *t, uint64_t *ret_free, bool apply)
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
                                if (apply)              /* claimed, not stored: undo */
                                        atomic_store(&oi->owner, 0);
                        } else {
                                pub = true;                     /* stored: O is ours to retire */
                                if (apply && !ring_has(cs, o))
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

static struct cache_thr dead_thr(struct cache *k, struct al_heap *dead, uint32_t slot)
{
        return (struct cache_thr){ .k = k, .heap = dead, .cs = cache_slot_of(k, slot), .slot = slot,
                                   .gen = dead->gen, .tag = olock_tag(slot, dead->gen) };
}

/*
 * Phase 1 of a dead slot's recovery (before the allocator's): drop its reader
 * state and views, settle its journalled store in the index, and say which
 * block stays published. Phase 2 (cache_recover_finish) frees what must be.
 */
uint64_t cache_recover_slot(struct cache *k, struct al_heap *dead, uint32_t slot,
                            uint64_t *ret_free)
{
        struct cache_thr t = dead_thr(k, dead, slot);
        struct cache_slot *cs = t.cs;
        uint64_t published = 0;

        *ret_free = 0;
        atomic_store_explicit(&cs->hp, 0, memory_order_release);
        cache_views_drop(&t);
        dedup_ring(cs);
        uint64_t moving = atomic_load_explicit(&cs->jmove, memory_order_acquire);
        if (moving) {
                /* Claims carry the owner's generation (cs->gen), as in resolve_store. */
                cache_move_recover(k, cs->jmove_src, moving, olock_tag(slot, cs->gen));
                atomic_store_explicit(&cs->jmove, 0, memory_order_release);
        }
        TEST_POINT("cache-decide");
        switch (atomic_load_explicit(&cs->jop, memory_order_acquire)) {
        case CJ_STORE:
                published = resolve_store(&t, ret_free, true);
                break;
        case CJ_INTERN:
                published = resolve_intern(&t, ret_free);
                break;
        case CJ_NS:
                cache_ns_recover(k);    /* a namespace change: handles must look again */
                break;
        default:
                break;
        }
        TEST_POINT("cache-resolved");
        return published;
}

uint64_t cache_recover_outlook(struct cache *k, uint32_t slot)
{
        struct al_heap none = { .ctx = k->al, .slot = slot };
        struct cache_thr t = dead_thr(k, &none, slot);
        uint64_t unpub = 0;

        switch (atomic_load_explicit(&t.cs->jop, memory_order_acquire)) {
        case CJ_STORE:
                return resolve_store(&t, &unpub, false);
        case CJ_INTERN:
                return resolve_intern(&t, &unpub);
        default:
                return 0;
        }
}

int cache_recover_finish(struct cache *k, struct al_heap *dead, uint32_t slot, uint64_t unpub)
{
        struct cache_thr t = dead_thr(k, dead, slot);
        struct cache_slot *cs = t.cs;

        /* Blocks the allocator's recovery has freed already carry another stamp now. */
        uint64_t jf = atomic_load_explicit(&cs->jfree, memory_order_acquire);
        if (jf) {
                if (al_free_stamped(dead, jf, cs->jfree_stamp) == -EAGAIN)
                        return -EAGAIN;
                for (unsigned i = 0; i < CACHE_RING; i++)
                        if (cs->ring[i].off == jf && cs->ring[i].stamp == cs->jfree_stamp)
                                cs->ring[i].off = 0;
                atomic_store(&cs->jfree, 0);
        }
        TEST_POINT("cache-jfree");
        if (unpub && al_free_stamped(dead, unpub, cs->jstamp) == -EAGAIN)
                return -EAGAIN;
        TEST_POINT("cache-unpublished");
        al_commit(dead);
        atomic_store_explicit(&cs->jop, CJ_NONE, memory_order_release);
        /*
         * What readers allow now (the slot's lock byte is held meanwhile); the
         * rest is an orphan ring (cache_adopt_orphans).
         */
        cache_reclaim(&t);
        al_commit(dead);
        return 0;
}
