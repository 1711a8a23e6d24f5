/*
 * cache/cache.c: layout, lookup and the write protocol (docs/cache-design.md).
 *
 * The tricky part is the write. An entry holding item O changes only at the
 * hands of the writer that claimed O (CAS of O->owner from 0 to its tag), so
 * the claim, not the entry store, decides who unlinks O and must retire it;
 * the store that follows cannot fail. A new key goes into an empty entry by
 * CAS under the insert lock of its first bucket, which serializes inserts of
 * one key and so rules out duplicates. The slot's journal names the entry,
 * the old and the new item before the claim, which lets recovery decide.
 */
#include "cache/cache.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <string.h>
#include <time.h>

static uint64_t pow2_floor(uint64_t x)
{
        return x ? 1ull << (63 - __builtin_clzll(x)) : 0;
}

uint32_t cache_slot_size(void)
{
        return (uint32_t)((sizeof(struct cache_slot) + 63) & ~63ull);
}

/*
 * One bucket (seven entries) for every 1 KiB of segment: about one entry per
 * 146 bytes of heap, so items of 128 bytes and up fill memory before the
 * index, and smaller ones meet the lossy index first (a conflict evicts).
 */
uint64_t cache_layout(uint64_t total, struct seg_layout *lo)
{
        uint64_t nb = pow2_floor(total / 1024);
        uint64_t hdr, idx, in = (uint64_t)CACHE_INTERN_CAP * 8;

        if (nb < 64)
                nb = 64;
        idx = nb * sizeof(struct bucket);
        hdr = 4096 + 2 * nb * sizeof(uint64_t);        /* header, then the ghost table */
        lo->r[lo->n++] = (typeof(lo->r[0])){ SEG_REGION_CACHE, -1, hdr, 4096 };
        lo->r[lo->n++] = (typeof(lo->r[0])){ SEG_REGION_INDEX, -1, idx, 4096 };
        lo->r[lo->n++] = (typeof(lo->r[0])){ SEG_REGION_INTERN, -1, in, 4096 };
        return hdr + idx + in + 3 * 4096;
}

void cache_format(struct seg *s)
{
        const struct seg_region *rc = seg_region(s, SEG_REGION_CACHE, 0);
        const struct seg_region *ri = seg_region(s, SEG_REGION_INDEX, 0);
        const struct seg_region *rn = seg_region(s, SEG_REGION_INTERN, 0);
        struct cache_hdr *h = seg_ptr(s, rc->off);
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        memset(h, 0, sizeof(*h));
        h->ns_max = CACHE_NS_MAX;
        h->nbuckets = ri->size / sizeof(struct bucket);
        h->index_off = ri->off;
        h->intern_off = rn->off;
        h->intern_cap = (uint32_t)(rn->size / 8);
        h->time0 = ts.tv_sec - 1;       /* so that cache_now() is never 0 */
        h->ghost_off = rc->off + 4096;
        h->ghost_n = 2 * h->nbuckets;
        atomic_store(&h->epoch, 1);
        atomic_store(&h->version, 1);
        h->magic = CACHE_MAGIC;
}

