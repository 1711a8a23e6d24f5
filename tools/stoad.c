/*
 * stoad: the supervisor. Creates (or attaches to) a segment, says where it is
 * and what backs it, keeps it alive, and recovers the slots of clients that
 * died, until SIGINT or SIGTERM.
 *
 * It refuses rather than guesses: a bad argument is a usage error (exit 2);
 * an existing segment that differs from what was asked explicitly (size,
 * hugepages, file mode) is not silently taken instead (exit 1); a segment
 * already supervised is left to its supervisor (exit 1, naming it). One
 * supervisor per segment is an OFD lock on the file plus a record in the
 * header (shm/seg.h, struct seg_super): the kernel drops the lock when the
 * holder dies, however it dies, so a SIGKILLed stoad never blocks the next.
 * If the segment file is removed or replaced under it, stoad says so on an
 * ALERT line within about a second and exits with status 3: its clients
 * keep the old file while new ones would create another segment.
 */
#include "client/client.h"
#include "tools/cli.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2, EXIT_REMOVED = 3 };

/* How often the removal of the file is looked for, whatever --interval is. */
#define WATCH_STEP_NS (250ull * 1000 * 1000)

static volatile sig_atomic_t stop, hup;

static void on_signal(int sig)
{
        if (sig == SIGHUP)
                hup = 1;
        else
                stop = 1;
}

static void usage(FILE *f)
{
        fprintf(f,
                "usage: stoad [NAME] [--size BYTES[k|m|g|t]] [--huge prefer|require|refuse]\n"
                "             [--mode OCTAL] [--interval DURATION] [--once]\n"
                "Creates the segment NAME (default \"%s\") if absent, reports it, and keeps\n"
                "watching it: dead clients' slots are recovered every interval (default 1 s;\n"
                "e.g. 500ms, 2, 1m). --size is from 16 MiB to 64 TiB (default 256 MiB);\n"
                "--mode is the file's permission bits (default 0600). On an existing segment,\n"
                "--size, --huge require|refuse and --mode must match it, or stoad refuses.\n"
                "One stoad per segment. SIGHUP is logged and ignored. Exit status: 0 stopped,\n"
                "1 failure, 2 usage, 3 the segment file was removed while watched.\n",
                CORE_DEFAULT_NAME);
}

#define usage_error(...) cli_usage_error("stoad", __VA_ARGS__)
_Static_assert(EXIT_USAGE == 2, "cli_usage_error returns 2");

struct want {
        const char *name;
        struct stoa_options o;
        bool size_given, mode_given;
        uint64_t interval_ns;
        bool once;
};

static int parse(int argc, char **argv, struct want *w)
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
        int opt;

        opterr = 0;
        while ((opt = getopt_long(argc, argv, ":n:s:H:m:i:1h", opts, NULL)) != -1) {
                switch (opt) {
                case 'n': w->name = optarg; break;
                case 's':
                        if (cli_size("--size", optarg, STOA_SIZE_MIN, STOA_SIZE_MAX,
                                     &w->o.size) < 0)
                                return usage_error("%s", cli_error());
                        w->size_given = true;
                        break;
                case 'H':
                        w->o.flags &= ~(STOA_OPEN_HUGE | STOA_OPEN_NOHUGE);
                        if (!strcmp(optarg, "require"))
                                w->o.flags |= STOA_OPEN_HUGE;
                        else if (!strcmp(optarg, "refuse"))
                                w->o.flags |= STOA_OPEN_NOHUGE;
                        else if (strcmp(optarg, "prefer"))
                                return usage_error("--huge '%s': give prefer, require or refuse",
                                                   optarg);
                        break;
                case 'm':
                        if (cli_mode("--mode", optarg, &w->o.mode) < 0)
                                return usage_error("%s", cli_error());
                        w->mode_given = true;
                        break;
                case 'i':
                        if (cli_duration("--interval", optarg, 10ull * 1000 * 1000,
                                         3600ull * 1000000000ull, &w->interval_ns) < 0)
                                return usage_error("%s", cli_error());
                        break;
                case '1': w->once = true; break;
                case 'h': usage(stdout); return -1;
                case ':': return usage_error("option '%s' needs an argument", argv[optind - 1]);
                default: return usage_error("unknown option '%s'", argv[optind - 1]);
                }
        }
        if (optind < argc) {
                if (argc - optind > 1)
                        return usage_error("one segment NAME at most; got '%s' and '%s'",
                                           argv[optind], argv[optind + 1]);
                if (w->name && strcmp(w->name, argv[optind]))
                        return usage_error("NAME '%s' and --name '%s' differ", argv[optind],
                                           w->name);
                w->name = argv[optind];
        }
        if (w->name && !*w->name)
                return usage_error("empty segment name");
        if (!w->name)
                w->name = CORE_DEFAULT_NAME;
        return 0;
}

