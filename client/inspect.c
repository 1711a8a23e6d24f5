/*
 * client/inspect.c: stoa_info(), stoa_clients(), stoa_check(), stoa_sweep().
 *
 * These read the whole segment: the tools and the supervisor call them, the
 * data path never does. stoa_check() accounts for every allocated block (an
 * item the index points at, a block retired and awaiting its grace period,
 * an interned string, the block a live writer has in flight) and reports the
 * rest as leaked, besides the index's and the allocator's own invariants.
 */
#include "client/client.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- a set of offsets ---------------------------------------------------- */

struct oset {
        uint64_t *v;
        uint64_t cap, n;
};

static uint64_t omix(uint64_t x)
{
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdull;
        return x ^ (x >> 33);
}

static int oset_add(struct oset *s, uint64_t off)
{
        if (2 * (s->n + 1) > s->cap) {
                struct oset g = { calloc(s->cap ? s->cap * 2 : 1024, 8), s->cap ? s->cap * 2 : 1024, 0 };
                if (!g.v)
                        return -ENOMEM;
                for (uint64_t i = 0; i < s->cap; i++)
                        if (s->v[i])
                                oset_add(&g, s->v[i]);
                free(s->v);
                *s = g;
        }
        for (uint64_t i = omix(off) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
                if (s->v[i] == off)
                        return 0;
                if (!s->v[i]) {
                        s->v[i] = off;
                        s->n++;
                        return 1;
                }
        }
}

static bool oset_has(const struct oset *s, uint64_t off)
{
        if (!s->cap)
                return false;
        for (uint64_t i = omix(off) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
                if (s->v[i] == off)
                        return true;
                if (!s->v[i])
                        return false;
        }
}

/* ---- info ---------------------------------------------------------------- */

static void ns_name(struct cache *k, uint32_t ns, char *buf, size_t cap)
{
        const char *s;
        size_t len;
        uint32_t id = NSW_ID(atomic_load(&k->hdr->ns[ns]));

        if (ns == 0) {
                snprintf(buf, cap, "default");
        } else if (cache_intern_get(k, id, &s, &len) == 0 && len < cap) {
                snprintf(buf, cap, "%.*s", (int)len, s);
        } else if (cache_intern_get(k, id, &s, &len) == 0) {
                /* Cut short, with its index: two long names sharing a prefix stay apart. */
                snprintf(buf, cap, "%.*s... (#%u)", (int)(cap - 16), s, ns);
        } else {
                snprintf(buf, cap, "ns%u", ns);
        }
}

