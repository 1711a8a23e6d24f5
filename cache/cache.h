/*
 * cache: the key-value cache that lives in the segment (docs/cache-design.md).
 *
 * An index of 64-byte buckets maps a key's hash to immutable items (allocator
 * blocks). Readers take no lock: before they read an item they publish its
 * offset in their slot (a hazard pointer) and check that the index still
 * points at it; they read it, and clear the pointer. Writers build an item,
 * claim the item they replace (a CAS on its `owner` word, so exactly one
 * writer unlinks it), store the new entry word, and retire the old item into
 * their slot's ring; it is freed once no slot's hazard pointer or view names
 * it. So a reader stopped in the middle of a read holds back one item, not
 * reclamation. Every step that changes shared state is journalled in the
 * writer's slot first, so the recovery of a dead writer can tell what
 * happened and finish or undo it (the crash table is in the design).
 *
 * This layer sits on the allocator and the slot table; the client library
 * (client/) gives it threads and handles.
 */
#ifndef STOA_CACHE_CACHE_H
#define STOA_CACHE_CACHE_H

#include "allocator/alloc.h"
#include "shm/slots.h"
#include "shm/wait.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define CACHE_MAGIC      0x48434143u     /* "CACH" */
#define CACHE_NS_MAX     32u             /* namespace 0 is the default one */
#define CACHE_RING       512u            /* retired blocks a slot can hold */
#define CACHE_VIEWS      64u
#define CACHE_WAYS       7u
#define CACHE_KEY_MAX    4096u
#define CACHE_INTERN_CAP 4096u           /* interned strings (power of two) */

/* Eviction hands: one per size class, one for runs, one for any page. */
#define HAND_RUN         AL_NCLASSES
#define HAND_ANY         (AL_NCLASSES + 1)
#define HAND_N           (AL_NCLASSES + 2)

/* Per-slot counters, per namespace. */
/*
 * Removals are counted by cause: CNT_EVICT made room in memory, CNT_EXPIRED
 * took an expired item, CNT_CONFLICT made room in the index (both of a new
 * key's buckets full) while memory may have had room.
 */
enum { CNT_HITS, CNT_MISSES, CNT_SETS, CNT_DELS, CNT_EVICT, CNT_EXPIRED, CNT_CONFLICT, CNT_N = 8 };

/* An index entry: tag:16 | spare:4 | item offset / 8 : 44. 0 = empty. */
#define ENT_OFF_MASK     ((1ull << 44) - 1)
#define ENT_TAG_MASK     0xffff000000000000ull   /* the hash's top 16 bits */
/* The tag of an entry, or of the hash an entry for it would carry. */
static inline uint64_t ent_tag(uint64_t e_or_hash)
{
        return e_or_hash & ENT_TAG_MASK;
}
static inline uint64_t ent_make(uint64_t hash, uint64_t off)
{
        return ent_tag(hash) | (off >> 3);
}
static inline uint64_t ent_off(uint64_t e)
{
        return (e & ENT_OFF_MASK) << 3;
}

/*
 * A bucket: seven entries and the insert lock of the keys whose first
 * bucket this is. Entries change only by CAS from empty (insert, under the
 * lock) or by the claimer of the item they hold (replace, delete, evict).
 */
struct bucket {
        _Atomic uint64_t e[CACHE_WAYS];
        struct olock lock;
};
_Static_assert(sizeof(struct bucket) == 64, "a bucket is one line");
_Static_assert(offsetof(struct bucket, lock) == 8 * CACHE_WAYS, "the bucket's lock follows its ways");

/*
 * An item: one allocator block, immutable once published, except `owner`
 * (the claim, set once by the writer that unlinks it) and `freq`: its low two
 * bits count hits (readers bump them while below 3; eviction lowers them),
 * and FREQ_SMALL says the item entered as a new key and has not yet been
 * judged by the small queue (evict.c). Stores to it are plain, so a reader's
 * bump may bring back a bit that eviction cleared: that costs the item one
 * more pass of the hand, never more.
 */
