/*
 * client/error.c: stoa_strerror().
 */
#include "stoa/stoa.h"

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
        default: break;
        }
        if (err < 0 && err > -4096) {
                const char *d = strerrordesc_np(-err);  /* static, thread-safe */
                if (d)
                        return d;
        }
        return "unknown stoa error";
}
