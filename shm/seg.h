/*
 * shm/seg: the shared-memory segment.
 *
 * A segment is one file (tmpfs, hugetlbfs, or an anonymous memfd) that every
 * client maps MAP_SHARED wherever its kernel puts it. Nothing inside it is a
 * pointer: references are offsets from the base, turned into addresses only by
 * seg_ptr(). The first 4 KiB is a header that says what the file is (magic,
 * format version, checksum), who made it, and where each region lies. See
 * docs/design.md section 1 for the layout, the creation protocol (build under a
 * temporary name, publish with an atomic no-replace rename) and the checks an
 * attacher makes.
 *
 * The tricky part is creation racing creation and crashes: the real name only
 * ever points at a finished segment, and a temporary file left by a dead
 * creator is recognised by its free init lock and deleted.
 */
#ifndef STOA_SHM_SEG_H
#define STOA_SHM_SEG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

#define SEG_MAGIC        "STOASEG\1"
#define SEG_VERSION      9u      /* 9: an item's version is its allocator stamp (a
                                   24-byte item header); 8: item codec and dictionary id, namespace
                                   generations of 24 bits; 7: the small queue (a ring
                                   after the ghost table, FREQ_SMALL in items); 6: index entries move to their
                                   other bucket (a lookup that misses looks again if
                                   moves ran); 5: namespace
                                   generations (items, hash, table), ns lock
                                   and epoch; 4: supervisor record; 3: hazard pointers, hash
                                   seed, relist bitmaps, recoverer line */
#define SEG_HEADER_SIZE  4096u
#define SEG_MAX_REGIONS  32u
#define SEG_STATE_INIT   0x54494e49u   /* "INIT" */
#define SEG_STATE_READY  0x59444552u   /* "REDY" */
#define SEG_DEFAULT_DIR  "/dev/shm/stoa"
#define SEG_NAME_MAX     200u
#define SEG_HUGE_2M      (2u << 20)

/* Byte offsets in the segment file used for OFD locks (never data). */
#define SEG_LOCK_INIT       (1ull << 40)
#define SEG_LOCK_SUPER      ((1ull << 40) + 1)  /* held by the segment's one supervisor */
#define SEG_LOCK_SLOT_BASE  ((1ull << 40) + 4096)

enum seg_huge {
        SEG_HUGE_PREFER = 0,    /* hugepages if the host has them, else 4 KiB */
        SEG_HUGE_REQUIRE,       /* hugepages or STOA_E_NOHUGE */
        SEG_HUGE_REFUSE,        /* 4 KiB pages only */
};

enum seg_backing {
        SEG_BACK_NONE = 0,
        SEG_BACK_SHMEM,         /* tmpfs file or memfd, 4 KiB pages (THP advised) */
        SEG_BACK_HUGETLB,       /* hugetlbfs file or MFD_HUGETLB memfd */
        SEG_BACK_FILE,          /* a file on another filesystem (page cache) */
};

/* One region of the segment, as recorded in the header. */
struct seg_region {
        uint32_t kind;          /* SEG_REGION_* of the layer that owns it */
        int32_t node;           /* NUMA node it is bound to, or -1 */
        uint64_t off;
        uint64_t size;
};
_Static_assert(sizeof(struct seg_region) == 24, "seg_region layout");

/* Region kinds. Each layer owns its own; shm/ only records and checks them. */
enum {
        SEG_REGION_SLOTS = 1,
        SEG_REGION_ARENAS = 2,
        SEG_REGION_PAGEDESC = 3,
        SEG_REGION_HEAP = 4,    /* one per arena; node says where */
        SEG_REGION_INDEX = 5,
        SEG_REGION_CACHE = 6,
        SEG_REGION_INTERN = 7,
};

/*
 * The supervisor record, in the header's last bytes (outside the checksum).
 * Written by the one stoad that holds the SEG_LOCK_SUPER byte lock, after it
 * took the lock: the other fields first, then pid with a release store; it
 * zeroes pid (release) before it lets the lock go. Read by a second stoad
 * that finds the lock taken, to name the first (pid with acquire, then the
 * rest). A supervisor killed with SIGKILL leaves its record but not its
 * lock: a record whose lock is free is stale and is overwritten.
 */
