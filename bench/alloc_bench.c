/*
 * bench/alloc_bench.c: the allocator's throughput, with glibc malloc as the
 * process-local reference, measured in the same run.
 *
 * Every case runs in freshly forked workers (one or two processes, each with
 * its own slot on a segment the parent created), so each starts from the
 * same state and glibc starts from an unused heap. Workers set up and warm
 * up, then wait on a pipe barrier and start together; they report through a
 * shared page. An "op" is one alloc+free pair plus an 8-byte write to the new
 * block.
 *
 *   local  a ring of N live blocks per process: allocate a new block, free the
 *          oldest. Mixed sizes (a fixed-seed table, the same for stoa and
 *          glibc) or a fixed 64 B.
 *   xfer   process A allocates and hands the block through a shared ring to
 *          process B, which frees it: for stoa every free is a remote free.
 *          glibc cannot free another process's memory, so its reference is the
 *          same pattern between two threads; "ring only" passes integers to
 *          show what the hand-off alone costs.
 *
 * Figures are printed, never judged: this program asserts nothing about time.
 * While the workers of a stoa case pause after measuring (their blocks still
 * live), the parent reads al_stats and runs al_check on the quiet segment.
 */
#include "bench/spsc.h"
#include "client/core.h"
#include "tools/cli.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NSIZES        65536u            /* size table, power of two */
#define SIZE_SEED     0x5eed0a110cull
#define BATCH         256u              /* ops between clock reads */
#define SENTINEL      UINT64_MAX        /* the producer's last ring entry */
#define MAX_WORKERS   2

/* ---- cases ---------------------------------------------------------------- */

enum impl { IMPL_STOA, IMPL_GLIBC, IMPL_NONE };
enum pattern { PAT_LOCAL, PAT_XFER };

struct bcase {
        const char *id;
        const char *label;
        enum impl impl;
        enum pattern pat;
        bool fixed64;
        int nproc;              /* processes forked */
        bool threads;           /* xfer between two threads of one process */
        const char *ref;        /* id of the glibc case to compare with */
};

static const struct bcase cases[] = {
        { "stoa-mixed-1p", "stoa  mixed 16-1023 B", IMPL_STOA, PAT_LOCAL, false, 1, false, "glibc-mixed-1p" },
        { "glibc-mixed-1p", "glibc mixed 16-1023 B", IMPL_GLIBC, PAT_LOCAL, false, 1, false, NULL },
        { "stoa-mixed-2p", "stoa  mixed 16-1023 B", IMPL_STOA, PAT_LOCAL, false, 2, false, "glibc-mixed-2p" },
        { "glibc-mixed-2p", "glibc mixed 16-1023 B", IMPL_GLIBC, PAT_LOCAL, false, 2, false, NULL },
        { "stoa-64-1p", "stoa  fixed 64 B", IMPL_STOA, PAT_LOCAL, true, 1, false, "glibc-64-1p" },
        { "glibc-64-1p", "glibc fixed 64 B", IMPL_GLIBC, PAT_LOCAL, true, 1, false, NULL },
        { "stoa-64-2p", "stoa  fixed 64 B", IMPL_STOA, PAT_LOCAL, true, 2, false, "glibc-64-2p" },
        { "glibc-64-2p", "glibc fixed 64 B", IMPL_GLIBC, PAT_LOCAL, true, 2, false, NULL },
        { "stoa-xfer", "stoa  A alloc, B free", IMPL_STOA, PAT_XFER, false, 2, false, "glibc-xfer" },
        { "glibc-xfer", "glibc A alloc, B free", IMPL_GLIBC, PAT_XFER, false, 1, true, NULL },
        { "ring-xfer", "ring only (no alloc)", IMPL_NONE, PAT_XFER, false, 2, false, NULL },
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

/* ---- what workers share with the parent ----------------------------------- */

struct wres {
        uint64_t ops, t0, t1, errors;
        uint64_t wait_ns;       /* xfer: time spent waiting on the ring */
        int status;
        char msg[200];
};

struct ctl {
        struct wres w[MAX_WORKERS];
};

struct opts {
        uint64_t seg_size;
        uint32_t live;
        double seconds;         /* total for warm-up + measurement of all cases */
        uint64_t ops;           /* if set: measured ops per worker, instead of time */
        bool json, pin;
        const char *only;
};

/* Busy CPU time of the whole machine, and ours (this process and its children). */
struct cpu_use {
        double busy_s, steal_s, mine_s, wall_s;
};

static void cpu_use(struct cpu_use *u)
{
        unsigned long long v[8] = { 0 };
        double tck = (double)sysconf(_SC_CLK_TCK);
        struct rusage self, kids;
        FILE *f = fopen("/proc/stat", "r");

        /* cpu  user nice system idle iowait irq softirq steal */
        if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                         &v[3], &v[4], &v[5], &v[6], &v[7]) != 8)
                memset(v, 0, sizeof(v));
        if (f)
                fclose(f);
        u->busy_s = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / tck;
        u->steal_s = (double)v[7] / tck;
        getrusage(RUSAGE_SELF, &self);
        getrusage(RUSAGE_CHILDREN, &kids);
        u->mine_s = (double)(self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec +
                             kids.ru_stime.tv_sec) +
                    (double)(self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec +
                             kids.ru_stime.tv_usec) / 1e6;
        u->wall_s = (double)now_ns() / 1e9;
}

