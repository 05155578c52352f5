// Causal grouped-query attention of a prompt (prefill) for the bf16 mode, on CPUs with
// AVX512_BF16: `vdpbf16ps` multiplies 32 bf16 pairs into 16 fp32 lanes.
//
// PyTorch's CPU SDPA computes a 150-token prompt's attention in fp32 at ~70 GFLOP/s on 2 cores
// (about 11% of the bf16 mode's prefill, measured on an AVX-512 EPYC). Here, as the bf16 mode's
// projections already do (gemm_bf16dot), q, k, v and the softmax weights are rounded to bf16
// (nearest even) and every sum is fp32: scores and outputs are outer products of broadcast bf16
// pairs against 16-lane panels (no horizontal sums), and only the key columns a query may see
// (k <= its position) are computed. The fp32 mode keeps PyTorch's exact attention.
//
// Layout: q (B, T, H * D), k and v (B, T, KV * D), fp32, contiguous (D: a multiple of 16 up
// to 128), as qk_norm_rope_ leaves them; the result (B, T, H * D) is what the o projection
// takes. Query head h reads key/value head h / (H / KV). Positions are 0..T-1 in every
// sequence (right-padded prompts: a padded position only attends to earlier ones, and no real
// position attends to it).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bf16_outer.h"
#include "kernels.h"

namespace {

// head_dim D = 16 NO, NO = 1..8 (Qwen3-0.6B: 128; the demo checkpoint: 48)
constexpr int MR = 6;             // query rows per tile (scores and outputs)
constexpr int NS = 4;             // 16-key panels per score tile: 24 accumulators

// exp for x <= 0 (softmax after the row maximum is taken off): 2^n 2^f with 2^f a degree-6
// polynomial on [-0.5, 0.5] (relative error ~2e-7, below the bf16 rounding that follows);
// anything under -87 gives 0.
BF16DOT inline __m512 exp_neg(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.0f);
  const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  x = _mm512_max_ps(x, lo);
  const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));  // x log2(e)
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);  // [-0.5, 0.5]
  // 2^f = e^(f ln2), Taylor to degree 6 in f ln2
  __m512 p = _mm512_set1_ps(1.5403530393381608e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558146428443e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291076284772e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504108664821580e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022650695910071e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718055994531e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  const __m512 r = _mm512_scalef_ps(p, n);  // p 2^n
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~under), r);
}

// Scores of rows r0..r0+mr-1 against key panels [p0, p0 + NS): s[i][16 p + lane] (unscaled).
// Qb: the rows' bf16 pairs (DP of them, row stride QS words); Kp: panel p, pair d -> 16 words.
// The same outer product as bf16_outer.h's outer_tile, written out here (as out_tile is): built
// on outer_tile, with zero panels past the keys or with a tile per panel count, the kernel took
// 0.65-0.80 ms per 150-token layer against 0.46 ms (separate processes, AVX-512 EPYC); past np
// the last panel is loaded again (in L1) and its sums not stored.
template <int R>
BF16DOT inline void score_tile(const uint32_t* Qb, int64_t QS, const uint32_t* Kp, int64_t DP,
                           int64_t p0, int np, float* s, int64_t lds) {
  __m512 acc[R][NS];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NS; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t d = 0; d < DP; ++d) {
    __m512bh kv[NS];
#pragma GCC unroll 4
    for (int j = 0; j < NS; ++j)
      kv[j] = (__m512bh)_mm512_loadu_si512(Kp + ((p0 + std::min(j, np - 1)) * DP + d) * 16);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512bh qv = (__m512bh)_mm512_set1_epi32(static_cast<int>(Qb[i * QS + d]));
#pragma GCC unroll 4
      for (int j = 0; j < NS; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], qv, kv[j]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NS; ++j)
      if (j < np) _mm512_storeu_ps(s + i * lds + 16 * (p0 + j), acc[i][j]);
}

// Outputs of rows (R of them) over key pairs 0..npairs-1: o[i][c] = sum_t P[i][t] v[t][c].
// Pb: the rows' bf16 weight pairs (row stride ldp words); Vp: pair t2 -> NO panels of 16 words.
template <int R, int NO>
BF16DOT inline void out_tile(const uint32_t* Pb, int64_t ldp, const uint32_t* Vp, int64_t npairs,
                         float* o, int64_t ldo) {
  __m512 acc[R][NO];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NO; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t t2 = 0; t2 < npairs; ++t2) {
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512bh pv = (__m512bh)_mm512_set1_epi32(static_cast<int>(Pb[i * ldp + t2]));
#pragma GCC unroll 8
      for (int j = 0; j < NO; ++j)
        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], pv,
                                     (__m512bh)_mm512_loadu_si512(Vp + (t2 * NO + j) * 16));
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NO; ++j) _mm512_storeu_ps(o + i * ldo + 16 * j, acc[i][j]);
}

