/*
 * tests/harness.h: what the forking test suites share (include after cmocka.h).
 *
 * Each case runs in its own process, on its own $STOA_DIR, under an alarm, so
 * that one crash or hang fails that case and not the ones after it.
 */
#ifndef STOA_TESTS_HARNESS_H
#define STOA_TESTS_HARNESS_H

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* STOA_STRESS_SCALE: multiplies iteration counts and timeouts (1-1000). */
static inline unsigned stress_scale(void)
{
        const char *s = getenv("STOA_STRESS_SCALE");
        long v = s ? strtol(s, NULL, 10) : 1;

        return v < 1 ? 1u : v > 1000 ? 1000u : (unsigned)v;
}

static inline void harness_remove_dir(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *e;

        if (d) {
                while ((e = readdir(d))) {
                        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                                unlinkat(dirfd(d), e->d_name, 0);
                }
                closedir(d);
        }
        rmdir(dir);
}

/*
 * Run one case in its own process, on its own $STOA_DIR (stoa-test-TAG-*),
 * with an alarm of timeout_s x STOA_STRESS_SCALE. Exit status 77: skipped.
 */
static inline void harness_run_case(const char *tag, unsigned timeout_s, void (*fn)(void))
{
        char dir[96];
        int st;

        snprintf(dir, sizeof(dir), "/dev/shm/stoa-test-%s-XXXXXX", tag);
        if (!mkdtemp(dir)) {
                snprintf(dir, sizeof(dir), "/tmp/stoa-test-%s-XXXXXX", tag);
                assert_non_null(mkdtemp(dir));
        }
        assert_int_equal(setenv("STOA_DIR", dir, 1), 0);
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                alarm(timeout_s * stress_scale());
                fn();
                _exit(0);
        }
        while (waitpid(pid, &st, 0) < 0)
                assert_int_equal(errno, EINTR);
        harness_remove_dir(dir);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
                skip();
        if (WIFSIGNALED(st))
                fail_msg("case process killed by signal %d%s", WTERMSIG(st),
                         WTERMSIG(st) == SIGALRM ? " (timed out: something waits for ever)" : "");
        assert_int_equal(WEXITSTATUS(st), 0);
}

#endif /* STOA_TESTS_HARNESS_H */
