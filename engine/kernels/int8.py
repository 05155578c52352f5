"""int8 mode on CPU: every Linear of the encoder, adaptor and decoder as an int8 product.

Weights are quantised once, symmetrically, one scale per output row; activations are quantised
per call (per tensor, asymmetric uint8), as PyTorch's dynamic quantisation does. On AVX2 an int8
multiply-add does four times the work of an fp32 FMA, so the compute-bound parts (the encoder,
the prefill, decoding a batch) run about twice as fast as fp32, and a decode step for one
sequence reads a quarter of the bytes. The price is rounding of both operands (about 2% relative
error per matmul, measured in tests/test_cpu_modes.py and bench/agreement.py).

On CPUs without AVX-512 VNNI the products go through fbgemm, which ships inside PyTorch's x86
builds (``torch.backends.quantized.supported_engines``): the kernel that
``torch.ao.nn.quantized.dynamic.Linear`` calls, used here directly so that no module conversion
or fp32 copy of the model is needed.

On CPUs with AVX-512 VNNI the project's own kernels (csrc/avx512.cpp) take every product
instead, activations quantised per row (so a row's result never depends on the rest of the
batch): a decoder layer's decode step is an int8 ``DecodeStep`` (engine.kernels.decode_step: the
attention block and the MLP block in one call each; fbgemm's per-call cost, ~25 us even for a
1024 x 1024 matrix, put a step at twice the time its weight bytes need), a few rows go through
q8_linear, and many rows (the encoder, prefill) through q8_gemm, whose panel layout of the
weight is prepared once and memory-mapped with the rest (engine.kernels.prepared). fbgemm would
repack its own layout at every load (3-6 s for the full model on 2 cores), and its GEMM was
1.1-2x slower than q8_gemm on the model's shapes (measured on a 2-core EPYC, 2026-12-03).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from .loader import avx512_kernels
from .packed import int8_row_scales

# Decode batches up to this many rows take the step; more rows go through the layer's modules.
# int8: the VNNI kernel beats fbgemm's blocked GEMM up to ~24 rows on an AVX-512 Xeon (16 x 10 s
# decode 78 vs 87 ms/step, 32 x 10 s 154 vs 133: bench/README.md), and below the limit a row's
# tokens never depend on the rest of the batch (per-row activation scales). bf16-stored weights:
# the layer's modules use the same product kernel, so more rows gain nothing (16 x 10 s: equal).
MAX_ROWS = {"int8": 16, "bf16": 8}


def q8_weight(w8: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(int8 weight, fp32 row scales, int32 row sums): what the int8 kernel takes. The sums
    undo the +128 shift that makes activations unsigned for vpdpbusd."""
    w8 = w8.contiguous()
    return w8, scale.float().contiguous(), w8.sum(1, dtype=torch.int32)


def vnni_kernels(module=False):
    """``module`` (default: the compiled kernels) when this CPU has AVX-512 VNNI, else None."""
    return avx512_kernels(need_vnni=True, module=module)


def q8_pack(w8: torch.Tensor) -> torch.Tensor:
    """The int8 weight (N, K) in q8_gemm's layout: panels of 16 output rows, each row's k in
    groups of 4 side by side, (ceil(N/16), ceil(K/4), 64), zeros past N and K."""
    n, k = w8.shape
    nb, kg = -(-n // 16), -(-k // 4)
    padded = torch.zeros(nb * 16, kg * 4, dtype=torch.int8)
    padded[:n, :k] = w8
    return padded.view(nb, 16, kg, 4).permute(0, 2, 1, 3).reshape(nb, kg, 64).contiguous()


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


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight (N, K), float64 scale per row): symmetric, the row's largest |w| -> 127, as
    fbgemm's per-channel quantisation rounds it. What engine.kernels.prepared caches."""
    w = weight.detach().float()
    scale = int8_row_scales(w)
    with warnings.catch_warnings():  # quantized-tensor constructors warn of their future
        warnings.simplefilter("ignore")
        qw = torch.quantize_per_channel(w, scale.double(), torch.zeros(len(scale), dtype=torch.long),
                                        0, torch.qint8)
    return qw.int_repr(), qw.q_per_channel_scales()


