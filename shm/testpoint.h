/*
 * shm/testpoint: named steps where a test can stop the process.
 *
 * Recovery must be safe to cut short at any step and run again. To prove it,
 * a test sets stoa_test_hook in a child that recovers a dead slot; the hook
 * is called with the name of each step as it is passed, and kills the child
 * at the one under test. Only recovery and other rare paths have points:
 * with no hook set, a point costs a load and a predicted branch.
 */
#ifndef STOA_SHM_TESTPOINT_H
#define STOA_SHM_TESTPOINT_H

extern void (*stoa_test_hook)(const char *point);

#define TEST_POINT(p) do {                                              \
        if (__builtin_expect(stoa_test_hook != 0, 0))                   \
                stoa_test_hook(p);                                      \
} while (0)

#endif /* STOA_SHM_TESTPOINT_H */
