/*
 * stoa: a shared-memory cache for processes on one host.
 *
 * This header is the whole public API of libstoa. Every function returns 0 on
 * success or a negative error code: a negative errno (-EINVAL, -ENOMEM, ...) or
 * one of the STOA_E_* codes below, which lie outside the errno range.
 * stoa_strerror() turns any of them into a sentence.
 */
#ifndef STOA_STOA_H
#define STOA_STOA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define STOA_API __attribute__((visibility("default")))
#else
#define STOA_API
#endif

/* Errors beyond errno. Each names one way a segment can be unusable. */
#define STOA_E_BASE       4200
#define STOA_E_FOREIGN    (-(STOA_E_BASE + 1)) /* the file is not a stoa segment */
#define STOA_E_VERSION    (-(STOA_E_BASE + 2)) /* segment format version differs from the library's */
#define STOA_E_TRUNCATED  (-(STOA_E_BASE + 3)) /* the file is shorter than its header says */
#define STOA_E_HALFINIT   (-(STOA_E_BASE + 4)) /* the creator died before finishing the segment */
#define STOA_E_CORRUPT    (-(STOA_E_BASE + 5)) /* the header or a structure fails its checks */
#define STOA_E_NOHUGE     (-(STOA_E_BASE + 6)) /* hugepages were required and are not available */
#define STOA_E_NOSLOT     (-(STOA_E_BASE + 7)) /* every client slot of the segment is in use */
#define STOA_E_FORKED     (-(STOA_E_BASE + 8)) /* handle inherited across fork(); open a new one */
#define STOA_E_LAST       (-(STOA_E_BASE + 8))

/*
 * stoa_strerror() - describe an error code
 *
 * Returns a static, NUL-terminated sentence for any value returned by a stoa
 * function, including plain negative errnos. Never NULL. Thread-safe.
 */
STOA_API const char *stoa_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* STOA_STOA_H */