#define NSGEN_BITS       24u            /* namespace generations wrap at 2^24 drops */
#define NSGEN_MASK       ((1u << NSGEN_BITS) - 1)
_Static_assert(CACHE_KEY_MAX < (1u << 13), "klen fits its bits");
#define FREQ_HITS        3u
#define FREQ_SMALL       4u
struct item {
        _Atomic uint64_t owner;         /* olock_tag() of the claimer; 0 = none */
        uint32_t expire;                /* seconds since cache_hdr.time0; 0 = never */
        uint32_t vlen;                  /* bytes of value stored (compressed ones, if codec) */
        uint16_t klen : 13;             /* 1..CACHE_KEY_MAX */
        uint16_t codec : 3;             /* ITEM_PLAIN; the compressed forms are issue 9's */
        uint8_t ns;                     /* namespace index (cache_hdr.ns[]) */
        _Atomic uint8_t freq;
        uint32_t nsgen : NSGEN_BITS;    /* that index's generation when it was written */
        uint32_t dict : 8;              /* the dictionary a compressed value needs; 0 none */
        unsigned char data[];           /* key, then value */
};
enum { ITEM_PLAIN = 0 };                /* item.codec: the value is stored as given */
_Static_assert(sizeof(struct item) == 24, "item header");
_Static_assert(offsetof(struct item, data) == 24 && offsetof(struct item, freq) == 19,
               "item header layout");

/*
 * The cache's header, in the CACHE region. The first line is written once at
 * creation (the hash seed with it: random, so that keys cannot be chosen to
 * collide in one segment). `version` is a shared counter on a line of its
 * own; `hand` lines are the eviction hands (racy by design: two evictors may
 * look at the same block, which is harmless).
 */
struct cache_hdr {
        uint32_t magic;
        uint32_t ns_max;
        uint64_t nbuckets;              /* any count (cache_scale) */
        uint64_t index_off;
        uint64_t intern_off;
        uint32_t intern_cap;
        uint32_t pad0;
        int64_t time0;                  /* CLOCK_REALTIME seconds at creation */
        uint64_t ghost_off;             /* ghost table: ghost_n words, after this header */
        uint64_t ghost_n;               /* power of two */

        uint64_t seed;                  /* key hash seed, from getrandom() at creation */
        uint64_t small_off;             /* the small queue's ring: small_n words, after the ghost */
        uint64_t small_n;               /* power of two */
        /*
         * Entries moved to their other bucket (displace.c): a lookup that finds
         * nothing looks again if this changed during its scan. Written only by
         * moves, which happen only when a new key's two buckets are full.
         */
        _Atomic uint64_t moves;
        uint8_t pad2[32];
        uint64_t pad_v;                 /* (a version counter until SEG_VERSION 9) */
        _Atomic uint64_t evictions;     /* evictions so far: the ghost's clock */
        _Atomic uint64_t live_est;      /* linked items, counted every so often */
        _Atomic uint64_t counted_at;    /* `evictions` when live_est was counted */
        _Atomic uint64_t small_tail;    /* next position of the small queue's ring to fill */
        _Atomic uint64_t small_head;    /* next position to judge; tail - head = queued */
        uint8_t pad3[16];
        _Atomic uint32_t slots_hw;      /* slots ever used (readers are below) */
        uint32_t pad4;
        /*
         * The namespace table (docs/cache-design.md 7). ns[i] is gen:32 | id:32:
         * the interned name of namespace i (0: free) and the generation of the
         * index, which every item written into it carries and hashes with, so
         * items of a dropped namespace never match one that reuses the index.
         * ns[0] is the default namespace, always 0. A word changes only under
         * ns_lock (creation CASes a free word to a name, a drop moves it to
         * gen+1 | 0, a flush to gen+1 | id), with the writer's journal at
         * CJ_NS; then ns_epoch is bumped (release), and handles compare it
         * (acquire) before each call to see whether what they resolved still
         * holds. ns_dropped counts drops and flushes; ns_swept is the value it
         * had when the last complete reap of stale items began: a reap is owed
         * while they differ. All on lines that only those rare events write.
         */
        struct olock ns_lock;
        _Atomic uint64_t ns_epoch;      /* starts at 1; a handle's 0 means "not resolved" */
        _Atomic uint64_t ns_dropped;
        _Atomic uint64_t ns_swept;
        uint8_t pad5[24];
        _Atomic uint64_t ns[CACHE_NS_MAX];
        _Atomic uint64_t hand[HAND_N];  /* eviction hands: page << 16 | block */
        _Atomic uint64_t sweep;         /* next bucket the expiry sweep looks at */
};
_Static_assert(offsetof(struct cache_hdr, evictions) == 136, "shared counters on a line of their own");
_Static_assert(offsetof(struct cache_hdr, slots_hw) == 192, "slot high-water and ns epoch line");
_Static_assert(offsetof(struct cache_hdr, ns) == 256, "namespace table on lines of its own");
_Static_assert(offsetof(struct cache_hdr, seed) == 64 && offsetof(struct cache_hdr, hand) == 512 &&
               offsetof(struct cache_hdr, sweep) == 512 + 8 * HAND_N, "cache header lines");
