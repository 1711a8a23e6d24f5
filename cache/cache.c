/*
 * cache/cache.c: layout, attach, hashing and lookup (docs/cache-design.md).
 * The write protocol is in write.c, reclamation in reclaim.c.
 *
 * The tricky part here is the lookup's hazard pointer: an item is read only
 * after its offset is published in the slot and the entry is seen to still
 * hold it (cache_protect), so a writer that unlinks it and a reclaimer that
 * frees it cannot pull it from under the reader.
 */
#include "cache/cache.h"
#include "shm/wait.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static uint64_t pow2_floor(uint64_t x)
{
        return x ? 1ull << (63 - __builtin_clzll(x)) : 0;
}

uint32_t cache_slot_size(void)
{
        return (uint32_t)((sizeof(struct cache_slot) + 63) & ~63ull);
}

/*
 * One bucket (seven entries) for every 832 bytes of segment: sized for the
 * small items a cache holds most of. A 16-byte key with a 64-byte value is a
 * 112-byte block; at that size the heap and the index fill together (the
 * index about 95% full when the heap is), and larger items leave the index
 * emptier (at 4 KiB items it costs 7.7% of the segment). Any number of
 * buckets: lookups scale the hash (cache_scale), they do not mask it.
 */
#define BYTES_PER_BUCKET   832u   /* segment bytes per index bucket (above) */
#define HDR_BYTES          4096u  /* the cache header's page; the ghost table follows it */
#define REGION_ALIGN       4096u  /* alignment of each of the cache's regions */
#define GHOST_PER_BUCKET   2u     /* ghost table words per index bucket */
#define SMALL_PER_BUCKET   1u     /* small queue positions per bucket: 1/7 of the entries */
_Static_assert(sizeof(struct cache_hdr) <= HDR_BYTES, "the cache header fits its page");

/* The ghost table's and the small queue's words: powers of two (they are masked). */
static uint64_t ghost_words(uint64_t nb)
{
        return pow2_floor(GHOST_PER_BUCKET * nb);
}
static uint64_t small_words(uint64_t nb)
{
        return pow2_floor(SMALL_PER_BUCKET * nb);
}