struct bench {
        struct opts o;
        double warm_s, meas_s;          /* per case */
        uint64_t warm_ops;
        struct core *core;
        int segfd;                      /* a dup of the memfd, for children to attach */
        uint32_t *mixed, *fixed;
        double mixed_mean;
        struct ctl *ctl;
        struct spsc *ring;
        size_t ring_bytes;
        int ncpu;
        struct cpu_use cpu0;            /* at the start */
        double others_s, steal_s, wall_s; /* over the run: CPU not ours, and stolen */
};

struct result {
        const struct bcase *c;
        bool ran, ok;
        uint64_t ops, errors;
        double secs, mops, ns_op;
        double busy_ns[2], idle[2];     /* xfer: per side, A then B */
        bool have_stats;
        struct al_stats st;
        uint64_t check_problems;
        char check_msg[200];
};

/* ---- size tables ---------------------------------------------------------- */

static uint64_t xorshift(uint64_t *s)
{
        uint64_t x = *s;

        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *s = x;
        return x * 0x2545f4914f6cdd1dull;
}

/* 16..1023 B, each power-of-two octave equally likely: half the requests < 128 B. */
static void make_sizes(struct bench *B)
{
        uint64_t s = SIZE_SEED, sum = 0;

        for (uint32_t i = 0; i < NSIZES; i++) {
                uint64_t r = xorshift(&s);
                uint32_t lo = 16u << (r % 6);
                B->mixed[i] = lo + (uint32_t)((r >> 8) % lo);
                B->fixed[i] = 64;
                sum += B->mixed[i];
        }
        B->mixed_mean = (double)sum / NSIZES;
}

/* ---- the measured loops --------------------------------------------------- */

struct wstate {
        struct al_heap *h;
        uint8_t *base;
        const uint32_t *sizes;
        uint32_t k;             /* next index in sizes */
        uint64_t *live;         /* local: ring of live blocks (offsets or pointers) */
        uint32_t mask;
        uint64_t pos;
        struct prod p;          /* xfer */
        struct cons c;
        struct wres *res;       /* xfer consumer: where its figures go */
        uint64_t errors;
};

typedef void (*batch_fn)(struct wstate *w, uint32_t n);

static inline uint32_t next_size(struct wstate *w)
{
        return w->sizes[w->k++ & (NSIZES - 1)];
}

static int stoa_new(struct wstate *w, uint64_t *ret_off)
{
        int r = al_alloc(w->h, next_size(w), -1, ret_off);

        if (r == 0) {
                *(volatile uint64_t *)(w->base + *ret_off) = *ret_off;
                al_commit(w->h);
        }
        return r;
}

static void stoa_local(struct wstate *w, uint32_t n)
{
        for (uint32_t i = 0; i < n; i++) {
                uint32_t s = (uint32_t)(w->pos++ & w->mask);
                uint64_t off;
                if (stoa_new(w, &off) != 0) {
                        w->errors++;
                        continue;
                }
                if (al_free(w->h, w->live[s]) != 0)
                        w->errors++;
                w->live[s] = off;
        }
}

static void glibc_local(struct wstate *w, uint32_t n)
{
        for (uint32_t i = 0; i < n; i++) {
                uint32_t s = (uint32_t)(w->pos++ & w->mask);
                uint64_t *p = malloc(next_size(w));
                if (!p) {
                        w->errors++;
                        continue;
                }
                *(volatile uint64_t *)p = (uintptr_t)p;
                free((void *)(uintptr_t)w->live[s]);
                w->live[s] = (uintptr_t)p;
        }
}

static void stoa_produce(struct wstate *w, uint32_t n)
{
        for (uint32_t i = 0; i < n; i++) {
                uint64_t off;
                if (stoa_new(w, &off) != 0) {
                        w->errors++;
                        continue;
                }
                ring_push(&w->p, off);
        }
}

static void glibc_produce(struct wstate *w, uint32_t n)
{
        for (uint32_t i = 0; i < n; i++) {
                uint64_t *p = malloc(next_size(w));
                if (!p) {
                        w->errors++;
                        continue;
                }
                *(volatile uint64_t *)p = (uintptr_t)p;
                ring_push(&w->p, (uintptr_t)p);
        }
}

