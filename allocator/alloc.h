/*
 * allocator: a NUMA-aware arena allocator that carves the segment.
 *
 * One arena per NUMA node in use, each an array of 64 KiB pages described by
 * 64-byte page descriptors. Small requests are served from slab spans (one
 * or more pages of one size class) owned by one slot: the owner allocates from
 * a private free bitmap without atomics; other slots free into an atomic
 * remote bitmap that the owner drains. Large requests are runs of pages taken
 * under the arena's owner-tagged lock. Every block starts with an 8-byte stamp
 * that names the allocation; callers get the address after it.
 *
 * Crash safety rests on three things (docs/design.md section 3): each slot
 * journals its one operation in flight; page descriptors are the ground
 * truth that the arena's free-page bitmap is rebuilt from; and a page has one
 * owner at a time, changed only under the arena lock or by the holder of a
 * dead owner's slot lock.
 */
#ifndef STOA_ALLOCATOR_ALLOC_H
#define STOA_ALLOCATOR_ALLOC_H

#include "shm/olock.h"
#include "shm/seg.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AL_PAGE_SHIFT    16
#define AL_PAGE_SIZE     (1u << AL_PAGE_SHIFT)
#define AL_MAX_ARENAS    4u             /* NUMA nodes a segment can span */
#define AL_NCLASSES      40u
#define AL_STAMP_SIZE    8u
#define AL_SLAB_HDR      640u           /* slab span header: summary + 2 bitmaps */
#define AL_BITMAP_WORDS  32u            /* up to 2048 blocks a span */
#define AL_MAX_SMALL     (32u << 10)    /* block size (stamp included) of the last class */
#define AL_ARENA_MAGIC   0x414e5241u    /* "ARNA" */

/* page_desc.state */
enum { PAGE_FREE = 0, PAGE_SLAB = 1, PAGE_SLAB_TAIL = 2, PAGE_RUN = 3, PAGE_RUN_TAIL = 4 };

/* journal.op */
enum { J_NONE = 0, J_ALLOC, J_FREE, J_RFREE, J_RUN_ALLOC, J_RUN_FREE };

/* Stamp of a free block. Live stamps are slot << 48 | seq with seq >= 1. */
#define AL_STAMP_FREE    0ull

/*
 * Page descriptor: one a page, in the PAGEDESC region.
 * state, cls, span, run_pages, run_stamp: written under the arena lock.
 * owner: under the arena lock, or by the holder of the dead owner's slot lock.
 * next/prev/full/nfree: by the owner only (its private page lists).
 */
struct page_desc {
        uint8_t state;
        uint8_t full;           /* owner 0: on the arena's abandoned list */
        uint8_t cls;
        uint8_t arena;
        uint32_t owner;         /* slot + 1; 0 = none (free or abandoned) */
        uint32_t span;          /* SLAB: pages in the span; TAIL: index of the head */
        uint32_t next;          /* list link, page index + 1 */
        uint32_t prev;
        uint32_t capacity;      /* blocks in a slab span */
        uint32_t block_size;
        uint32_t nfree;         /* owner's count of local free bits */
        uint64_t run_stamp;     /* RUN: stamp of the allocation */
        uint64_t run_bytes;     /* RUN: bytes asked for */
        uint32_t cursor;        /* owner: first bitmap word that may have a free bit */
        uint8_t pad[12];
};
_Static_assert(sizeof(struct page_desc) == 64, "page descriptor is one line");
_Static_assert(offsetof(struct page_desc, owner) == 4 && offsetof(struct page_desc, run_stamp) == 32,
               "page descriptor layout");

/* The first bytes of a slab span. */
struct slab_hdr {
        _Atomic uint64_t remote_summary;        /* bit w: remote_free[w] may be non-zero */
        uint64_t pad[7];
        uint64_t local_free[AL_BITMAP_WORDS];   /* owner only; 1 = free */
        _Atomic uint64_t remote_free[AL_BITMAP_WORDS]; /* others OR bits in; owner drains */
        uint64_t pad2[8];
};
_Static_assert(sizeof(struct slab_hdr) == AL_SLAB_HDR, "slab header size");
_Static_assert(offsetof(struct slab_hdr, local_free) == 64 &&
               offsetof(struct slab_hdr, remote_free) == 64 + 8 * AL_BITMAP_WORDS,
               "the summary has its own line; the bitmaps follow it");

