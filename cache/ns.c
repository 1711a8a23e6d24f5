/*
 * cache/ns.c: namespaces: created by a first write, dropped, and the whole
 * segment flushed in place (docs/cache-design.md 7).
 *
 * A namespace is an index i in cache_hdr.ns[] whose word holds gen:32 | id:32,
 * the interned name and the index's generation. Every item carries the index
 * and generation it was written under, and both go into its key's hash and
 * identity. So a drop is one store (the word moves to gen+1 with no name):
 * from then on no lookup can match the dropped items, whatever index they
 * name, and the index is free for a new name at once. The items themselves
 * are stale garbage in the index until a reap (the drop's own walk of the
 * index, a redo of it, stoad's sweep, or the eviction hands, which take
 * stale items first) unlinks and retires them through the usual claim,
 * journal and ring, so reclamation and recovery are the write path's.
 *
 * Changes of the table are rare and serialized by ns_lock; readers take no
 * lock. The tricky part is telling handles: each caches what its name
 * resolved to, with the ns_epoch it read before resolving; every change bumps
 * the epoch after the word, so a handle that sees its epoch unchanged may
 * use what it has (a call racing a drop is ordered before it), and one that
 * sees it moved resolves again. A changer killed between the word and the
 * epoch leaves CJ_NS in its journal; its recovery (or the next taker of the
 * lock, which finds it broken) bumps the epoch for it.
 */
#include "cache/cache.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <string.h>

bool cache_ns_stale(const struct cache *k, const struct item *it)
{
        uint32_t idx = it->ns;

        if (idx == 0)
                return it->nsgen != 0;
        if (idx >= CACHE_NS_MAX)
                return true;
        uint64_t w = atomic_load_explicit(&k->hdr->ns[idx], memory_order_acquire);
        return NSW_ID(w) == 0 || NSW_GEN(w) != it->nsgen;
}

bool cache_ns_reap_owed(const struct cache *k)
{
        return atomic_load_explicit(&k->hdr->ns_swept, memory_order_acquire) !=
               atomic_load_explicit(&k->hdr->ns_dropped, memory_order_acquire);
}

void cache_ns_recover(struct cache *k)
{
        /* The dead changer may have stored its word: make every handle look again. */
        atomic_fetch_add_explicit(&k->hdr->ns_dropped, 1, memory_order_seq_cst);
        atomic_fetch_add_explicit(&k->hdr->ns_epoch, 1, memory_order_seq_cst);
}

int cache_ns_find(struct cache *k, uint32_t name_id, uint64_t *ret_nskey)
{
        if (!name_id)
                return -ENOENT;
        for (uint32_t i = 1; i < CACHE_NS_MAX; i++) {
                uint64_t w = atomic_load_explicit(&k->hdr->ns[i], memory_order_acquire);
                if (NSW_ID(w) == name_id) {
                        *ret_nskey = cache_nskey(i, NSW_GEN(w));
                        return 0;
                }
        }
        return -ENOENT;
}

/* Take the table's lock and open the journal. A dead holder's change is settled first. */
static int ns_lock(struct cache_thr *t)
{
        struct cache *k = t->k;
        struct cache_slot *cs = t->cs;
        bool broken = false;
        int r = olock_acquire(k->s, &k->hdr->ns_lock, t->slot, t->gen, &broken);

        if (r < 0)
                return r;
        if (broken)
                cache_ns_recover(k);
        cs->jentry = 0;
        cs->jold = 0;
        cs->jnew = 0;
        cs->jstamp = 0;
        atomic_store_explicit(&cs->jop, CJ_NS, memory_order_release);
        return 0;
}

/* Publish a change (the epoch after the word), close the journal, let go. */
static void ns_unlock(struct cache_thr *t, bool changed)
{
        if (changed)
                atomic_fetch_add_explicit(&t->k->hdr->ns_epoch, 1, memory_order_seq_cst);
        atomic_store_explicit(&t->cs->jop, CJ_NONE, memory_order_release);
        olock_release(&t->k->hdr->ns_lock);
}

