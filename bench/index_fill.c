/*
 * bench/index_fill.c: how many small keys a segment keeps, and what each
 * costs, as issue 8 measured them from outside.
 *
 *   index-fill [--size MiB] [--keys N] [--vlen BYTES]
 *
 * Writes N unique keys (16 bytes, values of 64 bytes or --vlen) through the public API into
 * a fresh segment of the given size (STOA_DIR or the default directory), with
 * a line each time the heap passes another quarter, then reads every key back
 * and prints how many are there, how many the index lost (conflicts) and
 * memory evicted, the index's load, and the segment bytes per item held.
 * Without --keys it writes until the first key is lost (evicted for memory
 * or for room in the index), then as many again: the steady state of a full
 * segment.
 *
 * Figures only: the exit status says whether it could run.
 */
#include "stoa/stoa.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KLEN 16
#define VLEN_MAX 1024

/* Key i: "k" and 15 decimal digits (i below 10^15). */
static void key_of(uint64_t i, char *k)
{
        char d[24];

        snprintf(d, sizeof(d), "%015" PRIu64, i % UINT64_C(1000000000000000));
        k[0] = 'k';
        memcpy(k + 1, d, KLEN - 1);
        k[KLEN] = 0;
}

static void report(const char *when, uint64_t written, const struct stoa_info *in)
{
        uint64_t cap = in->index_buckets * in->index_ways;

        printf("%-22s %10" PRIu64 " written  heap %5.1f%% used  index %5.1f%% full  "
               "%8" PRIu64 " conflicts  %8" PRIu64 " evictions\n", when, written,
               100.0 * (double)in->used_bytes / (double)in->heap_bytes,
               100.0 * (double)in->index_entries / (double)(cap ? cap : 1), in->conflicts,
               in->evictions);
}

int main(int argc, char **argv)
{
        uint64_t size_mib = 128, nkeys = 0, vlen = 64;
        char name[64], k[KLEN + 1], v[VLEN_MAX], buf[VLEN_MAX];
        struct stoa_info *in = calloc(1, sizeof(*in));
        struct stoa *c;
        int r;

        for (int i = 1; i < argc; i++) {
                if (!strcmp(argv[i], "--size") && i + 1 < argc)
                        size_mib = strtoull(argv[++i], NULL, 10);
                else if (!strcmp(argv[i], "--keys") && i + 1 < argc)
                        nkeys = strtoull(argv[++i], NULL, 10);
                else if (!strcmp(argv[i], "--vlen") && i + 1 < argc &&
                         (vlen = strtoull(argv[++i], NULL, 10)) <= VLEN_MAX)
                        continue;
                else {
                        fprintf(stderr, "index-fill: bad argument '%s'\n"
                                "usage: index-fill [--size MiB] [--keys N] [--vlen 0..%d]\n",
                                argv[i], VLEN_MAX);
                        return 2;
                }
        }
        snprintf(name, sizeof(name), "index-fill-%d", (int)getpid());
        struct stoa_options o = { .size = size_mib << 20, .flags = STOA_OPEN_NOHUGE };
        if ((r = stoa_open(&c, name, &o)) < 0) {
                fprintf(stderr, "index-fill: %s: %s\n", name, stoa_strerror(r));
                return 1;
        }
        memset(v, 'v', sizeof(v));
        printf("segment %" PRIu64 " MiB, keys of %d bytes with values of %" PRIu64 " bytes\n",
               size_mib, KLEN, vlen);
        unsigned quarter = 1;
        uint64_t n = 0, first_eviction = 0;
        for (;; n++) {
                if (n % 4096 == 0) {
                        stoa_info(c, in);
                        if (quarter < 4 && in->used_bytes * 4 >= in->heap_bytes * quarter) {
                                char when[32];
                                snprintf(when, sizeof(when), "heap past %u%%", 25 * quarter++);
                                report(when, n, in);
                        }
                        if (!first_eviction && (in->evictions || in->conflicts))
                                first_eviction = n;
                        if (nkeys ? n >= nkeys : first_eviction && n >= 2 * first_eviction)
                                break;
                }
                key_of(n, k);
                if ((r = stoa_set(c, k, KLEN, v, vlen, 0)) < 0) {
                        fprintf(stderr, "index-fill: set %s: %s\n", k, stoa_strerror(r));
                        return 1;
                }
        }
        uint64_t present = 0;
        for (uint64_t i = 0; i < n; i++) {
                size_t len;
                key_of(i, k);
                present += stoa_get(c, k, KLEN, buf, sizeof(buf), &len) == 0;
        }
        stoa_info(c, in);
        report("at the end", n, in);
        double per = (double)in->size / (double)(in->items ? in->items : 1);
        printf("%" PRIu64 " of %" PRIu64 " keys present; %" PRIu64 " items held, %.1f segment "
               "bytes each (%.1f of it over the %" PRIu64 " bytes of key and value), %.0f items "
               "per MiB\n", present, n, in->items, per, per - (double)(KLEN + vlen),
               KLEN + vlen, (double)in->items / (double)size_mib);
        char path[sizeof(in->path) + 1];
        snprintf(path, sizeof(path), "%s", in->path);
        stoa_close(c);
        unlink(path);
        free(in);
        return 0;
}
