/*
 * bench/trace_load.h: the traces of ../shared/traces in process memory, for
 * trace_replay.
 *
 * A trace is decompressed with `xz -dc` through popen() (never to disk) and
 * parsed in one pass that also numbers its objects densely in order of first
 * request (an open-addressed hash map), so that the replay and the
 * simulators index arrays instead of hashing, and counts the distinct
 * objects and bytes the cache sizes are fractions of. Formats: 4- or 8-byte
 * big-endian keys, or text lines `time id size`.
 *
 * Header-only, like spsc.h: one user.
 */
#ifndef STOA_BENCH_TRACE_LOAD_H
#define STOA_BENCH_TRACE_LOAD_H

#include "stoa/stoa.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum fmt { FMT_U32BE, FMT_U64BE, FMT_TEXT, FMT_SCAN };

struct trace_def {
        const char *name;
        const char *file;               /* FMT_SCAN: none, the trace is made here */
        enum fmt fmt;
        unsigned klen;                  /* bytes of the stoa key */
};

/* A trace in memory, its objects numbered densely in order of first request. */
struct trace {
        const struct trace_def *def;
        size_t nreq, nobj, obj_cap;
        uint32_t *req_obj;              /* object of each request */
        uint32_t *req_size;             /* FMT_TEXT: size of each request */
        uint64_t *obj_key;
        uint32_t *obj_size;             /* FMT_TEXT: size at first request */
        uint64_t distinct_bytes;        /* sum of obj_size */
        uint32_t max_size;
        double load_s;
};

static void die(const char *what, int err)
{
        fprintf(stderr, "trace-replay: %s: %s\n", what, err < 0 ? stoa_strerror(err) : strerror(err));
        exit(1);
}

static void *xcalloc(size_t n, size_t size)
{
        void *p = calloc(n ? n : 1, size);

        if (!p)
                die("calloc", ENOMEM);
        return p;
}