/*
 * An existing segment must be what was asked explicitly; what was left to
 * the default is taken as it is. 0 or EXIT_RUNTIME after saying why.
 */
static int check_existing(struct stoa *c, const struct want *w)
{
        struct seg *s = stoa_core_(c)->seg;
        char have[32], asked[32];
        struct stat st;
        int bad = 0;

        if (s->created)
                return 0;
        if (w->size_given) {
                uint64_t ps = s->page_size ? s->page_size : 4096;
                uint64_t want = (w->o.size + ps - 1) / ps * ps;
                if (want != s->size) {
                        fprintf(stderr, "stoad: segment %s exists with size %s; --size asked "
                                "for %s\n", s->path, cli_bytes(have, sizeof have, s->size),
                                cli_bytes(asked, sizeof asked, w->o.size));
                        bad = 1;
                }
        }
        if ((w->o.flags & STOA_OPEN_HUGE) && s->backing != SEG_BACK_HUGETLB) {
                fprintf(stderr, "stoad: segment %s exists on 4 KiB pages (%s); --huge require "
                        "asked for 2 MiB hugepages\n", s->path, seg_backing_name(s->backing));
                bad = 1;
        }
        if ((w->o.flags & STOA_OPEN_NOHUGE) && s->backing == SEG_BACK_HUGETLB) {
                fprintf(stderr, "stoad: segment %s exists on 2 MiB hugepages; --huge refuse "
                        "asked for none\n", s->path);
                bad = 1;
        }
        if (w->mode_given && fstat(s->fd, &st) == 0 && (st.st_mode & 07777) != w->o.mode) {
                fprintf(stderr, "stoad: segment %s exists with mode %04o; --mode asked for "
                        "%04o\n", s->path, (unsigned)(st.st_mode & 07777), w->o.mode);
                bad = 1;
        }
        if (bad)
                fprintf(stderr, "stoad: refusing to take it instead; run without those options "
                        "to supervise it as it is, or remove it first ('stoa rm %s')\n",
                        w->name);
        return bad ? EXIT_RUNTIME : 0;
}

static int supervise(struct stoa *c, const struct want *w)
{
        struct seg *s = stoa_core_(c)->seg;
        struct seg_super other;
        int r = seg_supervise(s, &other);

        if (r == -EBUSY) {
                uint32_t pid = atomic_load(&other.pid);
                fprintf(stderr, "stoad: segment %s is already supervised by ", s->path);
                if (pid)
                        fprintf(stderr, "pid %u (%.16s on %.64s, uid %u)", pid, other.comm,
                                other.host, other.uid);
                else
                        fprintf(stderr, "another stoad (starting; no pid recorded yet)");
                fprintf(stderr, "; one supervisor per segment: stop that one first\n");
                return EXIT_RUNTIME;
        }
        if (r < 0) {
                fprintf(stderr, "stoad: segment %s: cannot take the supervisor lock: %s\n",
                        s->path, stoa_strerror(r));
                return EXIT_RUNTIME;
        }
        (void)w;
        return 0;
}

static void report_profile(struct stoa *c, uint64_t *last_hits, uint64_t *last_misses)
{
        struct stoa_info info;
        char ratio[32];

        if (stoa_info(c, &info) < 0)
                return;
        uint64_t h = info.hits - *last_hits, m = info.misses - *last_misses;
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
        *last_hits = info.hits;
        *last_misses = info.misses;
}