struct seg_super {
        _Atomic uint32_t pid;   /* in its own PID namespace; 0 = none */
        uint32_t uid;
        uint64_t pidns;         /* inode of its /proc/self/ns/pid */
        uint64_t since_ns;      /* CLOCK_REALTIME when it took over */
        char comm[16];
        char host[64];
};
_Static_assert(sizeof(struct seg_super) == 104, "seg_super layout");

/*
 * The header. Written once by the creator, before state becomes READY
 * (a release store); attachers load state with acquire and may then read the
 * rest. Nothing in it changes after that except `state` and `super`.
 */
struct seg_header {
        char magic[8];
        uint32_t version;
        uint32_t header_size;
        uint64_t total_size;
        uint64_t page_size;     /* backing page size: 4096 or 2 MiB */
        uint32_t backing;       /* enum seg_backing */
        uint32_t flags;         /* SEG_F_* */
        uint64_t created_ns;    /* CLOCK_REALTIME */
        /* creator's identity, as seen from its own namespaces */
        uint32_t creator_pid;
        uint32_t creator_uid;
        uint32_t creator_gid;
        uint32_t nregions;
        uint64_t creator_pidns; /* inode of /proc/self/ns/pid */
        char creator_host[64];
        char creator_comm[16];
        struct seg_region regions[SEG_MAX_REGIONS];
        uint64_t checksum;      /* FNV-1a of this struct with state and checksum zeroed */
        _Atomic uint32_t state; /* SEG_STATE_INIT, then SEG_STATE_READY */
        uint32_t pad0;
        uint8_t reserved[SEG_HEADER_SIZE - 936 - 104];
        struct seg_super super;         /* not in the checksum: see above */
};
_Static_assert(sizeof(struct seg_header) == SEG_HEADER_SIZE, "header is one 4 KiB page");
_Static_assert(offsetof(struct seg_header, regions) == 152 && offsetof(struct seg_header, checksum) == 920 &&
               offsetof(struct seg_header, state) == 928, "header layout (SEG_VERSION 3)");

#define SEG_F_MEMFD   1u        /* anonymous, sealed memfd */

/* What the upper layers ask for; seg lays regions out in this order. */
struct seg_layout {
        unsigned n;
        struct {
                uint32_t kind;
                int32_t node;
                uint64_t size;
                uint64_t align;     /* power of two, >= 64 */
        } r[SEG_MAX_REGIONS];
};

struct seg;

/* Called with the final (page-rounded) size; fills `out`. Returns 0 or -errno. */
typedef int (*seg_layout_fn)(uint64_t total_size, struct seg_layout *out, void *arg);
/* Called on the fresh mapping before it is published. Returns 0 or -errno. */
typedef int (*seg_init_fn)(struct seg *s, void *arg);

struct seg_config {
        uint64_t size;          /* bytes; rounded up to the page size */
        enum seg_huge huge;
        uint32_t mode;          /* file mode; 0 means 0600 */
        int64_t gid;            /* group of the file, or -1 for the creator's */
        seg_layout_fn layout;
        seg_init_fn init;
        void *arg;
};

/* Process-local handle on a mapped segment. */
struct seg {
        uint8_t *base;
        uint64_t size;
        struct seg_header *hdr;
        int fd;                 /* this process's own open file description */
        bool readonly;
        bool created;           /* this call created it */
        bool forked;            /* inherited across fork(): unusable */
        enum seg_backing backing;
        uint64_t page_size;
        char *path;             /* NULL for a memfd */
        uint64_t dev, ino;              /* the file's identity, to notice its removal */
        pthread_mutex_t slot_mu;        /* guards held_slots */
        uint64_t *held_slots;           /* slots this process holds (bitmap) */
        uint32_t nheld_words;
        struct seg *next_open;          /* list of open segments, for atfork */
        void *owner;                    /* the upper layer's handle (for hooks) */
        uint8_t *slot0;                 /* slots_attach(): first slot header, and */
        uint32_t slot_stride, nslots;   /* process-local copies of the checked table */
};

