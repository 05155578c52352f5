"""C++ source: int8 x int8 products for AVX-512 VNNI CPUs, and a decoder layer's decode step.

Decoding reads every decoder weight once per step, so its speed is the bandwidth at which int8
weights stream in. ``vpdpbusd`` multiplies 64 uint8 x int8 pairs per instruction, which keeps
the arithmetic far below that bandwidth even on 2 cores (widening int8 weights to fp32, as the
AVX2 kernel does, does not). Activations are quantised per row (symmetric, max|x| -> 127), so a
row's result never depends on the other rows of the batch; they are stored as q + 128 (uint8),
and the 128 * sum(w) that adds is taken off with each weight row's precomputed sum.

On top of the product, one call per block of a decoder layer for a decode step (few rows):
``q8_attention`` (RMSNorm, fused q/k/v projection, q/k RMSNorm + RoPE, cache write and
grouped-query attention, o projection, residual) and ``q8_mlp`` (RMSNorm, fused gate/up
projection, SiLU x up, down projection, residual): a step then costs two calls per layer
instead of ~15 PyTorch ops. The functions carry their own target attribute, so the extension
still builds with -mavx2 and callers check ``has_vnni()`` before using them.

Appended to engine.cpu_gemv's source (it uses that file's rms_row, norm_rope_head and
attend_batch); engine.int8 holds the Python side.
"""

