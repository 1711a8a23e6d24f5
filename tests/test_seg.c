/*
 * tests/test_seg.c: the segment layer (shm/seg, shm/slots) through its real
 * entry points.
 *
 * Every case runs in a process of its own (fork_case), so a crash, a SIGBUS or
 * a hang in one case is reported as that case's failure and cannot hide the
 * others. Inside that process cmocka's asserts would longjmp into the forked
 * copy of the runner, so cases check with CHECK*, which print and exit.
 * Each case gets its own directory under /dev/shm, exported as STOA_DIR and
 * removed by the runner after the case process is gone, whatever it did.
 *
 * No check depends on how long something took. The only waits are for the
 * code's own 2 s rules (stale temporary files, a live creator's init lock).
 */
#include "cache/cache.h"
#include "client/core.h"
#include "shm/seg.h"
#include "shm/slots.h"
#include "stoa/stoa.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <numaif.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/magic.h>

#include <cmocka.h>

#define SEG_SIZE        (16ull << 20)
#define CASE_SKIP       77
#define CASE_ALARM_S    25
#define NOBODY          65534
#define TEST_GROUP      4242    /* a gid no test user has by accident */
#define NPROCS          8

/* ---- checks inside a case process ---------------------------------------- */

__attribute__((noreturn, format(printf, 3, 4)))
static void die(const char *file, int line, const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "[pid %d] %s:%d: ", (int)getpid(), file, line);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\n    seg_errdetail: %s\n", seg_errdetail());
        _exit(1);
}

#define CHECK(c) do { \
        if (!(c)) die(__FILE__, __LINE__, "check failed: %s", #c); } while (0)
#define CHECK_INT(a, op, b) do { \
        long long a_ = (long long)(a), b_ = (long long)(b); \
        if (!(a_ op b_)) \
                die(__FILE__, __LINE__, "check failed: %s %s %s (%lld vs %lld)", \
                    #a, #op, #b, a_, b_); } while (0)
#define CHECK_ERR(expr, want) do { \
        long long r_ = (long long)(expr), w_ = (long long)(want); \
        if (r_ != w_) \
                die(__FILE__, __LINE__, "%s returned %lld (%s), wanted %s = %lld", \
                    #expr, r_, stoa_strerror((int)r_), #want, w_); } while (0)
#define CHECK_HAS(str, sub) do { \
        const char *s_ = (str); \
        if (!s_ || !strstr(s_, (sub))) \
                die(__FILE__, __LINE__, "'%s' does not contain '%s'", s_ ? s_ : "(null)", sub); \
        } while (0)
#define CHECK_SYS(expr) do { \
        if ((expr) < 0) die(__FILE__, __LINE__, "%s: %s", #expr, strerror(errno)); } while (0)

__attribute__((noreturn, format(printf, 1, 2)))
static void case_skip(const char *fmt, ...)
{
        va_list ap;

        printf("    skipped: ");
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
        fflush(stdout);
        _exit(CASE_SKIP);
}

/* ---- per-case context, and the runner side ------------------------------- */

struct tctx {
        char dir[256];
        char huge_dir[300];     /* a hugetlbfs mount, or "" */
};

static int setup(void **state)
{
        struct tctx *t = calloc(1, sizeof(*t));

        if (!t)
                return -1;
        snprintf(t->dir, sizeof(t->dir), "/dev/shm/stoa-test-seg-XXXXXX");
        if (!mkdtemp(t->dir)) {
                free(t);
                return -1;
        }
        chmod(t->dir, 0755);    /* other users must reach files whose mode says so */
        setenv("STOA_DIR", t->dir, 1);
        *state = t;
        return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)flag;
        (void)ftw;
        remove(path);
        return 0;
}

static int teardown(void **state)
{
        struct tctx *t = *state;

        if (t->huge_dir[0])
                umount2(t->huge_dir, MNT_DETACH);
        nftw(t->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
        unsetenv("STOA_DIR");
        free(t);
        return 0;
}

typedef void (*case_fn)(struct tctx *t);

/* Run `fn` in a process of its own; return its wait status. */
static int fork_case(struct tctx *t, case_fn fn)
{
        static const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGALRM };
        int st;
        pid_t pid;

        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid < 0)
                return -1;
        if (pid == 0) {
                setpgid(0, 0);  /* its helpers share its group, to be killed with it */
                /* cmocka's handlers would longjmp into the runner's copy. */
                for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
                        signal(sigs[i], SIG_DFL);
                alarm(CASE_ALARM_S);
                fn(t);
                fflush(stdout);
                exit(0);        /* exit, not _exit: the sanitizer checks leaks here */
        }
        setpgid(pid, pid);
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        /* A failed case may leave helpers blocked for ever: end them with it. */
        kill(-pid, SIGKILL);
        return st;
}

static void check_case_status(int st)
{
        if (st == -1)
                fail_msg("fork: %s", strerror(errno));
        if (WIFSIGNALED(st))
                fail_msg("case process killed by signal %d (%s)", WTERMSIG(st),
                         strsignal(WTERMSIG(st)));
        if (WIFEXITED(st) && WEXITSTATUS(st) == CASE_SKIP)
                skip();
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
}

#define CASE(fn) \
        static void test_##fn(void **state) { check_case_status(fork_case(*state, fn)); }

/* ---- helpers used by the cases -------------------------------------------- */

static void test_cfg(struct core_config *cfg)
{
        core_config_default(cfg);
        cfg->size = SEG_SIZE;
        cfg->nslots = 16;
        cfg->huge = SEG_HUGE_REFUSE;
}

static void path_in(const struct tctx *t, const char *name, char *buf, size_t len)
{
        snprintf(buf, len, "%s/%s", t->dir, name);
}

static uint8_t *heap_at(const struct core *c, uint64_t off)
{
        const struct seg_region *h = seg_region(c->seg, SEG_REGION_HEAP, 0);

        CHECK(h != NULL);
        CHECK_INT(off, <, h->size);
        return seg_ptr(c->seg, h->off + off);
}

static void write_file(const char *path, const void *buf, size_t len, mode_t mode)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

        CHECK_SYS(fd);
        CHECK_INT(write(fd, buf, len), ==, (long long)len);
        close(fd);
}

static void read_header(const char *path, struct seg_header *h)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        CHECK_SYS(fd);
        CHECK_INT(pread(fd, h, sizeof(*h), 0), ==, (long long)sizeof(*h));
        close(fd);
}

static void patch_file(const char *path, uint64_t off, const void *buf, size_t len)
{
        int fd = open(path, O_WRONLY | O_CLOEXEC);

        CHECK_SYS(fd);
        CHECK_INT(pwrite(fd, buf, len, (off_t)off), ==, (long long)len);
        close(fd);
}

/* Create the named segment at `path`, fully, and close it again. */
static void make_segment(const char *path)
{
        struct core_config cfg;
        struct core *c;

        test_cfg(&cfg);
        CHECK_ERR(core_open(&c, path, &cfg), 0);
        CHECK(c->seg->created);
        core_close(c);
}

/* Count files in `dir` whose name starts with '.' and ends in ".tmp". */
static int count_tmp(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *e;
        int n = 0;

        CHECK(d != NULL);
        while ((e = readdir(d))) {
                size_t l = strlen(e->d_name);
                n += e->d_name[0] == '.' && l > 4 && strcmp(e->d_name + l - 4, ".tmp") == 0;
        }
        closedir(d);
        return n;
}