enum {
        SEG_OPEN_NOCREATE = 1u << 0,    /* attach only: -ENOENT if absent */
        SEG_OPEN_RDONLY = 1u << 1,      /* map read-only; implies NOCREATE */
        SEG_OPEN_EXCL = 1u << 2,        /* create only: -EEXIST if present */
};

/*
 * seg_open() - attach to the segment `name`, creating it if it is absent.
 *
 * A name without '/' lives in $STOA_DIR, or by default on a hugetlbfs mount's
 * stoa/ directory (if one has free pages) or in /dev/shm/stoa. A name with a
 * '/' is a path. cfg may be NULL with SEG_OPEN_NOCREATE. On failure *ret is
 * untouched and seg_errdetail() says more.
 */
int seg_open(struct seg **ret, const char *name, const struct seg_config *cfg,
             unsigned flags);

/* Create an anonymous memfd segment, sealed against resizing. */
int seg_create_anon(struct seg **ret, const struct seg_config *cfg);

/* Attach to a segment given by an fd (borrowed: the caller still closes it). */
int seg_attach_fd(struct seg **ret, int fd, unsigned flags);

/* Pass a segment's fd over a connected AF_UNIX socket, and receive it. */
int seg_send_fd(int sock, const struct seg *s);
int seg_recv_fd(int sock, int *ret_fd);

/* Unmap and close. NULL is a no-op. The segment itself persists. */
void seg_close(struct seg *s);

/* Remove a named segment's file. Mapped clients keep their mapping. */
int seg_unlink(const char *name);

/*
 * Is the segment's file still the one under its name? 0 if so (or for a
 * memfd), 1 if it was unlinked or the name now holds another file (with
 * seg_errdetail() saying which). Two syscalls: callers rate-limit it.
 */
int seg_check_removed(struct seg *s);

/*
 * Become the segment's one supervisor: take SEG_LOCK_SUPER and write the
 * record. 0; -EBUSY with *ret_other the record of the live supervisor that
 * holds it; -EROFS on a read-only handle; -errno. The lock goes with the
 * process (crash-safe); seg_unsupervise() gives it up before that.
 */
int seg_supervise(struct seg *s, struct seg_super *ret_other);
void seg_unsupervise(struct seg *s);

/* Resolve a bare name or path to the path of an existing segment file. */
int seg_find(const char *name, char *buf, size_t len);

/* The last error's detail for this thread: "path: what was found". */
const char *seg_errdetail(void);
void seg_set_errdetail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

const char *seg_backing_name(enum seg_backing b);

/* Find the first region of `kind` (and index `nth` of that kind). NULL if none. */
const struct seg_region *seg_region(const struct seg *s, uint32_t kind, unsigned nth);

/* Offset <-> address. Out-of-range offsets give NULL (callers check). */
static inline void *seg_ptr(const struct seg *s, uint64_t off)
{
        return off < s->size ? (void *)(s->base + off) : NULL;
}

static inline uint64_t seg_off(const struct seg *s, const void *p)
{
        return (uint64_t)((const uint8_t *)p - s->base);
}

/* OFD byte locks on the segment file (for slots and the init lock). */
int seg_lock_try(const struct seg *s, uint64_t byte);   /* 0, -EAGAIN, -errno */
int seg_lock_release(const struct seg *s, uint64_t byte);
int seg_lock_held_by_other(const struct seg *s, uint64_t byte); /* 1, 0, -errno */

/* Bind [off, off+len) of the mapping to `node` (MPOL_BIND). 0 or -errno. */
int seg_bind_node(struct seg *s, uint64_t off, uint64_t len, int node);

/* Header checksum, as stored. */
uint64_t seg_header_checksum(const struct seg_header *h);

#endif /* STOA_SHM_SEG_H */
