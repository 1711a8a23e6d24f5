/*
 * shm/seg.c: create, attach, check and map segments. See seg.h and
 * docs/design.md section 1.
 */
#include "shm/names.h"
#include "shm/seg.h"
#include "stoa/stoa.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <numaif.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21u << 26)
#endif

#define HALFINIT_WAIT_MS 2000
#define STALE_TMP_AGE_S  2

static _Thread_local char errdetail[512];

const char *seg_errdetail(void)
{
        return errdetail;
}

void seg_set_errdetail(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(errdetail, sizeof(errdetail), fmt, ap);
        va_end(ap);
}

const char *seg_backing_name(enum seg_backing b)
{
        switch (b) {
        case SEG_BACK_SHMEM: return "shmem-4k";
        case SEG_BACK_HUGETLB: return "hugetlb-2m";
        case SEG_BACK_FILE: return "file";
        default: return "none";
        }
}

/* ---- open segments, for the fork handler ------------------------------- */

static pthread_mutex_t open_mu = PTHREAD_MUTEX_INITIALIZER;
static struct seg *open_list;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/*
 * Point a forked child's copy of the mapping at an open file description of
 * its own. The inherited mapping holds a reference to the parent's
 * description just as the fd does, and the kernel keeps OFD locks until the
 * last reference goes, so closing the fd alone would still keep the parent's
 * slots alive after it dies. Only async-signal-safe calls: this runs in the
 * child of a fork() that another thread may have been in the middle of.
 */