static void read_full(int fd, void *buf, size_t len)
{
        size_t got = 0;

        while (got < len) {
                ssize_t n = read(fd, (char *)buf + got, len - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        die(__FILE__, __LINE__, "short read from a child (%zd): it died early?", n);
                got += (size_t)n;
        }
}

/* Wait for `pid`; it must have exited with 0. */
static void reap_ok(pid_t pid)
{
        int st;

        CHECK_SYS(waitpid(pid, &st, 0));
        if (WIFSIGNALED(st))
                die(__FILE__, __LINE__, "child %d killed by signal %d", (int)pid, WTERMSIG(st));
        CHECK_INT(WEXITSTATUS(st), ==, 0);
}

static void kill_reap(pid_t pid)
{
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
}

/*
 * A child forked while `c` is open: its copy of the handle refuses use, but
 * the mapping still shows the segment (remapped through its own description).
 */
static void check_fork_view(struct core *c, uint64_t off, const void *want, size_t len)
{
        pid_t pid = fork();

        CHECK_SYS(pid);
        if (pid == 0) {
                struct core_thread th;
                CHECK(c->seg->forked);
                CHECK_INT(c->seg->fd, ==, -1);
                CHECK_ERR(core_thread_enter(c, &th), STOA_E_FORKED);
                CHECK(memcmp(c->seg->hdr->magic, SEG_MAGIC, 8) == 0);
                CHECK(memcmp(heap_at(c, off), want, len) == 0);
                _exit(0);
        }
        reap_ok(pid);
}

/* ---- 1. create, then attach from a forked child --------------------------- */

static const char pattern[] = "written by the creator";
static const char reply[] = "and answered by the child";

static void create_attach(struct tctx *t)
{
        struct core_config cfg;
        struct core *c, *d;
        char path[PATH_MAX];
        struct stat st;
        pid_t pid;

        test_cfg(&cfg);
        CHECK_ERR(core_open(&d, "absent", NULL), -ENOENT);
        CHECK_ERR(core_open(&c, "seg1", &cfg), 0);
        CHECK(c->seg->created);
        path_in(t, "seg1", path, sizeof(path));
        CHECK(c->seg->path && strcmp(c->seg->path, path) == 0);
        CHECK_SYS(stat(path, &st));

        const struct seg_header *h = c->seg->hdr;
        CHECK(memcmp(h->magic, SEG_MAGIC, 8) == 0);
        CHECK_INT(h->version, ==, SEG_VERSION);
        CHECK_INT(h->header_size, ==, SEG_HEADER_SIZE);
        CHECK_INT(h->total_size, ==, SEG_SIZE);
        CHECK_INT(c->seg->size, ==, SEG_SIZE);
        CHECK_INT(st.st_size, ==, SEG_SIZE);
        CHECK_INT(h->creator_pid, ==, getpid());
        CHECK_INT(h->creator_uid, ==, geteuid());
        CHECK_INT(h->creator_gid, ==, getegid());
        CHECK_INT(atomic_load(&h->state), ==, SEG_STATE_READY);
        CHECK_INT(h->backing, ==, SEG_BACK_SHMEM);
        CHECK_INT(h->page_size, ==, 4096);
        CHECK_INT(h->checksum, ==, seg_header_checksum(h));
        CHECK(seg_region(c->seg, SEG_REGION_SLOTS, 0) != NULL);
        memcpy(heap_at(c, 123457), pattern, sizeof(pattern));
        check_fork_view(c, 123457, pattern, sizeof(pattern));

        pid = fork();
        CHECK_SYS(pid);
        if (pid == 0) {
                /* The inherited handle is dead here; attach afresh by name. */
                CHECK(c->seg->forked);
                CHECK_ERR(core_open(&d, "seg1", NULL), 0);
                CHECK(!d->seg->created);
                CHECK(d->seg->fd >= 0);
                CHECK_INT(d->seg->size, ==, SEG_SIZE);
                CHECK_INT(d->seg->hdr->creator_pid, ==, getppid());
                CHECK_INT(d->seg->hdr->total_size, ==, SEG_SIZE);
                CHECK(memcmp(heap_at(d, 123457), pattern, sizeof(pattern)) == 0);
                memcpy(heap_at(d, 777777), reply, sizeof(reply));
                core_close(d);
                _exit(0);
        }
        reap_ok(pid);
        CHECK(memcmp(heap_at(c, 777777), reply, sizeof(reply)) == 0);
        core_close(c);
}
CASE(create_attach)

/* ---- 2. an anonymous segment, passed by fd ------------------------------- */

static void check_sealed(int fd, uint64_t size)
{
        int seals = fcntl(fd, F_GET_SEALS);

        CHECK_SYS(seals);
        CHECK_INT(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), ==,
                  F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
        CHECK_INT(seals & F_SEAL_WRITE, ==, 0);
        CHECK_INT(ftruncate(fd, (off_t)size / 2), ==, -1);
        CHECK_INT(errno, ==, EPERM);
        CHECK_INT(ftruncate(fd, (off_t)size * 2), ==, -1);
        CHECK_INT(errno, ==, EPERM);
        CHECK_INT(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), ==, -1);
        CHECK_INT(errno, ==, EPERM);
}

static void anon_fd(struct tctx *t)
{
        struct core_config cfg;
        struct core *c;
        int sv[2], garbage[2], fd;
        struct { uint32_t slot, gen; } got;
        char b;
        pid_t pid;

        (void)t;
        CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
        pid = fork();   /* before the memfd exists: the socket is the only way in */
        CHECK_SYS(pid);
        if (pid == 0) {
                struct core *d;
                struct core_thread th;

                close(sv[0]);
                CHECK_ERR(seg_recv_fd(sv[1], &fd), 0);
                CHECK_ERR(core_attach_fd(&d, fd, 0), 0);
                CHECK(d->seg->fd != fd);        /* its own open file description */
                close(fd);                      /* borrowed: ours to close */
                CHECK(!d->seg->created);
                CHECK(d->seg->path == NULL);
                CHECK_INT(d->seg->hdr->flags & SEG_F_MEMFD, ==, SEG_F_MEMFD);
                CHECK_INT(d->seg->backing, ==, SEG_BACK_SHMEM);
                CHECK_INT(d->seg->size, ==, SEG_SIZE);
                check_sealed(d->seg->fd, d->seg->size);
                CHECK(memcmp(heap_at(d, 4242), pattern, sizeof(pattern)) == 0);
                memcpy(heap_at(d, 99999), reply, sizeof(reply));
                CHECK_ERR(core_thread_enter(d, &th), 0);
                got.slot = th.slot;
                got.gen = th.gen;
                CHECK_INT(write(sv[1], &got, sizeof(got)), ==, sizeof(got));
                read_full(sv[1], &b, 1);        /* parent has looked */
                core_thread_leave(&th);
                core_close(d);
                _exit(0);
        }
        close(sv[1]);
        test_cfg(&cfg);
        CHECK_ERR(core_create_anon(&c, &cfg), 0);
        CHECK(c->seg->created);
        CHECK(c->seg->path == NULL);
        CHECK_INT(c->seg->hdr->flags & SEG_F_MEMFD, ==, SEG_F_MEMFD);
        CHECK_INT(c->seg->backing, ==, SEG_BACK_SHMEM);
        check_sealed(c->seg->fd, c->seg->size);
        memcpy(heap_at(c, 4242), pattern, sizeof(pattern));
        check_fork_view(c, 4242, pattern, sizeof(pattern));
        CHECK_ERR(seg_send_fd(sv[0], c->seg), 0);
        read_full(sv[0], &got, sizeof(got));
        CHECK(memcmp(heap_at(c, 99999), reply, sizeof(reply)) == 0);
        /*
         * The child's slot lock must be on a description of its own: had it
         * used ours, our F_OFD_GETLK would see no conflict and call it free.
         */
        CHECK_INT(slot_is_alive(c->seg, got.slot), ==, 1);
        CHECK_INT(slot_is_dead(c->seg, got.slot, got.gen), ==, 0);
        CHECK_INT(write(sv[0], "k", 1), ==, 1);
        reap_ok(pid);
        CHECK_INT(slot_is_alive(c->seg, got.slot), ==, 0);
        close(sv[0]);

        /* Something that is not a segment fd message. */
        CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, garbage));
        CHECK_INT(write(garbage[0], "not-a-fd", 8), ==, 8);
        fd = -1;
        CHECK_ERR(seg_recv_fd(garbage[1], &fd), STOA_E_FOREIGN);
        CHECK_INT(fd, ==, -1);
        close(garbage[0]);
        close(garbage[1]);
        core_close(c);
}
CASE(anon_fd)

