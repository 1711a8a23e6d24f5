/*
 * shm/slots.c: slot claim, release, liveness and recovery. See slots.h.
 */
#include "shm/slots.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static slot_recover_fn recover_fn;
static void *recover_arg;

void slots_set_recover_hook(slot_recover_fn fn, void *arg)
{
        recover_fn = fn;
        recover_arg = arg;
}

uint64_t slots_region_size(uint32_t nslots, uint32_t ext_size)
{
        uint64_t stride = (sizeof(struct slot_hdr) + ext_size + 63) & ~63ull;

        return sizeof(struct slot_table) + (uint64_t)nslots * stride;
}

struct slot_table *slots_table(const struct seg *s)
{
        const struct seg_region *r = seg_region(s, SEG_REGION_SLOTS, 0);

        return r ? seg_ptr(s, r->off) : NULL;
}

/* From the copies slots_attach() checked: scribbled memory cannot move a slot. */
struct slot_hdr *slot_hdr(const struct seg *s, uint32_t slot)
{
        if (s->slot0)
                return (struct slot_hdr *)(s->slot0 + (uint64_t)slot * s->slot_stride);
        struct slot_table *t = slots_table(s);
        return (struct slot_hdr *)((uint8_t *)(t + 1) + (uint64_t)slot * t->stride);
}

uint32_t slots_count(const struct seg *s)
{
        return s->nslots;
}

void *slot_ext(const struct seg *s, uint32_t slot)
{
        return slot_hdr(s, slot) + 1;
}

void slots_init(struct seg *s, uint32_t nslots, uint32_t ext_size)
{
        struct slot_table *t = slots_table(s);

        t->nslots = nslots;
        t->ext_size = ext_size;
        t->stride = (uint32_t)((sizeof(struct slot_hdr) + ext_size + 63) & ~63ull);
        t->magic = SLOTS_MAGIC;
        /* Slot contents start zeroed: state FREE, gen 0 (fresh mapping). */
}

int slots_attach(struct seg *s)
{
        struct slot_table *t = slots_table(s);
        const struct seg_region *r = seg_region(s, SEG_REGION_SLOTS, 0);

        if (!t || t->magic != SLOTS_MAGIC || t->nslots == 0 || t->nslots > SLOTS_MAX ||
            t->stride < sizeof(struct slot_hdr) ||
            sizeof(*t) + (uint64_t)t->nslots * t->stride > r->size) {
                seg_set_errdetail("slot table is corrupt");
                return STOA_E_CORRUPT;
        }
        s->slot0 = (uint8_t *)(t + 1);
        s->slot_stride = t->stride;
        s->nslots = t->nslots;
        pthread_mutex_lock(&s->slot_mu);
        if (!s->held_slots) {
                s->nheld_words = (t->nslots + 63) / 64;
                s->held_slots = calloc(s->nheld_words, sizeof(uint64_t));
        }
        pthread_mutex_unlock(&s->slot_mu);
        return s->held_slots ? 0 : -ENOMEM;
}

static bool held_locally(const struct seg *s, uint32_t slot)
{
        return s->held_slots[slot / 64] & (1ull << (slot % 64));
}

static uint64_t pidns_ino(void)
{
        struct stat st;

        return stat("/proc/self/ns/pid", &st) == 0 ? st.st_ino : 0;
}

static void identify(struct slot_hdr *h)
{
        struct stat st;
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        h->since_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        /* Read by waiters that look at who holds what (shm/wait.c): one store each. */
        __atomic_store_n(&h->pid, (uint32_t)getpid(), __ATOMIC_RELAXED);
        __atomic_store_n(&h->tid, (uint32_t)syscall(SYS_gettid), __ATOMIC_RELAXED);
        h->uid = (uint32_t)geteuid();
        __atomic_store_n(&h->pidns, stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0,
                         __ATOMIC_RELAXED);
        memset(h->comm, 0, sizeof(h->comm));
        prctl(PR_GET_NAME, h->comm, 0, 0, 0);
        h->comm[sizeof(h->comm) - 1] = 0;
}