/*
 * Arena: one a NUMA node, in the ARENAS region, followed by its free-page
 * bitmap and its relist bitmap. Line 0 is the lock and the relist flag,
 * which any slot touches; everything else is written under the lock.
 *
 * Relisting: a remote free that turns a disowned span's summary non-zero
 * must put the span on the abandoned list, which needs the lock. When the
 * lock is held by someone else (stopped, say), the freer does not wait: it
 * sets the span's bit in the relist bitmap and then the `relist` flag, and
 * whoever takes the lock next lists it (al_arena_lock). So a span is always
 * either on the list, or marked for it, or owned.
 */
struct arena {
        struct olock lock;
        _Atomic uint32_t relist;        /* some bit of the relist bitmap may be set */
        uint8_t pad0[52];
        uint32_t magic;
        int32_t node;
        uint32_t first_page;            /* global index of its first page */
        uint32_t npages;
        uint64_t heap_off;              /* segment offset of its first page */
        uint32_t free_pages;
        uint32_t hint;                  /* no free page below this (relative) */
        uint32_t peak_used_pages;
        uint32_t run_pages;             /* pages in large runs */
        uint64_t run_allocs, run_frees; /* counts of large allocations */
        uint64_t run_bytes;             /* bytes asked for by live runs */
        uint64_t repairs;               /* times rebuilt after a dead holder */
        uint32_t slab_pages[AL_NCLASSES];
        uint32_t abandoned[AL_NCLASSES]; /* list heads (page index + 1) */
        uint64_t bitmap_off;            /* segment offset of the free-page bitmap */
        uint64_t relist_off;            /* segment offset of the relist bitmap */
        uint8_t pad1[40];
};
_Static_assert(sizeof(struct arena) == 512, "an arena header is eight lines");
_Static_assert(offsetof(struct arena, magic) == 64, "the lock line is the arena's own");

/* Allocator-wide header, at the start of the ARENAS region. */
struct al_shared {
        uint32_t magic;
        uint32_t narenas;
        uint32_t npages;                /* all arenas */
        uint32_t nclasses;
        uint64_t desc_off;              /* PAGEDESC region */
        uint64_t arena_off[AL_MAX_ARENAS];
        uint8_t pad[8];
};
_Static_assert(sizeof(struct al_shared) == 64, "al_shared is one line");

/*
 * The one operation a slot has in flight (docs/design.md 3.4). A small-block
 * operation also names the slot counter it bumps and that counter's value
 * before it: the bump comes after the operation's commit point, so a slot can
 * die between the two, and recovery sets the counter to what the outcome says.
 */
struct al_journal {
        _Atomic uint64_t op;    /* written last */
        uint64_t off;           /* block (user) offset */
        uint64_t stamp;
        uint32_t arena, cls;    /* J_ALLOC: allocs[arena][cls]; J_FREE, J_RFREE: frees[..] */
        uint64_t count;         /* that counter before the operation */
};
_Static_assert(sizeof(struct al_journal) == 40, "journal layout");

/* Per-slot counters: written by the slot's owner only, summed by readers. */
struct al_counts {
        uint64_t allocs[AL_MAX_ARENAS][AL_NCLASSES];
        uint64_t frees[AL_MAX_ARENAS][AL_NCLASSES];
};
_Static_assert(sizeof(struct al_counts) == 2 * 8 * AL_MAX_ARENAS * AL_NCLASSES, "al_counts layout");

/* The allocator's part of a slot (in the slot's ext area). */
struct al_slot {
        struct al_journal j;
        uint64_t seq;                   /* stamp sequence */
        /*
         * Span stealing (design.md 3.7): the owner sets `busy` around each
         * operation; another slot short of memory may CAS `steal` to its tag
         * while `busy` is 0 and then disown this slot's spans. Dekker pair,
         * sequentially consistent on both sides.
         */
        _Atomic uint32_t busy;
        _Atomic uint32_t fence;         /* 1: the owner leaves its barrier to the thief's membarrier */
        _Atomic uint64_t steal;
        uint32_t avail[AL_MAX_ARENAS][AL_NCLASSES];    /* owner lists: page idx + 1 */
        struct al_counts c;
};
_Static_assert(offsetof(struct al_slot, busy) == 48 && offsetof(struct al_slot, steal) == 56,
               "the stealing pair is on the slot's first line");
