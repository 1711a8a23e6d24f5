/*
 * allocator/stats.c: lock-free statistics and the consistency check.
 *
 * Statistics sum per-slot counters (each written only by its slot) and the
 * arenas' page counts, with relaxed loads and no lock: cheap enough to poll,
 * exact when the writers are quiet, never torn per field.
 */
#include "allocator/alloc.h"
#include "shm/slots.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void al_stats(const struct al_ctx *c, struct al_stats *out)
{
        memset(out, 0, sizeof(*out));
        out->narenas = c->narenas;
        out->nclasses = al_nclasses;
        for (uint32_t s = 0; s < slots_count(c->s); s++) {
                const struct al_slot *as = slot_ext(c->s, s);
                for (unsigned a = 0; a < c->narenas; a++) {
                        for (unsigned k = 0; k < al_nclasses; k++) {
                                out->a[a].cls[k].allocs += __atomic_load_n(&as->c.allocs[a][k], __ATOMIC_RELAXED);
                                out->a[a].cls[k].frees += __atomic_load_n(&as->c.frees[a][k], __ATOMIC_RELAXED);
                        }
                }
        }
        for (unsigned a = 0; a < c->narenas; a++) {
                const struct arena *ar = c->arena[a];
                struct al_arena_stats *st = &out->a[a];
                st->node = ar->node;
                st->total_bytes = (uint64_t)c->pcount[a] * AL_PAGE_SIZE;
                st->free_bytes = (uint64_t)__atomic_load_n(&ar->free_pages, __ATOMIC_RELAXED) * AL_PAGE_SIZE;
                st->peak_used_bytes = (uint64_t)__atomic_load_n(&ar->peak_used_pages, __ATOMIC_RELAXED) * AL_PAGE_SIZE;
                st->run_bytes = __atomic_load_n(&ar->run_bytes, __ATOMIC_RELAXED);
                st->run_allocs = __atomic_load_n(&ar->run_allocs, __ATOMIC_RELAXED);
                st->run_frees = __atomic_load_n(&ar->run_frees, __ATOMIC_RELAXED);
                st->repairs = __atomic_load_n(&ar->repairs, __ATOMIC_RELAXED);
                out->used_bytes += st->run_bytes;
                out->held_bytes += st->total_bytes - st->free_bytes;
                for (unsigned k = 0; k < al_nclasses; k++) {
                        struct al_class_stats *cs = &st->cls[k];
                        cs->block_size = al_class_size[k];
                        uint64_t live = cs->allocs > cs->frees ? cs->allocs - cs->frees : 0;
                        cs->used_bytes = live * cs->block_size;
                        cs->held_bytes = (uint64_t)__atomic_load_n(&ar->slab_pages[k], __ATOMIC_RELAXED) *
                                         AL_PAGE_SIZE;
                        out->used_bytes += cs->used_bytes;
                        uint64_t waste = cs->held_bytes > cs->used_bytes ? cs->held_bytes - cs->used_bytes : 0;
                        out->fragmentation_bytes += waste;
                }
        }
}

/* What the recovery of dead, not yet recovered slots will do (al_check_ex). */
struct dead_view {
        const struct al_dead_slots *ds;
        struct al_outlook o[SLOTS_MAX]; /* the dead slots' journals, as recovery will settle them */
        uint32_t slot[SLOTS_MAX];       /* whose */
        unsigned n;
        bool arena_dead[AL_MAX_ARENAS]; /* locked by a dead holder: rebuilt by the next taker */
};

static bool slot_dead(const struct dead_view *dv, uint32_t slot)
{
        return dv && dv->ds && slot < dv->ds->nslots &&
               (dv->ds->dead[slot / 64] & (1ull << (slot % 64)));
}

/* A dead slot's journal names this block (page, idx) or this span. */
static const struct al_outlook *named(const struct dead_view *dv, uint32_t page, uint32_t idx)
{
        for (unsigned i = 0; dv && i < dv->n; i++)
                if (dv->o[i].page == page && (idx == UINT32_MAX || dv->o[i].idx == idx))
                        return &dv->o[i];
        return NULL;
}