static void none_produce(struct wstate *w, uint32_t n)
{
        for (uint32_t i = 0; i < n; i++)
                ring_push(&w->p, w->pos++);
}

/*
 * The consumer frees until the producer's sentinel; it reads each block first.
 * Its figures cover its whole run (the producer's warm-up included).
 */
static void consume(struct wstate *w, enum impl impl)
{
        uint64_t n = 0, t0 = now_ns();

        for (;; n++) {
                uint64_t v = ring_pop(&w->c);
                if (v == SENTINEL)
                        break;
                if (impl == IMPL_STOA) {
                        if (!w->h)
                                continue;       /* setup failed: just drain */
                        if (*(volatile uint64_t *)(w->base + v) != v || al_free(w->h, v) != 0)
                                w->errors++;
                } else if (impl == IMPL_GLIBC) {
                        if (*(volatile uint64_t *)(uintptr_t)v != v)
                                w->errors++;
                        free((void *)(uintptr_t)v);
                }
        }
        w->res->t1 = now_ns();
        w->res->t0 = t0;
        w->res->ops = n;
        w->res->wait_ns = w->c.wait_ns;
        w->res->errors = w->errors;
        atomic_store_explicit(&w->c.r->tail, w->c.tail, memory_order_release);
}

/* Run batches for `secs`, or (secs 0: --ops mode) exactly `ops` ops. Returns the ops run. */
static uint64_t drive(batch_fn fn, struct wstate *w, uint64_t ops, double secs)
{
        uint64_t done = 0;

        if (secs <= 0) {
                while (done < ops) {
                        uint32_t n = ops - done < BATCH ? (uint32_t)(ops - done) : BATCH;
                        fn(w, n);
                        done += n;
                }
                return done;
        }
        uint64_t end = now_ns() + (uint64_t)(secs * 1e9);
        do {
                fn(w, BATCH);
                done += BATCH;
        } while (now_ns() < end);
        return done;
}

/* ---- workers -------------------------------------------------------------- */

struct pipes {
        int ready[2], go[2], done[2], rel[2];
};

static void signal_parent(int fd)
{
        char c = 'x';

        while (write(fd, &c, 1) < 0 && errno == EINTR)
                ;
}

/* Block until the parent closes the pipe's write end. */
static void wait_parent(int fd)
{
        char c;
        ssize_t k;

        do
                k = read(fd, &c, 1);
        while (k > 0 || (k < 0 && errno == EINTR));
}

static void pin(const struct bench *B, int cpu)
{
        cpu_set_t set;

        if (!B->o.pin || B->ncpu < 1)
                return;
        CPU_ZERO(&set);
        CPU_SET(cpu % B->ncpu, &set);
        sched_setaffinity(0, sizeof(set), &set);
}

/* Record the first error. The detail is cleared at fork: a stale one would mislead. */
static int fail(struct wres *r, int err, const char *what)
{
        const char *d = seg_errdetail();

        if (r->status == 0) {
                snprintf(r->msg, sizeof(r->msg), "%s: %s%s%s%s", what, stoa_strerror(err),
                         d[0] ? " (" : "", d, d[0] ? ")" : "");
                r->status = err;
        }
        return err;
}

/* Attach to the segment on an open file description of our own and take a slot. */
static int stoa_enter(struct bench *B, struct wres *r, struct core **ret_core,
                      struct core_thread *t)
{
        int e = core_attach_fd(ret_core, B->segfd, 0);

        close(B->segfd);        /* the parent's description: do not keep it */
        B->segfd = -1;
        if (e < 0)
                return fail(r, e, "core_attach_fd");
        e = core_thread_enter(*ret_core, t);
        if (e < 0)
                return fail(r, e, "core_thread_enter");
        return 0;
}

__attribute__((noinline)) /* callgrind: --toggle-collect=measured */
static void measured(struct bench *B, struct wres *r, batch_fn fn, struct wstate *w)
{
        r->t0 = now_ns();
        r->ops = drive(fn, w, B->o.ops, B->meas_s);
        r->t1 = now_ns();
}