STOA_API int stoa_info(struct stoa *c, struct stoa_info *out)
{
        if (!c || !out)
                return -EINVAL;
        struct core *core = stoa_core_(c);
        struct cache *k = core->cache;
        struct seg *s = core->seg;
        struct al_stats st;
        uint64_t items[CACHE_NS_MAX] = { 0 }, bytes[CACHE_NS_MAX] = { 0 };
        uint64_t cnt[CACHE_NS_MAX][CNT_N];

        if (s->forked)
                return STOA_E_FORKED;
        memset(out, 0, sizeof(*out));
        memset(cnt, 0, sizeof(cnt));
        out->size = s->size;
        snprintf(out->backing, sizeof(out->backing), "%s", seg_backing_name(s->backing));
        snprintf(out->path, sizeof(out->path), "%s", s->path ? s->path : "(memfd)");
        al_stats(&core->al, &st);
        for (unsigned a = 0; a < st.narenas; a++) {
                out->heap_bytes += st.a[a].total_bytes;
                out->free_bytes += st.a[a].free_bytes;
        }
        out->used_bytes = st.used_bytes;
        out->index_buckets = k->nbuckets;
        out->index_ways = CACHE_WAYS;
        out->index_moves = atomic_load_explicit(&k->hdr->moves, memory_order_relaxed);
        for (uint64_t b = 0; b < k->nbuckets; b++) {
                for (unsigned w = 0; w < CACHE_WAYS; w++) {
                        uint64_t e = atomic_load_explicit(&k->index[b].e[w], memory_order_acquire);
                        struct item *it = e ? cache_item(k, ent_off(e)) : NULL;
                        if (!it)
                                continue;
                        out->index_entries++;
                        if (cache_ns_stale(k, it))
                                continue;       /* of a dropped namespace, awaiting its reap */
                        unsigned ns = it->ns;
                        items[ns]++;
                        bytes[ns] += it->klen + it->vlen;
                }
        }
        out->slots = slots_count(s);
        for (uint32_t i = 0; i < out->slots; i++) {
                struct cache_slot *cs = cache_slot_of(k, i);
                for (unsigned ns = 0; ns < CACHE_NS_MAX; ns++)
                        for (unsigned x = 0; x < CNT_N; x++)
                                cnt[ns][x] += __atomic_load_n(&cs->cnt[ns][x], __ATOMIC_RELAXED);
                if (atomic_load(&slot_hdr(s, i)->state) != SLOT_LIVE)
                        continue;
                if (slot_is_alive(s, i) == 1)
                        out->clients++;
                else
                        out->dead_clients++;
        }
        for (unsigned ns = 0; ns < CACHE_NS_MAX && out->nns <= STOA_NS_MAX; ns++) {
                if (ns && !NSW_ID(atomic_load(&k->hdr->ns[ns])))
                        continue;
                struct stoa_ns_info *ni = &out->ns[out->nns++];
                ns_name(k, ns, ni->name, sizeof(ni->name));
                ni->items = items[ns];
                ni->bytes = bytes[ns];
                ni->hits = cnt[ns][CNT_HITS];
                ni->misses = cnt[ns][CNT_MISSES];
                ni->sets = cnt[ns][CNT_SETS];
                ni->dels = cnt[ns][CNT_DELS];
                ni->evictions = cnt[ns][CNT_EVICT];
                ni->expired = cnt[ns][CNT_EXPIRED];
                ni->conflicts = cnt[ns][CNT_CONFLICT];
                out->items += ni->items;
                out->item_bytes += ni->bytes;
                out->hits += ni->hits;
                out->misses += ni->misses;
                out->sets += ni->sets;
                out->dels += ni->dels;
                out->evictions += ni->evictions;
                out->expired += ni->expired;
                out->conflicts += ni->conflicts;
        }
        return 0;
}

/* ---- clients ------------------------------------------------------------- */

STOA_API int stoa_clients(struct stoa *c, stoa_client_fn fn, void *arg)
{
        if (!c || !fn)
                return -EINVAL;
        struct core *core = stoa_core_(c);
        struct cache *k = core->cache;
        struct seg *s = core->seg;

        if (s->forked)
                return STOA_E_FORKED;
        for (uint32_t i = 0; i < slots_count(s); i++) {
                struct slot_hdr *sh = slot_hdr(s, i);
                if (atomic_load(&sh->state) != SLOT_LIVE)
                        continue;
                struct cache_slot *cs = cache_slot_of(k, i);
                struct stoa_client cl = {
                        .slot = i,
                        .alive = slot_is_alive(s, i) == 1,
                        .pid = sh->pid,
                        .pidns = sh->pidns,
                        .since_ns = sh->since_ns,
                        .reading = atomic_load(&cs->hp),
                        .views = atomic_load(&cs->nviews),
                        .retired = cache_ring_used(cs),
                };
                memcpy(cl.comm, sh->comm, sizeof(cl.comm));
                cl.comm[sizeof(cl.comm) - 1] = 0;
                int r = fn(&cl, arg);
                if (r)
                        return r;
        }
        return 0;
}

/* ---- check --------------------------------------------------------------- */

struct checker {
        struct cache *k;
        struct oset known;              /* every block accounted for */
        uint64_t *dead, *keep;          /* slots whose holders died, not yet recovered */
        char **msgs;
        size_t nmsgs, cap;
        uint64_t problems;
};

