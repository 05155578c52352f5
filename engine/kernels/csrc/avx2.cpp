// AVX2/FMA kernels for CPU decoding: matrix-vector products over bf16 or int8 weights with
// fp32 arithmetic, and the small per-token ops of a decoder layer and the encoder's FSMN memory
// fused into one call each. Python side: engine/kernels/packed.py, engine/qwen3.py.
#include "common.h"
#include "kernels.h"

// y[m, n] = scale[n] * sum_k x[m, k] * w[n, k]. Rows of x go in blocks of up to 4 that share
// each widened weight load; every row keeps 2 (4 for a single row) independent accumulators so
// that FMA latency, not throughput, is never the limit.
template <typename W>
static void gemv(const float* x, const W* w, const float* scale, float* y,
                 int64_t M, int64_t N, int64_t K) {
  const int64_t K32 = K - K % 32, K16 = K - K % 16;
  // Dynamic scheduling in small blocks: on a shared machine a descheduled thread then delays
  // one block, not half of the matrix.
  const int64_t blocks = (N + 31) / 32;
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads())
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t n1 = std::min<int64_t>(N, (b + 1) * 32);
    for (int64_t n = b * 32; n < n1; ++n) {
      const W* wr = w + n * K;
      const float s = scale ? scale[n] : 1.0f;
      if (M == 1) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t k = 0; k < K32; k += 32) {
          a0 = _mm256_fmadd_ps(load8(wr + k), _mm256_loadu_ps(x + k), a0);
          a1 = _mm256_fmadd_ps(load8(wr + k + 8), _mm256_loadu_ps(x + k + 8), a1);
          a2 = _mm256_fmadd_ps(load8(wr + k + 16), _mm256_loadu_ps(x + k + 16), a2);
          a3 = _mm256_fmadd_ps(load8(wr + k + 24), _mm256_loadu_ps(x + k + 24), a3);
        }
        float sum = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (int64_t k = K32; k < K; ++k) sum += widen(wr[k]) * x[k];
        y[n] = sum * s;
        continue;
      }
      for (int64_t m0 = 0; m0 < M; m0 += 4) {
        const int64_t mb = std::min<int64_t>(4, M - m0);
        __m256 acc[4][2];
        for (int64_t j = 0; j < 4; ++j) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
        for (int64_t k = 0; k < K16; k += 16) {
          const __m256 w0 = load8(wr + k), w1 = load8(wr + k + 8);
          for (int64_t j = 0; j < mb; ++j) {
            const float* xr = x + (m0 + j) * K + k;
            acc[j][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr), acc[j][0]);
            acc[j][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr + 8), acc[j][1]);
          }
        }
        for (int64_t j = 0; j < mb; ++j) {
          float sum = hsum(_mm256_add_ps(acc[j][0], acc[j][1]));
          for (int64_t k = K16; k < K; ++k) sum += widen(wr[k]) * x[(m0 + j) * K + k];
          y[(m0 + j) * N + n] = sum * s;
        }
      }
    }
  }
}

at::Tensor linear_bf16(at::Tensor x, at::Tensor w) {
  TORCH_CHECK(x.dtype() == at::kFloat && w.dtype() == at::kBFloat16);
  x = x.contiguous();
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  auto y = at::empty({M, N}, x.options());
  gemv<uint16_t>(x.data_ptr<float>(), reinterpret_cast<const uint16_t*>(w.data_ptr()), nullptr,
                 y.data_ptr<float>(), M, N, K);
  return y;
}

// Many rows (a prefill): y[m, n] = sum_k x[m, k] * w[n, k] with bf16 weights widened in
// registers, so no fp32 copy of the weight is made per call (converting it and handing it to
// MKL's sgemm cost ~1.5-2x this on AVX2). Tiles of 3 rows of x by 4 rows of w share their loads
// (12 accumulators); x is walked in chunks that stay in L2. Every output is one 8-lane
// accumulator over k in the same order, whatever its tile, so a row's result does not depend
// on M or on its neighbours.
template <int RM, int RN>
static inline void gemm_tile(const float* x, const uint16_t* w, float* y, int64_t N, int64_t K) {
  const int64_t K8 = K - K % 8;
  __m256 acc[RM][RN];
  for (int i = 0; i < RM; ++i)
    for (int j = 0; j < RN; ++j) acc[i][j] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K8; k += 8) {
    __m256 xv[RM];
    for (int i = 0; i < RM; ++i) xv[i] = _mm256_loadu_ps(x + i * K + k);
    for (int j = 0; j < RN; ++j) {
      const __m256 wv = load8(w + j * K + k);
      for (int i = 0; i < RM; ++i) acc[i][j] = _mm256_fmadd_ps(xv[i], wv, acc[i][j]);
    }
  }
  for (int i = 0; i < RM; ++i)
    for (int j = 0; j < RN; ++j) {
      float s = hsum(acc[i][j]);
      for (int64_t k = K8; k < K; ++k) s += x[i * K + k] * widen(w[j * K + k]);
      y[i * N + j] = s;
    }
}

