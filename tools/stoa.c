/*
 * stoa: the inspection tool. Looks into a running segment the way
 * varnishstat, redis-cli INFO and memcached's "stats" look into theirs:
 * figures (stat), one key (get/set/del), who is attached (clients), and a full
 * consistency walk (check); it lists and drops namespaces (ns) and empties a
 * segment (flush). It also creates an empty segment (create), so a
 * shell script can set one up without stoad.
 *
 * It uses only the public API (stoa/stoa.h), so what it shows is what any
 * client can see. Every verb but create attaches with STOA_OPEN_NOCREATE:
 * inspecting a name that does not exist must never leave a segment behind.
 * get/set/del take a client slot like any client; stat, clients, check and
 * rm attach with STOA_OPEN_RDONLY: a read-only mapping, no slot, nothing
 * counted or recovered, so a user who may only read the file can inspect it.
 * rm removes a segment's file only when no live client is attached, since
 * those would keep the old file while new clients created another.
 */
#include "tools/cli.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Exit codes: runtime failures and usage errors are told apart. */
enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

/* Options, and which verbs accept them. */
enum { OPT_JSON = 1u << 0, OPT_NS = 1u << 1, OPT_TTL = 1u << 2, OPT_SIZE = 1u << 3,
       OPT_FORCE = 1u << 4 };

struct args {
        const char *name;       /* segment */
        const char *key, *value;
        const char *ns;
        uint32_t ttl_s;
        uint64_t size;
        unsigned seen;          /* OPT_* given */
        bool json;
        bool force;
};

static void usage(FILE *f)
{
        fprintf(f,
                "usage: stoa stat NAME [--json]        segment figures, per namespace\n"
                "       stoa get NAME KEY [--ns NS]     print a value (raw bytes)\n"
                "       stoa set NAME KEY VALUE [--ttl SECONDS] [--ns NS]\n"
                "                                       store a value; VALUE '-' reads stdin\n"
                "       stoa del NAME KEY [--ns NS]     remove a key\n"
                "       stoa ns NAME list               the namespaces ('default' is the default)\n"
                "       stoa ns NAME drop NS            drop namespace NS and every key in it\n"
                "       stoa flush NAME                 remove every key of every namespace\n"
                "       stoa clients NAME [--json]      the client slots in use, alive or dead\n"
                "       stoa check NAME                 verify every invariant of the segment\n"
                "       stoa create NAME [--size BYTES[k|m|g]]\n"
                "                                       create an empty segment (default 256m;\n"
                "                                       16m to 64t)\n"
                "       stoa rm NAME [--force]          remove a segment; refused while live\n"
                "                                       clients are attached, unless --force\n"
                "A bare NAME lives in $STOA_DIR (else a hugetlbfs mount, else /dev/shm/stoa);\n"
                "a NAME with a '/' is a path. Only create makes a segment; every other verb\n"
                "attaches to an existing one. Put '--' before a KEY or VALUE that starts\n"
                "with '-'. Exit status: 0 ok, 1 failure (not found, inconsistent), 2 usage.\n");
}

#define usage_error(...) cli_usage_error("stoa", __VA_ARGS__)
_Static_assert(EXIT_USAGE == 2, "cli_usage_error returns 2");

/* ---- output helpers ---- */

