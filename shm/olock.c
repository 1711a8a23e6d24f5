/*
 * shm/olock.c: see olock.h.
 */
#include "shm/olock.h"
#include "shm/slots.h"
#include "shm/wait.h"

#include <errno.h>

/* Take the lock from a dead holder whose word is still `cur`. */
static bool take_over(struct olock *l, uint64_t cur, uint64_t me)
{
        return atomic_compare_exchange_strong_explicit(&l->word, &cur, me, memory_order_acquire,
                                                       memory_order_relaxed);
}

int olock_acquire(struct seg *s, struct olock *l, uint32_t slot, uint32_t gen, bool *ret_broken)
{
        uint64_t me = olock_tag(slot, gen);
        struct waiter w = WAITER_INIT;

        *ret_broken = false;
        for (;;) {
                uint64_t cur = atomic_load_explicit(&l->word, memory_order_relaxed);
                if (cur == 0) {
                        if (atomic_compare_exchange_weak_explicit(&l->word, &cur, me,
                                                                  memory_order_acquire,
                                                                  memory_order_relaxed))
                                return 0;
                        continue;
                }
                int r = waiter_step(s, &w, cur);
                if (r < 0)
                        return r;
                if (r == 1 && take_over(l, cur, me)) {
                        *ret_broken = true;
                        return 0;
                }
        }
}

int olock_try(struct seg *s, struct olock *l, uint32_t slot, uint32_t gen, bool *ret_broken)
{
        uint64_t cur = atomic_load_explicit(&l->word, memory_order_relaxed), me = olock_tag(slot, gen);

        *ret_broken = false;
        if (cur == 0 && atomic_compare_exchange_strong_explicit(&l->word, &cur, me,
                                                                memory_order_acquire,
                                                                memory_order_relaxed))
                return 0;
        if (cur == 0)
                return -EAGAIN;
        int dead = slot_is_dead(s, (uint32_t)(cur >> 32) - 1, (uint32_t)cur);
        if (dead < 0)
                return dead;
        if (dead && take_over(l, cur, me)) {
                *ret_broken = true;
                return 0;
        }
        return -EAGAIN;
}

void olock_release(struct olock *l)
{
        atomic_store_explicit(&l->word, 0, memory_order_release);
}