/*
 * With the slot's lock byte held: if its last owner died, recover it.
 * 0 (nothing to do, or recovered), or -EAGAIN (recovery stopped part way:
 * the slot stays dead for the next recoverer).
 */
static int recover_if_dead_locked(struct seg *s, uint32_t slot)
{
        struct slot_hdr *h = slot_hdr(s, slot);

        if (atomic_load_explicit(&h->state, memory_order_acquire) != SLOT_LIVE)
                return 0;
        /*
         * New generation first: lock words naming the dead owner now read as
         * dead to everyone, and the hook takes locks under the new one, which
         * reads as alive (we hold the byte) for as long as recovery runs.
         */
        uint32_t g = atomic_fetch_add_explicit(&h->gen, 1, memory_order_acq_rel) + 1;
        __atomic_store_n(&h->rpid, (uint32_t)getpid(), __ATOMIC_RELAXED);
        __atomic_store_n(&h->rtid, (uint32_t)syscall(SYS_gettid), __ATOMIC_RELAXED);
        __atomic_store_n(&h->rpidns, pidns_ino(), __ATOMIC_RELAXED);
        atomic_store_explicit(&h->rgen, g, memory_order_release);
        if (recover_fn) {
                int r = recover_fn(s, slot, recover_arg);
                if (r < 0)
                        return r;
        }
        h->recovered++;
        atomic_store_explicit(&h->state, SLOT_FREE, memory_order_release);
        return 0;
}

static void unhold(struct seg *s, uint32_t i)
{
        pthread_mutex_lock(&s->slot_mu);
        seg_lock_release(s, SEG_LOCK_SLOT_BASE + i);
        s->held_slots[i / 64] &= ~(1ull << (i % 64));
        pthread_mutex_unlock(&s->slot_mu);
}

/*
 * Try to take slot i (slot_mu held, released on return). 0, -EAGAIN (held
 * by a live client), -EBUSY (dead, and its recovery cannot finish now), <0.
 */
static int claim_index(struct seg *s, uint32_t i, uint32_t *ret_gen)
{
        int r;

        if (held_locally(s, i)) {
                pthread_mutex_unlock(&s->slot_mu);
                return -EAGAIN;
        }
        r = seg_lock_try(s, SEG_LOCK_SLOT_BASE + i);
        if (r < 0) {
                pthread_mutex_unlock(&s->slot_mu);
                return r;
        }
        s->held_slots[i / 64] |= 1ull << (i % 64);
        pthread_mutex_unlock(&s->slot_mu);

        struct slot_hdr *h = slot_hdr(s, i);
        if (recover_if_dead_locked(s, i) < 0) {
                unhold(s, i);
                return -EBUSY;
        }
        identify(h);
        *ret_gen = atomic_fetch_add_explicit(&h->gen, 1, memory_order_relaxed) + 1;
        atomic_store_explicit(&h->state, SLOT_LIVE, memory_order_release);
        return 0;
}

int slot_claim(struct seg *s, uint32_t *ret_slot, uint32_t *ret_gen)
{
        bool blocked = false;

        if (s->forked)
                return STOA_E_FORKED;
        if (s->readonly)
                return -EROFS;
        /*
         * Free slots first: a dead slot's recovery is work (and may need what
         * a stopped client holds) that a new client should not pay for while
         * a free slot is there; stoad, and writers short of memory, recover.
         */
        for (int pass = 0; pass < 2; pass++) {
                for (uint32_t i = 0; i < s->nslots; i++) {
                        bool free = atomic_load_explicit(&slot_hdr(s, i)->state,
                                                         memory_order_acquire) == SLOT_FREE;
                        if (free != (pass == 0))
                                continue;
                        pthread_mutex_lock(&s->slot_mu);
                        int r = claim_index(s, i, ret_gen);
                        if (r == -EAGAIN || r == -EBUSY) {
                                blocked |= r == -EBUSY;
                                continue;
                        }
                        if (r == 0)
                                *ret_slot = i;
                        return r;
                }
        }
        if (blocked) {
                seg_set_errdetail("every free slot is taken and the dead clients' slots cannot be "
                                  "recovered now: a stopped client holds what that needs");
                return -EAGAIN;
        }
        seg_set_errdetail("all %u slots of the segment are held by live clients", s->nslots);
        return STOA_E_NOSLOT;
}