static int local_worker(struct bench *B, const struct bcase *c, int i, struct pipes *pp)
{
        struct wres *r = &B->ctl->w[i];
        struct core *core = NULL;
        struct core_thread t = { 0 };
        struct wstate w = { .sizes = c->fixed64 ? B->fixed : B->mixed, .k = (uint32_t)i * 7919u,
                            .mask = B->o.live - 1 };
        batch_fn fn = c->impl == IMPL_STOA ? stoa_local : glibc_local;
        uint32_t filled = 0;
        int e = 0;

        w.live = calloc(B->o.live, sizeof(*w.live));
        if (!w.live)
                e = fail(r, -ENOMEM, "calloc");
        if (e == 0 && c->impl == IMPL_STOA && (e = stoa_enter(B, r, &core, &t)) == 0) {
                w.h = &t.heap;
                w.base = core->seg->base;
        }
        for (; e == 0 && filled < B->o.live; filled++) {
                uint64_t off;
                if (c->impl == IMPL_STOA) {
                        if ((e = stoa_new(&w, &off)) < 0)
                                fail(r, e, "al_alloc (filling the ring)");
                } else if (!(off = (uintptr_t)malloc(next_size(&w)))) {
                        e = fail(r, -ENOMEM, "malloc");
                }
                if (e == 0)
                        w.live[filled] = off;
        }
        if (e == 0)
                drive(fn, &w, B->warm_ops, B->warm_s);
        signal_parent(pp->ready[1]);
        wait_parent(pp->go[0]);
        if (e == 0)
                measured(B, r, fn, &w);
        r->errors = w.errors;
        signal_parent(pp->done[1]);
        wait_parent(pp->rel[0]);
        for (uint32_t s = 0; s < filled; s++) {
                if (c->impl == IMPL_STOA)
                        al_free(w.h, w.live[s]);
                else
                        free((void *)(uintptr_t)w.live[s]);
        }
        if (core) {
                core_thread_leave(&t);
                core_close(core);
        }
        return e;
}

static void *glibc_consumer(void *arg)
{
        struct wstate *w = arg;

        consume(w, IMPL_GLIBC);
        return NULL;
}

/* xfer: worker 0 produces, worker 1 (or a second thread of worker 0) consumes. */
static int xfer_worker(struct bench *B, const struct bcase *c, int i, struct pipes *pp)
{
        struct wres *r = &B->ctl->w[i];
        struct core *core = NULL;
        struct core_thread t = { 0 };
        struct wstate w = { .sizes = B->mixed, .k = (uint32_t)i * 7919u,
                            .p = { .r = B->ring }, .c = { .r = B->ring }, .res = r };
        struct wstate cw = w;
        pthread_t th;
        bool producer = i == 0, thread = false;
        batch_fn fn = c->impl == IMPL_STOA ? stoa_produce :
                      c->impl == IMPL_GLIBC ? glibc_produce : none_produce;
        int e = 0;

        if (c->impl == IMPL_STOA && (e = stoa_enter(B, r, &core, &t)) == 0) {
                w.h = &t.heap;
                w.base = core->seg->base;
        }
        if (c->threads) {
                cw.res = &B->ctl->w[1];
                pin(B, 1);
                thread = pthread_create(&th, NULL, glibc_consumer, &cw) == 0;
                if (!thread)
                        e = fail(r, -EAGAIN, "pthread_create");
                pin(B, 0);
        }
        signal_parent(pp->ready[1]);
        wait_parent(pp->go[0]);
        if (producer) {
                if (e == 0) {
                        drive(fn, &w, B->warm_ops, B->warm_s);
                        w.p.wait_ns = 0;
                        measured(B, r, fn, &w);
                        r->wait_ns = w.p.wait_ns;
                }
                ring_push(&w.p, SENTINEL);
                prod_flush(&w.p);
                if (thread)
                        pthread_join(th, NULL);
                r->errors = w.errors;
        } else {
                consume(&w, c->impl);
        }
        signal_parent(pp->done[1]);
        wait_parent(pp->rel[0]);
        if (core) {
                core_thread_leave(&t);
                core_close(core);
        }
        return e;
}

static void close_pipes(struct pipes *pp)
{
        int *fds = &pp->ready[0];

        for (int k = 0; k < 8; k++) {
                if (fds[k] >= 0)
                        close(fds[k]);
                fds[k] = -1;
        }
}

static void child(struct bench *B, const struct bcase *c, int i, struct pipes *pp)
{
        int e;

        close(pp->ready[0]);
        close(pp->go[1]);
        close(pp->done[0]);
        close(pp->rel[1]);
        seg_set_errdetail("%s", "");
        if (c->impl != IMPL_STOA) {
                close(B->segfd);
                B->segfd = -1;
        }
        pin(B, i);
        if (c->pat == PAT_LOCAL)
                e = local_worker(B, c, i, pp);
        else
                e = xfer_worker(B, c, i, pp);
        _exit(e ? 1 : 0);
}

/* ---- the parent ----------------------------------------------------------- */

/* Read one byte per worker; false if they died first. */
static bool gather(int fd, int n)
{
        char buf[MAX_WORKERS];
        int got = 0;

        while (got < n) {
                ssize_t k = read(fd, buf, (size_t)(n - got));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return false;
                got += (int)k;
        }
        return true;
}