/* ---- 3. version mismatch -------------------------------------------------- */

static void version_mismatch(struct tctx *t)
{
        char path[PATH_MAX];
        struct core *c;
        uint32_t v = SEG_VERSION + 1;

        path_in(t, "seg3", path, sizeof(path));
        make_segment(path);
        patch_file(path, offsetof(struct seg_header, version), &v, sizeof(v));
        CHECK_ERR(core_open(&c, path, NULL), STOA_E_VERSION);
        char want[32];
        snprintf(want, sizeof(want), "version %u", SEG_VERSION);
        CHECK_HAS(seg_errdetail(), want);
        CHECK_HAS(seg_errdetail(), path);
        /* By bare name too, and a create request must not replace it. */
        struct core_config cfg;
        test_cfg(&cfg);
        CHECK_ERR(core_open(&c, "seg3", &cfg), STOA_E_VERSION);
        struct seg_header h;
        read_header(path, &h);
        CHECK_INT(h.version, ==, SEG_VERSION + 1);
}
CASE(version_mismatch)

/* ---- 4. truncated files --------------------------------------------------- */

static void truncated(struct tctx *t)
{
        char path[PATH_MAX], small[PATH_MAX], empty[PATH_MAX];
        struct seg_header h;
        struct core *c;

        path_in(t, "seg4", path, sizeof(path));
        path_in(t, "small", small, sizeof(small));
        path_in(t, "empty", empty, sizeof(empty));
        make_segment(path);

        /* (a) the first 100 bytes of a real segment */
        read_header(path, &h);
        write_file(small, &h, 100, 0600);
        CHECK_ERR(core_open(&c, small, NULL), STOA_E_TRUNCATED);
        CHECK_HAS(seg_errdetail(), "100 bytes");
        write_file(empty, "", 0, 0600);
        CHECK_ERR(core_open(&c, empty, NULL), STOA_E_TRUNCATED);

        /* (b) a whole segment cut to half: must be refused, not mapped and SIGBUSed */
        CHECK_SYS(truncate(path, SEG_SIZE / 2));
        CHECK_ERR(core_open(&c, path, NULL), STOA_E_TRUNCATED);
        CHECK_HAS(seg_errdetail(), "header says");
        /* cut to just the header page */
        CHECK_SYS(truncate(path, SEG_HEADER_SIZE));
        CHECK_ERR(core_open(&c, path, NULL), STOA_E_TRUNCATED);
        struct core_config cfg;
        test_cfg(&cfg);
        CHECK_ERR(core_open(&c, "seg4", &cfg), STOA_E_TRUNCATED);
}
CASE(truncated)

/* ---- 5. files that are not segments --------------------------------------- */

static void foreign(struct tctx *t)
{
        char rnd[PATH_MAX], txt[PATH_MAX];
        static uint8_t buf[1 << 20], back[1 << 20];
        char text[8192];
        struct core_config cfg;
        struct core *c;
        size_t n = 0;

        path_in(t, "random", rnd, sizeof(rnd));
        path_in(t, "text", txt, sizeof(txt));
        for (size_t got = 0; got < sizeof(buf);) {
                ssize_t r = getrandom(buf + got, sizeof(buf) - got, 0);
                CHECK_SYS(r);
                got += (size_t)r;
        }
        write_file(rnd, buf, sizeof(buf), 0600);
        while (n + 64 < sizeof(text))
                n += (size_t)snprintf(text + n, sizeof(text) - n,
                                      "line %zu: this is a plain text file\n", n);
        write_file(txt, text, n, 0600);

        CHECK_ERR(core_open(&c, rnd, NULL), STOA_E_FOREIGN);
        CHECK_HAS(seg_errdetail(), "not a stoa segment");
        CHECK_ERR(core_open(&c, txt, NULL), STOA_E_FOREIGN);
        /* Asked to create: still refused, and the file is left as it was. */
        test_cfg(&cfg);
        CHECK_ERR(core_open(&c, rnd, &cfg), STOA_E_FOREIGN);
        CHECK_ERR(core_open(&c, "random", &cfg), STOA_E_FOREIGN);
        int fd = open(rnd, O_RDONLY | O_CLOEXEC);
        CHECK_SYS(fd);
        CHECK_INT(read(fd, back, sizeof(back)), ==, sizeof(back));
        close(fd);
        CHECK(memcmp(buf, back, sizeof(buf)) == 0);
}
CASE(foreign)

/* ---- 6. half-initialised segments and creators that die ------------------- */

static void halfinit_crafted(struct tctx *t)
{
        char good[PATH_MAX], half[PATH_MAX];
        struct seg_header h;
        struct core *c;

        path_in(t, "good", good, sizeof(good));
        path_in(t, "half", half, sizeof(half));
        make_segment(good);
        read_header(good, &h);
        atomic_store(&h.state, SEG_STATE_INIT);         /* and nobody holds the init lock */
        write_file(half, &h, sizeof(h), 0600);
        CHECK_ERR(core_open(&c, half, NULL), STOA_E_HALFINIT);
        CHECK_HAS(seg_errdetail(), "half-initialised");
        /* Full size does not change the verdict. */
        CHECK_SYS(truncate(half, SEG_SIZE));
        CHECK_ERR(core_open(&c, half, NULL), STOA_E_HALFINIT);
}
CASE(halfinit_crafted)

struct blocker {
        int wfd;
};

/* seg_init_fn that tells the test it is inside init, then never returns. */
static int init_blocks(struct seg *s, void *arg)
{
        const struct blocker *b = arg;

        (void)s;
        if (write(b->wfd, "i", 1) != 1)
                _exit(3);
        for (;;)
                pause();
        return 0;
}

