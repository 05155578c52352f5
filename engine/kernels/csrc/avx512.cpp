// A decoder layer's one-token step on AVX-512 CPUs, for int8 and bf16-stored weights.
//
// Decoding reads every decoder weight once per step, so its speed is the bandwidth at which the
// weights stream in, and the arithmetic must keep up with it on 2 cores:
//
// * int8 (`q8_*`, needs VNNI): `vpdpbusd` multiplies 64 uint8 x int8 pairs per instruction.
//   Activations are quantised per row (symmetric, max|x| -> 127), so a row's result never depends
//   on the other rows of the batch; they are stored as q + 128 (uint8), and the 128 * sum(w) that
//   adds is taken off with each weight row's precomputed sum.
// * bf16-stored weights with fp32 arithmetic (`b16_*`: the fp32 mode of the official bf16
//   checkpoint, and the bf16 mode): each weight widened exactly to fp32, 16 lanes per FMA. The
//   AVX2 kernel in avx2.cpp does the same 8 lanes at a time, which on an AVX-512 Xeon
//   streamed only 17-20 GB/s against 25-29 GB/s here (measured, cold weights, 2 threads).
//
// On top of the product, one call per block of a decoder layer: `*_attention` (RMSNorm, the
// q/k/v projections as one matrix, q/k RMSNorm + RoPE, cache write and grouped-query attention, o
// projection, residual) and `*_mlp` (RMSNorm, gate and up as one matrix, SiLU x up, down
// projection, residual): a step then costs two calls per layer instead of ~15 PyTorch ops. The
// functions carry their own target attributes, so the extension still builds with -mavx2, and
// callers check `has_avx512()` / `has_vnni()` first.
//
// Uses common.h's widen, rms_row, norm_rope_head and attend_cache; the Python side is
// engine/kernels/decode_step.py (layer steps) and engine/kernels/exact_argmax.py (greedy pick).
#include "bf16_outer.h"
#include "common.h"
#include "kernels.h"

#define Q8 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))
#define B16 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl")))

bool has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}

bool has_vnni() { return has_avx512() && __builtin_cpu_supports("avx512vnni"); }

static inline int64_t q8_ld(int64_t K) { return (K + 63) / 64 * 64; }

// Per row: s = max|x| / 127, q = round(x / s) + 128 as uint8, padded with 128 (zero) to ldq.
Q8 static void quantize_rows(const float* x, int64_t ldx, int64_t M, int64_t K, uint8_t* q,
                             int64_t ldq, float* s) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * ldx;
    uint8_t* qr = q + m * ldq;
    __m512 mx = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(xr + k)));
    float amax = _mm512_reduce_max_ps(mx);
    for (; k < K; ++k) amax = std::max(amax, std::fabs(xr[k]));
    const float sc = amax > 0.0f ? amax / 127.0f : 1.0f, inv = 1.0f / sc;
    s[m] = sc;
    const __m512 iv = _mm512_set1_ps(inv);
    const __m512i zero = _mm512_set1_epi32(128), lo = _mm512_set1_epi32(1), hi = _mm512_set1_epi32(255);
    for (k = 0; k + 16 <= K; k += 16) {
      __m512i i = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xr + k), iv)), zero);
      i = _mm512_min_epi32(_mm512_max_epi32(i, lo), hi);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qr + k), _mm512_cvtepi32_epi8(i));
    }
    for (; k < K; ++k)
      qr[k] = static_cast<uint8_t>(std::min(255.0f, std::max(1.0f, std::nearbyint(xr[k] * inv) + 128.0f)));
    for (; k < ldq; ++k) qr[k] = 128;
  }
}

// r[j][i] = q[j] . w[i] (uint8 x int8, exact int32) for MB activation rows and NB weight rows.
template <int MB, int NB>
Q8 static inline void dot_block(const uint8_t* q, int64_t ldq, const int8_t* w, int64_t K,
                                int32_t r[4][4]) {
  __m512i acc[MB][NB];
  for (int j = 0; j < MB; ++j)
    for (int i = 0; i < NB; ++i) acc[j][i] = _mm512_setzero_si512();
  const int64_t Kf = K - K % 64;
  for (int64_t k = 0; k < Kf; k += 64) {
    __m512i wv[NB];
    for (int i = 0; i < NB; ++i) {
      // the same spot 2 NB rows on (a few KB ahead in this contiguous stream) into L2: more
      // misses in flight per core than the hardware prefetcher keeps (measured +8-10%)
      _mm_prefetch(reinterpret_cast<const char*>(w + (2 * NB + i) * K + k), _MM_HINT_T1);
      wv[i] = _mm512_loadu_si512(w + i * K + k);
    }
    for (int j = 0; j < MB; ++j) {
      const __m512i xv = _mm512_loadu_si512(q + j * ldq + k);
      for (int i = 0; i < NB; ++i) acc[j][i] = _mm512_dpbusd_epi32(acc[j][i], xv, wv[i]);
    }
  }
  if (Kf < K) {  // weight rows are exactly K long: masked loads (zeros add nothing)
    const __mmask64 tail = ~0ull >> (64 - (K - Kf));
    __m512i wv[NB];
    for (int i = 0; i < NB; ++i) wv[i] = _mm512_maskz_loadu_epi8(tail, w + i * K + Kf);
    for (int j = 0; j < MB; ++j) {
      const __m512i xv = _mm512_loadu_si512(q + j * ldq + Kf);
      for (int i = 0; i < NB; ++i) acc[j][i] = _mm512_dpbusd_epi32(acc[j][i], xv, wv[i]);
    }
  }
  for (int j = 0; j < MB; ++j) {
    if (NB == 4) {  // four sums at once: fold 512 -> 256 bits, then a horizontal-add tree
      __m256i h[4];
      for (int i = 0; i < 4; ++i)
        h[i] = _mm256_add_epi32(_mm512_castsi512_si256(acc[j][i]), _mm512_extracti64x4_epi64(acc[j][i], 1));
      const __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(h[0], h[1]), _mm256_hadd_epi32(h[2], h[3]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(r[j]),
                       _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1)));
    } else {
      for (int i = 0; i < NB; ++i) r[j][i] = _mm512_reduce_add_epi32(acc[j][i]);
    }
  }
}

template <int NB>
Q8 static inline void dot_rows_nb(const uint8_t* q, int64_t ldq, int64_t mb, const int8_t* w,
                                  int64_t K, int32_t r[4][4]) {
  switch (mb) {
    case 1: dot_block<1, NB>(q, ldq, w, K, r); break;
    case 2: dot_block<2, NB>(q, ldq, w, K, r); break;
    case 3: dot_block<3, NB>(q, ldq, w, K, r); break;
    default: dot_block<4, NB>(q, ldq, w, K, r); break;
  }
}

// An int8 weight (N, K), one fp32 scale and one int32 sum per row: either the plain rows (w) or
// q8_gemm's panels (wp, see below; then K is the padded 4 Kg). A Linear's prepared cache holds
// both, and a process should read only one of them: where panels exist (every Linear but the
// lm_head) the few-row products take them too, so the rows' pages are never touched and the
// decoder's int8 weights count once in the resident set (440 MB less for the real model).
struct Q8W {
  const int8_t* w; const float* s; const int32_t* sum; int64_t N, K;
  const int8_t* wp = nullptr; int64_t Kg = 0;
  bool takes(int64_t k) const { return wp ? Kg == (k + 3) / 4 : K == k; }
};

