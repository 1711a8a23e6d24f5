/*
 * shm/olock: an owner-tagged spin lock in shared memory that a dead holder
 * cannot wedge and a stopped holder cannot stall.
 *
 * The word holds (slot + 1) << 32 | gen of the holder, or 0. A waiter that
 * has spun for a while asks whether that slot generation is dead (its OFD
 * lock byte released, or its generation moved on); if so it CASes the dead
 * holder's word to its own and reports the lock as broken, and the caller
 * repairs the structure the lock protects before using it.
 *
 * A live holder is waited for as shm/wait.h says: a stopped one is given up
 * on (-EAGAIN: the caller does without what the lock protects), a running
 * one waited for. Used for paths taken rarely (once per 64 KiB span, per
 * large allocation, per insert of a new key), never by a read.
 */
#ifndef STOA_SHM_OLOCK_H
#define STOA_SHM_OLOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct seg;

struct olock {
        _Atomic uint64_t word;
};
_Static_assert(sizeof(struct olock) == 8, "an olock is one word");

static inline uint64_t olock_tag(uint32_t slot, uint32_t gen)
{
        return ((uint64_t)slot + 1) << 32 | gen;
}

/*
 * Take the lock. 0: taken (*ret_broken set when it was taken from a dead
 * holder, whose half-done work the caller repairs); -EAGAIN: a stopped
 * holder keeps it; another negative errno on error.
 */
int olock_acquire(struct seg *s, struct olock *l, uint32_t slot, uint32_t gen, bool *ret_broken);
/* Take it only if it is free (or its holder is dead). 0, -EAGAIN, <0. */
int olock_try(struct seg *s, struct olock *l, uint32_t slot, uint32_t gen, bool *ret_broken);
void olock_release(struct olock *l);

#endif /* STOA_SHM_OLOCK_H */