_Static_assert(sizeof(struct cache_hdr) <= 4096, "the header fits before the ghost table");

/* A namespace as items know it: index and generation (cache_hdr.ns). 0 is the default. */
static inline uint64_t cache_nskey(uint32_t idx, uint32_t gen)
{
        return (uint64_t)gen << 32 | idx;
}
static inline uint32_t nskey_idx(uint64_t nk)
{
        return (uint32_t)nk;
}
static inline uint32_t nskey_gen(uint64_t nk)
{
        return (uint32_t)(nk >> 32);
}
#define NSW_ID(w)       ((uint32_t)(w))
#define NSW_GEN(w)      ((uint32_t)((w) >> 32) & NSGEN_MASK)
/* The generation after `gen`, as the table and items keep it. */
static inline uint32_t nsgen_next(uint32_t gen)
{
        return (gen + 1) & NSGEN_MASK;
}

/* A retired block: freed once no hazard pointer or view names it. */
struct retired {
        uint64_t off;                   /* 0: already freed */
        uint64_t stamp;                 /* its allocator stamp (a late free checks it) */
};
_Static_assert(sizeof(struct retired) == 16, "retired ring cell");

/* journal.op */
enum { CJ_NONE = 0, CJ_STORE, CJ_INTERN, CJ_NS };

/*
 * The cache's part of a slot. Line 0 is the reader state, written by the
 * owner on every read and read by reclaimers. The rest is written by the
 * owner only and read by the recovery of a dead owner (and by tools).
 */
struct cache_slot {
        _Atomic uint64_t hp;            /* the item being read (offset); 0 none */
        _Atomic uint32_t nviews;
        uint32_t gen;                   /* owner's slot generation (claims carry it) */
        uint8_t pad0[48];

        _Atomic uint64_t jop;           /* CJ_*: written last (release) */
        uint64_t jentry;                /* segment offset of the entry being changed */
        uint64_t jold, jnew;            /* item replaced (0: insert), item stored (0: delete) */
        uint64_t jstamp;                /* allocator stamp of jnew */
        _Atomic uint64_t jfree;         /* a retired block being freed (release/acquire) */
        uint64_t jfree_stamp;
        uint64_t pad1;

        uint64_t pad3[2];
        _Atomic uint32_t rhead, rtail;  /* ring[rtail..rhead) pending */
        _Atomic uint64_t jmove;         /* an item being moved to its other bucket (displace.c) */
        uint64_t jmove_src;             /* segment offset of the entry it moves from */
        uint8_t pad2[24];

        struct retired ring[CACHE_RING];
        _Atomic uint64_t views[CACHE_VIEWS];    /* pinned item offsets; 0 = free */
        uint64_t cnt[CACHE_NS_MAX][CNT_N];
};
_Static_assert(offsetof(struct cache_slot, jop) == 64 && offsetof(struct cache_slot, pad3) == 128 &&
               offsetof(struct cache_slot, ring) == 192, "the reader line, the journal line, the ring line");
