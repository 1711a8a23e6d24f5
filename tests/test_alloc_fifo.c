/*
 * Regression: one slot allocates, another frees in FIFO order (remote frees),
 * with many more blocks in flight than one scan of the owner's full list
 * covers. The owner must find the spans others freed into, rather than take
 * fresh spans until the arena is out and report -ENOMEM with memory free.
 */
#include "client/core.h"
#include "stoa/stoa.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

__attribute__((format(printf, 2, 3)))
static void report(void *arg, const char *fmt, ...)
{
        va_list ap;

        (void)arg;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

static void fifo_remote(uint32_t inflight, uint64_t sz, uint64_t ops)
{
        struct core_config cfg;
        struct core *c;
        struct core_thread a, b;
        struct al_stats st;
        uint64_t *ring = calloc(inflight, sizeof(*ring));
        uint64_t peak_held = 0;

        assert_non_null(ring);
        core_config_default(&cfg);
        cfg.size = 64ull << 20;
        cfg.nslots = 8;
        cfg.huge = SEG_HUGE_REFUSE;
        assert_int_equal(core_create_anon(&c, &cfg), 0);
        assert_int_equal(core_thread_enter(c, &a), 0);
        assert_int_equal(core_thread_enter(c, &b), 0);
        for (uint64_t i = 0; i < ops; i++) {
                uint32_t s = (uint32_t)(i % inflight);
                uint64_t off;
                if (i >= inflight)
                        assert_int_equal(al_free(&b.heap, ring[s]), 0);
                int r = al_alloc(&a.heap, sz, -1, &off);
                if (r != 0) {
                        al_stats(&c->al, &st);
                        fail_msg("al_alloc: %s at op %llu: held %llu KiB, used %llu KiB",
                                 stoa_strerror(r), (unsigned long long)i,
                                 (unsigned long long)(st.held_bytes >> 10),
                                 (unsigned long long)(st.used_bytes >> 10));
                }
                al_commit(&a.heap);
                ring[s] = off;
                if (i % 100000 == 0) {
                        al_stats(&c->al, &st);
                        if (st.held_bytes > peak_held)
                                peak_held = st.held_bytes;
                }
        }
        al_stats(&c->al, &st);
        /* Held memory stays near what is in use: at most 2x, plus a span per class. */
        assert_true(peak_held <= 2 * st.used_bytes + (1u << 20));
        for (uint32_t s = 0; s < inflight; s++)
                assert_int_equal(al_free(&b.heap, ring[s]), 0);
        assert_int_equal(al_check(&c->al, report, NULL, NULL), 0);
        core_thread_leave(&b);
        core_thread_leave(&a);
        core_close(c);
        free(ring);
}

static void test_fifo_remote_64(void **state)
{
        (void)state;
        /* 64 spans of 64-byte blocks hold ~52k blocks: go well past that. */
        fifo_remote(200000, 64, 3000000);
}

static void test_fifo_remote_mixed_classes(void **state)
{
        (void)state;
        fifo_remote(20000, 1000, 1000000);     /* 1 KiB class: 63 blocks a span */
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_fifo_remote_64),
                cmocka_unit_test(test_fifo_remote_mixed_classes),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