static Q8W q8w(const at::Tensor& w, const at::Tensor& s, const at::Tensor& sum) {
  TORCH_CHECK(w.dtype() == at::kChar && w.is_contiguous() &&
              (w.dim() == 2 || (w.dim() == 3 && w.size(2) == 64)),
              "int8 weight (N, K) or its panels (ceil(N/16), ceil(K/4), 64) expected");
  const int64_t N = s.numel();
  TORCH_CHECK(s.dtype() == at::kFloat && sum.dtype() == at::kInt && sum.numel() == N &&
              (w.dim() == 2 ? w.size(0) == N : w.size(0) == (N + 15) / 16),
              "weight scales / sums do not match the weight");
  if (w.dim() == 2)
    return {w.data_ptr<int8_t>(), s.data_ptr<float>(), sum.data_ptr<int32_t>(), N, w.size(1)};
  Q8W W{nullptr, s.data_ptr<float>(), sum.data_ptr<int32_t>(), N, 4 * w.size(1)};
  W.wp = w.data_ptr<int8_t>();
  W.Kg = w.size(1);
  return W;
}

// One output from its integer sum r (as float) and p = xs[m] s[n]: p r + bias, or p r + res, each
// one fused multiply-add (both, were they ever given: the bias fused, the residual added after).
// Written out, not left to the compiler's contraction, which fused some rows of a tile and not
// others: every kernel that makes these sums (q8_rows, gemm_tile) must round alike.
Q8 static inline float q8_out(float p, float r, const float* bias, const float* res) {
  float v = bias ? std::fma(p, r, *bias) : res ? std::fma(p, r, *res) : p * r;
  if (bias && res) v += *res;
  return v;
}

Q8 static inline __m512 q8_out16(__m512 p, __m512 r, const __m512* bias, const __m512* res) {
  __m512 v = bias ? _mm512_fmadd_ps(p, r, *bias) : res ? _mm512_fmadd_ps(p, r, *res)
                                                        : _mm512_mul_ps(p, r);
  if (bias && res) v = _mm512_add_ps(v, *res);
  return v;
}

// y[m, n - n0] = xs[m] s[n] (q[m] . w[n] - 128 sum[n]) (+ bias[n - n0]) (+ res[m, n - n0]) for
// n0 <= n < n1: y, bias and res start at the block's first column; y and res have row stride ldy.
Q8 static void q8_panel_rows(const uint8_t* q, int64_t ldq, const float* xs, int64_t M,
                             const Q8W& W, int64_t n0, int64_t n1, float* y, int64_t ldy,
                             const float* bias, const float* res);

Q8 static void q8_rows(const uint8_t* q, int64_t ldq, const float* xs, int64_t M, const Q8W& W,
                       int64_t n0, int64_t n1, float* y, int64_t ldy, const float* bias,
                       const float* res) {
  if (W.wp) return q8_panel_rows(q, ldq, xs, M, W, n0, n1, y, ldy, bias, res);
  int32_t r[4][4];
  // weight rows outermost: a group of 4 rows (a few KB) stays in L1 for every block of 4
  // activation rows, so each weight byte comes from memory once
  for (int64_t n = n0; n < n1;) {
    const int64_t nb = n + 4 <= n1 ? 4 : 1;
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      const int64_t mb = std::min<int64_t>(4, M - m0);
      const uint8_t* qm = q + m0 * ldq;
      if (nb == 4) dot_rows_nb<4>(qm, ldq, mb, W.w + n * W.K, W.K, r);
      else dot_rows_nb<1>(qm, ldq, mb, W.w + n * W.K, W.K, r);
      for (int64_t j = 0; j < mb; ++j)
        for (int64_t i = 0; i < nb; ++i) {
          const int64_t c = n + i, o = (m0 + j) * ldy + c - n0;
          y[o] = q8_out(xs[m0 + j] * W.s[c], static_cast<float>(r[j][i] - 128 * W.sum[c]),
                        bias ? bias + c - n0 : nullptr, res ? res + o : nullptr);
        }
    }
    n += nb;
  }
}

// Blocks of output rows shared out dynamically, about 8 per thread (at least `rb` rows, a
// multiple of it): on a busy machine a descheduled thread then holds up one block, not half the
// matrix, while big matrices still stream in long runs.
template <typename F>
static void q8_parallel(int64_t N, int64_t rb, const F& f) {
  const int64_t want = N / (8 * std::max<int64_t>(1, at::get_num_threads()));
  rb = std::max<int64_t>(rb, want / rb * rb);
  const int64_t blocks = (N + rb - 1) / rb;
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads())
  for (int64_t b = 0; b < blocks; ++b) f(b * rb, std::min(N, (b + 1) * rb));
}

static constexpr int64_t Q8_BLOCK = 32;

// ---- many rows (the encoder, the adaptor, prefill): the weight in panels of 16 output rows
// with 4 consecutive k of each row side by side (q8_pack: (ceil(N/16), ceil(K/4), 16 x 4)), so
// one vpdpbusd adds 4 k of 16 outputs against 4 bytes of one activation row, broadcast: no
// horizontal sums, 16 outputs per store. The integer sums are q8_rows' exactly and the epilogue
// is the same arithmetic, so a row's result does not depend on which of the two computed it
// (or on the other rows). This layout is prepared once and memory-mapped
// (engine.kernels.prepared), where fbgemm repacks its own at every load (3-6 s for the model).
// Columns n .. min(n + 16 NR, N) of y, bias and res sit at index c - c0 (q8_gemm: c0 = 0, the
// whole matrix; q8_panel_rows: c0 = the block's first column, as q8_rows stores them).
template <int MR, int NR>
Q8 static inline void gemm_tile(const uint8_t* q, int64_t ldq, const float* xs, const int8_t* wp,
                                int64_t Kg, const float* s, const int32_t* sum, const float* bias,
                                int64_t n, int64_t N, float* y, int64_t ldy, int64_t c0 = 0,
                                const float* res = nullptr) {
  // fully unrolled so that the 24 accumulators stay in registers (GCC otherwise keeps the
  // array on the stack and stores it on every k step: half the speed, measured)
  __m512i acc[MR][NR];
#pragma GCC unroll 8
  for (int j = 0; j < MR; ++j)
#pragma GCC unroll 4
    for (int i = 0; i < NR; ++i) acc[j][i] = _mm512_setzero_si512();
  for (int64_t g = 0; g < Kg; ++g) {
    __m512i wv[NR];
#pragma GCC unroll 4
    for (int i = 0; i < NR; ++i) {
      // few rows (decoding) are bound by the stream: each panel's line 4 KB on into L2, more
      // misses in flight than the hardware prefetcher keeps (as dot_block does for the rows)
      if (MR <= 2) _mm_prefetch(reinterpret_cast<const char*>(wp + (i * Kg + g) * 64 + 4096), _MM_HINT_T1);
      wv[i] = _mm512_loadu_si512(wp + (i * Kg + g) * 64);
    }
#pragma GCC unroll 8
    for (int j = 0; j < MR; ++j) {
      int32_t four;
      std::memcpy(&four, q + j * ldq + 4 * g, 4);
      const __m512i xb = _mm512_set1_epi32(four);
#pragma GCC unroll 4
      for (int i = 0; i < NR; ++i) acc[j][i] = _mm512_dpbusd_epi32(acc[j][i], xb, wv[i]);
    }
  }
  alignas(64) int32_t out[MR][NR][16];
#pragma GCC unroll 8
  for (int j = 0; j < MR; ++j)
#pragma GCC unroll 4
    for (int i = 0; i < NR; ++i) _mm512_store_si512(out[j][i], acc[j][i]);
  for (int i = 0; i < NR; ++i) {
    const int64_t c = n + 16 * i;
    const __mmask16 mask = N - c >= 16 ? static_cast<__mmask16>(0xFFFF)
                                       : static_cast<__mmask16>((1u << (N - c)) - 1);
    const __m512 sv = _mm512_maskz_loadu_ps(mask, s + c);
    const __m512i off = _mm512_slli_epi32(_mm512_maskz_loadu_epi32(mask, sum + c), 7);  // 128 sum
    const __m512 bv = bias ? _mm512_maskz_loadu_ps(mask, bias + c - c0) : _mm512_setzero_ps();
    for (int j = 0; j < MR; ++j) {
      const __m512 r = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_load_si512(out[j][i]), off));
      const __m512 rv = res ? _mm512_maskz_loadu_ps(mask, res + j * ldy + c - c0) : bv;
      const __m512 v = q8_out16(_mm512_mul_ps(_mm512_set1_ps(xs[j]), sv), r,
                                bias ? &bv : nullptr, res ? &rv : nullptr);
      _mm512_mask_storeu_ps(y + j * ldy + c - c0, mask, v);
    }
  }
}