int cache_attach(struct cache *k, struct seg *s, struct al_ctx *al, uint32_t ext_off)
{
        const struct seg_region *rc = seg_region(s, SEG_REGION_CACHE, 0);
        const struct seg_region *ri = seg_region(s, SEG_REGION_INDEX, 0);
        const struct seg_region *rn = seg_region(s, SEG_REGION_INTERN, 0);

        memset(k, 0, sizeof(*k));
        if (!rc || !ri || !rn || rc->size < sizeof(struct cache_hdr)) {
                seg_set_errdetail("the segment has no cache regions");
                return STOA_E_CORRUPT;
        }
        k->s = s;
        k->al = al;
        k->hdr = seg_ptr(s, rc->off);
        if (k->hdr->magic != CACHE_MAGIC || k->hdr->nbuckets == 0 ||
            (k->hdr->nbuckets & (k->hdr->nbuckets - 1)) ||
            k->hdr->nbuckets * sizeof(struct bucket) != ri->size ||
            k->hdr->index_off != ri->off || k->hdr->intern_off != rn->off ||
            (uint64_t)k->hdr->intern_cap * 8 > rn->size) {
                seg_set_errdetail("the cache header fails its checks");
                return STOA_E_CORRUPT;
        }
        if (k->hdr->ghost_off != rc->off + 4096 || (k->hdr->ghost_n & (k->hdr->ghost_n - 1)) ||
            4096 + k->hdr->ghost_n * 8 > rc->size) {
                seg_set_errdetail("the cache header fails its checks");
                return STOA_E_CORRUPT;
        }
        k->ghost = seg_ptr(s, k->hdr->ghost_off);
        k->ghost_mask = k->hdr->ghost_n - 1;
        k->index = seg_ptr(s, ri->off);
        k->nbuckets = k->hdr->nbuckets;
        k->mask = k->nbuckets - 1;
        k->intern_cap = k->hdr->intern_cap;
        k->index_off = ri->off;
        k->intern_off = rn->off;
        k->intern = seg_ptr(s, rn->off);
        k->heap_lo = UINT64_MAX;
        for (unsigned i = 0;; i++) {
                const struct seg_region *r = seg_region(s, SEG_REGION_HEAP, i);
                if (!r)
                        break;
                if (r->off < k->heap_lo)
                        k->heap_lo = r->off;
                if (r->off + r->size > k->heap_hi)
                        k->heap_hi = r->off + r->size;
        }
        if (k->heap_lo >= k->heap_hi || k->heap_hi > s->size) {
                seg_set_errdetail("the segment has no heap");
                return STOA_E_CORRUPT;
        }
        k->ext_off = ext_off;
        k->nslots = slots_count(s);
        return 0;
}

struct cache_slot *cache_slot_of(const struct cache *k, uint32_t slot)
{
        return (struct cache_slot *)((uint8_t *)slot_ext(k->s, slot) + k->ext_off);
}

void cache_thr_init(struct cache_thr *t, struct cache *k, struct al_heap *heap, uint32_t slot,
                    uint32_t gen)
{
        memset(t, 0, sizeof(*t));
        t->k = k;
        t->heap = heap;
        t->slot = slot;
        t->gen = gen;
        t->tag = olock_tag(slot, gen);
        t->cs = cache_slot_of(k, slot);
        t->cs->gen = gen;
        atomic_store_explicit(&t->cs->epoch, 0, memory_order_release);
        uint32_t hw = atomic_load(&k->hdr->slots_hw);
        while (hw < slot + 1 && !atomic_compare_exchange_weak(&k->hdr->slots_hw, &hw, slot + 1))
                ;
}

uint32_t cache_now(const struct cache *k)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME_COARSE, &ts);
        int64_t d = ts.tv_sec - k->hdr->time0;
        return d < 1 ? 1 : d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

/* ---- hashing (a wyhash-style multiply-mix) ------------------------------- */

static inline uint64_t rd64(const unsigned char *p)
{
        uint64_t v;
        memcpy(&v, p, 8);
        return v;
}

#define P0 0xa0761d6478bd642full
#define P1 0xe7037ed1a0b428dbull
#define P2 0x8ebc6af09c88c6e3ull

uint64_t cache_hash(uint32_t ns, const void *key, size_t len)
{
        const unsigned char *p = key;
        uint64_t h = P0 ^ ((uint64_t)ns << 32) ^ len, a, b;
        size_t n = len;

        while (n > 16) {
                h = cache_mum(rd64(p) ^ P1, rd64(p + 8) ^ h);
                p += 16;
                n -= 16;
        }
        if (n >= 8) {
                a = rd64(p);
                b = rd64(p + n - 8);
        } else if (n >= 4) {
                uint32_t x, y;
                memcpy(&x, p, 4);
                memcpy(&y, p + n - 4, 4);
                a = x;
                b = y;
        } else {
                a = n ? ((uint64_t)p[0] << 16 | (uint64_t)p[n / 2] << 8 | p[n - 1]) : 0;
                b = 0;
        }
        return cache_mum(P1 ^ len, cache_mum(a ^ P1, b ^ h) ^ P2);
}

