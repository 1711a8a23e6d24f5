/*
 * allocator/steal.c: taking the spans of idle slots (docs/design.md 3.7).
 *
 * Each slot keeps a current span per class it has used; a client that stored
 * a value of each size and went idle would hold them, and what was freed
 * into them, for good. So the owner marks `busy` around every allocator
 * operation, and a slot short of memory may CAS another live slot's `steal`
 * word to its own tag while `busy` is 0, make sure with a barrier that the
 * owner has not just started an operation (a Dekker pair), and then disown
 * that slot's spans or give emptied ones back.
 *
 * The owner's side is the cheap one: a store and a compiler barrier, when
 * its process registered for MEMBARRIER_CMD_GLOBAL_EXPEDITED, in which case
 * the thief pays for the full barrier on every CPU with one membarrier call.
 * A process that could not register fences itself, and says so in its slot.
 *
 * An owner that finds `steal` set waits for the thief, but not for long: a
 * thief that keeps the lists past the olock's wait is stopped, and the owner
 * does without them (an allocation says -EAGAIN; a free is made as a remote
 * one). A thief that died is replaced by the owner itself, which then hands
 * back whatever its half-stolen lists left owned.
 */
#include "allocator/heap.h"
#include "shm/slots.h"
#include "shm/wait.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { FENCE_SELF = 0, FENCE_BY_THIEF = 1 };

static pthread_once_t registered_once = PTHREAD_ONCE_INIT;
static bool registered;

static void do_register(void)
{
        registered = syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0;
}

/* Whether this process may leave the full barrier of op_begin to thieves. */
static bool asym_fences(void)
{
        pthread_once(&registered_once, do_register);
        return registered;
}

int al_op_begin(struct al_heap *h)
{
        struct al_slot *as = h->as;
        uint32_t mode = asym_fences() ? FENCE_BY_THIEF : FENCE_SELF;
        struct waiter w = WAITER_INIT;
        bool self = mode == FENCE_SELF;

        /*
         * The slot's previous holder may have fenced otherwise. A thief that
         * read the old mode may have skipped its barrier: fence ourselves
         * this once, after saying how we fence from now on.
         */
        if (atomic_load_explicit(&as->fence, memory_order_relaxed) != mode) {
                atomic_store_explicit(&as->fence, mode, memory_order_seq_cst);
                self = true;
        }
        for (;;) {
                atomic_store_explicit(&as->busy, 1, memory_order_relaxed);
                if (!self)
                        atomic_signal_fence(memory_order_seq_cst);
                else
                        atomic_thread_fence(memory_order_seq_cst);
                uint64_t thief = atomic_load_explicit(&as->steal, memory_order_acquire);
                if (!thief && !h->lists_stale)
                        return 0;
                if (!thief) {
                        /* busy: no thief can start while we hand our spans back. */
                        int r = al_abandon_all(h, h->slot);
                        if (r == 0) {
                                h->lists_stale = false;
                                return 0;
                        }
                        atomic_store_explicit(&as->busy, 0, memory_order_release);
                        return r;       /* an arena's lock is held: again next time */
                }
                atomic_store_explicit(&as->busy, 0, memory_order_release);
                while (atomic_load_explicit(&as->steal, memory_order_acquire) == thief) {
                        int r = waiter_step(h->ctx->s, &w, thief);
                        if (r < 0)
                                return r;
                        if (r == 0)
                                continue;
                        /*
                         * It died with our lists in any state (a span taken off
                         * them and not yet handed back, links into spans it did
                         * hand back): clear its tag, and hand back every span we
                         * own, listed or not, before our lists are used again.
                         */
                        uint64_t t = thief;
                        h->lists_stale = true;
                        atomic_compare_exchange_strong(&as->steal, &t, 0);
                        break;
                }
        }
}

void al_op_end(struct al_heap *h)
{
        atomic_store_explicit(&h->as->busy, 0, memory_order_release);
}

int al_lists_disown(struct al_heap *thief, struct al_slot *as, uint32_t slot)
{
        struct al_ctx *c = thief->ctx;
        int ret = 0;

        for (unsigned ai = 0; ai < c->narenas; ai++) {
                struct arena *a = c->arena[ai];
                /* Per arena, under its lock: a thief dying here leaves a lock to repair. */
                if (al_arena_lock(thief, ai) < 0) {
                        ret = -EAGAIN;          /* these lists stay as they are */
                        continue;
                }
                for (unsigned cls = 0; cls < al_nclasses; cls++) {
                        uint32_t next = link_ok(c, as->avail[ai][cls]), guard = c->npages;
                        as->avail[ai][cls] = 0;
                        while (next && guard--) {
                                uint32_t p = next - 1;
                                struct page_desc *d = al_desc(c, p);
                                next = link_ok(c, d->next);
                                if (!al_desc_sane(c, p) || d->state != PAGE_SLAB ||
                                    d->owner != slot + 1)
                                        break;
                                d->next = d->prev = 0;
                                al_drain(c, p, span_hdr(c, p));
                                d->nfree = al_count_local_free(span_hdr(c, p));
                                if (d->nfree == d->capacity) {
                                        a->slab_pages[al_cls_of(d)] -= d->span;
                                        al_pages_give(c, ai, p, d->span);
                                } else {
                                        al_disown_locked(c, ai, p);
                                }
                        }
                }
                al_arena_unlock(thief, ai);
        }
        return ret;
}

uint32_t al_steal_idle(struct al_heap *h)
{
        struct al_ctx *c = h->ctx;
        uint32_t before = 0, after = 0, n = 0;
        uint64_t mine = olock_tag(h->slot, h->gen);
        bool need_barrier = false;

        for (unsigned ai = 0; ai < c->narenas; ai++)
                before += __atomic_load_n(&c->arena[ai]->free_pages, __ATOMIC_RELAXED);
        /* Mark every idle-looking slot, then one barrier on every CPU, then look again. */
        for (uint32_t s = 0; s < slots_count(c->s); s++) {
                struct al_slot *as = slot_ext(c->s, s);
                uint64_t zero = 0;
                if (s == h->slot || atomic_load_explicit(&slot_hdr(c->s, s)->state,
                                                         memory_order_acquire) != SLOT_LIVE ||
                    atomic_load_explicit(&as->busy, memory_order_relaxed))
                        continue;
                if (atomic_compare_exchange_strong(&as->steal, &zero, mine)) {
                        n++;
                        need_barrier |= atomic_load(&as->fence) == FENCE_BY_THIEF;
                }
        }
        if (!n)
                return 0;
        atomic_thread_fence(memory_order_seq_cst);
        bool fenced = !need_barrier ||
                      syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0;
        for (uint32_t s = 0; s < slots_count(c->s); s++) {
                struct al_slot *as = slot_ext(c->s, s);
                if (atomic_load_explicit(&as->steal, memory_order_acquire) != mine)
                        continue;
                /* Without the barrier (seccomp may forbid it) only self-fencing slots are taken. */
                bool safe = fenced || atomic_load(&as->fence) == FENCE_SELF;
                if (safe && !atomic_load_explicit(&as->busy, memory_order_seq_cst))
                        al_lists_disown(h, as, s);
                atomic_store_explicit(&as->steal, 0, memory_order_release);
        }
        for (unsigned ai = 0; ai < c->narenas; ai++)
                after += __atomic_load_n(&c->arena[ai]->free_pages, __ATOMIC_RELAXED);
        return after > before ? after - before : 0;
}
