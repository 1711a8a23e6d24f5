/*
 * stoa: a shared-memory cache for processes on one host.
 *
 * This header is the whole public API of libstoa. Every function returns 0 on
 * success or a negative error code: a negative errno (-EINVAL, -ENOMEM, ...) or
 * one of the STOA_E_* codes below, which lie outside the errno range.
 * stoa_strerror() turns any of them into a sentence.
 */
#ifndef STOA_STOA_H
#define STOA_STOA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define STOA_API __attribute__((visibility("default")))
#else
#define STOA_API
#endif

/* Errors beyond errno. Each names one way a segment can be unusable. */
#define STOA_E_BASE       4200
#define STOA_E_FOREIGN    (-(STOA_E_BASE + 1)) /* the file is not a stoa segment */
#define STOA_E_VERSION    (-(STOA_E_BASE + 2)) /* segment format version differs from the library's */
#define STOA_E_TRUNCATED  (-(STOA_E_BASE + 3)) /* the file is shorter than its header says */
#define STOA_E_HALFINIT   (-(STOA_E_BASE + 4)) /* the creator died before finishing the segment */
#define STOA_E_CORRUPT    (-(STOA_E_BASE + 5)) /* the header or a structure fails its checks */
#define STOA_E_NOHUGE     (-(STOA_E_BASE + 6)) /* hugepages were required and are not available */
#define STOA_E_NOSLOT     (-(STOA_E_BASE + 7)) /* every client slot of the segment is in use */
#define STOA_E_FORKED     (-(STOA_E_BASE + 8)) /* handle inherited across fork(); open a new one */
#define STOA_E_REMOVED    (-(STOA_E_BASE + 9)) /* the segment file was removed or replaced; reopen */
#define STOA_E_LAST       (-(STOA_E_BASE + 9))

/*
 * stoa_strerror() - describe an error code
 *
 * Returns a static, NUL-terminated sentence for any value returned by a stoa
 * function, including plain negative errnos. Never NULL. Thread-safe.
 */
STOA_API const char *stoa_strerror(int err);

/*
 * stoa_errdetail() - what the last failed stoa_open() on this thread found
 *
 * A sentence naming the file and what was wrong with it, e.g.
 * "/dev/shm/stoa/default: permission denied (needs read-write access; mode
 * 0644, owner uid 0)", or "" if there is nothing to add to stoa_strerror().
 * Valid until the next stoa call on this thread. Never NULL. Thread-safe.
 */
STOA_API const char *stoa_errdetail(void);

/* ======================================================================
 * The cache
 * ====================================================================== */

/*
 * A handle on one segment, from stoa_open(). One handle may be used by many
 * threads at once: each thread that calls into it takes one of the segment's
 * client slots on its first call and gives it back when the thread exits or
 * the handle is closed. A handle is not inherited across fork(): a child
 * gets STOA_E_FORKED and opens its own.
 */
struct stoa;

struct stoa_options {           /* callers use designated initializers */
        uint64_t size;          /* segment size in bytes if this call creates it; 0 = 256 MiB;
                                   else STOA_SIZE_MIN to STOA_SIZE_MAX */
        uint32_t flags;         /* STOA_OPEN_* */
        uint32_t mode;          /* file mode if this call creates it; 0 = 0600 */
        const char *ns;         /* namespace (keyspace) for this handle; NULL, "" or
                                   "default" = the default one. Copied. A named one is
                                   created by the first write through a handle on it;
                                   reads, deletes and scans never create it. */
        uint32_t nslots;        /* client slots if this call creates it; 0 = 256 */
};

#define STOA_OPEN_NOCREATE  0x1u  /* attach only: -ENOENT if the segment does not exist */
#define STOA_OPEN_HUGE      0x2u  /* creating: fail with STOA_E_NOHUGE without hugepages */
#define STOA_OPEN_NOHUGE    0x4u  /* creating: never use hugepages */
#define STOA_OPEN_RDONLY    0x8u  /* inspect only: map read-only, take no slot (implies NOCREATE) */