SOURCE = r"""
#define Q8 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))

bool has_vnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vnni");
}

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

// An int8 weight (N, K), one fp32 scale and one int32 sum per row.
struct Q8W {
  const int8_t* w; const float* s; const int32_t* sum; int64_t N, K;
};

static Q8W q8w(const torch::Tensor& w, const torch::Tensor& s, const torch::Tensor& sum) {
  TORCH_CHECK(w.dtype() == torch::kInt8 && w.dim() == 2 && w.is_contiguous(), "int8 weight (N, K) expected");
  TORCH_CHECK(s.dtype() == torch::kFloat32 && sum.dtype() == torch::kInt32 && s.numel() == w.size(0) &&
              sum.numel() == w.size(0), "weight scales / sums do not match the weight");
  return {w.data_ptr<int8_t>(), s.data_ptr<float>(), sum.data_ptr<int32_t>(), w.size(0), w.size(1)};
}

// y[m, n] = xs[m] s[n] (q[m] . w[n] - 128 sum[n]) (+ bias[n]) (+ res[m, n]) for n0 <= n < n1;
// y and res have row stride ldy.
Q8 static void q8_rows(const uint8_t* q, int64_t ldq, const float* xs, int64_t M, const Q8W& W,
                       int64_t n0, int64_t n1, float* y, int64_t ldy, const float* bias,
                       const float* res) {
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
          const int64_t c = n + i;
          float v = xs[m0 + j] * W.s[c] * static_cast<float>(r[j][i] - 128 * W.sum[c]);
          if (bias) v += bias[c];
          if (res) v += res[(m0 + j) * ldy + c];
          y[(m0 + j) * ldy + c] = v;
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

// Quantise M rows of x and return y = x W^T (+ bias) (+ res), all (M, .) row-major.
Q8 static void q8_linear_into(const float* x, int64_t M, const Q8W& W, float* y,
                              const float* bias, const float* res) {
  const int64_t ldq = q8_ld(W.K);
  std::vector<uint8_t> q(M * ldq);
  std::vector<float> xs(M);
  quantize_rows(x, W.K, M, W.K, q.data(), ldq, xs.data());
  q8_parallel(W.N, Q8_BLOCK, [&](int64_t n0, int64_t n1) {
    q8_rows(q.data(), ldq, xs.data(), M, W, n0, n1, y, W.N, bias, res);
  });
}

torch::Tensor q8_linear(torch::Tensor x, torch::Tensor w, torch::Tensor s, torch::Tensor sum,
                        torch::Tensor bias) {
  check_f32(x, "x");
  const Q8W W = q8w(w, s, sum);
  TORCH_CHECK(x.dim() == 2 && x.size(1) == W.K, "q8_linear: x must be (M, ", W.K, ")");
  if (bias.numel()) check_f32(bias, "bias");
  auto y = torch::empty({x.size(0), W.N}, x.options());
  q8_linear_into(x.data_ptr<float>(), x.size(0), W, y.data_ptr<float>(),
                 bias.numel() ? bias.data_ptr<float>() : nullptr, nullptr);
  return y;
}

// x + down(silu(gate(n)) * up(n)), n = rms_norm(x) * nw, for the M rows of x (B, 1, C) or (M, C).
// gu holds gate and up in alternating blocks of P rows (P gate rows, then the same P up rows),
// so each block of 2P rows yields P finished values of silu(g) * u.
torch::Tensor q8_mlp(torch::Tensor x, torch::Tensor nw, double eps, torch::Tensor gu,
                     torch::Tensor gus, torch::Tensor gusum, int64_t P, torch::Tensor dn,
                     torch::Tensor dns, torch::Tensor dnsum) {
  check_f32(x, "x");
  check_f32(nw, "norm weight");
  const Q8W GU = q8w(gu, gus, gusum), DN = q8w(dn, dns, dnsum);
  const int64_t C = nw.numel(), M = x.numel() / C, I = GU.N / 2;
  TORCH_CHECK(GU.K == C && DN.K == I && DN.N == C && I % P == 0, "q8_mlp: shapes disagree");
  const float* xp = x.data_ptr<float>();
  std::vector<float> xn(M * C), h(M * I), hs(M);
  for (int64_t m = 0; m < M; ++m)
    rms_row(xp + m * C, nw.data_ptr<float>(), xn.data() + m * C, C, static_cast<float>(eps));
  const int64_t ldq = q8_ld(C), ldh = q8_ld(I);
  std::vector<uint8_t> q(M * ldq), qh(M * ldh);
  std::vector<float> xs(M);
  quantize_rows(xn.data(), C, M, C, q.data(), ldq, xs.data());
  q8_parallel(I, P, [&](int64_t i0, int64_t i1) {  // i0, i1: multiples of P
    std::vector<float> t(M * 2 * P);  // one block's gate rows, then its up rows
    for (int64_t b = i0; b < i1; b += P) {
      const Q8W blk = {GU.w + 2 * b * C, GU.s + 2 * b, GU.sum + 2 * b, 2 * P, C};
      q8_rows(q.data(), ldq, xs.data(), M, blk, 0, 2 * P, t.data(), 2 * P, nullptr, nullptr);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t i = 0; i < P; ++i) {
          const float g = t[m * 2 * P + i], u = t[m * 2 * P + P + i];
          h[m * I + b + i] = g / (1.0f + std::exp(-g)) * u;
        }
    }
  });
  quantize_rows(h.data(), I, M, I, qh.data(), ldh, hs.data());
  auto out = torch::empty_like(x);
  float* op = out.data_ptr<float>();
  q8_parallel(C, Q8_BLOCK, [&](int64_t n0, int64_t n1) {
    q8_rows(qh.data(), ldh, hs.data(), M, DN, n0, n1, op, C, nullptr, xp);
  });
  return out;
}

// x + o(attention(n)), n = rms_norm(x) * nw, for one new token per batch row: x (B, 1, C).
// qkv holds the q, k and v projections stacked (H*D + 2*KV*D rows); q and k get their per-head
// RMSNorm (qn, kn) and RoPE (cos, sin (B, D)); k and v go into cache column `pos` of kc, vc
// (B, KV, capacity, D); `valid` as decode_attention's.
torch::Tensor q8_attention(torch::Tensor x, torch::Tensor nw, double eps, torch::Tensor qkv,
                           torch::Tensor qkvs, torch::Tensor qkvsum, torch::Tensor qn,
                           torch::Tensor kn, torch::Tensor cos, torch::Tensor sin,
                           torch::Tensor kc, torch::Tensor vc, int64_t pos, torch::Tensor valid,
                           torch::Tensor o, torch::Tensor os, torch::Tensor osum) {
  for (auto* t : {&x, &nw, &qn, &kn, &cos, &sin, &kc, &vc}) check_f32(*t, "q8_attention argument");
  const Q8W QKV = q8w(qkv, qkvs, qkvsum), O = q8w(o, os, osum);
  TORCH_CHECK(kc.dim() == 4 && vc.sizes() == kc.sizes(), "q8_attention: bad cache");
  const int64_t C = nw.numel(), B = kc.size(0), KV = kc.size(1), cap = kc.size(2), D = kc.size(3);
  const int64_t H = QKV.N / D - 2 * KV, QD = H * D, KD = KV * D, R = QKV.N;
  TORCH_CHECK(x.numel() == B * C && QKV.K == C && O.K == QD && O.N == C && qn.numel() == D &&
              kn.numel() == D && cos.numel() == B * D && sin.numel() == B * D && pos < cap &&
              D <= 1024 && H % KV == 0, "q8_attention: shapes disagree");
  const bool masked = valid.numel() > 0;
  if (masked) TORCH_CHECK(valid.dtype() == torch::kBool && valid.size(0) == B && valid.size(-1) >= pos + 1);
  const float* xp = x.data_ptr<float>();
  const float e = static_cast<float>(eps);
  std::vector<float> xn(B * C), proj(B * R), att(B * QD), xs(B);
  for (int64_t m = 0; m < B; ++m) rms_row(xp + m * C, nw.data_ptr<float>(), xn.data() + m * C, C, e);
  const int64_t ldq = q8_ld(C), lda = q8_ld(QD);
  std::vector<uint8_t> q(B * ldq), qa(B * lda);
  quantize_rows(xn.data(), C, B, C, q.data(), ldq, xs.data());
  q8_parallel(R, Q8_BLOCK, [&](int64_t n0, int64_t n1) {
    q8_rows(q.data(), ldq, xs.data(), B, QKV, n0, n1, proj.data(), R, nullptr, nullptr);
  });
  const float *qw = qn.data_ptr<float>(), *kw = kn.data_ptr<float>();
  for (int64_t m = 0; m < B; ++m) {
    const float *cs = cos.data_ptr<float>() + m * D, *sn = sin.data_ptr<float>() + m * D;
    float* row = proj.data() + m * R;
    for (int64_t h = 0; h < H; ++h) norm_rope_head(row + h * D, qw, cs, sn, D, e);
    for (int64_t h = 0; h < KV; ++h) norm_rope_head(row + QD + h * D, kw, cs, sn, D, e);
  }
  attend_batch(proj.data(), R, proj.data() + QD, R, proj.data() + QD + KD, R,
               kc.data_ptr<float>(), vc.data_ptr<float>(), B, KV, cap, H, D, pos,
               masked ? valid.data_ptr<bool>() : nullptr, masked ? valid.stride(0) : 0,
               masked ? valid.stride(-1) : 0, att.data());
  quantize_rows(att.data(), QD, B, QD, qa.data(), lda, xs.data());
  auto out = torch::empty_like(x);
  float* op = out.data_ptr<float>();
  q8_parallel(C, Q8_BLOCK, [&](int64_t n0, int64_t n1) {
    q8_rows(qa.data(), lda, xs.data(), B, O, n0, n1, op, C, nullptr, xp);
  });
  return out;
}
"""

FUNCTIONS = ["has_vnni", "q8_linear", "q8_mlp", "q8_attention"]