// One query head of one sequence: rows 0..T-1 of q (row stride ldq floats), k and v of its
// key/value head (row stride ldk), output rows at o (stride ldq).
template <int NO>
BF16DOT void head(const float* q, const float* k, const float* v, int64_t T, int64_t ldq,
              int64_t ldk, float scale, float* o, std::vector<uint32_t>& buf,
              std::vector<float>& sbuf) {
  constexpr int64_t D = 16 * NO, DP = D / 2;
  constexpr int64_t QS = (D + 31) / 32 * 16;   // words per row that to_bf16 writes
  const int64_t panels = (T + 15) / 16, tpairs = (T + 1) / 2;
  const int64_t ldp = (tpairs + 15) / 16 * 16;  // to_bf16 writes whole 32-value blocks
  buf.resize(panels * DP * 16 + tpairs * NO * 16 + T * QS + MR * ldp);
  uint32_t* Kp = buf.data();                    // panel p, pair d: 16 keys' (k[2d], k[2d+1])
  uint32_t* Vp = Kp + panels * DP * 16;         // pair t2, panel c: 16 columns' (v[2t2], v[2t2+1])
  uint32_t* Qb = Vp + tpairs * NO * 16;         // row i: (q[2d], q[2d+1])
  uint32_t* Pb = Qb + T * QS;                   // a tile's softmax weights as pairs over keys
  sbuf.resize(MR * panels * 16);
  float* s = sbuf.data();
  const int64_t lds = panels * 16;
  // Qb: each query row as bf16 (pairs in order); Kp: each key row as bf16, its DP pairs put
  // in lane t % 16 of panel t / 16 (keys past T: zero)
  for (int64_t i = 0; i < T; ++i) to_bf16(q + i * ldq, D, 1.0f, reinterpret_cast<uint16_t*>(Qb + i * QS));
  std::memset(Kp, 0, panels * DP * 16 * sizeof(uint32_t));
  alignas(64) uint32_t row[QS];
  for (int64_t t = 0; t < T; ++t) {
    to_bf16(k + t * ldk, D, 1.0f, reinterpret_cast<uint16_t*>(row));
    uint32_t* dst = Kp + (t / 16) * DP * 16 + t % 16;
    for (int64_t d = 0; d < DP; ++d) dst[d * 16] = row[d];
  }
  // Vp: rows 2 t2 and 2 t2 + 1 of v interleaved, 16 columns per panel (row T: zero)
  alignas(64) uint16_t va[2 * QS], vb[2 * QS];
  for (int64_t t2 = 0; t2 < tpairs; ++t2) {
    to_bf16(v + 2 * t2 * ldk, D, 1.0f, va);
    if (2 * t2 + 1 < T) to_bf16(v + (2 * t2 + 1) * ldk, D, 1.0f, vb);
    else std::memset(vb, 0, sizeof(vb));
    for (int64_t c = 0; c < NO; ++c) {
      const __m512i a = _mm512_cvtepu16_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(va + 16 * c)));
      const __m512i b = _mm512_cvtepu16_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(vb + 16 * c)));
      _mm512_storeu_si512(Vp + (t2 * NO + c) * 16, _mm512_or_si512(a, _mm512_slli_epi32(b, 16)));
    }
  }

  for (int64_t r0 = 0; r0 < T; r0 += MR) {
    const int R = static_cast<int>(std::min<int64_t>(MR, T - r0));
    const int64_t last = r0 + R - 1;           // the tile's last row sees keys 0..last
    const int64_t np = last / 16 + 1;          // key panels the tile needs
    for (int64_t p0 = 0; p0 < np; p0 += NS) {
      const int n = static_cast<int>(std::min<int64_t>(NS, np - p0));
      switch (R) {
        case 6: score_tile<6>(Qb + r0 * QS, QS, Kp, DP, p0, n, s, lds); break;
        case 5: score_tile<5>(Qb + r0 * QS, QS, Kp, DP, p0, n, s, lds); break;
        case 4: score_tile<4>(Qb + r0 * QS, QS, Kp, DP, p0, n, s, lds); break;
        case 3: score_tile<3>(Qb + r0 * QS, QS, Kp, DP, p0, n, s, lds); break;
        case 2: score_tile<2>(Qb + r0 * QS, QS, Kp, DP, p0, n, s, lds); break;
        default: score_tile<1>(Qb + r0 * QS, QS, Kp, DP, p0, n, s, lds); break;
      }
    }
    // softmax of row i over keys 0..i, as bf16 pairs; keys i+1.. of the tile's pairs get 0
    const int64_t npairs = last / 2 + 1;
    std::memset(Pb, 0, MR * ldp * sizeof(uint32_t));
    for (int i = 0; i < R; ++i) {
      const int64_t row = r0 + i, L = row + 1;
      float* si = s + i * lds;
      __m512 mx = _mm512_set1_ps(-INFINITY);
      int64_t t = 0;
      for (; t + 16 <= L; t += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(si + t));
      float m = _mm512_reduce_max_ps(mx);
      for (int64_t u = t; u < L; ++u) m = std::max(m, si[u]);
      const __m512 vs = _mm512_set1_ps(scale), vm = _mm512_set1_ps(m * scale);
      __m512 sum = _mm512_setzero_ps();
      for (t = 0; t < L; t += 16) {
        const __mmask16 mk = L - t >= 16 ? static_cast<__mmask16>(0xFFFF)
                                         : static_cast<__mmask16>((1u << (L - t)) - 1);
        const __m512 e = _mm512_maskz_mov_ps(mk, exp_neg(_mm512_fmsub_ps(
            _mm512_maskz_loadu_ps(mk, si + t), vs, vm)));
        _mm512_storeu_ps(si + t, e);   // lanes past L: 0 (s has room to the panel's end)
        sum = _mm512_add_ps(sum, e);
      }
      // the weights (zero past L) as bf16 pairs over keys 0..2 npairs - 1
      to_bf16(si, L, 1.0f / _mm512_reduce_add_ps(sum), reinterpret_cast<uint16_t*>(Pb + i * ldp));
    }
    float* orow = o + r0 * ldq;
    switch (R) {
      case 6: out_tile<6, NO>(Pb, ldp, Vp, npairs, orow, ldq); break;
      case 5: out_tile<5, NO>(Pb, ldp, Vp, npairs, orow, ldq); break;
      case 4: out_tile<4, NO>(Pb, ldp, Vp, npairs, orow, ldq); break;
      case 3: out_tile<3, NO>(Pb, ldp, Vp, npairs, orow, ldq); break;
      case 2: out_tile<2, NO>(Pb, ldp, Vp, npairs, orow, ldq); break;
      default: out_tile<1, NO>(Pb, ldp, Vp, npairs, orow, ldq); break;
    }
  }
}

}  // namespace

