/*
 * cache/write.c: the write protocol (docs/cache-design.md 3).
 *
 * An entry holding item O changes only at the hands of the writer that
 * claimed O (CAS of O->owner from 0 to its tag), so the claim, not the entry
 * store, decides who unlinks O and must retire it; the store that follows
 * cannot fail. A new key goes into an empty entry by CAS under the insert
 * lock of its first bucket, which serializes inserts of one key and so rules
 * out duplicates. The slot's journal names the entry, the old and the new
 * item before the claim, which lets recovery decide.
 *
 * An item is claimed only while the writer's hazard pointer protects it (it
 * was found by cache_lookup, or protected by the caller), so a claim never
 * lands on a block that was freed and reused meanwhile.
 *
 * Nothing here waits on another client for long (shm/wait.h): a claim held
 * by a stopped writer, or an insert lock, makes the write -EAGAIN; a claim
 * held by a dead one is recovered.
 */
#include "cache/cache.h"
#include "shm/wait.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <string.h>
#include <time.h>

static void journal_set(struct cache_slot *cs, uint64_t entry, uint64_t old)
{
        cs->jentry = entry;
        cs->jold = old;
        atomic_thread_fence(memory_order_release);
}

static void journal_done(struct cache_thr *t)
{
        al_commit(t->heap);
        atomic_store_explicit(&t->cs->jop, CJ_NONE, memory_order_release);
}

/*
 * A claim failed: someone else is unlinking `it` (which our hazard pointer
 * protects). A running claimer finishes in nanoseconds; a dead one is
 * recovered, which finishes or undoes its operation; a stopped one is not
 * waited for (-EAGAIN). A claim that names no client and stays was scribbled
 * on (STOA_E_CORRUPT). 0: look again.
 */
static int claim_wait(struct cache_thr *t, struct item *it, struct waiter *w)
{
        struct seg *s = t->k->s;
        uint64_t tag = atomic_load_explicit(&it->owner, memory_order_acquire);
        uint32_t slot = (uint32_t)(tag >> 32) - 1;
        bool a_slot = (tag >> 32) && slot < slots_count(s);
        int r;

        if (!tag)
                return 0;
        r = a_slot ? waiter_step(s, w, tag) : 1;
        if (r <= 0)
                return r;
        /* Dead: recover it, or wait (boundedly) for whoever is recovering it. */
        if (a_slot && (r = slot_recover_dead(s, slot)) != 0)
                return r < 0 ? r : 0;
        if (a_slot) {
                /*
                 * Someone holds the dead slot's byte: a recovery under the slot's
                 * current generation. Wait for it as for any holder: a stopped
                 * recoverer is given up on at once.
                 */
                uint32_t g = atomic_load_explicit(&slot_hdr(s, slot)->gen, memory_order_acquire);
                waiter_look_first(&t->rwait, olock_tag(slot, g));
                r = waiter_step(s, &t->rwait, olock_tag(slot, g));
                if (r < 0)
                        return r;
        }
        uint64_t now = wait_now_ns();
        if (!w->deadline)
                w->deadline = now + WAIT_UNKNOWN_NS;
        if (now >= w->deadline) {
                if (!a_slot) {
                        seg_set_errdetail("item %#llx is claimed by %#llx, which is no client: corrupt",
                                          (unsigned long long)seg_off(s, it), (unsigned long long)tag);
                        return STOA_E_CORRUPT;
                }
                seg_set_errdetail("item %#llx stays claimed by dead client slot %u, whose recovery "
                                  "does not finish (a stopped client holds what it needs)",
                                  (unsigned long long)seg_off(s, it), slot);
                return -EAGAIN;
        }
        struct timespec ts = { 0, 30000 };
        nanosleep(&ts, NULL);
        return 0;
}

/* Claim `it` for unlinking. 0, or -EAGAIN if someone else holds it. */
static int claim(struct cache_thr *t, struct item *it)
{
        uint64_t zero = 0;

        return atomic_compare_exchange_strong(&it->owner, &zero, t->tag) ? 0 : -EAGAIN;
}

/*
 * Journal and claim the item `it` (at `off`, protected) that `entry` holds.
 * 0: claimed, still linked there. -EAGAIN: someone else holds the claim.
 * 1: the entry moved on between our load and our claim (claim given back).
 */
