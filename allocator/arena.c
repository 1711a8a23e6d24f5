/*
 * allocator/arena.c: the layout of the allocator's regions, the arenas'
 * free-page bitmaps, and the arena lock with its repair.
 *
 * The free-page bitmap (1 = free) is derived state: the page descriptors are
 * the truth. A holder of the arena lock that dies mid-update leaves the
 * bitmap and counters possibly wrong, and the next taker rebuilds them from
 * the descriptors (al_arena_rebuild) before it does anything else.
 */
#include "allocator/heap.h"
#include "shm/slots.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <numa.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

#define HEAP_ALIGN (2u << 20)

static uint64_t align_up(uint64_t x, uint64_t a)
{
        return (x + a - 1) & ~(a - 1);
}

static uint64_t bitmap_bytes(uint32_t npages)
{
        return align_up((npages + 63) / 64 * 8, 64);
}

/* The header, then the free-page bitmap, then the relist bitmap. */
static uint64_t arena_bytes(uint32_t npages)
{
        return sizeof(struct arena) + 2 * bitmap_bytes(npages);
}

uint32_t al_slot_ext_size(void)
{
        return (uint32_t)sizeof(struct al_slot);
}

int al_layout(uint64_t avail, const struct al_layout_req *req, struct seg_layout *lo)
{
        unsigned na = req && req->nnodes ? req->nnodes : 1;

        if (na > AL_MAX_ARENAS)
                return -E2BIG;
        if (lo->n + 2 + na > SEG_MAX_REGIONS)
                return -E2BIG;
        /* Per page: the page, its descriptor, its bitmap bit; plus alignment slack. */
        uint64_t fixed = 64 + na * (arena_bytes(0) + 64) + (uint64_t)na * HEAP_ALIGN + 2 * 4096;
        if (avail <= fixed)
                return -ENOSPC;
        uint64_t per_arena = (avail - fixed) / na / (AL_PAGE_SIZE + 64 + 1);
        per_arena &= ~31ull;    /* whole 2 MiB */
        if (per_arena < 32)
                return -ENOSPC;
        uint64_t arenas = 64;
        for (unsigned i = 0; i < na; i++)
                arenas += align_up(arena_bytes((uint32_t)per_arena), 64);
        lo->r[lo->n++] = (typeof(lo->r[0])){ SEG_REGION_ARENAS, -1, arenas, 64 };
        lo->r[lo->n++] = (typeof(lo->r[0])){ SEG_REGION_PAGEDESC, -1,
                                             per_arena * na * sizeof(struct page_desc), 4096 };
        for (unsigned i = 0; i < na; i++) {
                int node = req && req->nnodes ? req->nodes[i] : -1;
                lo->r[lo->n++] = (typeof(lo->r[0])){ SEG_REGION_HEAP, node,
                                                     per_arena * AL_PAGE_SIZE, HEAP_ALIGN };
        }
        return 0;
}

int al_format(struct seg *s)
{
        const struct seg_region *ra = seg_region(s, SEG_REGION_ARENAS, 0);
        const struct seg_region *rd = seg_region(s, SEG_REGION_PAGEDESC, 0);
        struct al_shared *sh;
        uint64_t off;
        uint32_t first = 0;

        if (!ra || !rd)
                return -EINVAL;
        sh = seg_ptr(s, ra->off);
        memset(sh, 0, ra->size);
        memset(seg_ptr(s, rd->off), 0, rd->size);
        sh->desc_off = rd->off;
        sh->nclasses = al_nclasses;
        off = ra->off + 64;
        for (unsigned i = 0; i < AL_MAX_ARENAS; i++) {
                const struct seg_region *rh = seg_region(s, SEG_REGION_HEAP, i);
                if (!rh)
                        break;
                struct arena *a = seg_ptr(s, off);
                uint32_t np = (uint32_t)(rh->size / AL_PAGE_SIZE);
                a->magic = AL_ARENA_MAGIC;
                a->node = rh->node;
                a->first_page = first;
                a->npages = np;
                a->heap_off = rh->off;
                a->free_pages = np;
                a->bitmap_off = off + sizeof(struct arena);
                a->relist_off = a->bitmap_off + bitmap_bytes(np);
                uint64_t *bm = seg_ptr(s, a->bitmap_off);
                for (uint32_t p = 0; p < np; p++)
                        bm[p / 64] |= 1ull << (p % 64);
                sh->arena_off[i] = off;
                sh->narenas = i + 1;
                first += np;
                off += align_up(arena_bytes(np), 64);
        }
        sh->npages = first;
        if ((uint64_t)first * sizeof(struct page_desc) > rd->size)
                return -EINVAL;
        for (uint32_t i = 0; i < sh->narenas; i++) {
                struct arena *a = seg_ptr(s, sh->arena_off[i]);
                for (uint32_t p = 0; p < a->npages; p++)
                        ((struct page_desc *)seg_ptr(s, rd->off))[a->first_page + p].arena = (uint8_t)i;
        }
        sh->magic = AL_ARENA_MAGIC;
        return 0;
}