#define STOA_SIZE_MIN       (16ull << 20) /* smallest segment: slot table, index, a heap */
#define STOA_SIZE_MAX       (64ull << 40) /* largest: item offsets are 47 bits */

#define STOA_KEY_MAX        4096u /* longest key, bytes */
#define STOA_NS_MAX         31u   /* named namespaces a segment can hold */

/*
 * stoa_open() - attach to (or create) the segment `name`
 *
 * A bare name lives in $STOA_DIR, else a hugetlbfs mount with free pages,
 * else /dev/shm/stoa; a name with a '/' is a path. Without
 * STOA_OPEN_NOCREATE the segment is created if it does not exist, sized
 * opts->size. opts may be NULL (all defaults). On success *ret is a handle
 * to pass to stoa_close().
 *
 * With STOA_OPEN_RDONLY the handle only reads: stoa_info(), stoa_clients()
 * and stoa_check() work (a user with read permission alone may inspect a
 * segment), every other call returns -EROFS; it needs only read access to
 * the file and takes no client slot.
 *
 * Errors: -EINVAL (NULL ret or name, unknown flags, size outside
 * STOA_SIZE_MIN..STOA_SIZE_MAX), -ENOENT (NOCREATE and no such segment),
 * -EACCES, -E2BIG (opts->ns longer than STOA_KEY_MAX), -ENOSPC (the slot
 * table and index do not fit: many slots in a small segment), STOA_E_*
 * when the file is not a usable segment. stoa_errdetail() names the file
 * and says what was found (for -EACCES: the access needed).
 */
STOA_API int stoa_open(struct stoa **ret, const char *name, const struct stoa_options *opts);

/* stoa_close() - detach; NULL is a no-op. No thread may be inside a call on c. */
STOA_API void stoa_close(struct stoa *c);

/*
 * stoa_set() - store a value under a key, replacing any value it had
 *
 * ttl_s is the lifetime in seconds (at least that, at most one second more:
 * the cache's clock counts whole seconds); 0 = no expiry. When the call returns 0
 * the value is visible to every process and survives the death of this one.
 * The cache evicts other keys to make room when memory is full.
 *
 * Errors: -EINVAL (NULL handle or key, zero-length key, NULL val with
 * vlen > 0), -E2BIG (key over STOA_KEY_MAX, or value larger than the
 * segment can hold), -ENOMEM (nothing could be evicted to make room),
 * -EAGAIN (a stopped client holds what the write needs: the key's claim,
 * its bucket, an arena, or the memory it is reading; retry later), -ENOSPC
 * (the handle's namespace does not exist yet and STOA_NS_MAX others do, or
 * the interner is full). Every write (set, add, replace, cas, incr) that
 * finds its handle's namespace missing creates it first; a write racing a
 * stoa_ns_drop() of its namespace may land in the dropped one (and vanish
 * with it) or in the namespace created again after the drop.
 */
STOA_API int stoa_set(struct stoa *c, const void *key, size_t klen, const void *val, size_t vlen,
                      uint32_t ttl_s);

/*
 * stoa_get() - copy the value of a key into buf
 *
 * On 0, *ret_vlen (if not NULL) holds the value's length. If cap is smaller
 * than the value, returns -ENOBUFS with *ret_vlen set and buf untouched.
 * Errors: -ENOENT (absent or expired), -EINVAL, -ENOBUFS, -E2BIG (key over
 * STOA_KEY_MAX: it cannot be there).
 */
STOA_API int stoa_get(struct stoa *c, const void *key, size_t klen, void *buf, size_t cap,
                      size_t *ret_vlen);

/*
 * stoa_del() - remove a key. -ENOENT if it was absent or expired; -EAGAIN if
 * a stopped client holds the key's claim, or readers hold back so much
 * retired memory that nothing more can be retired (as stoa_set()).
 */