/* A process that starts creating `path` and stops inside init. */
static pid_t start_blocked_creator(const char *path)
{
        int p[2];
        char b;
        pid_t pid;

        CHECK_SYS(pipe2(p, O_CLOEXEC));
        pid = fork();
        CHECK_SYS(pid);
        if (pid == 0) {
                struct blocker bl = { p[1] };
                struct seg_config sc = {
                        .size = SEG_SIZE, .huge = SEG_HUGE_REFUSE, .gid = -1,
                        .init = init_blocks, .arg = &bl,
                };
                struct seg *s;
                close(p[0]);
                int r = seg_open(&s, path, &sc, 0);
                fprintf(stderr, "blocked creator: seg_open returned %d\n", r);
                _exit(2);
        }
        close(p[1]);
        read_full(p[0], &b, 1);
        close(p[0]);
        return pid;
}

/* The one .tmp file in `dir` that is not `other`. */
static void find_tmp_except(const char *dir, const char *other, char *buf, size_t len)
{
        DIR *d = opendir(dir);
        struct dirent *e;

        CHECK(d != NULL);
        buf[0] = 0;
        while ((e = readdir(d))) {
                char p[PATH_MAX];
                size_t l = strlen(e->d_name);
                if (e->d_name[0] != '.' || l < 5 || strcmp(e->d_name + l - 4, ".tmp") != 0)
                        continue;
                snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
                if (other && strcmp(p, other) == 0)
                        continue;
                CHECK(buf[0] == 0);
                snprintf(buf, len, "%s", p);
        }
        closedir(d);
        CHECK(buf[0] != 0);
}

static void wait_until_stale(const char *path)
{
        struct stat st;

        CHECK_SYS(stat(path, &st));
        while (time(NULL) - st.st_ctime < 2)
                usleep(50 * 1000);
}

static void creator_killed(struct tctx *t)
{
        char path[PATH_MAX], dead_tmp[PATH_MAX], live_tmp[PATH_MAX];
        struct core_config cfg;
        struct core *c;
        pid_t dead, live, attacher;

        path_in(t, "seg6", path, sizeof(path));
        dead = start_blocked_creator(path);
        find_tmp_except(t->dir, NULL, dead_tmp, sizeof(dead_tmp));
        CHECK_INT(access(path, F_OK), ==, -1);          /* never under the real name */
        live = start_blocked_creator(path);
        find_tmp_except(t->dir, dead_tmp, live_tmp, sizeof(live_tmp));

        /* Attaching while its creator is alive waits for it, and never says HALFINIT. */
        attacher = fork();
        CHECK_SYS(attacher);
        if (attacher == 0) {
                CHECK_ERR(core_open(&c, live_tmp, NULL), -ETIMEDOUT);
                CHECK_HAS(seg_errdetail(), "still being initialised");
                _exit(0);
        }

        kill_reap(dead);
        CHECK_INT(access(path, F_OK), ==, -1);
        CHECK_ERR(core_open(&c, dead_tmp, NULL), STOA_E_HALFINIT);
        CHECK_ERR(core_open(&c, "seg6", NULL), -ENOENT);

        /* Creating again works; a dead creator's old temporary file is removed. */
        wait_until_stale(dead_tmp);
        wait_until_stale(live_tmp);
        test_cfg(&cfg);
        CHECK_ERR(core_open(&c, path, &cfg), 0);
        CHECK(c->seg->created);
        CHECK_INT(access(path, F_OK), ==, 0);
        CHECK_INT(access(dead_tmp, F_OK), ==, -1);
        CHECK_INT(access(live_tmp, F_OK), ==, 0);       /* its init lock is held */
        core_close(c);

        reap_ok(attacher);
        kill_reap(live);
}
CASE(creator_killed)

/* ---- 7. corrupt header ---------------------------------------------------- */

static void corrupt(struct tctx *t)
{
        char path[PATH_MAX];
        struct seg_header h, orig;
        struct core *c;
        uint8_t byte;
        /* regions[1].node: nothing but the checksum can tell this byte is wrong */
        uint64_t off = offsetof(struct seg_header, regions) + sizeof(struct seg_region) +
                       offsetof(struct seg_region, node);

        path_in(t, "seg7", path, sizeof(path));
        make_segment(path);
        read_header(path, &orig);

        /* One flipped bit in the region table. */
        byte = ((uint8_t *)&orig)[off] ^ 0x01;
        patch_file(path, off, &byte, 1);
        CHECK_ERR(core_open(&c, path, NULL), STOA_E_CORRUPT);
        CHECK_HAS(seg_errdetail(), "checksum");

        /* A region that overlaps the previous one, with a valid checksum. */
        h = orig;
        CHECK_INT(h.nregions, >=, 2);
        h.regions[1].off = h.regions[0].off;
        h.checksum = seg_header_checksum(&h);
        patch_file(path, 0, &h, sizeof(h));
        CHECK_ERR(core_open(&c, path, NULL), STOA_E_CORRUPT);
        CHECK_HAS(seg_errdetail(), "region 1");

        /* A region past the end of the segment, with a valid checksum. */
        h = orig;
        h.regions[h.nregions - 1].size = h.total_size;
        h.checksum = seg_header_checksum(&h);
        patch_file(path, 0, &h, sizeof(h));
        CHECK_ERR(core_open(&c, path, NULL), STOA_E_CORRUPT);

        /* A state that is neither INIT nor READY. */
        h = orig;
        atomic_store(&h.state, 0x12345678u);
        patch_file(path, 0, &h, sizeof(h));
        CHECK_ERR(core_open(&c, path, NULL), STOA_E_CORRUPT);

        /* And back as it was: it attaches again. */
        patch_file(path, 0, &orig, sizeof(orig));
        CHECK_ERR(core_open(&c, path, NULL), 0);
        core_close(c);
}
CASE(corrupt)

/* ---- 8. permissions ------------------------------------------------------- */

/* In a child: become nobody with `groups`, then run `fn`; it must succeed. */
static void as_nobody(const gid_t *groups, size_t ngroups, void (*fn)(const char *),
                      const char *path)
{
        pid_t pid = fork();

        CHECK_SYS(pid);
        if (pid == 0) {
                CHECK_SYS(setgroups(ngroups, groups));
                CHECK_SYS(setgid(NOBODY));
                CHECK_SYS(setuid(NOBODY));
                CHECK(geteuid() == NOBODY);
                fn(path);
                _exit(0);
        }
        reap_ok(pid);
}

static void denied_rw(const char *path)
{
        struct core *c;
        struct seg *s;

        CHECK_ERR(core_open(&c, path, NULL), -EACCES);
        CHECK_HAS(seg_errdetail(), "permission denied");
        CHECK_HAS(seg_errdetail(), path);
        CHECK_ERR(seg_open(&s, path, NULL, SEG_OPEN_RDONLY), -EACCES);
}

static void group_rw(const char *path)
{
        struct core *c;
        struct core_thread th;

        CHECK_ERR(core_open(&c, path, NULL), 0);
        CHECK_ERR(core_thread_enter(c, &th), 0);
        memcpy(heap_at(c, 31337), reply, sizeof(reply));
        core_thread_leave(&th);
        core_close(c);
}

static void group_ro(const char *path)
{
        struct seg *s;

        CHECK_ERR(seg_open(&s, path, NULL, SEG_OPEN_NOCREATE), -EACCES);
        CHECK_ERR(seg_open(&s, path, NULL, SEG_OPEN_RDONLY), 0);
        CHECK(s->readonly);
        CHECK_INT(s->hdr->total_size, ==, SEG_SIZE);
        seg_close(s);
}

