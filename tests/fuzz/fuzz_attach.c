/*
 * tests/fuzz/fuzz_attach.c: attaching to a file of arbitrary bytes.
 *
 * The input's first byte is a mode, the rest is the file. Mode bit 0: make
 * the header's state READY and its checksum right, as a scribbler that knows
 * the format would, so the inputs reach the checks of every layer behind
 * the header's (regions, slot table, allocator, index, cache header). When
 * the header asks for more bytes than the input has (up to 32 MiB), the
 * file is extended with zeros to that size. stoa_open() must return a clean
 * error or a handle; on a handle every call must return.
 */
#include "shm/seg.h"
#include "tests/fuzz/fuzz_common.h"

#include <stddef.h>

#define MAX_FILE (32u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char path[128];
        struct stoa *c = NULL;
        uint8_t mode;
        int fd;

        if (size < 1)
                return 0;
        mode = data[0];
        data++, size--;
        snprintf(path, sizeof(path), "%s/attach", fuzz_dir());
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                abort();
        fuzz_pwrite(fd, data, size, 0);
        if (size >= sizeof(struct seg_header)) {
                struct seg_header h;
                memcpy(&h, data, sizeof(h));
                if ((mode & 1) && h.nregions <= SEG_MAX_REGIONS) {
                        atomic_store(&h.state, SEG_STATE_READY);
                        h.checksum = seg_header_checksum(&h);
                        fuzz_pwrite(fd, &h, sizeof(h), 0);
                }
                if (h.total_size > size && h.total_size <= MAX_FILE &&
                    ftruncate(fd, (off_t)h.total_size) != 0)
                        abort();
        }
        close(fd);

        if (stoa_open(&c, path, &(struct stoa_options){ .flags = STOA_OPEN_NOCREATE }) == 0) {
                fuzz_exercise(c, 64);
                stoa_close(c);
        }
        unlink(path);
        return 0;
}