/* Bytes as "64.0 MiB". */
static const char *human(char *buf, size_t len, uint64_t v)
{
        static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
        double d = (double)v;
        unsigned u = 0;

        while (d >= 1024 && u < 4) {
                d /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(buf, len, "%" PRIu64 " B", v);
        else
                snprintf(buf, len, "%.1f %s", d, unit[u]);
        return buf;
}

/* A fixed-size char field from the segment, printable, for a terminal. */
static void put_text(FILE *f, const char *s, size_t max)
{
        size_t n = strnlen(s, max);

        for (size_t i = 0; i < n; i++) {
                unsigned char ch = (unsigned char)s[i];
                if (ch >= 0x20 && ch < 0x7f && ch != '\\')
                        fputc(ch, f);
                else
                        fprintf(f, "\\x%02x", ch);
        }
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
        size_t len = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;

        if (s[0] >= 0xf8 || len == 0 || len > n)
                return 0;
        for (size_t i = 1; i < len; i++)
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
        if ((len == 3 && s[0] == 0xe0 && s[1] < 0xa0) ||       /* overlong */
            (len == 3 && s[0] == 0xed && s[1] >= 0xa0) ||      /* surrogate */
            (len == 4 && s[0] == 0xf0 && s[1] < 0x90) ||       /* overlong */
            (len == 4 && s[0] == 0xf4 && s[1] >= 0x90))        /* past U+10FFFF */
                return 0;
        return len;
}

/* A JSON string literal. Bytes that are not valid UTF-8 become U+FFFD. */
static void put_json_str(FILE *f, const char *s, size_t max)
{
        const unsigned char *p = (const unsigned char *)s;
        size_t n = strnlen(s, max);

        fputc('"', f);
        for (size_t i = 0; i < n;) {
                unsigned char ch = p[i];
                if (ch == '"' || ch == '\\') {
                        fprintf(f, "\\%c", ch);
                } else if (ch < 0x20) {
                        fprintf(f, "\\u%04x", ch);
                } else if (ch >= 0x80) {
                        size_t l = utf8_len(p + i, n - i);
                        if (l) {
                                fwrite(p + i, 1, l, f);
                                i += l;
                                continue;
                        }
                        fputs("\\ufffd", f);
                } else {
                        fputc(ch, f);
                }
                i++;
        }
        fputc('"', f);
}

/* ---- attaching ---- */

static int open_seg(struct stoa **ret, const char *name, const char *ns, uint32_t flags,
                    uint64_t size)
{
        struct stoa_options o = { .flags = flags, .ns = ns, .size = size };
        int r = stoa_open(ret, name, &o);

        if (r == -E2BIG && ns && *ns) {
                fprintf(stderr, "stoa: namespace name longer than %u bytes\n", STOA_KEY_MAX);
                return EXIT_RUNTIME;
        }
        if (r == -ENOENT) {
                fprintf(stderr, "stoa: segment %s: no such segment (create it with stoad or "
                        "'stoa create')\n", name);
                return EXIT_RUNTIME;
        }
        if (r < 0) {
                fprintf(stderr, "stoa: segment %s: %s%s%s\n", name, stoa_strerror(r),
                        *stoa_errdetail() ? ": " : "", stoa_errdetail());
                return EXIT_RUNTIME;
        }
        return 0;
}

/* One line for a failed call on a key. */
static int key_error(const char *verb, const char *key, int r)
{
        fputs("stoa: ", stderr);
        put_text(stderr, key, 80);
        if (strnlen(key, 81) > 80)
                fputs("...", stderr);
        if (r == -ENOENT)
                fputs(": not found\n", stderr);
        else if (r == -E2BIG && strlen(key) > STOA_KEY_MAX)
                fprintf(stderr, ": %s failed: key is %zu bytes; the limit is %u\n", verb,
                        strlen(key), STOA_KEY_MAX);
        else
                fprintf(stderr, ": %s failed: %s\n", verb, stoa_strerror(r));
        return EXIT_RUNTIME;
}

/* ---- stat ---- */

static void stat_text(const struct stoa_info *in)
{
        char h[32];
        uint64_t lookups = in->hits + in->misses;

        printf("segment          %.*s\n", (int)strnlen(in->path, sizeof in->path), in->path);
        printf("backing          %.*s\n", (int)strnlen(in->backing, sizeof in->backing),
               in->backing);
        printf("size             %-14" PRIu64 " %s\n", in->size, human(h, sizeof h, in->size));
        printf("heap             %-14" PRIu64 " %s\n", in->heap_bytes,
               human(h, sizeof h, in->heap_bytes));
        printf("heap used        %-14" PRIu64 " %s, %.1f%%\n", in->used_bytes,
               human(h, sizeof h, in->used_bytes),
               in->heap_bytes ? 100.0 * (double)in->used_bytes / (double)in->heap_bytes : 0.0);
        printf("heap free        %-14" PRIu64 " %s\n", in->free_bytes,
               human(h, sizeof h, in->free_bytes));
        printf("items            %" PRIu64 "\n", in->items);
        printf("item bytes       %-14" PRIu64 " %s\n", in->item_bytes,
               human(h, sizeof h, in->item_bytes));
        printf("index buckets    %" PRIu64 "\n", in->index_buckets);
        uint64_t capacity = in->index_buckets * in->index_ways;
        printf("index entries    %-14" PRIu64 " load %.3f entries/bucket, %.1f%% of %" PRIu64 "\n",
               in->index_entries,
               in->index_buckets ? (double)in->index_entries / (double)in->index_buckets : 0.0,
               capacity ? 100.0 * (double)in->index_entries / (double)capacity : 0.0, capacity);
        printf("hits             %" PRIu64 "\n", in->hits);
        printf("misses           %" PRIu64 "\n", in->misses);
        if (lookups)
                printf("hit ratio        %.4f\n", (double)in->hits / (double)lookups);
        else
                printf("hit ratio        -\n");
        printf("sets             %" PRIu64 "\n", in->sets);
        printf("dels             %" PRIu64 "\n", in->dels);
        printf("evictions        %" PRIu64 "\n", in->evictions);
        printf("expirations      %" PRIu64 "\n", in->expired);
        printf("index moves      %-14" PRIu64 " (entries moved to their other bucket for room)\n",
               in->index_moves);
        printf("index conflicts  %-14" PRIu64 " (live items removed for room in the index)\n",
               in->conflicts);
        printf("clients alive    %" PRIu32 "\n", in->clients);
        printf("clients dead     %" PRIu32 "%s\n", in->dead_clients,
               in->dead_clients ? "  (not yet recovered; stoad recovers them)" : "");
        printf("client slots     %" PRIu32 "\n", in->slots);

        for (uint32_t i = 0; i < in->nns && i < STOA_NS_MAX + 1; i++) {
                const struct stoa_ns_info *n = &in->ns[i];
                if (n->name[0]) {
                        printf("\nnamespace \"");
                        put_text(stdout, n->name, sizeof n->name);
                        printf("\"\n");
                } else {
                        printf("\nnamespace (default)\n");
                }
                printf("  items          %" PRIu64 "\n", n->items);
                printf("  item bytes     %-14" PRIu64 " %s\n", n->bytes,
                       human(h, sizeof h, n->bytes));
                printf("  hits           %" PRIu64 "\n", n->hits);
                printf("  misses         %" PRIu64 "\n", n->misses);
                printf("  sets           %" PRIu64 "\n", n->sets);
                printf("  dels           %" PRIu64 "\n", n->dels);
                printf("  evictions      %" PRIu64 "\n", n->evictions);
                printf("  expirations    %" PRIu64 "\n", n->expired);
                printf("  conflicts      %" PRIu64 "\n", n->conflicts);
        }
}

static void json_ratio(const char *field, uint64_t num, uint64_t den)
{
        if (den)
                printf("\"%s\":%.6f", field, (double)num / (double)den);
        else
                printf("\"%s\":null", field);
}

static void stat_json(const struct stoa_info *in)
{
        printf("{\"segment\":{\"path\":");
        put_json_str(stdout, in->path, sizeof in->path);
        printf(",\"backing\":");
        put_json_str(stdout, in->backing, sizeof in->backing);
        printf(",\"size\":%" PRIu64 "},", in->size);
        printf("\"heap\":{\"bytes\":%" PRIu64 ",\"used\":%" PRIu64 ",\"free\":%" PRIu64 "},",
               in->heap_bytes, in->used_bytes, in->free_bytes);
        printf("\"items\":%" PRIu64 ",\"item_bytes\":%" PRIu64 ",", in->items, in->item_bytes);
        printf("\"index\":{\"buckets\":%" PRIu64 ",\"ways\":%" PRIu32 ",\"entries\":%" PRIu64
               ",\"moves\":%" PRIu64 ",\"conflicts\":%" PRIu64 ",",
               in->index_buckets, in->index_ways, in->index_entries, in->index_moves, in->conflicts);
        json_ratio("load", in->index_entries, in->index_buckets);
        printf("},\"hits\":%" PRIu64 ",\"misses\":%" PRIu64 ",", in->hits, in->misses);
        json_ratio("hit_ratio", in->hits, in->hits + in->misses);
        printf(",\"sets\":%" PRIu64 ",\"dels\":%" PRIu64 ",\"evictions\":%" PRIu64
               ",\"expirations\":%" PRIu64 ",",
               in->sets, in->dels, in->evictions, in->expired);
        printf("\"clients\":{\"alive\":%" PRIu32 ",\"dead\":%" PRIu32 ",\"slots\":%" PRIu32 "},",
               in->clients, in->dead_clients, in->slots);
        printf("\"namespaces\":[");
        for (uint32_t i = 0; i < in->nns && i < STOA_NS_MAX + 1; i++) {
                const struct stoa_ns_info *n = &in->ns[i];
                printf("%s{\"name\":", i ? "," : "");
                put_json_str(stdout, n->name, sizeof n->name);
                printf(",\"items\":%" PRIu64 ",\"item_bytes\":%" PRIu64 ",\"hits\":%" PRIu64
                       ",\"misses\":%" PRIu64 ",",
                       n->items, n->bytes, n->hits, n->misses);
                json_ratio("hit_ratio", n->hits, n->hits + n->misses);
                printf(",\"sets\":%" PRIu64 ",\"dels\":%" PRIu64 ",\"evictions\":%" PRIu64
                       ",\"expirations\":%" PRIu64 ",\"conflicts\":%" PRIu64 "}",
                       n->sets, n->dels, n->evictions, n->expired, n->conflicts);
        }
        printf("]}\n");
}

static int cmd_stat(struct stoa *c, const struct args *a)
{
        static struct stoa_info in;     /* 4 KiB of namespaces: not on the stack */
        int r = stoa_info(c, &in);

        if (r < 0) {
                fprintf(stderr, "stoa: segment %s: cannot read figures: %s\n", a->name,
                        stoa_strerror(r));
                return EXIT_RUNTIME;
        }
        if (a->json)
                stat_json(&in);
        else
                stat_text(&in);
        return 0;
}

/* ---- get / set / del ---- */

static int cmd_get(struct stoa *c, const struct args *a)
{
        size_t cap = 64 << 10, vlen = 0;
        char *buf = NULL;
        int r;

        /* The value may grow between two calls: retry with what it now needs. */
        for (int tries = 0; tries < 16; tries++) {
                char *nb = realloc(buf, cap ? cap : 1);
                if (!nb) {
                        r = -ENOMEM;
                        break;
                }
                buf = nb;
                r = stoa_get(c, a->key, strlen(a->key), buf, cap, &vlen);
                if (r != -ENOBUFS)
                        break;
                cap = vlen > cap ? vlen : cap * 2;
        }
        if (r < 0) {
                free(buf);
                return key_error("get", a->key, r);
        }
        if (fwrite(buf, 1, vlen, stdout) != vlen || (isatty(STDOUT_FILENO) && putchar('\n') < 0)
            || fflush(stdout) != 0) {
                fprintf(stderr, "stoa: writing the value: %s\n", strerror(errno));
                free(buf);
                return EXIT_RUNTIME;
        }
        free(buf);
        return 0;
}

/* All of stdin into a growing buffer. 0 or -errno. */
static int read_stdin(char **ret, size_t *ret_len)
{
        size_t cap = 64 << 10, len = 0;
        char *buf = malloc(cap);

        if (!buf)
                return -ENOMEM;
        for (;;) {
                if (len == cap) {
                        char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
                        if (!nb) {
                                free(buf);
                                return -ENOMEM;
                        }
                        buf = nb;
                        cap *= 2;
                }
                ssize_t n = read(STDIN_FILENO, buf + len, cap - len);
                if (n == 0)
                        break;
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        int e = -errno;
                        free(buf);
                        return e;
                }
                len += (size_t)n;
        }
        *ret = buf;
        *ret_len = len;
        return 0;
}

