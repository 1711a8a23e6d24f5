/*
 * stoad: the supervisor. Creates (or attaches to) a segment, says where it is
 * and what backs it, keeps it alive, and recovers the slots of clients that
 * died, until SIGINT or SIGTERM.
 */
#include "client/core.h"
#include "tools/cli.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
        (void)sig;
        stop = 1;
}

static void usage(FILE *f)
{
        fprintf(f,
                "usage: stoad [--name NAME] [--size BYTES[k|m|g]] [--huge prefer|require|refuse]\n"
                "             [--mode OCTAL] [--interval SECONDS] [--once]\n"
                "Creates the segment NAME (default \"%s\") if absent, reports it, and keeps\n"
                "watching it: dead clients' slots are recovered every interval.\n",
                CORE_DEFAULT_NAME);
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "name", required_argument, NULL, 'n' },
                { "size", required_argument, NULL, 's' },
                { "huge", required_argument, NULL, 'H' },
                { "mode", required_argument, NULL, 'm' },
                { "interval", required_argument, NULL, 'i' },
                { "once", no_argument, NULL, '1' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        struct stoa_options o = { 0 };
        struct stoa_info info;
        struct stoa *c;
        const char *name = CORE_DEFAULT_NAME;
        double interval = 1.0;
        int once = 0, opt, r;

        while ((opt = getopt_long(argc, argv, "n:s:H:m:i:1h", opts, NULL)) != -1) {
                switch (opt) {
                case 'n': name = optarg; break;
                case 's':
                        if (cli_parse_size(optarg, &o.size) < 0) {
                                fprintf(stderr, "stoad: bad size '%s'\n", optarg);
                                return 2;
                        }
                        break;
                case 'H':
                        if (!strcmp(optarg, "prefer")) o.flags &= ~(STOA_OPEN_HUGE | STOA_OPEN_NOHUGE);
                        else if (!strcmp(optarg, "require")) o.flags |= STOA_OPEN_HUGE;
                        else if (!strcmp(optarg, "refuse")) o.flags |= STOA_OPEN_NOHUGE;
                        else {
                                fprintf(stderr, "stoad: --huge takes prefer, require or refuse\n");
                                return 2;
                        }
                        break;
                case 'm': o.mode = (uint32_t)strtoul(optarg, NULL, 8); break;
                case 'i': interval = atof(optarg); break;
                case '1': once = 1; break;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        }

        r = stoa_open(&c, name, &o);
        if (r < 0) {
                fprintf(stderr, "stoad: cannot open segment '%s': %s%s%s\n", name,
                        stoa_strerror(r), *seg_errdetail() ? ": " : "", seg_errdetail());
                return 1;
        }
        stoa_info(c, &info);
        fprintf(stderr, "stoad: segment %s: %llu MiB (%llu MiB heap), %s, %u slots, %llu items\n",
                info.path, (unsigned long long)(info.size >> 20),
                (unsigned long long)(info.heap_bytes >> 20), info.backing, info.slots,
                (unsigned long long)info.items);
        if (once) {             /* one pass of what the loop does each tick */
                int n = stoa_sweep(c);
                if (n < 0)
                        fprintf(stderr, "stoad: sweep failed: %s\n", stoa_strerror(n));
                else
                        fprintf(stderr, "stoad: swept: %d dead slot(s) or expired item(s)\n", n);
                stoa_close(c);
                return n < 0;
        }
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        fprintf(stderr, "stoad: watching; Ctrl-C to stop (the segment stays)\n");
        uint64_t last_hits = info.hits, last_misses = info.misses;
        for (unsigned tick = 1; !stop; tick++) {
                struct timespec ts = { (time_t)interval,
                                       (long)((interval - (double)(time_t)interval) * 1e9) };
                nanosleep(&ts, NULL);
                /* Dead clients' slots and memory, expired items, retired blocks. */
                int n = stoa_sweep(c);
                if (n > 0)
                        fprintf(stderr, "stoad: swept: %d dead slot(s) or expired item(s)\n", n);
                if (tick % 10 || stoa_info(c, &info) < 0)
                        continue;
                uint64_t h = info.hits - last_hits, m = info.misses - last_misses;
                char ratio[32];
                if (h + m)
                        snprintf(ratio, sizeof(ratio), "%.3f", (double)h / (double)(h + m));
                else
                        snprintf(ratio, sizeof(ratio), "- (no lookups)");
                fprintf(stderr, "stoad: %llu items, %llu MiB used, hit ratio %s, "
                        "%llu evictions, %llu expired, %u clients%s\n",
                        (unsigned long long)info.items, (unsigned long long)(info.used_bytes >> 20),
                        ratio,
                        (unsigned long long)info.evictions, (unsigned long long)info.expired,
                        info.clients, info.dead_clients ? " (some dead)" : "");
                last_hits = info.hits;
                last_misses = info.misses;
        }
        fprintf(stderr, "stoad: stopping\n");
        stoa_close(c);
        return 0;
}