_Static_assert(offsetof(struct cache_slot, views) == 192 + 16 * CACHE_RING &&
               offsetof(struct cache_slot, cnt) == offsetof(struct cache_slot, views) + 8 * CACHE_VIEWS &&
               sizeof(struct cache_slot) == offsetof(struct cache_slot, cnt) + 8 * CACHE_NS_MAX * CNT_N &&
               sizeof(struct cache_slot) % 64 == 0, "cache_slot layout");

/* Process-local view of the cache in one segment. */
struct cache {
        struct seg *s;
        struct al_ctx *al;
        struct cache_hdr *hdr;
        struct bucket *index;
        _Atomic uint64_t *intern;       /* entries: hash:20 | off/8:44 */
        uint64_t heap_lo, heap_hi;      /* where items may be */
        uint32_t ext_off;               /* offset of cache_slot in a slot's ext */
        uint32_t nslots;                /* process-local copies, checked at attach: */
        uint32_t intern_cap;            /* a scribbled header cannot send us astray */
        uint64_t nbuckets;
        _Atomic uint64_t *ghost;
        uint64_t ghost_mask;
        unsigned ghost_shift;           /* the ghost clock's unit: 2^shift evictions */
        _Atomic uint64_t *small;        /* the small queue's ring */
        uint64_t small_mask;
        uint64_t index_off, intern_off;
        uint64_t seed;                  /* copy of the header's */
};

/* Slots that may hold readers: the shared high-water mark, clamped. */
static inline uint32_t cache_slots_hw(const struct cache *k)
{
        uint32_t hw = atomic_load_explicit(&k->hdr->slots_hw, memory_order_acquire);

        return hw < k->nslots ? hw : k->nslots;
}

/* One thread's presence in the cache (its slot and heap). */
struct cache_thr {
        struct cache *k;
        struct al_heap *heap;
        struct cache_slot *cs;
        uint32_t slot, gen;
        uint64_t tag;                   /* olock_tag(slot, gen) */
        uint32_t since_reclaim;
        uint32_t since_steal;           /* allocations that found memory short */
        uint64_t last_steal_ms;
        uint64_t last_recover_ms;       /* dead slots last recovered for memory */
        struct waiter rwait;            /* for a recovery another client runs */
        uint64_t cnt_evict, cnt_expired, cnt_conflict; /* process-local, for per-handle stats */
};

/* ---- layout (cache.c) ---- */
uint32_t cache_slot_size(void);
/* Add the cache's regions for a segment of `total` bytes; returns the bytes they take. */
uint64_t cache_layout(uint64_t total, struct seg_layout *lo);
void cache_format(struct seg *s);
int cache_attach(struct cache *k, struct seg *s, struct al_ctx *al, uint32_t ext_off);
struct cache_slot *cache_slot_of(const struct cache *k, uint32_t slot);
void cache_thr_init(struct cache_thr *t, struct cache *k, struct al_heap *heap,
                    uint32_t slot, uint32_t gen);
uint32_t cache_now(const struct cache *k);      /* seconds since time0 */
/* A key's 64-bit hash in this segment (seeded: another segment hashes it otherwise). */
uint64_t cache_hash(const struct cache *k, uint64_t ns, const void *key, size_t klen);
/* The namespace key of an item (the `ns` its hash was computed with). */
static inline uint64_t item_nskey(const struct item *it)
{
        return cache_nskey(it->ns, it->nsgen);
}