int slot_claim_at(struct seg *s, uint32_t slot, uint32_t *ret_gen)
{
        if (s->forked)
                return STOA_E_FORKED;
        if (s->readonly)
                return -EROFS;
        if (slot >= s->nslots)
                return -EINVAL;
        pthread_mutex_lock(&s->slot_mu);
        int r = claim_index(s, slot, ret_gen);
        return r == -EBUSY ? -EAGAIN : r;
}

void slot_release(struct seg *s, uint32_t slot)
{
        struct slot_hdr *h = slot_hdr(s, slot);

        /*
         * A handle inherited across fork() holds no slot: the slot is still
         * its parent's, whose lock byte stays held. Marking it FREE here would
         * make a live parent look gone and keep it from being recovered.
         */
        if (s->forked)
                return;
        atomic_store_explicit(&h->state, SLOT_FREE, memory_order_release);
        pthread_mutex_lock(&s->slot_mu);
        seg_lock_release(s, SEG_LOCK_SLOT_BASE + slot);
        s->held_slots[slot / 64] &= ~(1ull << (slot % 64));
        pthread_mutex_unlock(&s->slot_mu);
}

int slot_is_alive(struct seg *s, uint32_t slot)
{
        struct slot_hdr *h = slot_hdr(s, slot);
        int r;

        pthread_mutex_lock(&s->slot_mu);
        bool mine = held_locally(s, slot);
        pthread_mutex_unlock(&s->slot_mu);
        if (mine)
                return 1;
        r = seg_lock_held_by_other(s, SEG_LOCK_SLOT_BASE + slot);
        if (r <= 0)
                return r;
        /* Held: alive, unless it is a recoverer holding a FREE slot briefly. */
        return atomic_load_explicit(&h->state, memory_order_acquire) == SLOT_LIVE;
}

int slot_is_dead(struct seg *s, uint32_t slot, uint32_t gen)
{
        struct slot_hdr *h;
        int r;

        if (slot >= s->nslots)
                return 1;
        h = slot_hdr(s, slot);
        if (atomic_load_explicit(&h->gen, memory_order_acquire) != gen)
                return 1;
        pthread_mutex_lock(&s->slot_mu);
        bool mine = held_locally(s, slot);
        pthread_mutex_unlock(&s->slot_mu);
        if (mine)
                return 0;
        r = seg_lock_held_by_other(s, SEG_LOCK_SLOT_BASE + slot);
        if (r < 0)
                return r;
        return r == 0;
}

int slot_recover_dead(struct seg *s, uint32_t slot)
{
        struct slot_hdr *h = slot_hdr(s, slot);
        int r;

        if (s->forked)
                return STOA_E_FORKED;
        if (slot >= s->nslots ||
            atomic_load_explicit(&h->state, memory_order_acquire) != SLOT_LIVE)
                return 0;
        pthread_mutex_lock(&s->slot_mu);
        if (held_locally(s, slot)) {
                pthread_mutex_unlock(&s->slot_mu);
                return 0;
        }
        r = seg_lock_try(s, SEG_LOCK_SLOT_BASE + slot);
        if (r < 0) {
                pthread_mutex_unlock(&s->slot_mu);
                return r == -EAGAIN ? 0 : r;
        }
        s->held_slots[slot / 64] |= 1ull << (slot % 64);
        pthread_mutex_unlock(&s->slot_mu);

        bool was_live = atomic_load_explicit(&h->state, memory_order_acquire) == SLOT_LIVE;
        r = recover_if_dead_locked(s, slot);
        unhold(s, slot);
        return r < 0 ? r : was_live;
}

int slots_sweep(struct seg *s)
{
        int n = 0;

        for (uint32_t i = 0; i < s->nslots; i++) {
                int r = slot_recover_dead(s, i);
                if (r == -EAGAIN)
                        continue;       /* stays dead; the next sweep tries again */
                if (r < 0)
                        return r;
                n += r;
        }
        return n;
}