static void problem(struct checker *ck, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct checker *ck, const char *fmt, ...)
{
        va_list ap;
        char *m = NULL;

        ck->problems++;
        if (ck->nmsgs >= 1000)          /* enough to act on */
                return;
        va_start(ap, fmt);
        if (vasprintf(&m, fmt, ap) < 0)
                m = NULL;
        va_end(ap);
        if (!m)
                return;
        if (ck->nmsgs == ck->cap) {
                char **n = realloc(ck->msgs, (ck->cap ? ck->cap * 2 : 16) * sizeof(*n));
                if (!n) {
                        free(m);
                        return;
                }
                ck->msgs = n;
                ck->cap = ck->cap ? ck->cap * 2 : 16;
        }
        ck->msgs[ck->nmsgs++] = m;
}

__attribute__((format(printf, 2, 3)))
static void al_report(void *arg, const char *fmt, ...)
{
        struct checker *ck = arg;
        va_list ap;
        char buf[256];

        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        problem(ck, "allocator: %s", buf);
}

/*
 * An item that a move (cache/displace.c) holds claimed: linked at its old and
 * its new entry at once until the move, or its recovery, clears the old one.
 */
static bool being_moved(const struct checker *ck, uint64_t off)
{
        struct cache *k = ck->k;
        struct item *it = cache_item(k, off);

        for (uint32_t i = 0; it && i < slots_count(k->s); i++) {
                struct cache_slot *cs = cache_slot_of(k, i);
                if (atomic_load(&cs->jmove) == off &&
                    atomic_load(&it->owner) == olock_tag(i, cs->gen))
                        return true;
        }
        return false;
}

static void check_index(struct checker *ck)
{
        struct cache *k = ck->k;

        for (uint64_t b = 0; b < k->nbuckets; b++) {
                for (unsigned w = 0; w < CACHE_WAYS; w++) {
                        uint64_t e = atomic_load_explicit(&k->index[b].e[w], memory_order_acquire);
                        if (!e)
                                continue;
                        uint64_t off = ent_off(e), b0, b1;
                        struct item *it = cache_item(k, off);
                        if (!it) {
                                problem(ck, "bucket %llu way %u: entry %#llx points at no item",
                                        (unsigned long long)b, w, (unsigned long long)e);
                                continue;
                        }
                        if (al_stamp(k->al, off) == AL_STAMP_FREE) {
                                problem(ck, "bucket %llu way %u: item %#llx is a free block",
                                        (unsigned long long)b, w, (unsigned long long)off);
                                continue;
                        }
                        if (al_usable(k->al, off) < sizeof(*it) + it->klen + it->vlen) {
                                problem(ck, "item %#llx: %u+%u bytes overrun its block",
                                        (unsigned long long)off, it->klen, it->vlen);
                                continue;
                        }
                        if (it->codec != ITEM_PLAIN || it->dict != 0)
                                problem(ck, "item %#llx: value form %u, dictionary %u: this version "
                                        "stores values only as given", (unsigned long long)off,
                                        (unsigned)it->codec, (unsigned)it->dict);
                        uint64_t h = cache_hash(k, item_nskey(it), it->data, it->klen);
                        cache_buckets(k, h, &b0, &b1);
                        if ((b != b0 && b != b1) || ent_make(h, off) != e)
                                problem(ck, "item %#llx: key hashes to buckets %llu/%llu, found in %llu",
                                        (unsigned long long)off, (unsigned long long)b0,
                                        (unsigned long long)b1, (unsigned long long)b);
                        if (oset_add(&ck->known, off) == 0 && !being_moved(ck, off))
                                problem(ck, "item %#llx: linked twice", (unsigned long long)off);
                }
        }
}