template <int NR>
Q8 static inline void gemm_rows_nr(int64_t mr, const uint8_t* q, int64_t ldq, const float* xs,
                                   const int8_t* wp, int64_t Kg, const float* s,
                                   const int32_t* sum, const float* bias, int64_t n, int64_t N,
                                   float* y, int64_t ldy, int64_t c0 = 0,
                                   const float* res = nullptr) {
  switch (mr) {
    case 1: gemm_tile<1, NR>(q, ldq, xs, wp, Kg, s, sum, bias, n, N, y, ldy, c0, res); break;
    case 2: gemm_tile<2, NR>(q, ldq, xs, wp, Kg, s, sum, bias, n, N, y, ldy, c0, res); break;
    case 3: gemm_tile<3, NR>(q, ldq, xs, wp, Kg, s, sum, bias, n, N, y, ldy, c0, res); break;
    case 4: gemm_tile<4, NR>(q, ldq, xs, wp, Kg, s, sum, bias, n, N, y, ldy, c0, res); break;
    case 5: gemm_tile<5, NR>(q, ldq, xs, wp, Kg, s, sum, bias, n, N, y, ldy, c0, res); break;
    default: gemm_tile<6, NR>(q, ldq, xs, wp, Kg, s, sum, bias, n, N, y, ldy, c0, res); break;
  }
}

// 6 rows x 64 outputs per tile: 24 accumulators, 4 weight registers and the broadcast of 32.
static constexpr int64_t GEMM_MR = 6, GEMM_NR = 4, GEMM_COLS = 16 * GEMM_NR;
// Rows per pass: their quantised activations (~100 KB at K = 1024) stay in L2 while every
// weight panel of the thread's share goes by.
static constexpr int64_t GEMM_ROWS = 96;

// q8_rows on the panel layout: the same integer sums and epilogue, so the same floats (tested).
// The block starts on a panel (n0 % 16 == 0: blocks are multiples of Q8_BLOCK, and q8parts
// refuses stacked panel parts that are not multiples of 16 before any parallel region, where a
// throw would end the process); each thread then streams whole panels in order.
Q8 static void q8_panel_rows(const uint8_t* q, int64_t ldq, const float* xs, int64_t M,
                             const Q8W& W, int64_t n0, int64_t n1, float* y, int64_t ldy,
                             const float* bias, const float* res) {
  for (int64_t n = n0; n < n1; n += GEMM_COLS) {
    const int64_t nr = std::min<int64_t>(GEMM_NR, (std::min(n1, n + GEMM_COLS) - n + 15) / 16);
    const int8_t* panel = W.wp + (n / 16) * W.Kg * 64;
    for (int64_t m = 0; m < M; m += GEMM_MR) {
      const int64_t mr = std::min(GEMM_MR, M - m);
      const uint8_t* qm = q + m * ldq;
      float* ym = y + m * ldy;
      const float* rm = res ? res + m * ldy : nullptr;
      switch (nr) {
        case 1: gemm_rows_nr<1>(mr, qm, ldq, xs + m, panel, W.Kg, W.s, W.sum, bias, n, n1, ym, ldy, n0, rm); break;
        case 2: gemm_rows_nr<2>(mr, qm, ldq, xs + m, panel, W.Kg, W.s, W.sum, bias, n, n1, ym, ldy, n0, rm); break;
        case 3: gemm_rows_nr<3>(mr, qm, ldq, xs + m, panel, W.Kg, W.s, W.sum, bias, n, n1, ym, ldy, n0, rm); break;
        default: gemm_rows_nr<4>(mr, qm, ldq, xs + m, panel, W.Kg, W.s, W.sum, bias, n, n1, ym, ldy, n0, rm); break;
      }
    }
  }
}

at::Tensor q8_gemm(at::Tensor x, at::Tensor wp, at::Tensor s, at::Tensor sum, at::Tensor bias) {
  check_f32(x, "x");
  TORCH_CHECK(x.dim() == 2, "q8_gemm: x must be (M, K)");
  TORCH_CHECK(wp.dtype() == at::kChar && wp.dim() == 3 && wp.size(2) == 64 && wp.is_contiguous(),
              "q8_gemm: packed weight (ceil(N/16), ceil(K/4), 64) int8 expected (q8_pack)");
  const int64_t M = x.size(0), K = x.size(1), N = s.numel(), Kg = wp.size(1);
  TORCH_CHECK(s.dtype() == at::kFloat && sum.dtype() == at::kInt && sum.numel() == N,
              "q8_gemm: weight scales / sums do not match the weight");
  TORCH_CHECK(wp.size(0) == (N + 15) / 16 && Kg == (K + 3) / 4,
              "q8_gemm: packed weight is for another shape than x (M, ", K, ") -> ", N);
  if (bias.numel()) {
    check_f32(bias, "bias");
    TORCH_CHECK(bias.numel() == N, "q8_gemm: bias must have N values");
  }
  x = x.contiguous();
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0) return y;
  const int64_t ld = q8_ld(K);
  std::vector<uint8_t> q(M * ld);
  std::vector<float> xs(M);
  const float* xp = x.data_ptr<float>();
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads())
  for (int64_t m0 = 0; m0 < M; m0 += 16)
    quantize_rows(xp + m0 * K, K, std::min<int64_t>(16, M - m0), K, q.data() + m0 * ld, ld,
                  xs.data() + m0);
  const int8_t* w = wp.data_ptr<int8_t>();
  const float* sp = s.data_ptr<float>();
  const int32_t* sump = sum.data_ptr<int32_t>();
  const float* bp = bias.numel() ? bias.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  q8_parallel(N, GEMM_COLS, [&](int64_t n0, int64_t n1) {
    for (int64_t r0 = 0; r0 < M; r0 += GEMM_ROWS) {
      const int64_t r1 = std::min(M, r0 + GEMM_ROWS);
      for (int64_t n = n0; n < n1; n += GEMM_COLS) {
        const int64_t nr = std::min<int64_t>(GEMM_NR, (std::min(n1, n + GEMM_COLS) - n + 15) / 16);
        const int8_t* panel = w + (n / 16) * Kg * 64;
        for (int64_t m = r0; m < r1; m += GEMM_MR) {
          const int64_t mr = std::min(GEMM_MR, r1 - m);
          const uint8_t* qm = q.data() + m * ld;
          float* ym = yp + m * N;
          switch (nr) {
            case 1: gemm_rows_nr<1>(mr, qm, ld, xs.data() + m, panel, Kg, sp, sump, bp, n, N, ym, N); break;
            case 2: gemm_rows_nr<2>(mr, qm, ld, xs.data() + m, panel, Kg, sp, sump, bp, n, N, ym, N); break;
            case 3: gemm_rows_nr<3>(mr, qm, ld, xs.data() + m, panel, Kg, sp, sump, bp, n, N, ym, N); break;
            default: gemm_rows_nr<4>(mr, qm, ld, xs.data() + m, panel, Kg, sp, sump, bp, n, N, ym, N); break;
          }
        }
      }
    }
  });
  return y;
}

// ---- bf16-stored weights, fp32 arithmetic: each weight widened exactly (bf16 is the top half
// of an fp32), 16 lanes at a time.
struct B16W {
  const uint16_t* w; int64_t N, K;
  bool takes(int64_t k) const { return K == k; }
};

static B16W b16w(const at::Tensor& w) {
  TORCH_CHECK(w.dtype() == at::kBFloat16 && w.dim() == 2 && w.is_contiguous(), "bf16 weight (N, K) expected");
  return {reinterpret_cast<const uint16_t*>(w.data_ptr()), w.size(0), w.size(1)};
}

