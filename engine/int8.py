"""int8 mode on CPU: every Linear of the encoder, adaptor and decoder through fbgemm's int8 GEMM.

Weights are quantised once, symmetrically, one scale per output row; activations are quantised
per call (per tensor, asymmetric uint8), as PyTorch's dynamic quantisation does. On AVX2 an int8
multiply-add does four times the work of an fp32 FMA, so the compute-bound parts (the encoder,
the prefill, decoding a batch) run about twice as fast as fp32, and a decode step for one
sequence reads a quarter of the bytes. The price is rounding of both operands (about 2% relative
error per matmul, measured in tests/test_cpu_modes.py and bench/agreement.py).

fbgemm ships inside PyTorch's x86 builds (``torch.backends.quantized.supported_engines``); the
kernel is the one ``torch.ao.nn.quantized.dynamic.Linear`` calls, used here directly so that no
module conversion or fp32 copy of the model is needed.

Decode steps (a few rows) go another way on CPUs with AVX-512 VNNI: fbgemm's per-call cost
(~25 us even for a 1024 x 1024 matrix) puts a decode step at twice the time its weight bytes
need. There each decoder layer gets a ``Q8DecodeStep`` (engine.vnni: the attention block and the
MLP block in one call each, q/k/v and gate/up stacked into one matrix) and the lm_head a copy
for the same kernel. Same int8 weights; activations are quantised per row instead of per tensor.
The price is a second int8 copy of the decoder (~0.6 GB at full size), kept for fbgemm's prefill.
"""
from __future__ import annotations

import os
import warnings

import torch
from torch import nn

from .cpu_gemv import int8_row_scales, kernels

# Decode batches up to this many rows go through the VNNI kernel; more rows (prefill, big
# batches) are compute-bound and fbgemm's blocked GEMM is faster there (measured:
# bench/README.md, "int8 decode on VNNI CPUs").
Q8_MAX_ROWS = 8


def vnni_kernels():
    """The compiled kernels when this CPU has AVX-512 VNNI, else None.
    FUNASR_NANO_NO_VNNI=1 turns the path off (A/B runs, tests of the fallback)."""
    if os.environ.get("FUNASR_NANO_NO_VNNI") == "1":
        return None
    k = kernels()
    return k if k is not None and hasattr(k, "has_vnni") and k.has_vnni() else None