int al_attach(struct al_ctx *c, struct seg *s)
{
        const struct seg_region *ra = seg_region(s, SEG_REGION_ARENAS, 0);
        const struct seg_region *rd = seg_region(s, SEG_REGION_PAGEDESC, 0);

        memset(c, 0, sizeof(*c));
        if (!ra || !rd)
                goto corrupt;
        c->s = s;
        c->sh = seg_ptr(s, ra->off);
        if (c->sh->magic != AL_ARENA_MAGIC || c->sh->narenas == 0 ||
            c->sh->narenas > AL_MAX_ARENAS || c->sh->desc_off != rd->off ||
            (uint64_t)c->sh->npages * sizeof(struct page_desc) > rd->size ||
            c->sh->nclasses != al_nclasses)
                goto corrupt;
        c->desc = seg_ptr(s, rd->off);
        c->narenas = c->sh->narenas;
        c->npages = c->sh->npages;
        for (unsigned i = 0; i < c->narenas; i++) {
                struct arena *a = seg_ptr(s, c->sh->arena_off[i]);
                if (!a || a->magic != AL_ARENA_MAGIC ||
                    a->heap_off + (uint64_t)a->npages * AL_PAGE_SIZE > s->size ||
                    (uint64_t)a->first_page + a->npages > c->npages)
                        goto corrupt;
                c->arena[i] = a;
                if (a->bitmap_off + ((uint64_t)a->npages + 63) / 64 * 8 > s->size ||
                    a->relist_off + ((uint64_t)a->npages + 63) / 64 * 8 > s->size ||
                    a->bitmap_off % 8 || a->relist_off % 8)
                        goto corrupt;
                c->pfirst[i] = a->first_page;
                c->pcount[i] = a->npages;
                c->bm[i] = seg_ptr(s, a->bitmap_off);
                c->rl[i] = seg_ptr(s, a->relist_off);
                c->hoff[i] = a->heap_off;
        }
        return 0;
corrupt:
        seg_set_errdetail("allocator metadata is corrupt");
        return STOA_E_CORRUPT;
}

/* From process-local copies: a scribbled descriptor cannot send us elsewhere. */
uint64_t al_page_off(const struct al_ctx *c, uint32_t page)
{
        for (unsigned i = 0; i < c->narenas; i++)
                if (page - c->pfirst[i] < c->pcount[i])
                        return c->hoff[i] + (uint64_t)(page - c->pfirst[i]) * AL_PAGE_SIZE;
        return c->hoff[0];      /* not a page: callers never pass one */
}

bool al_desc_sane(const struct al_ctx *c, uint32_t page)
{
        if (page >= c->npages)
                return false;
        const struct page_desc *d = al_desc(c, page);
        unsigned a = __atomic_load_n(&d->arena, __ATOMIC_RELAXED);
        if (a >= c->narenas || page - c->pfirst[a] >= c->pcount[a] || d->span == 0 ||
            d->span > c->pfirst[a] + c->pcount[a] - page)
                return false;
        /* Each field read once: another process may be writing them as we look. */
        uint8_t state = __atomic_load_n(&d->state, __ATOMIC_RELAXED);
        unsigned cls = __atomic_load_n(&d->cls, __ATOMIC_RELAXED);
        if (state == PAGE_RUN)
                return true;
        return state == PAGE_SLAB && cls < al_nclasses &&
               d->span == al_class_span(cls) && d->capacity == al_class_capacity(cls) &&
               d->block_size == al_class_size[cls];
}

