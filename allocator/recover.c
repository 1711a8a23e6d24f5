/*
 * allocator/recover.c: what a slot leaves behind, given back.
 *
 * A dead slot's recovery resolves the one operation its journal names (did it
 * take effect? finish or undo it) and then hands every span the slot owned to
 * the arenas. A live slot that leaves (thread exit, handle closed) does the
 * second half for itself.
 *
 * Recovery may itself be killed, or stopped part way because an arena lock is
 * held by a stopped client; the next recoverer runs it again from the start.
 * So every step is safe to redo: decisions are read from the block's stamp
 * and free bits (which a step that happened has changed), never from who owns
 * its span now; counters are set to values computed from the journal, never
 * bumped; a block is freed only if it still carries the journalled stamp and
 * no free bit; and the journal is cleared only once its operation is settled.
 */
#include "allocator/heap.h"
#include "shm/slots.h"
#include "shm/testpoint.h"
#include "shm/wait.h"

#include <errno.h>
#include <string.h>

/* Spans found by one unlocked pass over an arena's descriptors. */
#define ABANDON_BATCH 256u

/*
 * Hand back the spans `slot` owns in arena `ai`. The descriptors are scanned
 * without the lock (ownership by `slot` can only be changed by the caller,
 * who holds its lists), then the lock is taken only to act on what was found.
 */
static int abandon_arena(struct al_heap *h, unsigned ai, uint32_t slot, struct al_recovery *rec)
{
        struct al_ctx *c = h->ctx;
        struct arena *a = c->arena[ai];
        uint32_t found[ABANDON_BATCH], p = c->pfirst[ai], end = c->pfirst[ai] + c->pcount[ai];
        struct al_slot *as = slot_ext(c->s, slot);
        int r;

        /*
         * The lists are cleared only once every span is handed back: a pass
         * cut short (a lock held) leaves them naming what it did not reach,
         * which says the slot still holds spans (cache_adopt_orphans looks),
         * and no one allocates from them meanwhile (its owner waits for a
         * complete pass: lists_stale; a thief checks each span's owner).
         */
        while (p < end) {
                unsigned n = 0;
                for (; p < end && n < ABANDON_BATCH; p++) {
                        const struct page_desc *d = al_desc(c, p);
                        if (__atomic_load_n(&d->state, __ATOMIC_RELAXED) == PAGE_SLAB &&
                            __atomic_load_n(&d->owner, __ATOMIC_RELAXED) == slot + 1)
                                found[n++] = p;
                }
                if (!n)
                        break;
                if ((r = al_arena_lock(h, ai)) < 0)
                        return r;
                for (unsigned i = 0; i < n; i++) {
                        struct page_desc *d = al_desc(c, found[i]);
                        if (d->state != PAGE_SLAB || d->owner != slot + 1 || !al_desc_sane(c, found[i]))
                                continue;
                        struct slab_hdr *sh = span_hdr(c, found[i]);
                        /*
                         * Every word, not only those the summary flags: an
                         * owner killed in a drain may have taken the summary
                         * and left bits in remote_free (design 3.4, "drain").
                         */
                        atomic_fetch_or_explicit(&sh->remote_summary, ALL_WORDS,
                                                 memory_order_relaxed);
                        al_drain(c, found[i], sh);
                        d->nfree = al_count_local_free(sh);
                        d->next = d->prev = 0;
                        d->full = 0;
                        d->cursor = 0;
                        if (d->nfree == d->capacity) {
                                a->slab_pages[al_cls_of(d)] -= d->span;
                                al_pages_give(c, ai, found[i], d->span);
                                if (rec)
                                        rec->pages_freed++;
                        } else {
                                al_disown_locked(c, ai, found[i]);
                                if (rec)
                                        rec->pages_abandoned++;
                        }
                        TEST_POINT("abandon-span");
                }
                al_arena_unlock(h, ai);
        }
        memset(as->avail[ai], 0, sizeof(as->avail[ai]));
        return 0;
}

static int abandon(struct al_heap *h, uint32_t slot, struct al_recovery *rec)
{
        int ret = 0;

        for (unsigned ai = 0; ai < h->ctx->narenas; ai++)
                if (abandon_arena(h, ai, slot, rec) < 0)
                        ret = -EAGAIN;
        return ret;
}

int al_abandon_all(struct al_heap *h, uint32_t slot)
{
        return abandon(h, slot, NULL);
}

int al_heap_abandon(struct al_heap *h)
{
        int r = al_op_begin(h);

        if (r < 0)
                return r;       /* a thief holds our lists; it leaves them consistent */
        journal_clear(h->as);
        r = abandon(h, h->slot, NULL);
        al_trim_op(h);
        al_op_end(h);
        return r;
}

/* ---- a dead slot's journal ----------------------------------------------- */

enum { ACT_NONE, ACT_KEEP, ACT_GIVE, ACT_REMOTE, ACT_LIST, ACT_RUN_FREE };