static void check_span(struct al_ctx *c, uint32_t p, al_report_fn report, void *arg,
                       struct al_check_result *r, uint64_t *live_by_class, const struct dead_view *dv,
                       unsigned ai)
{
        const struct page_desc *d = al_desc(c, p);
        const struct slab_hdr *sh = seg_ptr(c->s, al_page_off(c, p));
        uint64_t base = al_page_off(c, p) + AL_SLAB_HDR;
        /* A drain cut short by a dead owner (or lock holder) leaves bits in both maps. */
        bool dead_drainer = (d->owner && slot_dead(dv, d->owner - 1)) || (dv && dv->arena_dead[ai]);

        unsigned cls = __atomic_load_n(&d->cls, __ATOMIC_RELAXED);
        if (cls >= al_nclasses || d->block_size != al_class_size[cls] ||
            d->capacity != al_class_capacity(cls) || d->span != al_class_span(cls)) {
                report(arg, "page %u: slab descriptor disagrees with class %u", p, cls);
                r->problems++;
                return;
        }
        for (uint32_t t = p + 1; t < p + d->span; t++) {
                if (al_desc(c, t)->state != PAGE_SLAB_TAIL || al_desc(c, t)->span != p) {
                        report(arg, "page %u: tail of span %u is not marked as such", t, p);
                        r->problems++;
                }
        }
        uint32_t nfree = 0;
        for (uint32_t i = 0; i < 64u * AL_BITMAP_WORDS; i++) {
                uint64_t m = 1ull << (i % 64);
                bool lf = sh->local_free[i / 64] & m;
                bool rf = atomic_load_explicit(&sh->remote_free[i / 64], memory_order_relaxed) & m;
                if (i >= d->capacity) {
                        if (lf || rf) {
                                report(arg, "page %u: free bit %u beyond capacity %u", p, i, d->capacity);
                                r->problems++;
                        }
                        continue;
                }
                if (lf && rf && !dead_drainer) {
                        report(arg, "page %u block %u: free twice (local and remote)", p, i);
                        r->problems++;
                }
                uint64_t stamp = *(const uint64_t *)(c->s->base + base + (uint64_t)i * d->block_size);
                const struct al_outlook *o = named(dv, p, i);
                if (lf || rf) {
                        r->blocks_free++;
                        nfree++;
                } else if (o && o->block_freed) {
                        /* Allocated now; free once its dead slot is recovered. */
                        r->blocks_free++;
                        nfree++;
                } else {
                        r->blocks_used++;
                        live_by_class[al_cls_of(d)]++;
                        if (stamp == AL_STAMP_FREE && !o) {
                                report(arg, "page %u block %u: in use but stamped free", p, i);
                                r->problems++;
                        }
                }
        }
        /* An ownerless span with free blocks must be where slots look for one (or marked for it). */
        if (d->owner == 0 && nfree && !d->full && !al_relist_marked(c, p) &&
            !named(dv, p, UINT32_MAX) && !(dv && dv->arena_dead[ai])) {
                report(arg, "page %u: ownerless span with %u free blocks on no list (class %u, "
                       "summary %#llx, nfree %u)", p, nfree, cls,
                       (unsigned long long)atomic_load(&sh->remote_summary), d->nfree);
                r->problems++;
        }
}

/* ---- unlocked walks (the cache's eviction hands) ------------------------ */

uint32_t al_span_capacity(const struct al_ctx *c, uint32_t page)
{
        if (page >= c->npages)
                return 0;
        const struct page_desc *d = al_desc(c, page);
        if (__atomic_load_n(&d->state, __ATOMIC_ACQUIRE) != PAGE_SLAB || !al_desc_sane(c, page))
                return 0;
        uint32_t cap = __atomic_load_n(&d->capacity, __ATOMIC_RELAXED);
        return cap <= AL_BITMAP_WORDS * 64 ? cap : 0;
}

uint64_t al_span_block(const struct al_ctx *c, uint32_t page, uint32_t idx)
{
        if (idx >= al_span_capacity(c, page))
                return 0;
        const struct page_desc *d = al_desc(c, page);
        uint32_t bs = __atomic_load_n(&d->block_size, __ATOMIC_RELAXED);
        uint64_t end = AL_SLAB_HDR + (uint64_t)(idx + 1) * bs;

        if (bs == 0 || end > (uint64_t)__atomic_load_n(&d->span, __ATOMIC_RELAXED) * AL_PAGE_SIZE)
                return 0;
        return al_page_off(c, page) + AL_SLAB_HDR + (uint64_t)idx * bs + AL_STAMP_SIZE;
}

