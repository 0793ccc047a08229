// Times the two loops of loops.S: what one legacy-SSE instruction inside
// 256-bit AVX code costs on this CPU.
//   gcc -O2 bench/sse_avx_mix/main.c bench/sse_avx_mix/loops.S -o /tmp/sse_avx_mix && /tmp/sse_avx_mix
#include <stdio.h>
#include <time.h>

void loop_sse(const char *a, const char *b, long iterations);
void loop_vex(const char *a, const char *b, long iterations);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    static char a[64], b[64];
    const long n = 20000000;
    for (int rep = 0; rep < 2; rep++) {
        double t = now();
        loop_sse(a, b, n);
        double sse = now() - t;
        t = now();
        loop_vex(a, b, n);
        double vex = now() - t;
        printf("movq (SSE) %.2f ns per iteration, vmovq (VEX) %.2f ns: %.0fx\n",
               sse / n * 1e9, vex / n * 1e9, sse / vex);
    }
    return 0;
}
