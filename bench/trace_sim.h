/*
 * bench/trace_sim.h: the reference policies, simulated in process memory, so
 * that trace_replay can compare stoa with LRU and S3-FIFO at exactly the
 * capacity stoa achieved (the README's figures are at the target only).
 *
 * The semantics are libCacheSim's (cache_get_base): a hit updates the
 * policy's metadata; a miss evicts until the object fits and inserts it; an
 * object larger than the cache (S3-FIFO: than its small queue) is never
 * admitted. S3-FIFO is libCacheSim's S3FIFO.c with its defaults: small queue
 * 10% of the capacity, ghost 90%, an object leaves the small queue for the
 * main one if it was hit at least twice there, the main queue is a 2-bit
 * CLOCK, and before the first eviction a full small queue overflows into
 * main. CLOCK is libCacheSim's Clock with a 2-bit counter, the policy stoa
 * runs. Capacities are in objects (every size 1) or in bytes.
 *
 * Header-only, like spsc.h: one user.
 */
#ifndef STOA_BENCH_TRACE_SIM_H
#define STOA_BENCH_TRACE_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define NIL UINT32_MAX

/* A trace as the simulators see it: dense object ids, and sizes or NULL (all 1). */
struct sim_trace {
        size_t nreq, nobj;
        const uint32_t *req_obj;
        const uint32_t *req_size;
};

static void *sim_calloc(size_t n, size_t size)
{
        void *p = calloc(n ? n : 1, size);

        if (!p) {
                fprintf(stderr, "trace-replay: out of memory\n");
                exit(1);
        }
        return p;
}

/*
 * Intrusive doubly linked FIFO/LRU lists over object ids, for simulating LRU
 * and S3-FIFO at exactly the capacity stoa achieved. `where` says which list
 * an object is on; sizes are 1 (objects) or bytes.
 */
enum { Q_NONE, Q_LRU, Q_SMALL = Q_LRU, Q_MAIN, Q_GHOST, Q_N };

struct qlist {
        uint32_t head, tail;            /* head: oldest */
        uint64_t bytes;
};

struct sim {
        uint32_t *prev, *next, *size;
        uint8_t *where, *freq;
        struct qlist q[Q_N];
};

static void sim_init(struct sim *s, size_t nobj)
{
        s->prev = sim_calloc(nobj, sizeof(uint32_t));
        s->next = sim_calloc(nobj, sizeof(uint32_t));
        s->size = sim_calloc(nobj, sizeof(uint32_t));
        s->where = sim_calloc(nobj, 1);
        s->freq = sim_calloc(nobj, 1);
        for (int i = 0; i < Q_N; i++)
                s->q[i] = (struct qlist){ NIL, NIL, 0 };
}

static void sim_free(struct sim *s)
{
        free(s->prev);
        free(s->next);
        free(s->size);
        free(s->where);
        free(s->freq);
}

static void q_push(struct sim *s, int qi, uint32_t o, uint32_t size)
{
        struct qlist *q = &s->q[qi];

        s->where[o] = (uint8_t)qi;
        s->size[o] = size;
        s->prev[o] = q->tail;
        s->next[o] = NIL;
        if (q->tail != NIL)
                s->next[q->tail] = o;
        else
                q->head = o;
        q->tail = o;
        q->bytes += size;
}

static void q_remove(struct sim *s, uint32_t o)
{
        struct qlist *q = &s->q[s->where[o]];

        if (s->prev[o] != NIL)
                s->next[s->prev[o]] = s->next[o];
        else
                q->head = s->next[o];
        if (s->next[o] != NIL)
                s->prev[s->next[o]] = s->prev[o];
        else
                q->tail = s->prev[o];
        q->bytes -= s->size[o];
        s->where[o] = Q_NONE;
}

static double sim_lru(const struct sim_trace *t, uint64_t cap)
{
        struct sim s;
        uint64_t miss = 0;

        sim_init(&s, t->nobj);
        for (size_t i = 0; i < t->nreq; i++) {
                uint32_t o = t->req_obj[i], sz = t->req_size ? t->req_size[i] : 1;
                if (s.where[o] == Q_LRU) {
                        q_remove(&s, o);
                        q_push(&s, Q_LRU, o, s.size[o]);
                        continue;
                }
                miss++;
                if (sz > cap)
                        continue;
                while (s.q[Q_LRU].bytes + sz > cap)
                        q_remove(&s, s.q[Q_LRU].head);
                q_push(&s, Q_LRU, o, sz);
        }
        sim_free(&s);
        return (double)miss / (double)t->nreq;
}