static void permissions(struct tctx *t)
{
        char p600[PATH_MAX], p660[PATH_MAX], p640[PATH_MAX];
        const gid_t member[] = { TEST_GROUP };
        struct core_config cfg;
        struct core *c;
        struct stat st;

        if (geteuid() != 0)
                case_skip("needs root to switch to uid %d", NOBODY);
        path_in(t, "p600", p600, sizeof(p600));
        path_in(t, "p660", p660, sizeof(p660));
        path_in(t, "p640", p640, sizeof(p640));
        umask(0077);            /* the requested mode must win over the umask */

        test_cfg(&cfg);
        cfg.mode = 0600;
        CHECK_ERR(core_open(&c, p600, &cfg), 0);
        core_close(c);
        CHECK_SYS(stat(p600, &st));
        CHECK_INT(st.st_mode & 07777, ==, 0600);
        as_nobody(NULL, 0, denied_rw, p600);
        as_nobody(member, 1, denied_rw, p600);

        cfg.mode = 0660;
        cfg.gid = TEST_GROUP;
        CHECK_ERR(core_open(&c, p660, &cfg), 0);
        CHECK_SYS(stat(p660, &st));
        CHECK_INT(st.st_mode & 07777, ==, 0660);
        CHECK_INT(st.st_gid, ==, TEST_GROUP);
        as_nobody(member, 1, group_rw, p660);
        CHECK(memcmp(heap_at(c, 31337), reply, sizeof(reply)) == 0);
        as_nobody(NULL, 0, denied_rw, p660);
        core_close(c);

        cfg.mode = 0640;
        CHECK_ERR(core_open(&c, p640, &cfg), 0);
        core_close(c);
        as_nobody(member, 1, group_ro, p640);
}
CASE(permissions)

/* ---- 9. many creators at once --------------------------------------------- */

struct race_report {
        int idx, r, created;
        dev_t dev;
        ino_t ino;
};

static void concurrent_create(struct tctx *t)
{
        int barrier[2], rep[2];
        pid_t pids[NPROCS];
        struct race_report rr[NPROCS];
        struct core_config cfg;
        struct core *c;
        int ncreated = 0;

        test_cfg(&cfg);
        CHECK_SYS(pipe2(barrier, O_CLOEXEC));
        CHECK_SYS(pipe2(rep, O_CLOEXEC));
        for (int i = 0; i < NPROCS; i++) {
                pids[i] = fork();
                CHECK_SYS(pids[i]);
                if (pids[i] == 0) {
                        struct race_report me = { .idx = i };
                        struct stat st;
                        char b;
                        close(barrier[1]);
                        close(rep[0]);
                        CHECK_INT(read(barrier[0], &b, 1), ==, 0);      /* all go at once */
                        me.r = core_open(&c, "race", &cfg);
                        if (me.r == 0) {
                                me.created = c->seg->created;
                                CHECK_SYS(fstat(c->seg->fd, &st));
                                me.dev = st.st_dev;
                                me.ino = st.st_ino;
                                pid_t self = getpid();
                                memcpy(heap_at(c, (uint64_t)i * 64), &self, sizeof(self));
                                core_close(c);
                        }
                        CHECK_INT(write(rep[1], &me, sizeof(me)), ==, sizeof(me));
                        _exit(0);
                }
        }
        close(barrier[0]);
        close(rep[1]);
        close(barrier[1]);      /* release them */
        for (int i = 0; i < NPROCS; i++) {
                struct race_report x;
                read_full(rep[0], &x, sizeof(x));
                CHECK(x.idx >= 0 && x.idx < NPROCS);
                rr[x.idx] = x;
        }
        close(rep[0]);
        for (int i = 0; i < NPROCS; i++)
                reap_ok(pids[i]);
        for (int i = 0; i < NPROCS; i++) {
                if (rr[i].r != 0)
                        die(__FILE__, __LINE__, "process %d: core_open: %s", i,
                            stoa_strerror(rr[i].r));
                ncreated += rr[i].created;
                CHECK_INT(rr[i].ino, ==, rr[0].ino);
                CHECK_INT(rr[i].dev, ==, rr[0].dev);
        }
        CHECK_INT(ncreated, ==, 1);
        CHECK_INT(count_tmp(t->dir), ==, 0);

        CHECK_ERR(core_open(&c, "race", NULL), 0);
        for (int i = 0; i < NPROCS; i++) {
                pid_t p;
                memcpy(&p, heap_at(c, (uint64_t)i * 64), sizeof(p));
                CHECK_INT(p, ==, pids[i]);
        }
        core_close(c);
}
CASE(concurrent_create)

/* ---- 10. hugepages -------------------------------------------------------- */

static long read_long(const char *path)
{
        FILE *f = fopen(path, "re");
        long v = -1;

        if (!f)
                return -1;
        if (fscanf(f, "%ld", &v) != 1)
                v = -1;
        fclose(f);
        return v;
}

static int write_long(const char *path, long v)
{
        FILE *f = fopen(path, "we");
        int r;

        if (!f)
                return -errno;
        r = fprintf(f, "%ld\n", v) < 0 ? -EIO : 0;
        if (fclose(f) != 0)
                r = -errno;
        return r;
}

static long meminfo(const char *key)
{
        FILE *f = fopen("/proc/meminfo", "re");
        char line[256];
        size_t kl = strlen(key);
        long v = -1;

        while (f && fgets(line, sizeof(line), f)) {
                if (strncmp(line, key, kl) == 0 && line[kl] == ':')
                        v = strtol(line + kl + 1, NULL, 10);
        }
        if (f)
                fclose(f);
        return v;
}

static void check_hugetlb(struct core *c)
{
        struct statfs sf;

        CHECK_INT(c->seg->backing, ==, SEG_BACK_HUGETLB);
        CHECK_INT(c->seg->page_size, ==, 2u << 20);
        CHECK_INT(c->seg->hdr->backing, ==, SEG_BACK_HUGETLB);
        CHECK_INT(c->seg->hdr->page_size, ==, 2u << 20);
        CHECK_INT(c->seg->size % (2u << 20), ==, 0);
        /* What the kernel says, not only what the header says. */
        CHECK_SYS(fstatfs(c->seg->fd, &sf));
        CHECK_INT((unsigned long)sf.f_type, ==, HUGETLBFS_MAGIC);
        CHECK_INT(sf.f_bsize, ==, 2u << 20);
}