__attribute__((format(printf, 2, 3)))
static void check_report(void *arg, const char *fmt, ...)
{
        struct result *res = arg;
        va_list ap;

        if (res->check_msg[0])
                return;         /* keep the first */
        va_start(ap, fmt);
        vsnprintf(res->check_msg, sizeof(res->check_msg), fmt, ap);
        va_end(ap);
}

static void quiet_stats(struct bench *B, struct result *res)
{
        struct al_check_result cr;

        al_stats(&B->core->al, &res->st);
        al_check(&B->core->al, check_report, res, &cr);
        res->check_problems = cr.problems;
        res->have_stats = true;
}

static void figures(struct bench *B, const struct bcase *c, struct result *res)
{
        int n = c->pat == PAT_XFER ? 1 : c->nproc;     /* xfer: the producer's window */
        uint64_t t0 = UINT64_MAX, t1 = 0;
        double ns_sum = 0;

        res->ops = 0;
        for (int i = 0; i < n; i++) {
                const struct wres *w = &B->ctl->w[i];
                res->ops += w->ops;
                t0 = w->t0 < t0 ? w->t0 : t0;
                t1 = w->t1 > t1 ? w->t1 : t1;
                ns_sum += w->ops ? (double)(w->t1 - w->t0) / (double)w->ops : 0;
        }
        res->secs = (double)(t1 - t0) / 1e9;
        res->mops = res->secs > 0 ? (double)res->ops / res->secs / 1e6 : 0;
        res->ns_op = ns_sum / n;
        for (int i = 0; c->pat == PAT_XFER && i < 2; i++) {
                const struct wres *w = &B->ctl->w[i];
                double span = (double)(w->t1 - w->t0);
                double busy = span - (double)w->wait_ns;
                res->busy_ns[i] = w->ops ? busy / (double)w->ops : 0;
                res->idle[i] = span > 0 ? (double)w->wait_ns / span : 0;
        }
}

static void run_case(struct bench *B, const struct bcase *c, struct result *res)
{
        struct pipes pp;
        pid_t pid[MAX_WORKERS];
        int *fds = &pp.ready[0], nforked = 0;

        memset(res, 0, sizeof(*res));
        res->c = c;
        res->ran = true;
        memset(B->ctl, 0, sizeof(*B->ctl));
        memset(B->ring, 0, sizeof(*B->ring));
        B->ring->mask = B->o.live - 1;
        for (int k = 0; k < 8; k++)
                fds[k] = -1;
        if (pipe(pp.ready) || pipe(pp.go) || pipe(pp.done) || pipe(pp.rel)) {
                fprintf(stderr, "alloc_bench: pipe: %s\n", strerror(errno));
                close_pipes(&pp);
                return;
        }
        fflush(NULL);
        for (int i = 0; i < c->nproc; i++) {
                pid[i] = fork();
                if (pid[i] == 0)
                        child(B, c, i, &pp);
                if (pid[i] < 0) {
                        fprintf(stderr, "alloc_bench: fork: %s\n", strerror(errno));
                        break;
                }
                nforked++;
        }
        close(pp.ready[1]);
        close(pp.done[1]);
        pp.ready[1] = pp.done[1] = -1;
        bool ok = nforked == c->nproc && gather(pp.ready[0], nforked);
        close(pp.go[1]);        /* everyone starts */
        pp.go[1] = -1;
        ok = gather(pp.done[0], nforked) && ok;
        if (ok && c->impl == IMPL_STOA)
                quiet_stats(B, res);
        close(pp.rel[1]);
        pp.rel[1] = -1;
        for (int i = 0; i < nforked; i++) {
                int st;
                while (waitpid(pid[i], &st, 0) < 0 && errno == EINTR)
                        ;
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                        ok = false;
                        if (B->ctl->w[i].msg[0])
                                fprintf(stderr, "alloc_bench: %s worker %d: %s\n", c->id, i,
                                        B->ctl->w[i].msg);
                        else
                                fprintf(stderr, "alloc_bench: %s worker %d died (status %#x)\n",
                                        c->id, i, st);
                }
        }
        close_pipes(&pp);
        for (int i = 0; i < MAX_WORKERS; i++)
                res->errors += B->ctl->w[i].errors;
        res->ok = ok;
        if (ok)
                figures(B, c, res);
}

/* ---- output --------------------------------------------------------------- */

static const struct result *find(const struct result *rs, const char *id)
{
        for (unsigned i = 0; id && i < NCASES; i++) {
                if (rs[i].ran && rs[i].ok && strcmp(rs[i].c->id, id) == 0)
                        return &rs[i];
        }
        return NULL;
}

static double ratio(const struct result *rs, const struct result *r)
{
        const struct result *g = find(rs, r->c->ref);

        return g && g->mops > 0 && r->ok ? r->mops / g->mops : 0;
}