STOA_API int stoa_del(struct stoa *c, const void *key, size_t klen);

/* ---- conditional writes and versions ---- */

/* stoa_add() - set only if the key is absent (or expired): -EEXIST otherwise. */
STOA_API int stoa_add(struct stoa *c, const void *key, size_t klen, const void *val, size_t vlen,
                      uint32_t ttl_s);

/* stoa_replace() - set only if the key is present: -ENOENT otherwise. */
STOA_API int stoa_replace(struct stoa *c, const void *key, size_t klen, const void *val, size_t vlen,
                          uint32_t ttl_s);

/*
 * stoa_gets() - stoa_get() that also returns the value's version
 *
 * Every write gives the key's value a new version, unique in the segment
 * (never 0). Pass it to stoa_cas(). ret_version may be NULL.
 */
STOA_API int stoa_gets(struct stoa *c, const void *key, size_t klen, void *buf, size_t cap,
                       size_t *ret_vlen, uint64_t *ret_version);

/*
 * stoa_cas() - set only if the key's current version is `version`
 *
 * Returns -ESTALE if the key holds another version (another writer came
 * first), -ENOENT if it is absent, and the errors of stoa_set() (the new
 * value is built before the comparison, so a full cache may say -ENOMEM).
 * On 0, *ret_version (if not NULL) is the new version.
 */
STOA_API int stoa_cas(struct stoa *c, const void *key, size_t klen, const void *val, size_t vlen,
                      uint32_t ttl_s, uint64_t version, uint64_t *ret_version);

/*
 * stoa_incr() - add delta to a counter, atomically
 *
 * The value is a signed decimal integer in ASCII, as Redis and memcached
 * keep counters. An absent key counts as 0 and is created with ttl_s; an
 * existing key keeps its expiry. On 0, *ret_value (if not NULL) is the
 * result. Errors: -EDOM (the value is not a decimal integer), -ERANGE (the
 * result overflows int64_t), -EAGAIN (lost the race to other writers 1000
 * times in a row: only a damaged segment does that), and those of stoa_set().
 */
STOA_API int stoa_incr(struct stoa *c, const void *key, size_t klen, int64_t delta, uint32_t ttl_s,
                       int64_t *ret_value);

/* ---- time to live ---- */

/*
 * stoa_ttl() - remaining lifetime of a key
 *
 * *ret_ttl_s is the whole seconds left (at least 1), or 0 if the key never
 * expires. -ENOENT if absent or expired.
 */
STOA_API int stoa_ttl(struct stoa *c, const void *key, size_t klen, uint32_t *ret_ttl_s);

/* stoa_touch() - give a present key a new lifetime (0 = never expire). -ENOENT if absent. */
STOA_API int stoa_touch(struct stoa *c, const void *key, size_t klen, uint32_t ttl_s);

/* ---- batched reads ---- */

/* One key of a batched get. The caller fills the inputs; stoa_mget() the outputs. */
struct stoa_getreq {
        const void *key;        /* in */
        size_t klen;            /* in */
        void *buf;              /* in: where to copy the value */
        size_t cap;             /* in: bytes at buf */
        size_t vlen;            /* out: the value's length (also on -ENOBUFS) */
        int err;                /* out: 0, -ENOENT, -ENOBUFS or -EINVAL, as stoa_get() */
};

/*
 * stoa_mget() - get many keys at once
 *
 * Looks up all n keys with their memory accesses overlapped (prefetched
 * ahead), which is the shared-memory form of pipelining: for n keys it costs
 * far less than n stoa_get() calls. Each request gets its own result in
 * reqs[i].err. Returns the number of hits, or a negative error for a bad
 * call (NULL handle, NULL reqs with n > 0).
 */
STOA_API int stoa_mget(struct stoa *c, struct stoa_getreq *reqs, size_t n);

/* ---- zero-copy reads ---- */