uint32_t al_page_of(const struct al_ctx *c, uint64_t off)
{
        for (unsigned i = 0; i < c->narenas; i++)
                if (off >= c->hoff[i] && off < c->hoff[i] + (uint64_t)c->pcount[i] * AL_PAGE_SIZE)
                        return c->pfirst[i] + (uint32_t)((off - c->hoff[i]) >> AL_PAGE_SHIFT);
        return UINT32_MAX;
}

unsigned al_arena_of_page(const struct al_ctx *c, uint32_t page)
{
        return c->desc[page].arena;
}

int al_arena_for_node(const struct al_ctx *c, int node)
{
        for (unsigned i = 0; i < c->narenas; i++) {
                if (c->arena[i]->node == node)
                        return (int)i;
        }
        /* A segment laid out without node binding has one unbound arena. */
        if (c->narenas == 1 && c->arena[0]->node < 0)
                return 0;
        return -1;
}

/* ---- lock and repair ----------------------------------------------------- */

static bool span_has_free(const struct al_ctx *c, uint32_t page);
static void restore_summary(const struct al_ctx *c, uint32_t page);

/* List a disowned span with free blocks on its class's abandoned list (lock held). */
void al_list_abandoned(struct al_ctx *c, unsigned ai, uint32_t page)
{
        struct page_desc *d = al_desc(c, page);
        struct arena *a = c->arena[ai];
        uint32_t *head = &a->abandoned[al_cls_of(d)];

        *head = *head && *head - 1 < c->npages ? *head : 0;
        d->prev = 0;
        d->next = *head;
        if (*head)
                c->desc[*head - 1].prev = page + 1;
        *head = page + 1;
        d->full = 1;
}

/* Mark a disowned span for listing by the next holder of the lock (lock not held). */
void al_relist_later(struct al_ctx *c, unsigned ai, uint32_t page)
{
        uint32_t rel = page - c->pfirst[ai];

        atomic_fetch_or_explicit(&c->rl[ai][rel / 64], 1ull << (rel % 64), memory_order_seq_cst);
        atomic_store_explicit(&c->arena[ai]->relist, 1, memory_order_seq_cst);
}

/*
 * Whether an ownerless span has a free block and so belongs on the abandoned
 * list (lock held). One with none and a summary bit set carries a stale bit:
 * a freer paused between its two ORs (the block's bit, then the summary's)
 * saw its block drained and handed out again before it set the summary. Left
 * set, that bit would tell the next freer the span is listed already, and
 * the span would be lost to every slot. So it is cleared, and the bitmap
 * looked at again: a block freed meanwhile keeps the span, and its summary
 * bit is put back; a block freed later finds the summary 0 and lists it.
 * Only ownerless spans under the lock: nobody else drains them.
 */
static bool span_listable(const struct al_ctx *c, uint32_t page)
{
        struct slab_hdr *sh = seg_ptr(c->s, al_page_off(c, page));

        if (span_has_free(c, page))
                return true;
        if (!atomic_exchange_explicit(&sh->remote_summary, 0, memory_order_seq_cst))
                return false;
        if (!span_has_free(c, page))
                return false;
        restore_summary(c, page);
        return true;
}

/*
 * List the spans marked by al_relist_later (lock held). The flag is taken
 * before the bits are read, and a marker sets its bit before the flag, so
 * a mark made after this pass looked is found by the next one.
 */
static void relist_marked(struct al_ctx *c, unsigned ai)
{
        if (!atomic_exchange_explicit(&c->arena[ai]->relist, 0, memory_order_seq_cst))
                return;
        for (uint32_t w = 0; w < (c->pcount[ai] + 63) / 64; w++) {
                uint64_t bits = atomic_exchange_explicit(&c->rl[ai][w], 0, memory_order_acq_rel);
                for (; bits; bits &= bits - 1) {
                        uint32_t p = c->pfirst[ai] + w * 64 + (uint32_t)__builtin_ctzll(bits);
                        struct page_desc *d = al_desc(c, p);
                        if (p < c->pfirst[ai] + c->pcount[ai] && d->state == PAGE_SLAB &&
                            d->owner == 0 && !d->full && al_desc_sane(c, p) && span_listable(c, p))
                                al_list_abandoned(c, ai, p);
                }
        }
}

