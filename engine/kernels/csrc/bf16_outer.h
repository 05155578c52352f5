// What the bf16 mode's many-row kernels share on CPUs with AVX512_BF16 (avx512.cpp's
// gemm_bf16dot, prefill_attention.cpp): fp32 rows rounded to bf16, and the outer-product tile
// that `vdpbf16ps` computes from them (gemm_bf16dot's; the attention writes its own two out,
// prefill_attention.cpp says why).
//
// A pair of bf16 values (a[2k], a[2k + 1]) is one 32-bit word, the first in the low half
// (vdpbf16ps' order). A panel holds, for each pair index, 16 such words of 16 columns side by
// side; a tile broadcasts one row's pair against V panels and adds into R x V accumulators of
// 16 fp32 lanes, one output per lane, summed over the pairs in order: no horizontal sums, and a
// row's result does not depend on the other rows of the tile.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#define BF16DOT __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

// n fp32 (times mul) as n bf16 (nearest even, PyTorch's cast) in order, zeros up to the next
// multiple of 32.
BF16DOT inline void to_bf16(const float* x, int64_t n, float mul, uint16_t* out) {
  const __m512 vm = _mm512_set1_ps(mul);
  for (int64_t i = 0; i < n; i += 32) {
    const int64_t lo = std::clamp<int64_t>(n - i, 0, 16), hi = std::clamp<int64_t>(n - i - 16, 0, 16);
    const __m512 a = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << lo) - 1), x + i);
    const __m512 b = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << hi) - 1), x + i + 16);
    // cvtne2ps: the second operand fills the low 16 bf16, the first the high 16
    _mm512_storeu_si512(out + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(b, vm),
                                                              _mm512_mul_ps(a, vm)));
  }
}

// acc[i][j] (zeroed here) = sum over pairs p < np of a[i * lda + p] . b[p * ldb + j * ldj ..]:
// R rows of pairs (row stride lda words) against V panels (pair stride ldb words, panel
// stride ldj words: 16 where a pair's panels sit side by side).
template <int R, int V>
BF16DOT __attribute__((always_inline)) inline void outer_tile(const uint32_t* a, int64_t lda, const uint32_t* b, int64_t ldb,
                               int64_t ldj, int64_t np, __m512 (&acc)[R][V]) {
  // fully unrolled and inlined, so that the accumulators stay in registers (GCC otherwise keeps
  // the array on the stack and stores it on every step: half the speed, measured)
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < V; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t p = 0; p < np; ++p) {
    __m512bh bv[V];
#pragma GCC unroll 8
    for (int j = 0; j < V; ++j) bv[j] = (__m512bh)_mm512_loadu_si512(b + p * ldb + j * ldj);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[i * lda + p]));
#pragma GCC unroll 8
      for (int j = 0; j < V; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av, bv[j]);
    }
  }
}