/*
 * A borrowed value. `val` points into the shared segment, is read-only,
 * and stays valid and unchanged, even if the key is overwritten, deleted or
 * evicted meanwhile, until stoa_view_release(). A view pins only its own
 * value's memory: it never holds back reclamation of anything else. A thread
 * may hold up to STOA_VIEWS_MAX views; a view must be released by the thread
 * that took it, and with the same handle. Views of a process that dies are
 * released by whoever recovers its slot.
 */
struct stoa_view {
        const void *val;
        size_t vlen;
        uint64_t version;
        uint64_t priv[2];       /* the library's */
};
#define STOA_VIEWS_MAX 64u

/* stoa_view_get() - borrow a key's value. -ENOENT, -EINVAL, -EMFILE (too many views held). */
STOA_API int stoa_view_get(struct stoa *c, const void *key, size_t klen, struct stoa_view *v);
/* stoa_view_release() - give a view back. A zeroed or already released view is a no-op. */
STOA_API void stoa_view_release(struct stoa *c, struct stoa_view *v);

/* ---- iteration ---- */

/*
 * Called for each key found by stoa_scan(), outside any internal section:
 * it may call any stoa function. Return 0 to go on, anything else to stop
 * (stoa_scan() then returns that value).
 */
typedef int (*stoa_scan_fn)(const void *key, size_t klen, size_t vlen, void *arg);

/*
 * stoa_scan() - visit the keys of this handle's namespace that start with prefix
 *
 * Safe while others write: a key present and unchanged in place for the
 * whole scan is visited exactly once; a key written or deleted during it
 * may or may not be. So may a key whose index entry moves to its other
 * bucket during the scan, which an insert into two full buckets does to
 * make room (it may then be visited twice, or not at all). Expired keys
 * are skipped. plen 0 visits all keys.
 * Returns 0 after visiting all, fn's non-zero value if it stopped, or a
 * negative error.
 */
STOA_API int stoa_scan(struct stoa *c, const void *prefix, size_t plen, stoa_scan_fn fn, void *arg);

/* ---- string interner ---- */

/*
 * stoa_intern() - a stable 32-bit id (never 0) for a string, the same in every
 * process and for the segment's lifetime. Interned strings are never freed.
 * Errors: -EINVAL, -E2BIG (over STOA_KEY_MAX), -ENOSPC (the table is full).
 */
STOA_API int stoa_intern(struct stoa *c, const void *s, size_t len, uint32_t *ret_id);

/* stoa_intern_lookup() - the string of an id; buf/cap/ret_len as stoa_get(). -ENOENT if unknown. */
STOA_API int stoa_intern_lookup(struct stoa *c, uint32_t id, void *buf, size_t cap, size_t *ret_len);

/* ---- namespaces ---- */

/*
 * Called by stoa_ns_list() for each namespace: its name (NUL-terminated,
 * valid during the call) and its index (0 for the default namespace, listed
 * first as "default"; 1..STOA_NS_MAX for the others). Non-zero stops.
 */
typedef int (*stoa_ns_fn)(const char *name, uint32_t index, void *arg);

/*
 * stoa_ns_list() - the segment's namespaces. Reads only and takes no client
 * slot. Returns 0, fn's non-zero value, or -EINVAL / -ENOMEM. A namespace
 * created or dropped meanwhile may or may not be listed. Thread-safe.
 */
STOA_API int stoa_ns_list(struct stoa *c, stoa_ns_fn fn, void *arg);

/*
 * stoa_ns_drop() - drop the namespace `name` and every key in it
 *
 * When it returns, no process can read any of its keys (handles on it see
 * an empty namespace, and their next write creates it afresh, maybe under
 * another index), its index is free for a new name, and its items are
 * unlinked and their memory reclaimed as readers allow. Another process's
 * write racing the drop may still land in the dropped namespace: that item is
 * never visible, and is reclaimed by stoa_sweep() or eviction. Safe to
 * redo: a drop cut short (the process killed) is finished by the next
 * stoa_ns_drop() or stoa_sweep(). Counters of stoa_info() stay with the index.
 *
 * Errors: -EINVAL (NULL c or name), -EPERM (name is "" or "default": the
 * default namespace cannot be dropped; stoa_flush() empties it), -ENOENT (no
 * namespace of that name), -EAGAIN (a stopped client holds the namespace
 * table's lock; retry later), STOA_E_FORKED.
 */