bool al_relist_marked(const struct al_ctx *c, uint32_t page)
{
        unsigned ai = al_arena_of_page(c, page);

        if (ai >= c->narenas)
                return false;
        uint32_t rel = page - c->pfirst[ai];
        return atomic_load_explicit(&c->rl[ai][rel / 64], memory_order_relaxed) & (1ull << (rel % 64));
}

static int lock_arena(struct al_heap *h, unsigned ai, bool wait)
{
        bool broken;

        if (ai >= h->ctx->narenas) {    /* a scribbled descriptor */
                seg_set_errdetail("arena %u does not exist: allocator metadata is corrupt", ai);
                return STOA_E_CORRUPT;
        }
        struct olock *l = &h->ctx->arena[ai]->lock;
        int r = wait ? olock_acquire(h->ctx->s, l, h->slot, h->gen, &broken)
                     : olock_try(h->ctx->s, l, h->slot, h->gen, &broken);

        if (r < 0) {
                if (r == -EAGAIN && wait) {
                        char why[200];
                        snprintf(why, sizeof(why), "%s", seg_errdetail());
                        seg_set_errdetail("the allocator's arena %u is locked: %s", ai, why);
                }
                return r;
        }
        if (broken)
                al_arena_rebuild(h->ctx, ai);
        relist_marked(h->ctx, ai);
        return 0;
}

int al_arena_lock(struct al_heap *h, unsigned ai)
{
        return lock_arena(h, ai, true);
}

int al_arena_trylock(struct al_heap *h, unsigned ai)
{
        return lock_arena(h, ai, false);
}

void al_arena_unlock(struct al_heap *h, unsigned ai)
{
        if (ai < h->ctx->narenas)
                olock_release(&h->ctx->arena[ai]->lock);
}

static uint64_t *arena_bitmap(const struct al_ctx *c, const struct arena *a)
{
        for (unsigned i = 0; i < c->narenas; i++)
                if (c->arena[i] == a)
                        return c->bm[i];
        return c->bm[0];
}

/*
 * Whether the tail page `p` belongs to a committed span or run: a holder
 * killed between writing the tails and committing the head (span_acquire,
 * run_alloc), or in al_pages_give after the head, leaves tails whose head is
 * FREE or covers less.
 */
static bool tail_is_held(const struct al_ctx *c, unsigned ai, uint32_t p)
{
        const struct page_desc *t = &c->desc[p];
        uint32_t h = t->span;

        if (h < c->pfirst[ai] || h >= p)
                return false;
        const struct page_desc *d = &c->desc[h];
        uint8_t want = t->state == PAGE_SLAB_TAIL ? PAGE_SLAB : PAGE_RUN;
        return d->state == want && p < h + d->span;
}

/* A span some block of which is free, locally or remotely (lock held). */
static bool span_has_free(const struct al_ctx *c, uint32_t page)
{
        const struct slab_hdr *sh = seg_ptr(c->s, al_page_off(c, page));

        for (unsigned w = 0; w < AL_BITMAP_WORDS; w++)
                if (sh->local_free[w] || atomic_load_explicit(&sh->remote_free[w],
                                                              memory_order_relaxed))
                        return true;
        return false;
}

/*
 * A drain cut short (its holder killed between taking the summary and moving
 * the bits) leaves remote bits that no summary bit points at, and a drain
 * only looks where the summary points: set the summary from the bitmap.
 */
static void restore_summary(const struct al_ctx *c, uint32_t page)
{
        struct slab_hdr *sh = seg_ptr(c->s, al_page_off(c, page));
        uint64_t want = 0;

        for (unsigned w = 0; w < AL_BITMAP_WORDS; w++)
                if (atomic_load_explicit(&sh->remote_free[w], memory_order_relaxed))
                        want |= 1ull << w;
        if (want)
                atomic_fetch_or_explicit(&sh->remote_summary, want, memory_order_seq_cst);
}

