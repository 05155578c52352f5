"""Matrix-vector products for CPU decoding with compact weights and fp32 arithmetic.

Decoding one token reads every decoder weight once, so its speed is set by memory bandwidth.
The official weights are bfloat16 values: keeping them as bf16 and widening to fp32 in registers
computes exactly what fp32 weights would (only the summation order differs) from half the
bytes. int8 weights (one scale per output row) read a quarter. PyTorch has no fast kernel for
either on AVX2 CPUs (its bf16 and int8 paths there are slower than fp32), hence this small
AVX2/FMA kernel (csrc/avx2.cpp; built by engine.kernels.build). Where it cannot be built,
callers fall back to ``F.linear`` on widened weights.
"""
from __future__ import annotations

import torch

from . import loader
from .loader import avx512_kernels


def int8_row_scales(w: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 quantisation, one scale per output row: the row's largest |w| maps to 127."""
    return w.abs().amax(dim=1).clamp(min=1e-12) / 127.0


class PackedLinear(torch.nn.Module):
    """A bias-free Linear whose weight is stored as bf16 (exact for bf16-valued checkpoints) or
    int8 with one fp32 scale per output row; inputs and outputs are fp32. Few rows (decoding)
    go through the matrix-vector kernel; many rows (prefill) through the bf16 GEMM kernel, or
    (int8, no kernel) an fp32 matmul on the widened weight. ``round_acts`` (the bf16 mode only,
    never fp32's exact products): on CPUs with AVX512_BF16, many rows go through the kernel that
    rounds the activations to bf16 and multiplies bf16 pairs (``gemm_bf16dot``)."""

    MAX_KERNEL_ROWS = 32

    def __init__(self, weight: torch.Tensor, mode: str, kernels=False, round_acts=False):
        super().__init__()
        self.round_acts = round_acts and mode == "bf16"
        # the compiled extension (default: engine.kernels.kernels()) or None for PyTorch only
        self._k = loader.kernels() if kernels is False else kernels
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
        k = self._k
        if k is None:
            return None
        w, scale = self.weight, self.scale
        if self.mode == "int8":
            return lambda x2: k.linear_int8(x2, w, scale)
        if avx512_kernels(module=k) is not None:  # 16 lanes: ~1.5x the AVX2 kernel's streaming rate
            none = torch.empty(0)
            return lambda x2: k.b16_linear(x2.contiguous(), w, none)
        return lambda x2: k.linear_bf16(x2, w)

    def _gemm_fn(self):
        """The kernel for many rows of a bf16 weight (prefill), or None. The GEMM kernel widens
        the weight in registers, instead of the previous path's fp32 copy of the weight per
        call, then MKL's sgemm: 1.41-1.58x that path on a 150-token prefill on an AVX2-only CPU
        (bench/results/vm-prefill-20261207-0037.md, -0059.md), and faster on an AVX-512 (bf16,
        VNNI) EPYC too, where MKL's sgemm has 16 lanes but the copy remains (see docs/peers.md)."""
        fn = self.__dict__.get("_gemm", False)
        if fn is False:
            k = self._k
            fn = None
            if self.mode == "bf16" and k is not None and hasattr(k, "gemm_bf16"):
                fn = k.gemm_bf16
                # twice the products per instruction (vdpbf16ps): 2.0x gemm_bf16 on a 150-row
                # prefill's matrices on an AVX-512 EPYC (see docs/peers.md)
                if self.round_acts and hasattr(k, "gemm_bf16dot") \
                        and avx512_kernels(need_bf16=True, module=k) is not None:
                    fn = k.gemm_bf16dot
            self.__dict__["_gemm"] = fn
        return fn

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
        elif (gemm := self._gemm_fn()) is not None:
            y = gemm(x2, self.weight)
        else:  # many rows without the kernel: MKL's fp32 matmul on the widened weight
            y = torch.nn.functional.linear(x2, self.widened())
            if self.scale is not None:  # one scale per output row: applied to y, as the kernel does
                y = y * self.scale
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, weight={self.mode}"
