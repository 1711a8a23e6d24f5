/*
 * tests/fuzz/fuzz_scribble.c: a real segment scribbled on, then used.
 *
 * Once per process a template is built: a small segment with a few hundred
 * items of many sizes, deleted and overwritten ones (retired blocks), an
 * interned string, and a dead client (a child that took a view and died
 * holding its slot). Each input is then a list of scribbles, each
 *     [target:1][offset:3][len:1][bytes:len]
 * where target picks a part of the shared segment (header, slot table,
 * allocator metadata, index, cache header, items, anywhere) and offset is
 * taken modulo its size. The template is copied to the file, the scribbles
 * written over it, and every read and write path run on it, the recovery
 * of the dead slot included (stoa_sweep()). A scribbled segment may give
 * errors and wrong values; it must never crash, hang, or make the library
 * write outside the segment.
 */
#include "shm/seg.h"
#include "tests/fuzz/fuzz_common.h"

#include <signal.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define SEG_SIZE        (16u << 20)     /* STOA_SIZE_MIN */
#define NKEYS           300u

static uint8_t *tmpl;
static size_t tmpl_size;
static char path[128];
static struct seg_region targets[8];    /* [off, off+size) of each target */
static unsigned ntargets;

static void populate(struct stoa *c)
{
        static uint8_t val[40000];
        char key[24];

        for (unsigned i = 0; i < NKEYS; i++) {
                size_t len = (i * 7919u) % (i % 50 == 0 ? sizeof(val) : 600u);
                memset(val, (int)i, len);
                fuzz_key(key, sizeof(key), i);
                stoa_set(c, key, strlen(key), val, len, i % 9 == 0 ? 3600 : 0);
        }
        for (unsigned i = 0; i < NKEYS; i += 10) {
                fuzz_key(key, sizeof(key), i);
                stoa_del(c, key, strlen(key));
        }
        for (unsigned i = 1; i < NKEYS; i += 10) {
                fuzz_key(key, sizeof(key), i);
                stoa_set(c, key, strlen(key), "overwritten", 11, 0);
        }
        stoa_incr(c, "counter", 7, 41, 0, NULL);
        uint32_t id;
        stoa_intern(c, "interned", 8, &id);
}

/* A client that dies holding its slot, a view and a write's leftovers. */
static void dead_client(void)
{
        pid_t pid = fork();
        int st;

        if (pid < 0)
                abort();
        if (pid == 0) {
                struct stoa *c;
                struct stoa_view v;
                char key[24];
                if (stoa_open(&c, path, &(struct stoa_options){ .flags = STOA_OPEN_NOCREATE }) != 0)
                        _exit(1);
                fuzz_key(key, sizeof(key), 3);
                stoa_view_get(c, key, strlen(key), &v);
                for (unsigned i = 2; i < NKEYS; i += 10) {
                        fuzz_key(key, sizeof(key), i);
                        stoa_set(c, key, strlen(key), "by the dead", 11, 0);
                }
                _exit(0);       /* no stoa_close(): the slot stays, its owner dead */
        }
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                abort();
}

static void add_target(uint64_t off, uint64_t size)
{
        if (size && ntargets < sizeof(targets) / sizeof(targets[0]))
                targets[ntargets++] = (struct seg_region){ .off = off, .size = size };
}

static void build_template(void)
{
        struct stoa *c;
        struct stat st;
        int fd;

        snprintf(path, sizeof(path), "%s/scribble", fuzz_dir());
        unlink(path);
        if (stoa_open(&c, path, &(struct stoa_options){ .size = SEG_SIZE, .nslots = 8,
                                                        .flags = STOA_OPEN_NOHUGE }) != 0)
                abort();
        populate(c);
        dead_client();
        stoa_close(c);

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) != 0)
                abort();
        tmpl_size = (size_t)st.st_size;
        tmpl = malloc(tmpl_size);
        if (!tmpl || pread(fd, tmpl, tmpl_size, 0) != (ssize_t)tmpl_size)
                abort();
        close(fd);

        const struct seg_header *h = (const struct seg_header *)tmpl;
        uint64_t heap_lo = UINT64_MAX, heap_hi = 0;
        add_target(0, SEG_HEADER_SIZE);
        for (uint32_t i = 0; i < h->nregions && i < SEG_MAX_REGIONS; i++) {
                const struct seg_region *r = &h->regions[i];
                if (r->kind == SEG_REGION_HEAP) {
                        heap_lo = r->off < heap_lo ? r->off : heap_lo;
                        heap_hi = r->off + r->size > heap_hi ? r->off + r->size : heap_hi;
                } else {
                        add_target(r->off, r->size);
                }
        }
        /* The items: the first used part of the heap (it fills from the bottom). */
        if (heap_hi > heap_lo)
                add_target(heap_lo, (heap_hi - heap_lo) / 8);
        add_target(0, tmpl_size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct stoa *c = NULL;
        int fd;

        if (!tmpl)
                build_template();
        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                abort();
        fuzz_pwrite(fd, tmpl, tmpl_size, 0);
        while (size >= 5) {
                const struct seg_region *t = &targets[data[0] % ntargets];
                uint64_t off = ((uint64_t)data[1] << 16 | (uint64_t)data[2] << 8 | data[3]);
                size_t len = data[4] % 33;
                data += 5, size -= 5;
                if (len > size)
                        len = size;
                off = t->off + off % t->size;
                if (off + len > tmpl_size)
                        len = tmpl_size - off;
                fuzz_pwrite(fd, data, len, off);
                data += len, size -= len;
        }
        close(fd);

        if (stoa_open(&c, path, &(struct stoa_options){ .flags = STOA_OPEN_NOCREATE }) == 0) {
                fuzz_exercise(c, NKEYS);
                stoa_close(c);
        }
        return 0;
}