static void huge_backing(struct tctx *t)
{
        struct core_config cfg;
        struct core *c, *d;
        char path[PATH_MAX];

        test_cfg(&cfg);
        cfg.huge = SEG_HUGE_REQUIRE;
        CHECK_ERR(core_create_anon(&c, &cfg), 0);
        check_hugetlb(c);
        check_sealed(c->seg->fd, c->seg->size);
        memcpy(heap_at(c, 1000), pattern, sizeof(pattern));
        check_fork_view(c, 1000, pattern, sizeof(pattern));
        core_close(c);

        cfg.huge = SEG_HUGE_PREFER;
        CHECK_ERR(core_create_anon(&c, &cfg), 0);
        check_hugetlb(c);
        core_close(c);

        if (!t->huge_dir[0])
                case_skip("anonymous hugetlb passed; no hugetlbfs mount for named segments");
        /* A path on the hugetlbfs mount, created and attached. */
        snprintf(path, sizeof(path), "%s/seg10", t->huge_dir);
        cfg.huge = SEG_HUGE_REQUIRE;
        CHECK_ERR(core_open(&c, path, &cfg), 0);
        CHECK(c->seg->created);
        check_hugetlb(c);
        CHECK_ERR(core_open(&d, path, NULL), 0);
        CHECK(!d->seg->created);
        check_hugetlb(d);
        memcpy(heap_at(c, 1000), pattern, sizeof(pattern));
        CHECK(memcmp(heap_at(d, 1000), pattern, sizeof(pattern)) == 0);
        check_fork_view(d, 1000, pattern, sizeof(pattern));
        core_close(d);
        core_close(c);
        CHECK_SYS(unlink(path));
        /* A bare name with STOA_DIR on the mount. */
        setenv("STOA_DIR", t->huge_dir, 1);
        cfg.huge = SEG_HUGE_PREFER;
        CHECK_ERR(core_open(&c, "bare10", &cfg), 0);
        check_hugetlb(c);
        core_close(c);
        CHECK_ERR(seg_unlink("bare10"), 0);
}

static void huge_none(struct tctx *t)
{
        struct core_config cfg;
        struct core *c;
        char path[PATH_MAX];

        test_cfg(&cfg);
        cfg.huge = SEG_HUGE_REQUIRE;
        CHECK_ERR(core_create_anon(&c, &cfg), STOA_E_NOHUGE);
        CHECK_ERR(core_open(&c, "req", &cfg), STOA_E_NOHUGE);      /* STOA_DIR is tmpfs */
        CHECK_HAS(seg_errdetail(), "hugepages required");
        CHECK_INT(count_tmp(t->dir), ==, 0);

        cfg.huge = SEG_HUGE_PREFER;
        CHECK_ERR(core_create_anon(&c, &cfg), 0);
        CHECK_INT(c->seg->backing, ==, SEG_BACK_SHMEM);
        CHECK_INT(c->seg->page_size, ==, 4096);
        core_close(c);
        CHECK_ERR(core_open(&c, "pref", &cfg), 0);
        CHECK_INT(c->seg->backing, ==, SEG_BACK_SHMEM);
        core_close(c);

        if (!t->huge_dir[0])
                return;
        /* A hugetlbfs directory with no pages to give. */
        snprintf(path, sizeof(path), "%s/seg10", t->huge_dir);
        cfg.huge = SEG_HUGE_REQUIRE;
        CHECK_ERR(core_open(&c, path, &cfg), STOA_E_NOHUGE);
        CHECK_INT(access(path, F_OK), ==, -1);
        CHECK_INT(count_tmp(t->huge_dir), ==, 0);
}

static void mount_huge(struct tctx *t)
{
        snprintf(t->huge_dir, sizeof(t->huge_dir), "%s/huge", t->dir);
        if (mkdir(t->huge_dir, 0755) != 0 ||
            mount("none", t->huge_dir, "hugetlbfs", 0, "pagesize=2M") != 0) {
                print_message("    no hugetlbfs mount (%s): named hugetlbfs paths untested\n",
                              strerror(errno));
                t->huge_dir[0] = 0;
        }
}

static void unmount_huge(struct tctx *t)
{
        if (t->huge_dir[0] && umount(t->huge_dir) == 0)
                t->huge_dir[0] = 0;
}

#define NR_HUGE "/proc/sys/vm/nr_hugepages"

/*
 * meson's is_parallel only orders the tests of one run; this keeps two runs
 * (say build/ and build-san/ at once) from restoring each other's
 * nr_hugepages. The kernel drops the lock when the runner exits.
 */