static int claim_entry(struct cache_thr *t, _Atomic uint64_t *entry, struct item *it,
                       uint64_t off)
{
        journal_set(t->cs, seg_off(t->k->s, (void *)entry), off);
        if (claim(t, it) < 0)
                return -EAGAIN;
        if (ent_off(atomic_load_explicit(entry, memory_order_acquire)) != off) {
                atomic_store_explicit(&it->owner, 0, memory_order_release);
                return 1;
        }
        return 0;
}

/* Replace a claimed item's entry with `word` (0 deletes). The claim makes it certain. */
static void replace_claimed(_Atomic uint64_t *entry, uint64_t word)
{
        atomic_store_explicit(entry, word, memory_order_seq_cst);
}

int cache_unlink(struct cache_thr *t, _Atomic uint64_t *entry, struct item *it)
{
        struct cache_slot *cs = t->cs;
        uint64_t off = seg_off(t->k->s, it);

        cs->jnew = 0;
        cs->jstamp = 0;
        atomic_store_explicit(&cs->jop, CJ_STORE, memory_order_release);
        if (claim_entry(t, entry, it, off) != 0) {
                atomic_store_explicit(&cs->jop, CJ_NONE, memory_order_release);
                return -EAGAIN;
        }
        replace_claimed(entry, 0);
        cache_retire(t, off);
        atomic_store_explicit(&cs->jop, CJ_NONE, memory_order_release);
        return 0;
}

/* Fill a new item. */
static void item_fill(struct cache_thr *t, struct item *it, const struct cache_wr *w)
{
        atomic_store_explicit(&it->owner, 0, memory_order_relaxed);
        it->expire = w->expire;
        it->vlen = (uint32_t)w->vlen;
        it->klen = (uint16_t)w->klen & 0x1fffu;
        it->codec = ITEM_PLAIN;
        it->dict = 0;
        it->ns = (uint8_t)nskey_idx(w->ns);
        atomic_store_explicit(&it->freq, 0, memory_order_relaxed);
        it->nsgen = nskey_gen(w->ns) & NSGEN_MASK;
        memcpy(it->data, w->key, w->klen);
        if (w->vlen)
                memcpy(it->data + w->klen, w->val, w->vlen);
}

/*
 * The entry with the coldest item of two full buckets: a lossy-index victim.
 * The items are only scored here, unprotected (a freed one scores garbage,
 * harmlessly); the caller protects the one it picks before claiming it.
 */
static _Atomic uint64_t *pick_victim(struct cache *k, uint64_t b0, uint64_t b1, uint32_t now,
                                     uint64_t *ret_word)
{
        _Atomic uint64_t *best = NULL;
        int best_score = 1 << 30;

        for (int i = 0; i < 2; i++) {
                struct bucket *bk = &k->index[i ? b1 : b0];
                for (unsigned w = 0; w < CACHE_WAYS; w++) {
                        uint64_t e = atomic_load_explicit(&bk->e[w], memory_order_acquire);
                        struct item *it = e ? cache_item(k, ent_off(e)) : NULL;
                        if (!it || atomic_load_explicit(&it->owner, memory_order_relaxed))
                                continue;
                        int score = cache_expired(it, now) || cache_ns_stale(k, it) ? -1 :
                                    atomic_load_explicit(&it->freq, memory_order_relaxed);
                        if (score < best_score) {
                                best_score = score;
                                best = &bk->e[w];
                                *ret_word = e;
                        }
                }
        }
        return best;
}

#define ROOM_TRIES 3u  /* searches for room by displacement one insert may make */

/*
 * Insert a key absent from the index, under its first bucket's insert lock.
 * Returns 1 done, 0 look again (the key appeared meanwhile, or every victim
 * was busy), -EAGAIN (the lock is held by a stopped client), <0 error.
 */
