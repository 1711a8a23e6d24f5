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

static void check_span(struct al_ctx *c, uint32_t p, al_report_fn report, void *arg,
                       struct al_check_result *r, uint64_t *live_by_class)
{
        const struct page_desc *d = al_desc(c, p);
        const struct slab_hdr *sh = seg_ptr(c->s, al_page_off(c, p));
        uint64_t base = al_page_off(c, p) + AL_SLAB_HDR;

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
                if (lf && rf) {
                        report(arg, "page %u block %u: free twice (local and remote)", p, i);
                        r->problems++;
                }
                uint64_t stamp = *(const uint64_t *)(c->s->base + base + (uint64_t)i * d->block_size);
                if (lf || rf) {
                        r->blocks_free++;
                        nfree++;
                } else {
                        r->blocks_used++;
                        live_by_class[al_cls_of(d)]++;
                        if (stamp == AL_STAMP_FREE) {
                                report(arg, "page %u block %u: in use but stamped free", p, i);
                                r->problems++;
                        }
                }
        }
        /* An ownerless span with free blocks must be where slots look for one. */
        if (d->owner == 0 && nfree && !d->full) {
                report(arg, "page %u: ownerless span with %u free blocks on no list", p, nfree);
                r->problems++;
        }
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

int al_check(struct al_ctx *c, al_report_fn report, void *arg, struct al_check_result *out)
{
        struct al_check_result r = { 0 };
        struct al_stats st;
        uint64_t live[AL_MAX_ARENAS][AL_NCLASSES];

        memset(live, 0, sizeof(live));
        for (unsigned ai = 0; ai < c->narenas; ai++) {
                const struct arena *a = c->arena[ai];
                const uint64_t *bm = c->bm[ai];
                uint32_t nfree = 0, slab[AL_NCLASSES] = { 0 };
                for (uint32_t rel = 0; rel < c->pcount[ai]; rel++) {
                        uint32_t p = c->pfirst[ai] + rel;
                        const struct page_desc *d = al_desc(c, p);
                        bool bfree = bm[rel / 64] & (1ull << (rel % 64));
                        if (bfree != (d->state == PAGE_FREE)) {
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
                                check_span(c, p, report, arg, &r, live[ai]);
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
                                if (d->span >= p || d->span < c->pfirst[ai] ||
                                    al_desc(c, d->span)->span + d->span <= p) {
                                        report(arg, "page %u: tail outside its head %u", p, d->span);
                                        r.problems++;
                                }
                                break;
                        default:
                                report(arg, "page %u: unknown state %u", p, d->state);
                                r.problems++;
                        }
                }
                if (nfree != a->free_pages) {
                        report(arg, "arena %u: %u free pages counted, %u recorded", ai, nfree, a->free_pages);
                        r.problems++;
                }
                for (unsigned k = 0; k < al_nclasses; k++) {
                        if (slab[k] != a->slab_pages[k]) {
                                report(arg, "arena %u class %u: %u slab pages counted, %u recorded",
                                       ai, k, slab[k], a->slab_pages[k]);
                                r.problems++;
                        }
                }
        }
        /* Accounting: blocks in use per class must equal allocations - frees. */
        al_stats(c, &st);
        for (unsigned ai = 0; ai < c->narenas; ai++) {
                for (unsigned k = 0; k < al_nclasses; k++) {
                        const struct al_class_stats *cs = &st.a[ai].cls[k];
                        int64_t counted = (int64_t)cs->allocs - (int64_t)cs->frees;
                        if (counted != (int64_t)live[ai][k]) {
                                report(arg, "arena %u class %u (%u B): %llu blocks in use, "
                                       "counters say %lld", ai, k, al_class_size[k],
                                       (unsigned long long)live[ai][k], (long long)counted);
                                r.problems++;
                        }
                }
        }
        if (out)
                *out = r;
        return r.problems ? -EUCLEAN : 0;
}
