/*
 * shm/wait: waiting for another client, boundedly.
 *
 * Whatever one client holds that another needs (an arena lock, a bucket's
 * insert lock, the claim on an item, the lists of a slot being stolen from)
 * is held for nanoseconds by a client that runs. A client that does not run
 * holds it for as long as it does not run: a dead one (its OFD lock byte is
 * free: the waiter takes over and repairs), a stopped one (SIGSTOP, a frozen
 * cgroup, a debugger: the waiter gives up with -EAGAIN and does without),
 * or a preempted one (the waiter lets it have the CPU and waits).
 *
 * Telling the last two apart: when the holder lives in the waiter's PID
 * namespace, /proc says whether its thread is stopped (T, t) or will run
 * (R, S, D); a stopped holder is given up on at once, a running one waited
 * for up to WAIT_RUNNING_NS. Across PID namespaces (clients in other
 * containers) /proc cannot say, and a holder that keeps the thing for
 * WAIT_UNKNOWN_NS is taken to be stopped. A thread that gave up on a holder
 * waits for that same holder only WAIT_AGAIN_NS for the next second, so a
 * stopped client costs each later call microseconds, not milliseconds.
 */
#ifndef STOA_SHM_WAIT_H
#define STOA_SHM_WAIT_H

#include <stdbool.h>
#include <stdint.h>

struct seg;

#define WAIT_UNKNOWN_NS   (20ull * 1000 * 1000)         /* holder in another PID namespace */
#define WAIT_RUNNING_NS   (1000ull * 1000 * 1000)       /* holder seen running in /proc */
#define WAIT_AGAIN_NS     (50ull * 1000)                /* a holder given up on lately */
#define WAIT_STALL_MEMORY_NS (1000ull * 1000 * 1000)

struct waiter {
        uint64_t tag;           /* olock_tag() of the holder waited for */
        uint64_t deadline;      /* 0 until the first liveness check */
        uint64_t next_look;     /* when to ask /proc again */
        unsigned steps;
        bool running;           /* /proc says the holder runs */
};

#define WAITER_INIT { 0, 0, 0, 0, false }

/*
 * One step of waiting for the client `tag` (a slot and generation) to let go
 * of something. Returns 0: look again (the step spun, yielded or slept);
 * 1: the holder is dead (take over, or recover it); -EAGAIN: give up, the
 * holder is stopped (seg_errdetail() says which client). A tag that names
 * no slot (scribbled) counts as dead.
 */
int waiter_step(struct seg *s, struct waiter *w, uint64_t tag);
/*
 * Wait for `tag` without the first spins: for holders known to hold on for
 * a while (a recovery), whose liveness is worth asking about at once.
 */
void waiter_look_first(struct waiter *w, uint64_t tag);

/* Monotonic nanoseconds. */
uint64_t wait_now_ns(void);

/* 1 if the live client in `slot` (generation `gen`) is known to be stopped, else 0. */
int slot_is_stopped(struct seg *s, uint32_t slot, uint32_t gen);

#endif /* STOA_SHM_WAIT_H */