/*
 * CLOCK with a 2-bit counter (libCacheSim's Clock, n-bit-counter=2): a hit
 * raises the counter up to 3; the hand lowers a non-zero counter and passes
 * on, and evicts an object at 0. This is the policy stoa's cache runs (over
 * memory addresses, per size class), so it says whether a difference from
 * LRU is the policy's or the implementation's.
 */
static double sim_clock2(const struct sim_trace *t, uint64_t cap)
{
        struct sim s;
        uint64_t miss = 0;

        sim_init(&s, t->nobj);
        for (size_t i = 0; i < t->nreq; i++) {
                uint32_t o = t->req_obj[i], sz = t->req_size ? t->req_size[i] : 1;
                if (s.where[o] == Q_MAIN) {
                        if (s.freq[o] < 3)
                                s.freq[o]++;
                        continue;
                }
                miss++;
                if (sz > cap)
                        continue;
                while (s.q[Q_MAIN].bytes + sz > cap) {
                        uint32_t v = s.q[Q_MAIN].head;
                        q_remove(&s, v);
                        if (s.freq[v]) {
                                s.freq[v]--;
                                q_push(&s, Q_MAIN, v, s.size[v]);
                        }
                }
                q_push(&s, Q_MAIN, o, sz);
                s.freq[o] = 0;
        }
        sim_free(&s);
        return (double)miss / (double)t->nreq;
}

/* libCacheSim S3FIFO.c defaults: small 10%, ghost 90%, move to main at freq >= 2. */
struct s3 {
        struct sim s;
        uint64_t cap, small_cap, main_cap, ghost_cap;
        bool has_evicted;
};

static void s3_ghost_insert(struct s3 *c, uint32_t o, uint32_t sz)
{
        if (sz > c->ghost_cap)
                return;
        while (c->s.q[Q_GHOST].bytes + sz > c->ghost_cap)
                q_remove(&c->s, c->s.q[Q_GHOST].head);
        q_push(&c->s, Q_GHOST, o, sz);
}

static void s3_evict(struct s3 *c)
{
        struct sim *s = &c->s;

        c->has_evicted = true;
        if (s->q[Q_MAIN].bytes > c->main_cap || s->q[Q_SMALL].head == NIL) {
                while (s->q[Q_MAIN].head != NIL) {
                        uint32_t o = s->q[Q_MAIN].head;
                        unsigned f = s->freq[o];
                        q_remove(s, o);
                        if (f < 1)
                                return;
                        q_push(s, Q_MAIN, o, s->size[o]);
                        s->freq[o] = (uint8_t)((f < 3 ? f : 3) - 1);
                }
                return;
        }
        while (s->q[Q_SMALL].head != NIL) {
                uint32_t o = s->q[Q_SMALL].head;
                q_remove(s, o);
                if (s->freq[o] >= 2) {
                        q_push(s, Q_MAIN, o, s->size[o]);
                        s->freq[o] = 0;
                } else {
                        s3_ghost_insert(c, o, s->size[o]);
                        return;
                }
        }
}

static double sim_s3fifo(const struct sim_trace *t, uint64_t cap)
{
        struct s3 c = { .cap = cap };
        struct sim *s = &c.s;
        uint64_t miss = 0;

        c.small_cap = (uint64_t)((double)cap * 0.10);
        c.main_cap = cap - c.small_cap;
        c.ghost_cap = (uint64_t)((double)cap * 0.90);
        sim_init(s, t->nobj);
        for (size_t i = 0; i < t->nreq; i++) {
                uint32_t o = t->req_obj[i], sz = t->req_size ? t->req_size[i] : 1;
                bool ghost = false;

                if (s->where[o] == Q_SMALL || s->where[o] == Q_MAIN) {
                        if (s->freq[o] < 255)
                                s->freq[o]++;
                        continue;
                }
                miss++;
                if (s->where[o] == Q_GHOST) {
                        q_remove(s, o);
                        ghost = true;
                }
                if (sz > c.small_cap || sz > cap)
                        continue;
                while (s->q[Q_SMALL].bytes + s->q[Q_MAIN].bytes + sz > cap)
                        s3_evict(&c);
                if (ghost)
                        q_push(s, Q_MAIN, o, sz);
                else if (sz >= c.small_cap)
                        continue;
                else if (!c.has_evicted && s->q[Q_SMALL].bytes >= c.small_cap)
                        q_push(s, Q_MAIN, o, sz);
                else
                        q_push(s, Q_SMALL, o, sz);
                s->freq[o] = 0;
        }
        sim_free(s);
        return (double)miss / (double)t->nreq;
}

#endif /* STOA_BENCH_TRACE_SIM_H */