/*
 * Decide what the recovery of `slot`'s journal does (design 3.4, and the
 * comment at the top), reading only. The steps of the operations it resolves,
 * in the order the slot makes them:
 *   J_ALLOC  journal(count = allocs) | clear the bit | write the stamp |
 *            allocs++ | return; the caller publishes the block and commits
 *   J_FREE   journal(count = frees) | stamp FREE | set the bit | frees++
 *   J_RFREE  journal(count = frees) | OR the remote bit | OR the summary |
 *            frees++ | list the span if it is disowned
 * A stamp names one allocation in the whole segment (slot << 48 | seq), so a
 * block still carrying the journalled stamp with no free bit set is that
 * allocation, still allocated.
 */
void al_journal_outlook(const struct al_ctx *c, uint32_t slot, al_published_fn published, void *arg,
                        struct al_outlook *o)
{
        const struct al_slot *as = slot_ext(c->s, slot);
        int op = (int)atomic_load_explicit(&as->j.op, memory_order_acquire);
        uint64_t off = as->j.off, stamp = as->j.stamp, jcount = as->j.count;
        uint32_t page, idx;

        memset(o, 0, sizeof(*o));
        o->op = op;
        o->off = off;
        o->arena = as->j.arena;
        o->cls = as->j.cls;
        if (op == J_NONE)
                return;
        if ((op == J_ALLOC || op == J_FREE || op == J_RFREE) &&
            (as->j.arena >= c->narenas || as->j.cls >= al_nclasses)) {
                o->op = J_NONE;         /* scribbled: nothing can be decided */
                return;
        }
        if (al_locate(c, off, &page, &idx) < 0) {
                /* The block's span has been given back: every block of it is free. */
                if (op == J_FREE || op == J_RFREE) {
                        o->set_frees = true;
                        o->frees = jcount + 1;
                }
                return;
        }
        const struct page_desc *d = al_desc(c, page);
        o->page = page;
        o->idx = idx;
        if (op == J_RUN_ALLOC || op == J_RUN_FREE) {
                if (idx != UINT32_MAX || d->state != PAGE_RUN || d->run_stamp != stamp)
                        return;         /* never committed, or already freed */
                if (op == J_RUN_ALLOC && published && published(off, arg)) {
                        o->action = ACT_KEEP;
                        return;
                }
                o->action = ACT_RUN_FREE;
                o->block_freed = true;
                return;
        }
        if (idx == UINT32_MAX)
                return;
        const struct slab_hdr *sh = span_hdr(c, page);
        uint64_t mask = 1ull << (idx % 64), block = off - AL_STAMP_SIZE;
        /* The remote bit before the stamp (free_op says why). */
        bool rbit = atomic_load_explicit(&sh->remote_free[idx / 64], memory_order_acquire) & mask;
        uint64_t cur = stamp_load(c, block);
        bool lbit = __atomic_load_n(&sh->local_free[idx / 64], __ATOMIC_RELAXED) & mask;
        bool ours = cur == stamp && !rbit && !lbit;     /* still this allocation */

        switch (op) {
        case J_ALLOC:
                if (!ours) {
                        /*
                         * Killed between clearing the bit and writing the stamp:
                         * handed out to no one, and the span still the slot's (it
                         * was busy, so no thief took it). Undo.
                         */
                        if (cur == AL_STAMP_FREE && !rbit && !lbit && d->owner == slot + 1) {
                                o->set_allocs = true;
                                o->allocs = jcount;
                                o->action = ACT_GIVE;
                                o->block_freed = true;
                                return;
                        }
                        /*
                         * Else not handed out (count as before), or freed since
                         * (counted). Freed remotely, maybe by a recovery of ours
                         * killed before it listed the span: make sure it is listed.
                         */
                        if (rbit && cur == stamp)
                                o->action = ACT_LIST;
                        return;
                }
                o->set_allocs = true;
                if (published && published(off, arg)) {
                        o->allocs = jcount + 1;
                        o->action = ACT_KEEP;
                        return;
                }
                /* Handed out, never published: the allocation is undone. */
                o->allocs = jcount;
                o->action = ACT_GIVE;
                o->block_freed = true;
                return;
        case J_FREE:
                /*
                 * An own free (the span is the slot's: it was busy). Not done
                 * while the bit is clear, stamp FREE or not yet.
                 */
                o->set_frees = true;
                o->frees = jcount + 1;          /* it happened, or happens now */
                if (!rbit && !lbit && (cur == stamp || cur == AL_STAMP_FREE) &&
                    d->owner == slot + 1) {
                        o->action = ACT_GIVE;
                        o->block_freed = true;
                }
                return;
        case J_RFREE:
                o->set_frees = true;
                o->frees = jcount + 1;
                if (rbit) {
                        o->action = ACT_LIST;   /* happened: make sure it is seen, listed */
                } else if (cur == stamp) {
                        o->action = ACT_REMOTE; /* not yet: redo it */
                        o->block_freed = true;
                }
                /* Else it happened and was drained (and maybe reused) since. */
                return;
        default:
                return;
        }
}

static void set_count(uint64_t *counter, uint64_t v)
{
        __atomic_store_n(counter, v, __ATOMIC_RELAXED);
}