/* ---- items --------------------------------------------------------------- */

struct item *cache_item(const struct cache *k, uint64_t off)
{
        if (off < k->heap_lo || off + sizeof(struct item) > k->heap_hi)
                return NULL;
        struct item *it = (struct item *)(k->s->base + off);
        if (it->klen == 0 || it->klen > CACHE_KEY_MAX ||
            (uint64_t)it->klen + it->vlen > k->heap_hi - off - sizeof(struct item))
                return NULL;
        return it;
}

void cache_touch_freq(struct item *it)
{
        uint8_t f = atomic_load_explicit(&it->freq, memory_order_relaxed);

        if (f < 3)
                atomic_store_explicit(&it->freq, f + 1, memory_order_relaxed);
}

static inline bool item_is(const struct item *it, uint32_t ns, const void *key, size_t klen)
{
        return it->klen == klen && it->ns == ns && memcmp(it->data, key, klen) == 0;
}

_Atomic uint64_t *cache_lookup(struct cache *k, uint32_t ns, const void *key, size_t klen,
                               uint64_t hash, struct item **ret_item)
{
        uint64_t b[2];
        uint64_t tag = hash & 0xffff000000000000ull;

        cache_buckets(k, hash, &b[0], &b[1]);
        for (int i = 0; i < 2; i++) {
                struct bucket *bk = &k->index[b[i]];
                for (unsigned w = 0; w < CACHE_WAYS; w++) {
                        uint64_t e = atomic_load_explicit(&bk->e[w], memory_order_acquire);
                        if (e == 0 || (e & 0xffff000000000000ull) != tag)
                                continue;
                        struct item *it = cache_item(k, ent_off(e));
                        if (it && item_is(it, ns, key, klen)) {
                                *ret_item = it;
                                return &bk->e[w];
                        }
                }
        }
        return NULL;
}

static uint64_t next_version(struct cache_thr *t)
{
        struct cache_slot *cs = t->cs;

        if (cs->ver_next >= cs->ver_end) {
                uint64_t v = atomic_fetch_add(&t->k->hdr->version, 1024);
                cs->ver_end = v + 1024;
                cs->ver_next = v;
        }
        return cs->ver_next++;
}

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
 * A claim failed: someone else is unlinking `it`. Usually it finishes within
 * nanoseconds; if the claimer is dead, recover its slot, which finishes or
 * undoes its operation.
 */
static int claim_wait(struct cache_thr *t, struct item *it, unsigned *spins)
{
        uint64_t tag = atomic_load_explicit(&it->owner, memory_order_acquire);

        if (++*spins % 64 == 0 && tag) {
                uint32_t slot = (uint32_t)(tag >> 32) - 1, gen = (uint32_t)tag;
                if (slot < slots_count(t->k->s) && slot_is_dead(t->k->s, slot, gen) == 1)
                        slot_recover_dead(t->k->s, slot);
        }
        /*
         * A live claimer finishes in nanoseconds, a dead one is recovered
         * above; a claim that stays for ~a second names no real claimer: the
         * item was scribbled on.
         */
        if (*spins > (1u << 20)) {
                seg_set_errdetail("item %#llx is claimed by %#llx, which is no client: corrupt",
                                  (unsigned long long)seg_off(t->k->s, it), (unsigned long long)tag);
                return STOA_E_CORRUPT;
        }
        if (*spins > 1024)
                sched_yield();
        else
                __builtin_ia32_pause();
        return 0;
}

/* Claim `it` for unlinking. 0, or -EAGAIN if someone else holds it. */
static int claim(struct cache_thr *t, struct item *it)
{
        uint64_t zero = 0;

        return atomic_compare_exchange_strong(&it->owner, &zero, t->tag) ? 0 : -EAGAIN;
}

