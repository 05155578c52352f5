// Helpers shared by the CPU kernels (avx2.cpp, avx512.cpp): horizontal sums, widening of bf16
// and int8 weights to fp32, one RMSNorm row, per-head RMSNorm + RoPE, and one decode step of
// grouped-query attention over the KV cache. Everything here is AVX2/FMA; the AVX-512 functions
// in avx512.cpp carry their own target attributes.
#pragma once

// ATen's Tensor and the three factory functions used, not torch/types.h (all of ATen's
// operators): the kernel files compile in about a third of the time.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <algorithm>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <vector>

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

// 8 weights widened to fp32: bf16 -> high half of an fp32; int8 -> sign-extend -> convert.
static inline __m256 load8(const uint16_t* w) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
static inline __m256 load8(const int8_t* w) {
  __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}
static inline float widen(uint16_t w) {
  uint32_t u = static_cast<uint32_t>(w) << 16; float f; std::memcpy(&f, &u, 4); return f;
}
static inline float widen(int8_t w) { return static_cast<float>(w); }

// ---- the small per-token ops of a decoder layer, fused: one call instead of ~6-30 PyTorch ops
// each (a decode step spends more time in op dispatch than in these ops' arithmetic).

// y = x * rsqrt(mean(x^2) + eps) * w over one row of length C (F.rms_norm's formula).
static inline void rms_row(const float* x, const float* w, float* y, int64_t C, float eps) {
  __m256 acc = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    const __m256 v = _mm256_loadu_ps(x + c);
    acc = _mm256_fmadd_ps(v, v, acc);
  }
  float ss = hsum(acc);
  for (; c < C; ++c) ss += x[c] * x[c];
  const float r = 1.0f / std::sqrt(ss / static_cast<float>(C) + eps);
  const __m256 rv = _mm256_set1_ps(r);
  for (c = 0; c + 8 <= C; c += 8)
    _mm256_storeu_ps(y + c, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + c), rv),
                                          _mm256_loadu_ps(w + c)));
  for (; c < C; ++c) y[c] = x[c] * r * w[c];
}

static void check_f32(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dtype() == at::kFloat && t.is_contiguous() && t.device().is_cpu(),
              name, " must be a contiguous fp32 CPU tensor");
}

// In place, per head of length D: RMSNorm (weight w), then NeoX RoPE (rotate-half):
// x[i] = n[i] cos[i] - n[i + D/2] sin[i],  x[i + D/2] = n[i + D/2] cos[i + D/2] + n[i] sin[i + D/2].
static inline void norm_rope_head(float* x, const float* w, const float* cs, const float* sn,
                                  int64_t D, float eps) {
  float n[1024];
  rms_row(x, w, n, D, eps);
  const int64_t h = D / 2;
  for (int64_t i = 0; i < h; ++i) x[i] = n[i] * cs[i] - n[i + h] * sn[i];
  for (int64_t i = h; i < D; ++i) x[i] = n[i] * cs[i] + n[i - h] * sn[i];
}

// One decode step of attention for one sequence and kv head g: writes that head's k and v into
// cache column `pos` of K, V (capacity x D each: the sequence's own cache row), then for the G
// query heads that share it o = softmax(q . K[:pos+1] / sqrt(D)) V[:pos+1] (grouped-query
// attention), so the keys and values are read once for the whole group. Every sequence's cache
// starts at column 0 (no padding), so the result is the same whatever else is in the batch.
// p is scratch for G * (pos + 1) scores.
static void attend_group(const float* q, const float* k, const float* v, float* K, float* V,
                         int64_t G, int64_t D, int64_t pos, float* o, float* p) {
  const int64_t L = pos + 1;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::memcpy(K + pos * D, k, D * sizeof(float));
  std::memcpy(V + pos * D, v, D * sizeof(float));
  for (int64_t j = 0; j < G; ++j) {
    const float* qh = q + j * D;
    float* s = p + j * L;
    float mx = -INFINITY;
    for (int64_t t = 0; t < L; ++t) {
      const float* kr = K + t * D;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0;
      int64_t d = 0;
      for (; d + 16 <= D; d += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + d), _mm256_loadu_ps(kr + d), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + d + 8), _mm256_loadu_ps(kr + d + 8), a1);
      }
      float dot = hsum(_mm256_add_ps(a0, a1));
      for (; d < D; ++d) dot += qh[d] * kr[d];
      s[t] = dot * scale;
      mx = std::max(mx, s[t]);
    }
    float sum = 0.0f;
    for (int64_t t = 0; t < L; ++t) { s[t] = std::exp(s[t] - mx); sum += s[t]; }
    const float inv = 1.0f / sum;
    float* oh = o + j * D;
    for (int64_t d = 0; d < D; ++d) oh[d] = 0.0f;
    for (int64_t t = 0; t < L; ++t) {
      if (s[t] == 0.0f) continue;
      const __m256 w = _mm256_set1_ps(s[t] * inv);
      const float* vr = V + t * D;
      int64_t d = 0;
      for (; d + 8 <= D; d += 8)
        _mm256_storeu_ps(oh + d, _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + d), _mm256_loadu_ps(oh + d)));
      for (; d < D; ++d) oh[d] += s[t] * inv * vr[d];
    }
  }
}

// The cache rows and columns of a decode step: batch row b writes column pos[b] of cache row
// rows[b] (continuous batching: sequences of any length share a step, each in its own row of
// a pool of rows). Checked against the cache's shape; both are int64 CPU tensors (B,).
static void check_rows(const at::Tensor& rows, const at::Tensor& pos, int64_t B,
                       int64_t cache_rows, int64_t cap, const char* who) {
  TORCH_CHECK(rows.dtype() == at::kLong && pos.dtype() == at::kLong &&
              rows.is_contiguous() && pos.is_contiguous() && rows.device().is_cpu() &&
              pos.device().is_cpu() && rows.numel() == B && pos.numel() == B,
              who, ": rows and pos must be contiguous int64 CPU tensors of one entry per batch row");
  const int64_t* r = rows.data_ptr<int64_t>();
  const int64_t* p = pos.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(r[b] >= 0 && r[b] < cache_rows && p[b] >= 0 && p[b] < cap,
                who, ": batch row ", b, " has cache row ", r[b], " column ", p[b],
                " outside the cache (", cache_rows, " rows, ", cap, " columns)");
}

// attend_group over every (batch row, kv head): q (B, H*D), k and v (B, KV*D) with row strides
// qs, ks, vs; caches (rows, KV, capacity, D); batch row b uses cache row rows[b], column pos[b];
// out (B, H*D) contiguous.
static void attend_batch(const float* q, int64_t qs, const float* k, int64_t ks, const float* v,
                         int64_t vst, float* kc, float* vc, int64_t B, int64_t KV, int64_t cap,
                         int64_t H, int64_t D, const int64_t* rows, const int64_t* pos,
                         float* out) {
  const int64_t G = H / KV;
  int64_t longest = 0;
  for (int64_t b = 0; b < B; ++b) longest = std::max(longest, pos[b] + 1);
  at::parallel_for(0, B * KV, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> p(longest * G);
    for (int64_t bg = b0; bg < b1; ++bg) {
      const int64_t b = bg / KV, g = bg % KV;
      const int64_t row = (rows[b] * KV + g) * cap * D;
      attend_group(q + b * qs + g * G * D, k + b * ks + g * D, v + b * vst + g * D,
                   kc + row, vc + row, G, D, pos[b], out + (b * H + g * G) * D, p.data());
    }
  });
}