uint32_t al_span_free_blocks(const struct al_ctx *c, uint32_t page)
{
        if (!al_span_capacity(c, page))
                return 0;
        const struct slab_hdr *sh = seg_ptr(c->s, al_page_off(c, page));
        uint32_t n = 0;

        for (unsigned w = 0; w < AL_BITMAP_WORDS; w++)
                n += (uint32_t)__builtin_popcountll(
                        __atomic_load_n(&sh->local_free[w], __ATOMIC_RELAXED) |
                        atomic_load_explicit(&sh->remote_free[w], memory_order_relaxed));
        return n;
}

uint64_t al_run_block(const struct al_ctx *c, uint32_t page)
{
        return al_page_off(c, page) + AL_STAMP_SIZE;
}

void al_walk_used(struct al_ctx *c, al_walk_fn fn, void *arg)
{
        for (uint32_t p = 0; p < c->npages; p++) {
                const struct page_desc *d = al_desc(c, p);
                if (d->state == PAGE_RUN) {
                        fn(al_page_off(c, p) + AL_STAMP_SIZE, (uint64_t)d->span * AL_PAGE_SIZE, arg);
                        continue;
                }
                if (d->state != PAGE_SLAB || d->capacity > 64u * AL_BITMAP_WORDS)
                        continue;
                const struct slab_hdr *sh = seg_ptr(c->s, al_page_off(c, p));
                uint64_t base = al_page_off(c, p) + AL_SLAB_HDR;
                for (uint32_t i = 0; i < d->capacity; i++) {
                        uint64_t m = 1ull << (i % 64);
                        if ((sh->local_free[i / 64] & m) ||
                            (atomic_load_explicit(&sh->remote_free[i / 64], memory_order_relaxed) & m))
                                continue;
                        fn(base + (uint64_t)i * d->block_size + AL_STAMP_SIZE, d->block_size, arg);
                }
        }
}

/* The block a dead slot's recovery keeps published. */
static bool kept_is(uint64_t off, void *arg)
{
        return off && off == *(const uint64_t *)arg;
}

static void dead_view_init(struct al_ctx *c, const struct al_dead_slots *ds, struct dead_view *dv)
{
        memset(dv, 0, sizeof(*dv));
        dv->ds = ds;
        if (!ds)
                return;
        for (uint32_t s = 0; s < ds->nslots && s < slots_count(c->s); s++) {
                if (!slot_dead(dv, s) || dv->n == sizeof(dv->o) / sizeof(dv->o[0]))
                        continue;
                al_journal_outlook(c, s, kept_is, (void *)&ds->keep[s], &dv->o[dv->n]);
                dv->slot[dv->n] = s;
                if (dv->o[dv->n].op != J_NONE)
                        dv->n++;
        }
        for (unsigned ai = 0; ai < c->narenas; ai++) {
                uint64_t w = atomic_load(&c->arena[ai]->lock.word);
                uint32_t hs = (uint32_t)(w >> 32) - 1;
                dv->arena_dead[ai] = w && (slot_dead(dv, hs) ||
                                           (hs < slots_count(c->s) &&
                                            atomic_load(&slot_hdr(c->s, hs)->gen) != (uint32_t)w));
        }
}

int al_check(struct al_ctx *c, al_report_fn report, void *arg, struct al_check_result *out)
{
        return al_check_ex(c, report, arg, out, NULL);
}

