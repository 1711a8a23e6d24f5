/*
 * shm/wait.c: see wait.h.
 */
#include "shm/wait.h"
#include "shm/slots.h"
#include "shm/testpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SPIN_STEPS   64u        /* pause and look again */
#define YIELD_STEPS  96u        /* then yield the CPU (a preempted holder may get it) */
#define SLEEP_NS     30000      /* then sleep between liveness checks */
#define LOOK_EVERY_NS (2ull * 1000 * 1000)

void (*stoa_test_hook)(const char *point);

/* The holder this thread last gave up on, and when. */
static __thread uint64_t stalled_tag, stalled_at;

uint64_t wait_now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Cached by whichever thread asks first; every thread finds the same value (relaxed). */
static uint64_t my_pidns(void)
{
        static _Atomic uint64_t ino;
        uint64_t v = atomic_load_explicit(&ino, memory_order_relaxed);
        struct stat st;

        if (!v && stat("/proc/self/ns/pid", &st) == 0) {
                v = st.st_ino;
                atomic_store_explicit(&ino, v, memory_order_relaxed);
        }
        return v;
}

/* The state letter of a thread of ours (same PID namespace), or 0 if unknown. */
static char proc_state(uint32_t pid, uint32_t tid)
{
        char path[64], buf[512];
        ssize_t n;
        int fd;

        snprintf(path, sizeof(path), "/proc/%u/task/%u/stat", pid, tid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return 0;
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
                return 0;
        buf[n] = 0;
        const char *p = strrchr(buf, ')');      /* the command may hold spaces and ')' */
        return p && p[1] == ' ' ? p[2] : 0;
}

/* 1 stopped, 0 will run, -1 cannot tell. */
static int holder_stopped(struct seg *s, uint32_t slot, uint32_t gen)
{
        if (slot >= slots_count(s))
                return -1;
        struct slot_hdr *h = slot_hdr(s, slot);
        /* A new owner may be writing them: each read once (the generation check follows). */
        uint32_t pid = __atomic_load_n(&h->pid, __ATOMIC_RELAXED);
        uint32_t tid = __atomic_load_n(&h->tid, __ATOMIC_RELAXED);
        uint64_t ns = __atomic_load_n(&h->pidns, __ATOMIC_RELAXED);

        /* A recovery runs under a generation of its own, by another client. */
        if (atomic_load_explicit(&h->rgen, memory_order_acquire) == gen) {
                pid = __atomic_load_n(&h->rpid, __ATOMIC_RELAXED);
                tid = __atomic_load_n(&h->rtid, __ATOMIC_RELAXED);
                ns = __atomic_load_n(&h->rpidns, __ATOMIC_RELAXED);
        }
        if (atomic_load_explicit(&h->gen, memory_order_acquire) != gen || !pid || !ns ||
            ns != my_pidns())
                return -1;
        switch (proc_state(pid, tid ? tid : pid)) {
        case 'T': case 't':
                return 1;
        case 'R': case 'S': case 'D': case 'I': case 'W':
                return 0;
        default:
                return -1;
        }
}

int slot_is_stopped(struct seg *s, uint32_t slot, uint32_t gen)
{
        return holder_stopped(s, slot, gen) == 1;
}

static int give_up(struct waiter *w, uint32_t slot, const char *why)
{
        stalled_tag = w->tag;
        stalled_at = wait_now_ns();
        seg_set_errdetail("client slot %u holds what this call needs and %s (see stoa clients)",
                          slot, why);
        return -EAGAIN;
}

void waiter_look_first(struct waiter *w, uint64_t tag)
{
        if (w->tag != tag) {
                *w = (struct waiter)WAITER_INIT;
                w->tag = tag;
                w->steps = SPIN_STEPS;
        }
}

int waiter_step(struct seg *s, struct waiter *w, uint64_t tag)
{
        uint32_t slot = (uint32_t)(tag >> 32) - 1, gen = (uint32_t)tag;

        if (w->tag != tag) {
                *w = (struct waiter)WAITER_INIT;
                w->tag = tag;
        }
        if (++w->steps < SPIN_STEPS) {
                __builtin_ia32_pause();
                return 0;
        }
        /* A word that names no slot is no client's (scribbled): as good as dead. */
        if (!(tag >> 32) || slot >= slots_count(s) || slot_is_dead(s, slot, gen) == 1)
                return 1;
        uint64_t now = wait_now_ns();
        if (!w->deadline || now >= w->next_look) {
                int st = holder_stopped(s, slot, gen);
                if (st == 1)
                        return give_up(w, slot, "is stopped");
                if (!w->deadline) {
                        bool again = stalled_tag == tag && now - stalled_at < WAIT_STALL_MEMORY_NS;
                        w->deadline = now + (again ? WAIT_AGAIN_NS :
                                             st == 0 ? WAIT_RUNNING_NS : WAIT_UNKNOWN_NS);
                }
                w->running = st == 0;
                w->next_look = now + LOOK_EVERY_NS;
        }
        if (now >= w->deadline)
                return give_up(w, slot, w->running ? "has not let go for a second" :
                                        "does not advance (stopped?)");
        if (w->steps < YIELD_STEPS) {
                sched_yield();  /* a preempted holder may get the CPU */
                return 0;
        }
        struct timespec ts = { 0, SLEEP_NS };
        nanosleep(&ts, NULL);
        return 0;
}