static int cmd_set(struct stoa *c, const struct args *a)
{
        const char *val = a->value;
        size_t vlen = strlen(a->value);
        char *in = NULL;
        int r;

        if (!strcmp(a->value, "-")) {
                r = read_stdin(&in, &vlen);
                if (r < 0) {
                        fprintf(stderr, "stoa: reading the value from stdin: %s\n",
                                strerror(-r));
                        return EXIT_RUNTIME;
                }
                val = in;
        }
        /* -EAGAIN: a stopped reader holds back reclamation; it may move on. */
        for (int tries = 0;; tries++) {
                r = stoa_set(c, a->key, strlen(a->key), val, vlen, a->ttl_s);
                if (r != -EAGAIN || tries == 20)
                        break;
                nanosleep(&(struct timespec){ .tv_nsec = 50 * 1000 * 1000 }, NULL);
        }
        free(in);
        if (r == -ENOSPC && a->ns) {
                fprintf(stderr, "stoa: segment %s: no room for namespace '%s': a segment holds at most "
                        "%u named namespaces (see 'stoa ns %s list', 'stoa ns %s drop NS')\n",
                        a->name, a->ns, STOA_NS_MAX, a->name, a->name);
                return EXIT_RUNTIME;
        }
        return r < 0 ? key_error("set", a->key, r) : 0;
}

