/*
 * tools/cli.h: small helpers shared by the programs (stoad, the benchmarks).
 */
#ifndef STOA_TOOLS_CLI_H
#define STOA_TOOLS_CLI_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/* "4096", "64k", "256M", "1g" to bytes. 0 or -EINVAL (empty, junk after it). */
static inline int cli_parse_size(const char *s, uint64_t *out)
{
        char *end;
        unsigned long long v = strtoull(s, &end, 10);

        if (end == s)
                return -EINVAL;
        switch (*end) {
        case 'k': case 'K': v <<= 10; end++; break;
        case 'm': case 'M': v <<= 20; end++; break;
        case 'g': case 'G': v <<= 30; end++; break;
        default: break;
        }
        if (*end)
                return -EINVAL;
        *out = v;
        return 0;
}

#endif /* STOA_TOOLS_CLI_H */