_Static_assert(offsetof(struct al_slot, avail) == 64, "the owner lists start a line");
_Static_assert(sizeof(struct al_slot) == 64 + 4 * AL_MAX_ARENAS * AL_NCLASSES +
               sizeof(struct al_counts) && sizeof(struct al_slot) % 64 == 0, "al_slot layout");

/* Process-local view of the allocator in one segment. */
struct al_ctx {
        struct seg *s;
        struct al_shared *sh;
        struct page_desc *desc;
        struct arena *arena[AL_MAX_ARENAS];
        uint32_t narenas;
        uint32_t npages;
        uint32_t pfirst[AL_MAX_ARENAS], pcount[AL_MAX_ARENAS];  /* copies, checked at attach */
        uint64_t hoff[AL_MAX_ARENAS];
        uint64_t *bm[AL_MAX_ARENAS];                            /* free-page bitmaps */
        _Atomic uint64_t *rl[AL_MAX_ARENAS];                    /* relist bitmaps */
};

/* A slot's heap, process-local: used by one thread at a time. */
struct al_heap {
        struct al_ctx *ctx;
        struct al_slot *as;
        uint32_t slot, gen;
        uint32_t home;                  /* preferred arena */
        /*
         * A thief died with our lists half walked: until every span we own
         * has been handed back (al_abandon_all completes), our lists are not
         * to be trusted, and no operation of ours uses them.
         */
        bool lists_stale;
};

/* ---- size classes (classes.c) ---- */
extern const uint32_t al_class_size[AL_NCLASSES];
extern uint32_t al_nclasses;            /* classes actually used */
int al_size_class(size_t bytes);        /* class for a request (stamp added), or -1: run */
uint32_t al_class_span(unsigned cls);   /* pages a span of this class takes */
uint32_t al_class_capacity(unsigned cls);

/* ---- layout and attach (arena.c) ---- */
struct al_layout_req {
        unsigned nnodes;
        int nodes[AL_MAX_ARENAS];
};
/* Add the allocator's regions to `lo`, given the bytes left for them. */
int al_layout(uint64_t avail_bytes, const struct al_layout_req *req, struct seg_layout *lo);
int al_format(struct seg *s);                   /* at creation */
int al_attach(struct al_ctx *c, struct seg *s); /* every process */
uint32_t al_slot_ext_size(void);

static inline struct page_desc *al_desc(const struct al_ctx *c, uint32_t page)
{
        return &c->desc[page];
}

/*
 * A descriptor's class as an array index: read once, and never out of range
 * even if another process scribbles on the descriptor between our check and
 * our use (a wrong class then gives wrong counts, which al_check reports).
 */
static inline unsigned al_cls_of(const struct page_desc *d)
{
        unsigned cls = __atomic_load_n(&d->cls, __ATOMIC_RELAXED);

        return cls < AL_NCLASSES ? cls : AL_NCLASSES - 1;
}
uint64_t al_page_off(const struct al_ctx *c, uint32_t page);
/*
 * Does the descriptor of head page `page` agree with itself and the class
 * table (arena, class, span, capacity inside the arena)? Descriptors live in
 * shared memory that another process may have scribbled on; every path that
 * computes addresses from one checks it first.
 */
bool al_desc_sane(const struct al_ctx *c, uint32_t page);
/* Page index of a heap offset, or UINT32_MAX if it is not in any arena. */
uint32_t al_page_of(const struct al_ctx *c, uint64_t off);
unsigned al_arena_of_page(const struct al_ctx *c, uint32_t page);
int al_arena_for_node(const struct al_ctx *c, int node);

/*
 * Take an arena's lock: 0, or -EAGAIN when a live holder keeps it past the
 * olock's wait (the caller does without), or STOA_E_CORRUPT. A lock taken
 * from a dead holder is repaired first; spans marked for relisting are
 * listed. The try form does not wait for a live holder at all.
 */