static int cmd_del(struct stoa *c, const struct args *a)
{
        int r = stoa_del(c, a->key, strlen(a->key));

        return r < 0 ? key_error("del", a->key, r) : 0;
}

/* ---- ns / flush ---- */

static int ns_print(const char *name, uint32_t index, void *arg)
{
        (void)index;
        (void)arg;
        put_text(stdout, name, STOA_KEY_MAX + 1);
        putchar('\n');
        return 0;
}

/* a->key is the sub-command, a->value the namespace to drop. */
static int cmd_ns(struct stoa *c, const struct args *a)
{
        int r;

        if (!strcmp(a->key, "list")) {
                r = stoa_ns_list(c, ns_print, NULL);
                if (r < 0) {
                        fprintf(stderr, "stoa: segment %s: cannot list namespaces: %s\n", a->name,
                                stoa_strerror(r));
                        return EXIT_RUNTIME;
                }
                return 0;
        }
        r = stoa_ns_drop(c, a->value);
        if (r == -EPERM) {
                fprintf(stderr, "stoa: the default namespace cannot be dropped (stoa flush %s "
                        "empties the whole segment)\n", a->name);
        } else if (r == -ENOENT) {
                fprintf(stderr, "stoa: segment %s: no namespace '", a->name);
                put_text(stderr, a->value, 80);
                fputs("'\n", stderr);
        } else if (r < 0) {
                fprintf(stderr, "stoa: segment %s: drop failed: %s\n", a->name, stoa_strerror(r));
        }
        return r < 0 ? EXIT_RUNTIME : 0;
}