B16 static inline __m512 widen16(const uint16_t* w) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w))), 16));
}

// r[j][i] = x[j] . w[i] in fp32 for MB rows of x (row stride ldx) and NB weight rows.
template <int MB, int NB>
B16 static inline void b16_block(const float* x, int64_t ldx, const uint16_t* w, int64_t K,
                                 float r[4][4]) {
  __m512 acc[MB][NB];
  for (int j = 0; j < MB; ++j)
    for (int i = 0; i < NB; ++i) acc[j][i] = _mm512_setzero_ps();
  const int64_t Kf = K - K % 16;
  for (int64_t k = 0; k < Kf; k += 16) {
    __m512 wv[NB];
    for (int i = 0; i < NB; ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(w + (2 * NB + i) * K + k), _MM_HINT_T1);
      wv[i] = widen16(w + i * K + k);
    }
    for (int j = 0; j < MB; ++j) {
      const __m512 xv = _mm512_loadu_ps(x + j * ldx + k);
      for (int i = 0; i < NB; ++i) acc[j][i] = _mm512_fmadd_ps(wv[i], xv, acc[j][i]);
    }
  }
  for (int j = 0; j < MB; ++j)
    for (int i = 0; i < NB; ++i) {
      float sum = _mm512_reduce_add_ps(acc[j][i]);
      for (int64_t k = Kf; k < K; ++k) sum += widen(w[i * K + k]) * x[j * ldx + k];
      r[j][i] = sum;
    }
}

template <int NB>
B16 static inline void b16_rows_nb(const float* x, int64_t ldx, int64_t mb, const uint16_t* w,
                                   int64_t K, float r[4][4]) {
  switch (mb) {
    case 1: b16_block<1, NB>(x, ldx, w, K, r); break;
    case 2: b16_block<2, NB>(x, ldx, w, K, r); break;
    case 3: b16_block<3, NB>(x, ldx, w, K, r); break;
    default: b16_block<4, NB>(x, ldx, w, K, r); break;
  }
}

// y[m, n - n0] = x[m] . w[n] (+ bias[n - n0]) (+ res[m, n - n0]) for n0 <= n < n1, as q8_rows.
B16 static void b16_rows(const float* x, int64_t ldx, int64_t M, const B16W& W, int64_t n0,
                         int64_t n1, float* y, int64_t ldy, const float* bias, const float* res) {
  float r[4][4];
  for (int64_t n = n0; n < n1;) {  // weight rows outermost, as in q8_rows
    const int64_t nb = n + 4 <= n1 ? 4 : 1;
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      const int64_t mb = std::min<int64_t>(4, M - m0);
      const float* xm = x + m0 * ldx;
      if (nb == 4) b16_rows_nb<4>(xm, ldx, mb, W.w + n * W.K, W.K, r);
      else b16_rows_nb<1>(xm, ldx, mb, W.w + n * W.K, W.K, r);
      for (int64_t j = 0; j < mb; ++j)
        for (int64_t i = 0; i < nb; ++i) {
          const int64_t c = n + i, o = (m0 + j) * ldy + c - n0;
          float v = r[j][i];
          if (bias) v += bias[c - n0];
          if (res) v += res[o];
          y[o] = v;
        }
    }
    n += nb;
  }
}

// ---- the two weight kinds behind one interface: Acts<W> holds M rows of activations in the
// form W's product takes (int8: quantised; bf16: the fp32 rows themselves), and rows() runs it.
template <class W> struct Acts;

template <> struct Acts<Q8W> {
  std::vector<uint8_t> q; std::vector<float> s; int64_t ld = 0, M = 0;
  void set(const float* x, int64_t ldx, int64_t M_, int64_t K) {
    M = M_; ld = q8_ld(K); q.resize(M * ld); s.resize(M);
    quantize_rows(x, ldx, M, K, q.data(), ld, s.data());
  }
  void rows(const Q8W& W, int64_t n0, int64_t n1, float* y, int64_t ldy, const float* bias,
            const float* res) const {
    q8_rows(q.data(), ld, s.data(), M, W, n0, n1, y, ldy, bias, res);
  }
};

template <> struct Acts<B16W> {
  const float* x = nullptr; int64_t ld = 0, M = 0;
  void set(const float* x_, int64_t ldx, int64_t M_, int64_t) { x = x_; ld = ldx; M = M_; }
  void rows(const B16W& W, int64_t n0, int64_t n1, float* y, int64_t ldy, const float* bias,
            const float* res) const {
    b16_rows(x, ld, M, W, n0, n1, y, ldy, bias, res);
  }
};

// A matrix whose row blocks live in separate tensors (q, k and v; gate and up): part i holds
// rows off[i] .. off[i+1]. The checkpoint's own tensors serve as they are, with no stacked copy.
template <class W> struct Parts {
  std::vector<W> w; std::vector<int64_t> off{0};
  int64_t N = 0, K = 0;
  void add(const W& p) {
    TORCH_CHECK(w.empty() || p.K == K, "stacked projections must share their input size");
    w.push_back(p); K = p.K; N += p.N; off.push_back(N);
  }
  bool takes(int64_t k) const { return w.front().takes(k); }
};

// Acts::rows for rows n0 .. n1 of the whole matrix, part by part; y starts at column n0.
template <class W>
static void rows_of(const Acts<W>& a, const Parts<W>& P, int64_t n0, int64_t n1, float* y,
                    int64_t ldy) {
  for (size_t i = 0; i < P.w.size(); ++i) {
    const int64_t o = P.off[i], lo = std::max(n0, o), hi = std::min(n1, P.off[i + 1]);
    if (lo < hi) a.rows(P.w[i], lo - o, hi - o, y + (lo - n0), ldy, nullptr, nullptr);
  }
}

// y = x W^T (+ bias), x (M, K) fp32 rows.
template <class W>
static at::Tensor linear_t(const at::Tensor& x, const W& w, const at::Tensor& bias) {
  check_f32(x, "x");
  TORCH_CHECK(x.dim() == 2 && w.takes(x.size(1)), "linear: x has ", x.size(1),
              " columns, the weight takes ", w.K);
  if (bias.numel()) check_f32(bias, "bias");
  const int64_t M = x.size(0);
  at::Tensor y = at::empty({M, w.N}, x.options());
  Acts<W> a;
  a.set(x.data_ptr<float>(), x.size(1), M, x.size(1));
  float* yp = y.data_ptr<float>();
  const float* bp = bias.numel() ? bias.data_ptr<float>() : nullptr;
  q8_parallel(w.N, Q8_BLOCK, [&](int64_t n0, int64_t n1) {
    a.rows(w, n0, n1, yp + n0, w.N, bp ? bp + n0 : nullptr, nullptr);
  });
  return y;
}

// x + down(silu(gate(n)) * up(n)), n = rms_norm(x) * nw, for the M rows of x ((B, 1, C) or
// (M, C)). GU: the gate rows, then the up rows (2I x C); each block of gate rows is finished
// with the same block of up rows.
template <class W>
static at::Tensor mlp_t(const at::Tensor& x, const at::Tensor& nw, double eps,
                           const Parts<W>& GU, const W& DN) {
  check_f32(x, "x");
  check_f32(nw, "norm weight");
  const int64_t C = nw.numel(), M = x.numel() / C, I = GU.N / 2;
  TORCH_CHECK(GU.takes(C) && GU.N == 2 * I && DN.takes(I) && DN.N == C, "mlp step: shapes disagree");
  const float* xp = x.data_ptr<float>();
  std::vector<float> xn(M * C), h(M * I);
  for (int64_t m = 0; m < M; ++m)
    rms_row(xp + m * C, nw.data_ptr<float>(), xn.data() + m * C, C, static_cast<float>(eps));
  Acts<W> a, ah;
  a.set(xn.data(), C, M, C);
  q8_parallel(I, Q8_BLOCK, [&](int64_t i0, int64_t i1) {
    const int64_t n = i1 - i0;
    std::vector<float> g(M * n), u(M * n);
    rows_of(a, GU, i0, i1, g.data(), n);
    rows_of(a, GU, I + i0, I + i1, u.data(), n);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t i = 0; i < n; ++i) {
        const float gv = g[m * n + i];
        h[m * I + i0 + i] = gv / (1.0f + std::exp(-gv)) * u[m * n + i];
      }
  });
  ah.set(h.data(), I, M, I);
  at::Tensor out = at::empty_like(x);
  float* op = out.data_ptr<float>();
  q8_parallel(C, Q8_BLOCK, [&](int64_t n0, int64_t n1) { ah.rows(DN, n0, n1, op + n0, C, nullptr, xp + n0); });
  return out;
}