at::Tensor prefill_attention_bf16(at::Tensor q, at::Tensor k, at::Tensor v, int64_t heads,
                                  int64_t kv_heads) {
  TORCH_CHECK(q.dtype() == at::kFloat && k.dtype() == at::kFloat && v.dtype() == at::kFloat,
              "prefill_attention_bf16: q, k, v must be fp32");
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && q.is_contiguous() &&
              k.is_contiguous() && v.is_contiguous(),
              "prefill_attention_bf16: q, k, v must be contiguous (B, T, heads * 128)");
  TORCH_CHECK(heads > 0 && kv_heads > 0 && heads % kv_heads == 0,
              "prefill_attention_bf16: heads must be a multiple of kv_heads");
  const int64_t B = q.size(0), T = q.size(1), D = q.size(2) / heads;
  TORCH_CHECK(q.size(2) == heads * D && D % 16 == 0 && D >= 16 && D <= 128,
              "prefill_attention_bf16: q must be (B, T, heads * head_dim), head_dim a multiple "
              "of 16 up to 128");
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == B && k.size(1) == T &&
              k.size(2) == kv_heads * D,
              "prefill_attention_bf16: k and v must be (B, T, kv_heads * head_dim)");
  auto out = at::empty_like(q);
  if (B == 0 || T == 0) return out;
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t ldq = heads * D, ldk = kv_heads * D, group = heads / kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // one task per (sequence, query head): every task does a whole causal triangle
  at::parallel_for(0, B * heads, 1, [&](int64_t b0, int64_t b1) {
    std::vector<uint32_t> buf;
    std::vector<float> sbuf;
    for (int64_t task = b0; task < b1; ++task) {
      const int64_t b = task / heads, h = task % heads, g = h / group;
      const float *qh = qp + b * T * ldq + h * D, *kh = kp + b * T * ldk + g * D,
                  *vh = vp + b * T * ldk + g * D;
      float* oh = op + b * T * ldq + h * D;
      switch (D / 16) {
        case 1: head<1>(qh, kh, vh, T, ldq, ldk, scale, oh, buf, sbuf); break;
        case 2: head<2>(qh, kh, vh, T, ldq, ldk, scale, oh, buf, sbuf); break;
        case 3: head<3>(qh, kh, vh, T, ldq, ldk, scale, oh, buf, sbuf); break;
        case 4: head<4>(qh, kh, vh, T, ldq, ldk, scale, oh, buf, sbuf); break;
        case 5: head<5>(qh, kh, vh, T, ldq, ldk, scale, oh, buf, sbuf); break;
        case 6: head<6>(qh, kh, vh, T, ldq, ldk, scale, oh, buf, sbuf); break;
        case 7: head<7>(qh, kh, vh, T, ldq, ldk, scale, oh, buf, sbuf); break;
        default: head<8>(qh, kh, vh, T, ldq, ldk, scale, oh, buf, sbuf); break;
      }
    }
  });
  return out;
}