int cache_ns_create(struct cache_thr *t, const char *name, size_t len, uint64_t *ret_nskey)
{
        struct cache_hdr *h = t->k->hdr;
        uint32_t id;
        int r;

        /* Interned first (its own journal): a name, once interned, keeps its id. */
        if ((r = cache_intern(t, name, len, &id)) < 0)
                return r;
        if ((r = ns_lock(t)) < 0)
                return r;
        /* Under the lock no other index can take the name meanwhile: never two. */
        if (cache_ns_find(t->k, id, ret_nskey) == 0) {
                ns_unlock(t, false);
                return 0;
        }
        r = -ENOSPC;
        for (uint32_t i = 1; i < CACHE_NS_MAX; i++) {
                uint64_t w = atomic_load_explicit(&h->ns[i], memory_order_acquire);
                if (NSW_ID(w) != 0)
                        continue;
                /* The index keeps its generation: what a drop left there stays stale. */
                atomic_store_explicit(&h->ns[i], (uint64_t)NSW_GEN(w) << 32 | id,
                                      memory_order_seq_cst);
                *ret_nskey = cache_nskey(i, NSW_GEN(w));
                r = 0;
                break;
        }
        ns_unlock(t, r == 0);
        return r;
}

int cache_ns_drop(struct cache_thr *t, const char *name, size_t len)
{
        struct cache *k = t->k;
        uint32_t id = 0;
        uint64_t nk;
        int r;

        r = cache_intern_find(k, name, len, &id);
        if (r == 0) {
                if ((r = ns_lock(t)) < 0)
                        return r;
                r = cache_ns_find(k, id, &nk);
                if (r == 0) {
                        /* Owed before the word moves: a crash in between owes one too many. */
                        atomic_fetch_add_explicit(&k->hdr->ns_dropped, 1, memory_order_seq_cst);
                        atomic_store_explicit(&k->hdr->ns[nskey_idx(nk)],
                                              (uint64_t)nsgen_next(nskey_gen(nk)) << 32,
                                              memory_order_seq_cst);
                }
                ns_unlock(t, r == 0);
        }
        /* Its items (and those of any drop cut short) are unreachable: give their memory back. */
        if (cache_ns_reap_owed(k))
                cache_ns_reap(t, false);        /* -EAGAIN: stoad's sweep finishes it */
        return r;
}

int cache_flush(struct cache_thr *t)
{
        struct cache_hdr *h = t->k->hdr;
        int r;

        if ((r = ns_lock(t)) < 0)
                return r;
        atomic_fetch_add_explicit(&h->ns_dropped, 1, memory_order_seq_cst);
        for (uint32_t i = 1; i < CACHE_NS_MAX; i++) {
                uint64_t w = atomic_load_explicit(&h->ns[i], memory_order_acquire);
                if (NSW_ID(w))
                        atomic_store_explicit(&h->ns[i], (uint64_t)nsgen_next(NSW_GEN(w)) << 32 | NSW_ID(w),
                                              memory_order_seq_cst);
        }
        ns_unlock(t, true);
        /* Named namespaces are empty now; the default one empties as the walk passes. */
        return cache_ns_reap(t, true);
}

/* Unlink one entry's item if it is to go. -EAGAIN: the ring is held full by readers. */
static int reap_entry(struct cache_thr *t, _Atomic uint64_t *ent, bool all)
{
        struct cache *k = t->k;
        uint64_t e = atomic_load_explicit(ent, memory_order_acquire);
        struct item *it = e ? cache_item(k, ent_off(e)) : NULL;

        /* Unprotected first (most stay), then protected to act. */
        if (!it || (!all && !cache_ns_stale(k, it)))
                return 0;
        if (cache_ring_short(t->cs)) {
                cache_reclaim(t);
                if (cache_ring_short(t->cs))
                        return -EAGAIN;
        }
        if (!cache_protect(t, ent, e))
                return 0;               /* rewritten meanwhile: a write after ours began */
        if (all || cache_ns_stale(k, it))
                cache_unlink(t, ent, it);       /* -EAGAIN: another is unlinking it */
        return 0;
}

int cache_ns_reap(struct cache_thr *t, bool all)
{
        struct cache *k = t->k;
        uint64_t d = atomic_load_explicit(&k->hdr->ns_dropped, memory_order_acquire);
        int r = 0;

        for (uint64_t b = 0; b < k->nbuckets && r == 0; b++)
                for (unsigned w = 0; w < CACHE_WAYS && r == 0; w++)
                        r = reap_entry(t, &k->index[b].e[w], all);
        cache_unprotect(t);
        cache_reclaim(t);
        if (r < 0) {
                seg_set_errdetail("%u retired blocks are held by readers' views or hazard pointers",
                                  cache_ring_used(t->cs));
                return r;
        }
        /* Every item stale when the walk began is gone: no reap is owed for those drops. */
        uint64_t s = atomic_load_explicit(&k->hdr->ns_swept, memory_order_acquire);
        while ((int64_t)(d - s) > 0 &&
               !atomic_compare_exchange_weak(&k->hdr->ns_swept, &s, d))
                ;
        return 0;
}