static const char *procs_str(const struct bcase *c)
{
        return c->threads ? "1 (2 thr)" : c->nproc == 2 ? "2" : "1";
}

#define MIB(x) ((double)(x) / 1048576.0)

static double frag_pct(const struct al_stats *st)
{
        return st->held_bytes ? 100.0 * (double)st->fragmentation_bytes / (double)st->held_bytes : 0;
}

static void print_text(const struct bench *B, const struct result *rs, const struct al_stats *fin,
                       uint64_t fin_problems)
{
        printf("stoa alloc_bench: segment %.0f MiB (%s), %u live blocks per process, "
               "%s, %s\n", MIB(B->o.seg_size), seg_backing_name(B->core->seg->backing),
               B->o.live, B->o.pin ? "pinned" : "not pinned",
#if defined(__OPTIMIZE__) && defined(NDEBUG)
               "optimised, NDEBUG"
#elif defined(__OPTIMIZE__)
               "optimised, asserts on"
#else
               "not optimised"
#endif
        );
        if (B->o.ops)
                printf("bound: %llu measured ops per worker after %llu warm-up ops\n",
                       (unsigned long long)B->o.ops, (unsigned long long)B->warm_ops);
        else
                printf("bound: %.2f s per case (%.2f s warm-up + %.2f s measured)\n",
                       B->warm_s + B->meas_s, B->warm_s, B->meas_s);
        printf("mixed sizes: 16-1023 B, each octave 1/6, mean %.0f B (table of %u, seed %#llx)\n",
               B->mixed_mean, NSIZES, SIZE_SEED);
        printf("during the run (%.1f s, %d CPUs) other processes used %.2f CPU-s, the host stole "
               "%.2f:\nboth skew the figures when not near 0\n", B->wall_s, B->ncpu, B->others_s,
               B->steal_s);
        printf("op = alloc + 8-byte write + free; Mops/s summed over processes; ns/op per process;\n"
               "vs glibc = stoa throughput / glibc throughput (>1: stoa faster)\n\n");
        printf("  %-26s %-10s %8s %8s %9s\n", "case", "procs", "Mops/s", "ns/op", "vs glibc");
        for (unsigned i = 0; i < NCASES; i++) {
                const struct result *r = &rs[i];
                if (!r->ran)
                        continue;
                if (!r->ok) {
                        printf("  %-26s %-10s %8s\n", r->c->label, procs_str(r->c), "FAILED");
                        continue;
                }
                double x = ratio(rs, r);
                char rbuf[16] = "";
                if (x > 0)
                        snprintf(rbuf, sizeof(rbuf), "%.2fx", x);
                printf("  %-26s %-10s %8.2f %8.1f %9s", r->c->label, procs_str(r->c), r->mops,
                       r->ns_op, rbuf);
                if (r->errors)
                        printf("  (%llu errors)", (unsigned long long)r->errors);
                printf("\n");
        }
        printf("\nA alloc, B free, per side (busy = not waiting on the ring; B's figures\n"
               "include the warm-up). vs glibc there is against glibc between two threads.\n"
               "These move cache lines between two CPUs: on a VM that cost can change while\n"
               "the run goes on; the ring-only row shows what it was.\n");
        printf("  %-26s %14s %8s %14s %8s\n", "case", "A busy ns/op", "A idle", "B busy ns/op",
               "B idle");
        for (unsigned i = 0; i < NCASES; i++) {
                const struct result *r = &rs[i];
                if (!r->ran || !r->ok || r->c->pat != PAT_XFER)
                        continue;
                printf("  %-26s %14.1f %7.1f%% %14.1f %7.1f%%\n", r->c->label, r->busy_ns[0],
                       100 * r->idle[0], r->busy_ns[1], 100 * r->idle[1]);
        }
        printf("\nal_stats while each stoa case's blocks are still live (quiet segment):\n");
        printf("  %-26s %-6s %9s %9s %9s %7s  %s\n", "case", "procs", "held MiB", "used MiB",
               "frag MiB", "frag %", "al_check");
        for (unsigned i = 0; i < NCASES; i++) {
                const struct result *r = &rs[i];
                if (!r->have_stats)
                        continue;
                printf("  %-26s %-6s %9.2f %9.2f %9.2f %6.1f%%  %s%s\n", r->c->label,
                       procs_str(r->c), MIB(r->st.held_bytes), MIB(r->st.used_bytes),
                       MIB(r->st.fragmentation_bytes), frag_pct(&r->st),
                       r->check_problems ? "PROBLEMS: " : "ok", r->check_msg);
        }
        printf("  %-26s %-6s %9.2f %9.2f %9.2f %6.1f%%  %s\n", "after all cases", "-",
               MIB(fin->held_bytes), MIB(fin->used_bytes), MIB(fin->fragmentation_bytes),
               frag_pct(fin), fin_problems ? "PROBLEMS" : "ok");
        printf("  peak pages in use: %.2f MiB of %.2f MiB\n", MIB(fin->a[0].peak_used_bytes),
               MIB(fin->a[0].total_bytes));
}

