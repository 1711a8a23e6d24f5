/*
 * shm/olock.c: see olock.h.
 */
#include "shm/olock.h"
#include "shm/slots.h"

/* Back off, but never for long: a dead holder must be noticed within milliseconds. */
#define CK_BACKOFF_CEILING 1023u
#include <ck_backoff.h>
#include <sched.h>
#include <time.h>

#define SPINS_BEFORE_CHECK 256u

int olock_acquire(struct seg *s, struct olock *l, uint32_t slot, uint32_t gen, bool *ret_broken)
{
        uint64_t me = olock_tag(slot, gen);
        unsigned spins = 0, checks = 0;
        ck_backoff_t backoff = CK_BACKOFF_INITIALIZER;

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
                if (++spins < SPINS_BEFORE_CHECK) {
                        ck_backoff_eb(&backoff);
                        continue;
                }
                spins = 0;
                backoff = CK_BACKOFF_INITIALIZER;
                uint32_t hslot = (uint32_t)(cur >> 32) - 1, hgen = (uint32_t)cur;
                int dead = slot_is_dead(s, hslot, hgen);
                if (dead < 0)
                        return dead;
                if (dead && atomic_compare_exchange_strong_explicit(&l->word, &cur, me,
                                                                     memory_order_acquire,
                                                                     memory_order_relaxed)) {
                        *ret_broken = true;
                        return 0;
                }
                /* Alive but slow (or stopped): stop burning the CPU it needs. */
                if (++checks > 4) {
                        struct timespec ts = { 0, 50000 };
                        nanosleep(&ts, NULL);
                } else {
                        sched_yield();
                }
        }
}

void olock_release(struct olock *l)
{
        atomic_store_explicit(&l->word, 0, memory_order_release);
}
