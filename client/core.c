/*
 * client/core.c: see core.h.
 */
#include "client/core.h"
#include "cache/cache.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <numa.h>
#include <stdlib.h>
#include <string.h>

struct layout_arg {
        const struct core_config *cfg;
};

void core_config_default(struct core_config *cfg)
{
        memset(cfg, 0, sizeof(*cfg));
        cfg->size = CORE_DEFAULT_SIZE;
        cfg->nslots = CORE_DEFAULT_SLOTS;
        cfg->huge = SEG_HUGE_PREFER;
        cfg->gid = -1;
}

static uint32_t nslots_of(const struct core_config *cfg)
{
        return cfg->nslots ? cfg->nslots : CORE_DEFAULT_SLOTS;
}

/* A slot's ext area: the allocator's part, then the cache's, line-aligned. */
static uint32_t cache_ext_off(void)
{
        return (al_slot_ext_size() + 63u) & ~63u;
}

static uint32_t ext_size(void)
{
        return cache_ext_off() + cache_slot_size();
}

static int core_layout(uint64_t total, struct seg_layout *lo, void *arg)
{
        const struct core_config *cfg = ((struct layout_arg *)arg)->cfg;
        struct al_layout_req req = { .nnodes = cfg->nnodes };
        uint64_t slots = slots_region_size(nslots_of(cfg), ext_size());

        if (nslots_of(cfg) > SLOTS_MAX)
                return -EINVAL;
        memcpy(req.nodes, cfg->nodes, sizeof(req.nodes));
        lo->n = 0;
        lo->r[lo->n++] = (typeof(lo->r[0])){ SEG_REGION_SLOTS, -1, slots, 4096 };
        uint64_t used = SEG_HEADER_SIZE + slots + 4096;
        used += cache_layout(total, lo);
        if (total <= used + 4 * AL_PAGE_SIZE) {
                seg_set_errdetail("%llu bytes is too small for a segment",
                                  (unsigned long long)total);
                return -ENOSPC;
        }
        return al_layout(total - used, &req, lo);
}

static int core_init(struct seg *s, void *arg)
{
        const struct core_config *cfg = ((struct layout_arg *)arg)->cfg;

        slots_init(s, nslots_of(cfg), ext_size());
        cache_format(s);
        return al_format(s);
}

/* The one block the cache's recovery decided stays published. */
static bool published_is(uint64_t off, void *arg)
{
        return off != 0 && off == *(uint64_t *)arg;
}

/*
 * Slot recovery: the cache finishes or undoes the dead slot's operation and
 * drops its reader state, then the allocator gives back what it held, then
 * the cache frees what its decision left to free. -EAGAIN when a stopped
 * client holds what a step needs: run again later, from the start.
 */
static int core_recover(struct seg *s, uint32_t slot, void *arg)
{
        struct core *c = s->owner;
        struct al_heap h;
        uint64_t published = 0, unpub = 0;
        int r;

        (void)arg;
        if (!c)
                return 0;
        al_heap_init(&h, &c->al, slot, atomic_load_explicit(&slot_hdr(s, slot)->gen,
                                                            memory_order_acquire));
        if (c->published)
                return al_recover_slot(&c->al, slot, c->published, c->published_arg, NULL);
        if (c->cache)
                published = cache_recover_slot(c->cache, &h, slot, &unpub);
        r = al_recover_slot(&c->al, slot, published_is, &published, NULL);
        if (r < 0)
                return r;
        return c->cache ? cache_recover_finish(c->cache, &h, slot, unpub) : 0;
}

static int core_wrap(struct core **ret, struct seg *s)
{
        struct core *c = calloc(1, sizeof(*c));
        int r;

        if (!c) {
                seg_close(s);
                return -ENOMEM;
        }
        c->seg = s;
        s->owner = c;
        r = slots_attach(s);
        if (r == 0)
                r = al_attach(&c->al, s);
        if (r == 0 && slots_table(s)->ext_size != ext_size()) {
                seg_set_errdetail("slot layout differs from this library's");
                r = STOA_E_VERSION;
        }
        if (r == 0 && (c->cache = calloc(1, sizeof(*c->cache))) == NULL)
                r = -ENOMEM;
        if (r == 0)
                r = cache_attach(c->cache, s, &c->al, cache_ext_off());
        if (r < 0) {
                core_close(c);
                return r;
        }
        slots_set_recover_hook(core_recover, NULL);
        *ret = c;
        return 0;
}

