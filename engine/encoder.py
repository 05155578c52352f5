"""SAN-M audio encoder (funasr ``SenseVoiceEncoderSmall``), batched with padding masks.

Parameter names match the official checkpoint (``audio_encoder.*``), so ``model.pt`` loads as is.
Per block: x += Attn(LN1(x)) + FSMN memory (no residual in the first, 560->512 block);
x += FFN(LN2(x)). The FSMN memory is a depthwise conv over time on the value projection.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def key_padding_mask(mask: torch.Tensor | None, dtype, additive: bool | None = None):
    """SDPA's mask for padded keys from ``mask`` (B, T), True on real frames. On CPU the boolean
    mask (the CPU engine's numbers stay as they are); elsewhere (``additive``) 0 / -inf in the
    activations' dtype, which CUDA's memory-efficient kernel takes, where a boolean mask sends
    SDPA to its math kernel. Every row has a real frame, so no softmax sees only -inf."""
    if mask is None:
        return None
    m = mask[:, None, None, :]
    if additive is None:
        additive = m.device.type != "cpu"
    if not additive:
        return m
    return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill_(~m, float("-inf"))


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the weights' dtype, as the reference does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.w_2(F.relu(self.w_1(x)))


class SANMAttention(nn.Module):
    fast = None  # the CPU kernels (engine.kernels), set for fp32 CPU inference

    def __init__(self, heads: int, in_dim: int, dim: int, kernel_size: int, sanm_shift: int = 0):
        super().__init__()
        self.heads, self.d_k = heads, dim // heads
        self.linear_q_k_v = nn.Linear(in_dim, 3 * dim)
        self.linear_out = nn.Linear(dim, dim)
        self.fsmn_block = nn.Conv1d(dim, dim, kernel_size, groups=dim, bias=False)
        left = (kernel_size - 1) // 2 + max(sanm_shift, 0)
        self.padding = (left, kernel_size - 1 - left)

    def fsmn(self, v: torch.Tensor) -> torch.Tensor:
        """Depthwise conv over time as a sum of shifted, weighted copies: the same maths as the
        reference's grouped Conv1d, which PyTorch runs tens of times slower on CPU."""
        t = v.shape[1]
        kernel = self.fsmn_block.weight[:, 0, :]  # (D, K)
        vp = F.pad(v, (0, 0) + self.padding)  # zero frames before and after, along time
        out = vp[:, 0:t] * kernel[:, 0]
        for j in range(1, kernel.shape[1]):
            out = out + vp[:, j:j + t] * kernel[:, j]
        return out

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, T, in_dim); mask: (B, T) bool, True on real frames, or None for no padding."""
        b, t, _ = x.shape
        q, k, v = self.linear_q_k_v(x).chunk(3, dim=-1)

        # FSMN memory on the un-split values; padded frames are zeroed before and after the conv
        # so that padding never leaks into real frames.
        vm = v if mask is None else v * mask[:, :, None].to(v.dtype)
        if self.fast is not None and vm.dtype == torch.float32 and not torch.is_grad_enabled():
            # one pass instead of ~20 full-tensor ops (the shifted copies of fsmn())
            wt = self.fsmn_block.weight[:, 0, :].t().contiguous()  # (K, D): 11 x 512, cheap
            mem = self.fast.fsmn_memory(vm, wt, self.padding[0])
        else:
            mem = vm + self.fsmn(vm)
        if mask is not None:
            mem = mem * mask[:, :, None].to(mem.dtype)

        def heads(z):
            return z.view(b, t, self.heads, self.d_k).transpose(1, 2)

        att = F.scaled_dot_product_attention(heads(q), heads(k), heads(v),
                                             attn_mask=key_padding_mask(mask, q.dtype))
        att = att.transpose(1, 2).reshape(b, t, -1)
        return self.linear_out(att) + mem


class SANMBlock(nn.Module):
    def __init__(self, in_dim, dim, heads, ffn_dim, kernel_size, sanm_shift):
        super().__init__()
        self.self_attn = SANMAttention(heads, in_dim, dim, kernel_size, sanm_shift)
        self.feed_forward = FeedForward(dim, ffn_dim)
        self.norm1 = LayerNorm(in_dim)
        self.norm2 = LayerNorm(dim)
        self.residual = in_dim == dim

    def forward(self, x, mask):
        a = self.self_attn(self.norm1(x), mask)
        x = x + a if self.residual else a
        return x + self.feed_forward(self.norm2(x))


def sinusoidal_encoding(length: int, depth: int, device=None) -> torch.Tensor:
    """Positions 1..length, sines then cosines (not interleaved), in fp32 like the reference."""
    positions = torch.arange(1, length + 1, device=device, dtype=torch.float32)
    increment = torch.log(torch.tensor([10000.0], device=device)) / (depth / 2 - 1)
    inv = torch.exp(torch.arange(depth // 2, device=device, dtype=torch.float32) * -increment)
    scaled = positions[:, None] * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


class SenseVoiceEncoderSmall(nn.Module):
    def __init__(self, input_size: int = 560, output_size: int = 512, attention_heads: int = 4,
                 linear_units: int = 2048, num_blocks: int = 50, tp_blocks: int = 20,
                 kernel_size: int = 11, sanm_shfit: int = 0, **_unused):
        super().__init__()
        self._output_size = output_size
        args = (attention_heads, linear_units, kernel_size, sanm_shfit)
        self.encoders0 = nn.ModuleList([SANMBlock(input_size, output_size, *args)])
        self.encoders = nn.ModuleList(
            SANMBlock(output_size, output_size, *args) for _ in range(num_blocks - 1))
        self.tp_encoders = nn.ModuleList(
            SANMBlock(output_size, output_size, *args) for _ in range(tp_blocks))
        self.after_norm = LayerNorm(output_size)
        self.tp_norm = LayerNorm(output_size)

    def output_size(self) -> int:
        return self._output_size

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor):
        """feats: (B, T, 560) LFR features; lengths: (B,). Returns (B, T, D), lengths."""
        b, t, d = feats.shape
        mask = None
        if b > 1 and bool((lengths < t).any()):
            mask = torch.arange(t, device=feats.device)[None, :] < lengths[:, None]
        # Scale and position encoding in fp32 (the reference computes them in fp32).
        x = feats.float() * math.sqrt(self._output_size) + sinusoidal_encoding(t, d, feats.device)
        x = x.to(self.after_norm.weight.dtype)
        for layer in self.encoders0:
            x = layer(x, mask)
        for layer in self.encoders:
            x = layer(x, mask)
        x = self.after_norm(x)
        for layer in self.tp_encoders:
            x = layer(x, mask)
        return self.tp_norm(x), lengths