// x + o(attention(n)), n = rms_norm(x) * nw, for one new token per batch row: x (B, 1, C).
// QKV: the q, k and v projections as one matrix (H*D + 2*KV*D rows); q and k get their per-head
// RMSNorm (qn, kn) and RoPE (cos, sin (B, D)); batch row b's k and v go into column pos[b] of
// cache row rows[b] of kc, vc (rows, KV, capacity, D), as decode_attention's.
template <class W>
static at::Tensor attention_t(const at::Tensor& x, const at::Tensor& nw, double eps,
                                 const Parts<W>& QKV, const at::Tensor& qn, const at::Tensor& kn,
                                 const at::Tensor& cos, const at::Tensor& sin,
                                 const at::Tensor& kc, const at::Tensor& vc,
                                 const at::Tensor& rows, const at::Tensor& pos, const W& O) {
  for (auto* t : {&x, &nw, &qn, &kn, &cos, &sin}) check_f32(*t, "attention step argument");
  check_cache(kc, vc, "attention step");
  const int64_t C = nw.numel(), B = rows.numel(), KV = kc.size(1), cap = kc.size(2), D = kc.size(3);
  const int64_t H = QKV.N / D - 2 * KV, QD = H * D, KD = KV * D, R = QKV.N;
  TORCH_CHECK(x.numel() == B * C && QKV.takes(C) && O.takes(QD) && O.N == C && qn.numel() == D &&
              kn.numel() == D && cos.numel() == B * D && sin.numel() == B * D && B > 0 &&
              D <= 1024 && H > 0 && H % KV == 0, "attention step: shapes disagree");
  check_rows(rows, pos, B, kc.size(0), cap, "attention step");
  const float* xp = x.data_ptr<float>();
  const float e = static_cast<float>(eps);
  std::vector<float> xn(B * C), proj(B * R), att(B * QD);
  for (int64_t m = 0; m < B; ++m) rms_row(xp + m * C, nw.data_ptr<float>(), xn.data() + m * C, C, e);
  Acts<W> a, aa;
  a.set(xn.data(), C, B, C);
  q8_parallel(R, Q8_BLOCK, [&](int64_t n0, int64_t n1) {
    rows_of(a, QKV, n0, n1, proj.data() + n0, R);
  });
  const float *qw = qn.data_ptr<float>(), *kw = kn.data_ptr<float>();
  for (int64_t m = 0; m < B; ++m) {
    const float *cs = cos.data_ptr<float>() + m * D, *sn = sin.data_ptr<float>() + m * D;
    float* row = proj.data() + m * R;
    for (int64_t h = 0; h < H; ++h) norm_rope_head(row + h * D, qw, cs, sn, D, e);
    for (int64_t h = 0; h < KV; ++h) norm_rope_head(row + QD + h * D, kw, cs, sn, D, e);
  }
  attend_cache(proj.data(), R, proj.data() + QD, R, proj.data() + QD + KD, R, kc, vc, B, H,
               rows.data_ptr<int64_t>(), pos.data_ptr<int64_t>(), att.data());
  aa.set(att.data(), QD, B, QD);
  at::Tensor out = at::empty_like(x);
  float* op = out.data_ptr<float>();
  q8_parallel(C, Q8_BLOCK, [&](int64_t n0, int64_t n1) { aa.rows(O, n0, n1, op + n0, C, nullptr, xp + n0); });
  return out;
}

// ---- entry points. int8: (weight, row scales, row sums) per matrix, lists of them for the
// stacked projections; bf16: the weight, or a list.
static Parts<Q8W> q8parts(const std::vector<at::Tensor>& w, const std::vector<at::Tensor>& s,
                          const std::vector<at::Tensor>& sum) {
  TORCH_CHECK(w.size() == s.size() && w.size() == sum.size() && !w.empty(), "int8 parts disagree");
  Parts<Q8W> p;
  for (size_t i = 0; i < w.size(); ++i) {
    p.add(q8w(w[i], s[i], sum[i]));
    TORCH_CHECK(!p.w.back().wp || i + 1 == w.size() || p.w.back().N % 16 == 0,
                "stacked int8 panels: every part but the last must have a multiple of 16 rows");
  }
  return p;
}

static Parts<B16W> b16parts(const std::vector<at::Tensor>& w) {
  TORCH_CHECK(!w.empty(), "no bf16 parts");
  Parts<B16W> p;
  for (const auto& t : w) p.add(b16w(t));
  return p;
}

at::Tensor q8_linear(at::Tensor x, at::Tensor w, at::Tensor s, at::Tensor sum,
                        at::Tensor bias) {
  return linear_t(x, q8w(w, s, sum), bias);
}

at::Tensor q8_mlp(at::Tensor x, at::Tensor nw, double eps, std::vector<at::Tensor> gu,
                     std::vector<at::Tensor> gus, std::vector<at::Tensor> gusum,
                     at::Tensor dn, at::Tensor dns, at::Tensor dnsum) {
  return mlp_t(x, nw, eps, q8parts(gu, gus, gusum), q8w(dn, dns, dnsum));
}

at::Tensor q8_attention(at::Tensor x, at::Tensor nw, double eps,
                           std::vector<at::Tensor> qkv, std::vector<at::Tensor> qkvs,
                           std::vector<at::Tensor> qkvsum, at::Tensor qn, at::Tensor kn,
                           at::Tensor cos, at::Tensor sin, at::Tensor kc,
                           at::Tensor vc, at::Tensor rows, at::Tensor pos,
                           at::Tensor o, at::Tensor os, at::Tensor osum) {
  return attention_t(x, nw, eps, q8parts(qkv, qkvs, qkvsum), qn, kn, cos, sin, kc, vc, rows,
                     pos, q8w(o, os, osum));
}

at::Tensor b16_linear(at::Tensor x, at::Tensor w, at::Tensor bias) {
  return linear_t(x, b16w(w), bias);
}

at::Tensor b16_mlp(at::Tensor x, at::Tensor nw, double eps, std::vector<at::Tensor> gu,
                      at::Tensor dn) {
  return mlp_t(x, nw, eps, b16parts(gu), b16w(dn));
}

at::Tensor b16_attention(at::Tensor x, at::Tensor nw, double eps,
                            std::vector<at::Tensor> qkv, at::Tensor qn, at::Tensor kn,
                            at::Tensor cos, at::Tensor sin, at::Tensor kc,
                            at::Tensor vc, at::Tensor rows, at::Tensor pos,
                            at::Tensor o) {
  return attention_t(x, nw, eps, b16parts(qkv), qn, kn, cos, sin, kc, vc, rows, pos, b16w(o));
}

// ---- every layer of the decoder in one call per token (engine/kernels/decode_step.py's
// DecodeStack): attention_t and mlp_t layer after layer, so the same floats as the per-layer
// calls, without 56 calls from Python and the Python between them (~1 ms of a ~21 ms int8 step
// of one sequence on the 2-core EPYC: 0.955x, eight sequences 0.968x, bf16 one 0.989x, in-process
// A/B, same tokens). The stack keeps the weight tensors alive and takes the caches per call,
// since KVCache.grow replaces them.
template <class W>
class Stack final : public LayerStack {
 public:
  struct Layer { at::Tensor n1, n2, qn, kn; Parts<W> qkv, gu; W o, dn; };

