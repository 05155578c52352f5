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

// The KV cache holds fp32 (the fp32 and int8 modes) or bf16 (the bf16 mode: half the memory and
// the bytes a decode step reads from it; llama.cpp keeps f16). A bf16 column is the fp32 value
// rounded to nearest even, as torch's cast rounds a prompt's columns; it is read widened exactly.
// (bf16_outer.h's to_bf16 rounds alike but needs AVX512_BF16 and pads to 32 values.)
static inline void kv_store(float* dst, const float* src, int64_t D) {
  std::memcpy(dst, src, D * sizeof(float));
}
static inline void kv_store(uint16_t* dst, const float* src, int64_t D) {
  for (int64_t d = 0; d < D; ++d) {
    uint32_t u;
    std::memcpy(&u, src + d, 4);
    dst[d] = (u & 0x7F800000u) == 0x7F800000u && (u & 0x7FFFFFu)
                 ? static_cast<uint16_t>((u >> 16) | 0x40u)  // NaN stays NaN (quiet)
                 : static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
  }
}
// a * b rounded on its own: the compiler cannot fuse it into a multiply-add. attend_group's scalar
// tails (head sizes that are not multiples of 16 or 8) spell out the arithmetic the compiler had
// made of them for the fp32 cache (the score's products rounded, the output's fused), since left
// to it the bf16 instantiation came out otherwise, and a bf16 cache holding the same values as
// an fp32 one must give the same floats (tests/test_decode_step.py)
static inline float rounded_product(float a, float b) {
  float p = a * b;
  asm("" : "+x"(p));
  return p;
}
static inline __m256 kv_load8(const float* p) { return _mm256_loadu_ps(p); }
static inline __m256 kv_load8(const uint16_t* p) { return load8(p); }
static inline float kv_at(const float* p) { return *p; }
static inline float kv_at(const uint16_t* p) { return widen(*p); }

// One decode step of attention for one sequence and kv head g: writes that head's k and v into
// cache column `pos` of K, V (capacity x D each: the sequence's own cache row), then for the G
// query heads that share it o = softmax(q . K[:pos+1] / sqrt(D)) V[:pos+1] (grouped-query
// attention), so the keys and values are read once for the whole group. Every sequence's cache
// starts at column 0 (no padding), so the result is the same whatever else is in the batch.
// p is scratch for G * (pos + 1) scores.
template <typename T>
static void attend_group(const float* q, const float* k, const float* v, T* K, T* V,
                         int64_t G, int64_t D, int64_t pos, float* o, float* p) {
  const int64_t L = pos + 1;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  kv_store(K + pos * D, k, D);
  kv_store(V + pos * D, v, D);
  for (int64_t j = 0; j < G; ++j) {
    const float* qh = q + j * D;
    float* s = p + j * L;
    float mx = -INFINITY;
    for (int64_t t = 0; t < L; ++t) {
      const T* kr = K + t * D;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0;
      int64_t d = 0;
      for (; d + 16 <= D; d += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + d), kv_load8(kr + d), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + d + 8), kv_load8(kr + d + 8), a1);
      }
      float dot = hsum(_mm256_add_ps(a0, a1));
      for (; d < D; ++d) dot += rounded_product(qh[d], kv_at(kr + d));
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
      const T* vr = V + t * D;
      int64_t d = 0;
      for (; d + 8 <= D; d += 8)
        _mm256_storeu_ps(oh + d, _mm256_fmadd_ps(w, kv_load8(vr + d), _mm256_loadu_ps(oh + d)));
      for (; d < D; ++d) oh[d] = std::fma(s[t] * inv, kv_at(vr + d), oh[d]);
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

// The caches of a decode step: both contiguous CPU tensors of one shape and one dtype, fp32 or
// bf16.
static void check_cache(const at::Tensor& kc, const at::Tensor& vc, const char* who) {
  TORCH_CHECK(kc.dim() == 4 && vc.sizes() == kc.sizes() && kc.dtype() == vc.dtype() &&
              (kc.dtype() == at::kFloat || kc.dtype() == at::kBFloat16) && kc.is_contiguous() &&
              vc.is_contiguous() && kc.device().is_cpu() && vc.device().is_cpu(),
              who, ": the key and value caches must be contiguous CPU tensors of one shape "
              "(rows, KV, capacity, D) and one dtype, fp32 or bf16");
}

// attend_group over every (batch row, kv head): q (B, H*D), k and v (B, KV*D) with row strides
// qs, ks, vs; caches (rows, KV, capacity, D) of T (float or bf16); batch row b uses cache row
// rows[b], column pos[b]; out (B, H*D) contiguous.
template <typename T>
static void attend_batch(const float* q, int64_t qs, const float* k, int64_t ks, const float* v,
                         int64_t vst, T* kc, T* vc, int64_t B, int64_t KV, int64_t cap,
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

// attend_batch on the caches' own dtype (check_cache first).
static void attend_cache(const float* q, int64_t qs, const float* k, int64_t ks, const float* v,
                         int64_t vst, const at::Tensor& kc, const at::Tensor& vc, int64_t B,
                         int64_t H, const int64_t* rows, const int64_t* pos, float* out) {
  const int64_t KV = kc.size(1), cap = kc.size(2), D = kc.size(3);
  if (kc.dtype() == at::kBFloat16)
    attend_batch(q, qs, k, ks, v, vst, reinterpret_cast<uint16_t*>(kc.data_ptr()),
                 reinterpret_cast<uint16_t*>(vc.data_ptr()), B, KV, cap, H, D, rows, pos, out);
  else
    attend_batch(q, qs, k, ks, v, vst, kc.data_ptr<float>(), vc.data_ptr<float>(), B, KV, cap,
                 H, D, rows, pos, out);
}