/* No key twice: for every linked item, its lookup finds that very item. */
static void check_dups(struct checker *ck)
{
        struct cache *k = ck->k;

        for (uint64_t b = 0; b < k->nbuckets; b++) {
                for (unsigned w = 0; w < CACHE_WAYS; w++) {
                        uint64_t e = atomic_load_explicit(&k->index[b].e[w], memory_order_acquire);
                        struct item *it = e ? cache_item(k, ent_off(e)) : NULL, *found;
                        if (!it)
                                continue;
                        uint64_t h = cache_hash(k, item_nskey(it), it->data, it->klen);
                        _Atomic uint64_t *f = cache_lookup_raw(k, item_nskey(it), it->data, it->klen,
                                                               h, &found);
                        /* The same item twice is check_index's to judge (a move). */
                        if (f && f != &k->index[b].e[w] && ent_off(atomic_load(f)) != ent_off(e))
                                problem(ck, "key of item %#llx is also linked at item %#llx",
                                        (unsigned long long)ent_off(e),
                                        (unsigned long long)seg_off(k->s, found));
                }
        }
}

static bool is_dead(const struct checker *ck, uint32_t slot)
{
        return ck->dead && (ck->dead[slot / 64] & (1ull << (slot % 64)));
}

static void check_slots(struct checker *ck)
{
        struct cache *k = ck->k;
        struct seg *s = k->s;

        for (uint32_t i = 0; i < slots_count(s); i++) {
                struct cache_slot *cs = cache_slot_of(k, i);
                uint32_t head = atomic_load(&cs->rhead), tail = atomic_load(&cs->rtail);
                if (head - tail > CACHE_RING) {
                        problem(ck, "slot %u: retire ring head %u tail %u", i, head, tail);
                        continue;
                }
                struct oset mine = { 0 };
                for (uint32_t r = tail; r != head; r++) {
                        uint64_t off = cs->ring[r % CACHE_RING].off;
                        if (!off)
                                continue;
                        /* A ring move cut short by death leaves a copy; recovery drops it. */
                        bool own_copy = is_dead(ck, i) && oset_has(&mine, off);
                        if (is_dead(ck, i))
                                oset_add(&mine, off);
                        if (oset_add(&ck->known, off) == 0 && !own_copy)
                                problem(ck, "slot %u: retired block %#llx is still linked or "
                                        "retired twice", i, (unsigned long long)off);
                }
                free(mine.v);
        }
        /*
         * In flight: the block a write is storing, the item it claimed and
         * unlinked and is about to retire, the block being allocated or freed,
         * the one being freed from the ring. A dead slot leaves them so until
         * its recovery settles them (the same decisions). After every ring,
         * since a claim that failed leaves a journal naming another's item.
         */
        for (uint32_t i = 0; i < slots_count(s); i++) {
                struct cache_slot *cs = cache_slot_of(k, i);
                uint64_t jop = atomic_load(&cs->jop);
                if (jop != CJ_NONE && cs->jnew)
                        oset_add(&ck->known, cs->jnew);
                if (jop == CJ_STORE && cs->jold) {
                        struct item *o = cache_item(k, cs->jold);
                        if (o && atomic_load(&o->owner) == olock_tag(i, cs->gen))
                                oset_add(&ck->known, cs->jold);
                }
                const struct al_slot *as = slot_ext(s, i);
                uint64_t op = atomic_load(&as->j.op);
                if (op == J_ALLOC || op == J_RUN_ALLOC || op == J_FREE || op == J_RFREE ||
                    op == J_RUN_FREE)
                        oset_add(&ck->known, as->j.off);
                if (cs->jfree)
                        oset_add(&ck->known, cs->jfree);
        }
        for (uint32_t i = 0; i < k->intern_cap; i++) {
                uint64_t e = atomic_load(&k->intern[i]);
                if (e)
                        oset_add(&ck->known, ent_off(e));
        }
}

static void leak_cb(uint64_t off, uint64_t bytes, void *arg)
{
        struct checker *ck = arg;

        if (!oset_has(&ck->known, off))
                problem(ck, "block %#llx (%llu bytes): allocated but neither linked, retired, "
                        "interned nor in flight (leaked)", (unsigned long long)off,
                        (unsigned long long)bytes);
}

