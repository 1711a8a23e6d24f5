/*
 * tools/cli.h: the one parser of the programs' command lines (stoad, stoa,
 * the benchmarks): sizes, file modes and durations.
 *
 * Each parser takes the whole argument and either gives a value in range or
 * fails with a sentence (cli_error()) that says what was wrong and what the
 * limits are, so that no program turns "abc", "-1" or "999" into something
 * else (0, a busy loop, a mode nobody asked for) without a word.
 */
#ifndef STOA_TOOLS_CLI_H
#define STOA_TOOLS_CLI_H

#include <stdint.h>

/*
 * "4096", "64k", "256M", "1g", "2T" (also "64KiB", "64MB": powers of 1024) to
 * bytes. 0, -EINVAL (empty, a sign, junk after it) or -ERANGE (over 2^64).
 * Any value, 0 included: the caller says what range it accepts.
 */
int cli_parse_size(const char *s, uint64_t *ret);

/*
 * A size in [min, max]: 0 or -1 with cli_error() set, e.g. "--size '-5m': not
 * a size; give bytes with an optional k, m, g or t suffix, from 16 MiB to 64 TiB".
 * `what` names the option in the message.
 */
int cli_size(const char *what, const char *s, uint64_t min, uint64_t max, uint64_t *ret);

/*
 * A file mode: 3 or 4 octal digits, permission bits only (at most 0777), and
 * read-write for the owner (the creator must map it). 0 or -1 with cli_error().
 */
int cli_mode(const char *what, const char *s, uint32_t *ret);

/*
 * A duration: a decimal number with an optional unit (ms, s, m, h; seconds if
 * none), e.g. "1", "0.25", "500ms", in [min_ns, max_ns]. 0 or -1 with cli_error().
 */
int cli_duration(const char *what, const char *s, uint64_t min_ns, uint64_t max_ns,
                 uint64_t *ret_ns);

/* "16 MiB", "1.5 GiB", "4096 B": bytes for a message. Returns buf. */
const char *cli_bytes(char *buf, unsigned long len, uint64_t v);

/* The last parser's complaint (a static buffer: the programs parse in one thread). */
const char *cli_error(void);

/* "PROG: <message> (try 'PROG --help')" on stderr; returns 2, the usage exit status. */
__attribute__((format(printf, 2, 3)))
int cli_usage_error(const char *prog, const char *fmt, ...);

#endif /* STOA_TOOLS_CLI_H */