static int cmd_flush(struct stoa *c, const struct args *a)
{
        int r = stoa_flush(c);

        if (r < 0) {
                fprintf(stderr, "stoa: segment %s: flush failed: %s%s\n", a->name, stoa_strerror(r),
                        r == -EAGAIN ? " (run it again)" : "");
                return EXIT_RUNTIME;
        }
        return 0;
}

/* ---- clients ---- */

struct clients_ctx {
        bool json;
        unsigned n, dead;
        uint32_t self_pid;      /* to mark the tool's own slot */
        uint64_t self_pidns;
};

/* The library may or may not give an inspecting handle a slot of its own. */
static bool is_self(const struct clients_ctx *x, const struct stoa_client *cl)
{
        return cl->alive && cl->pid == x->self_pid && cl->pidns == x->self_pidns;
}

static int client_text(const struct stoa_client *cl, void *arg)
{
        struct clients_ctx *x = arg;
        char since[32] = "-";
        time_t t = (time_t)(cl->since_ns / 1000000000u);
        struct tm tm;

        if (cl->since_ns && localtime_r(&t, &tm))
                strftime(since, sizeof since, "%Y-%m-%d %H:%M:%S", &tm);
        if (x->n++ == 0)
                printf("%-5s %-5s %-8s %-12s %-16s %-19s %12s %5s %7s\n", "SLOT", "STATE",
                       "PID", "PIDNS", "COMM", "SINCE", "READING", "VIEWS", "RETIRED");
        x->dead += !cl->alive;
        printf("%-5" PRIu32 " %-5s %-8" PRIu32 " %-12" PRIu64 " ", cl->slot,
               cl->alive ? "alive" : "DEAD", cl->pid, cl->pidns);
        put_text(stdout, cl->comm, sizeof cl->comm);
        printf("%*s %-19s ", 16 - (int)strnlen(cl->comm, sizeof cl->comm), "", since);
        if (cl->reading)
                printf("%#12" PRIx64, cl->reading);
        else
                printf("%12s", "-");
        printf(" %5" PRIu32 " %7" PRIu32 "%s%s\n", cl->views, cl->retired,
               cl->alive ? "" : "  <- dead, not yet recovered",
               is_self(x, cl) ? "  (this tool)" : "");
        return 0;
}