static inline uint64_t cache_mum(uint64_t a, uint64_t b)
{
        __uint128_t r = (__uint128_t)a * b;
        return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/* A key's two buckets (two-choice). */
/*
 * A 64-bit value scaled to a bucket number: multiply-shift (Lemire's
 * fastrange), so the index may have any number of buckets, sized to the
 * segment rather than to a power of two.
 */
static inline uint64_t cache_scale(const struct cache *k, uint64_t x)
{
        return (uint64_t)(((unsigned __int128)x * k->nbuckets) >> 64);
}
/* The first of a key's buckets: from the hash's low 48 bits (the tag is the top 16). */
static inline uint64_t cache_bucket0(const struct cache *k, uint64_t h)
{
        return cache_scale(k, h << 16);
}
static inline void cache_buckets(const struct cache *k, uint64_t h, uint64_t *b0, uint64_t *b1)
{
        *b0 = cache_bucket0(k, h);
        *b1 = cache_scale(k, cache_mum(h, 0x8ebc6af09c88c6e3ull));
        if (*b1 == *b0)
                *b1 = *b0 + 1 < k->nbuckets ? *b0 + 1 : 0;
}

/* Bounds-checked item of an entry word or offset; NULL if it cannot be one. */
struct item *cache_item(const struct cache *k, uint64_t off);

/*
 * An item's version: its block's allocator stamp (slot << 48 | that slot's
 * allocation count), which names one allocation in the segment's whole life,
 * and is never 0 for a live block. The item must be protected (or pinned).
 */
static inline uint64_t cache_item_version(const struct cache *k, const struct item *it)
{
        return al_stamp(k->al, (uint64_t)((const unsigned char *)it - k->s->base));
}

/*
 * Batched lookups (stoa_mget) overlap their cache misses in stages: first
 * start loading each key's first bucket line; once those are in, start
 * loading the item each one's tag names (a guess, read unprotected: the
 * lookup that follows protects and checks); then look up each key, from
 * lines now in cache.
 */
static inline void cache_prefetch_bucket(const struct cache *k, uint64_t hash)
{
        __builtin_prefetch(&k->index[cache_bucket0(k, hash)]);
}
static inline void cache_prefetch_item(const struct cache *k, uint64_t hash)
{
        const struct bucket *bk = &k->index[cache_bucket0(k, hash)];

        for (unsigned w = 0; w < CACHE_WAYS; w++) {
                uint64_t e = atomic_load_explicit(&bk->e[w], memory_order_relaxed);
                if (e && ent_tag(e) == ent_tag(hash)) {
                        /* Its header, key and the start of its value; and the next
                         * line, where a small item's value ends (a 16+64-byte one
                         * is 112 bytes, and blocks are not line-aligned). */
                        const unsigned char *p = k->s->base + ent_off(e);
                        __builtin_prefetch(p);
                        __builtin_prefetch(p + 64);
                        return;
                }
        }
}

/* ---- reading (cache.c) ---- */

/*
 * The hazard pointer (docs/cache-design.md 4). Before reading the item of an
 * entry word e, publish its offset, then look at the entry again: if it still
 * holds e, the item stays allocated until the pointer moves on, because a
 * writer unlinks before it retires, and the reclaimer looks at every slot's
 * pointer after that. The exchange is a full barrier on both sides of this
 * Dekker pair (reader: publish, load the entry; writer: store the entry,
 * load the pointers). False: the entry changed, look at it again.
 */
static inline bool cache_protect(struct cache_thr *t, _Atomic uint64_t *entry, uint64_t e)
{
        atomic_exchange_explicit(&t->cs->hp, ent_off(e), memory_order_seq_cst);
        return atomic_load_explicit(entry, memory_order_seq_cst) == e;
}
static inline void cache_unprotect(struct cache_thr *t)
{
        atomic_store_explicit(&t->cs->hp, 0, memory_order_release);
}
/*
 * Find a key; on success its item is protected (the caller reads it, then
 * calls cache_unprotect()). Returns the entry, or NULL.
 */
_Atomic uint64_t *cache_lookup(struct cache_thr *t, uint64_t ns, const void *key, size_t klen,
                               uint64_t hash, struct item **ret_item);
/*
 * The same without protection, for tools that hold no slot: what it returns
 * may be freed and reused meanwhile (every read of it is bounds-checked, so
 * that gives wrong answers, never a fault).
 */
/* ---- displacement (displace.c) ---- */
/*
 * Both buckets b0, b1 of a new key are full: move entries on to their other
 * buckets to free a way in one of them. 1 if it did, 0 if no short path was
 * found (or the index changed under it).
 */
int cache_make_room(struct cache_thr *t, uint64_t b0, uint64_t b1);
/*
 * Move the entry at (bucket, way), if it still holds `word`, to a free way of
 * its item's other bucket. True if it moved.
 */
bool cache_move(struct cache_thr *t, uint64_t bucket, unsigned way, uint64_t word);
/* A dead slot's move of item `x` out of the entry at `src_off` (claim `tag`): settle it. */
void cache_move_recover(struct cache *k, uint64_t src_off, uint64_t x, uint64_t tag);

/*
 * Walk buckets [first, first + n) for the live items of namespace `ns` whose
 * keys start with `prefix`: each is protected while `take` reads it (and
 * must not keep it); `take` returns < 0 to stop, which is returned. Nothing
 * stays protected after.
 */
int cache_scan_buckets(struct cache_thr *t, uint64_t ns, const void *prefix, size_t plen,
                       uint64_t first, uint64_t n, int (*take)(const struct item *it, void *arg),
                       void *arg);
_Atomic uint64_t *cache_lookup_raw(struct cache *k, uint64_t ns, const void *key, size_t klen,
                                   uint64_t hash, struct item **ret_item);
static inline bool cache_expired(const struct item *it, uint32_t now)
{
        return it->expire != 0 && now >= it->expire;
}
void cache_touch_freq(struct item *it);
static inline void cache_count(struct cache_thr *t, unsigned ns, unsigned what)
{
        /* ns may come from an item's header, which a scribbler may have changed. */
        uint64_t *c = &t->cs->cnt[ns < CACHE_NS_MAX ? ns : 0][what];
        __atomic_store_n(c, *c + 1, __ATOMIC_RELAXED);
}

/* An item unlinked because it expired, or evicted: the slot's and the thread's counts. */
static inline void cache_count_removal(struct cache_thr *t, unsigned ns, bool expired)
{
        cache_count(t, ns, expired ? CNT_EXPIRED : CNT_EVICT);
        if (expired)
                t->cnt_expired++;
        else
                t->cnt_evict++;
}

/* A live item unlinked to make room in the index for a new key (write.c). */
static inline void cache_count_conflict(struct cache_thr *t, unsigned ns)
{
        cache_count(t, ns, CNT_CONFLICT);
        t->cnt_conflict++;
}

/* Monotonic milliseconds (coarse: deadlines and rate limits only). */
static inline uint64_t cache_clock_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- writing (cache.c) ---- */
enum cache_mode { CM_SET, CM_ADD, CM_REPLACE, CM_CAS };
struct cache_wr {
        uint64_t ns;                    /* cache_nskey() */
        const void *key;
        size_t klen;
        const void *val;
        size_t vlen;
        uint32_t expire;                /* absolute (cache_now units); 0 = never */
        enum cache_mode mode;
        uint64_t expect;                /* CM_CAS: the version to replace */
        uint64_t ret_version;
};
int cache_store(struct cache_thr *t, struct cache_wr *w);
int cache_delete(struct cache_thr *t, uint64_t ns, const void *key, size_t klen);
/* Unlink the key only if its item has expired (lazy expiry). 1 if it did. */
int cache_delete_expired(struct cache_thr *t, uint64_t ns, const void *key, size_t klen);
/* Unlink the item of `entry` (claimed by the caller), retiring it. */
int cache_unlink(struct cache_thr *t, _Atomic uint64_t *entry, struct item *it);

/* ---- reclamation (reclaim.c) ---- */
/* Retire an unlinked block (its hazard pointer, or its claim, held by the caller until now). */
int cache_retire(struct cache_thr *t, uint64_t off);
/* Free the retired blocks no hazard pointer or view names. Never waits. Returns freed. */
int cache_reclaim(struct cache_thr *t);
uint32_t cache_ring_used(const struct cache_slot *cs);
/*
 * Cells a write keeps free in its retire ring before it unlinks anything: the
 * most one operation retires (an old item, a lossy-index victim, a block
 * whose free had to wait), with room to spare.
 */
#define CACHE_RING_SLACK 8u
static inline bool cache_ring_short(const struct cache_slot *cs)
{
        return cache_ring_used(cs) > CACHE_RING - CACHE_RING_SLACK;
}
/* Does a reader (a hazard pointer or a view) hold back retired memory? */
bool cache_ring_blocked(struct cache_thr *t);
/* Free what readers allow from the rings of slots no one holds. */
int cache_adopt_orphans(struct cache *k);
/*
 * Recovery of a dead slot's cache state, around the allocator's: phase 1
 * returns the block it decided stays published (or 0) and sets *ret_free to
 * the one that must be freed; phase 2 frees it and what readers allow, or
 * says -EAGAIN (a page run's arena is locked by a stopped client; recovery
 * runs again later, and every step of both phases is safe to redo).
 */
uint64_t cache_recover_slot(struct cache *k, struct al_heap *dead, uint32_t slot,
                            uint64_t *ret_free);
int cache_recover_finish(struct cache *k, struct al_heap *dead, uint32_t slot, uint64_t unpub);
/* Phase 1's decision, made without acting on it: the block recovery will keep published. */
uint64_t cache_recover_outlook(struct cache *k, uint32_t slot);
/* Is this block named by a hazard pointer or a view? */
bool cache_pinned(struct cache *k, uint64_t off);
int cache_view_pin(struct cache_thr *t, uint64_t off);
void cache_view_unpin(struct cache_thr *t, uint64_t off);
/* Release every view the thread holds (thread exit, handle close). */
void cache_views_drop(struct cache_thr *t);
/* Recover dead slots (bounded): when memory is short, they may hold it. Returns how many. */
int cache_recover_dead(struct cache *k);

/* ---- eviction (evict.c) ---- */
/* Allocate an item block of `bytes`, evicting as needed. */
int cache_alloc(struct cache_thr *t, size_t bytes, uint64_t *ret_off);
/* Unlink expired items among the next `budget` entries of the index. */
uint64_t cache_expire_sweep(struct cache_thr *t, uint64_t budget);

/* ---- the ghost of evicted keys, and the small queue (evict.c) ---- */
void cache_ghost_put(struct cache *k, uint64_t hash);
bool cache_ghost_hit(struct cache *k, uint64_t hash);
void cache_small_push(struct cache *k, uint64_t off, uint64_t stamp);
uint64_t cache_small_queued(const struct cache *k);

/* ---- interner (intern.c) ---- */
int cache_intern(struct cache_thr *t, const void *s, size_t len, uint32_t *ret_id);
/* The id of a string already interned, without interning it. -ENOENT if it is not. */
int cache_intern_find(struct cache *k, const void *s, size_t len, uint32_t *ret_id);
int cache_intern_get(struct cache *k, uint32_t id, const char **ret_s, size_t *ret_len);

/* ---- namespaces (ns.c) ---- */
/*
 * The namespace of an interned name: *ret_nskey, or -ENOENT if no namespace
 * has that name (nothing is created). name_id 0: the name is not interned.
 */
int cache_ns_find(struct cache *k, uint32_t name_id, uint64_t *ret_nskey);
/* The namespace of a name, created if there is none. -ENOSPC: the table is full. */
int cache_ns_create(struct cache_thr *t, const char *name, size_t len, uint64_t *ret_nskey);
/*
 * Drop a namespace: its index is free at once and its items unmatchable,
 * then reaped. -ENOENT if there is none of that name (a reap still owed by
 * an earlier drop cut short is done all the same).
 */
int cache_ns_drop(struct cache_thr *t, const char *name, size_t len);
/* Empty the segment: every namespace's generation moves on, then every item is unlinked. */
int cache_flush(struct cache_thr *t);
/*
 * Unlink stale items (of a dropped generation), or with `all` every item.
 * 0 when the whole index was walked, -EAGAIN if readers hold the ring full.
 */
int cache_ns_reap(struct cache_thr *t, bool all);
/* Is a reap owed (a drop or flush whose walk did not complete)? */
bool cache_ns_reap_owed(const struct cache *k);
/* Does the item belong to a namespace generation that is gone? (unprotected read ok) */
bool cache_ns_stale(const struct cache *k, const struct item *it);
/* Recovery of a slot that died inside a namespace change (CJ_NS). */
void cache_ns_recover(struct cache *k);

#endif /* STOA_CACHE_CACHE_H */
