/*
 * client/error.c: stoa_strerror() and stoa_errdetail().
 *
 * Every code a stoa call returns gets stoa's own sentence, the errno-range
 * ones included: strerror(ESTALE) says "Stale file handle", which is what a
 * compare-and-swap that lost its race returns, and strerror(E2BIG) says
 * "Argument list too long" for a key over the limit. Only codes stoa never
 * returns fall through to the C library's text.
 */
#include "shm/seg.h"
#include "stoa/stoa.h"

#include <errno.h>
#include <string.h>

STOA_API const char *stoa_strerror(int err)
{
        switch (err) {
        case 0: return "success";
        case STOA_E_FOREIGN: return "not a stoa segment (wrong magic number)";
        case STOA_E_VERSION: return "segment was made by an incompatible version of stoa";
        case STOA_E_TRUNCATED: return "segment file is shorter than its header says (truncated)";
        case STOA_E_HALFINIT: return "segment was left half-initialised by a creator that died";
        case STOA_E_CORRUPT: return "segment is corrupt (a header or structure fails its checks)";
        case STOA_E_NOHUGE: return "hugepages were required but none are available";
        case STOA_E_NOSLOT: return "every client slot of the segment is held by a live client";
        case STOA_E_FORKED: return "handle was inherited across fork(); open a new one in the child";
        case STOA_E_REMOVED: return "the segment file was removed or replaced; reopen";
        case -EINVAL: return "invalid argument (a NULL or empty key or name, unknown flags, "
                             "or a size outside the limits)";
        case -ENOENT: return "not found (no such key, or no such segment)";
        case -EEXIST: return "already exists (the key is present, or the segment)";
        case -E2BIG: return "too big: a key over STOA_KEY_MAX (4096 bytes), a value larger than "
                            "the segment, or more than STOA_NS_MAX namespaces";
        case -ESTALE: return "the key's version changed: another writer came first";
        case -ENOBUFS: return "the value is larger than the buffer given";
        case -ENOMEM: return "the segment is full and nothing could be evicted to make room "
                             "(or this process is out of memory)";
        case -EAGAIN: return "another client holds what this call needs and does not "
                             "advance (a stopped process?); retry later";
        case -EMFILE: return "this thread holds the most views it may (STOA_VIEWS_MAX); "
                             "release some";
        case -EACCES: return "permission denied on the segment file";
        case -EPERM: return "operation not permitted on the segment file";
        case -EROFS: return "the handle is read-only (STOA_OPEN_RDONLY): it may only inspect";
        case -ENOSPC: return "no room: the segment is too small for its slot table and index, "
                             "or the interner's table is full";
        case -EDOM: return "the value is not a decimal integer";
        case -ERANGE: return "the result does not fit in a signed 64-bit integer";
        case -ENODEV: return "no such NUMA node on this host";
        case -ETIMEDOUT: return "the segment's creator did not finish it in time";
        case -EBUSY: return "the segment is in use";
        default: break;
        }
        if (err < 0 && err > -4096) {
                const char *d = strerrordesc_np(-err);  /* static, thread-safe */
                if (d)
                        return d;
        }
        return "unknown stoa error";
}

STOA_API const char *stoa_errdetail(void)
{
        return seg_errdetail();
}
