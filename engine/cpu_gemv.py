"""Matrix-vector products for CPU decoding with compact weights and fp32 arithmetic.

Decoding one token reads every decoder weight once, so its speed is set by memory bandwidth.
The official weights are bfloat16 values: keeping them as bf16 and widening to fp32 in registers
computes exactly what fp32 weights would (only the summation order differs) from half the
bytes. int8 weights (one scale per output row) read a quarter. PyTorch has no fast kernel for
either on AVX2 CPUs (its bf16 and int8 paths there are slower than fp32), hence this small
AVX2/FMA kernel, compiled once with torch's cpp_extension. Where it cannot be built, callers
fall back to ``F.linear`` on widened weights.
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
#include <cstring>

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
        _module = load_inline(
            name="funasr_nano_gemv", cpp_sources=_SOURCE,
            functions=["linear_bf16", "linear_int8"],
            extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"], extra_ldflags=["-fopenmp"],
            verbose=False)
    except Exception as e:  # noqa: BLE001 - any build failure means "use the fallback"
        log.warning("could not build the CPU decoding kernel (%s); using PyTorch matmuls",
                    str(e).splitlines()[0] if str(e) else type(e).__name__)
    return _module


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