/*
 * Free a block the dead slot still holds: as its owner would if the span is
 * still the dead slot's (set the free bit), else as a remote slot would.
 */
static void give_block(struct al_heap *h, uint32_t page, uint32_t idx, uint64_t block)
{
        struct al_ctx *c = h->ctx;
        struct page_desc *d = al_desc(c, page);
        struct slab_hdr *sh = span_hdr(c, page);

        if (d->owner == h->slot + 1) {
                __atomic_store_n(stamp_at(c, block), AL_STAMP_FREE, __ATOMIC_RELAXED);
                sh->local_free[idx / 64] |= 1ull << (idx % 64);
                TEST_POINT("journal-acted");
                return;
        }
        uint64_t before = al_remote_free(sh, idx);
        TEST_POINT("journal-acted");
        if (before == 0)
                al_list_if_disowned(h, page);
}

/*
 * Do what the outlook says: counters first (set, never bumped), then the
 * block. A redo sees the block's new state and decides nothing more for it.
 * Returns AL_JOURNAL_NOTHING, AL_JOURNAL_UNDONE (a block freed, or a free
 * redone), AL_JOURNAL_KEPT, or -EAGAIN (a run's arena is locked: run it
 * again later).
 */
static int resolve_journal(struct al_heap *h, al_published_fn published, void *arg)
{
        struct al_ctx *c = h->ctx;
        struct al_slot *as = h->as;
        struct al_outlook o;

        al_journal_outlook(c, h->slot, published, arg, &o);
        if (o.set_allocs)
                set_count(&as->c.allocs[o.arena][o.cls], o.allocs);
        if (o.set_frees)
                set_count(&as->c.frees[o.arena][o.cls], o.frees);
        TEST_POINT("journal-counted");
        struct slab_hdr *sh = o.page < c->npages ? span_hdr(c, o.page) : NULL;
        switch (o.action) {
        case ACT_KEEP:
                return AL_JOURNAL_KEPT;
        case ACT_RUN_FREE: {
                int r = al_run_free(h, o.page, as->j.stamp);
                return r == -EAGAIN ? r : r == 0 ? AL_JOURNAL_UNDONE : AL_JOURNAL_NOTHING;
        }
        case ACT_GIVE:
                give_block(h, o.page, o.idx, o.off - AL_STAMP_SIZE);
                return AL_JOURNAL_UNDONE;
        case ACT_REMOTE:
                if (al_remote_free(sh, o.idx) == 0) {
                        TEST_POINT("journal-acted");
                        al_list_if_disowned(h, o.page);
                }
                return AL_JOURNAL_UNDONE;
        case ACT_LIST:
                atomic_fetch_or_explicit(&sh->remote_summary, 1ull << (o.idx / 64),
                                         memory_order_seq_cst);
                al_list_if_disowned(h, o.page);
                return AL_JOURNAL_NOTHING;
        default:
                return AL_JOURNAL_NOTHING;
        }
}

/*
 * Take the dead slot's lists as a thief would (its steal word): a live thief
 * at work on them is waited for, boundedly; a dead one is replaced. The
 * dead slot's own `busy` does not matter: it will never run again.
 */
static int take_lists(struct al_heap *h)
{
        struct al_slot *as = h->as;
        uint64_t me = olock_tag(h->slot, h->gen);
        struct waiter w = WAITER_INIT;

        for (;;) {
                uint64_t cur = atomic_load_explicit(&as->steal, memory_order_acquire);
                if (cur == me)
                        return 0;
                int r = cur ? waiter_step(h->ctx->s, &w, cur) : 1;
                if (r < 0)
                        return r;
                if (r == 1 && atomic_compare_exchange_strong(&as->steal, &cur, me))
                        return 0;
        }
}

int al_recover_slot(struct al_ctx *c, uint32_t dead, al_published_fn published, void *arg,
                    struct al_recovery *ret)
{
        struct al_heap h;
        struct al_recovery rec = { 0 };
        int r;

        /*
         * Recovery takes arena locks in the dead slot's name, under the slot's
         * current generation: shm/slots.c moved it past the dead owner's before
         * calling us, so a lock word the dead owner left reads as dead, and
         * ours as alive (the recoverer holds the slot's byte).
         */
        al_heap_init(&h, c, dead, atomic_load_explicit(&slot_hdr(c->s, dead)->gen,
                                                       memory_order_acquire));
        if ((r = take_lists(&h)) < 0)
                return r;
        rec.journal_op = (int)atomic_load_explicit(&h.as->j.op, memory_order_acquire);
        r = resolve_journal(&h, published, arg);
        if (r < 0)
                goto out;
        rec.journal_action = r;
        journal_clear(h.as);            /* settled: a redo must not settle it again */
        TEST_POINT("journal-settled");
        r = abandon(&h, dead, &rec);
        if (r == 0)
                rec.pages_freed += al_trim_op(&h);
out:
        atomic_store_explicit(&h.as->steal, 0, memory_order_release);
        if (ret)
                *ret = rec;
        return r < 0 ? r : 0;
}
