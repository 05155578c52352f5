"""The decoder's attention from each generated token over the audio positions of its prompt.

The decoder is decoder-only: the audio embeddings sit in the prompt, so what Whisper calls
cross-attention is here the self-attention of the generated tokens over those positions. After
greedy decoding the prompt and the tokens are run again, teacher-forced, in one batched causal
pass (a prefill, no KV cache) through the layers up to the deepest head asked for; only those
heads' attention rows of the token positions are computed explicitly.

Row ``k`` of the result is the query that *predicted* token ``k`` (the last prompt position for
token 0, token ``k-1``'s position after that); the last row predicted the end token. That is
openai/whisper's convention in its ``timing.py``: a token's row looks at the audio it is about to
write.

The layers before the deepest head run their ordinary prefill forward (with or without the CPU
kernels, in fp32 either way); the heads' own q/k are computed here with plain PyTorch ops, so the
same numbers come out on CPU with or without the kernels, and on CUDA.
"""
from __future__ import annotations

import torch

from ..qwen3 import Qwen3ForCausalLM, causal_mask, rotate_half


@torch.inference_mode()
def audio_attention(llm: Qwen3ForCausalLM, prompts: list[torch.Tensor],
                    audio_spans: list[tuple[int, int]], tokens: list[list[int]],
                    heads: list[tuple[int, int]] | None = None) -> list[torch.Tensor]:
    """Attention of each generated token over its prompt's audio positions.

    ``prompts``: (L_i, C) input embeddings as decoded; ``audio_spans``: (first, end) positions of
    the audio inside each prompt; ``tokens``: the generated ids (without the end token);
    ``heads``: (layer, head) pairs, None for every head of every layer. Returns one fp32 tensor
    per input, (len(heads), n_tokens + 1, audio positions): the softmax weights restricted to the
    audio positions and renormalised over them."""
    cfg = llm.config
    if heads is None:
        heads = [(l, h) for l in range(cfg.num_hidden_layers)
                 for h in range(cfg.num_attention_heads)]
    by_layer: dict[int, list[int]] = {}
    for l, h in heads:
        by_layer.setdefault(l, []).append(h)
    deepest = max(by_layer)
    device = llm.model.embed_tokens.weight.device
    dtype = llm.dtype
    seqs = []
    for p, toks in zip(prompts, tokens):
        x = p.to(device=device, dtype=dtype)
        if toks:
            x = torch.cat([x, llm.embed(torch.tensor(toks, device=device)).to(dtype)])
        seqs.append(x)
    b, t = len(seqs), max(s.shape[0] for s in seqs)
    x = torch.zeros(b, t, seqs[0].shape[-1], dtype=dtype, device=device)
    for i, s in enumerate(seqs):
        x[i, :s.shape[0]] = s  # right-padded: the causal mask keeps padding out of real rows
    positions = torch.arange(t, device=device)[None].expand(b, t)
    cos, sin = llm.rope(positions, dtype)
    per_layer: dict[int, torch.Tensor] = {}
    for l, layer in enumerate(llm.model.layers[:deepest + 1]):
        if l in by_layer:
            per_layer[l] = _head_weights(layer.self_attn, layer.input_layernorm(x), cos, sin,
                                         by_layer[l])
        if l < deepest:
            x = layer(x, cos, sin)
    out = []
    for i, ((a0, a1), toks) in enumerate(zip(audio_spans, tokens)):
        first = prompts[i].shape[0] - 1  # the query that predicted token 0
        rows = slice(first, first + len(toks) + 1)
        w = torch.stack([per_layer[l][i, by_layer[l].index(h), rows, a0:a1] for l, h in heads])
        w = w.float()
        out.append(w / w.sum(-1, keepdim=True).clamp_min(1e-12))
    return out


def _head_weights(attn, xn: torch.Tensor, cos, sin, heads: list[int]) -> torch.Tensor:
    """Softmax attention weights (B, len(heads), T, T) of ``heads`` of one layer, in fp32."""
    b, t, _ = xn.shape
    q = attn.q_proj(xn).view(b, t, attn.h, attn.d)
    k = attn.k_proj(xn).view(b, t, attn.kv, attn.d)
    q = _rms(q, attn.q_norm).transpose(1, 2)[:, heads]
    group = attn.h // attn.kv  # grouped-query attention: head h reads kv head h // group
    k = _rms(k, attn.k_norm).transpose(1, 2)[:, [h // group for h in heads]]
    c, s = cos[:, None].float(), sin[:, None].float()
    q = q * c + rotate_half(q) * s
    k = k * c + rotate_half(k) * s
    scores = q @ k.transpose(-1, -2) / attn.d ** 0.5
    mask = causal_mask(t, xn.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1)


def _rms(x: torch.Tensor, norm) -> torch.Tensor:
    """The q/k RMSNorm in fp32 plain ops (the same formula as engine.qwen3.RMSNorm)."""
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
    return x * norm.weight.float()