def q8_weight(w8: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(int8 weight, fp32 row scales, int32 row sums): what the VNNI kernel takes. The sums
    undo the +128 shift that makes activations unsigned for vpdpbusd."""
    w8 = w8.contiguous()
    return w8, scale.float().contiguous(), w8.sum(1, dtype=torch.int32)


def available() -> bool:
    """fbgemm (the "x86" / "fbgemm" quantized engine) is built into this torch."""
    engines = torch.backends.quantized.supported_engines
    return ("x86" in engines or "fbgemm" in engines) and hasattr(torch.ops.quantized, "linear_dynamic")


def one_row_kernel_helps() -> bool:
    """Whether single-row calls (decoding one sequence) should go through the weight-only int8
    kernel rather than fbgemm. Measured: on an AVX2-only EPYC the kernel was faster (1 x 10 s
    4.34 -> 3.89 s); on an AVX-512 (VNNI) EPYC fbgemm is (3.0 -> 2.5 s), and skipping the
    kernel also saves its second int8 copy of the decoder."""
    return torch.backends.cpu.get_cpu_capability() == "AVX2"


class DynamicInt8Linear(nn.Module):
    """A Linear with int8 weights (per output row) and dynamically quantised int8 inputs;
    fp32 in, fp32 out, any leading dimensions."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 one_row_kernel: bool = False, q8=None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        w = weight.detach().float()
        scale = int8_row_scales(w)
        with warnings.catch_warnings():  # quantized-tensor constructors warn of their future
            warnings.simplefilter("ignore")
            qw = torch.quantize_per_channel(w, scale.double(), torch.zeros(len(scale), dtype=torch.long),
                                            0, torch.qint8)
        self._packed = torch.ops.quantized.linear_prepack(
            qw, None if bias is None else bias.detach().float())
        self.has_bias = bias is not None
        # One row (decoding a single sequence) is bandwidth-bound, and fbgemm's per-call
        # activation quantisation and packing cost more than they save there: such calls go
        # through the weight-only int8 kernel (same int8 weights, unquantised input; costs a
        # second int8 copy of the weight).
        self._one_row = None
        if one_row_kernel:
            k = kernels()
            if k is not None:
                w8 = qw.int_repr().contiguous()
                s8 = qw.q_per_channel_scales().float().contiguous()
                b8 = None if bias is None else bias.detach().float()
                self._one_row = (lambda x2: k.linear_int8(x2, w8, s8)) if b8 is None else (
                    lambda x2: k.linear_int8(x2, w8, s8) + b8)
        # Up to Q8_MAX_ROWS rows through the VNNI kernel (q8: engine.vnni's extension)
        self._few_rows = None
        if q8 is not None:
            qt = q8_weight(qw.int_repr(), qw.q_per_channel_scales())
            b = torch.empty(0) if bias is None else bias.detach().float().contiguous()
            self._few_rows = lambda x2: q8.q8_linear(x2, *qt, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x2.dtype != torch.float32:
            x2 = x2.float()
        if self._few_rows is not None and x2.shape[0] <= Q8_MAX_ROWS:
            y = self._few_rows(x2.contiguous())
        elif self._one_row is not None and x2.shape[0] == 1:
            y = self._one_row(x2.contiguous())
        else:
            # reduce_range: 7-bit activations, so that AVX2's int16 pair sums (no VNNI) never
            # saturate
            y = torch.ops.quantized.linear_dynamic(x2.contiguous(), self._packed, True)
        return y.view(*shape[:-1], self.out_features)

    def int8_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 weight (N, K), fp32 scale per row): a copy of what fbgemm holds."""
        w, _ = torch.ops.quantized.linear_unpack(self._packed)
        return w.int_repr().contiguous(), w.q_per_channel_scales().float()

    def dequantized(self) -> torch.Tensor:
        """The fp32 weight the int8 one stands for (for tests)."""
        w, _ = torch.ops.quantized.linear_unpack(self._packed)
        return w.dequantize()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        # the packed weight is an opaque fbgemm object: show its int8 tensor (and bias) instead,
        # so that state_dict() tells what is held (the benchmark counts bytes from it)
        w, b = torch.ops.quantized.linear_unpack(self._packed)
        destination[prefix + "weight"] = w
        if b is not None:
            destination[prefix + "bias"] = b

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bias={self.has_bias}, int8 dynamic"


def quantize_linears(module: nn.Module, one_row_kernel: bool = False, q8=None) -> None:
    """Replace every nn.Linear under ``module`` by a DynamicInt8Linear (in place). Tied weights
    are quantised per use: the lm_head gets its own int8 copy while the embedding lookup keeps
    the original table. ``q8`` (the VNNI kernels) gives each Linear a copy for few-row calls."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, DynamicInt8Linear(child.weight, child.bias, one_row_kernel, q8))


def _gate_up_block(inter: int) -> int:
    """Rows per gate (and per up) block of the stacked MLP matrix: 32, or what divides inter."""
    return next(p for p in (32, 16, 8, 4, 2, 1) if inter % p == 0)


class Q8DecodeStep:
    """A Qwen3 decoder layer's one-token step (up to Q8_MAX_ROWS batch rows) in two calls to the
    VNNI kernels: attention block and MLP block, each with its RMSNorm and residual. Built from
    the layer's DynamicInt8Linears (same int8 weights): q/k/v stacked into one matrix, gate and
    up interleaved in blocks so that one pass yields silu(gate) * up."""

    max_rows = Q8_MAX_ROWS

    def __init__(self, layer: nn.Module, q8):
        attn, mlp = layer.self_attn, layer.mlp
        w = {n: getattr(attn, n).int8_weight() for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
        w.update({n: getattr(mlp, n).int8_weight() for n in ("gate_proj", "up_proj", "down_proj")})
        self.qkv = q8_weight(torch.cat([w[n][0] for n in ("q_proj", "k_proj", "v_proj")]),
                             torch.cat([w[n][1] for n in ("q_proj", "k_proj", "v_proj")]))
        self.o = q8_weight(*w["o_proj"])
        (g, gs), (u, us) = w["gate_proj"], w["up_proj"]
        inter, hidden = g.shape
        p = self.block = _gate_up_block(inter)
        self.gate_up = q8_weight(torch.stack([g.view(-1, p, hidden), u.view(-1, p, hidden)], 1)
                                 .reshape(2 * inter, hidden),
                                 torch.stack([gs.view(-1, p), us.view(-1, p)], 1).reshape(-1))
        self.down = q8_weight(*w["down_proj"])
        self.norms = (layer.input_layernorm, layer.post_attention_layernorm, attn.q_norm, attn.k_norm)
        self.k = q8

    def __call__(self, x, cos, sin, cache, start: int, mask):
        k = self.k
        n1, n2, qn, kn = self.norms
        x = x.contiguous()
        x = k.q8_attention(x, n1.weight, n1.eps, *self.qkv, qn.weight, kn.weight,
                           cos.contiguous(), sin.contiguous(), *cache, start,
                           _NO_MASK if mask is None else mask, *self.o)
        return k.q8_mlp(x, n2.weight, n2.eps, *self.gate_up, self.block, *self.down)


_NO_MASK = torch.empty(0, dtype=torch.bool)


def fuse_decode_steps(llm: nn.Module, q8) -> None:
    """Give every decoder layer of an int8 Qwen3ForCausalLM its Q8DecodeStep."""
    for layer in llm.model.layers:
        layer.step = Q8DecodeStep(layer, q8)