static void checker_reset(struct checker *ck)
{
        for (size_t i = 0; i < ck->nmsgs; i++)
                free(ck->msgs[i]);
        free(ck->msgs);
        free(ck->known.v);
        free(ck->dead);
        free(ck->keep);
        struct cache *k = ck->k;
        memset(ck, 0, sizeof(*ck));
        ck->k = k;
}

/*
 * Which slots' holders died and were not recovered yet, and for each the
 * block its recovery will keep published: the check applies their journals
 * as recovery will, so that a sound segment with dead clients reads sound.
 */
static int find_dead(struct checker *ck, struct seg *s, uint32_t *ret_n)
{
        uint32_t n = slots_count(s);

        *ret_n = 0;
        ck->dead = calloc((n + 63) / 64, sizeof(uint64_t));
        ck->keep = calloc(n, sizeof(uint64_t));
        if (!ck->dead || !ck->keep)
                return -ENOMEM;
        for (uint32_t i = 0; i < n; i++) {
                if (atomic_load(&slot_hdr(s, i)->state) != SLOT_LIVE || slot_is_alive(s, i) != 0)
                        continue;
                ck->dead[i / 64] |= 1ull << (i % 64);
                ck->keep[i] = cache_recover_outlook(ck->k, i);
                (*ret_n)++;
        }
        return 0;
}

static void check_pass(struct checker *ck, struct core *core)
{
        struct al_check_result ar;
        uint32_t ndead;

        if (find_dead(ck, core->seg, &ndead) < 0) {
                problem(ck, "out of memory for the check");
                return;
        }
        struct al_dead_slots ds = { slots_count(core->seg), ck->dead, ck->keep };
        check_index(ck);
        check_dups(ck);
        check_slots(ck);
        al_check_ex(&core->al, al_report, ck, &ar, ndead ? &ds : NULL);
        al_walk_used(&core->al, leak_cb, ck);
}

STOA_API int stoa_check(struct stoa *c, stoa_report_fn report, void *arg)
{
        if (!c)
                return -EINVAL;
        struct core *core = stoa_core_(c);
        struct checker ck = { .k = core->cache };

        if (core->seg->forked)
                return STOA_E_FORKED;
        /* Writers at work make passing differences: look again before reporting. */
        for (int pass = 0; pass < 3; pass++) {
                checker_reset(&ck);
                check_pass(&ck, core);
                if (!ck.problems)
                        break;
                struct timespec ts = { 0, 20 * 1000 * 1000 };
                nanosleep(&ts, NULL);
        }
        for (size_t i = 0; i < ck.nmsgs; i++)
                if (report)
                        report(ck.msgs[i], arg);
        uint64_t n = ck.problems;
        checker_reset(&ck);
        return n > INT32_MAX ? INT32_MAX : (int)n;
}

/* ---- sweep --------------------------------------------------------------- */

STOA_API int stoa_sweep(struct stoa *c)
{
        struct cache_thr *t;
        struct core *core;
        int r = stoa_thread_(c, &t, &core);

        if (r < 0)
                return r;
        int dead = slots_sweep(core->seg);
        /* A slot another process is recovering right now: let it finish (bounded). */
        for (int tries = 0; tries < 50; tries++) {
                bool pending = false;
                for (uint32_t i = 0; i < slots_count(core->seg) && !pending; i++)
                        pending = atomic_load(&slot_hdr(core->seg, i)->state) == SLOT_LIVE &&
                                  slot_is_alive(core->seg, i) == 0;
                if (!pending)
                        break;
                struct timespec ts = { 0, 2 * 1000 * 1000 };
                nanosleep(&ts, NULL);
                int more = slots_sweep(core->seg);
                dead += more > 0 ? more : 0;
        }
        uint64_t expired = cache_expire_sweep(t, t->k->nbuckets);
        if (cache_ns_reap_owed(t->k))
                cache_ns_reap(t, false);        /* a drop or flush cut short: finish it */
        cache_reclaim(t);
        cache_adopt_orphans(t->k);
        al_trim(t->heap);
        return (dead > 0 ? dead : 0) + (int)(expired > INT32_MAX ? INT32_MAX : expired);
}
