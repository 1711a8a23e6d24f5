/*
 * shm/names.c: see names.h.
 */
#include "shm/names.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <linux/magic.h>

bool name_is_bare(const char *name)
{
        return strchr(name, '/') == NULL;
}

int check_bare_name(const char *name)
{
        size_t n = strlen(name);

        if (n == 0 || n > SEG_NAME_MAX || name[0] == '.') {
                seg_set_errdetail("segment name '%s' must be 1-%u characters and not start with '.'",
                                  name, SEG_NAME_MAX);
                return -EINVAL;
        }
        for (size_t i = 0; i < n; i++) {
                char c = name[i];
                if (!(c == '-' || c == '_' || c == '.' || (c >= '0' && c <= '9') ||
                      (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
                        seg_set_errdetail("segment name '%s': only letters, digits, '.', '-' "
                                          "and '_' (or give a path with '/')", name);
                        return -EINVAL;
                }
        }
        return 0;
}


bool dir_is_hugetlbfs(const char *dir)
{
        struct statfs sf;

        return statfs(dir, &sf) == 0 && (unsigned long)sf.f_type == HUGETLBFS_MAGIC;
}

/* Candidate directories for a bare name, in order of preference. */
void bare_dirs(struct dirlist *dl)
{
        const char *env = getenv("STOA_DIR");
        FILE *f;
        char line[1024];

        dl->n = 0;
        if (env && *env) {
                snprintf(dl->dir[0], PATH_MAX, "%s", env);
                dl->huge[0] = dir_is_hugetlbfs(env);
                dl->n = 1;
                return;
        }
        f = fopen("/proc/self/mounts", "re");
        while (f && fgets(line, sizeof(line), f) && dl->n < MAX_DIRS - 1) {
                char dev[256], mnt[512], type[64];
                struct statfs sf;
                if (sscanf(line, "%255s %511s %63s", dev, mnt, type) != 3 ||
                    strcmp(type, "hugetlbfs") != 0)
                        continue;
                if (statfs(mnt, &sf) != 0 || sf.f_bsize != SEG_HUGE_2M)
                        continue;
                snprintf(dl->dir[dl->n], PATH_MAX, "%s/stoa", mnt);
                dl->huge[dl->n++] = true;
        }
        if (f)
                fclose(f);
        snprintf(dl->dir[dl->n], PATH_MAX, "%s", SEG_DEFAULT_DIR);
        dl->huge[dl->n++] = false;
}

enum seg_backing dir_backing(const char *dir)
{
        struct statfs sf;

        if (statfs(dir, &sf) != 0 || (unsigned long)sf.f_type == TMPFS_MAGIC)
                return SEG_BACK_SHMEM;
        return SEG_BACK_FILE;
}

int split_path(const char *path, char *dir, size_t dlen, const char **base)
{
        const char *slash = strrchr(path, '/');

        if (!slash || slash[1] == 0) {
                seg_set_errdetail("'%s' does not name a file", path);
                return -EINVAL;
        }
        *base = slash + 1;
        if (slash == path)
                snprintf(dir, dlen, "/");
        else
                snprintf(dir, dlen, "%.*s", (int)(slash - path), path);
        return 0;
}

int ensure_dir(const char *dir)
{
        if (mkdir(dir, 01777) == 0) {
                chmod(dir, 01777);      /* like /dev/shm: any user may create */
                return 0;
        }
        if (errno == EEXIST)
                return 0;
        seg_set_errdetail("cannot create directory %s: %s", dir, strerror(errno));
        return -errno;
}

int seg_find(const char *name, char *buf, size_t len)
{
        struct dirlist dl;

        if (!name || !buf)
                return -EINVAL;
        if (!name_is_bare(name)) {
                if (access(name, F_OK) != 0)
                        return -errno;
                snprintf(buf, len, "%s", name);
                return 0;
        }
        int r = check_bare_name(name);
        if (r < 0)
                return r;
        bare_dirs(&dl);
        for (unsigned i = 0; i < dl.n; i++) {
                snprintf(buf, len, "%s/%s", dl.dir[i], name);
                if (access(buf, F_OK) == 0)
                        return 0;
                if (errno != ENOENT) {
                        seg_set_errdetail("%s: %s", buf, strerror(errno));
                        return -errno;
                }
        }
        seg_set_errdetail("no segment named '%s' (looked in %s%s)", name, dl.dir[0],
                          dl.n > 1 ? " and others" : "");
        return -ENOENT;
}

