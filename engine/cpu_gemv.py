"""Matrix-vector products for CPU decoding with compact weights and fp32 arithmetic.

Decoding one token reads every decoder weight once, so its speed is set by memory bandwidth.
The official weights are bfloat16 values: keeping them as bf16 and widening to fp32 in registers
computes exactly what fp32 weights would (only the summation order differs) from half the
bytes. int8 weights (one scale per output row) read a quarter. PyTorch has no fast kernel for
either on AVX2 CPUs (its bf16 and int8 paths there are slower than fp32), hence this small
AVX2/FMA kernel, compiled once with torch's cpp_extension. Where it cannot be built, callers
fall back to ``F.linear`` on widened weights. The same extension carries engine.avx512's
decode-step kernels (called only where the CPU has AVX-512).
"""
from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger("funasr_nano")

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
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

torch::Tensor linear_bf16(torch::Tensor x, torch::Tensor w) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && w.dtype() == torch::kBFloat16);
  x = x.contiguous();
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  auto y = torch::empty({M, N}, x.options());
  gemv<uint16_t>(x.data_ptr<float>(), reinterpret_cast<const uint16_t*>(w.data_ptr()), nullptr,
                 y.data_ptr<float>(), M, N, K);
  return y;
}

torch::Tensor linear_int8(torch::Tensor x, torch::Tensor w, torch::Tensor scale) {
  TORCH_CHECK(x.dtype() == torch::kFloat32 && w.dtype() == torch::kInt8);
  x = x.contiguous();
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  auto y = torch::empty({M, N}, x.options());
  gemv<int8_t>(x.data_ptr<float>(), w.data_ptr<int8_t>(), scale.data_ptr<float>(),
               y.data_ptr<float>(), M, N, K);
  return y;
}

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

static void check_f32(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.dtype() == torch::kFloat32 && t.is_contiguous() && t.device().is_cpu(),
              name, " must be a contiguous fp32 CPU tensor");
}

torch::Tensor rms_norm(torch::Tensor x, torch::Tensor w, double eps) {
  check_f32(x, "x");
  check_f32(w, "weight");
  const int64_t C = w.numel();
  TORCH_CHECK(x.size(-1) == C, "rms_norm: last dim ", x.size(-1), " != ", C);
  auto y = torch::empty_like(x);
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, x.numel() / C, 64, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) rms_row(xp + m * C, wp, yp + m * C, C, static_cast<float>(eps));
  });
  return y;
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