static int client_json(const struct stoa_client *cl, void *arg)
{
        struct clients_ctx *x = arg;

        x->dead += !cl->alive;
        printf("%s{\"slot\":%" PRIu32 ",\"alive\":%s,\"pid\":%" PRIu32 ",\"pidns\":%" PRIu64
               ",\"comm\":",
               x->n++ ? "," : "", cl->slot, cl->alive ? "true" : "false", cl->pid, cl->pidns);
        put_json_str(stdout, cl->comm, sizeof cl->comm);
        printf(",\"since_ns\":%" PRIu64 ",\"reading\":%" PRIu64
               ",\"views\":%" PRIu32 ",\"retired\":%" PRIu32 ",\"self\":%s}",
               cl->since_ns, cl->reading, cl->views, cl->retired,
               is_self(x, cl) ? "true" : "false");
        return 0;
}

static int cmd_clients(struct stoa *c, const struct args *a)
{
        struct clients_ctx x = { .json = a->json, .self_pid = (uint32_t)getpid() };
        struct stat st;
        int r;

        if (stat("/proc/self/ns/pid", &st) == 0)
                x.self_pidns = (uint64_t)st.st_ino;
        if (x.json)
                printf("{\"clients\":[");
        r = stoa_clients(c, x.json ? client_json : client_text, &x);
        if (x.json)
                printf("],\"count\":%u,\"dead\":%u}\n", x.n, x.dead);
        else
                printf("%u client(s), %u dead\n", x.n, x.dead);
        if (r < 0) {
                fflush(stdout);
                fprintf(stderr, "stoa: segment %s: cannot list clients: %s\n", a->name,
                        stoa_strerror(r));
                return EXIT_RUNTIME;
        }
        return 0;
}

/* ---- check ---- */

static void check_report(const char *msg, void *arg)
{
        unsigned *n = arg;

        (*n)++;
        printf("problem: %s\n", msg ? msg : "(no description)");
}

static int cmd_check(struct stoa *c, const struct args *a)
{
        unsigned reported = 0;
        int r = stoa_check(c, check_report, &reported);

        if (r < 0) {
                fflush(stdout);
                fprintf(stderr, "stoa: segment %s: check could not run: %s\n", a->name,
                        stoa_strerror(r));
                return EXIT_RUNTIME;
        }
        if (r == 0) {
                /* Dead clients' journals were judged as their recovery will settle them. */
                struct stoa_info in;
                if (stoa_info(c, &in) == 0 && in.dead_clients)
                        printf("segment %s: consistent (%" PRIu32 " dead client(s) awaiting "
                               "recovery; checked as their recovery will leave it)\n", a->name,
                               in.dead_clients);
                else
                        printf("segment %s: consistent\n", a->name);
                return 0;
        }
        if (reported < (unsigned)r)
                printf("segment %s: %d problem(s) found, %u shown\n", a->name, r, reported);
        else
                printf("segment %s: %d problem(s) found\n", a->name, r);
        return EXIT_RUNTIME;
}

/* ---- create ---- */

static int cmd_create(const struct args *a)
{
        static struct stoa_info in;
        struct stoa *c;
        char h[32];
        int r;

        /* Refuse an existing name rather than silently ignore --size. */
        if (stoa_open(&c, a->name, &(struct stoa_options){ .flags = STOA_OPEN_NOCREATE }) == 0) {
                stoa_close(c);
                fprintf(stderr, "stoa: segment %s: already exists\n", a->name);
                return EXIT_RUNTIME;
        }
        if ((r = open_seg(&c, a->name, NULL, 0, a->size)))
                return r;
        r = stoa_info(c, &in);
        if (r == 0)
                printf("created %.*s: %s, %.*s\n", (int)strnlen(in.path, sizeof in.path), in.path,
                       human(h, sizeof h, in.size),
                       (int)strnlen(in.backing, sizeof in.backing), in.backing);
        else
                printf("created %s\n", a->name);
        stoa_close(c);
        return 0;
}