static void json_stats(const struct al_stats *st, uint64_t problems)
{
        printf("{\"held_bytes\": %llu, \"used_bytes\": %llu, \"fragmentation_bytes\": %llu, "
               "\"peak_used_bytes\": %llu, \"check_problems\": %llu}",
               (unsigned long long)st->held_bytes, (unsigned long long)st->used_bytes,
               (unsigned long long)st->fragmentation_bytes,
               (unsigned long long)st->a[0].peak_used_bytes, (unsigned long long)problems);
}

static void print_json(const struct bench *B, const struct result *rs, const struct al_stats *fin,
                       uint64_t fin_problems)
{
        bool first = true;

        printf("{\"bench\": \"alloc\", \"config\": {\"segment_bytes\": %llu, \"backing\": \"%s\", "
               "\"live\": %u, \"ops\": %llu, \"warm_ops\": %llu, \"warm_seconds\": %.3f, "
               "\"measure_seconds\": %.3f, \"mixed_mean_bytes\": %.1f, \"pinned\": %s, "
               "\"cpus\": %d, \"wall_seconds\": %.2f, \"others_cpu_seconds\": %.2f, "
               "\"steal_cpu_seconds\": %.2f},\n"
               " \"unit\": \"op = alloc + 8-byte write + free\",\n \"cases\": [",
               (unsigned long long)B->o.seg_size, seg_backing_name(B->core->seg->backing),
               B->o.live, (unsigned long long)B->o.ops, (unsigned long long)B->warm_ops,
               B->warm_s, B->meas_s, B->mixed_mean,
               B->o.pin ? "true" : "false", B->ncpu, B->wall_s, B->others_s, B->steal_s);
        for (unsigned i = 0; i < NCASES; i++) {
                const struct result *r = &rs[i];
                if (!r->ran)
                        continue;
                const struct bcase *c = r->c;
                printf("%s\n  {\"id\": \"%s\", \"impl\": \"%s\", \"pattern\": \"%s\", "
                       "\"sizes\": \"%s\", \"procs\": %d, \"threads\": %d, \"ok\": %s, "
                       "\"ops\": %llu, \"seconds\": %.6f, \"mops\": %.4f, \"ns_per_op\": %.2f, "
                       "\"errors\": %llu",
                       first ? "" : ",", c->id,
                       c->impl == IMPL_STOA ? "stoa" : c->impl == IMPL_GLIBC ? "glibc" : "none",
                       c->pat == PAT_LOCAL ? "ring-of-live-blocks" : "alloc-in-A-free-in-B",
                       c->fixed64 ? "64" : "16-1023", c->nproc, c->threads ? 2 : 1,
                       r->ok ? "true" : "false", (unsigned long long)r->ops, r->secs, r->mops,
                       r->ns_op, (unsigned long long)r->errors);
                double x = ratio(rs, r);
                if (x > 0)
                        printf(", \"vs_glibc\": %.4f", x);
                if (c->pat == PAT_XFER)
                        printf(", \"a_busy_ns_per_op\": %.2f, \"a_idle\": %.4f, "
                               "\"b_busy_ns_per_op\": %.2f, \"b_idle\": %.4f",
                               r->busy_ns[0], r->idle[0], r->busy_ns[1], r->idle[1]);
                if (r->have_stats) {
                        printf(", \"al_stats\": ");
                        json_stats(&r->st, r->check_problems);
                }
                printf("}");
                first = false;
        }
        printf("],\n \"al_stats_final\": ");
        json_stats(fin, fin_problems);
        printf("}\n");
}

/* ---- setup ---------------------------------------------------------------- */

static void usage(FILE *f)
{
        fprintf(f,
                "usage: alloc_bench [--size BYTES[K|M|G]] [--seconds S | --ops N] [--live N]\n"
                "                   [--only ID,...] [--no-pin] [--json]\n"
                "  --size     segment size (default 256M)\n"
                "  --seconds  total time for warm-up and measurement of all cases (default 18)\n"
                "  --ops      instead of time: measured ops per worker (warm-up: ops/10)\n"
                "  --live     live blocks per process, and ring capacity; power of two (4096)\n"
                "  --only     run only these cases:");
        for (unsigned i = 0; i < NCASES; i++)
                fprintf(f, " %s", cases[i].id);
        fprintf(f, "\n  --json     one JSON object on stdout instead of the table\n");
}

