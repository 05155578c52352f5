"""Transformer adaptor (funasr ``llm_asr/adaptor.py:Transformer``) and the low-frame-rate length.

Encoder frames (512-d) -> stacking by ``downsample_rate`` -> Linear/ReLU/Linear to the LLM width
-> pre-LN Transformer blocks (LayerNorm eps 1e-12, FFN width llm_dim // 4, no positions).
The same class, with llm_dim 512 and 5 blocks, is the CTC branch's ``ctc_decoder``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import FeedForward, key_padding_mask


class MultiHeadAttention(nn.Module):
    def __init__(self, heads: int, dim: int):
        super().__init__()
        self.heads, self.d_k = heads, dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)

    def forward(self, x, mask):
        b, t, _ = x.shape

        def heads(z):
            return z.view(b, t, self.heads, self.d_k).transpose(1, 2)

        att = F.scaled_dot_product_attention(
            heads(self.linear_q(x)), heads(self.linear_k(x)), heads(self.linear_v(x)),
            attn_mask=key_padding_mask(mask, x.dtype))
        return self.linear_out(att.transpose(1, 2).reshape(b, t, -1))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_attn = MultiHeadAttention(heads, dim)
        self.feed_forward = FeedForward(dim, dim // 4)
        self.norm1 = nn.LayerNorm(dim, eps=1e-12)
        self.norm2 = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x, mask):
        x = x + self.self_attn(self.norm1(x), mask)
        return x + self.feed_forward(self.norm2(x))


class TransformerAdaptor(nn.Module):
    def __init__(self, downsample_rate: int = 1, encoder_dim: int = 512, llm_dim: int = 1024,
                 ffn_dim: int = 2048, n_layer: int = 2, attention_heads: int = 8, **_unused):
        super().__init__()
        self.k = downsample_rate
        self.linear1 = nn.Linear(encoder_dim * downsample_rate, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, llm_dim)
        self.blocks = nn.ModuleList(TransformerBlock(llm_dim, attention_heads)
                                    for _ in range(n_layer)) if n_layer > 0 else None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        b, t, d = x.shape
        chunks = (t - 1) // self.k + 1
        if chunks * self.k != t:  # zero-pad, then stack k frames into one
            x = F.pad(x, (0, 0, 0, chunks * self.k - t))
        x = x.reshape(b, chunks, d * self.k)
        x = self.linear2(F.relu(self.linear1(x)))
        lengths = (lengths - 1) // self.k + 1
        mask = None
        if b > 1 and bool((lengths < chunks).any()):
            mask = torch.arange(chunks, device=x.device)[None, :] < lengths[:, None]
        if self.blocks is not None:
            for block in self.blocks:
                x = block(x, mask)
        return x, lengths


def low_frame_rate_length(num_frames: int) -> int:
    """Audio vectors the LLM sees: the reference's two stride-2 conv length formulas and a
    stride-2 downsample, i.e. ceil(T/8). Only these first adaptor frames reach the LLM."""
    n = 1 + (num_frames - 3 + 2) // 2
    n = 1 + (n - 3 + 2) // 2
    return (n - 1) // 2 + 1
