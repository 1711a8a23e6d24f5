/*
 * bench/spsc.h: what the benchmarks share: a monotonic clock in nanoseconds
 * and a single-producer single-consumer ring that works across processes
 * (put it in a MAP_SHARED mapping; it holds no pointers).
 *
 * Each side keeps a private copy of its index and of the last index it saw
 * from the other side, and publishes its own only every RING_PUBLISH entries,
 * so a steady stream costs one shared-line transfer per batch instead of per
 * entry. A side publishes before it waits, so the two cannot wait on each
 * other's unpublished progress. Time spent waiting is added to wait_ns, to
 * tell a side's busy time from its idle time.
 */
#ifndef STOA_BENCH_SPSC_H
#define STOA_BENCH_SPSC_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define RING_PUBLISH  32u               /* an index is published every this many */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        __asm__ __volatile__("yield");
#endif
}

static inline uint64_t now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Single-producer single-consumer ring; indexes published in batches. */
struct spsc {
        _Alignas(64) _Atomic uint64_t head;     /* producer stores (release) */
        _Alignas(64) _Atomic uint64_t tail;     /* consumer stores (release) */
        _Alignas(64) uint64_t mask;             /* capacity - 1; set before either side starts */
        uint64_t slot[];        /* written before head is published, read after it is seen */
};

struct prod {
        struct spsc *r;
        uint64_t head, tail_seen, pub, wait_ns;
};

struct cons {
        struct spsc *r;
        uint64_t tail, head_seen, pub, wait_ns;
};

static inline void prod_flush(struct prod *p)
{
        atomic_store_explicit(&p->r->head, p->head, memory_order_release);
        p->pub = p->head;
}

static inline void ring_push(struct prod *p, uint64_t v)
{
        uint64_t mask = p->r->mask;

        if (p->head - p->tail_seen > mask) {
                uint64_t t = now_ns();
                prod_flush(p);  /* never wait with unpublished entries */
                while (p->head - (p->tail_seen = atomic_load_explicit(&p->r->tail,
                                                                      memory_order_acquire)) > mask)
                        cpu_relax();
                p->wait_ns += now_ns() - t;
        }
        p->r->slot[p->head & mask] = v;
        if (++p->head - p->pub >= RING_PUBLISH)
                prod_flush(p);
}

static inline uint64_t ring_pop(struct cons *c)
{
        if (c->tail == c->head_seen) {
                uint64_t t = now_ns();
                atomic_store_explicit(&c->r->tail, c->tail, memory_order_release);
                c->pub = c->tail;
                while ((c->head_seen = atomic_load_explicit(&c->r->head,
                                                            memory_order_acquire)) == c->tail)
                        cpu_relax();
                c->wait_ns += now_ns() - t;
        }
        uint64_t v = c->r->slot[c->tail & c->r->mask];
        if (++c->tail - c->pub >= RING_PUBLISH) {
                atomic_store_explicit(&c->r->tail, c->tail, memory_order_release);
                c->pub = c->tail;
        }
        return v;
}

#endif /* STOA_BENCH_SPSC_H */
