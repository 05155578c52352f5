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

Where the decode kept its prompt's keys and values (``prompt_caches``: engine.batching keeps them
for the layers asked for), the prompt is not run again: only the last prompt position and the
generated tokens go through the layers, attending over the kept prompt columns, and a head's
weights are the softmax of its scores over the kept audio keys. That is the same number: the
weights restricted to the audio and renormalised over it *are* the softmax over the audio
positions alone. On a full-size decoder the prompt (audio and instructions) is most of the
positions, so this is most of the pass saved.
"""
from __future__ import annotations

import torch

import torch.nn.functional as F

from ..qwen3 import Qwen3ForCausalLM, causal_mask, rotate_half


@torch.inference_mode()
def audio_attention(llm: Qwen3ForCausalLM, prompts: list[torch.Tensor],
                    audio_spans: list[tuple[int, int]], tokens: list[list[int]],
                    heads: list[tuple[int, int]] | None = None,
                    prompt_caches: list | None = None) -> list[torch.Tensor]:
    """Attention of each generated token over its prompt's audio positions.

    ``prompts``: (L_i, C) input embeddings as decoded; ``audio_spans``: (first, end) positions of
    the audio inside each prompt; ``tokens``: the generated ids (without the end token);
    ``heads``: (layer, head) pairs, None for every head of every layer. Returns one fp32 tensor
    per input, (len(heads), n_tokens + 1, audio positions): the softmax weights restricted to the
    audio positions and renormalised over them. ``prompt_caches``: per input, the decode's
    (k, v) of prompt columns 0..L-2 for at least the layers up to the deepest head (engine.batching
    ``keep_prompt_layers``), or None (the whole prompt is run again)."""
    cfg = llm.config
    if heads is None:
        heads = [(l, h) for l in range(cfg.num_hidden_layers)
                 for h in range(cfg.num_attention_heads)]
    by_layer: dict[int, list[int]] = {}
    for l, h in heads:
        by_layer.setdefault(l, []).append(h)
    deepest = max(by_layer)
    if prompt_caches is not None and all(
            _kept(c, p, span, deepest) for c, p, span in zip(prompt_caches, prompts, audio_spans)):
        return _after_prompt(llm, prompts, audio_spans, tokens, heads, by_layer, prompt_caches)
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


def _after_prompt(llm, prompts, audio_spans, tokens, heads, by_layer, caches):
    """audio_attention from the decode's kept prompt keys/values: the rows only (the last prompt
    position, then each token), right-padded, at their own RoPE positions, each attending over
    its own prompt columns (padded ones masked) and causally among the rows."""
    deepest = max(by_layer)
    device = llm.model.embed_tokens.weight.device
    dtype = llm.dtype
    past = [p.shape[0] - 1 for p in prompts]  # kept columns: all but the last prompt position
    seqs = []
    for p, toks in zip(prompts, tokens):
        x = p[-1:].to(device=device, dtype=dtype)
        if toks:
            x = torch.cat([x, llm.embed(torch.tensor(toks, device=device)).to(dtype)])
        seqs.append(x)
    b, t, pm = len(seqs), max(s.shape[0] for s in seqs), max(past)
    x = torch.zeros(b, t, seqs[0].shape[-1], dtype=dtype, device=device)
    for i, s in enumerate(seqs):
        x[i, :s.shape[0]] = s
    n_past = torch.tensor(past, device=device)
    positions = n_past[:, None] + torch.arange(t, device=device)[None]
    cos, sin = llm.rope(positions, dtype)
    mask = torch.cat([(torch.arange(pm, device=device)[None] < n_past[:, None])[:, None]
                      .expand(b, t, pm),
                      torch.ones(t, t, dtype=torch.bool, device=device).tril()[None]
                      .expand(b, t, t)], -1)[:, None]  # (B, 1, T, past + T)
    per_layer: dict[int, list[torch.Tensor]] = {}
    for l, layer in enumerate(llm.model.layers[:deepest + 1]):
        xn = layer.input_layernorm(x)
        if l in by_layer:
            per_layer[l] = _rows_over_audio(layer.self_attn, xn, cos, sin, by_layer[l],
                                            [c[l][0] for c in caches], audio_spans)
        if l < deepest:
            pk = _padded([c[l][0] for c in caches], pm)
            pv = _padded([c[l][1] for c in caches], pm)
            x = x + _attend_after(layer.self_attn, xn, cos, sin, pk, pv, mask)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
    out = []
    for i, toks in enumerate(tokens):
        w = torch.stack([per_layer[l][i][by_layer[l].index(h), :len(toks) + 1]
                         for l, h in heads])
        out.append(w.float())
    return out


def _kept(cache, prompt, span, deepest) -> bool:
    """Whether ``cache`` holds this prompt's columns 0..L-2, audio included, up to ``deepest``."""
    n = prompt.shape[0] - 1
    return (cache is not None and len(cache) > deepest and cache[0][0].shape[1] == n
            and span[1] <= n)


def _padded(ks: list[torch.Tensor], columns: int) -> torch.Tensor:
    """(KV, L_i, D) per input, right-padded with zeros to (B, KV, columns, D)."""
    out = ks[0].new_zeros((len(ks), ks[0].shape[0], columns, ks[0].shape[-1]))
    for i, k in enumerate(ks):
        out[i, :, :k.shape[1]] = k
    return out


def _attend_after(attn, xn, cos, sin, pk, pv, mask) -> torch.Tensor:
    """One layer's attention output for rows that follow kept keys/values (as Attention.forward
    without the kernels: the same modules and formulas)."""
    b, t, _ = xn.shape
    q = attn.q_norm(attn.q_proj(xn).view(b, t, attn.h, attn.d)).transpose(1, 2)
    k = attn.k_norm(attn.k_proj(xn).view(b, t, attn.kv, attn.d)).transpose(1, 2)
    v = attn.v_proj(xn).view(b, t, attn.kv, attn.d).transpose(1, 2)
    c, s = cos[:, None].to(q.dtype), sin[:, None].to(q.dtype)
    q = q * c + rotate_half(q) * s
    k = k * c + rotate_half(k) * s
    out = F.scaled_dot_product_attention(q, torch.cat([pk, k.to(pk.dtype)], 2),
                                         torch.cat([pv, v.to(pv.dtype)], 2), attn_mask=mask,
                                         enable_gqa=True)
    return attn.o_proj(out.transpose(1, 2).reshape(b, t, attn.h * attn.d))


def _rows_over_audio(attn, xn, cos, sin, heads, keys, audio_spans) -> list[torch.Tensor]:
    """Per input, (len(heads), T, audio positions) fp32: the softmax of ``heads``' scores from
    each row over the kept audio keys (already normed and rotated, as the decode wrote them)."""
    b, t, _ = xn.shape
    q = _rms(attn.q_proj(xn).view(b, t, attn.h, attn.d), attn.q_norm).transpose(1, 2)[:, heads]
    c, s = cos[:, None].float(), sin[:, None].float()
    q = q * c + rotate_half(q) * s
    group = attn.h // attn.kv
    out = []
    for i, (a0, a1) in enumerate(audio_spans):
        k = keys[i][[h // group for h in heads], a0:a1].float()
        out.append((q[i] @ k.transpose(-1, -2) / attn.d ** 0.5).softmax(-1))
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