/* 0 for anything that is not a size: the options below reject 0. */
static uint64_t parse_size(const char *s)
{
        uint64_t v;

        return cli_parse_size(s, &v) == 0 ? v : 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
        static const struct option lo[] = {
                { "size", required_argument, NULL, 'S' },
                { "seconds", required_argument, NULL, 's' },
                { "ops", required_argument, NULL, 'n' },
                { "live", required_argument, NULL, 'l' },
                { "only", required_argument, NULL, 'o' },
                { "no-pin", no_argument, NULL, 'P' },
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        int ch;

        *o = (struct opts){ .seg_size = CORE_DEFAULT_SIZE, .live = 4096, .seconds = 18, .pin = true };
        while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
                switch (ch) {
                case 'S': o->seg_size = parse_size(optarg); break;
                case 's': o->seconds = strtod(optarg, NULL); break;
                case 'n': o->ops = parse_size(optarg); break;
                case 'l': o->live = (uint32_t)parse_size(optarg); break;
                case 'o': o->only = optarg; break;
                case 'P': o->pin = false; break;
                case 'j': o->json = true; break;
                case 'h': usage(stdout); exit(0);
                default: usage(stderr); return -1;
                }
        }
        if (optind < argc || o->seg_size == 0 || o->seconds <= 0 || o->live < 2 ||
            (o->live & (o->live - 1)) || o->live > (1u << 24)) {
                usage(stderr);
                return -1;
        }
        return 0;
}

static bool selected(const struct opts *o, const char *id)
{
        size_t n = strlen(id);

        if (!o->only)
                return true;
        for (const char *p = o->only; (p = strstr(p, id)); p += n) {
                if ((p == o->only || p[-1] == ',') && (p[n] == 0 || p[n] == ','))
                        return true;
        }
        return false;
}

static int setup(struct bench *B)
{
        struct core_config cfg;
        int r;

        B->ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
        B->mixed = malloc(NSIZES * sizeof(uint32_t));
        B->fixed = malloc(NSIZES * sizeof(uint32_t));
        if (!B->mixed || !B->fixed)
                return -ENOMEM;
        make_sizes(B);
        core_config_default(&cfg);
        cfg.size = B->o.seg_size;
        r = core_create_anon(&B->core, &cfg);
        if (r < 0) {
                fprintf(stderr, "alloc_bench: core_create_anon: %s (%s)\n", stoa_strerror(r),
                        seg_errdetail());
                return r;
        }
        B->segfd = dup(B->core->seg->fd);
        B->ring_bytes = sizeof(struct spsc) + (size_t)B->o.live * sizeof(uint64_t);
        B->ctl = mmap(NULL, sizeof(struct ctl), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        B->ring = mmap(NULL, B->ring_bytes, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (B->segfd < 0 || B->ctl == MAP_FAILED || B->ring == MAP_FAILED) {
                fprintf(stderr, "alloc_bench: setup: %s\n", strerror(errno));
                return -errno;
        }
        return 0;
}

int main(int argc, char **argv)
{
        static struct result rs[NCASES];
        struct bench B = { 0 };
        struct al_stats fin;
        struct result fin_check = { 0 };
        unsigned n = 0;

        if (parse_opts(argc, argv, &B.o) < 0)
                return 2;
        for (unsigned i = 0; i < NCASES; i++)
                n += selected(&B.o, cases[i].id);
        if (n == 0) {
                fprintf(stderr, "alloc_bench: --only matches no case\n");
                return 2;
        }
        if (!B.o.ops) {
                B.warm_s = B.o.seconds / n * 0.2;
                B.meas_s = B.o.seconds / n - B.warm_s;
        }
        B.warm_ops = B.o.ops / 10;
        if (setup(&B) < 0)
                return 1;
        cpu_use(&B.cpu0);
        for (unsigned i = 0; i < NCASES; i++) {
                if (selected(&B.o, cases[i].id))
                        run_case(&B, &cases[i], &rs[i]);
        }
        struct cpu_use u;
        cpu_use(&u);
        B.wall_s = u.wall_s - B.cpu0.wall_s;
        B.steal_s = u.steal_s - B.cpu0.steal_s;
        B.others_s = u.busy_s - B.cpu0.busy_s - (u.mine_s - B.cpu0.mine_s);
        if (B.others_s < 0)
                B.others_s = 0; /* tick granularity */
        quiet_stats(&B, &fin_check);
        fin = fin_check.st;
        if (B.o.json)
                print_json(&B, rs, &fin, fin_check.check_problems);
        else
                print_text(&B, rs, &fin, fin_check.check_problems);
        if (fin_check.check_problems)
                fprintf(stderr, "alloc_bench: al_check after the run: %s\n", fin_check.check_msg);
        close(B.segfd);
        core_close(B.core);
        return 0;
}