// q (M, H*D) and k (M, KV*D), rows = (batch, position) pairs; cos/sin (M, D).
void qk_norm_rope_(torch::Tensor q, torch::Tensor k, torch::Tensor qw, torch::Tensor kw,
                   torch::Tensor cos, torch::Tensor sin, double eps) {
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

// One decode step of attention for batch row b and kv head g: writes that head's k and v into
// cache column `pos` of K, V (capacity x D each), then for the G query heads that share it
// o = softmax(q . K[:pos+1] / sqrt(D)) V[:pos+1] (grouped-query attention), so the keys and
// values are read once for the whole group. `valid` (or null) masks left padding, stride vs;
// p is scratch for G * (pos + 1) scores.
static void attend_group(const float* q, const float* k, const float* v, float* K, float* V,
                         int64_t G, int64_t D, int64_t pos, const bool* valid, int64_t vs,
                         float* o, float* p) {
  const int64_t L = pos + 1;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::memcpy(K + pos * D, k, D * sizeof(float));
  std::memcpy(V + pos * D, v, D * sizeof(float));
  for (int64_t j = 0; j < G; ++j) {
    const float* qh = q + j * D;
    float* s = p + j * L;
    float mx = -INFINITY;
    for (int64_t t = 0; t < L; ++t) {
      if (valid && !valid[t * vs]) { s[t] = -INFINITY; continue; }
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

// attend_group over every (batch row, kv head): q (B, H*D), k and v (B, KV*D) with row strides
// qs, ks, vs; caches (B, KV, capacity, D); out (B, H*D) contiguous.
static void attend_batch(const float* q, int64_t qs, const float* k, int64_t ks, const float* v,
                         int64_t vst, float* kc, float* vc, int64_t B, int64_t KV, int64_t cap,
                         int64_t H, int64_t D, int64_t pos, const bool* valid, int64_t ms0,
                         int64_t ms1, float* out) {
  const int64_t G = H / KV;
  at::parallel_for(0, B * KV, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> p((pos + 1) * G);
    for (int64_t bg = b0; bg < b1; ++bg) {
      const int64_t b = bg / KV, g = bg % KV;
      attend_group(q + b * qs + g * G * D, k + b * ks + g * D, v + b * vst + g * D,
                   kc + bg * cap * D, vc + bg * cap * D, G, D, pos,
                   valid ? valid + b * ms0 : nullptr, ms1, out + (b * H + g * G) * D, p.data());
    }
  });
}

// One decode step of attention: q (B, H*D), k, v (B, KV*D); caches (B, KV, capacity, D);
// `valid` (B, >= pos+1, any strides, bool) masks left padding, or is empty.
torch::Tensor decode_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                               torch::Tensor kc, torch::Tensor vc, int64_t pos,
                               torch::Tensor valid) {
  for (auto* t : {&q, &k, &v, &kc, &vc}) check_f32(*t, "decode_attention argument");
  TORCH_CHECK(kc.dim() == 4 && vc.sizes() == kc.sizes(), "decode_attention: bad cache");
  const int64_t B = kc.size(0), KV = kc.size(1), cap = kc.size(2), D = kc.size(3);
  TORCH_CHECK(pos < cap && k.numel() == B * KV * D && v.numel() == B * KV * D &&
              q.numel() % (B * KV * D) == 0, "decode_attention: shapes disagree");
  const int64_t H = q.numel() / (B * D);
  const bool masked = valid.numel() > 0;
  if (masked) TORCH_CHECK(valid.dtype() == torch::kBool && valid.size(0) == B && valid.size(-1) >= pos + 1);
  auto out = torch::empty({B, H * D}, q.options());
  attend_batch(q.data_ptr<float>(), H * D, k.data_ptr<float>(), KV * D, v.data_ptr<float>(),
               KV * D, kc.data_ptr<float>(), vc.data_ptr<float>(), B, KV, cap, H, D, pos,
               masked ? valid.data_ptr<bool>() : nullptr, masked ? valid.stride(0) : 0,
               masked ? valid.stride(-1) : 0, out.data_ptr<float>());
  return out;
}

// The SAN-M encoder's FSMN memory: v + depthwise conv over time (zero padding `left` frames
// before, K - 1 - left after), per channel weights wt (K, C) (the Conv1d weight transposed).
// v (B, T, C) may be a view with any row stride (a chunk of the fused q/k/v projection).
torch::Tensor fsmn_memory(torch::Tensor v, torch::Tensor wt, int64_t left) {
  TORCH_CHECK(v.dtype() == torch::kFloat32 && v.dim() == 3 && v.stride(2) == 1 &&
              v.stride(0) == v.size(1) * v.stride(1), "fsmn_memory: v must be (B, T, C) fp32 rows");
  check_f32(wt, "fsmn weight");
  const int64_t B = v.size(0), T = v.size(1), C = v.size(2), K = wt.size(0), rs = v.stride(1);
  TORCH_CHECK(wt.size(1) == C && left >= 0 && left < K, "fsmn_memory: bad kernel");
  auto out = torch::empty({B, T, C}, v.options().memory_format(at::MemoryFormat::Contiguous));
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
"""

_module = None
_tried = False


def kernels():
    """The compiled extension, or None where it cannot be built (no AVX2, no compiler)."""
    global _module, _tried
    if _tried:
        return _module
    _tried = True
    if os.environ.get("FUNASR_NANO_NO_KERNELS") == "1":
        return None
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        log.info("CPU lacks AVX2: decoding with plain PyTorch matmuls")
        return None
    try:
        from torch.utils.cpp_extension import load_inline

        from . import avx512
        _module = load_inline(
            name="funasr_nano_gemv", cpp_sources=_SOURCE + avx512.SOURCE,
            functions=["linear_bf16", "linear_int8", "rms_norm", "qk_norm_rope_", "decode_attention",
                       "fsmn_memory", *avx512.FUNCTIONS],
            extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"], extra_ldflags=["-fopenmp"],
            verbose=False)
    except Exception as e:  # noqa: BLE001 - any build failure means "use the fallback"
        log.warning("could not build the CPU decoding kernel (%s); using PyTorch matmuls",
                    str(e).splitlines()[0] if str(e) else type(e).__name__)
    return _module


def avx512_kernels(need_vnni: bool = False):
    """The compiled kernels when this CPU has AVX-512 (and VNNI, if asked), else None.
    FUNASR_NANO_NO_AVX512=1 turns those paths off (A/B runs, tests of the fallbacks)."""
    if os.environ.get("FUNASR_NANO_NO_AVX512") == "1":
        return None
    k = kernels()
    if k is None or not k.has_avx512() or (need_vnni and not k.has_vnni()):
        return None
    return k


def int8_row_scales(w: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 quantisation, one scale per output row: the row's largest |w| maps to 127."""
    return w.abs().amax(dim=1).clamp(min=1e-12) / 127.0


class PackedLinear(torch.nn.Module):
    """A bias-free Linear whose weight is stored as bf16 (exact for bf16-valued checkpoints) or
    int8 with one fp32 scale per output row; inputs and outputs are fp32. Few rows (decoding)
    go through the kernel; many rows (prefill) through an fp32 matmul on the widened weight."""

    MAX_KERNEL_ROWS = 32

    def __init__(self, weight: torch.Tensor, mode: str):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        if mode == "int8":
            w = weight.float()
            scale = int8_row_scales(w)
            self.register_buffer("weight", torch.round(w / scale[:, None]).clamp(-127, 127)
                                 .to(torch.int8))
            self.register_buffer("scale", scale)
        elif mode == "bf16":
            self.register_buffer("weight", weight.to(torch.bfloat16))
            self.scale = None
        else:
            raise ValueError(mode)
        self.mode = mode

    def widened(self) -> torch.Tensor:
        """The weight as fp32 values (int8 ones not yet scaled). int8 goes through bf16, which
        holds every int8 exactly: PyTorch's direct int8 -> fp32 cast is ~10x slower on CPU."""
        if self.mode == "int8":
            return self.weight.to(torch.bfloat16).float()
        return self.weight.float()

    def _kernel_fn(self):
        """The kernel bound to this layer's tensors (None without a kernel). A decode step makes
        ~200 of these calls, so the per-call Python work is kept to a minimum."""
        k = kernels()
        if k is None:
            return None
        w, scale = self.weight, self.scale
        if self.mode == "int8":
            return lambda x2: k.linear_int8(x2, w, scale)
        if avx512_kernels() is not None:  # 16 lanes: ~1.5x the AVX2 kernel's streaming rate
            none = torch.empty(0)
            return lambda x2: k.b16_linear(x2.contiguous(), w, none)
        return lambda x2: k.linear_bf16(x2, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x2.dtype != torch.float32:
            x2 = x2.float()
        fn = self.__dict__.get("_fn", False)
        if fn is False:
            fn = self.__dict__["_fn"] = self._kernel_fn()
        if fn is not None and x2.shape[0] <= self.MAX_KERNEL_ROWS:
            y = fn(x2)
        else:  # many rows (prefill): compute-bound, MKL's fp32 matmul on the widened weight
            y = torch.nn.functional.linear(x2, self.widened())
            if self.scale is not None:  # one scale per output row: applied to y, as the kernel does
                y = y * self.scale
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, weight={self.mode}"