static void remap_own(struct seg *s)
{
        char proc[32] = "/proc/self/fd/", digits[12];
        int n = 0, len = 14, fd, prot = s->readonly ? PROT_READ : PROT_READ | PROT_WRITE;
        void *p = MAP_FAILED;

        for (unsigned v = (unsigned)s->fd; n == 0 || v; v /= 10)
                digits[n++] = (char)('0' + v % 10);
        while (n)
                proc[len++] = digits[--n];
        proc[len] = 0;
        fd = open(proc, (s->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (fd >= 0) {
                p = mmap(s->base, s->size, prot, MAP_SHARED | MAP_FIXED, fd, 0);
                close(fd);
        }
        if (p == MAP_FAILED)    /* then no access at all, rather than a parent kept alive */
                mmap(s->base, s->size, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
}

/*
 * In a forked child, close every inherited segment fd and remap the
 * segment through a description of the child's own: sharing the parent's
 * would keep the parent's OFD slot locks alive after the parent dies. The
 * mapping stays usable for reading; the handle is marked forked and refuses
 * further use.
 */
static void atfork_child(void)
{
        for (struct seg *s = open_list; s; s = s->next_open) {
                if (s->fd >= 0) {
                        if (s->base)
                                remap_own(s);
                        close(s->fd);
                }
                s->fd = -1;
                s->forked = true;
                pthread_mutex_init(&s->slot_mu, NULL);  /* another thread may have held it */
        }
        pthread_mutex_init(&open_mu, NULL);
}

static void atfork_prepare(void) { pthread_mutex_lock(&open_mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&open_mu); }

static void install_atfork(void)
{
        pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static void open_list_add(struct seg *s)
{
        pthread_once(&atfork_once, install_atfork);
        pthread_mutex_lock(&open_mu);
        s->next_open = open_list;
        open_list = s;
        pthread_mutex_unlock(&open_mu);
}

static void open_list_del(struct seg *s)
{
        pthread_mutex_lock(&open_mu);
        for (struct seg **p = &open_list; *p; p = &(*p)->next_open) {
                if (*p == s) {
                        *p = s->next_open;
                        break;
                }
        }
        pthread_mutex_unlock(&open_mu);
}

/* ---- OFD locks ----------------------------------------------------------- */

static int ofd_lock(int fd, int cmd, short type, uint64_t byte, struct flock *out)
{
        struct flock fl = {
                .l_type = type, .l_whence = SEEK_SET,
                .l_start = (off_t)byte, .l_len = 1, .l_pid = 0,
        };

        if (fcntl(fd, cmd, &fl) < 0)
                return -errno;
        if (out)
                *out = fl;
        return 0;
}

int seg_lock_try(const struct seg *s, uint64_t byte)
{
        int r;

        if (s->fd < 0)
                return STOA_E_FORKED;
        r = ofd_lock(s->fd, F_OFD_SETLK, F_WRLCK, byte, NULL);
        return r == -EACCES ? -EAGAIN : r;
}

int seg_lock_release(const struct seg *s, uint64_t byte)
{
        if (s->fd < 0)
                return STOA_E_FORKED;
        return ofd_lock(s->fd, F_OFD_SETLK, F_UNLCK, byte, NULL);
}

int seg_lock_held_by_other(const struct seg *s, uint64_t byte)
{
        struct flock fl = { .l_type = F_UNLCK };
        int r;

        if (s->fd < 0)
                return STOA_E_FORKED;
        r = ofd_lock(s->fd, F_OFD_GETLK, F_WRLCK, byte, &fl);
        if (r < 0)
                return r;
        return fl.l_type != F_UNLCK;
}

static int fd_lock_held_by_other(int fd, uint64_t byte)
{
        struct flock fl = { .l_type = F_UNLCK };
        int r = ofd_lock(fd, F_OFD_GETLK, F_WRLCK, byte, &fl);

        return r < 0 ? r : fl.l_type != F_UNLCK;
}

/* ---- header -------------------------------------------------------------- */

uint64_t seg_header_checksum(const struct seg_header *h)
{
        struct seg_header copy;
        const uint8_t *p = (const uint8_t *)&copy;
        uint64_t x = 0xcbf29ce484222325ull;

        memcpy(&copy, h, sizeof(copy));
        copy.checksum = 0;
        atomic_store_explicit(&copy.state, 0, memory_order_relaxed);
        for (size_t i = 0; i < offsetof(struct seg_header, reserved); i++) {
                x ^= p[i];
                x *= 0x100000001b3ull;
        }
        return x;
}

/*
 * Check a header read with pread. `fsize` is the file's size. Returns 0,
 * -EAGAIN for "INIT, creator still alive", or a STOA_E_* code.
 */
static int header_check(const struct seg_header *h, uint64_t fsize, int fd,
                        const char *what)
{
        /* Whatever bytes there are: a file that is not ours is foreign, short or not. */
        if (fsize >= sizeof(h->magic) && memcmp(h->magic, SEG_MAGIC, sizeof(h->magic)) != 0) {
                seg_set_errdetail("%s: not a stoa segment (no STOASEG magic)", what);
                return STOA_E_FOREIGN;
        }
        if (fsize < SEG_HEADER_SIZE) {
                seg_set_errdetail("%s: %llu bytes, shorter than a segment header (%u)",
                                  what, (unsigned long long)fsize, SEG_HEADER_SIZE);
                return STOA_E_TRUNCATED;
        }
        if (h->version != SEG_VERSION || h->header_size != SEG_HEADER_SIZE) {
                seg_set_errdetail("%s: segment format version %u, this library reads version %u",
                                  what, h->version, SEG_VERSION);
                return STOA_E_VERSION;
        }
        uint32_t st = atomic_load_explicit(&h->state, memory_order_acquire);
        if (st == SEG_STATE_INIT) {
                int held = fd < 0 ? 0 : fd_lock_held_by_other(fd, SEG_LOCK_INIT);
                if (held > 0)
                        return -EAGAIN;
                seg_set_errdetail("%s: half-initialised; its creator (pid %u on %s) died "
                                  "before finishing it; remove the file and create it again",
                                  what, h->creator_pid, h->creator_host);
                return STOA_E_HALFINIT;
        }
        if (st != SEG_STATE_READY || seg_header_checksum(h) != h->checksum) {
                seg_set_errdetail("%s: header is corrupt (state %#x, checksum mismatch)", what, st);
                return STOA_E_CORRUPT;
        }
        if (h->nregions > SEG_MAX_REGIONS || h->total_size < SEG_HEADER_SIZE) {
                seg_set_errdetail("%s: header is corrupt (%u regions)", what, h->nregions);
                return STOA_E_CORRUPT;
        }
        uint64_t prev_end = SEG_HEADER_SIZE;
        for (uint32_t i = 0; i < h->nregions; i++) {
                const struct seg_region *r = &h->regions[i];
                /* Every layout aligns regions to 64 at least; the layers read them as structs. */
                if (r->off < prev_end || r->off % 64 != 0 || r->off + r->size < r->off ||
                    r->off + r->size > h->total_size) {
                        seg_set_errdetail("%s: region %u [%llu, +%llu) lies outside the segment "
                                          "or overlaps another", what, i,
                                          (unsigned long long)r->off, (unsigned long long)r->size);
                        return STOA_E_CORRUPT;
                }
                prev_end = r->off + r->size;
        }
        if (fsize < h->total_size) {
                seg_set_errdetail("%s: file is %llu bytes, header says %llu", what,
                                  (unsigned long long)fsize, (unsigned long long)h->total_size);
                return STOA_E_TRUNCATED;
        }
        return 0;
}

static void fill_identity(struct seg_header *h)
{
        struct utsname u;
        struct stat st;
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        h->created_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        h->creator_pid = (uint32_t)getpid();
        h->creator_uid = (uint32_t)geteuid();
        h->creator_gid = (uint32_t)getegid();
        if (stat("/proc/self/ns/pid", &st) == 0)
                h->creator_pidns = st.st_ino;
        if (uname(&u) == 0)
                memcpy(h->creator_host, u.nodename, sizeof(h->creator_host) - 1);
        prctl(PR_GET_NAME, h->creator_comm, 0, 0, 0);
        h->creator_comm[sizeof(h->creator_comm) - 1] = 0;
}

/* ---- mapping ------------------------------------------------------------- */

static struct seg *seg_alloc(void)
{
        struct seg *s = calloc(1, sizeof(*s));

        if (!s)
                return NULL;
        s->fd = -1;
        pthread_mutex_init(&s->slot_mu, NULL);
        return s;
}

static void seg_free(struct seg *s)
{
        if (s->base)
                munmap(s->base, s->size);
        if (s->fd >= 0)
                close(s->fd);
        pthread_mutex_destroy(&s->slot_mu);
        free(s->held_slots);
        free(s->path);
        free(s);
}

void seg_close(struct seg *s)
{
        if (!s)
                return;
        open_list_del(s);
        seg_free(s);
}

/* Validate the header of an open fd and map it. Takes ownership of fd. */
static int attach_fd_owned(struct seg **ret, int fd, const char *what, unsigned flags)
{
        struct seg_header h;
        struct stat st;
        struct seg *s;
        int r, waited = 0;
        bool ro = flags & SEG_OPEN_RDONLY;

        for (;;) {
                if (fstat(fd, &st) != 0) {
                        r = -errno;
                        goto err_close;
                }
                memset(&h, 0, sizeof(h));
                ssize_t n = pread(fd, &h, sizeof(h), 0);
                if (n < 0) {
                        r = -errno;
                        seg_set_errdetail("%s: read: %s", what, strerror(errno));
                        goto err_close;
                }
                r = header_check(&h, (uint64_t)st.st_size, fd, what);
                if (r != -EAGAIN)
                        break;
                if (waited >= HALFINIT_WAIT_MS) {
                        seg_set_errdetail("%s: still being initialised by pid %u after %d ms",
                                          what, h.creator_pid, HALFINIT_WAIT_MS);
                        r = -ETIMEDOUT;
                        break;
                }
                usleep(10000);
                waited += 10;
        }
        if (r < 0)
                goto err_close;

        s = seg_alloc();
        if (!s) {
                r = -ENOMEM;
                goto err_close;
        }
        s->fd = fd;
        s->readonly = ro;
        s->size = h.total_size;
        s->base = mmap(NULL, s->size, ro ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (s->base == MAP_FAILED) {
                r = -errno;
                seg_set_errdetail("%s: mmap of %llu bytes: %s", what,
                                  (unsigned long long)s->size, strerror(errno));
                s->base = NULL;
                s->fd = -1;
                seg_free(s);
                goto err_close;
        }
        s->hdr = (struct seg_header *)s->base;
        s->backing = (enum seg_backing)h.backing;
        s->page_size = h.page_size;
        s->dev = (uint64_t)st.st_dev;
        s->ino = (uint64_t)st.st_ino;
        open_list_add(s);
        *ret = s;
        return 0;

err_close:
        close(fd);
        return r;
}

int seg_attach_fd(struct seg **ret, int fd, unsigned flags)
{
        char proc[64];
        int own;

        if (!ret || fd < 0)
                return -EINVAL;
        /*
         * Reopen through /proc so this process has its own open file
         * description: OFD locks (slot liveness) must not be shared with the
         * process that sent us the fd.
         */
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
        own = open(proc, ((flags & SEG_OPEN_RDONLY) ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (own < 0) {
                seg_set_errdetail("cannot reopen fd %d through /proc: %s", fd, strerror(errno));
                return -errno;
        }
        return attach_fd_owned(ret, own, "segment fd", flags);
}

static int attach_path(struct seg **ret, const char *path, unsigned flags)
{
        int fd, r;
        struct seg *s;

        fd = open(path, ((flags & SEG_OPEN_RDONLY) ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (fd < 0) {
                struct stat st;
                r = -errno;
                if (r == -EACCES && stat(path, &st) == 0)
                        seg_set_errdetail("%s: permission denied: needs %s access; the file is "
                                          "mode %04o, owner uid %u, group gid %u, and this is "
                                          "uid %u", path,
                                          (flags & SEG_OPEN_RDONLY) ? "read" : "read-write",
                                          (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
                                          (unsigned)st.st_gid, (unsigned)geteuid());
                else if (r == -EACCES)
                        seg_set_errdetail("%s: permission denied: needs %s access to the file "
                                          "and search access to its directory", path,
                                          (flags & SEG_OPEN_RDONLY) ? "read" : "read-write");
                else
                        seg_set_errdetail("%s: %s", path, strerror(errno));
                return r;
        }
        r = attach_fd_owned(&s, fd, path, flags);
        if (r < 0)
                return r;
        s->path = strdup(path);
        *ret = s;
        return 0;
}

/* ---- creation ------------------------------------------------------------ */

static uint64_t round_up(uint64_t x, uint64_t a)
{
        return (x + a - 1) & ~(a - 1);
}

int seg_bind_node(struct seg *s, uint64_t off, uint64_t len, int node)
{
        unsigned long mask[16] = { 0 };
        long maxnode = (long)(sizeof(mask) * 8);

        if (node < 0 || node >= maxnode) {
                seg_set_errdetail("NUMA node %d does not exist", node);
                return -EINVAL;
        }
        mask[node / (8 * sizeof(long))] |= 1ul << (node % (8 * sizeof(long)));
        if (mbind(s->base + off, len, MPOL_BIND, mask, (unsigned long)maxnode, 0) != 0) {
                int e = errno;
                if (e == EINVAL)
                        seg_set_errdetail("mbind to NUMA node %d: no such node on this host", node);
                else
                        seg_set_errdetail("mbind to NUMA node %d: %s", node, strerror(e));
                return -e;
        }
        return 0;
}

static int lay_out(struct seg *s, const struct seg_config *cfg)
{
        struct seg_layout lo;
        struct seg_header *h = s->hdr;
        uint64_t off = SEG_HEADER_SIZE;
        int r;

        memset(&lo, 0, sizeof(lo));
        if (cfg->layout) {
                r = cfg->layout(s->size, &lo, cfg->arg);
                if (r < 0)
                        return r;
        }
        if (lo.n > SEG_MAX_REGIONS)
                return -E2BIG;
        for (unsigned i = 0; i < lo.n; i++) {
                uint64_t a = lo.r[i].align < 64 ? 64 : lo.r[i].align;
                off = round_up(off, a);
                if (off + lo.r[i].size > s->size || off + lo.r[i].size < off) {
                        seg_set_errdetail("segment of %llu bytes is too small for its layout",
                                          (unsigned long long)s->size);
                        return -ENOSPC;
                }
                h->regions[i] = (struct seg_region){
                        .kind = lo.r[i].kind, .node = lo.r[i].node,
                        .off = off, .size = lo.r[i].size,
                };
                off += lo.r[i].size;
        }
        h->nregions = lo.n;
        return 0;
}

/* Fault every page in now, so a shortage is an error here, not a SIGBUS later. */
static int prefault(struct seg *s)
{
        if (madvise(s->base, s->size, MADV_POPULATE_WRITE) == 0)
                return 0;
        if (errno != EINVAL) {
                seg_set_errdetail("cannot pre-fault %llu bytes of %s memory: %s",
                                  (unsigned long long)s->size, seg_backing_name(s->backing),
                                  strerror(errno));
                return errno == EFAULT || errno == EHWPOISON ? -ENOMEM : -errno;
        }
        /* Kernel before 5.14: reserve with fallocate, then touch. */
        int r = posix_fallocate(s->fd, 0, (off_t)s->size);
        if (r != 0) {
                seg_set_errdetail("cannot allocate %llu bytes: %s",
                                  (unsigned long long)s->size, strerror(r));
                return -r;
        }
        for (uint64_t o = 0; o < s->size; o += s->page_size)
                ((volatile uint8_t *)s->base)[o] = 0;
        return 0;
}

/*
 * Build a segment on `fd` (already sized 0, locked for init): size, map,
 * place, fault in, lay out, let the upper layers initialise. On success the
 * segment is READY but not yet published under its name.
 */
static int build_on_fd(struct seg **ret, int fd, enum seg_backing backing,
                       uint64_t page_size, const struct seg_config *cfg, uint32_t flags)
{
        struct seg *s = seg_alloc();
        int r;

        if (!s)
                return -ENOMEM;
        s->fd = fd;
        s->backing = backing;
        s->page_size = page_size;
        s->created = true;
        s->size = round_up(cfg->size < (4u << 20) ? (4u << 20) : cfg->size, page_size);
        if (ftruncate(fd, (off_t)s->size) != 0) {
                r = -errno;
                seg_set_errdetail("cannot size segment to %llu bytes: %s",
                                  (unsigned long long)s->size, strerror(errno));
                goto err;
        }
        s->base = mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (s->base == MAP_FAILED) {
                r = -errno;
                s->base = NULL;
                seg_set_errdetail("cannot map %llu bytes of %s: %s",
                                  (unsigned long long)s->size, seg_backing_name(backing),
                                  strerror(errno));
                goto err;
        }
        s->hdr = (struct seg_header *)s->base;
        /* Lay out into the (still unfaulted) header page, then place regions. */
        r = lay_out(s, cfg);
        if (r < 0)
                goto err;
        for (uint32_t i = 0; i < s->hdr->nregions; i++) {
                const struct seg_region *rg = &s->hdr->regions[i];
                if (rg->node < 0 || rg->size == 0)
                        continue;
                uint64_t lo = rg->off & ~(page_size - 1);
                uint64_t hi = round_up(rg->off + rg->size, page_size);
                r = seg_bind_node(s, lo, hi - lo, rg->node);
                if (r < 0)
                        goto err;
        }
        r = prefault(s);
        if (r < 0)
                goto err;
        if (backing == SEG_BACK_SHMEM)
                madvise(s->base, s->size, MADV_HUGEPAGE);  /* best effort */

        struct seg_header *h = s->hdr;
        memcpy(h->magic, SEG_MAGIC, sizeof(h->magic));
        h->version = SEG_VERSION;
        h->header_size = SEG_HEADER_SIZE;
        h->total_size = s->size;
        h->page_size = page_size;
        h->backing = backing;
        h->flags = flags;
        fill_identity(h);
        atomic_store_explicit(&h->state, SEG_STATE_INIT, memory_order_relaxed);
        if (cfg->init) {
                r = cfg->init(s, cfg->arg);
                if (r < 0)
                        goto err;
        }
        h->checksum = seg_header_checksum(h);
        atomic_store_explicit(&h->state, SEG_STATE_READY, memory_order_release);
        *ret = s;
        return 0;
err:
        s->fd = -1;     /* the caller owns fd */
        seg_free(s);
        return r;
}

/* Delete temporary files left in `dir` by creators of `base` that died. */
static void clean_stale_tmp(const char *dir, const char *base)
{
        DIR *d = opendir(dir);
        struct dirent *e;
        size_t bl = strlen(base);
        time_t now = time(NULL);

        if (!d)
                return;
        while ((e = readdir(d))) {
                const char *n = e->d_name;
                size_t nl = strlen(n);
                if (n[0] != '.' || strncmp(n + 1, base, bl) != 0 || n[1 + bl] != '.' ||
                    nl < 4 || strcmp(n + nl - 4, ".tmp") != 0)
                        continue;
                int fd = openat(dirfd(d), n, O_RDWR | O_CLOEXEC);
                struct stat st;
                if (fd < 0)
                        continue;
                if (fstat(fd, &st) == 0 && now - st.st_ctime >= STALE_TMP_AGE_S &&
                    fd_lock_held_by_other(fd, SEG_LOCK_INIT) == 0)
                        unlinkat(dirfd(d), n, 0);
                close(fd);
        }
        closedir(d);
}

static int create_in_dir(struct seg **ret, const char *dir, const char *base,
                         enum seg_backing backing, uint64_t page_size,
                         const struct seg_config *cfg)
{
        char tmp[PATH_MAX], final[PATH_MAX];
        struct seg *s;
        int fd, r;
        mode_t mode = cfg->mode ? cfg->mode : 0600;

        snprintf(final, sizeof(final), "%s/%s", dir, base);
        clean_stale_tmp(dir, base);
        snprintf(tmp, sizeof(tmp), "%s/.%s.%d.%08lx.tmp", dir, base, (int)getpid(),
                 (unsigned long)random());
        fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (fd < 0) {
                r = -errno;
                if (r == -EACCES)
                        seg_set_errdetail("cannot create %s: permission denied: needs write "
                                          "access to the directory %s", final, dir);
                else
                        seg_set_errdetail("cannot create %s: %s", final, strerror(errno));
                return r;
        }
        r = ofd_lock(fd, F_OFD_SETLK, F_WRLCK, SEG_LOCK_INIT, NULL);
        if (r == 0 && fchmod(fd, mode) != 0)
                r = -errno;
        if (r == 0 && cfg->gid >= 0 && fchown(fd, (uid_t)-1, (gid_t)cfg->gid) != 0) {
                r = -errno;
                seg_set_errdetail("cannot give %s to group %lld: %s", final,
                                  (long long)cfg->gid, strerror(errno));
        }
        if (r < 0)
                goto err_unlink;
        r = build_on_fd(&s, fd, backing, page_size, cfg, 0);
        if (r < 0)
                goto err_unlink;
        /* Publish: atomic, and never replaces a segment another creator published. */
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_NOREPLACE) != 0) {
                r = -errno;
                if (r == -EINVAL && link(tmp, final) == 0) {
                        unlink(tmp);
                        r = 0;
                }
                if (r < 0) {
                        seg_free(s);    /* closes fd */
                        unlink(tmp);
                        if (r == -EEXIST)
                                return -EEXIST;     /* lost the race: attach */
                        seg_set_errdetail("cannot publish %s: %s", final, strerror(-r));
                        return r;
                }
        }
        ofd_lock(fd, F_OFD_SETLK, F_UNLCK, SEG_LOCK_INIT, NULL);
        struct stat st;
        if (fstat(fd, &st) == 0) {
                s->dev = (uint64_t)st.st_dev;
                s->ino = (uint64_t)st.st_ino;
        }
        s->path = strdup(final);
        open_list_add(s);
        *ret = s;
        return 0;

err_unlink:
        unlink(tmp);
        close(fd);
        return r;
}

static int create_named(struct seg **ret, const char *name, const struct seg_config *cfg)
{
        struct dirlist dl;
        const char *base = name;
        int r = -ENOENT;

        if (name_is_bare(name)) {
                bare_dirs(&dl);
        } else {
                dl.n = 1;
                r = split_path(name, dl.dir[0], PATH_MAX, &base);
                if (r < 0)
                        return r;
                dl.huge[0] = dir_is_hugetlbfs(dl.dir[0]);
        }
        bool tried_huge = false;
        for (unsigned i = 0; i < dl.n; i++) {
                bool huge = dl.huge[i];
                if (huge && cfg->huge == SEG_HUGE_REFUSE)
                        continue;
                if (!huge && cfg->huge == SEG_HUGE_REQUIRE)
                        continue;
                if (name_is_bare(name)) {
                        r = ensure_dir(dl.dir[i]);
                        if (r < 0)
                                continue;
                }
                r = create_in_dir(ret, dl.dir[i], base, huge ? SEG_BACK_HUGETLB : dir_backing(dl.dir[i]),
                                  huge ? SEG_HUGE_2M : 4096, cfg);
                if (r == 0 || r == -EEXIST || r == -EACCES || r == -EINVAL)
                        return r;
                if (huge) {
                        tried_huge = true;
                        continue;       /* not enough hugepages there: next candidate */
                }
                return r;
        }
        if (cfg->huge == SEG_HUGE_REQUIRE) {
                if (!tried_huge)
                        seg_set_errdetail("hugepages required, but no hugetlbfs directory for '%s'%s",
                                          name, name_is_bare(name) ? " (mount hugetlbfs or set STOA_DIR)" : "");
                return STOA_E_NOHUGE;
        }
        return r;
}

int seg_open(struct seg **ret, const char *name, const struct seg_config *cfg, unsigned flags)
{
        char path[PATH_MAX];
        int r;

        if (!ret || !name || !*name) {
                seg_set_errdetail("no segment name");
                return -EINVAL;
        }
        if (name_is_bare(name) && (r = check_bare_name(name)) < 0)
                return r;
        if (flags & SEG_OPEN_RDONLY)
                flags |= SEG_OPEN_NOCREATE;
        if (!cfg && !(flags & SEG_OPEN_NOCREATE))
                return -EINVAL;
        for (int attempt = 0; attempt < 8; attempt++) {
                if (!(flags & SEG_OPEN_EXCL)) {
                        r = seg_find(name, path, sizeof(path));
                        if (r == 0) {
                                r = attach_path(ret, path, flags);
                                if (r != -ENOENT)
                                        return r;
                        } else if (r != -ENOENT) {
                                return r;
                        }
                        if (flags & SEG_OPEN_NOCREATE)
                                return -ENOENT;
                }
                r = create_named(ret, name, cfg);
                if (r != -EEXIST || (flags & SEG_OPEN_EXCL))
                        return r;
                /* Another creator published first: attach to theirs. */
        }
        return r;
}

int seg_create_anon(struct seg **ret, const struct seg_config *cfg)
{
        struct seg *s;
        int r = -EINVAL;

        if (!ret || !cfg)
                return -EINVAL;
        for (int pass = 0; pass < 2; pass++) {
                bool huge = pass == 0;
                if (huge && cfg->huge == SEG_HUGE_REFUSE)
                        continue;
                if (!huge && cfg->huge == SEG_HUGE_REQUIRE)
                        break;
                unsigned mf = MFD_CLOEXEC | MFD_ALLOW_SEALING | (huge ? MFD_HUGETLB | MFD_HUGE_2MB : 0);
                int fd = memfd_create("stoa", mf);
                if (fd < 0) {
                        r = -errno;
                        seg_set_errdetail("memfd_create: %s", strerror(errno));
                        continue;
                }
                r = build_on_fd(&s, fd, huge ? SEG_BACK_HUGETLB : SEG_BACK_SHMEM,
                                huge ? SEG_HUGE_2M : 4096, cfg, SEG_F_MEMFD);
                if (r < 0) {
                        close(fd);
                        continue;
                }
                if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
                        r = -errno;
                        seg_set_errdetail("cannot seal memfd: %s", strerror(errno));
                        seg_free(s);
                        return r;
                }
                open_list_add(s);
                *ret = s;
                return 0;
        }
        if (cfg->huge == SEG_HUGE_REQUIRE)
                return STOA_E_NOHUGE;
        return r;
}

int seg_check_removed(struct seg *s)
{
        struct stat fst, pst;

        if (!s->path || s->fd < 0 || fstat(s->fd, &fst) != 0)
                return 0;
        if (fst.st_nlink == 0) {
                seg_set_errdetail("%s: the segment file was removed while in use", s->path);
                return 1;
        }
        if (stat(s->path, &pst) != 0)
                return 0;       /* linked elsewhere (renamed), or the path is unreadable */
        if ((uint64_t)pst.st_dev != s->dev || (uint64_t)pst.st_ino != s->ino) {
                seg_set_errdetail("%s: the name now holds another file than the one mapped",
                                  s->path);
                return 1;
        }
        return 0;
}

int seg_supervise(struct seg *s, struct seg_super *ret_other)
{
        struct seg_super *sup = &s->hdr->super;
        struct timespec ts;
        struct utsname u;
        struct stat st;
        int r;

        if (s->readonly)
                return -EROFS;
        r = seg_lock_try(s, SEG_LOCK_SUPER);
        if (r == -EAGAIN) {
                /* The holder writes its record just after it takes the lock. */
                for (int i = 0; i < 50 && !atomic_load_explicit(&sup->pid, memory_order_acquire); i++)
                        usleep(2000);
                uint32_t pid = atomic_load_explicit(&sup->pid, memory_order_acquire);
                atomic_store_explicit(&ret_other->pid, pid, memory_order_relaxed);
                ret_other->uid = sup->uid;
                ret_other->pidns = sup->pidns;
                ret_other->since_ns = sup->since_ns;
                memcpy(ret_other->comm, sup->comm, sizeof(sup->comm));
                memcpy(ret_other->host, sup->host, sizeof(sup->host));
                ret_other->comm[sizeof(sup->comm) - 1] = 0;
                ret_other->host[sizeof(sup->host) - 1] = 0;
                return -EBUSY;
        }
        if (r < 0)
                return r;
        /* Ours now: whatever record is there is a dead supervisor's. */
        atomic_store_explicit(&sup->pid, 0, memory_order_relaxed);
        sup->uid = (uint32_t)geteuid();
        sup->pidns = stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
        clock_gettime(CLOCK_REALTIME, &ts);
        sup->since_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        memset(sup->comm, 0, sizeof(sup->comm));
        prctl(PR_GET_NAME, sup->comm, 0, 0, 0);
        sup->comm[sizeof(sup->comm) - 1] = 0;
        memset(sup->host, 0, sizeof(sup->host));
        if (uname(&u) == 0)
                memcpy(sup->host, u.nodename, sizeof(sup->host) - 1);
        atomic_store_explicit(&sup->pid, (uint32_t)getpid(), memory_order_release);
        return 0;
}

void seg_unsupervise(struct seg *s)
{
        if (s->readonly || s->fd < 0 || seg_lock_held_by_other(s, SEG_LOCK_SUPER) != 0)
                return;
        if (atomic_load_explicit(&s->hdr->super.pid, memory_order_relaxed) == (uint32_t)getpid())
                atomic_store_explicit(&s->hdr->super.pid, 0, memory_order_release);
        seg_lock_release(s, SEG_LOCK_SUPER);
}

int seg_unlink(const char *name)
{
        char path[PATH_MAX];
        int r = seg_find(name, path, sizeof(path));

        if (r < 0)
                return r;
        return unlink(path) == 0 ? 0 : -errno;
}

const struct seg_region *seg_region(const struct seg *s, uint32_t kind, unsigned nth)
{
        for (uint32_t i = 0; i < s->hdr->nregions; i++) {
                if (s->hdr->regions[i].kind == kind && nth-- == 0)
                        return &s->hdr->regions[i];
        }
        return NULL;
}
