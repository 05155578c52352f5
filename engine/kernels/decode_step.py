"""A Qwen3 decoder layer's one-token step in two kernel calls, on AVX-512 CPUs (csrc/avx512.cpp).

A decode step reads every decoder weight once, and on 2 cores the ~15 PyTorch ops per layer
(norms, 7 projections, RoPE, attention, SiLU, residuals) cost as much in dispatch and in
small-matrix start-up as the streaming itself. A ``DecodeStep`` does the attention block and the
MLP block in one call each, q/k/v and gate/up each taken as one matrix (in parts: the tensors
are not copied into one), for up to ``MAX_ROWS[kind]`` batch rows (more rows are compute-bound:
the layer's own modules take them).

* int8 mode (CPUs with VNNI): the layer's DynamicInt8Linears' own int8 tensors (memory-mapped
  from engine.kernels.prepared's cache, next to q8_gemm's panels for prefill).
* fp32 / bf16 modes with bf16-stored weights: the layer's PackedLinears' own tensors (for the
  official checkpoint, the memory-mapped ones from model.pt), nothing copied.

A ``DecodeStack`` then runs every layer's two calls from one call per token (the same kernels,
so the same floats), without the 56 calls from Python and the Python between them: 0.955x the
int8 step of one sequence on 2 cores (csrc/avx512.cpp, ``Stack``). Word timings, which read
each layer's input, take the layers one by one.
"""
from __future__ import annotations

import torch
from torch import nn

from .int8 import MAX_ROWS, DynamicInt8Linear
from .packed import PackedLinear

_ATTN = ("q_proj", "k_proj", "v_proj")
_MLP = ("gate_proj", "up_proj")


def _int8_parts(linears) -> tuple[list[torch.Tensor], ...]:
    """(weights, scales, sums): one list each, a matrix per Linear (the kernel treats them as
    one stacked matrix without copying them into one). The weights are q8_gemm's panels, the
    layout prefill reads too, so each weight byte is resident once; a part then has to start on
    a panel (16 rows), which every real shape does."""
    panels = [lin.q8_panel_tensors() for lin in linears]
    if any(p is None for p in panels) or any(lin.out_features % 16 for lin in linears[:-1]):
        panels = [lin.q8_tensors() for lin in linears]
    return tuple(list(t) for t in zip(*panels))


def _int8_one(lin) -> tuple[torch.Tensor, ...]:
    return lin.q8_panel_tensors() or lin.q8_tensors()


def _bf16_parts(linears) -> tuple[list[torch.Tensor]]:
    return ([lin.weight for lin in linears],)


def _bf16_one(lin) -> tuple[torch.Tensor]:
    return (lin.weight,)


class DecodeStep:
    def __init__(self, layer: nn.Module, kernels, kind: str):
        attn, mlp = layer.self_attn, layer.mlp
        if kind == "int8":
            parts, one, attention, mlp_fn = _int8_parts, _int8_one, kernels.q8_attention, kernels.q8_mlp
        elif kind == "bf16":
            parts, one, attention, mlp_fn = _bf16_parts, _bf16_one, kernels.b16_attention, kernels.b16_mlp
        else:
            raise ValueError(kind)
        self.kind = kind
        self.max_rows = MAX_ROWS[kind]
        self.qkv = parts([getattr(attn, n) for n in _ATTN])
        self.o = one(attn.o_proj)
        self.gate_up = parts([getattr(mlp, n) for n in _MLP])
        self.down = one(mlp.down_proj)
        self.norms = (layer.input_layernorm, layer.post_attention_layernorm, attn.q_norm, attn.k_norm)
        self._attention, self._mlp = attention, mlp_fn

    def takes(self, x: torch.Tensor, pos) -> bool:
        """Whether a layer call with input x (B, T, C) at ``pos`` is one this step runs: one
        token per row (``pos`` given), at most max_rows rows, no autograd."""
        return pos is not None and x.shape[0] <= self.max_rows and not torch.is_grad_enabled()

    def groups(self) -> list[list[torch.Tensor]]:
        """The step's tensors in the order the kernels' stacks take them (csrc/kernels.h)."""
        n1, n2, qn, kn = self.norms
        return [[n1.weight, n2.weight, qn.weight, kn.weight], *self.qkv, list(self.o),
                *self.gate_up, list(self.down)]

    def __call__(self, x, cos, sin, cache, rows: torch.Tensor, pos: torch.Tensor):
        """One token per batch row: row b's k and v go into column pos[b] of cache row rows[b]
        (int64 tensors), attending over that row's columns 0..pos[b]."""
        n1, n2, qn, kn = self.norms
        x = self._attention(x.contiguous(), n1.weight, n1.eps, *self.qkv, qn.weight, kn.weight,
                            cos.contiguous(), sin.contiguous(), *cache, rows, pos, *self.o)
        return self._mlp(x, n2.weight, n2.eps, *self.gate_up, *self.down)


class DecodeStack:
    """Every decoder layer's DecodeStep in one kernel call: x (B, 1, C) for B <= max_rows."""

    def __init__(self, steps: list[DecodeStep], kernels, eps: float):
        kind = steps[0].kind
        make = kernels.q8_stack if kind == "int8" else kernels.b16_stack
        self.kind, self.max_rows = kind, MAX_ROWS[kind]
        self._stack = make([s.groups() for s in steps], eps)

    takes = DecodeStep.takes  # the same batches as each layer's step

    def __call__(self, x, cos, sin, cache, rows: torch.Tensor, pos: torch.Tensor):
        """As DecodeStep, through every layer: ``cache`` the KVCache (all layers)."""
        return self._stack.forward(x.contiguous(), cos.contiguous(), sin.contiguous(),
                                   [k for k, _ in cache.layers], [v for _, v in cache.layers],
                                   rows, pos)


def fuse_decode_steps(llm: nn.Module, kernels, kind: str) -> bool:
    """Give every decoder layer of a CPU-packed Qwen3ForCausalLM its DecodeStep, if all its
    projections are of the kind the step takes (fp32-stored weights stay with PyTorch), and the
    model its DecodeStack when every norm has the same eps (the stack takes one)."""
    def fits(lin):
        if kind == "int8":
            return isinstance(lin, DynamicInt8Linear)
        return isinstance(lin, PackedLinear) and lin.mode == "bf16"

    names = (*_ATTN, "o_proj")
    layers = llm.model.layers
    if not all(fits(getattr(l.self_attn, n)) for l in layers for n in names) or \
            not all(fits(getattr(l.mlp, n)) for l in layers for n in (*_MLP, "down_proj")):
        return False
    for layer in layers:
        layer.step = DecodeStep(layer, kernels, kind)
    eps = {m.eps for l in layers for m in l.step.norms}
    llm.decode_stack = DecodeStack([l.step for l in layers], kernels, eps.pop()) \
        if len(eps) == 1 else None
    return True