template <int RN>
static inline void gemm_cols(const float* x, const uint16_t* w, float* y, int64_t m0, int64_t m1,
                             int64_t N, int64_t K) {
  int64_t m = m0;
  for (; m + 3 <= m1; m += 3) gemm_tile<3, RN>(x + m * K, w, y + m * N, N, K);
  for (; m < m1; ++m) gemm_tile<1, RN>(x + m * K, w, y + m * N, N, K);
}

at::Tensor gemm_bf16(at::Tensor x, at::Tensor w) {
  TORCH_CHECK(x.dtype() == at::kFloat && x.dim() == 2, "gemm_bf16: x must be (M, K) fp32");
  TORCH_CHECK(w.dtype() == at::kBFloat16 && w.dim() == 2 && w.is_contiguous() &&
              w.size(1) == x.size(1), "gemm_bf16: w must be contiguous (N, K) bf16");
  x = x.contiguous();
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  auto y = at::empty({M, N}, x.options());
  const float* xp = x.data_ptr<float>();
  const uint16_t* wp = reinterpret_cast<const uint16_t*>(w.data_ptr());
  float* yp = y.data_ptr<float>();
  // rows of x per chunk: a multiple of the tile's 3, about 192 KB of x
  const int64_t MB = std::max<int64_t>(3, (192 * 1024 / (4 * std::max<int64_t>(K, 1))) / 3 * 3);
  const int64_t NB = 32, blocks = (N + NB - 1) / NB;
  // dynamic blocks of 32 weight rows: a descheduled thread delays one block (shared machines)
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads())
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t n0 = b * NB, n1 = std::min<int64_t>(N, n0 + NB);
    for (int64_t m0 = 0; m0 < M; m0 += MB) {
      const int64_t m1 = std::min<int64_t>(M, m0 + MB);
      int64_t n = n0;
      for (; n + 4 <= n1; n += 4) gemm_cols<4>(xp, wp + n * K, yp + n, m0, m1, N, K);
      for (; n < n1; ++n) gemm_cols<1>(xp, wp + n * K, yp + n, m0, m1, N, K);
    }
  }
  return y;
}

at::Tensor linear_int8(at::Tensor x, at::Tensor w, at::Tensor scale) {
  TORCH_CHECK(x.dtype() == at::kFloat && w.dtype() == at::kChar);
  x = x.contiguous();
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  auto y = at::empty({M, N}, x.options());
  gemv<int8_t>(x.data_ptr<float>(), w.data_ptr<int8_t>(), scale.data_ptr<float>(),
               y.data_ptr<float>(), M, N, K);
  return y;
}

at::Tensor rms_norm(at::Tensor x, at::Tensor w, double eps) {
  check_f32(x, "x");
  check_f32(w, "weight");
  const int64_t C = w.numel();
  TORCH_CHECK(x.size(-1) == C, "rms_norm: last dim ", x.size(-1), " != ", C);
  auto y = at::empty_like(x);
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, x.numel() / C, 64, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) rms_row(xp + m * C, wp, yp + m * C, C, static_cast<float>(eps));
  });
  return y;
}

