/*
 * shm/slots: who is attached, and who is alive.
 *
 * Every thread that uses a segment holds one slot. Holding slot i means
 * holding a write OFD lock on byte SEG_LOCK_SLOT_BASE + i of the segment file;
 * the kernel drops it when the process dies, in whatever PID namespace it
 * lived, so liveness never depends on a PID. A slot is a 64-byte header that
 * this module owns, followed by `ext` bytes that the upper layers own (the
 * allocator's heap, the reader epoch, counters). See docs/design.md section 2.
 *
 * Claiming a slot whose previous holder died runs the segment's recovery
 * hook first, so memory and locks left by the dead are given back before the
 * slot is reused.
 */
#ifndef STOA_SHM_SLOTS_H
#define STOA_SHM_SLOTS_H

#include "shm/seg.h"

#include <stddef.h>

#define SLOTS_MAGIC      0x544f4c53u     /* "SLOT" */
#define SLOT_FREE        0u
#define SLOT_LIVE        1u
#define SLOTS_MAX        4096u

/* Slot table header: written once at creation. */
struct slot_table {
        uint32_t magic;
        uint32_t nslots;
        uint32_t stride;        /* bytes from one slot to the next, multiple of 64 */
        uint32_t ext_size;
        uint8_t pad[48];
};
_Static_assert(sizeof(struct slot_table) == 64, "slot table header is one line");

/*
 * Slot header. Written only by the holder of the slot's lock byte (the live
 * owner, or a recoverer of a dead owner). `state` and `gen` are release-stored
 * last, after the identity fields; readers (tools, liveness checks) acquire.
 *
 * The second line names the client recovering the slot right now: a
 * recovery takes locks under the slot's new generation (`rgen`), and whoever
 * waits on such a lock asks /proc about the recoverer, not the dead owner.
 */
struct slot_hdr {
        _Atomic uint32_t state;         /* SLOT_FREE / SLOT_LIVE */
        _Atomic uint32_t gen;           /* +1 at every claim and every recovery */
        uint32_t pid;                   /* in the owner's PID namespace */
        uint32_t tid;
        uint32_t uid;
        uint32_t recovered;             /* times a dead owner was recovered here */
        uint64_t pidns;                 /* inode of the owner's /proc/self/ns/pid */
        uint64_t since_ns;              /* CLOCK_REALTIME at claim */
        char comm[16];
        uint64_t pad;

        _Atomic uint32_t rgen;          /* generation a recovery runs under; release-stored last */
        uint32_t rpid, rtid;            /* the recoverer, in its own PID namespace */
        uint32_t pad1;
        uint64_t rpidns;
        uint8_t pad2[40];
};
_Static_assert(sizeof(struct slot_hdr) == 128, "slot header is two lines");
_Static_assert(offsetof(struct slot_hdr, rgen) == 64, "the recoverer's line");

/*
 * Called with the dead slot's lock byte held, before the slot is reused.
 * Returns 0, or -EAGAIN when something it needs is held by a stopped client:
 * the slot then stays dead, and the hook is run again by the next recoverer
 * (so every step of it must be safe to redo, as after a killed recoverer).
 */
typedef int (*slot_recover_fn)(struct seg *s, uint32_t slot, void *arg);

uint64_t slots_region_size(uint32_t nslots, uint32_t ext_size);
void slots_init(struct seg *s, uint32_t nslots, uint32_t ext_size);
/* Map the table for this process (allocates the local held-slot bitmap). */
int slots_attach(struct seg *s);

struct slot_table *slots_table(const struct seg *s);
uint32_t slots_count(const struct seg *s);     /* after slots_attach() */
struct slot_hdr *slot_hdr(const struct seg *s, uint32_t slot);
void *slot_ext(const struct seg *s, uint32_t slot);

/* The hook run on a dead slot before it is reused or freed. One per process. */
void slots_set_recover_hook(slot_recover_fn fn, void *arg);

/*
 * Claim a slot for this thread: a free one if there is one, else one whose
 * holder died (recovering it first). STOA_E_NOSLOT when every slot is held
 * by a live client, -EAGAIN when the only ones left are dead slots whose
 * recovery needs what a stopped client holds.
 */
int slot_claim(struct seg *s, uint32_t *ret_slot, uint32_t *ret_gen);
/* Claim one given slot if no live process holds it: 0, -EAGAIN if held. */
int slot_claim_at(struct seg *s, uint32_t slot, uint32_t *ret_gen);
void slot_release(struct seg *s, uint32_t slot);

/* 1 if the owner that held `slot` at generation `gen` is gone, 0 if alive, <0 error. */
int slot_is_dead(struct seg *s, uint32_t slot, uint32_t gen);
/* 1 if `slot` is held by a live process (this one included), 0 if free or dead. */
int slot_is_alive(struct seg *s, uint32_t slot);

/*
 * Recover `slot` if its owner died. 1 recovered, 0 nothing to do (alive, free,
 * or being recovered by someone else right now), -EAGAIN (its recovery needs
 * what a stopped client holds; it stays dead), <0 error.
 */
int slot_recover_dead(struct seg *s, uint32_t slot);
/* Recover every dead slot that can be. Returns how many, or <0. */
int slots_sweep(struct seg *s);

#endif /* STOA_SHM_SLOTS_H */