STOA_API int stoa_ns_drop(struct stoa *c, const char *name);

/*
 * stoa_flush() - empty the whole segment in place: every key of every
 * namespace
 *
 * Keys of named namespaces become unreachable at once for every process;
 * those of the default namespace go as the call walks the index. When it
 * returns 0, no key written before the call began can be read by any
 * process, and their memory is reclaimed as readers allow (a view keeps its
 * own value). Namespaces stay (empty); writes running meanwhile may or may
 * not survive. Safe to redo after a crash. Errors: -EINVAL, -EAGAIN
 * (stopped readers hold so much retired memory that the walk could not go on,
 * or a stopped client holds the namespace table's lock: call it again
 * later), STOA_E_FORKED.
 */
STOA_API int stoa_flush(struct stoa *c);

/* ---- statistics ---- */

/* Per-handle counts of this process's calls (all threads), since stoa_open(). */
struct stoa_stats {
        uint64_t gets, hits, misses;    /* stoa_get/gets/mget keys/view_get */
        uint64_t sets, set_fails;       /* writes (set, add, replace, cas, incr, touch) */
        uint64_t dels;
        uint64_t evictions;             /* items this handle evicted to make room in memory */
        uint64_t expired;               /* expired items this handle removed */
        uint64_t conflicts;             /* items it removed to make room in the index */
};
STOA_API void stoa_stats_get(struct stoa *c, struct stoa_stats *out);

/*
 * Segment-wide figures, for tools (stoa stat) and for monitoring. stoa_info(),
 * stoa_clients() and stoa_check() only read: they take no client slot, so they
 * work on a segment whose slots are all in use.
 */
struct stoa_ns_info {
        char name[64];
        uint64_t items, bytes;          /* live items and their value+key bytes */
        uint64_t hits, misses, sets, dels, evictions, expired;
        uint64_t conflicts;             /* removed for room in the index, not in memory */
};
struct stoa_info {
        uint64_t size;                  /* segment bytes */
        uint64_t heap_bytes, used_bytes, free_bytes;
        uint64_t index_buckets, index_entries;  /* buckets, and entries in use */
        uint32_t index_ways;            /* entries a bucket holds */
        uint64_t index_moves;           /* entries moved to their other bucket to make room */
        uint64_t items, item_bytes;
        uint64_t hits, misses, sets, dels, evictions, expired;
        uint64_t conflicts;             /* removed for room in the index, not in memory */
        uint32_t clients, dead_clients, slots;
        uint32_t nns;                   /* entries of ns[] filled */
        char backing[16];               /* "hugetlbfs", "shmem", "memfd" ... */
        char path[256];
        struct stoa_ns_info ns[STOA_NS_MAX + 1];
};
/*
 * stoa_info() - read the segment's figures. Counting items walks the index
 * (milliseconds for a large segment); everything else is read from counters.
 */
STOA_API int stoa_info(struct stoa *c, struct stoa_info *out);

/* One client slot, for stoa_clients(). */
struct stoa_client {
        uint32_t slot;
        int alive;                      /* 1 alive, 0 dead (not yet recovered) */
        uint32_t pid;                   /* in its own PID namespace */
        uint64_t pidns;                 /* inode of its PID namespace */
        uint64_t since_ns;              /* CLOCK_REALTIME when it attached */
        char comm[16];
        uint64_t reading;               /* the item it is reading right now (offset), 0 if none */
        uint32_t views, retired;        /* views held, blocks awaiting reclamation */
};
typedef int (*stoa_client_fn)(const struct stoa_client *cl, void *arg);
/* stoa_clients() - call fn for each slot in use (alive or dead); fn non-zero stops. */
STOA_API int stoa_clients(struct stoa *c, stoa_client_fn fn, void *arg);