// q (M, H*D) and k (M, KV*D), rows = (batch, position) pairs; cos/sin (M, D).
void qk_norm_rope_(at::Tensor q, at::Tensor k, at::Tensor qw, at::Tensor kw,
                   at::Tensor cos, at::Tensor sin, double eps) {
  for (auto* t : {&q, &k, &qw, &kw, &cos, &sin}) check_f32(*t, "qk_norm_rope_ argument");
  const int64_t D = qw.numel();
  TORCH_CHECK(D % 2 == 0 && D <= 1024 && kw.numel() == D, "qk_norm_rope_: bad head_dim");
  const int64_t M = cos.numel() / D;
  TORCH_CHECK(sin.numel() == M * D && q.numel() % (M * D) == 0 && k.numel() % (M * D) == 0,
              "qk_norm_rope_: q/k/cos/sin shapes disagree");
  const int64_t H = q.numel() / (M * D), KV = k.numel() / (M * D);
  float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>();
  const float *qwp = qw.data_ptr<float>(), *kwp = kw.data_ptr<float>();
  const float *cp = cos.data_ptr<float>(), *sp = sin.data_ptr<float>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, M, 16, [&](int64_t b, int64_t end) {
    for (int64_t m = b; m < end; ++m) {
      for (int64_t h = 0; h < H; ++h) norm_rope_head(qp + (m * H + h) * D, qwp, cp + m * D, sp + m * D, D, e);
      for (int64_t h = 0; h < KV; ++h) norm_rope_head(kp + (m * KV + h) * D, kwp, cp + m * D, sp + m * D, D, e);
    }
  });
}

// One decode step of attention: q (B, H*D), k, v (B, KV*D); caches (rows, KV, capacity, D);
// batch row b writes column pos[b] of cache row rows[b] and attends over its columns 0..pos[b].
at::Tensor decode_attention(at::Tensor q, at::Tensor k, at::Tensor v,
                               at::Tensor kc, at::Tensor vc, at::Tensor rows,
                               at::Tensor pos) {
  for (auto* t : {&q, &k, &v}) check_f32(*t, "decode_attention argument");
  check_cache(kc, vc, "decode_attention");
  const int64_t B = rows.numel(), KV = kc.size(1), cap = kc.size(2), D = kc.size(3);
  TORCH_CHECK(B > 0 && k.numel() == B * KV * D && v.numel() == B * KV * D &&
              q.numel() % (B * KV * D) == 0, "decode_attention: shapes disagree");
  check_rows(rows, pos, B, kc.size(0), cap, "decode_attention");
  const int64_t H = q.numel() / (B * D);
  auto out = at::empty({B, H * D}, q.options());
  attend_cache(q.data_ptr<float>(), H * D, k.data_ptr<float>(), KV * D, v.data_ptr<float>(),
               KV * D, kc, vc, B, H, rows.data_ptr<int64_t>(), pos.data_ptr<int64_t>(),
               out.data_ptr<float>());
  return out;
}

// The SAN-M encoder's FSMN memory: v + depthwise conv over time (zero padding `left` frames
// before, K - 1 - left after), per channel weights wt (K, C) (the Conv1d weight transposed).
// v (B, T, C) may be a view with any row stride (a chunk of the fused q/k/v projection).
at::Tensor fsmn_memory(at::Tensor v, at::Tensor wt, int64_t left) {
  TORCH_CHECK(v.dtype() == at::kFloat && v.dim() == 3 && v.stride(2) == 1 &&
              v.stride(0) == v.size(1) * v.stride(1), "fsmn_memory: v must be (B, T, C) fp32 rows");
  check_f32(wt, "fsmn weight");
  const int64_t B = v.size(0), T = v.size(1), C = v.size(2), K = wt.size(0), rs = v.stride(1);
  TORCH_CHECK(wt.size(1) == C && left >= 0 && left < K, "fsmn_memory: bad kernel");
  auto out = at::empty({B, T, C}, v.options().memory_format(at::MemoryFormat::Contiguous));
  const float* vp = v.data_ptr<float>();
  const float* wp = wt.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B * T, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / T, t = r % T;
      float* o = op + r * C;
      for (int64_t c = 0; c < C; ++c) o[c] = 0.0f;
      for (int64_t j = 0; j < K; ++j) {
        const int64_t s = t + j - left;
        if (s < 0 || s >= T) continue;
        const float* x = vp + (b * T + s) * rs;
        const float* w = wp + j * C;
        int64_t c = 0;
        for (; c + 8 <= C; c += 8)
          _mm256_storeu_ps(o + c, _mm256_fmadd_ps(_mm256_loadu_ps(w + c), _mm256_loadu_ps(x + c),
                                                  _mm256_loadu_ps(o + c)));
        for (; c < C; ++c) o[c] += w[c] * x[c];
      }
      const float* x = vp + (b * T + t) * rs;
      int64_t c = 0;
      for (; c + 8 <= C; c += 8)
        _mm256_storeu_ps(o + c, _mm256_add_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(o + c)));
      for (; c < C; ++c) o[c] += x[c];
    }
  });
  return out;
}