/*
 * Journal and claim the item `it` (at `off`) that `entry` holds. 0: claimed,
 * still linked there. -EAGAIN: someone else holds the claim. 1: the entry
 * moved on between our load and our claim (the claim is given back).
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
        it->version = next_version(t);
        it->expire = w->expire;
        it->vlen = (uint32_t)w->vlen;
        it->klen = (uint16_t)w->klen;
        it->ns = (uint8_t)w->ns;
        atomic_store_explicit(&it->freq, 0, memory_order_relaxed);
        it->pad = 0;
        memcpy(it->data, w->key, w->klen);
        if (w->vlen)
                memcpy(it->data + w->klen, w->val, w->vlen);
}

/* The entry with the coldest item of two full buckets: a lossy-index victim. */
static _Atomic uint64_t *pick_victim(struct cache *k, uint64_t b0, uint64_t b1, uint32_t now,
                                     struct item **ret_item)
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
                        int score = cache_expired(it, now) ? -1 :
                                    atomic_load_explicit(&it->freq, memory_order_relaxed);
                        if (score < best_score) {
                                best_score = score;
                                best = &bk->e[w];
                                *ret_item = it;
                        }
                }
        }
        return best;
}

/*
 * Insert a key absent from the index, under its first bucket's insert lock.
 * Returns 1 done, 0 the key appeared meanwhile (caller retries), <0 error.
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
        cache_rd_enter(t);
        if (cache_lookup(k, w->ns, w->key, w->klen, hash, &old))
                goto out;
        /*
         * A new key evicted lately and wanted again: keep it longer. Only here,
         * where the key is known to be new: the ghost table is one more cache
         * miss, which updates of present keys need not pay.
         */
        struct item *n = (struct item *)(k->s->base + noff);
        if (cache_ghost_hit(k, hash))
                atomic_store_explicit(&n->freq, 3, memory_order_relaxed);
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
        /* Both buckets full: the coldest entry makes room (MICA's lossy index). */
        for (unsigned tries = 0; !done && tries < 16; tries++) {
                struct item *v = NULL;
                _Atomic uint64_t *e = pick_victim(k, b0, b1, now, &v);
                if (!e)
                        break;
                uint64_t voff = seg_off(k->s, v);
                if (claim_entry(t, e, v, voff) != 0)
                        continue;
                bool expired = cache_expired(v, now);
                unsigned vns = v->ns;
                if (!expired)
                        cache_ghost_put(k, cache_hash(vns, v->data, v->klen));
                replace_claimed(e, word);
                cache_rd_leave(t);
                cache_retire(t, voff);
                cache_count_removal(t, vns, expired);
                olock_release(&k->index[b0].lock);
                return 1;
        }
        if (!done) {
                cache_rd_leave(t);
                olock_release(&k->index[b0].lock);
                return -EAGAIN;
        }
out:
        cache_rd_leave(t);
        olock_release(&k->index[b0].lock);
        return done;
}