/*
 * stoa_check() - walk the whole segment and verify every invariant
 *
 * The index and the items agree (every entry points at an allocated item
 * whose key hashes to that bucket, no key twice), allocator accounting
 * balances, no block is both free and in use, no offset dangles, every
 * allocated block is reachable or accounted for (retired, viewed, in
 * flight). The first 1000 problems are passed to report (may be NULL), one
 * sentence each. Returns the number of problems (0 = consistent) or a
 * negative error. Exact on a quiet segment; with writers running, transient
 * differences are re-checked. Clients that died and are not recovered yet
 * are not problems: their operations in flight are settled in the check as
 * their recovery will settle them (stoa_info() counts them as dead_clients).
 */
typedef void (*stoa_report_fn)(const char *msg, void *arg);
STOA_API int stoa_check(struct stoa *c, stoa_report_fn report, void *arg);

/*
 * stoa_sweep() - housekeeping: recover dead clients, unlink expired items,
 * reclaim retired memory. stoad calls it periodically; clients need not.
 * Returns the number of items and slots recovered, or a negative error.
 */
STOA_API int stoa_sweep(struct stoa *c);

/*
 * Caveats
 *
 * - fork(): a handle does not survive it. The child gets STOA_E_FORKED from
 *   every call and must stoa_open() its own; the parent's handle is unaffected.
 * - Views: a stoa_view's bytes stay valid only until stoa_view_release(), which
 *   must come from the thread that took the view; never write through val.
 *   A thread holds at most STOA_VIEWS_MAX. A view keeps one item's memory from
 *   being freed; many long-held views in a small segment can leave nothing to
 *   evict (-ENOMEM).
 * - Threads: each thread that uses a handle holds one of the segment's client
 *   slots (256 by default) until it exits or the handle is closed. Close a
 *   handle only when no thread is inside a call on it.
 * - A full segment evicts; a write fails with -ENOMEM only when nothing at all
 *   can be evicted, and with -EAGAIN when what it needs is held by a client
 *   that does not advance (a stopped process: SIGSTOP, a paused container, a
 *   debugger). No call waits on another process for more than about a
 *   second, and on a stopped one only long enough to see it is stopped; a
 *   stopped reader holds back the one item it is reading (`stoa clients`
 *   shows it under READING), nothing else. A dead process never makes a
 *   call fail: its slot is recovered by whoever needs what it held. Retry
 *   -EAGAIN later.
 * - Keys are compared as bytes; a key lives in the namespace of the handle it
 *   was written through. A segment holds STOA_NS_MAX named namespaces; a
 *   namespace name, once written to, stays interned (a small string) for the
 *   segment's life even after stoa_ns_drop(), and the interner holds 4096. Values up to the heap's size are accepted, but a
 *   value larger than a few MiB in a small segment may evict most others.
 * - A segment file scribbled on by another process gives errors or wrong
 *   values, not crashes; `stoa check` (stoa_check()) reports the damage.
 * - Removing a segment file while it is in use (`rm`, or another program
 *   replacing it) would split its users: those attached keep the old file,
 *   the next stoa_open() creates a new one. Each handle checks, at most once
 *   a second and only on writes (set, add, replace, cas, incr, touch, del)
 *   and at a thread's first call, that its file is still the one under its
 *   name; once it is not, every call on the handle returns STOA_E_REMOVED
 *   and the caller closes it and opens the name again. Reads alone notice it
 *   at a thread's next first call. Remove a segment with `stoa rm NAME`,
 *   which refuses while clients are attached.
 */

#ifdef __cplusplus
}
#endif

#endif /* STOA_STOA_H */
