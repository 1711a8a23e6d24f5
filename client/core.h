/*
 * client/core: a segment with its slot table and allocator, attached.
 *
 * This is the layer the cache and the tools build on: it composes the layout
 * (header, slots, allocator regions, and whatever the cache adds), creates
 * or attaches, and wires slot recovery to the allocator's recovery.
 */
#ifndef STOA_CLIENT_CORE_H
#define STOA_CLIENT_CORE_H

#include "allocator/alloc.h"
#include "shm/seg.h"
#include "shm/slots.h"
#include "stoa/stoa.h"

#include <time.h>

#define CORE_DEFAULT_SIZE   (256ull << 20)
#define CORE_DEFAULT_SLOTS  256u
#define CORE_DEFAULT_NAME   "default"

struct core_config {
        uint64_t size;          /* 0: CORE_DEFAULT_SIZE */
        uint32_t nslots;        /* 0: CORE_DEFAULT_SLOTS */
        enum seg_huge huge;
        uint32_t mode;          /* 0: 0600 */
        int64_t gid;            /* -1: creator's */
        unsigned nnodes;        /* 0: one arena, not bound; else bind arenas to nodes[] */
        int nodes[AL_MAX_ARENAS];
        unsigned flags;         /* SEG_OPEN_* */
};

struct cache;

struct core {
        struct seg *seg;
        struct al_ctx al;
        struct cache *cache;
        al_published_fn published;      /* tests of the allocator alone: overrides the cache */
        void *published_arg;
        _Atomic uint32_t removed;       /* the file was removed or replaced: STOA_E_REMOVED */
        _Atomic int64_t removed_checked;        /* CLOCK_MONOTONIC_COARSE second of the last look */
};

void core_config_default(struct core_config *cfg);
int core_open(struct core **ret, const char *name, const struct core_config *cfg);
int core_create_anon(struct core **ret, const struct core_config *cfg);
int core_attach_fd(struct core **ret, int fd, unsigned flags);
void core_close(struct core *c);

/*
 * Whether the segment's file was removed (or its name now holds another
 * file): callers on write paths call core_check_removed(), which looks (an
 * fstat and a stat) at most once a second per handle and reads a vDSO clock
 * otherwise; core_removed() only reads what an earlier look found.
 * 0 or STOA_E_REMOVED.
 */
int core_check_removed_slow(struct core *c, int64_t now_s);
static inline int core_check_removed(struct core *c)
{
        struct timespec ts;

        if (atomic_load_explicit(&c->removed, memory_order_relaxed))
                return STOA_E_REMOVED;
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);     /* vDSO: no syscall */
        int64_t now = (int64_t)ts.tv_sec;
        if (now == atomic_load_explicit(&c->removed_checked, memory_order_relaxed))
                return 0;
        return core_check_removed_slow(c, now);
}
static inline bool core_removed(const struct core *c)
{
        return atomic_load_explicit(&c->removed, memory_order_relaxed) != 0;
}

/* A thread's presence: a claimed slot and its heap. */
struct core_thread {
        struct core *core;
        uint32_t slot, gen;
        struct al_heap heap;
};
int core_thread_enter(struct core *c, struct core_thread *t);
void core_thread_leave(struct core_thread *t);

#endif /* STOA_CLIENT_CORE_H */