uint64_t cache_layout(uint64_t total, struct seg_layout *lo)
{
        uint64_t nb = total / BYTES_PER_BUCKET;
        uint64_t hdr, idx, in = (uint64_t)CACHE_INTERN_CAP * 8;

        if (nb < 64)
                nb = 64;
        idx = nb * sizeof(struct bucket);
        /* The header, then the ghost table and the small queue. */
        hdr = HDR_BYTES + (ghost_words(nb) + small_words(nb)) * sizeof(uint64_t);
        lo->r[lo->n++] = (typeof(lo->r[0])){ SEG_REGION_CACHE, -1, hdr, REGION_ALIGN };
        lo->r[lo->n++] = (typeof(lo->r[0])){ SEG_REGION_INDEX, -1, idx, REGION_ALIGN };
        lo->r[lo->n++] = (typeof(lo->r[0])){ SEG_REGION_INTERN, -1, in, REGION_ALIGN };
        return hdr + idx + in + 3 * REGION_ALIGN;
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
        h->ghost_off = rc->off + HDR_BYTES;
        h->ghost_n = ghost_words(h->nbuckets);
        h->small_off = h->ghost_off + h->ghost_n * sizeof(uint64_t);
        h->small_n = small_words(h->nbuckets);
        /* Random, so that no one can choose keys that collide in this segment. */
        if (getrandom(&h->seed, sizeof(h->seed), GRND_NONBLOCK) != sizeof(h->seed))
                h->seed = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec ^
                          (uint64_t)getpid() << 32;
        atomic_store(&h->ns_epoch, 1);
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
        if (k->hdr->magic != CACHE_MAGIC || k->hdr->nbuckets < 2 ||
            k->hdr->nbuckets * sizeof(struct bucket) != ri->size ||
            k->hdr->index_off != ri->off || k->hdr->intern_off != rn->off ||
            (uint64_t)k->hdr->intern_cap * 8 > rn->size) {
                seg_set_errdetail("the cache header fails its checks");
                return STOA_E_CORRUPT;
        }
        if (k->hdr->ghost_off != rc->off + HDR_BYTES || (k->hdr->ghost_n & (k->hdr->ghost_n - 1)) ||
            k->hdr->small_off != k->hdr->ghost_off + k->hdr->ghost_n * 8 ||
            !k->hdr->small_n || (k->hdr->small_n & (k->hdr->small_n - 1)) ||
            HDR_BYTES + (k->hdr->ghost_n + k->hdr->small_n) * 8 > rc->size) {
                seg_set_errdetail("the cache header fails its checks");
                return STOA_E_CORRUPT;
        }
        k->small = seg_ptr(s, k->hdr->small_off);
        k->small_mask = k->hdr->small_n - 1;
        k->ghost = seg_ptr(s, k->hdr->ghost_off);
        k->ghost_mask = k->hdr->ghost_n - 1;
        k->index = seg_ptr(s, ri->off);
        k->nbuckets = k->hdr->nbuckets;
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
        k->seed = k->hdr->seed;
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
        atomic_store_explicit(&t->cs->hp, 0, memory_order_release);
        cache_views_drop(t);    /* a slot left by a client that did not release its views */
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

uint64_t cache_hash(const struct cache *k, uint64_t ns, const void *key, size_t len)
{
        const unsigned char *p = key;
        /* The namespace's index in the high half, its generation in the low. */
        uint64_t h = P0 ^ k->seed ^ (ns << 32 | ns >> 32) ^ len, a, b;
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

        if ((f & FREQ_HITS) < FREQ_HITS)
                atomic_store_explicit(&it->freq, f + 1, memory_order_relaxed);
}

static inline bool item_is(const struct item *it, uint64_t ns, const void *key, size_t klen)
{
        return it->klen == klen && it->ns == nskey_idx(ns) && it->nsgen == nskey_gen(ns) &&
               memcmp(it->data, key, klen) == 0;
}

/*
 * Look through a key's two buckets once. With `t`, each candidate item is
 * protected before it is read (cache_protect); without, it is read as is.
 * Inlined into its callers: with `t` known NULL or not, the protected read
 * folds away.
 */
static inline __attribute__((always_inline)) _Atomic uint64_t *
scan(struct cache *k, struct cache_thr *t, uint64_t ns, const void *key, size_t klen,
     uint64_t hash, struct item **ret_item)
{
        uint64_t b[2];
        uint64_t tag = ent_tag(hash);

        cache_buckets(k, hash, &b[0], &b[1]);
        for (int i = 0; i < 2; i++) {
                struct bucket *bk = &k->index[b[i]];
                for (unsigned w = 0; w < CACHE_WAYS; w++) {
                        uint64_t e = atomic_load_explicit(&bk->e[w], memory_order_acquire);
                        while (e && ent_tag(e) == tag && t &&
                               !cache_protect(t, &bk->e[w], e))
                                e = atomic_load_explicit(&bk->e[w], memory_order_acquire);
                        if (e == 0 || ent_tag(e) != tag)
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

/*
 * A scan found nothing. If entries moved meanwhile (displace.c), one may have
 * gone from the key's second bucket to its first between the two halves of
 * the scan: look again while the count moves, up to a bound (a pass during
 * which nothing moved sees the index as it is; a stopped mover moves
 * nothing). A pass takes tens of nanoseconds and moves come one per insert
 * into two full buckets, so the bound is met only by a key moved back and
 * forth millions of times a second: test_wait move_race, with 4, saw 1 read
 * in 5 million miss.
 */
#define LOOKUP_RESCANS 64u
static __attribute__((noinline)) _Atomic uint64_t *
missed(struct cache *k, struct cache_thr *t, uint64_t ns, const void *key, size_t klen,
       uint64_t hash, struct item **ret_item, uint64_t moves)
{
        for (unsigned i = 0; i < LOOKUP_RESCANS; i++) {
                uint64_t now = atomic_load_explicit(&k->hdr->moves, memory_order_acquire);
                if (now == moves)
                        break;
                moves = now;
                _Atomic uint64_t *e = scan(k, t, ns, key, klen, hash, ret_item);
                if (e)
                        return e;
        }
        if (t)
                cache_unprotect(t);
        return NULL;
}

static inline __attribute__((always_inline)) _Atomic uint64_t *
lookup(struct cache *k, struct cache_thr *t, uint64_t ns, const void *key, size_t klen,
       uint64_t hash, struct item **ret_item)
{
        /* Read before the scan, so that a move during it is seen after (missed()). */
        uint64_t moves = atomic_load_explicit(&k->hdr->moves, memory_order_acquire);
        _Atomic uint64_t *e = scan(k, t, ns, key, klen, hash, ret_item);

        if (__builtin_expect(e != NULL, 1))
                return e;
        return missed(k, t, ns, key, klen, hash, ret_item, moves);
}

_Atomic uint64_t *cache_lookup(struct cache_thr *t, uint64_t ns, const void *key, size_t klen,
                               uint64_t hash, struct item **ret_item)
{
        return lookup(t->k, t, ns, key, klen, hash, ret_item);
}

int cache_scan_buckets(struct cache_thr *t, uint64_t ns, const void *prefix, size_t plen,
                       uint64_t first, uint64_t n, int (*take)(const struct item *it, void *arg),
                       void *arg)
{
        struct cache *k = t->k;
        uint32_t now = cache_now(k);
        int r = 0;

        for (uint64_t i = first; i < first + n && i < k->nbuckets && r >= 0; i++) {
                for (unsigned w = 0; w < CACHE_WAYS && r >= 0; w++) {
                        _Atomic uint64_t *ent = &k->index[i].e[w];
                        uint64_t e = atomic_load_explicit(ent, memory_order_acquire);
                        while (e && !cache_protect(t, ent, e))
                                e = atomic_load_explicit(ent, memory_order_acquire);
                        struct item *it = e ? cache_item(k, ent_off(e)) : NULL;
                        if (!it || it->ns != nskey_idx(ns) || it->nsgen != nskey_gen(ns) ||
                            it->klen < plen || memcmp(it->data, prefix, plen) != 0 ||
                            cache_expired(it, now))
                                continue;
                        r = take(it, arg);
                }
        }
        cache_unprotect(t);
        return r < 0 ? r : 0;
}

_Atomic uint64_t *cache_lookup_raw(struct cache *k, uint64_t ns, const void *key, size_t klen,
                                   uint64_t hash, struct item **ret_item)
{
        return lookup(k, NULL, ns, key, klen, hash, ret_item);
}
