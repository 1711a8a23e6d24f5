/*
 * cache/displace.c: making room in the index by moving entries to their
 * other bucket (cuckoo displacement; docs/cache-design.md 3, "Displacement").
 *
 * A key lives in one of its two buckets. When both of a new key's buckets
 * are full, a breadth-first search looks for a short path of moves that ends
 * in a bucket with a free way: an entry of one of the key's buckets moves to
 * its own other bucket, or makes room there first by moving one of that
 * bucket's entries on (libcuckoo's and rte_hash's search, MemC3's moves).
 * The moves are made last first, so each goes into a free way.
 *
 * One move of item X from entry S to a free way of bucket D:
 *   protect X (hazard pointer) and check S still holds it; journal the move
 *   (jmove_src = S, then jmove = X; apart from the write's own journal, which
 *   the insert that needs the room has open); claim X (its owner word, as a
 *   writer does, so that no writer or evictor unlinks it meanwhile); CAS a
 *   free way of D from 0 to S's word; bump the index's move count; clear S;
 *   give the claim back; close the journal.
 * Between the CAS and the clear, X is linked twice: a lookup finds either.
 *
 * Readers stay lock-free and do not miss a key that is there. A lookup scans
 * the key's first bucket, then its second; a move from the second to the
 * first between the two scans could hide the key from both. The move count
 * is bumped after the copy and before the clear, and a lookup that finds
 * nothing reads it before and after its scan and looks again while it
 * changes, up to 64 times (cache.c). Hits never look at it again.
 *
 * A mover that dies leaves X claimed by its slot, in S, in D, or in both;
 * recovery (cache_move_recover) clears S if X is also elsewhere and gives the
 * claim back. A mover that is stopped holds X's claim: writers of X's key
 * get -EAGAIN meanwhile (claim_wait), readers go on reading.
 */
#include "cache/cache.h"
#include "shm/testpoint.h"
#include "stoa/stoa.h"


#define DISPLACE_DEPTH  3u      /* moves a path may make */
#define DISPLACE_NODES  64u     /* entries the search may look at */

/* One step of a path: the entry at (bucket, way) holding `word` moves to `to`. */
struct step {
        uint64_t bucket, to, word;
        unsigned way;
        int parent;             /* the step that makes room for this one; -1: none */
        unsigned depth;
};

/*
 * The other bucket of the item an entry names, read unprotected (a block
 * freed meanwhile reads as garbage: checked against the entry's tag and
 * bucket, and checked again, protected, before any move).
 */
static bool other_bucket(struct cache *k, uint64_t word, uint64_t bucket, uint64_t *ret)
{
        struct item *it = cache_item(k, ent_off(word));
        uint64_t b0, b1;

        /* A claimed item is being unlinked or moved (perhaps by a client that died or stopped). */
        if (!it || it->klen > STOA_KEY_MAX || atomic_load_explicit(&it->owner, memory_order_relaxed))
                return false;
        uint64_t h = cache_hash(k, item_nskey(it), it->data, it->klen);
        if (ent_tag(h) != ent_tag(word))
                return false;
        cache_buckets(k, h, &b0, &b1);
        if (bucket != b0 && bucket != b1)
                return false;
        *ret = bucket == b0 ? b1 : b0;
        return true;
}

static bool has_free_way(const struct cache *k, uint64_t bucket)
{
        for (unsigned w = 0; w < CACHE_WAYS; w++)
                if (!atomic_load_explicit(&k->index[bucket].e[w], memory_order_relaxed))
                        return true;
        return false;
}

/* Queue the entries of `bucket` as steps of the search (as many as fit). */
static void enqueue(const struct cache *k, uint64_t bucket, int parent, unsigned depth,
                    struct step *st, unsigned *n)
{
        for (unsigned w = 0; w < CACHE_WAYS && *n < DISPLACE_NODES; w++) {
                uint64_t e = atomic_load_explicit(&k->index[bucket].e[w], memory_order_acquire);
                if (e)
                        st[(*n)++] = (struct step){ bucket, 0, e, w, parent, depth };
        }
}