  Stack(double eps, std::vector<Layer> layers, std::vector<at::Tensor> keep)
      : eps_(eps), layers_(std::move(layers)), keep_(std::move(keep)) {}

  at::Tensor forward(at::Tensor x, at::Tensor cos, at::Tensor sin, Tensors kc, Tensors vc,
                     at::Tensor rows, at::Tensor pos) override {
    TORCH_CHECK(kc.size() == layers_.size() && vc.size() == layers_.size(),
                "decoder stack: ", layers_.size(), " layers but ", kc.size(), " key and ",
                vc.size(), " value caches");
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& L = layers_[l];
      x = attention_t(x, L.n1, eps_, L.qkv, L.qn, L.kn, cos, sin, kc[l], vc[l], rows, pos, L.o);
      x = mlp_t(x, L.n2, eps_, L.gu, L.dn);
    }
    return x;
  }

 private:
  double eps_;
  std::vector<Layer> layers_;
  std::vector<at::Tensor> keep_;
};

// A Stack from the layers' tensor groups (kernels.h): the norms (input, post-attention, q, k)
// checked as the steps check them, each layer's products by ``products`` (the kind's own
// layout), every tensor kept.
template <class W, class F>
static std::shared_ptr<LayerStack> make_stack(const std::vector<std::vector<Tensors>>& layers,
                                              double eps, const F& products) {
  std::vector<typename Stack<W>::Layer> out;
  Tensors keep;
  for (const auto& g : layers) {
    TORCH_CHECK(!g.empty() && g[0].size() == 4, "decoder stack: a layer needs its 4 norm weights");
    for (const auto& t : g[0]) check_f32(t, "norm weight");
    typename Stack<W>::Layer L;
    L.n1 = g[0][0]; L.n2 = g[0][1]; L.qn = g[0][2]; L.kn = g[0][3];
    products(g, L);
    for (const auto& part : g) keep.insert(keep.end(), part.begin(), part.end());
    out.push_back(std::move(L));
  }
  return std::make_shared<Stack<W>>(eps, std::move(out), std::move(keep));
}

std::shared_ptr<LayerStack> q8_stack(std::vector<std::vector<Tensors>> layers, double eps) {
  return make_stack<Q8W>(layers, eps, [](const std::vector<Tensors>& g, Stack<Q8W>::Layer& L) {
    // norms, q/k/v (weights, scales, sums), o, gate/up (weights, scales, sums), down
    TORCH_CHECK(g.size() == 9 && g[4].size() == 3 && g[8].size() == 3,
                "decoder stack: an int8 layer is [norms, qkv, qkv scales, qkv sums, "
                "(o, scale, sum), gu, gu scales, gu sums, (down, scale, sum)]");
    L.qkv = q8parts(g[1], g[2], g[3]);
    L.o = q8w(g[4][0], g[4][1], g[4][2]);
    L.gu = q8parts(g[5], g[6], g[7]);
    L.dn = q8w(g[8][0], g[8][1], g[8][2]);
  });
}

std::shared_ptr<LayerStack> b16_stack(std::vector<std::vector<Tensors>> layers, double eps) {
  return make_stack<B16W>(layers, eps, [](const std::vector<Tensors>& g, Stack<B16W>::Layer& L) {
    TORCH_CHECK(g.size() == 5 && g[2].size() == 1 && g[4].size() == 1,
                "decoder stack: a bf16 layer is [norms, qkv, (o,), gu, (down,)]");
    L.qkv = b16parts(g[1]);
    L.o = b16w(g[2][0]);
    L.gu = b16parts(g[3]);
    L.dn = b16w(g[4][0]);
  });
}

// ---- greedy pick over a bf16 output matrix (the lm_head), exact, screened by an int8 copy.
// For a row w of W with q = round(w / s), and the input x as two int8 rows (p1 = round(x / t1),
// then p2 = round((x - t1 p1) / t2), as quantize_rows makes them), with d = x - t1 p1 - t2 p2:
//   w . x = s (t1 q . p1 + t2 q . p2) + s q . d + (w - s q) . x
// so the estimate a = s (t1 q . p1 + t2 q . p2), integer products computed exactly by q8_rows,
// is within  s |q| |d| + |w - s q| |x|  (Cauchy-Schwarz) of the true value, plus its own fp32
// roundings; the fp32 sum the b16 kernel makes is within (K + 16) u |w| |x| of the true value
// (u = 2^-24). Every row whose estimate plus bound reaches the best estimate minus its bound may
// be the argmax; those few rows are computed exactly (the same b16_block the full product uses,
// so the same fp32 values) and the first largest wins, as torch.argmax picks.

// 16 weights widened (zeros past `n` of them: the row's tail).
B16 static inline __m512 widen16_mask(const uint16_t* w, int64_t n) {
  const __mmask16 m = static_cast<__mmask16>((1u << std::min<int64_t>(16, n)) - 1);
  return _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w)), 16));
}

// One row of K values: q = round(w / s) (fp32, to nearest even), the scale, sum(q),
// |q|^2 (exact: fp32 lanes hold integers below 2^24), |w - s q|^2 and |w|^2 (the error from one
// fused rounding each, summed in double).
B16 static void screen_row(const uint16_t* wr, int64_t K, int8_t* q, float* sc_out, int64_t* qs,
                           double* q2, double* e2, double* w2) {
  __m512 mx = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) mx = _mm512_max_ps(mx, _mm512_abs_ps(widen16_mask(wr + k, K - k)));
  const float amax = _mm512_reduce_max_ps(mx);
  const float sc = amax > 0.0f ? amax / 127.0f : 1.0f;
  const __m512 vs = _mm512_set1_ps(sc), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  __m512 qq = _mm512_setzero_ps();
  __m512i qsum = _mm512_setzero_si512();
  __m512d ee = _mm512_setzero_pd(), ww = _mm512_setzero_pd();
  for (int64_t k = 0; k < K; k += 16) {
    const __m512 v = widen16_mask(wr + k, K - k);  // past the tail: 0, so q = e = 0 there
    const __m512i qi = _mm512_cvtps_epi32(_mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_div_ps(v, vs))));
    const __mmask16 m = static_cast<__mmask16>((1u << std::min<int64_t>(16, K - k)) - 1);
    _mm_mask_storeu_epi8(q + k, m, _mm512_cvtepi32_epi8(qi));
    const __m512 qf = _mm512_cvtepi32_ps(qi);
    qq = _mm512_fmadd_ps(qf, qf, qq);
    qsum = _mm512_add_epi32(qsum, qi);
    const __m512 e = _mm512_fnmadd_ps(vs, qf, v);  // v - s q, rounded once
    const __m512d e0 = _mm512_cvtps_pd(_mm512_castps512_ps256(e)),
                  e1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)));
    const __m512d v0 = _mm512_cvtps_pd(_mm512_castps512_ps256(v)),
                  v1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    ee = _mm512_fmadd_pd(e1, e1, _mm512_fmadd_pd(e0, e0, ee));
    ww = _mm512_fmadd_pd(v1, v1, _mm512_fmadd_pd(v0, v0, ww));
  }
  *sc_out = sc;
  *qs = _mm512_reduce_add_epi32(qsum);
  *q2 = _mm512_reduce_add_ps(qq);
  *e2 = _mm512_reduce_add_pd(ee);
  *w2 = _mm512_reduce_add_pd(ww);
}