static int alert_removed(struct stoa *c)
{
        struct stoa_info info;
        unsigned clients = stoa_info(c, &info) == 0 ? info.clients : 0;

        fprintf(stderr, "stoad: ALERT: %s; %u client(s), stoad included, are attached to the "
                "old file, and the next open of the name creates a new segment: restart the "
                "clients and stoad. Exiting.\n",
                *seg_errdetail() ? seg_errdetail() : "segment file removed", clients);
        return EXIT_REMOVED;
}

static int watch(struct stoa *c, const struct want *w)
{
        struct core *core = stoa_core_(c);
        struct stoa_info info;
        uint64_t last_hits = 0, last_misses = 0, since_sweep = 0, since_report = 0;
        struct sigaction sa = { .sa_handler = on_signal };

        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);   /* no SA_RESTART: the sleep ends at once */
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        if (stoa_info(c, &info) == 0) {
                last_hits = info.hits;
                last_misses = info.misses;
        }
        fprintf(stderr, "stoad: watching (pid %d); Ctrl-C to stop (the segment stays)\n",
                (int)getpid());
        /* A first sweep at once: what died before stoad came, and stoad's own slot,
         * so that 'stoa clients' and 'stoa rm' see the supervisor attached. */
        int swept = stoa_sweep(c);
        if (swept > 0)
                fprintf(stderr, "stoad: swept: %d dead slot(s) or expired item(s)\n", swept);
        while (!stop) {
                uint64_t step = w->interval_ns - since_sweep < WATCH_STEP_NS ?
                                w->interval_ns - since_sweep : WATCH_STEP_NS;
                struct timespec ts = { (time_t)(step / 1000000000u), (long)(step % 1000000000u) };
                nanosleep(&ts, NULL);
                if (hup) {
                        hup = 0;
                        fprintf(stderr, "stoad: SIGHUP: nothing to reload; ignored\n");
                }
                if (core_check_removed(core) == STOA_E_REMOVED)
                        return alert_removed(c);
                since_sweep += step;
                if (since_sweep < w->interval_ns)
                        continue;
                since_sweep = 0;
                /* Dead clients' slots and memory, expired items, retired blocks. */
                int n = stoa_sweep(c);
                if (n == STOA_E_REMOVED)
                        return alert_removed(c);
                if (n > 0)
                        fprintf(stderr, "stoad: swept: %d dead slot(s) or expired item(s)\n", n);
                since_report += w->interval_ns;
                if (since_report >= 10ull * w->interval_ns) {
                        since_report = 0;
                        report_profile(c, &last_hits, &last_misses);
                }
        }
        fprintf(stderr, "stoad: stopping\n");
        return 0;
}

int main(int argc, char **argv)
{
        struct want w = { .interval_ns = 1000000000ull };
        struct stoa_info info;
        struct stoa *c;
        int r = parse(argc, argv, &w);

        if (r)
                return r < 0 ? 0 : r;
        r = stoa_open(&c, w.name, &w.o);
        if (r < 0) {
                fprintf(stderr, "stoad: cannot open segment '%s': %s%s%s\n", w.name,
                        stoa_strerror(r), *stoa_errdetail() ? ": " : "", stoa_errdetail());
                return EXIT_RUNTIME;
        }
        if ((r = check_existing(c, &w)) || (!w.once && (r = supervise(c, &w)))) {
                stoa_close(c);
                return r;
        }
        stoa_info(c, &info);
        fprintf(stderr, "stoad: segment %s: %llu MiB (%llu MiB heap), %s, %u slots, %llu items%s\n",
                info.path, (unsigned long long)(info.size >> 20),
                (unsigned long long)(info.heap_bytes >> 20), info.backing, info.slots,
                (unsigned long long)info.items,
                stoa_core_(c)->seg->created ? " (created)" : "");
        if (!w.once) {
                r = watch(c, &w);
        } else {                /* one pass of what the watch does each interval */
                int n = stoa_sweep(c);
                if (n < 0)
                        fprintf(stderr, "stoad: sweep failed: %s\n", stoa_strerror(n));
                else
                        fprintf(stderr, "stoad: swept: %d dead slot(s) or expired item(s)\n", n);
                r = n < 0 ? EXIT_RUNTIME : 0;
        }
        seg_unsupervise(stoa_core_(c)->seg);
        stoa_close(c);
        return r;
}