/* Breadth-first search from buckets b0, b1. The step whose `to` has room, or -1. */
static int search(struct cache *k, uint64_t b0, uint64_t b1, struct step *st, unsigned *ret_n)
{
        unsigned n = 0, head = 0;

        enqueue(k, b0, -1, 1, st, &n);
        enqueue(k, b1, -1, 1, st, &n);
        for (; head < n; head++) {
                struct step *s = &st[head];
                if (!other_bucket(k, s->word, s->bucket, &s->to))
                        continue;
                if (has_free_way(k, s->to)) {
                        *ret_n = n;
                        return (int)head;
                }
                if (s->depth < DISPLACE_DEPTH)
                        enqueue(k, s->to, (int)head, s->depth + 1, st, &n);
        }
        *ret_n = n;
        return -1;
}

bool cache_move(struct cache_thr *t, uint64_t bucket, unsigned way, uint64_t word)
{
        struct cache *k = t->k;
        struct cache_slot *cs = t->cs;
        _Atomic uint64_t *src = &k->index[bucket].e[way];
        uint64_t to;
        bool moved = false;

        if (!cache_protect(t, src, word))
                goto out;
        struct item *it = cache_item(k, ent_off(word));
        if (!it || !other_bucket(k, word, bucket, &to))
                goto out;
        cs->jmove_src = seg_off(k->s, (void *)src);
        atomic_store_explicit(&cs->jmove, ent_off(word), memory_order_release);
        uint64_t zero = 0;
        if (!atomic_compare_exchange_strong(&it->owner, &zero, t->tag))
                goto done;              /* a writer or an evictor is unlinking it */
        if (atomic_load_explicit(src, memory_order_acquire) == word) {
                for (unsigned w = 0; w < CACHE_WAYS && !moved; w++) {
                        uint64_t z = 0;
                        moved = atomic_compare_exchange_strong(&k->index[to].e[w], &z, word);
                }
        }
        if (moved) {
                TEST_POINT("move-copied");
                atomic_fetch_add_explicit(&k->hdr->moves, 1, memory_order_seq_cst);
                atomic_store_explicit(src, 0, memory_order_seq_cst);
                TEST_POINT("move-cleared");
        }
        atomic_store_explicit(&it->owner, 0, memory_order_release);
done:
        atomic_store_explicit(&cs->jmove, 0, memory_order_release);
out:
        cache_unprotect(t);
        return moved;
}

int cache_make_room(struct cache_thr *t, uint64_t b0, uint64_t b1)
{
        struct step st[DISPLACE_NODES];
        unsigned n;
        int i = search(t->k, b0, b1, st, &n);

        if (i < 0)
                return 0;
        /* The last move first: each then goes into the way the one before freed. */
        for (; i >= 0; i = st[i].parent)
                if (!cache_move(t, st[i].bucket, st[i].way, st[i].word))
                        return 0;       /* the index changed under the path: look again */
        return 1;
}

/*
 * A dead mover's journal: X (jold) is claimed by it, linked at the source
 * (jentry), at a way of its other bucket, or at both. Leave it linked once
 * and give the claim back. Safe to redo.
 */
void cache_move_recover(struct cache *k, uint64_t src_off, uint64_t x, uint64_t tag)
{
        struct item *it = cache_item(k, x);
        uint64_t b0, b1;

        if (!it || atomic_load_explicit(&it->owner, memory_order_acquire) != tag)
                return;         /* never claimed, or the claim was given back */
        uint64_t h = cache_hash(k, item_nskey(it), it->data, it->klen);
        uint64_t word = ent_make(h, x);
        unsigned copies = 0;
        _Atomic uint64_t *src = NULL;

        cache_buckets(k, h, &b0, &b1);
        for (int i = 0; i < 2; i++) {
                for (unsigned w = 0; w < CACHE_WAYS; w++) {
                        _Atomic uint64_t *e = &k->index[i ? b1 : b0].e[w];
                        if (atomic_load_explicit(e, memory_order_acquire) != word)
                                continue;
                        copies++;
                        if (seg_off(k->s, (void *)e) == src_off)
                                src = e;
                }
        }
        if (copies > 1 && src) {
                atomic_fetch_add_explicit(&k->hdr->moves, 1, memory_order_seq_cst);
                atomic_store_explicit(src, 0, memory_order_seq_cst);
        }
        atomic_store_explicit(&it->owner, 0, memory_order_release);
}