/* ---- rm ---- */

struct rm_ctx {
        unsigned alive;
        char who[512];          /* "pid 12 (stoad), pid 40 (app), ..." */
};

static int rm_client(const struct stoa_client *cl, void *arg)
{
        struct rm_ctx *x = arg;
        size_t len = strlen(x->who);
        char comm[sizeof cl->comm + 1];

        if (!cl->alive)
                return 0;
        snprintf(comm, sizeof comm, "%.*s", (int)strnlen(cl->comm, sizeof cl->comm), cl->comm);
        for (char *p = comm; *p; p++)
                if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
                        *p = '?';
        if (len < sizeof x->who - 64)
                snprintf(x->who + len, sizeof x->who - len, "%spid %" PRIu32 " (%s)",
                         x->alive ? ", " : "", cl->pid, comm);
        else if (len < sizeof x->who - 4 && !strstr(x->who, "..."))
                snprintf(x->who + len, sizeof x->who - len, ", ...");
        x->alive++;
        return 0;
}

/*
 * Remove the segment's file, unless live clients are attached. There is a
 * window between the look and the unlink in which a client may attach; it
 * then gets STOA_E_REMOVED within a second of its next write.
 */
static int cmd_rm(const struct args *a)
{
        static struct stoa_info in;
        struct rm_ctx x = { 0 };
        struct stoa *c;
        char path[sizeof in.path + 1];
        int r;

        if ((r = open_seg(&c, a->name, NULL, STOA_OPEN_RDONLY, 0)))
                return r;
        if ((r = stoa_info(c, &in)) == 0)
                r = stoa_clients(c, rm_client, &x);
        stoa_close(c);
        if (r < 0) {
                fprintf(stderr, "stoa: segment %s: cannot list its clients: %s\n", a->name,
                        stoa_strerror(r));
                return EXIT_RUNTIME;
        }
        snprintf(path, sizeof path, "%.*s", (int)strnlen(in.path, sizeof in.path), in.path);
        if (x.alive && !a->force) {
                fprintf(stderr, "stoa: segment %s is in use by %u live client(s): %s; stop "
                        "them first (or --force: they keep the old file and get "
                        "STOA_E_REMOVED)\n", path, x.alive, x.who);
                return EXIT_RUNTIME;
        }
        if (unlink(path) != 0) {
                fprintf(stderr, "stoa: cannot remove %s: %s%s\n", path, strerror(errno),
                        errno == EACCES || errno == EPERM
                                ? " (needs write access to its directory)" : "");
                return EXIT_RUNTIME;
        }
        if (x.alive)
                printf("removed %s; %u live client(s) still attached to the old file: %s\n",
                       path, x.alive, x.who);
        else
                printf("removed %s\n", path);
        return 0;
}

/* ---- command line ---- */

static const struct verb {
        const char *name;
        int nargs;              /* after NAME */
        unsigned opts;          /* OPT_* accepted */
        int (*run)(struct stoa *c, const struct args *a);
        uint32_t flags;         /* STOA_OPEN_* besides NOCREATE */
        int (*run_name)(const struct args *a);  /* instead of run: opens itself */
} verbs[] = {
        { "stat", 0, OPT_JSON, cmd_stat, STOA_OPEN_RDONLY, NULL },
        { "get", 1, OPT_NS, cmd_get, 0, NULL },
        { "set", 2, OPT_NS | OPT_TTL, cmd_set, 0, NULL },
        { "del", 1, OPT_NS, cmd_del, 0, NULL },
        { "ns", 1, 0, cmd_ns, 0, NULL },        /* list | drop NS (2) */
        { "flush", 0, 0, cmd_flush, 0, NULL },
        { "clients", 0, OPT_JSON, cmd_clients, STOA_OPEN_RDONLY, NULL },
        { "check", 0, 0, cmd_check, STOA_OPEN_RDONLY, NULL },
        { "create", 0, OPT_SIZE, NULL, 0, cmd_create },
        { "rm", 0, OPT_FORCE, NULL, 0, cmd_rm },
};

static const char *const opt_names[] = { "--json", "--ns", "--ttl", "--size", "--force" };