// Per row of W (N, K) bf16: int8 q, scale s, sum(q) (for q8_rows), and the two bound
// coefficients s |q| and |w - s q| + (K + 16) u |w|, rounded up (the fp32 rounding of w - s q
// is within the 1e-6; the bound adds its own slack on top).
std::vector<at::Tensor> screen_prepare(at::Tensor w) {
  const B16W W = b16w(w);
  const int64_t N = W.N, K = W.K;
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor w8 = at::empty({N, K}, at::TensorOptions().dtype(at::kChar));
  at::Tensor s = at::empty({N}, f32), qn = at::empty({N}, f32), en = at::empty({N}, f32);
  at::Tensor sum = at::empty({N}, at::TensorOptions().dtype(at::kInt));
  int8_t* qp = w8.data_ptr<int8_t>();
  float *sp = s.data_ptr<float>(), *qnp = qn.data_ptr<float>(), *enp = en.data_ptr<float>();
  int32_t* sump = sum.data_ptr<int32_t>();
  const double fp_sum = (K + 16) * std::ldexp(1.0, -24);
  at::parallel_for(0, N, 256, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n) {
      int64_t qs;
      double q2, e2, w2;
      screen_row(W.w + n * K, K, qp + n * K, sp + n, &qs, &q2, &e2, &w2);
      sump[n] = static_cast<int32_t>(qs);
      qnp[n] = static_cast<float>(sp[n] * std::sqrt(q2) * (1 + 1e-6));
      enp[n] = static_cast<float>((std::sqrt(e2) + fp_sum * std::sqrt(w2)) * (1 + 1e-6));
    }
  });
  return {w8, s, sum, qn, en};
}

// hi[n] = est[n] + bound[n] for n < N, returning max(est[n] - bound[n]), with est = e1 + e2 and
// bound = (qn[n] dn + en[n] xn) (1 + 1e-4) + rel (|e1| + |e2|); the slack covers this fp32
// arithmetic itself. A banned row has e1 = -inf: its lower end is -inf and its upper end NaN.
B16 static float screen_bounds(const float* e1, const float* e2, const float* qn, const float* en,
                               float dn, float xn, float rel, float* hi, int64_t N) {
  const __m512 vdn = _mm512_set1_ps(dn), vxn = _mm512_set1_ps(xn), vrel = _mm512_set1_ps(rel),
               slack = _mm512_set1_ps(1.0001f);
  __m512 thr = _mm512_set1_ps(-INFINITY);
  int64_t n = 0;
  for (; n + 16 <= N; n += 16) {
    const __m512 a = _mm512_loadu_ps(e1 + n), b = _mm512_loadu_ps(e2 + n);
    const __m512 v = _mm512_add_ps(a, b);
    __m512 bd = _mm512_mul_ps(_mm512_fmadd_ps(_mm512_loadu_ps(qn + n), vdn,
                                              _mm512_mul_ps(_mm512_loadu_ps(en + n), vxn)), slack);
    bd = _mm512_fmadd_ps(vrel, _mm512_add_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)), bd);
    _mm512_storeu_ps(hi + n, _mm512_add_ps(v, bd));
    thr = _mm512_max_ps(thr, _mm512_sub_ps(v, bd));
  }
  float t = _mm512_reduce_max_ps(thr);
  for (; n < N; ++n) {
    const float v = e1[n] + e2[n];
    const float bd = (qn[n] * dn + en[n] * xn) * 1.0001f + rel * (std::fabs(e1[n]) + std::fabs(e2[n]));
    hi[n] = v + bd;
    t = std::max(t, v - bd);
  }
  return t;
}

// Per row of x (M, K): the index of the largest x . W[n] (fp32, as b16_linear computes it),
// banned indices excluded, or -1 where x has a non-finite value (the caller then takes the full
// product). Returns (M,) indices and (M,) candidate counts.
std::vector<at::Tensor> screen_argmax(at::Tensor x, at::Tensor w, at::Tensor w8,
                                         at::Tensor s, at::Tensor sum, at::Tensor qn,
                                         at::Tensor en, at::Tensor banned) {
  check_f32(x, "x");
  const B16W W = b16w(w);
  const Q8W Q = q8w(w8, s, sum);
  const int64_t M = x.size(0), N = W.N, K = W.K;
  TORCH_CHECK(x.dim() == 2 && x.size(1) == K && Q.N == N && Q.K == K && qn.numel() == N &&
              en.numel() == N, "screen_argmax: shapes disagree");
  TORCH_CHECK(banned.dtype() == at::kLong, "banned: int64 indices");
  const float* xp = x.data_ptr<float>();
  // each row of x as two int8 rows: p1 (scale t1) and p2 (scale t2) quantising x - t1 p1, so
  // that a loud channel in x leaves the estimate fine (the bound's |x - t1 p1 - t2 p2| term)
  const int64_t ld = q8_ld(K);
  std::vector<uint8_t> q(2 * M * ld);
  std::vector<float> ts(2 * M), res(K);
  for (int64_t m = 0; m < M; ++m) {
    uint8_t* q1 = q.data() + 2 * m * ld;
    quantize_rows(xp + m * K, K, 1, K, q1, ld, &ts[2 * m]);
    for (int64_t k = 0; k < K; ++k) res[k] = xp[m * K + k] - ts[2 * m] * (static_cast<int>(q1[k]) - 128);
    quantize_rows(res.data(), K, 1, K, q1 + ld, ld, &ts[2 * m + 1]);
  }
  std::vector<float> est(2 * M * N);  // row 2m: t1 s q . p1, row 2m + 1: t2 s q . p2
  q8_parallel(N, 64, [&](int64_t n0, int64_t n1) {
    q8_rows(q.data(), ld, ts.data(), 2 * M, Q, n0, n1, est.data() + n0, N, nullptr, nullptr);
  });
  const int64_t* bp = banned.data_ptr<int64_t>();
  for (int64_t i = 0; i < banned.numel(); ++i) {
    TORCH_CHECK(bp[i] >= 0 && bp[i] < N, "banned index out of range");
    for (int64_t m = 0; m < M; ++m) est[2 * m * N + bp[i]] = -INFINITY;
  }
  at::Tensor tok = at::empty({M}, at::TensorOptions().dtype(at::kLong));
  at::Tensor cnt = at::zeros({M}, at::TensorOptions().dtype(at::kLong));
  int64_t *tp = tok.data_ptr<int64_t>(), *cp = cnt.data_ptr<int64_t>();
  const float *qnp = qn.data_ptr<float>(), *enp = en.data_ptr<float>();
  // the estimate's roundings: three per part (scale products, int -> float) and the sum
  const float rel = 8.0f * std::ldexp(1.0f, -24);
  at::parallel_for(0, M, 1, [&](int64_t b, int64_t e) {
    std::vector<float> hi(N);
    for (int64_t m = b; m < e; ++m) {
      const float* xr = xp + m * K;
      const uint8_t *q1 = q.data() + 2 * m * ld, *q2 = q1 + ld;
      const double t1 = ts[2 * m], t2 = ts[2 * m + 1];
      double x2 = 0.0, d2 = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        const double d = xr[k] - t1 * (static_cast<int>(q1[k]) - 128) - t2 * (static_cast<int>(q2[k]) - 128);
        x2 += static_cast<double>(xr[k]) * xr[k]; d2 += d * d;
      }
      if (!std::isfinite(x2)) { tp[m] = -1; continue; }
      const float dn = static_cast<float>(std::sqrt(d2) * (1 + 1e-6));
      const float xn = static_cast<float>(std::sqrt(x2) * (1 + 1e-6));
      const float* e1 = est.data() + 2 * m * N;
      const float thr = screen_bounds(e1, e1 + N, qnp, enp, dn, xn, rel, hi.data(), N);
      float best = -INFINITY;
      int64_t arg = -1, c = 0;
      for (int64_t n = 0; n < N; ++n) {
        if (!(hi[n] >= thr)) continue;
        float r[4][4];
        b16_block<1, 1>(xr, K, W.w + n * K, K, r);
        ++c;
        if (arg < 0 || r[0][0] > best) { best = r[0][0]; arg = n; }
      }
      tp[m] = arg; cp[m] = c;
    }
  });
  return {tok, cnt};
}

