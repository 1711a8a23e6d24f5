/*
 * cache/intern.c: the string interner (namespaces on top of it are in ns.c).
 *
 * An open-addressed table (linear probing) of words hash:20 | offset/8:44 in
 * the INTERN region; an id is a table index + 1. Strings are allocator blocks
 * {len, bytes} that are never freed, and entries only go from empty to
 * full, so a lookup needs no protection and two processes interning the same
 * string meet at the same first empty entry: one CAS wins, the other finds
 * the winner's string there. The insert is journalled (CJ_INTERN) so that
 * the block of an interner killed before its CAS is freed by recovery.
 */
#include "cache/cache.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <string.h>

struct istr {
        uint32_t len;
        uint32_t pad;
        char s[];
};

#define IHASH_SHIFT 44

static const struct istr *istr_at(const struct cache *k, uint64_t word)
{
        uint64_t off = ent_off(word);

        if (off < k->heap_lo || off + sizeof(struct istr) > k->heap_hi)
                return NULL;
        const struct istr *is = (const struct istr *)(k->s->base + off);
        if (is->len > CACHE_KEY_MAX || off + sizeof(*is) + is->len > k->heap_hi)
                return NULL;
        return is;
}

int cache_intern(struct cache_thr *t, const void *s, size_t len, uint32_t *ret_id)
{
        struct cache *k = t->k;
        struct cache_slot *cs = t->cs;
        uint32_t cap = k->intern_cap;
        uint64_t h = cache_hash(k, UINT32_MAX, s, len), hbits = h >> IHASH_SHIFT, off = 0, word = 0;
        int r = -ENOSPC;

        if (cap == 0 || (cap & (cap - 1)))
                return STOA_E_CORRUPT;
        for (uint32_t n = 0, i = (uint32_t)h & (cap - 1); n < cap; ) {
                uint64_t e = atomic_load_explicit(&k->intern[i], memory_order_acquire);
                if (e) {
                        const struct istr *is = istr_at(k, e);
                        if ((e >> IHASH_SHIFT) == hbits && is && is->len == len &&
                            memcmp(is->s, s, len) == 0) {
                                *ret_id = i + 1;
                                r = 0;
                                break;
                        }
                        i = (i + 1) & (cap - 1);
                        n++;
                        continue;
                }
                if (!off) {
                        r = cache_alloc(t, sizeof(struct istr) + len, &off);
                        if (r < 0)
                                return r;
                        struct istr *is = (struct istr *)(k->s->base + off);
                        is->len = (uint32_t)len;
                        is->pad = 0;
                        memcpy(is->s, s, len);
                        word = hbits << IHASH_SHIFT | off >> 3;
                        cs->jnew = off;
                        cs->jstamp = al_stamp(k->al, off);
                        cs->jold = 0;
                }
                cs->jentry = seg_off(k->s, (void *)&k->intern[i]);
                atomic_store_explicit(&cs->jop, CJ_INTERN, memory_order_release);
                uint64_t zero = 0;
                if (atomic_compare_exchange_strong(&k->intern[i], &zero, word)) {
                        *ret_id = i + 1;
                        al_commit(t->heap);
                        atomic_store_explicit(&cs->jop, CJ_NONE, memory_order_release);
                        return 0;
                }
                /* Someone filled it first: look at what they put there. */
        }
        if (off) {
                if (al_free(t->heap, off) == -EAGAIN)
                        cache_retire(t, off);   /* a run whose arena is locked: later */
                al_commit(t->heap);
                atomic_store_explicit(&cs->jop, CJ_NONE, memory_order_release);
        }
        return r;
}

int cache_intern_find(struct cache *k, const void *s, size_t len, uint32_t *ret_id)
{
        uint32_t cap = k->intern_cap;
        uint64_t h = cache_hash(k, UINT32_MAX, s, len), hbits = h >> IHASH_SHIFT;

        if (cap == 0 || (cap & (cap - 1)))
                return STOA_E_CORRUPT;
        for (uint32_t n = 0, i = (uint32_t)h & (cap - 1); n < cap; n++, i = (i + 1) & (cap - 1)) {
                uint64_t e = atomic_load_explicit(&k->intern[i], memory_order_acquire);
                if (!e)
                        return -ENOENT;         /* entries never empty again: it is not there */
                const struct istr *is = istr_at(k, e);
                if ((e >> IHASH_SHIFT) == hbits && is && is->len == len &&
                    memcmp(is->s, s, len) == 0) {
                        *ret_id = i + 1;
                        return 0;
                }
        }
        return -ENOENT;
}

int cache_intern_get(struct cache *k, uint32_t id, const char **ret_s, size_t *ret_len)
{
        if (id == 0 || id > k->intern_cap)
                return -ENOENT;
        uint64_t e = atomic_load_explicit(&k->intern[id - 1], memory_order_acquire);
        const struct istr *is = e ? istr_at(k, e) : NULL;
        if (!is)
                return -ENOENT;
        *ret_s = is->s;
        *ret_len = is->len;
        return 0;
}
