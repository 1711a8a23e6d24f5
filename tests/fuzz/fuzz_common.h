/*
 * tests/fuzz/fuzz_common.h: what the libFuzzer targets share: a private
 * directory for their segment files, whole-file writes, and a run of every
 * read and write path of the public API over whatever segment attached.
 */
#ifndef STOA_FUZZ_COMMON_H
#define STOA_FUZZ_COMMON_H

#include "stoa/stoa.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_dir_path[64];

static void fuzz_dir_remove(void)
{
        char cmd[96];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fuzz_dir_path);
        if (system(cmd) != 0)
                fprintf(stderr, "could not remove %s\n", fuzz_dir_path);
}

/* A directory of this process's own, on tmpfs if there is one; removed at exit. */
static inline const char *fuzz_dir(void)
{
        char *dir = fuzz_dir_path;
        const size_t size = sizeof(fuzz_dir_path);

        if (!dir[0]) {
                snprintf(dir, size, "/dev/shm/stoa-fuzz-XXXXXX");
                if (!mkdtemp(dir)) {
                        snprintf(dir, size, "/tmp/stoa-fuzz-XXXXXX");
                        if (!mkdtemp(dir))
                                abort();
                }
                setenv("STOA_DIR", dir, 1);
                atexit(fuzz_dir_remove);
        }
        return dir;
}

/* Write exactly buf[0, len) at off, or abort (the fuzzer's own failure). */
static inline void fuzz_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
        for (size_t done = 0; done < len;) {
                ssize_t n = pwrite(fd, (const uint8_t *)buf + done, len - done, (off_t)(off + done));
                if (n <= 0) {
                        if (n < 0 && errno == EINTR)
                                continue;
                        abort();
                }
                done += (size_t)n;
        }
}

static int fuzz_scan_fn(const void *key, size_t klen, size_t vlen, void *arg)
{
        unsigned *n = arg;

        (void)key, (void)klen, (void)vlen;
        return ++*n > 4096;     /* a scribbled chain may be long: stop somewhere */
}

static void fuzz_report(const char *msg, void *arg)
{
        (void)msg, (void)arg;
}

static inline void fuzz_key(char *out, size_t cap, unsigned i)
{
        snprintf(out, cap, "key-%06u", i);
}

/*
 * Every read and write path on a handle that attached: whatever the segment
 * holds, each call returns (a value, or an error); none crashes or hangs.
 */
static inline void fuzz_exercise(struct stoa *c, unsigned nkeys)
{
        static uint8_t buf[70000];
        struct stoa_getreq req[16];
        struct stoa_view v[4];
        struct stoa_info info;
        char keys[16][24], key[24];
        size_t vlen;
        uint64_t ver;
        uint32_t id;
        unsigned n = 0;

        stoa_check(c, fuzz_report, NULL);
        stoa_info(c, &info);
        for (unsigned i = 0; i < nkeys; i += 7) {
                fuzz_key(key, sizeof(key), i);
                stoa_get(c, key, strlen(key), buf, sizeof(buf), &vlen);
        }
        for (unsigned j = 0; j < 16; j++) {
                fuzz_key(keys[j], sizeof(keys[j]), j * 5);
                req[j] = (struct stoa_getreq){ .key = keys[j], .klen = strlen(keys[j]),
                                               .buf = buf + j * 4096, .cap = 4096 };
        }
        stoa_mget(c, req, 16);
        for (unsigned j = 0; j < 4; j++) {
                fuzz_key(key, sizeof(key), j * 3);
                if (stoa_view_get(c, key, strlen(key), &v[j]) != 0)
                        memset(&v[j], 0, sizeof(v[j]));
        }
        stoa_scan(c, "key-", 4, fuzz_scan_fn, &n);
        for (unsigned i = 0; i < 24; i++) {
                fuzz_key(key, sizeof(key), i * 3 + 1);
                memset(buf, (int)i, 64 + i * 97);
                stoa_set(c, key, strlen(key), buf, 64 + i * 97, 0);
        }
        fuzz_key(key, sizeof(key), 2);
        if (stoa_gets(c, key, strlen(key), buf, sizeof(buf), &vlen, &ver) == 0)
                stoa_cas(c, key, strlen(key), "cas", 3, 0, ver, NULL);
        stoa_incr(c, "counter", 7, 3, 0, NULL);
        stoa_add(c, "added", 5, "a", 1, 0);
        stoa_touch(c, "added", 5, 100);
        for (unsigned i = 0; i < nkeys; i += 3) {
                fuzz_key(key, sizeof(key), i);
                stoa_del(c, key, strlen(key));
        }
        for (unsigned j = 0; j < 4; j++)
                stoa_view_release(c, &v[j]);
        if (stoa_intern(c, "interned", 8, &id) == 0)
                stoa_intern_lookup(c, id, buf, sizeof(buf), &vlen);
        stoa_intern_lookup(c, 1, buf, sizeof(buf), &vlen);
        stoa_sweep(c);
        stoa_check(c, fuzz_report, NULL);
}

#endif /* STOA_FUZZ_COMMON_H */