int al_check_ex(struct al_ctx *c, al_report_fn report, void *arg, struct al_check_result *out,
                const struct al_dead_slots *ds)
{
        struct al_check_result r = { 0 };
        struct al_stats st;
        uint64_t live[AL_MAX_ARENAS][AL_NCLASSES];
        int64_t adjust[AL_MAX_ARENAS][AL_NCLASSES];
        struct dead_view *dv = malloc(sizeof(*dv));

        if (!dv)
                return -ENOMEM;
        dead_view_init(c, ds, dv);
        memset(live, 0, sizeof(live));
        memset(adjust, 0, sizeof(adjust));
        for (unsigned ai = 0; ai < c->narenas; ai++) {
                const struct arena *a = c->arena[ai];
                const uint64_t *bm = c->bm[ai];
                /* Locked by a dead holder: bitmap and counters are rebuilt by the next taker. */
                bool derived_ok = !dv->arena_dead[ai];
                uint32_t nfree = 0, slab[AL_NCLASSES] = { 0 };
                for (uint32_t rel = 0; rel < c->pcount[ai]; rel++) {
                        uint32_t p = c->pfirst[ai] + rel;
                        const struct page_desc *d = al_desc(c, p);
                        bool bfree = bm[rel / 64] & (1ull << (rel % 64));
                        if (derived_ok && bfree != (d->state == PAGE_FREE)) {
                                report(arg, "page %u: arena bitmap says %s, descriptor says state %u",
                                       p, bfree ? "free" : "used", d->state);
                                r.problems++;
                        }
                        if (d->arena != ai) {
                                report(arg, "page %u: descriptor names arena %u, lies in %u", p, d->arena, ai);
                                r.problems++;
                        }
                        switch (d->state) {
                        case PAGE_FREE:
                                nfree++;
                                r.pages_free++;
                                break;
                        case PAGE_SLAB:
                                if (rel + d->span > c->pcount[ai] || !al_desc_sane(c, p)) {
                                        report(arg, "page %u: span of %u runs past its arena", p, d->span);
                                        r.problems++;
                                        break;
                                }
                                r.pages_slab += d->span;
                                if (d->cls < AL_NCLASSES)
                                        slab[al_cls_of(d)] += d->span;
                                check_span(c, p, report, arg, &r, live[ai], dv, ai);
                                break;
                        case PAGE_RUN:
                                r.pages_run += d->span;
                                if (rel + d->span > c->pcount[ai] || d->run_stamp == AL_STAMP_FREE) {
                                        report(arg, "page %u: bad run (%u pages)", p, d->span);
                                        r.problems++;
                                }
                                break;
                        case PAGE_SLAB_TAIL:
                        case PAGE_RUN_TAIL:
                                if (derived_ok && (d->span >= p || d->span < c->pfirst[ai] ||
                                                   al_desc(c, d->span)->span + d->span <= p)) {
                                        report(arg, "page %u: tail outside its head %u", p, d->span);
                                        r.problems++;
                                }
                                break;
                        default:
                                report(arg, "page %u: unknown state %u", p, d->state);
                                r.problems++;
                        }
                }
                if (derived_ok && nfree != a->free_pages) {
                        report(arg, "arena %u: %u free pages counted, %u recorded", ai, nfree, a->free_pages);
                        r.problems++;
                }
                for (unsigned k = 0; derived_ok && k < al_nclasses; k++) {
                        if (slab[k] != a->slab_pages[k]) {
                                report(arg, "arena %u class %u: %u slab pages counted, %u recorded",
                                       ai, k, slab[k], a->slab_pages[k]);
                                r.problems++;
                        }
                }
        }
        /* The counters the dead slots' recoveries will set. */
        for (unsigned i = 0; i < dv->n; i++) {
                const struct al_outlook *o = &dv->o[i];
                const struct al_slot *as = slot_ext(c->s, dv->slot[i]);
                if (o->set_allocs)
                        adjust[o->arena][o->cls] += (int64_t)o->allocs - (int64_t)as->c.allocs[o->arena][o->cls];
                if (o->set_frees)
                        adjust[o->arena][o->cls] -= (int64_t)o->frees - (int64_t)as->c.frees[o->arena][o->cls];
        }
        /* Accounting: blocks in use per class must equal allocations - frees. */
        al_stats(c, &st);
        for (unsigned ai = 0; ai < c->narenas; ai++) {
                for (unsigned k = 0; k < al_nclasses; k++) {
                        const struct al_class_stats *cs = &st.a[ai].cls[k];
                        int64_t counted = (int64_t)cs->allocs - (int64_t)cs->frees + adjust[ai][k];
                        if (counted != (int64_t)live[ai][k]) {
                                report(arg, "arena %u class %u (%u B): %llu blocks in use, "
                                       "counters say %lld", ai, k, al_class_size[k],
                                       (unsigned long long)live[ai][k], (long long)counted);
                                r.problems++;
                        }
                }
        }
        free(dv);
        if (out)
                *out = r;
        return r.problems ? -EUCLEAN : 0;
}