void al_arena_rebuild(struct al_ctx *c, unsigned ai)
{
        struct arena *a = c->arena[ai];
        uint64_t *bm = arena_bitmap(c, a);
        uint32_t used = 0;

        /* Orphaned tails are free pages. */
        for (uint32_t p = c->pfirst[ai]; p < c->pfirst[ai] + c->pcount[ai]; p++) {
                struct page_desc *d = &c->desc[p];
                if ((d->state == PAGE_SLAB_TAIL || d->state == PAGE_RUN_TAIL) &&
                    !tail_is_held(c, ai, p)) {
                        __atomic_store_n(&d->owner, 0, __ATOMIC_RELAXED);
                        d->next = d->prev = 0;
                        d->full = 0;
                        d->state = PAGE_FREE;
                }
        }

        memset(bm, 0, (c->pcount[ai] + 63) / 64 * 8);
        /* Every ownerless span with a free block is relinked below: no mark is needed. */
        atomic_store_explicit(&a->relist, 0, memory_order_relaxed);
        for (uint32_t w = 0; w < (c->pcount[ai] + 63) / 64; w++)
                atomic_store_explicit(&c->rl[ai][w], 0, memory_order_relaxed);
        memset(a->slab_pages, 0, sizeof(a->slab_pages));
        memset(a->abandoned, 0, sizeof(a->abandoned));
        a->run_pages = 0;
        a->run_bytes = 0;
        for (uint32_t p = 0; p < c->pcount[ai]; p++) {
                struct page_desc *d = &c->desc[c->pfirst[ai] + p];
                switch (d->state) {
                case PAGE_FREE:
                        bm[p / 64] |= 1ull << (p % 64);
                        break;
                case PAGE_SLAB:
                        a->slab_pages[al_cls_of(d)] += d->span;
                        d->full = 0;
                        if (al_desc_sane(c, c->pfirst[ai] + p)) {
                                restore_summary(c, c->pfirst[ai] + p);
                                if (d->owner == 0)      /* a drain cut short: count afresh */
                                        d->nfree = al_count_local_free(
                                                seg_ptr(c->s, al_page_off(c, c->pfirst[ai] + p)));
                        }
                        if (d->owner == 0 && al_desc_sane(c, c->pfirst[ai] + p) &&
                            span_listable(c, c->pfirst[ai] + p))
                                al_list_abandoned(c, ai, c->pfirst[ai] + p);  /* relink */
                        used += d->span;
                        break;
                case PAGE_RUN:
                        a->run_pages += d->span;
                        a->run_bytes += d->run_bytes;
                        used += d->span;
                        break;
                default:
                        break;
                }
        }
        a->free_pages = c->pcount[ai] - used;
        a->hint = 0;
        if (used > a->peak_used_pages)
                a->peak_used_pages = used;
        a->repairs++;
}

uint32_t al_pages_take(struct al_ctx *c, unsigned ai, uint32_t n)
{
        struct arena *a = c->arena[ai];
        uint64_t *bm = arena_bitmap(c, a);
        uint32_t run = 0, start = 0;

        if (n == 0 || n > a->free_pages)
                return UINT32_MAX;
        for (uint32_t p = a->hint; p < c->pcount[ai]; p++) {
                if (run == 0 && (p % 64) == 0 && bm[p / 64] == 0) {
                        p += 63;        /* a word with no free page */
                        continue;
                }
                if (bm[p / 64] & (1ull << (p % 64))) {
                        if (run++ == 0)
                                start = p;
                        if (run == n)
                                goto found;
                } else {
                        run = 0;
                }
        }
        return UINT32_MAX;
found:
        for (uint32_t p = start; p < start + n; p++)
                bm[p / 64] &= ~(1ull << (p % 64));
        a->free_pages -= n;
        if (n == 1 && start == a->hint)
                a->hint = start + 1;
        uint32_t used = c->pcount[ai] - a->free_pages;
        if (used > a->peak_used_pages)
                a->peak_used_pages = used;
        return c->pfirst[ai] + start;
}

void al_pages_give(struct al_ctx *c, unsigned ai, uint32_t first, uint32_t n)
{
        struct arena *a = c->arena[ai];
        uint64_t *bm = arena_bitmap(c, a);
        uint32_t rel = first - c->pfirst[ai];

        /* Descriptors first (the truth), then the derived bitmap. */
        for (uint32_t p = first; p < first + n; p++) {
                struct page_desc *d = &c->desc[p];
                __atomic_store_n(&d->owner, 0, __ATOMIC_RELAXED);
                d->next = d->prev = 0;
                d->full = 0;
                d->state = PAGE_FREE;
        }
        for (uint32_t p = rel; p < rel + n; p++)
                bm[p / 64] |= 1ull << (p % 64);
        a->free_pages += n;
        if (rel < a->hint)
                a->hint = rel;
}