static double now_s(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* out = a/b; a path too long for PATH_MAX is an error, not a truncation */
static void path_join(char *out, size_t cap, const char *a, const char *b)
{
        int n = snprintf(out, cap, "%s/%s", a, b);

        if (n < 0 || (size_t)n >= cap)
                die(a, ENAMETOOLONG);
}

static uint64_t mix64(uint64_t x)      /* splitmix64 finaliser */
{
        x ^= x >> 30;
        x *= 0xbf58476d1ce4e5b9ull;
        x ^= x >> 27;
        x *= 0x94d049bb133111ebull;
        return x ^ (x >> 31);
}

/* ---- object numbering: an open-addressed map key -> dense id ------------ */

struct idmap {
        uint64_t *keys;
        uint32_t *ids;                  /* id + 1; 0 = empty */
        size_t mask, n;
};

static void idmap_init(struct idmap *m, size_t cap)
{
        size_t sz = 1024;

        while (sz < cap * 2)
                sz <<= 1;
        m->keys = xcalloc(sz, sizeof(*m->keys));
        m->ids = xcalloc(sz, sizeof(*m->ids));
        m->mask = sz - 1;
        m->n = 0;
}

static void idmap_grow(struct idmap *m)
{
        struct idmap big;

        idmap_init(&big, (m->mask + 1));
        for (size_t i = 0; i <= m->mask; i++) {
                if (!m->ids[i])
                        continue;
                size_t j = mix64(m->keys[i]) & big.mask;
                while (big.ids[j])
                        j = (j + 1) & big.mask;
                big.keys[j] = m->keys[i];
                big.ids[j] = m->ids[i];
        }
        big.n = m->n;
        free(m->keys);
        free(m->ids);
        *m = big;
}

/* The id of key, allocating the next one (*ret_new = true) if it is new. */
static uint32_t idmap_get(struct idmap *m, uint64_t key, bool *ret_new)
{
        if ((m->n + 1) * 2 > m->mask + 1)
                idmap_grow(m);
        size_t j = mix64(key) & m->mask;
        while (m->ids[j]) {
                if (m->keys[j] == key) {
                        *ret_new = false;
                        return m->ids[j] - 1;
                }
                j = (j + 1) & m->mask;
        }
        m->keys[j] = key;
        m->ids[j] = (uint32_t)++m->n;
        *ret_new = true;
        return m->ids[j] - 1;
}

/* ---- loading --------------------------------------------------------------- */

static unsigned char *xz_read_all(const char *path, size_t *ret_len)
{
        char cmd[PATH_MAX + 32];
        size_t cap = 1u << 24, len = 0;
        unsigned char *buf = malloc(cap);
        FILE *f;
        int st;

        if (!buf)
                die("malloc", ENOMEM);
        if (strchr(path, '\''))
                die(path, EINVAL);
        snprintf(cmd, sizeof(cmd), "xz -dc -- '%s'", path);
        f = popen(cmd, "r");
        if (!f)
                die("popen xz", errno);
        for (;;) {
                if (len == cap) {
                        cap *= 2;
                        buf = realloc(buf, cap);
                        if (!buf)
                                die("realloc", ENOMEM);
                }
                size_t got = fread(buf + len, 1, cap - len, f);
                if (!got)
                        break;
                len += got;
        }
        st = pclose(f);
        if (st != 0) {
                fprintf(stderr, "trace-replay: `%s` failed (status %d)\n", cmd, st);
                exit(1);
        }
        *ret_len = len;
        return buf;
}

static void trace_add(struct trace *t, struct idmap *m, uint64_t key, uint32_t size, size_t *cap)
{
        bool fresh;
        uint32_t id = idmap_get(m, key, &fresh);

        if (t->nreq == *cap) {
                *cap = *cap ? *cap * 2 : 1024;
                t->req_obj = realloc(t->req_obj, *cap * sizeof(*t->req_obj));
                t->req_size = realloc(t->req_size, *cap * sizeof(*t->req_size));
                if (!t->req_obj || !t->req_size)
                        die("realloc", ENOMEM);
        }
        t->req_obj[t->nreq] = id;
        t->req_size[t->nreq++] = size;
        if (fresh) {
                if (m->n > t->obj_cap) {
                        t->obj_cap = t->obj_cap ? t->obj_cap * 2 : 1024;
                        t->obj_key = realloc(t->obj_key, t->obj_cap * sizeof(*t->obj_key));
                        t->obj_size = realloc(t->obj_size, t->obj_cap * sizeof(*t->obj_size));
                        if (!t->obj_key || !t->obj_size)
                                die("realloc", ENOMEM);
                }
                t->obj_key[id] = key;
                t->obj_size[id] = size;
                t->distinct_bytes += size;
                t->nobj = m->n;
        }
        if (size > t->max_size)
                t->max_size = size;
}

/* Parse "time id size" lines; other lines are skipped. */
static void parse_text(struct trace *t, struct idmap *m, const unsigned char *buf, size_t len,
                       size_t *cap)
{
        const char *p = (const char *)buf, *end = p + len;

        while (p < end) {
                const char *eol = memchr(p, '\n', (size_t)(end - p));
                char line[128];
                unsigned long long tm, id, size;

                if (!eol)
                        eol = end;
                size_t n = (size_t)(eol - p);
                if (n < sizeof(line)) {
                        memcpy(line, p, n);
                        line[n] = 0;
                        if (sscanf(line, "%llu %llu %llu", &tm, &id, &size) == 3 && size > 0 &&
                            size < UINT32_MAX)
                                trace_add(t, m, id, (uint32_t)size, cap);
                }
                p = eol + 1;
        }
}

/*
 * The scan-resistance case, made here (deterministic): SCAN_HOT objects read
 * at random, then a one-time scan of SCAN_ONCE new objects interleaved one to
 * one with hot reads, then hot reads again. At 1% of its objects a cache
 * holds the hot set with a little room; LRU lets the scan flush it (every hot
 * object is reread after SCAN_HOT scan objects went by), a scan-resistant
 * policy keeps it and misses only the scan.
 */
#define SCAN_HOT        3000u
#define SCAN_ONCE       400000u
#define SCAN_WARM       400000u         /* hot reads before the scan, and after it */

static void make_scan(struct trace *t, struct idmap *m, size_t *cap)
{
        uint64_t x = 0x5ca11ab1eull;
        uint64_t once = 0;

        for (int phase = 0; phase < 3; phase++)
                for (uint32_t i = 0; i < (phase == 1 ? 2 * SCAN_ONCE : SCAN_WARM); i++) {
                        x = mix64(x + 0x9e3779b97f4a7c15ull);
                        if (phase == 1 && i % 2)
                                trace_add(t, m, (1ull << 32) + once++, 1, cap);
                        else
                                trace_add(t, m, x % SCAN_HOT, 1, cap);
                }
}

static void trace_load(struct trace *t, const struct trace_def *def, const char *dir)
{
        char path[PATH_MAX];
        struct idmap m;
        size_t len, cap = 0;
        double t0 = now_s();
        unsigned char *buf;

        memset(t, 0, sizeof(*t));
        t->def = def;
        idmap_init(&m, 1u << 16);
        if (def->fmt == FMT_SCAN) {
                make_scan(t, &m, &cap);
                free(t->req_size);
                t->req_size = NULL;
                free(m.keys);
                free(m.ids);
                t->load_s = now_s() - t0;
                return;
        }
        path_join(path, sizeof(path), dir, def->file);
        buf = xz_read_all(path, &len);
        if (def->fmt == FMT_TEXT) {
                parse_text(t, &m, buf, len, &cap);
        } else {
                unsigned w = def->fmt == FMT_U32BE ? 4 : 8;
                for (size_t off = 0; off + w <= len; off += w) {
                        uint64_t k = 0;
                        for (unsigned i = 0; i < w; i++)
                                k = k << 8 | buf[off + i];
                        trace_add(t, &m, k, 1, &cap);
                }
                free(t->req_size);      /* unit sizes: not worth keeping */
                t->req_size = NULL;
        }
        free(buf);
        free(m.keys);
        free(m.ids);
        t->load_s = now_s() - t0;
}

static void trace_free(struct trace *t)
{
        free(t->req_obj);
        free(t->req_size);
        free(t->obj_key);
        free(t->obj_size);
}

#endif /* STOA_BENCH_TRACE_LOAD_H */