int cache_store(struct cache_thr *t, struct cache_wr *w)
{
        struct cache *k = t->k;
        struct cache_slot *cs = t->cs;
        uint64_t hash = cache_hash(w->ns, w->key, w->klen), noff;
        size_t bytes = sizeof(struct item) + w->klen + w->vlen;
        uint32_t now = cache_now(k);
        unsigned spins = 0;
        int r;

        if (cache_ring_used(cs) > CACHE_RING - 8) {
                cache_reclaim(t, 100);
                if (cache_ring_used(cs) > CACHE_RING - 8)
                        return -EAGAIN;
        }
        /* Start loading the key's bucket; the allocation and the copy overlap the miss. */
        __builtin_prefetch(&k->index[hash & k->mask], 1);
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
                cache_rd_enter(t);
                _Atomic uint64_t *e = cache_lookup(k, w->ns, w->key, w->klen, hash, &old);
                if (e) {
                        bool live = !cache_expired(old, now);
                        r = 0;
                        if (w->mode == CM_ADD && live)
                                r = -EEXIST;
                        else if ((w->mode == CM_REPLACE || w->mode == CM_CAS) && !live)
                                r = -ENOENT;
                        else if (w->mode == CM_CAS && old->version != w->expect)
                                r = -ESTALE;
                        if (r < 0) {
                                cache_rd_leave(t);
                                break;
                        }
                        uint64_t ooff = seg_off(k->s, old);
                        int c = claim_entry(t, e, old, ooff);
                        if (c != 0) {
                                cache_rd_leave(t);
                                if (c < 0 && (r = claim_wait(t, old, &spins)) < 0)
                                        break;
                                continue;
                        }
                        replace_claimed(e, ent_make(hash, noff));
                        cache_rd_leave(t);
                        cache_retire(t, ooff);
                        if (!live)
                                cache_count_removal(t, w->ns, true);
                        break;
                }
                cache_rd_leave(t);
                if (w->mode == CM_REPLACE || w->mode == CM_CAS) {
                        r = -ENOENT;
                        break;
                }
                r = insert_new(t, w, hash, noff, now);
                if (r == 1) {
                        r = 0;
                        break;
                }
                if (r == -EAGAIN && ++spins > 1000)
                        break;          /* every candidate busy for long: give up */
                if (r < 0 && r != -EAGAIN)
                        break;
        }
        if (r < 0) {
                /* Not published: free it, then close the journal (recovery checks the stamp). */
                al_free(t->heap, noff);
                al_commit(t->heap);
                atomic_store_explicit(&cs->jop, CJ_NONE, memory_order_release);
                return r;
        }
        w->ret_version = n->version;
        cache_count(t, w->ns, CNT_SETS);
        journal_done(t);
        if (++t->since_reclaim >= 32) {
                t->since_reclaim = 0;
                cache_reclaim(t, 0);
        }
        return 0;
}

int cache_delete(struct cache_thr *t, uint32_t ns, const void *key, size_t klen)
{
        struct cache *k = t->k;
        uint64_t hash = cache_hash(ns, key, klen);
        uint32_t now = cache_now(k);
        unsigned spins = 0;

        if (cache_ring_used(t->cs) > CACHE_RING - 8) {
                cache_reclaim(t, 100);
                if (cache_ring_used(t->cs) > CACHE_RING - 8)
                        return -EAGAIN;
        }
        for (;;) {
                struct item *it;
                cache_rd_enter(t);
                _Atomic uint64_t *e = cache_lookup(k, ns, key, klen, hash, &it);
                if (!e) {
                        cache_rd_leave(t);
                        return -ENOENT;
                }
                bool live = !cache_expired(it, now);
                int r = cache_unlink(t, e, it);
                cache_rd_leave(t);
                if (r == -EAGAIN) {
                        r = claim_wait(t, it, &spins);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (r == 0 && !live)
                        cache_count_removal(t, ns, true);
                if (r == 0 && live)
                        cache_count(t, ns, CNT_DELS);
                if (++t->since_reclaim >= 32) {
                        t->since_reclaim = 0;
                        cache_reclaim(t, 0);
                }
                return r < 0 ? r : live ? 0 : -ENOENT;
        }
}

int cache_delete_expired(struct cache_thr *t, uint32_t ns, const void *key, size_t klen)
{
        struct cache *k = t->k;
        uint64_t hash = cache_hash(ns, key, klen);
        struct item *it;
        int r = 0;

        if (cache_ring_used(t->cs) > CACHE_RING - 8)
                return 0;               /* a later sweep will do it */
        cache_rd_enter(t);
        _Atomic uint64_t *e = cache_lookup(k, ns, key, klen, hash, &it);
        if (e && cache_expired(it, cache_now(k)) && cache_unlink(t, e, it) == 0) {
                cache_count_removal(t, ns, true);
                r = 1;
        }
        cache_rd_leave(t);
        return r;
}
