/*
 * shm/olock: an owner-tagged spin lock in shared memory that a dead holder
 * cannot wedge.
 *
 * The word holds (slot + 1) << 32 | gen of the holder, or 0. A waiter that
 * has spun for a while asks whether that slot generation is dead (its OFD
 * lock byte released, or its generation moved on); if so it CASes the dead
 * holder's word to its own and reports the lock as broken, and the caller
 * repairs the structure the lock protects before using it. Used for paths
 * taken rarely (once per 64 KiB page, per large allocation), never per GET.
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

static inline uint64_t olock_tag(uint32_t slot, uint32_t gen)
{
        return ((uint64_t)slot + 1) << 32 | gen;
}

/* Take the lock. *ret_broken is set when it was taken from a dead holder. */
int olock_acquire(struct seg *s, struct olock *l, uint32_t slot, uint32_t gen, bool *ret_broken);
void olock_release(struct olock *l);

#endif /* STOA_SHM_OLOCK_H */
