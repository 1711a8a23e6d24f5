/*
 * client/ns.c: stoa_ns_list(), stoa_ns_drop(), stoa_flush().
 *
 * The protocols are the cache's (cache/ns.c); this is their public face:
 * argument checks, and the default namespace, which has no interned name,
 * cannot be dropped, and is listed as "default".
 */
#include "client/client.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

STOA_API int stoa_ns_list(struct stoa *c, stoa_ns_fn fn, void *arg)
{
        if (!c || !fn)
                return -EINVAL;
        struct core *core = stoa_core_(c);
        struct cache *k = core->cache;

        if (core->seg->forked)
                return STOA_E_FORKED;
        char *buf = malloc(CACHE_KEY_MAX + 1);
        if (!buf)
                return -ENOMEM;
        int r = fn("default", 0, arg);
        for (uint32_t i = 1; i < CACHE_NS_MAX && r == 0; i++) {
                uint64_t w = atomic_load_explicit(&k->hdr->ns[i], memory_order_acquire);
                const char *s;
                size_t len;
                if (!NSW_ID(w) || cache_intern_get(k, NSW_ID(w), &s, &len) < 0)
                        continue;
                /* Copied out: the callback gets a string of its own, NUL-terminated. */
                memcpy(buf, s, len);
                buf[len] = 0;
                r = fn(buf, i, arg);
        }
        free(buf);
        return r;
}

/* "" and "default" name the default namespace (as in stoa_options.ns). */
static bool is_default(const char *name)
{
        return !*name || !strcmp(name, "default");
}

STOA_API int stoa_ns_drop(struct stoa *c, const char *name)
{
        struct cache_thr *t;
        struct core *core;
        int r;

        if (!c || !name)
                return -EINVAL;
        if (strlen(name) > CACHE_KEY_MAX)
                return -ENOENT;         /* no namespace has so long a name */
        if (is_default(name)) {
                seg_set_errdetail("the default namespace cannot be dropped (stoa_flush empties it)");
                return -EPERM;
        }
        if ((r = stoa_thread_(c, &t, &core)) < 0)
                return r;
        return cache_ns_drop(t, name, strlen(name));
}

STOA_API int stoa_flush(struct stoa *c)
{
        struct cache_thr *t;
        struct core *core;
        int r;

        if ((r = stoa_thread_(c, &t, &core)) < 0)
                return r;
        return cache_flush(t);
}
