/*
 * allocator/heap.h: what the allocator's own files share (internal to
 * allocator/): slab.c (spans, small blocks, runs, the API), steal.c (taking
 * the spans of idle slots) and recover.c (a dead slot's journal and spans).
 */
#ifndef STOA_ALLOCATOR_HEAP_H
#define STOA_ALLOCATOR_HEAP_H

#include "allocator/alloc.h"

#define ALL_WORDS ((1ull << AL_BITMAP_WORDS) - 1)      /* remote_summary, every word */

_Static_assert(AL_BITMAP_WORDS < 64, "remote_summary has a bit per bitmap word");

static inline struct slab_hdr *span_hdr(const struct al_ctx *c, uint32_t page)
{
        return seg_ptr(c->s, al_page_off(c, page));
}

static inline uint64_t *stamp_at(const struct al_ctx *c, uint64_t block_off)
{
        return (uint64_t *)(c->s->base + block_off);
}

/* A block's stamp, read once (another slot may be writing it). */
static inline uint64_t stamp_load(const struct al_ctx *c, uint64_t block_off)
{
        return __atomic_load_n(stamp_at(c, block_off), __ATOMIC_ACQUIRE);
}

/* A link read from shared memory: page index + 1, or 0 (also for garbage). */
static inline uint32_t link_ok(const struct al_ctx *c, uint32_t link)
{
        return link && link - 1 < c->npages ? link : 0;
}

static inline void journal(struct al_slot *as, int op, uint64_t off, uint64_t stamp)
{
        as->j.off = off;
        as->j.stamp = stamp;
        atomic_store_explicit(&as->j.op, (uint64_t)op, memory_order_release);
}

/* Journal a small-block operation with the counter it will bump (alloc.h). */
static inline void journal_block(struct al_slot *as, int op, uint64_t off, uint64_t stamp,
                                 unsigned ai, unsigned cls, uint64_t count)
{
        as->j.arena = ai;
        as->j.cls = cls;
        as->j.count = count;
        journal(as, op, off, stamp);
}

static inline void journal_clear(struct al_slot *as)
{
        atomic_store_explicit(&as->j.op, J_NONE, memory_order_release);
}

/* ---- slab.c ---- */
void al_list_push(struct al_ctx *c, uint32_t *head, uint32_t page);
void al_list_del(struct al_ctx *c, uint32_t *head, uint32_t page);
/* Move a span's remotely freed blocks to its private bitmap (its owner, or the lock). */
uint32_t al_drain(struct al_ctx *c, uint32_t page, struct slab_hdr *sh);
uint32_t al_count_local_free(const struct slab_hdr *sh);
/* Disown a span (arena lock held): owner 0, and listed if it has a free block. */
void al_disown_locked(struct al_ctx *c, unsigned ai, uint32_t page);
/* After a remote free found the summary empty: list the span if it is ownerless. Never waits. */
void al_list_if_disowned(struct al_heap *h, uint32_t page);
/* A block's span head page and index (UINT32_MAX for a run). -EINVAL if it is none. */
int al_locate(const struct al_ctx *c, uint64_t off, uint32_t *ret_page, uint32_t *ret_idx);
/* OR the block's remote bit, then its summary bit. Returns the summary before. */
uint64_t al_remote_free(struct slab_hdr *sh, uint32_t idx);
/* Free a run if it is still the allocation `stamp` names. 0, -EINVAL, -EAGAIN. */
int al_run_free(struct al_heap *h, uint32_t page, uint64_t stamp);
/* Give emptied spans (our own, and abandoned ones) back to the arenas. */
uint32_t al_trim_op(struct al_heap *h);

/* ---- steal.c ---- */
/*
 * Enter an operation on the heap's own lists (busy = 1). -EAGAIN when a live
 * thief holds them past the olock's wait: the caller does without its lists.
 */
int al_op_begin(struct al_heap *h);
void al_op_end(struct al_heap *h);
/* Disown every span on a slot's lists (its steal word held). -EAGAIN: an arena was skipped. */
int al_lists_disown(struct al_heap *thief, struct al_slot *as, uint32_t slot);

#endif /* STOA_ALLOCATOR_HEAP_H */
