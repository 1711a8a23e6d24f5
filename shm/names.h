/*
 * shm/names.h: segment names and the directories they live in (internal to
 * shm/): a bare name is looked for in $STOA_DIR, a hugetlbfs mount, then
 * /dev/shm/stoa; a name with a '/' is a path.
 */
#ifndef STOA_SHM_NAMES_H
#define STOA_SHM_NAMES_H

#include "shm/seg.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#define MAX_DIRS 4

struct dirlist {
        unsigned n;
        char dir[MAX_DIRS][PATH_MAX];
        bool huge[MAX_DIRS];
};

bool name_is_bare(const char *name);
/* 0, or -EINVAL with the detail set: 1-SEG_NAME_MAX of [A-Za-z0-9._-], not starting with '.'. */
int check_bare_name(const char *name);
bool dir_is_hugetlbfs(const char *dir);
/* Candidate directories for a bare name, in order of preference. */
void bare_dirs(struct dirlist *dl);
enum seg_backing dir_backing(const char *dir);
int split_path(const char *path, char *dir, size_t dlen, const char **base);
int ensure_dir(const char *dir);

#endif /* STOA_SHM_NAMES_H */