int al_arena_lock(struct al_heap *h, unsigned a);
int al_arena_trylock(struct al_heap *h, unsigned a);
void al_arena_unlock(struct al_heap *h, unsigned a);
/* Put a disowned span with free blocks on its abandoned list (lock held). */
void al_list_abandoned(struct al_ctx *c, unsigned a, uint32_t page);
/* Without the lock: mark it, for the lock's next holder to list. */
void al_relist_later(struct al_ctx *c, unsigned a, uint32_t page);
bool al_relist_marked(const struct al_ctx *c, uint32_t page);
/* Rebuild an arena's bitmap and counters from the descriptors (lock held). */
void al_arena_rebuild(struct al_ctx *c, unsigned a);
/* Take `n` contiguous free pages (lock held). UINT32_MAX if none. */
uint32_t al_pages_take(struct al_ctx *c, unsigned a, uint32_t n);
/* Give pages back (lock held); descriptors set FREE. */
void al_pages_give(struct al_ctx *c, unsigned a, uint32_t first, uint32_t n);

/* ---- heaps (slab.c) ---- */
void al_heap_init(struct al_heap *h, struct al_ctx *c, uint32_t slot, uint32_t gen);
/*
 * Allocate `bytes` on `node` (-1: the heap's home arena; another arena if
 * that one is full). On success *ret_off is the offset of the usable memory
 * (8-byte aligned, stamp just before it) and the allocation stays journalled
 * until al_commit() or the heap's next operation.
 */
int al_alloc(struct al_heap *h, size_t bytes, int node, uint64_t *ret_off);
/*
 * Free a block. 0; -EINVAL if `off` is not an allocated block (the error
 * detail says why); -EAGAIN only for a page run whose arena's lock a stopped
 * client holds (try again later). Never waits longer than the olock's bound.
 */
int al_free(struct al_heap *h, uint64_t off);
/* Free it only if it still carries `stamp` (a late free, by a recovery). */
int al_free_stamped(struct al_heap *h, uint64_t off, uint64_t stamp);
void al_commit(struct al_heap *h);
/* Usable bytes of an allocated block; 0 if `off` is not one. */
size_t al_usable(const struct al_ctx *c, uint64_t off);
uint64_t al_stamp(const struct al_ctx *c, uint64_t off);
/*
 * For walks over the heap that read it unlocked (the cache's eviction hands):
 * answers from descriptors and bitmaps that others may be changing, checked
 * against the class tables so that they never point outside the span.
 */
/* Blocks in the slab span headed at `page`; 0 if it is not one. */
uint32_t al_span_capacity(const struct al_ctx *c, uint32_t page);
/* The user offset of block `idx` of that span, or 0 if there is none. */
uint64_t al_span_block(const struct al_ctx *c, uint32_t page, uint32_t idx);
/* Its blocks free now (privately or remotely), a snapshot. */
uint32_t al_span_free_blocks(const struct al_ctx *c, uint32_t page);
/* The user offset of the run headed at `page`. */
uint64_t al_run_block(const struct al_ctx *c, uint32_t page);
/* Give emptied abandoned spans of every class back to the arenas. Returns pages. */
uint32_t al_trim(struct al_heap *h);
/*
 * Take the spans of live slots that are not inside an allocator operation
 * (idle clients): emptied ones go back to the arena, the others are disowned
 * for any slot to adopt. Returns pages given back.
 */
uint32_t al_steal_idle(struct al_heap *h);
/*
 * Return this heap's empty pages to the arena and abandon the rest (slot
 * release). -EAGAIN if an arena's lock or our lists were held by a stopped
 * client: the spans of that arena stay on the slot's lists, for the slot's
 * next holder (or a thief) to use.
 */
int al_heap_abandon(struct al_heap *h);
/*
 * Hand every span `slot` owns to the arenas, found by the descriptors (not
 * its lists, which may be torn): empty ones become free pages, the others are
 * disowned. The slot's lists must be the caller's (its steal word, or its
 * own op). 0, or -EAGAIN (an arena was locked; its spans stay owned).
 */
int al_abandon_all(struct al_heap *h, uint32_t slot);

/*
 * Recovery of a dead slot (called with its slot lock byte held).
 * `published` answers, for the block the dead slot had just allocated,
 * whether the upper layer had made it reachable; NULL means "no".
 */