// ---- bf16 mode, many rows (prefill), on CPUs with AVX512_BF16: `vdpbf16ps` multiplies 32
// bf16 pairs and adds them into 16 fp32 lanes, twice the products per instruction of widening
// the weight and fp32 FMAs (gemm_bf16, which runs at the fp32 peak of 2 cores). The cost: the
// activations are rounded to bf16 (round to nearest even), as llama.cpp's BF16 path and
// PyTorch's bf16 matmul do; accumulation and outputs stay fp32. Only the bf16 mode takes it
// (engine/kernels/packed.py): the fp32 mode keeps its exact fp32 products.
bool has_avx512bf16() { return has_avx512() && __builtin_cpu_supports("avx512bf16"); }

// The product is an outer product per pair of k: a pair of x[m] (bf16, one 32-bit word)
// broadcast against a panel of 16 weight rows' pairs at that k, into 16 fp32 lanes, one output
// each: no horizontal sums. The weight is repacked on the fly, for each block of 16 BV output
// columns and k range, into such panels (a 16 x 16 transpose of 32-bit pairs per 16 rows and
// 32 k), which then serve every row of x from L1/L2. Each output sums its k pairs in order, in
// ranges of BK pairs added into y, whatever the tile: a row's result does not depend on M or on
// its neighbours. On an AVX-512 EPYC (Zen 4) this ran at 87-94% of one core's vdpbf16ps peak
// on the model's shapes, against 75% for dot products of rows (5 x 5 or 4 x 4 of 16-lane
// accumulators, each reduced at the end), which streamed 5 x rows from L2 per 25 products.
static constexpr int BMR = 6, BV = 4, BCOLS = 16 * BV;  // 24 accumulators
static constexpr int64_t BK = 512;                       // k pairs per panel (128 KB)

// 16 rows of 16 words -> 16 columns (word j of every row in r[j]).
BF16DOT static inline void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // r[4a + b], 128-bit lane L: word b + 4 L of rows 4a..4a+3
  for (int i = 0; i < 4; ++i) {
    const __m512i ab_lo = _mm512_shuffle_i32x4(r[i], r[4 + i], 0x44);
    const __m512i ab_hi = _mm512_shuffle_i32x4(r[i], r[4 + i], 0xEE);
    const __m512i cd_lo = _mm512_shuffle_i32x4(r[8 + i], r[12 + i], 0x44);
    const __m512i cd_hi = _mm512_shuffle_i32x4(r[8 + i], r[12 + i], 0xEE);
    t[i] = _mm512_shuffle_i32x4(ab_lo, cd_lo, 0x88);
    t[4 + i] = _mm512_shuffle_i32x4(ab_lo, cd_lo, 0xDD);
    t[8 + i] = _mm512_shuffle_i32x4(ab_hi, cd_hi, 0x88);
    t[12 + i] = _mm512_shuffle_i32x4(ab_hi, cd_hi, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Panels of weight rows n0.. (BCOLS of them; rows past N are zero) for k pairs kp0..kp0+kpn-1:
// P[kp][c] = (w[n0 + c][2 (kp0 + kp)], w[n0 + c][2 (kp0 + kp) + 1]), a missing k (odd K) zero.
BF16DOT static void pack_panels(const uint16_t* w, int64_t N, int64_t K, int64_t n0, int64_t kp0,
                                int64_t kpn, uint32_t* P) {
  if (K % 2) {  // rows do not start on a pair: word by word (no model shape takes this)
    for (int64_t kp = 0; kp < kpn; ++kp)
      for (int64_t c = 0; c < BCOLS; ++c) {
        const int64_t n = n0 + c, k = 2 * (kp0 + kp);
        const uint32_t lo = n < N && k < K ? w[n * K + k] : 0, hi = n < N && k + 1 < K ? w[n * K + k + 1] : 0;
        P[kp * BCOLS + c] = lo | (hi << 16);
      }
    return;
  }
  const uint32_t* w32 = reinterpret_cast<const uint32_t*>(w);
  const int64_t K2 = K / 2;
  for (int v = 0; v < BV; ++v)
    for (int64_t kb = 0; kb < kpn; kb += 16) {
      const int64_t cnt = std::min<int64_t>(16, kpn - kb);
      const __mmask16 mk = cnt == 16 ? static_cast<__mmask16>(0xFFFF)
                                     : static_cast<__mmask16>((1u << cnt) - 1);
      __m512i r[16];
      for (int i = 0; i < 16; ++i) {
        const int64_t n = n0 + 16 * v + i;
        r[i] = n < N ? _mm512_maskz_loadu_epi32(mk, w32 + n * K2 + kp0 + kb) : _mm512_setzero_si512();
      }
      transpose16(r);
      for (int64_t j = 0; j < cnt; ++j) _mm512_storeu_si512(P + (kb + j) * BCOLS + 16 * v, r[j]);
    }
}

// R rows of x (their pairs from kp0, row stride ld32 words) times the panels P (kpn pairs):
// y[i][c] = (first ? 0 : y[i][c]) + sum, for the block's nc <= BCOLS columns.
template <int R>
BF16DOT static inline void op_tile(const uint32_t* x, int64_t ld32, const uint32_t* P, int64_t kpn,
                                   float* y, int64_t N, bool first, int64_t nc) {
  __m512 acc[R][BV];
  outer_tile<R, BV>(x, ld32, P, BCOLS, 16, kpn, acc);
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < BV; ++j) {
      const int64_t left = nc - 16 * j;
      if (left <= 0) continue;
      const __mmask16 mk = left >= 16 ? static_cast<__mmask16>(0xFFFF)
                                      : static_cast<__mmask16>((1u << left) - 1);
      float* o = y + i * N + 16 * j;
      _mm512_mask_storeu_ps(o, mk, first ? acc[i][j]
                                         : _mm512_add_ps(_mm512_maskz_loadu_ps(mk, o), acc[i][j]));
    }
}

at::Tensor gemm_bf16dot(at::Tensor x, at::Tensor w) {
  TORCH_CHECK(x.dtype() == at::kFloat && x.dim() == 2, "gemm_bf16dot: x must be (M, K) fp32");
  TORCH_CHECK(w.dtype() == at::kBFloat16 && w.dim() == 2 && w.is_contiguous() &&
              w.size(1) == x.size(1), "gemm_bf16dot: w must be contiguous (N, K) bf16");
  x = x.contiguous();
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0), ld = (K + 31) / 32 * 32;
  auto y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;
  if (K == 0) return y.zero_();
  std::vector<uint16_t> xb(M * ld);
  const float* xp = x.data_ptr<float>();
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads())
  for (int64_t m = 0; m < M; ++m) to_bf16(xp + m * K, K, 1.0f, xb.data() + m * ld);
  const uint16_t* wp = reinterpret_cast<const uint16_t*>(w.data_ptr());
  const uint32_t* x32 = reinterpret_cast<const uint32_t*>(xb.data());
  const int64_t ld32 = ld / 2, K2 = (K + 1) / 2, blocks = (N + BCOLS - 1) / BCOLS;
  float* yp = y.data_ptr<float>();
#pragma omp parallel num_threads(at::get_num_threads())
  {
    std::vector<uint32_t> P(std::min(BK, K2) * BCOLS);
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t n0 = b * BCOLS, nc = std::min<int64_t>(BCOLS, N - n0);
      for (int64_t kp0 = 0; kp0 < K2; kp0 += BK) {
        const int64_t kpn = std::min(BK, K2 - kp0);
        pack_panels(wp, N, K, n0, kp0, kpn, P.data());
        const bool first = kp0 == 0;
        int64_t m = 0;
        for (; m + BMR <= M; m += BMR)
          op_tile<BMR>(x32 + m * ld32 + kp0, ld32, P.data(), kpn, yp + m * N + n0, N, first, nc);
        for (; m < M; ++m)
          op_tile<1>(x32 + m * ld32 + kp0, ld32, P.data(), kpn, yp + m * N + n0, N, first, nc);
      }
    }
  }
  return y;
}