static int insert_new(struct cache_thr *t, struct cache_wr *w, uint64_t hash, uint64_t noff,
                      uint32_t now)
{
        struct cache *k = t->k;
        struct cache_slot *cs = t->cs;
        uint64_t b0, b1, word = ent_make(hash, noff);
        struct item *old;
        bool broken;
        int r, done = 0;

        cache_buckets(k, hash, &b0, &b1);
        r = olock_acquire(k->s, &k->index[b0].lock, t->slot, t->gen, &broken);
        if (r < 0)
                return r;
        if (cache_lookup(t, w->ns, w->key, w->klen, hash, &old))
                goto out;
        /*
         * A new key enters the small queue (evict.c), unless it was evicted
         * lately and is wanted again: then it goes straight to the hand's care,
         * as S3-FIFO sends a ghost's key to its main queue. Only here, where
         * the key is known to be new: the ghost table is one more cache miss,
         * which updates of present keys need not pay.
         */
        struct item *n = (struct item *)(k->s->base + noff);
        bool small = !cache_ghost_hit(k, hash);
        atomic_store_explicit(&n->freq, small ? FREQ_SMALL : 0, memory_order_relaxed);
        /* A free way of the two buckets; when both are full, entries moved on make one. */
        for (unsigned tries = 0; !done && tries < ROOM_TRIES; tries++) {
                for (int i = 0; i < 2 && !done; i++) {
                        struct bucket *bk = &k->index[i ? b1 : b0];
                        for (unsigned x = 0; x < CACHE_WAYS && !done; x++) {
                                uint64_t zero = 0;
                                if (atomic_load_explicit(&bk->e[x], memory_order_relaxed))
                                        continue;
                                journal_set(cs, seg_off(k->s, &bk->e[x]), 0);
                                if (atomic_compare_exchange_strong(&bk->e[x], &zero, word))
                                        done = 1;
                        }
                }
                if (!done && !cache_make_room(t, b0, b1))
                        break;
        }
        if (done && small)
                cache_small_push(k, noff, cs->jstamp);
        /* No path either: the coldest entry makes room (MICA's lossy index), a conflict. */
        for (unsigned tries = 0; !done && tries < 16; tries++) {
                uint64_t ve = 0;
                _Atomic uint64_t *e = pick_victim(k, b0, b1, now, &ve);
                if (!e)
                        break;
                struct item *v = cache_item(k, ent_off(ve));
                if (!v || !cache_protect(t, e, ve))
                        continue;
                uint64_t voff = ent_off(ve);
                if (claim_entry(t, e, v, voff) != 0)
                        continue;
                bool expired = cache_expired(v, now) || cache_ns_stale(k, v);
                unsigned vns = v->ns < CACHE_NS_MAX ? v->ns : 0;
                if (!expired)
                        cache_ghost_put(k, cache_hash(k, item_nskey(v), v->data, v->klen));
                if (small)
                        cache_small_push(k, noff, cs->jstamp);
                replace_claimed(e, word);
                cache_unprotect(t);
                cache_retire(t, voff);
                if (expired)
                        cache_count_removal(t, vns, true);
                else
                        cache_count_conflict(t, vns);
                olock_release(&k->index[b0].lock);
                return 1;
        }
out:
        cache_unprotect(t);
        olock_release(&k->index[b0].lock);
        return done;
}

/*
 * The block `noff` was allocated for a write that did not happen: free it, or,
 * if its free must wait (a page run whose arena a stopped client locks),
 * retire it, so that it is freed with the retired blocks.
 */
static void drop_unpublished(struct cache_thr *t, uint64_t noff)
{
        if (al_free(t->heap, noff) == -EAGAIN)
                cache_retire(t, noff);
        al_commit(t->heap);
        atomic_store_explicit(&t->cs->jop, CJ_NONE, memory_order_release);
}

/* Room in the retire ring for what a write may retire. 0 or -EAGAIN. */
static int ring_room(struct cache_thr *t)
{
        if (!cache_ring_short(t->cs))
                return 0;
        cache_reclaim(t);
        if (!cache_ring_short(t->cs))
                return 0;
        seg_set_errdetail("%u retired blocks are held by readers' views or hazard pointers",
                          cache_ring_used(t->cs));
        return -EAGAIN;
}

/* Now and then, and whenever the ring fills up, free what readers allow. */
static void after_write(struct cache_thr *t)
{
        if (++t->since_reclaim >= 32 || cache_ring_used(t->cs) >= CACHE_RING / 4) {
                t->since_reclaim = 0;
                cache_reclaim(t);
        }
}

