/* memcpy-offset: glibc memcpy speed of 16 KiB copies by the destination's offset from the
 * source within a 4 KiB page, the copy rustls makes of every TLS record (5-byte header).
 * Tells whether this CPU has the `rep movsb` slow path that proxy/src/storage/placement.rs
 * steers cached bodies away from.
 *
 *   gcc -O2 -o /tmp/memcpy-offset bench/memcpy-offset.c && /tmp/memcpy-offset
 *
 * Seen: AMD EPYC (Zen 4), 2026-12-02: delta 0 -> 47 GB/s, 1..15 -> 2.2-3.1 GB/s, 16 -> 29,
 * >= 32 -> 50-70. Intel Xeon, 2026-12-02: 116-183 GB/s at every delta (no slow path). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(void) {
    const size_t n = 16384;
    const int iters = 200000;
    char *src = aligned_alloc(4096, 1 << 20), *dst = aligned_alloc(4096, 1 << 20);
    if (!src || !dst) return 1;
    memset(src, 1, 1 << 20);
    memset(dst, 0, 1 << 20);
    const int deltas[] = {0, 1, 5, 15, 16, 32, 1024, 2048, 2053};
    for (size_t d = 0; d < sizeof deltas / sizeof deltas[0]; d++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (int i = 0; i < iters; i++) {
            memcpy(dst + deltas[d], src, n);
            __asm__ volatile("" ::: "memory");
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
        printf("dst - src = %4d (mod 4096): %6.1f GB/s\n", deltas[d], n * (double)iters / s / 1e9);
    }
    return 0;
}