class DynamicInt8Linear(nn.Module):
    """A Linear with int8 weights (per output row) and dynamically quantised int8 inputs;
    fp32 in, fp32 out, any leading dimensions.

    Built from the int8 weight and its float64 row scales (``quantize_weight``, or the
    memory-mapped copy engine.kernels.prepared keeps). With the VNNI kernels (``q8``) every call
    stays in them: up to MAX_ROWS["int8"] rows q8_linear on the plain weight, more rows q8_gemm on
    its panel layout (``packed``: q8_pack's, also cached), the same integer sums and arithmetic,
    so a row's result never depends on the batch; nothing is packed for fbgemm. Without them
    fbgemm packs its own copy (at load) for many rows, and the kernels' one-row path may take
    single rows."""

    def __init__(self, w8: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None,
                 one_row=None, q8=None, sums: torch.Tensor | None = None,
                 packed: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = w8.shape
        self.has_bias = bias is not None
        self._bias = None if bias is None else bias.detach().float().contiguous()
        self._w8, self._scale = w8, scale
        self._scale32 = scale.float().contiguous()
        self._sums = sums
        self._packed = None  # fbgemm's
        # One row (decoding a single sequence) is bandwidth-bound, and fbgemm's per-call
        # activation quantisation and packing cost more than they save there: such calls go
        # through the weight-only int8 kernel (same int8 weights, unquantised input).
        self._one_row = None
        if one_row is not None and q8 is None:  # the compiled kernels
            k, w, s, b = one_row, w8.contiguous(), self._scale32, self._bias
            self._one_row = (lambda x2: k.linear_int8(x2, w, s)) if b is None else (
                lambda x2: k.linear_int8(x2, w, s) + b)
        # the VNNI kernels (csrc/avx512.cpp): q8_linear for a few rows, q8_gemm for more
        self._few_rows = self._many_rows = self._wp = None
        if q8 is not None:
            qt = self.q8_tensors()
            b = torch.empty(0) if bias is None else self._bias
            self._wp = wp = q8_pack(qt[0]) if packed is None else packed
            # few rows take the panels too (q8_linear reads either layout, to the same floats):
            # then only the panels' pages are ever read, and the weight is resident once
            self._few_rows = lambda x2: q8.q8_linear(x2, wp, qt[1], qt[2], b)
            self._many_rows = lambda x2: q8.q8_gemm(x2, wp, qt[1], qt[2], b)
        else:
            self._pack()

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, **kw):
        return cls(*quantize_weight(weight), bias, **kw)

    def _pack(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qw = torch._make_per_channel_quantized_tensor(
                self._w8, self._scale, torch.zeros(self.out_features, dtype=torch.long), 0)
        self._packed = torch.ops.quantized.linear_prepack(qw, self._bias)
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x2.dtype != torch.float32:
            x2 = x2.float()
        if self._few_rows is not None:
            rows = self._few_rows if x2.shape[0] <= MAX_ROWS["int8"] else self._many_rows
            y = rows(x2.contiguous())
        elif self._one_row is not None and x2.shape[0] == 1:
            y = self._one_row(x2.contiguous())
        else:
            # reduce_range: 7-bit activations, so that AVX2's int16 pair sums (no VNNI) never
            # saturate
            packed = self._pack() if self._packed is None else self._packed
            y = torch.ops.quantized.linear_dynamic(x2.contiguous(), packed, True)
        return y.view(*shape[:-1], self.out_features)

    def int8_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 weight (N, K), fp32 scale per row): the tensors fbgemm packed."""
        return self._w8, self._scale32

    def q8_tensors(self) -> tuple[torch.Tensor, ...]:
        """(int8 weight, fp32 scales, int32 row sums) for the VNNI kernels."""
        if self._sums is None:
            self._sums = q8_weight(self._w8, self._scale32)[2]
        return self._w8.contiguous(), self._scale32, self._sums

    def q8_panel_tensors(self) -> tuple[torch.Tensor, ...] | None:
        """(q8_pack's panels, fp32 scales, int32 row sums): the layout the VNNI kernels read
        (None without them)."""
        if self._wp is None:
            return None
        _, s, sums = self.q8_tensors()
        return self._wp, s, sums

    def dequantized(self) -> torch.Tensor:
        """The fp32 weight the int8 one stands for (for tests)."""
        return self._w8.float() * self._scale32[:, None]

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        # show the int8 tensor (and bias) held, so that state_dict() tells what is read (the
        # benchmark counts bytes from it)
        destination[prefix + "weight"] = self._w8
        if self._bias is not None:
            destination[prefix + "bias"] = self._bias

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bias={self.has_bias}, int8 dynamic"


def quantize_linears(module: nn.Module, one_row=None, q8=None, prepared=None,
                     prefix: str = "") -> None:
    """Replace every nn.Linear under ``module`` by a DynamicInt8Linear (in place). Tied weights
    are quantised per use: the lm_head gets its own int8 copy while the embedding lookup keeps
    the original table. ``one_row`` (the kernels) sends one-row calls through the weight-only
    kernel; ``q8`` (the VNNI kernels) puts every call through them (no fbgemm). ``prepared`` maps
    ``prefix + name`` + ".w8" / ".scale" / ".sum" / ".wp" to the int8 tensors
    (engine.kernels.prepared); a Linear it lacks is quantised here."""
    prepared = prepared or {}
    for mod_name, parent in list(module.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                full = prefix + (f"{mod_name}.{name}" if mod_name else name)
                if full + ".w8" in prepared:
                    w8, scale = prepared[full + ".w8"], prepared[full + ".scale"]
                else:
                    w8, scale = quantize_weight(child.weight)
                setattr(parent, name, DynamicInt8Linear(w8, scale, child.bias, one_row, q8,
                                                        prepared.get(full + ".sum"),
                                                        prepared.get(full + ".wp")))