/* Options anywhere on the line (GNU getopt permutes). 0, -1 (--help) or EXIT_USAGE. */
static int parse_opts(int argc, char **argv, struct args *a)
{
        static const struct option lopts[] = {
                { "json", no_argument, NULL, 'j' },
                { "ns", required_argument, NULL, 'n' },
                { "ttl", required_argument, NULL, 't' },
                { "size", required_argument, NULL, 's' },
                { "force", no_argument, NULL, 'f' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        unsigned long long v;
        char *end;
        int opt;

        opterr = 0;
        while ((opt = getopt_long(argc, argv, ":jn:t:s:fh", lopts, NULL)) != -1) {
                switch (opt) {
                case 'j': a->json = true; a->seen |= OPT_JSON; break;
                case 'n': a->ns = optarg; a->seen |= OPT_NS; break;
                case 't':
                        errno = 0;
                        v = strtoull(optarg, &end, 10);
                        if (end == optarg || *end || *optarg == '-' || errno || v > UINT32_MAX)
                                return usage_error("bad --ttl '%s': whole seconds expected", optarg);
                        a->ttl_s = (uint32_t)v;
                        a->seen |= OPT_TTL;
                        break;
                case 's':
                        if (cli_size("--size", optarg, STOA_SIZE_MIN, STOA_SIZE_MAX,
                                     &a->size) < 0)
                                return usage_error("%s", cli_error());
                        a->seen |= OPT_SIZE;
                        break;
                case 'f': a->force = true; a->seen |= OPT_FORCE; break;
                case 'h': return -1;
                case ':': return usage_error("option '%s' needs an argument", argv[optind - 1]);
                default: return usage_error("unknown option '%s'", argv[optind - 1]);
                }
        }
        return 0;
}

static int run(const struct verb *v, struct args *a)
{
        struct stoa *c;
        int r;

        if (v->run_name)
                return v->run_name(a);
        if ((r = open_seg(&c, a->name, a->ns, STOA_OPEN_NOCREATE | v->flags, 0)))
                return r;
        r = v->run(c, a);
        stoa_close(c);
        return r;
}

int main(int argc, char **argv)
{
        static const char *const arg_names[] = { "NAME", "NAME KEY", "NAME KEY VALUE" };
        struct args a = { 0 };
        const struct verb *v = NULL;
        int r = parse_opts(argc, argv, &a), npos = argc - optind;
        char **pos = argv + optind;

        if (r < 0 || (r == 0 && npos == 1 && !strcmp(pos[0], "help"))) {
                usage(stdout);
                return 0;
        }
        if (r)
                return r;
        if (npos == 0) {
                usage(stderr);
                return EXIT_USAGE;
        }
        for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
                if (!strcmp(pos[0], verbs[i].name))
                        v = &verbs[i];
        if (!v)
                return usage_error("unknown command '%s'", pos[0]);
        int nargs = v->nargs;
        if (v->run == cmd_ns && npos >= 3 && !strcmp(pos[2], "drop"))
                nargs = 2;
        else if (v->run == cmd_ns && npos >= 3 && strcmp(pos[2], "list"))
                return usage_error("unknown ns command '%s': list or drop", pos[2]);
        if (npos != 2 + nargs) {
                if (v->run == cmd_ns) {
                        fprintf(stderr, "stoa: usage: stoa ns NAME list | stoa ns NAME drop NS "
                                "(try 'stoa --help')\n");
                        return EXIT_USAGE;
                }
                fprintf(stderr, "stoa: usage: stoa %s %s (try 'stoa --help')\n", v->name,
                        arg_names[v->nargs]);
                return EXIT_USAGE;
        }
        for (unsigned i = 0; i < sizeof opt_names / sizeof opt_names[0]; i++)
                if ((a.seen & (1u << i)) && !(v->opts & (1u << i))) {
                        fprintf(stderr, "stoa: %s does not take %s (try 'stoa --help')\n",
                                v->name, opt_names[i]);
                        return EXIT_USAGE;
                }
        a.name = pos[1];
        a.key = nargs >= 1 ? pos[2] : NULL;
        a.value = nargs >= 2 ? pos[3] : NULL;
        if (!*a.name)
                return usage_error("empty segment name");
        if (a.key && !*a.key)
                return usage_error("empty key");
        return run(v, &a);
}
