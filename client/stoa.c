/*
 * client/stoa.c: the public API of libstoa (include/stoa/stoa.h).
 *
 * A handle is shared by threads; the segment's structures are per slot, so
 * each thread that calls into a handle takes a slot of its own the first
 * time (a struct tstate, found through a thread-local cache) and gives it
 * back when the thread exits (a pthread key destructor) or the handle is
 * closed. Closing marks the thread states dead rather than freeing them:
 * they sit on their threads' lists, which only those threads may touch.
 */
#include "cache/cache.h"
#include "client/client.h"
#include "client/core.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tstate {
        struct stoa *h;
        uint64_t hid;
        struct core_thread ct;
        struct cache_thr t;
        struct stoa_stats st;
        uint64_t ns_epoch;              /* cache_hdr.ns_epoch when the name was resolved */
        uint64_t nskey;                 /* what it resolved to (ns_present) */
        uint32_t ns_name_id;            /* the name's interned id; 0 not interned yet */
        bool ns_present;
        struct tstate *hnext;           /* the handle's threads (h->mu) */
        struct tstate *tnext;           /* this thread's states (thread-local) */
        bool dead;                      /* handle closed (g_mu) */
};

struct stoa {
        struct core *core;
        uint64_t id;
        char *ns_name;                  /* NULL: the default namespace */
        size_t ns_len;
        pthread_mutex_t mu;
        struct tstate *threads;
        struct stoa_stats gone;         /* of threads that have left */
        struct stoa *next;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct stoa *g_handles;
static uint64_t g_next_id = 1;
static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static __thread struct tstate *tl_list, *tl_last;

/* ---- thread states ------------------------------------------------------- */

static void stats_add(struct stoa_stats *a, const struct stoa_stats *b)
{
        const uint64_t *src = (const uint64_t *)b;
        uint64_t *dst = (uint64_t *)a;

        for (size_t i = 0; i < sizeof(*a) / 8; i++)
                dst[i] += __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

/* Leave the slot of a live thread state (g_mu held). */
static void tstate_leave(struct tstate *ts)
{
        struct stoa *h = ts->h;

        pthread_mutex_lock(&h->mu);
        for (struct tstate **p = &h->threads; *p; p = &(*p)->hnext) {
                if (*p == ts) {
                        *p = ts->hnext;
                        break;
                }
        }
        ts->st.evictions += ts->t.cnt_evict;
        ts->st.expired += ts->t.cnt_expired;
        ts->st.conflicts += ts->t.cnt_conflict;
        stats_add(&h->gone, &ts->st);
        pthread_mutex_unlock(&h->mu);
        if (!h->core->seg->forked) {
                /* Views still held die with the thread or the handle: their pins go. */
                cache_views_drop(&ts->t);
                cache_unprotect(&ts->t);
                cache_reclaim(&ts->t);          /* what remains, an orphan pass frees */
        }
        core_thread_leave(&ts->ct);
        ts->dead = true;
}

static void thread_exit(void *arg)
{
        (void)arg;
        pthread_mutex_lock(&g_mu);
        while (tl_list) {
                struct tstate *ts = tl_list;
                tl_list = ts->tnext;
                if (!ts->dead)
                        tstate_leave(ts);
                free(ts);
        }
        tl_last = NULL;
        pthread_mutex_unlock(&g_mu);
}

static void make_key(void)
{
        pthread_key_create(&g_key, thread_exit);
}

static int thr_slow(struct stoa *h, struct tstate **ret)
{
        struct tstate *ts, **p;
        int r;

        /* Drop the states of closed handles, then look for ours. */
        pthread_mutex_lock(&g_mu);
        for (p = &tl_list; (ts = *p);) {
                if (ts->dead) {
                        *p = ts->tnext;
                        free(ts);
                        continue;
                }
                p = &ts->tnext;
        }
        pthread_mutex_unlock(&g_mu);
        for (ts = tl_list; ts; ts = ts->tnext) {
                if (ts->h == h && ts->hid == h->id) {
                        *ret = tl_last = ts;
                        return 0;
                }
        }
        ts = calloc(1, sizeof(*ts));
        if (!ts)
                return -ENOMEM;
        r = core_thread_enter(h->core, &ts->ct);
        if (r < 0) {
                free(ts);
                return r;
        }
        ts->h = h;
        ts->hid = h->id;
        cache_thr_init(&ts->t, h->core->cache, &ts->ct.heap, ts->ct.slot, ts->ct.gen);
        pthread_once(&g_once, make_key);
        pthread_setspecific(g_key, ts);         /* any non-NULL value: run the destructor */
        pthread_mutex_lock(&h->mu);
        ts->hnext = h->threads;
        h->threads = ts;
        pthread_mutex_unlock(&h->mu);
        ts->tnext = tl_list;
        tl_list = ts;
        *ret = tl_last = ts;
        return 0;
}

static inline int thr(struct stoa *h, struct tstate **ret)
{
        if (!h)
                return -EINVAL;
        if (h->core->seg->forked)
                return STOA_E_FORKED;
        if (core_removed(h->core))
                return STOA_E_REMOVED;
        struct tstate *ts = tl_last;
        if (ts && ts->h == h && ts->hid == h->id && !ts->dead) {
                *ret = ts;
                return 0;
        }
        int r = core_check_removed(h->core);
        return r < 0 ? r : thr_slow(h, ret);
}

/* thr() for calls that write: they also look, at most once a second, whether
 * the segment's file is still there (reads never make that syscall). */
static inline int thr_w(struct stoa *h, struct tstate **ret)
{
        int r = thr(h, ret);

        return r < 0 ? r : core_check_removed(h->core);
}

static inline void bump(uint64_t *c)
{
        __atomic_store_n(c, *c + 1, __ATOMIC_RELAXED);
}

/*
 * One lookup of the caller's: the handle's counts and the slot's, per
 * namespace (a namespace that does not exist has none).
 */
static inline void count_get(struct tstate *ts, uint64_t ns, bool hit, bool ns_exists)
{
        bump(&ts->st.gets);
        bump(hit ? &ts->st.hits : &ts->st.misses);
        if (ns_exists)
                cache_count(&ts->t, nskey_idx(ns), hit ? CNT_HITS : CNT_MISSES);
}

/* ---- the handle's namespace ---------------------------------------------- */

/*
 * What a named handle's namespace is now (cache/ns.c): resolved again only
 * when the segment's ns_epoch moved since this thread last resolved it, so a
 * call costs one load of a line that only namespace changes write. Nothing
 * is created unless `create` (a write): -ENOENT says there is no such
 * namespace, which a read treats as an empty one.
 */
static int ns_resolve(struct tstate *ts, bool create, uint64_t *ret)
{
        struct stoa *h = ts->h;
        struct cache *k = ts->t.k;
        uint64_t ep = atomic_load_explicit(&k->hdr->ns_epoch, memory_order_acquire);
        int r;

        if (ep != ts->ns_epoch) {
                /* Interned ids are for ever: once found, the name need not be hashed again. */
                if (!ts->ns_name_id && cache_intern_find(k, h->ns_name, h->ns_len,
                                                         &ts->ns_name_id) < 0)
                        ts->ns_name_id = 0;
                ts->ns_present = cache_ns_find(k, ts->ns_name_id, &ts->nskey) == 0;
                ts->ns_epoch = ep;
        }
        if (!ts->ns_present && !create)
                return -ENOENT;
        if (!ts->ns_present) {
                /* The creation moves the epoch past `ep`: the next call looks once more. */
                if ((r = cache_ns_create(&ts->t, h->ns_name, h->ns_len, &ts->nskey)) < 0)
                        return r;
                ts->ns_present = true;
        }
        *ret = ts->nskey;
        return 0;
}

/* The default namespace costs a branch on process-local memory, nothing shared. */
static inline int ns_of(struct tstate *ts, bool create, uint64_t *ret)
{
        if (!ts->h->ns_name) {
                *ret = 0;
                return 0;
        }
        return ns_resolve(ts, create, ret);
}

/* The public limits are the cache's. */
_Static_assert(STOA_KEY_MAX == CACHE_KEY_MAX, "key limit");
_Static_assert(STOA_NS_MAX == CACHE_NS_MAX - 1, "namespaces (0 is the default)");
_Static_assert(STOA_VIEWS_MAX == CACHE_VIEWS, "views a thread holds");

/* ---- open and close ------------------------------------------------------ */

STOA_API int stoa_open(struct stoa **ret, const char *name, const struct stoa_options *opts)
{
        struct stoa_options def = { 0 };
        struct core_config cfg;
        struct stoa *h;
        int r;

        if (!ret || !name || !*name)
                return -EINVAL;
        if (!opts)
                opts = &def;
        if (opts->flags & ~(STOA_OPEN_NOCREATE | STOA_OPEN_HUGE | STOA_OPEN_NOHUGE |
                            STOA_OPEN_RDONLY) ||
            (opts->flags & STOA_OPEN_HUGE && opts->flags & STOA_OPEN_NOHUGE)) {
                seg_set_errdetail("unknown or conflicting flags %#x", opts->flags);
                return -EINVAL;
        }
        if (opts->ns && strlen(opts->ns) > CACHE_KEY_MAX)
                return -E2BIG;
        /* "" and "default" name the default namespace; a named one is created by a write. */
        const char *nsname = opts->ns && *opts->ns && strcmp(opts->ns, "default") ? opts->ns : NULL;
        core_config_default(&cfg);
        if (opts->size)
                cfg.size = opts->size;
        if (opts->nslots)
                cfg.nslots = opts->nslots;
        cfg.mode = opts->mode;
        cfg.huge = opts->flags & STOA_OPEN_HUGE ? SEG_HUGE_REQUIRE :
                   opts->flags & STOA_OPEN_NOHUGE ? SEG_HUGE_REFUSE : SEG_HUGE_PREFER;
        cfg.flags = opts->flags & STOA_OPEN_NOCREATE ? SEG_OPEN_NOCREATE : 0;
        if (opts->flags & STOA_OPEN_RDONLY)
                cfg.flags |= SEG_OPEN_RDONLY | SEG_OPEN_NOCREATE;
        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        if (nsname && !(h->ns_name = strdup(nsname))) {
                free(h);
                return -ENOMEM;
        }
        h->ns_len = nsname ? strlen(nsname) : 0;
        pthread_mutex_init(&h->mu, NULL);
        r = core_open(&h->core, name, &cfg);
        if (r < 0) {
                free(h->ns_name);
                free(h);
                return r;
        }
        pthread_mutex_lock(&g_mu);
        h->id = g_next_id++;
        h->next = g_handles;
        g_handles = h;
        pthread_mutex_unlock(&g_mu);
        *ret = h;
        return 0;
}

STOA_API void stoa_close(struct stoa *h)
{
        if (!h)
                return;
        pthread_mutex_lock(&g_mu);
        for (struct stoa **p = &g_handles; *p; p = &(*p)->next) {
                if (*p == h) {
                        *p = h->next;
                        break;
                }
        }
        while (h->threads)
                tstate_leave(h->threads);       /* unlinks itself */
        pthread_mutex_unlock(&g_mu);
        if (tl_last && tl_last->dead)
                tl_last = NULL;
        core_close(h->core);
        pthread_mutex_destroy(&h->mu);
        free(h->ns_name);
        free(h);
}

/* ---- arguments ----------------------------------------------------------- */

static int check_key(const void *key, size_t klen)
{
        if (!key || klen == 0)
                return -EINVAL;
        return klen > CACHE_KEY_MAX ? -E2BIG : 0;
}

static int check_val(struct stoa *h, const void *val, size_t vlen)
{
        if (!val && vlen)
                return -EINVAL;
        if (vlen > UINT32_MAX || vlen > h->core->seg->size)
                return -E2BIG;
        return 0;
}

static uint32_t expire_of(struct cache *k, uint32_t ttl_s)
{
        if (!ttl_s)
                return 0;
        /*
         * The clock counts whole seconds: one more, so that a key lives at
         * least ttl_s seconds (at most ttl_s + 1), never less, whenever in
         * its second it was written.
         */
        uint64_t e = (uint64_t)cache_now(k) + ttl_s + 1;
        return e > UINT32_MAX ? UINT32_MAX : (uint32_t)e;
}

/* ---- reads --------------------------------------------------------------- */

/* Unlink `key` if what it holds has expired (a lazy expiry on access). */
static void expire_key(struct tstate *ts, uint64_t ns, const void *key, size_t klen)
{
        cache_delete_expired(&ts->t, ns, key, klen);
}

struct rd {
        void *buf;
        size_t cap;
        size_t vlen;
        bool want_version;              /* read the item's version (its stamp) too */
        uint64_t version;
        uint32_t expire;
};

/*
 * Copy a key's value out. 0, -ENOENT, -ENOBUFS (rd->vlen set). `count`: a
 * get of the caller's (incr, ttl and touch read too, but are not gets).
 */
static int read_key(struct tstate *ts, const void *key, size_t klen, struct rd *rd, bool count)
{
        struct cache_thr *t = &ts->t;
        struct item *it;
        uint64_t ns;
        int r = 0;

        if (ns_of(ts, false, &ns) < 0) {
                if (count)
                        count_get(ts, 0, false, false);
                return -ENOENT;                 /* no such namespace: an empty one */
        }
        uint64_t hash = cache_hash(t->k, ns, key, klen);
        _Atomic uint64_t *e = cache_lookup(t, ns, key, klen, hash, &it);
        if (!e) {
                r = -ENOENT;
        } else if (it->expire && cache_expired(it, cache_now(t->k))) {
                r = -EKEYEXPIRED;
        } else {
                rd->vlen = it->vlen;
                rd->version = rd->want_version ? cache_item_version(t->k, it) : 0;
                rd->expire = it->expire;
                if (it->vlen > rd->cap)
                        r = -ENOBUFS;
                else if (it->vlen)
                        memcpy(rd->buf, it->data + it->klen, it->vlen);
                cache_touch_freq(it);
        }
        cache_unprotect(t);
        if (r == -EKEYEXPIRED) {
                expire_key(ts, ns, key, klen);
                r = -ENOENT;
        }
        if (count)
                count_get(ts, ns, r != -ENOENT, true);
        return r;
}

STOA_API int stoa_gets(struct stoa *c, const void *key, size_t klen, void *buf, size_t cap,
                       size_t *ret_vlen, uint64_t *ret_version)
{
        struct tstate *ts;
        struct rd rd = { .buf = buf, .cap = buf ? cap : 0, .want_version = ret_version != NULL };
        int r;

        if ((r = check_key(key, klen)) < 0 || (r = thr(c, &ts)) < 0)
                return r;
        r = read_key(ts, key, klen, &rd, true);
        if (r == 0 || r == -ENOBUFS) {
                if (ret_vlen)
                        *ret_vlen = rd.vlen;
        }
        if (r == 0 && ret_version)
                *ret_version = rd.version;
        return r;
}

STOA_API int stoa_get(struct stoa *c, const void *key, size_t klen, void *buf, size_t cap,
                      size_t *ret_vlen)
{
        return stoa_gets(c, key, klen, buf, cap, ret_vlen, NULL);
}

/* ---- writes -------------------------------------------------------------- */

static int write_key(struct stoa *c, struct cache_wr *w, uint32_t ttl_s)
{
        struct tstate *ts;
        int r;

        if (!c)
                return -EINVAL;
        if ((r = check_key(w->key, w->klen)) < 0 || (r = check_val(c, w->val, w->vlen)) < 0 ||
            (r = thr_w(c, &ts)) < 0)
                return r;
        /* A replace or cas of a key in a namespace that does not exist has nothing to replace. */
        if ((r = ns_of(ts, w->mode == CM_SET || w->mode == CM_ADD, &w->ns)) < 0) {
                if (r == -ENOENT)
                        return r;
                bump(&ts->st.set_fails);
                return r;
        }
        w->expire = expire_of(ts->t.k, ttl_s);
        r = cache_store(&ts->t, w);
        if (r == 0)
                bump(&ts->st.sets);
        else if (r != -EEXIST && r != -ENOENT && r != -ESTALE)
                bump(&ts->st.set_fails);
        return r;
}

STOA_API int stoa_set(struct stoa *c, const void *key, size_t klen, const void *val, size_t vlen,
                      uint32_t ttl_s)
{
        struct cache_wr w = { .key = key, .klen = klen, .val = val, .vlen = vlen, .mode = CM_SET };

        return write_key(c, &w, ttl_s);
}

STOA_API int stoa_add(struct stoa *c, const void *key, size_t klen, const void *val, size_t vlen,
                      uint32_t ttl_s)
{
        struct cache_wr w = { .key = key, .klen = klen, .val = val, .vlen = vlen, .mode = CM_ADD };

        return write_key(c, &w, ttl_s);
}

STOA_API int stoa_replace(struct stoa *c, const void *key, size_t klen, const void *val,
                          size_t vlen, uint32_t ttl_s)
{
        struct cache_wr w = { .key = key, .klen = klen, .val = val, .vlen = vlen,
                              .mode = CM_REPLACE };

        return write_key(c, &w, ttl_s);
}

STOA_API int stoa_cas(struct stoa *c, const void *key, size_t klen, const void *val, size_t vlen,
                      uint32_t ttl_s, uint64_t version, uint64_t *ret_version)
{
        struct cache_wr w = { .key = key, .klen = klen, .val = val, .vlen = vlen, .mode = CM_CAS,
                              .expect = version };
        int r = write_key(c, &w, ttl_s);

        if (r == 0 && ret_version)
                *ret_version = w.ret_version;
        return r;
}

STOA_API int stoa_del(struct stoa *c, const void *key, size_t klen)
{
        struct tstate *ts;
        int r;

        uint64_t ns;

        if ((r = check_key(key, klen)) < 0 || (r = thr_w(c, &ts)) < 0)
                return r;
        if ((r = ns_of(ts, false, &ns)) < 0)
                return r;                       /* no such namespace: nothing to delete */
        r = cache_delete(&ts->t, ns, key, klen);
        if (r == 0)
                bump(&ts->st.dels);
        return r;
}

/*
 * Read-modify-write calls retry when another writer came first. Thousands of
 * losses in a row do not happen between live writers on one key; they mean a
 * damaged index (two entries for one key): give up rather than spin.
 */
#define RMW_TRIES 1000u

/* Parse a whole buffer as a signed decimal int64. */
static int parse_i64(const char *s, size_t n, int64_t *ret)
{
        size_t i = 0;
        bool neg = false;
        uint64_t v = 0;

        if (n && (s[0] == '-' || s[0] == '+')) {
                neg = s[0] == '-';
                i = 1;
        }
        if (i == n || n > 21)
                return -EDOM;
        for (; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EDOM;
                v = v * 10 + (uint64_t)(s[i] - '0');
                if (v > (uint64_t)INT64_MAX + neg)
                        return -ERANGE;
        }
        *ret = neg ? (int64_t)(0 - v) : (int64_t)v;
        return 0;
}

STOA_API int stoa_incr(struct stoa *c, const void *key, size_t klen, int64_t delta, uint32_t ttl_s,
                       int64_t *ret_value)
{
        struct tstate *ts;
        char cur[32], out[32];
        int r;

        if ((r = check_key(key, klen)) < 0 || (r = thr_w(c, &ts)) < 0)
                return r;
        for (unsigned tries = 0;; tries++) {
                struct rd rd = { .buf = cur, .cap = sizeof(cur), .want_version = true };
                if (tries >= RMW_TRIES)
                        return -EAGAIN;
                int64_t v = 0, nv;
                r = read_key(ts, key, klen, &rd, false);
                if (r == -ENOBUFS)
                        return -EDOM;   /* far too long to be an integer */
                if (r < 0 && r != -ENOENT)
                        return r;
                if (r == 0 && (r = parse_i64(cur, rd.vlen, &v)) < 0)
                        return r;
                if (__builtin_add_overflow(v, delta, &nv))
                        return -ERANGE;
                int n = snprintf(out, sizeof(out), "%lld", (long long)nv);
                struct cache_wr w = { .key = key, .klen = klen, .val = out, .vlen = (size_t)n };
                if ((r = ns_of(ts, true, &w.ns)) < 0)   /* a counter's first add creates it */
                        return r;
                if (rd.version) {
                        w.mode = CM_CAS;
                        w.expect = rd.version;
                        w.expire = rd.expire;
                } else {
                        w.mode = CM_ADD;
                        w.expire = expire_of(ts->t.k, ttl_s);
                }
                r = cache_store(&ts->t, &w);
                if (r == -ESTALE || r == -EEXIST || (r == -ENOENT && rd.version))
                        continue;       /* another writer came first: again */
                if (r < 0)
                        return r;
                bump(&ts->st.sets);
                if (ret_value)
                        *ret_value = nv;
                return 0;
        }
}

STOA_API int stoa_ttl(struct stoa *c, const void *key, size_t klen, uint32_t *ret_ttl_s)
{
        struct tstate *ts;
        struct rd rd = { .want_version = true };
        int r;

        if (!ret_ttl_s)
                return -EINVAL;
        if ((r = check_key(key, klen)) < 0 || (r = thr(c, &ts)) < 0)
                return r;
        r = read_key(ts, key, klen, &rd, false);
        if (r < 0 && r != -ENOBUFS)
                return r;
        if (!rd.expire) {
                *ret_ttl_s = 0;
        } else {
                uint32_t now = cache_now(ts->t.k);
                *ret_ttl_s = rd.expire > now + 1 ? rd.expire - now - 1 : 1;  /* see expire_of */
        }
        return 0;
}

STOA_API int stoa_touch(struct stoa *c, const void *key, size_t klen, uint32_t ttl_s)
{
        struct tstate *ts;
        int r;

        if ((r = check_key(key, klen)) < 0 || (r = thr_w(c, &ts)) < 0)
                return r;
        for (unsigned tries = 0;; tries++) {
                struct rd rd = { .want_version = true };
                if (tries >= RMW_TRIES)
                        return -EAGAIN;
                r = read_key(ts, key, klen, &rd, false);
                if (r < 0 && r != -ENOBUFS)
                        return r;
                rd.cap = rd.vlen;
                rd.buf = malloc(rd.vlen ? rd.vlen : 1);
                if (!rd.buf)
                        return -ENOMEM;
                r = read_key(ts, key, klen, &rd, false);
                uint64_t ns = 0;
                if (r == 0)
                        r = ns_of(ts, false, &ns);
                if (r == 0) {
                        struct cache_wr w = { .ns = ns, .key = key, .klen = klen,
                                              .val = rd.buf, .vlen = rd.vlen, .mode = CM_CAS,
                                              .expect = rd.version,
                                              .expire = expire_of(ts->t.k, ttl_s) };
                        r = cache_store(&ts->t, &w);
                }
                free(rd.buf);
                if (r == -ESTALE || r == -ENOBUFS)
                        continue;       /* changed between the reads or the write: again */
                if (r == 0)
                        bump(&ts->st.sets);
                return r;
        }
}

/* ---- batched reads ------------------------------------------------------- */

#define MGET_BATCH 16

STOA_API int stoa_mget(struct stoa *c, struct stoa_getreq *reqs, size_t n)
{
        struct tstate *ts;
        uint64_t hash[MGET_BATCH];
        int r, hits = 0;

        if (!reqs && n)
                return -EINVAL;
        if ((r = thr(c, &ts)) < 0)
                return r;
        struct cache *k = ts->t.k;
        uint32_t now = 0;
        uint64_t ns;
        bool ns_exists = ns_of(ts, false, &ns) == 0;
        for (size_t base = 0; base < n; base += MGET_BATCH) {
                size_t m = n - base < MGET_BATCH ? n - base : MGET_BATCH;
                struct stoa_getreq *q = reqs + base;
                /* 1: hash every key and start loading its first bucket line. */
                for (size_t i = 0; i < m; i++) {
                        q[i].err = check_key(q[i].key, q[i].klen);
                        if (q[i].err == -E2BIG)
                                q[i].err = -EINVAL;
                        if (q[i].err)
                                continue;
                        if (!ns_exists) {
                                q[i].err = -ENOENT;     /* no such namespace: an empty one */
                                count_get(ts, 0, false, false);
                                continue;
                        }
                        hash[i] = cache_hash(k, ns, q[i].key, q[i].klen);
                        cache_prefetch_bucket(k, hash[i]);
                }
                /* 2: find tag matches and start loading their items. */
                for (size_t i = 0; i < m; i++)
                        if (!q[i].err)
                                cache_prefetch_item(k, hash[i]);
                /* 3: compare keys and copy values, from lines now in cache. */
                for (size_t i = 0; i < m; i++) {
                        struct item *it;
                        if (q[i].err)
                                continue;
                        _Atomic uint64_t *e = cache_lookup(&ts->t, ns, q[i].key, q[i].klen,
                                                           hash[i], &it);
                        if (e && it->expire && !now)
                                now = cache_now(k);
                        if (!e || (it->expire && cache_expired(it, now))) {
                                q[i].err = -ENOENT;
                        } else {
                                q[i].vlen = it->vlen;
                                if (it->vlen > q[i].cap || (!q[i].buf && it->vlen)) {
                                        q[i].err = -ENOBUFS;
                                } else {
                                        if (it->vlen)
                                                memcpy(q[i].buf, it->data + it->klen, it->vlen);
                                        hits++;
                                }
                                cache_touch_freq(it);
                        }
                        count_get(ts, ns, q[i].err != -ENOENT, true);
                }
                cache_unprotect(&ts->t);
        }
        return hits;
}

/* ---- zero-copy reads ----------------------------------------------------- */

STOA_API int stoa_view_get(struct stoa *c, const void *key, size_t klen, struct stoa_view *v)
{
        struct tstate *ts;
        struct item *it;
        int r;

        if (!v)
                return -EINVAL;
        uint64_t ns;

        if ((r = check_key(key, klen)) < 0 || (r = thr(c, &ts)) < 0)
                return r;
        if (ns_of(ts, false, &ns) < 0) {
                count_get(ts, 0, false, false);
                return -ENOENT;
        }
        uint64_t hash = cache_hash(ts->t.k, ns, key, klen);
        _Atomic uint64_t *e = cache_lookup(&ts->t, ns, key, klen, hash, &it);
        if (!e || cache_expired(it, cache_now(ts->t.k))) {
                r = -ENOENT;
        } else {
                uint64_t off = seg_off(ts->t.k->s, it);
                r = cache_view_pin(&ts->t, off);
                if (r >= 0) {
                        v->val = it->data + it->klen;
                        v->vlen = it->vlen;
                        v->version = cache_item_version(ts->t.k, it);
                        v->priv[0] = off;
                        v->priv[1] = c->id;
                        cache_touch_freq(it);
                        r = 0;
                }
        }
        /* The view's pin, stored before the hazard pointer is cleared, keeps the item now. */
        cache_unprotect(&ts->t);
        if (r == 0 || r == -ENOENT)
                count_get(ts, ns, r == 0, true);
        return r;
}

STOA_API void stoa_view_release(struct stoa *c, struct stoa_view *v)
{
        struct tstate *ts;

        if (!v || !v->priv[0] || !c || v->priv[1] != c->id || thr(c, &ts) < 0)
                return;
        cache_view_unpin(&ts->t, v->priv[0]);
        memset(v, 0, sizeof(*v));
}

/* ---- iteration ----------------------------------------------------------- */

#define SCAN_BUCKETS 64        /* buckets whose keys a scan copies out between calls of fn */

struct found {
        size_t koff, klen, vlen;
};

/* The keys copied out of SCAN_BUCKETS buckets (at most CACHE_WAYS each). */
struct scan_buf {
        unsigned char *keys;
        size_t kcap, used;
        struct found *f;
        size_t nf;
};

static int scan_take(const struct item *it, void *arg)
{
        struct scan_buf *sb = arg;
        size_t klen = it->klen;

        if (sb->used + klen > sb->kcap) {
                unsigned char *nk = realloc(sb->keys, sb->kcap * 2 + klen);
                if (!nk)
                        return -ENOMEM;
                sb->keys = nk;
                sb->kcap = sb->kcap * 2 + klen;
        }
        memcpy(sb->keys + sb->used, it->data, klen);
        sb->f[sb->nf++] = (struct found){ sb->used, klen, it->vlen };
        sb->used += klen;
        return 0;
}

STOA_API int stoa_scan(struct stoa *c, const void *prefix, size_t plen, stoa_scan_fn fn,
                       void *arg)
{
        struct tstate *ts;
        int r;

        if (!fn || (!prefix && plen))
                return -EINVAL;
        uint64_t ns;

        if ((r = thr(c, &ts)) < 0)
                return r;
        if (ns_of(ts, false, &ns) < 0)
                return 0;                       /* no such namespace: no keys */
        struct cache *k = ts->t.k;
        size_t kcap = SCAN_BUCKETS * CACHE_WAYS * 64, fcap = SCAN_BUCKETS * CACHE_WAYS;
        unsigned char *keys = malloc(kcap);
        struct found *f = malloc(fcap * sizeof(*f));
        if (!keys || !f) {
                free(keys);
                free(f);
                return -ENOMEM;
        }
        /* 64 buckets at a time: copy the matching keys out, leave, then call fn. */
        struct scan_buf sb = { keys, kcap, 0, f, 0 };
        for (uint64_t b = 0; b < k->nbuckets && r == 0; b += SCAN_BUCKETS) {
                sb.used = sb.nf = 0;
                r = cache_scan_buckets(&ts->t, ns, prefix, plen, b, SCAN_BUCKETS, scan_take, &sb);
                for (size_t i = 0; i < sb.nf && r == 0; i++)
                        r = fn(sb.keys + sb.f[i].koff, sb.f[i].klen, sb.f[i].vlen, arg);
        }
        free(sb.keys);
        free(sb.f);
        return r;
}

/* ---- interner ------------------------------------------------------------ */

STOA_API int stoa_intern(struct stoa *c, const void *s, size_t len, uint32_t *ret_id)
{
        struct tstate *ts;
        int r;

        if (!ret_id || (!s && len))
                return -EINVAL;
        if (len > CACHE_KEY_MAX)
                return -E2BIG;
        if ((r = thr(c, &ts)) < 0)
                return r;
        return cache_intern(&ts->t, s ? s : "", len, ret_id);
}

STOA_API int stoa_intern_lookup(struct stoa *c, uint32_t id, void *buf, size_t cap,
                                size_t *ret_len)
{
        const char *s;
        size_t len;
        int r;

        if (!c)
                return -EINVAL;
        if (c->core->seg->forked)
                return STOA_E_FORKED;
        if ((r = cache_intern_get(c->core->cache, id, &s, &len)) < 0)
                return r;
        if (ret_len)
                *ret_len = len;
        if (len > cap || (!buf && len))
                return -ENOBUFS;
        memcpy(buf, s, len);
        return 0;
}

/* ---- statistics ---------------------------------------------------------- */

STOA_API void stoa_stats_get(struct stoa *c, struct stoa_stats *out)
{
        if (!out)
                return;
        memset(out, 0, sizeof(*out));
        if (!c)
                return;
        pthread_mutex_lock(&c->mu);
        *out = c->gone;
        for (struct tstate *ts = c->threads; ts; ts = ts->hnext) {
                stats_add(out, &ts->st);
                out->evictions += __atomic_load_n(&ts->t.cnt_evict, __ATOMIC_RELAXED);
                out->expired += __atomic_load_n(&ts->t.cnt_expired, __ATOMIC_RELAXED);
                out->conflicts += __atomic_load_n(&ts->t.cnt_conflict, __ATOMIC_RELAXED);
        }
        pthread_mutex_unlock(&c->mu);
}

/* For client/inspect.c: this thread's presence in the handle's segment. */
int stoa_thread_(struct stoa *c, struct cache_thr **ret, struct core **ret_core)
{
        struct tstate *ts;
        int r = thr_w(c, &ts);          /* stoa_sweep() writes */

        if (r < 0)
                return r;
        *ret = &ts->t;
        *ret_core = c->core;
        return 0;
}

struct core *stoa_core_(struct stoa *c)
{
        return c->core;
}
