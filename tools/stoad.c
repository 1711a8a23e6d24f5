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
        struct core_config cfg;
        struct core *c;
        const char *name = CORE_DEFAULT_NAME;
        double interval = 1.0;
        int once = 0, opt, r;

        core_config_default(&cfg);
        while ((opt = getopt_long(argc, argv, "n:s:H:m:i:1h", opts, NULL)) != -1) {
                switch (opt) {
                case 'n': name = optarg; break;
                case 's':
                        if (cli_parse_size(optarg, &cfg.size) < 0) {
                                fprintf(stderr, "stoad: bad size '%s'\n", optarg);
                                return 2;
                        }
                        break;
                case 'H':
                        if (!strcmp(optarg, "prefer")) cfg.huge = SEG_HUGE_PREFER;
                        else if (!strcmp(optarg, "require")) cfg.huge = SEG_HUGE_REQUIRE;
                        else if (!strcmp(optarg, "refuse")) cfg.huge = SEG_HUGE_REFUSE;
                        else {
                                fprintf(stderr, "stoad: --huge takes prefer, require or refuse\n");
                                return 2;
                        }
                        break;
                case 'm': cfg.mode = (uint32_t)strtoul(optarg, NULL, 8); break;
                case 'i': interval = atof(optarg); break;
                case '1': once = 1; break;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        }

        r = core_open(&c, name, &cfg);
        if (r < 0) {
                fprintf(stderr, "stoad: cannot open segment '%s': %s%s%s\n", name,
                        stoa_strerror(r), *seg_errdetail() ? ": " : "", seg_errdetail());
                return 1;
        }
        struct seg *s = c->seg;
        fprintf(stderr, "stoad: %s segment %s: %llu MiB, %s pages (%s), %u arena(s), %u slots\n",
                s->created ? "created" : "attached to", s->path,
                (unsigned long long)(s->size >> 20),
                s->page_size >= (2u << 20) ? "2 MiB" : "4 KiB",
                seg_backing_name(s->backing), c->al.narenas, slots_table(s)->nslots);
        if (once) {
                core_close(c);
                return 0;
        }
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        fprintf(stderr, "stoad: watching; Ctrl-C to stop (the segment stays)\n");
        while (!stop) {
                struct timespec ts = { (time_t)interval,
                                       (long)((interval - (double)(time_t)interval) * 1e9) };
                nanosleep(&ts, NULL);
                int n = slots_sweep(s);
                if (n > 0)
                        fprintf(stderr, "stoad: recovered %d slot(s) of dead clients\n", n);
        }
        fprintf(stderr, "stoad: stopping\n");
        core_close(c);
        return 0;
}