typedef bool (*al_published_fn)(uint64_t off, void *arg);
/* What settling a dead slot's journal did. */
enum { AL_JOURNAL_NOTHING = 0, AL_JOURNAL_UNDONE = 1, AL_JOURNAL_KEPT = 2 };
struct al_recovery {
        uint32_t pages_freed, pages_abandoned;
        int journal_op;                 /* J_* found */
        int journal_action;             /* AL_JOURNAL_*: what the journal's settling did */
};
/*
 * 0, or -EAGAIN when something it needs is held by a stopped client: the
 * recovery stopped part way, at a point from which it can be run again (every
 * step is safe to redo), and the slot stays dead until it is.
 */
int al_recover_slot(struct al_ctx *c, uint32_t dead, al_published_fn published, void *arg,
                    struct al_recovery *ret);

/*
 * What the recovery of a slot's journal will do, decided without doing it:
 * the counter values it sets, whether the block it names (allocated now)
 * ends up free, and the span it makes sure is listed. al_check applies this
 * to the journals of dead, not yet recovered slots, so that a sound segment
 * with dead clients is reported sound.
 */
struct al_outlook {
        int op;                         /* J_* */
        int action;                     /* internal to recover.c */
        uint64_t off;
        uint32_t page, idx;             /* the block's span and index (UINT32_MAX: a run) */
        unsigned arena, cls;            /* the counters it sets */
        bool set_allocs, set_frees;
        uint64_t allocs, frees;
        bool block_freed;
};
void al_journal_outlook(const struct al_ctx *c, uint32_t slot, al_published_fn published, void *arg,
                        struct al_outlook *out);

/* ---- statistics and checks (stats.c) ---- */
struct al_class_stats {
        uint32_t block_size;
        uint64_t allocs, frees;         /* calls */
        uint64_t used_bytes;            /* blocks in use x block size */
        uint64_t held_bytes;            /* slab pages of this class */
};
struct al_arena_stats {
        int node;
        uint64_t total_bytes, free_bytes, peak_used_bytes;
        uint64_t run_bytes, run_allocs, run_frees, repairs;
        struct al_class_stats cls[AL_NCLASSES];
};
struct al_stats {
        uint32_t narenas, nclasses;
        uint64_t used_bytes;            /* in small blocks and runs */
        uint64_t held_bytes;            /* pages not free */
        uint64_t fragmentation_bytes;   /* held by slab pages but not in use */
        struct al_arena_stats a[AL_MAX_ARENAS];
};
void al_stats(const struct al_ctx *c, struct al_stats *out);

/* A consistency problem found by al_check. */
typedef void (*al_report_fn)(void *arg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
struct al_check_result {
        uint64_t blocks_used, blocks_free, pages_free, pages_slab, pages_run;
        uint64_t problems;
};
/*
 * Walk every page and check the invariants. Exact only when no slot is
 * changing the allocator (the tool runs it on a quiet segment or reports
 * what moved). `is_used` (optional) says whether a block the allocator
 * thinks is allocated is reachable, to find leaks.
 */
int al_check(struct al_ctx *c, al_report_fn report, void *arg, struct al_check_result *out);
/*
 * Slots whose holders died and were not recovered yet, for al_check_ex: their
 * journals are applied as their recovery will (al_journal_outlook), spans they
 * were draining may have blocks free in both maps, and an arena they hold the
 * lock of is rebuilt by the next taker, so none of that is a problem.
 */
struct al_dead_slots {
        uint32_t nslots;
        const uint64_t *dead;           /* bitmap of dead slots */
        const uint64_t *keep;           /* per slot: the block its recovery keeps published, or 0 */
};
int al_check_ex(struct al_ctx *c, al_report_fn report, void *arg, struct al_check_result *out,
                const struct al_dead_slots *dead);

/* Call fn for every allocated block (user offset, block bytes). Quiet segment for exactness. */
typedef void (*al_walk_fn)(uint64_t off, uint64_t bytes, void *arg);
void al_walk_used(struct al_ctx *c, al_walk_fn fn, void *arg);

#endif /* STOA_ALLOCATOR_ALLOC_H */
