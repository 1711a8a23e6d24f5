/*
 * client/client.h: what client/inspect.c needs of a handle (internal).
 */
#ifndef STOA_CLIENT_CLIENT_H
#define STOA_CLIENT_CLIENT_H

#include "cache/cache.h"
#include "client/core.h"

struct stoa;

/* This thread's presence in the handle's segment (claims a slot at first use). */
int stoa_thread_(struct stoa *c, struct cache_thr **ret, struct core **ret_core);
struct core *stoa_core_(struct stoa *c);

#endif /* STOA_CLIENT_CLIENT_H */
