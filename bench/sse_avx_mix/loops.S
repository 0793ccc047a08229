// The inner loop of an int8 product as tract-linalg 0.23.9 writes it for AVX2
// (x86_64/fma/avx2_mmm_i32_8x8.S.j2), cut to two columns: loop_sse loads the A
// bytes with the legacy-SSE `movq` as tract does, loop_vex with `vmovq`.
// Everything else is the same.
.intel_syntax noprefix
.text
.globl loop_sse
loop_sse:   // rdi = a ptr, rsi = b ptr, rdx = iterations
    vzeroall
1:
    movq xmm8, qword ptr [rdi]
    vpmovsxbw ymm8, xmm8
    vpbroadcastb ymm9, byte ptr [rsi]
    vpbroadcastb ymm10, byte ptr [rsi+1]
    vpmovsxbw ymm9, xmm9
    vpmovsxbw ymm10, xmm10
    vpmullw ymm9, ymm9, ymm8
    vpmullw ymm10, ymm10, ymm8
    vpmovsxwd ymm9, xmm9
    vpmovsxwd ymm10, xmm10
    vpaddd ymm0, ymm0, ymm9
    vpaddd ymm1, ymm1, ymm10
    dec rdx
    jnz 1b
    vzeroupper
    ret
.globl loop_vex
loop_vex:
    vzeroall
1:
    vmovq xmm8, qword ptr [rdi]
    vpmovsxbw ymm8, xmm8
    vpbroadcastb ymm9, byte ptr [rsi]
    vpbroadcastb ymm10, byte ptr [rsi+1]
    vpmovsxbw ymm9, xmm9
    vpmovsxbw ymm10, xmm10
    vpmullw ymm9, ymm9, ymm8
    vpmullw ymm10, ymm10, ymm8
    vpmovsxwd ymm9, xmm9
    vpmovsxwd ymm10, xmm10
    vpaddd ymm0, ymm0, ymm9
    vpaddd ymm1, ymm1, ymm10
    dec rdx
    jnz 1b
    vzeroupper
    ret
.section .note.GNU-stack,"",@progbits