int cache_store(struct cache_thr *t, struct cache_wr *w)
{
        struct cache *k = t->k;
        struct cache_slot *cs = t->cs;
        uint64_t hash = cache_hash(k, w->ns, w->key, w->klen), noff;
        size_t bytes = sizeof(struct item) + w->klen + w->vlen;
        uint32_t now = cache_now(k);
        struct waiter wt = WAITER_INIT;
        unsigned busy = 0;
        int r;

        if ((r = ring_room(t)) < 0)
                return r;
        /* Start loading the key's bucket; the allocation and the copy overlap the miss. */
        __builtin_prefetch(&k->index[cache_bucket0(k, hash)], 1);
        r = cache_alloc(t, bytes, &noff);
        if (r < 0)
                return r;
        struct item *n = (struct item *)(k->s->base + noff);
        item_fill(t, n, w);
        cs->jnew = noff;
        cs->jstamp = al_stamp(k->al, noff);
        journal_set(cs, 0, 0);
        atomic_store_explicit(&cs->jop, CJ_STORE, memory_order_release);

        for (;;) {
                struct item *old;
                _Atomic uint64_t *e = cache_lookup(t, w->ns, w->key, w->klen, hash, &old);
                if (e) {
                        bool live = !cache_expired(old, now);
                        r = 0;
                        if (w->mode == CM_ADD && live)
                                r = -EEXIST;
                        else if ((w->mode == CM_REPLACE || w->mode == CM_CAS) && !live)
                                r = -ENOENT;
                        else if (w->mode == CM_CAS && cache_item_version(k, old) != w->expect)
                                r = -ESTALE;
                        if (r < 0) {
                                cache_unprotect(t);
                                break;
                        }
                        uint64_t ooff = seg_off(k->s, old);
                        int c = claim_entry(t, e, old, ooff);
                        if (c != 0) {
                                if (c < 0)
                                        r = claim_wait(t, old, &wt);
                                cache_unprotect(t);
                                if (r < 0)
                                        break;
                                continue;
                        }
                        /* An update is a hit of the key: the new item inherits its count, plus one. */
                        unsigned hits = atomic_load_explicit(&old->freq, memory_order_relaxed) & FREQ_HITS;
                        atomic_store_explicit(&n->freq, (uint8_t)(hits < FREQ_HITS ? hits + 1 : hits),
                                              memory_order_relaxed);
                        replace_claimed(e, ent_make(hash, noff));
                        cache_unprotect(t);
                        cache_retire(t, ooff);
                        if (!live)
                                cache_count_removal(t, nskey_idx(w->ns), true);
                        break;
                }
                if (w->mode == CM_REPLACE || w->mode == CM_CAS) {
                        r = -ENOENT;
                        break;
                }
                r = insert_new(t, w, hash, noff, now);
                if (r == 1) {
                        r = 0;
                        break;
                }
                if (r < 0)
                        break;
                if (++busy > 1000) {
                        /* Every candidate entry claimed, a thousand times over. */
                        seg_set_errdetail("the key's two index buckets stay busy with other writers");
                        r = -EAGAIN;
                        break;
                }
        }
        if (r < 0) {
                /* Not published: free it, then close the journal (recovery checks the stamp). */
                drop_unpublished(t, noff);
                return r;
        }
        w->ret_version = cs->jstamp;
        cache_count(t, nskey_idx(w->ns), CNT_SETS);
        journal_done(t);
        after_write(t);
        return 0;
}

int cache_delete(struct cache_thr *t, uint64_t ns, const void *key, size_t klen)
{
        struct cache *k = t->k;
        uint64_t hash = cache_hash(k, ns, key, klen);
        uint32_t now = cache_now(k);
        struct waiter wt = WAITER_INIT;
        int r;

        if ((r = ring_room(t)) < 0)
                return r;
        for (;;) {
                struct item *it;
                _Atomic uint64_t *e = cache_lookup(t, ns, key, klen, hash, &it);
                if (!e)
                        return -ENOENT;
                bool live = !cache_expired(it, now);
                r = cache_unlink(t, e, it);
                if (r == -EAGAIN) {
                        r = claim_wait(t, it, &wt);
                        cache_unprotect(t);
                        if (r < 0)
                                return r;
                        continue;
                }
                cache_unprotect(t);
                if (r == 0 && !live)
                        cache_count_removal(t, nskey_idx(ns), true);
                if (r == 0 && live)
                        cache_count(t, nskey_idx(ns), CNT_DELS);
                after_write(t);
                return r < 0 ? r : live ? 0 : -ENOENT;
        }
}

int cache_delete_expired(struct cache_thr *t, uint64_t ns, const void *key, size_t klen)
{
        struct cache *k = t->k;
        uint64_t hash = cache_hash(k, ns, key, klen);
        struct item *it;
        int r = 0;

        if (cache_ring_short(t->cs))
                return 0;               /* a later sweep will do it */
        _Atomic uint64_t *e = cache_lookup(t, ns, key, klen, hash, &it);
        if (e && cache_expired(it, cache_now(k)) && cache_unlink(t, e, it) == 0) {
                cache_count_removal(t, nskey_idx(ns), true);
                r = 1;
        }
        cache_unprotect(t);
        return r;
}