static void lock_hugepages(void)
{
        static int fd = -1;

        if (fd < 0)
                fd = open("/tmp/stoa-test-hugepages.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0)
                while (flock(fd, LOCK_EX) < 0 && errno == EINTR)
                        ;
}

static void test_huge_backing(void **state)
{
        struct tctx *t = *state;
        long old, now;
        int st, r;

        lock_hugepages();
        old = read_long(NR_HUGE);
        if (geteuid() != 0 || old < 0) {
                print_message("    skipped: needs root and %s\n", NR_HUGE);
                skip();
        }
        r = write_long(NR_HUGE, old + 16);
        now = read_long(NR_HUGE);
        if (r < 0 || meminfo("HugePages_Free") < 16) {
                write_long(NR_HUGE, old);
                print_message("    skipped: could not reserve 16 hugepages (%s; nr_hugepages %ld -> %ld, "
                              "%ld free)\n", r < 0 ? strerror(-r) : "fragmented memory?", old,
                              now, meminfo("HugePages_Free"));
                skip();
        }
        mount_huge(t);
        st = fork_case(t, huge_backing);
        unmount_huge(t);
        r = write_long(NR_HUGE, old);   /* give the pages back */
        assert_int_equal(r, 0);
        check_case_status(st);
}

static void test_huge_none(void **state)
{
        struct tctx *t = *state;

        lock_hugepages();
        if (meminfo("HugePages_Free") != 0 ||
            read_long("/proc/sys/vm/nr_overcommit_hugepages") > 0) {
                print_message("    skipped: this host has free or overcommittable hugepages; "
                              "not taking them away\n");
                skip();
        }
        if (geteuid() == 0)
                mount_huge(t);
        int st = fork_case(t, huge_none);
        unmount_huge(t);
        check_case_status(st);
}

/* ---- 11. NUMA placement --------------------------------------------------- */

static void numa_bind(struct tctx *t)
{
        struct core_config cfg;
        struct core *c, *d;
        const struct seg_region *h;
        unsigned long mask[16];
        char path[PATH_MAX];
        int mode;

        test_cfg(&cfg);
        cfg.nnodes = 1;
        cfg.nodes[0] = 7;
        CHECK_ERR(core_open(&c, "numa", &cfg), -ENODEV);
        CHECK_HAS(seg_errdetail(), "NUMA node 7");
        CHECK_ERR(core_create_anon(&c, &cfg), -ENODEV);
        CHECK_ERR(seg_find("numa", path, sizeof(path)), -ENOENT);
        CHECK_INT(count_tmp(t->dir), ==, 0);

        cfg.nodes[0] = 0;
        CHECK_ERR(core_open(&c, "numa", &cfg), 0);
        h = seg_region(c->seg, SEG_REGION_HEAP, 0);
        CHECK(h != NULL);
        CHECK_INT(h->node, ==, 0);

        /* Every page of the heap is on node 0 ... */
        size_t n = h->size / 4096;
        void **pages = calloc(n, sizeof(*pages));
        int *status = calloc(n, sizeof(*status));
        CHECK(pages && status);
        for (size_t i = 0; i < n; i++)
                pages[i] = c->seg->base + h->off + i * 4096;
        CHECK_SYS(move_pages(0, n, pages, NULL, status, 0));
        for (size_t i = 0; i < n; i++) {
                if (status[i] != 0)
                        die(__FILE__, __LINE__, "heap page %zu is on node %d", i, status[i]);
        }
        free(pages);
        free(status);

        /* ... because the range is bound there, in the shared object (seen by a new mapping). */
        CHECK_ERR(core_open(&d, "numa", NULL), 0);
        memset(mask, 0, sizeof(mask));
        CHECK_SYS(get_mempolicy(&mode, mask, sizeof(mask) * 8, d->seg->base + h->off + 8192,
                                MPOL_F_ADDR));
        CHECK_INT(mode, ==, MPOL_BIND);
        CHECK_INT(mask[0], ==, 1);
        CHECK_SYS(get_mempolicy(&mode, mask, sizeof(mask) * 8, d->seg->base, MPOL_F_ADDR));
        CHECK_INT(mode, ==, MPOL_DEFAULT);      /* the header is not bound */
        core_close(d);

        /* seg_bind_node refuses what is not a node. */
        CHECK_ERR(seg_bind_node(c->seg, h->off, 2u << 20, 7), -EINVAL);
        CHECK_HAS(seg_errdetail(), "7");
        CHECK_ERR(seg_bind_node(c->seg, h->off, 2u << 20, -1), -EINVAL);
        CHECK_ERR(seg_bind_node(c->seg, h->off, 2u << 20, 100000), -EINVAL);
        CHECK_ERR(seg_bind_node(c->seg, h->off, 2u << 20, 0), 0);
        core_close(c);
}
CASE(numa_bind)

/* ---- 12. slots: who is alive --------------------------------------------- */

struct slot_report {
        uint32_t slot, gen;
        pid_t pid;
};

static void slot_kill(struct tctx *t)
{
        struct core_config cfg;
        struct core *c;
        struct slot_report sr;
        int p[2], st;
        pid_t pid;

        (void)t;
        test_cfg(&cfg);
        CHECK_ERR(core_open(&c, "slots", &cfg), 0);
        CHECK_SYS(pipe2(p, O_CLOEXEC));
        pid = fork();
        CHECK_SYS(pid);
        if (pid == 0) {
                struct core *d;
                struct core_thread th;
                close(p[0]);
                CHECK_ERR(core_open(&d, "slots", NULL), 0);
                CHECK_ERR(core_thread_enter(d, &th), 0);
                sr = (struct slot_report){ th.slot, th.gen, getpid() };
                CHECK_INT(write(p[1], &sr, sizeof(sr)), ==, sizeof(sr));
                for (;;)
                        pause();
        }
        close(p[1]);
        read_full(p[0], &sr, sizeof(sr));
        close(p[0]);

        struct slot_hdr *sh = slot_hdr(c->seg, sr.slot);
        CHECK_INT(atomic_load(&sh->state), ==, SLOT_LIVE);
        CHECK_INT(atomic_load(&sh->gen), ==, sr.gen);
        CHECK_INT(sh->pid, ==, pid);
        CHECK_INT(slot_is_dead(c->seg, sr.slot, sr.gen), ==, 0);
        CHECK_INT(slot_is_dead(c->seg, sr.slot, sr.gen + 1), ==, 1);   /* another generation */
        CHECK_INT(slot_is_alive(c->seg, sr.slot), ==, 1);
        CHECK_INT(slot_recover_dead(c->seg, sr.slot), ==, 0);

        /* Stopped is alive: never reclaimed behind its back. */
        CHECK_SYS(kill(pid, SIGSTOP));
        CHECK_SYS(waitpid(pid, &st, WUNTRACED));
        CHECK(WIFSTOPPED(st));
        CHECK_INT(slot_is_dead(c->seg, sr.slot, sr.gen), ==, 0);
        CHECK_INT(slot_recover_dead(c->seg, sr.slot), ==, 0);
        CHECK_INT(slots_sweep(c->seg), ==, 0);
        CHECK_INT(atomic_load(&sh->state), ==, SLOT_LIVE);

        kill_reap(pid);
        CHECK_INT(slot_is_dead(c->seg, sr.slot, sr.gen), ==, 1);
        CHECK_INT(slot_is_alive(c->seg, sr.slot), ==, 0);
        CHECK_INT(atomic_load(&sh->state), ==, SLOT_LIVE);    /* until someone recovers it */
        uint32_t before = sh->recovered;
        CHECK_INT(slot_recover_dead(c->seg, sr.slot), ==, 1);
        CHECK_INT(atomic_load(&sh->state), ==, SLOT_FREE);
        CHECK_INT(atomic_load(&sh->gen), ==, sr.gen + 1);
        CHECK_INT(sh->recovered, ==, before + 1);
        CHECK_INT(slot_recover_dead(c->seg, sr.slot), ==, 0);
        CHECK_INT(slot_is_dead(c->seg, sr.slot, sr.gen), ==, 1);

        /* A recoverer holding the byte of a FREE slot does not make it alive. */
        struct core *d;
        CHECK_ERR(core_open(&d, "slots", NULL), 0);
        CHECK_ERR(seg_lock_try(d->seg, SEG_LOCK_SLOT_BASE + sr.slot), 0);
        CHECK_INT(slot_is_alive(c->seg, sr.slot), ==, 0);
        CHECK_ERR(seg_lock_try(c->seg, SEG_LOCK_SLOT_BASE + sr.slot), -EAGAIN);
        core_close(d);

        /* The slot can be taken again, with a new generation. */
        struct core_thread th;
        CHECK_ERR(core_thread_enter(c, &th), 0);
        CHECK_INT(slot_is_dead(c->seg, th.slot, th.gen), ==, 0);
        CHECK_INT(slot_is_alive(c->seg, th.slot), ==, 1);
        core_thread_leave(&th);
        core_close(c);
}
CASE(slot_kill)

struct forked_report {
        int mapped, claim, enter, recover, lock;
        int fresh_open, fresh_enter;
        uint32_t fresh_slot;
};

/*
 * The grandchild: forked by a process that holds a slot. Its inherited
 * handle must refuse to act, and must not keep the parent's slot alive.
 */
static void forked_child(struct core *inherited, const struct core_thread *held, int wfd,
                         int hold_fd)
{
        struct forked_report fr;
        struct core_thread th;
        struct core *fresh;
        uint32_t slot, gen;
        char b;

        memset(&fr, 0, sizeof(fr));
        /* The inherited mapping still shows the segment (through our own description). */
        const struct slot_hdr *sh = slot_hdr(inherited->seg, held->slot);
        fr.mapped = atomic_load(&sh->state) == SLOT_LIVE && sh->pid == (uint32_t)getppid() &&
                    memcmp(inherited->seg->hdr->magic, SEG_MAGIC, 8) == 0;
        fr.claim = slot_claim(inherited->seg, &slot, &gen);
        fr.enter = core_thread_enter(inherited, &th);
        fr.recover = slot_recover_dead(inherited->seg, held->slot);
        fr.lock = seg_lock_try(inherited->seg, SEG_LOCK_SLOT_BASE + held->slot);
        /* Releasing the parent's slot through the inherited handle must not free it. */
        slot_release(inherited->seg, held->slot);
        fr.fresh_open = core_open(&fresh, "slots", NULL);
        if (fr.fresh_open == 0) {
                fr.fresh_enter = core_thread_enter(fresh, &th);
                fr.fresh_slot = th.slot;
        }
        if (write(wfd, &fr, sizeof(fr)) != sizeof(fr))
                _exit(4);
        while (read(hold_fd, &b, 1) < 0 && errno == EINTR)   /* until the test lets go */
                ;
        _exit(0);
}

static void slot_fork(struct tctx *t)
{
        struct core_config cfg;
        struct core *c;
        struct slot_report sr;
        struct forked_report fr;
        int rep[2], frep[2], hold[2];
        pid_t parent;

        (void)t;
        CHECK_SYS(prctl(PR_SET_CHILD_SUBREAPER, 1));   /* the grandchild comes back to us */
        test_cfg(&cfg);
        CHECK_ERR(core_open(&c, "slots", &cfg), 0);
        CHECK_SYS(pipe2(rep, O_CLOEXEC));
        CHECK_SYS(pipe2(frep, O_CLOEXEC));
        CHECK_SYS(pipe2(hold, O_CLOEXEC));
        parent = fork();
        CHECK_SYS(parent);
        if (parent == 0) {
                struct core *d;
                struct core_thread th;
                close(rep[0]);
                close(frep[0]);
                close(hold[1]);
                CHECK_ERR(core_open(&d, "slots", NULL), 0);
                CHECK_ERR(core_thread_enter(d, &th), 0);
                pid_t child = fork();
                CHECK_SYS(child);
                if (child == 0)
                        forked_child(d, &th, frep[1], hold[0]);
                sr = (struct slot_report){ th.slot, th.gen, child };
                CHECK_INT(write(rep[1], &sr, sizeof(sr)), ==, sizeof(sr));
                for (;;)
                        pause();
        }
        close(rep[1]);
        close(frep[1]);
        close(hold[0]);
        read_full(rep[0], &sr, sizeof(sr));
        read_full(frep[0], &fr, sizeof(fr));

        CHECK(fr.mapped);
        CHECK_ERR(fr.claim, STOA_E_FORKED);
        CHECK_ERR(fr.enter, STOA_E_FORKED);
        CHECK_ERR(fr.recover, STOA_E_FORKED);
        CHECK_ERR(fr.lock, STOA_E_FORKED);
        CHECK_ERR(fr.fresh_open, 0);
        CHECK_ERR(fr.fresh_enter, 0);
        CHECK_INT(fr.fresh_slot, !=, sr.slot);

        /* The parent is alive and its slot is intact. */
        struct slot_hdr *sh = slot_hdr(c->seg, sr.slot);
        CHECK_INT(atomic_load(&sh->state), ==, SLOT_LIVE);
        CHECK_INT(slot_is_alive(c->seg, sr.slot), ==, 1);
        CHECK_INT(slot_is_dead(c->seg, sr.slot, sr.gen), ==, 0);

        /* Parent dies; its forked child lives on and must not keep the slot. */
        kill_reap(parent);
        CHECK_INT(kill(sr.pid, 0), ==, 0);
        CHECK_INT(waitpid(sr.pid, NULL, WNOHANG), ==, 0);
        CHECK_INT(slot_is_dead(c->seg, sr.slot, sr.gen), ==, 1);
        CHECK_INT(slot_is_alive(c->seg, sr.slot), ==, 0);
        CHECK_INT(slot_recover_dead(c->seg, sr.slot), ==, 1);
        CHECK_INT(slot_is_alive(c->seg, fr.fresh_slot), ==, 1);  /* the child's own slot */

        close(hold[1]);         /* let the grandchild go */
        reap_ok(sr.pid);
        CHECK_INT(slot_recover_dead(c->seg, fr.fresh_slot), ==, 1);
        close(rep[0]);
        close(frep[0]);
        core_close(c);
}
CASE(slot_fork)

/* ---- 13. error strings ---------------------------------------------------- */

static void strerror_codes(struct tctx *t)
{
        int codes[16], n = 0;

        (void)t;
        for (int e = STOA_E_FOREIGN; e >= STOA_E_LAST; e--)
                codes[n++] = e;
        CHECK_INT(n, ==, 9);
        codes[n++] = -EACCES;
        codes[n++] = -ENOENT;
        for (int i = 0; i < n; i++) {
                const char *a = stoa_strerror(codes[i]);
                CHECK(a != NULL && a[0] != 0);
                CHECK(strcmp(a, stoa_strerror(STOA_E_LAST - 1)) != 0);    /* not "unknown" */
                for (int j = 0; j < i; j++) {
                        if (strcmp(a, stoa_strerror(codes[j])) == 0)
                                die(__FILE__, __LINE__, "codes %d and %d share the text '%s'",
                                    codes[i], codes[j], a);
                }
        }
        CHECK_HAS(stoa_strerror(-EACCES), "ermission denied");
        CHECK(stoa_strerror(STOA_E_LAST - 1)[0] != 0);
        CHECK(stoa_strerror(12345)[0] != 0);
}
CASE(strerror_codes)

/* ---- 14. the key hash is seeded per segment ------------------------------ */

/*
 * With fixed public constants, keys can be chosen that all land in the same
 * two buckets of every segment and push out chosen victims. Each segment
 * draws its own seed at creation and keeps it in its header.
 */
static void hash_seed(struct tctx *t)
{
        struct core_config cfg;
        struct core *a, *b, *a2;
        unsigned same = 0, same_bucket = 0;

        (void)t;
        test_cfg(&cfg);
        CHECK_ERR(core_open(&a, "seeded-a", &cfg), 0);
        CHECK_ERR(core_open(&b, "seeded-b", &cfg), 0);
        CHECK(a->cache->seed != 0 && b->cache->seed != 0);
        CHECK(a->cache->seed != b->cache->seed);
        CHECK_ERR(core_open(&a2, "seeded-a", NULL), 0);
        CHECK(a2->cache->seed == a->cache->seed);       /* kept in the segment */
        for (unsigned i = 0; i < 1000; i++) {
                char k[32];
                size_t n = (size_t)snprintf(k, sizeof(k), "key:%u", i);
                uint64_t ha = cache_hash(a->cache, 0, k, n), hb = cache_hash(b->cache, 0, k, n);
                same += ha == hb;
                same_bucket += cache_bucket0(a->cache, ha) == cache_bucket0(b->cache, hb);
                CHECK(ha == cache_hash(a2->cache, 0, k, n));
        }
        CHECK_INT(same, ==, 0);
        CHECK(same_bucket < 50);        /* chance alone: 1000 / nbuckets */
        core_close(a2);
        core_close(b);
        core_close(a);
}
CASE(hash_seed)

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_create_attach, setup, teardown),
                cmocka_unit_test_setup_teardown(test_anon_fd, setup, teardown),
                cmocka_unit_test_setup_teardown(test_version_mismatch, setup, teardown),
                cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
                cmocka_unit_test_setup_teardown(test_foreign, setup, teardown),
                cmocka_unit_test_setup_teardown(test_halfinit_crafted, setup, teardown),
                cmocka_unit_test_setup_teardown(test_creator_killed, setup, teardown),
                cmocka_unit_test_setup_teardown(test_corrupt, setup, teardown),
                cmocka_unit_test_setup_teardown(test_permissions, setup, teardown),
                cmocka_unit_test_setup_teardown(test_concurrent_create, setup, teardown),
                cmocka_unit_test_setup_teardown(test_huge_backing, setup, teardown),
                cmocka_unit_test_setup_teardown(test_huge_none, setup, teardown),
                cmocka_unit_test_setup_teardown(test_numa_bind, setup, teardown),
                cmocka_unit_test_setup_teardown(test_slot_kill, setup, teardown),
                cmocka_unit_test_setup_teardown(test_slot_fork, setup, teardown),
                cmocka_unit_test_setup_teardown(test_strerror_codes, setup, teardown),
                cmocka_unit_test_setup_teardown(test_hash_seed, setup, teardown),
        };

        return cmocka_run_group_tests_name("seg", tests, NULL, NULL);
}
