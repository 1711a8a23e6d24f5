/*
 * tools/cli.c: see cli.h. Hand-written rather than strtoull/strtod: those
 * accept leading blanks, a minus sign (strtoull("-1") is 2^64-1), "inf" and
 * "nan", which is how bad arguments used to become silent wrong values.
 */
#include "tools/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static char why[256];

__attribute__((format(printf, 1, 2)))
static int fail(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        return -1;
}

const char *cli_error(void)
{
        return why;
}

const char *cli_bytes(char *buf, unsigned long len, uint64_t v)
{
        static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
        unsigned u = 0;

        while (u < 6 && v >= 1024 && v % 1024 == 0) {
                v /= 1024;
                u++;
        }
        if (u > 0 || v < 1024) {
                snprintf(buf, len, "%llu %s", (unsigned long long)v, unit[u]);
                return buf;
        }
        double d = (double)v;
        for (u = 0; d >= 1024 && u < 6; u++)
                d /= 1024;
        snprintf(buf, len, "%.1f %s", d, unit[u]);
        return buf;
}

/* Digits to a uint64_t; *end past them. -EINVAL without a digit, -ERANGE on overflow. */
static int digits(const char *s, const char **end, uint64_t *ret)
{
        uint64_t v = 0;
        const char *p = s;

        for (; *p >= '0' && *p <= '9'; p++) {
                if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t)(*p - '0');
        }
        if (p == s)
                return -EINVAL;
        *end = p;
        *ret = v;
        return 0;
}

int cli_parse_size(const char *s, uint64_t *ret)
{
        const char *p;
        uint64_t v;
        unsigned shift = 0;
        int r;

        if (!s || (r = digits(s, &p, &v)) < 0)
                return s ? r : -EINVAL;
        switch (*p) {
        case 'k': case 'K': shift = 10; p++; break;
        case 'm': case 'M': shift = 20; p++; break;
        case 'g': case 'G': shift = 30; p++; break;
        case 't': case 'T': shift = 40; p++; break;
        default: break;
        }
        if (shift && (!strcmp(p, "iB") || !strcmp(p, "B") || !strcmp(p, "b")))
                p += strlen(p);
        if (*p)
                return -EINVAL;
        if (shift && v > (UINT64_MAX >> shift))
                return -ERANGE;
        *ret = v << shift;
        return 0;
}

int cli_size(const char *what, const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
        char lo[32], hi[32];
        uint64_t v;
        int r = cli_parse_size(s, &v);

        cli_bytes(lo, sizeof(lo), min);
        cli_bytes(hi, sizeof(hi), max);
        if (r == -EINVAL)
                return fail("%s '%s': not a size; give bytes with an optional k, m, g or t "
                            "suffix, from %s to %s", what, s, lo, hi);
        if (r == -ERANGE || v > max)
                return fail("%s '%s': too large; the largest is %s", what, s, hi);
        if (v < min)
                return fail("%s '%s': too small; the smallest is %s", what, s, lo);
        *ret = v;
        return 0;
}

int cli_mode(const char *what, const char *s, uint32_t *ret)
{
        size_t n = strlen(s);
        uint32_t v = 0;

        if (n < 3 || n > 4 || strspn(s, "01234567") != n)
                return fail("%s '%s': not a file mode; give octal permission bits such as "
                            "0600, 0640 or 0660", what, s);
        for (size_t i = 0; i < n; i++)
                v = v * 8 + (uint32_t)(s[i] - '0');
        if (v > 0777)
                return fail("%s '%s': only permission bits (at most 0777); no setuid, setgid "
                            "or sticky bit", what, s);
        if ((v & 0600) != 0600)
                return fail("%s '%s': the owner needs read and write (06xx), or the creator "
                            "cannot map the segment", what, s);
        *ret = v;
        return 0;
}

int cli_duration(const char *what, const char *s, uint64_t min_ns, uint64_t max_ns,
                 uint64_t *ret_ns)
{
        const char *p = s, *q;
        uint64_t whole, frac = 0, fscale = 1, unit = 1000000000ull;
        char lo[32], hi[32];

        snprintf(lo, sizeof(lo), "%g s", (double)min_ns / 1e9);
        snprintf(hi, sizeof(hi), "%g s", (double)max_ns / 1e9);
        if (digits(p, &q, &whole) < 0 || whole > 1000000000ull)
                goto bad;
        p = q;
        if (*p == '.') {
                p++;
                for (; *p >= '0' && *p <= '9'; p++) {
                        if (fscale < 1000000000ull) {
                                frac = frac * 10 + (uint64_t)(*p - '0');
                                fscale *= 10;
                        }
                }
        }
        if (!strcmp(p, "ms"))
                unit = 1000000ull;
        else if (!strcmp(p, "m"))
                unit = 60ull * 1000000000ull;
        else if (!strcmp(p, "h"))
                unit = 3600ull * 1000000000ull;
        else if (*p && strcmp(p, "s"))
                goto bad;
        long double ns = ((long double)whole + (long double)frac / (long double)fscale) *
                         (long double)unit;
        if (ns > (long double)max_ns)
                return fail("%s '%s': too long; the longest is %s", what, s, hi);
        if (ns < (long double)min_ns)
                return fail("%s '%s': too short; the shortest is %s", what, s, lo);
        *ret_ns = (uint64_t)ns;
        return 0;
bad:
        return fail("%s '%s': not a duration; give seconds (e.g. 1 or 0.5) or a number with "
                    "ms, s, m or h, from %s to %s", what, s, lo, hi);
}

int cli_usage_error(const char *prog, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        fprintf(stderr, "%s: ", prog);
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, " (try '%s --help')\n", prog);
        va_end(ap);
        return 2;
}
