/*
 * allocator/classes.c: size classes. Block sizes include the 8-byte stamp,
 * four classes per power of two from 128 bytes up (12.5% worst internal
 * waste there; 16-byte steps below). Large classes take spans of 2-8 pages
 * so that a span wastes at most 1/8 of itself.
 */
#include "allocator/alloc.h"

const uint32_t al_class_size[AL_NCLASSES] = {
        32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512,
        640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096,
        5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384, 20480, 24576, 28672,
        32768,
};
uint32_t al_nclasses = 39;

_Static_assert(AL_NCLASSES >= 39, "class table fits");

/*
 * The class of every size up to LOOKUP_MAX, in 16-byte steps (class sizes
 * are multiples of 16): one load instead of a binary search on the paths
 * that allocate and free small blocks. Filled once, below.
 */
#define LOOKUP_MAX      4096u
static uint8_t class_of16[LOOKUP_MAX / 16 + 1];

int al_size_class(size_t bytes)
{
        size_t need = bytes + AL_STAMP_SIZE;
        unsigned lo = 0, hi = al_nclasses;

        if (bytes > AL_MAX_SMALL - AL_STAMP_SIZE)       /* not `need`: it wraps near SIZE_MAX */
                return -1;
        if (need <= LOOKUP_MAX)
                return class_of16[(need + 15) / 16];
        while (lo < hi) {       /* first class >= need */
                unsigned mid = (lo + hi) / 2;
                if (al_class_size[mid] < need)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return (int)lo;
}

static uint32_t span_of(uint32_t bs)
{
        for (uint32_t span = 1; span < 8; span *= 2) {
                uint64_t bytes = (uint64_t)span * AL_PAGE_SIZE;
                uint64_t cap = (bytes - AL_SLAB_HDR) / bs;
                if (cap > 64u * AL_BITMAP_WORDS)
                        cap = 64u * AL_BITMAP_WORDS;
                if ((bytes - cap * bs) * 8 <= bytes)
                        return span;
        }
        return 8;
}

/* Spans and capacities, computed once: descriptors are checked against them often. */
static uint32_t class_span[AL_NCLASSES], class_cap[AL_NCLASSES];

__attribute__((constructor)) static void classes_init(void)
{
        for (unsigned i = 0, k = 0; i <= LOOKUP_MAX / 16; i++) {
                while (k + 1 < al_nclasses && al_class_size[k] < i * 16)
                        k++;
                class_of16[i] = (uint8_t)k;
        }
        for (unsigned k = 0; k < AL_NCLASSES; k++) {
                uint32_t bs = al_class_size[k] ? al_class_size[k] : AL_PAGE_SIZE;
                uint64_t cap;
                class_span[k] = span_of(bs);
                cap = ((uint64_t)class_span[k] * AL_PAGE_SIZE - AL_SLAB_HDR) / bs;
                class_cap[k] = cap > 64u * AL_BITMAP_WORDS ? 64u * AL_BITMAP_WORDS : (uint32_t)cap;
        }
}

uint32_t al_class_span(unsigned cls)
{
        return class_span[cls];
}

uint32_t al_class_capacity(unsigned cls)
{
        return class_cap[cls];
}
