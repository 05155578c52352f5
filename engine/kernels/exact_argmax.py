"""The greedy pick over the lm_head, exact, reading an int8 copy instead of the bf16 matrix.

Greedy decoding needs only the argmax of the logits, and the lm_head (151936 x 1024, 311 MB in
bf16) is a quarter of what a fp32 decode step streams. An int8 copy (155 MB) gives every logit
to within a bound that is computed, not guessed (Cauchy-Schwarz on the weight's and the input's
rounding errors, plus the fp32 summation error: csrc/avx512.cpp, ``screen_argmax``); the few
rows that could still be the largest are computed exactly with the same kernel the full product
uses. The token is therefore the one the full fp32 product's argmax gives (first index on ties),
from about half the bytes. fp32 and bf16 modes on CPUs with AVX-512 VNNI use it; int8 mode
already reads the int8 lm_head and takes the argmax of its estimate.
"""
from __future__ import annotations

import torch


class ExactArgmax:
    """argmax_n (x . W[n]) for fp32 rows x and a bf16 W (the lm_head's own tensor)."""

    def __init__(self, weight: torch.Tensor, kernels):
        if weight.dtype != torch.bfloat16 or weight.dim() != 2:
            raise ValueError("ExactArgmax needs a 2-D bf16 weight")
        self.weight = weight.contiguous()
        self.k = kernels
        # int8 copy, its row scales and sums, and the two per-row bound coefficients
        self.w8, self.scale, self.sums, self.qnorm, self.enorm = kernels.screen_prepare(self.weight)
        self.candidates = 0  # rows computed exactly in the last call (all batch rows)

    def __call__(self, x: torch.Tensor, banned: torch.Tensor | None = None) -> torch.Tensor | None:
        """Indices (M,) for x (M, K), ``banned`` indices never picked; None where a row is not
        finite (the caller then takes the full product and its argmax, NaN semantics included)."""
        x = x.float().contiguous()
        if banned is None:
            banned = _NONE
        tok, cnt = self.k.screen_argmax(x, self.weight, self.w8, self.scale, self.sums,
                                        self.qnorm, self.enorm, banned)
        self.candidates = int(cnt.sum())
        return None if bool((tok < 0).any()) else tok

    def tensors(self) -> list[torch.Tensor]:
        """What a step reads in full (for the benchmark's bandwidth floor)."""
        return [self.w8, self.scale, self.sums, self.qnorm, self.enorm]


_NONE = torch.empty(0, dtype=torch.int64)