static int check_nodes(const struct core_config *cfg)
{
        if (cfg->nnodes > AL_MAX_ARENAS) {
                seg_set_errdetail("at most %u NUMA nodes per segment", AL_MAX_ARENAS);
                return -EINVAL;
        }
        for (unsigned i = 0; i < cfg->nnodes; i++) {
                int n = cfg->nodes[i];
                bool ok;
                if (numa_available() < 0)
                        ok = n == 0;
                else
                        ok = n >= 0 && n <= numa_max_node() &&
                             numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)n);
                if (!ok) {
                        seg_set_errdetail("NUMA node %d does not exist on this host (nodes 0-%d)",
                                          n, numa_available() < 0 ? 0 : numa_max_node());
                        return -ENODEV;
                }
        }
        return 0;
}

/* The size a caller asked for, if any, within the limits every tool states. */
static int check_size(const struct core_config *cfg)
{
        if (cfg->size && (cfg->size < STOA_SIZE_MIN || cfg->size > STOA_SIZE_MAX)) {
                seg_set_errdetail("size %llu bytes is outside the limits: from STOA_SIZE_MIN "
                                  "(%llu MiB) to STOA_SIZE_MAX (%llu TiB)",
                                  (unsigned long long)cfg->size, STOA_SIZE_MIN >> 20,
                                  STOA_SIZE_MAX >> 40);
                return -EINVAL;
        }
        return 0;
}

static void to_seg_config(const struct core_config *cfg, struct layout_arg *la,
                          struct seg_config *sc)
{
        la->cfg = cfg;
        memset(sc, 0, sizeof(*sc));
        sc->size = cfg->size ? cfg->size : CORE_DEFAULT_SIZE;
        sc->huge = cfg->huge;
        sc->mode = cfg->mode;
        sc->gid = cfg->gid;
        sc->layout = core_layout;
        sc->init = core_init;
        sc->arg = la;
}

int core_open(struct core **ret, const char *name, const struct core_config *cfg)
{
        struct core_config def;
        struct layout_arg la;
        struct seg_config sc;
        struct seg *s;
        int r;

        if (!cfg) {
                core_config_default(&def);
                def.flags = SEG_OPEN_NOCREATE;
                cfg = &def;
        }
        seg_set_errdetail("%s", "");
        if ((r = check_nodes(cfg)) < 0 || (r = check_size(cfg)) < 0)
                return r;
        to_seg_config(cfg, &la, &sc);
        r = seg_open(&s, name, &sc, cfg->flags);
        if (r < 0)
                return r;
        return core_wrap(ret, s);
}

int core_create_anon(struct core **ret, const struct core_config *cfg)
{
        struct layout_arg la;
        struct seg_config sc;
        struct seg *s;
        int r;

        if ((r = check_nodes(cfg)) < 0 || (r = check_size(cfg)) < 0)
                return r;
        to_seg_config(cfg, &la, &sc);
        r = seg_create_anon(&s, &sc);
        if (r < 0)
                return r;
        return core_wrap(ret, s);
}

int core_attach_fd(struct core **ret, int fd, unsigned flags)
{
        struct seg *s;
        int r = seg_attach_fd(&s, fd, flags);

        if (r < 0)
                return r;
        return core_wrap(ret, s);
}

void core_close(struct core *c)
{
        if (!c)
                return;
        seg_close(c->seg);
        free(c->cache);
        free(c);
}

int core_check_removed_slow(struct core *c, int64_t now_s)
{
        atomic_store_explicit(&c->removed_checked, now_s, memory_order_relaxed);
        if (seg_check_removed(c->seg) == 1)
                atomic_store_explicit(&c->removed, 1, memory_order_relaxed);
        return core_removed(c) ? STOA_E_REMOVED : 0;
}

int core_thread_enter(struct core *c, struct core_thread *t)
{
        int r;

        if (c->seg->readonly)   /* a slot is written; this mapping must never be */
                return -EROFS;
        r = slot_claim(c->seg, &t->slot, &t->gen);
        if (r < 0)
                return r;
        t->core = c;
        al_heap_init(&t->heap, &c->al, t->slot, t->gen);
        return 0;
}

void core_thread_leave(struct core_thread *t)
{
        if (!t || !t->core)
                return;
        if (t->core->seg->forked) {     /* the slot is the parent's: leave it be */
                t->core = NULL;
                return;
        }
        al_heap_abandon(&t->heap);
        slot_release(t->core->seg, t->slot);
        t->core = NULL;
}
