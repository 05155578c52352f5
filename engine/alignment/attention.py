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

Where the decode kept what it computed (``captured``: engine.batching's ``align_layers``), there
is no second pass: the decode kept the chosen layers' inputs at the last prompt position and at
every token it fed back, and its keys; a row's query is made from its kept input, and a head's
weights are the softmax of its scores over the kept audio keys. That is the same number: the
weights restricted to the audio and renormalised over it *are* the softmax over the audio
positions alone. Only a sequence stopped at its token limit never fed back its last token; that
one row is run through the layers against the kept keys and values.
"""
from __future__ import annotations

import torch

import torch.nn.functional as F

from ..qwen3 import Qwen3ForCausalLM, causal_mask, rotate_half


@torch.inference_mode()
def audio_attention(llm: Qwen3ForCausalLM, prompts: list[torch.Tensor],
                    audio_spans: list[tuple[int, int]], tokens: list[list[int]],
                    heads: list[tuple[int, int]] | None = None,
                    captured: list | None = None) -> list[torch.Tensor]:
    """Attention of each generated token over its prompt's audio positions.

    ``prompts``: (L_i, C) input embeddings as decoded; ``audio_spans``: (first, end) positions of
    the audio inside each prompt; ``tokens``: the generated ids (without the end token);
    ``heads``: (layer, head) pairs, None for every head of every layer. Returns one fp32 tensor
    per input, (len(heads), n_tokens + 1, audio positions): the softmax weights restricted to the
    audio positions and renormalised over them. ``captured``: per input, what its decode kept
    (engine.batching.Captured, for at least ``heads``' layers) or None: then prompt and tokens
    are run again."""
    cfg = llm.config
    if heads is None:
        heads = [(l, h) for l in range(cfg.num_hidden_layers)
                 for h in range(cfg.num_attention_heads)]
    by_layer: dict[int, list[int]] = {}
    for l, h in heads:
        by_layer.setdefault(l, []).append(h)
    deepest = max(by_layer)
    if captured is not None and all(_usable(c, toks, by_layer)
                                    for c, toks in zip(captured, tokens)):
        return _from_captured(llm, prompts, audio_spans, tokens, heads, by_layer, captured)
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


def _usable(c, toks, by_layer) -> bool:
    """Whether ``c`` (a Captured) has every row of these heads' layers, or all but the last
    with the keys and values to make it."""
    if c is None or len(c.cache) <= max(by_layer) or any(
            l not in c.inputs or c.cache[l] is None for l in by_layer):
        return False
    rows = {c.inputs[l].shape[0] for l in by_layer}
    if len(rows) != 1:
        return False
    n = rows.pop()
    return n >= len(toks) + 1 or (n == len(toks) and all(kv is not None for kv in c.cache))


def _from_captured(llm, prompts, audio_spans, tokens, heads, by_layer, caps):
    """audio_attention from what the decode kept: the queries of the kept layer inputs (the
    missing last row made first, where a sequence stopped at its limit), the kept audio keys."""
    device = llm.model.embed_tokens.weight.device
    tail = [i for i, (c, toks) in enumerate(zip(caps, tokens))
            if c.inputs[max(by_layer)].shape[0] < len(toks) + 1]
    extra = _tail_inputs(llm, [tokens[i][-1] for i in tail], [caps[i].cache for i in tail],
                         by_layer) if tail else {}
    out = []
    for i, (toks, (a0, a1)) in enumerate(zip(tokens, audio_spans)):
        n = len(toks) + 1
        positions = prompts[i].shape[0] - 1 + torch.arange(n, device=device)[None]
        cos, sin = llm.rope(positions, torch.float32)
        per_layer = {}
        for l, hs in by_layer.items():
            x = caps[i].inputs[l][:n]
            if i in tail:
                x = torch.cat([x, extra[l][tail.index(i)]])
            attn = llm.model.layers[l].self_attn
            keys = caps[i].cache[l][0][:, a0:a1]
            per_layer[l] = _audio_rows(attn, llm.model.layers[l].input_layernorm(x[None]), cos,
                                       sin, hs, keys)
        out.append(torch.stack([per_layer[l][by_layer[l].index(h)] for l, h in heads]))
    return out


def _tail_inputs(llm, last_tokens, caches, by_layer) -> dict[int, torch.Tensor]:
    """The tapped layers' inputs (B, 1, C) at the position of each sequence's last token, which
    its decode never fed back: run through the layers below against its kept keys and values
    (columns 0..n-1; the token goes at column n)."""
    device = llm.model.embed_tokens.weight.device
    n_past = torch.tensor([c[0][0].shape[1] for c in caches], device=device)
    b, pm = len(caches), int(n_past.max())
    x = llm.embed(torch.tensor(last_tokens, device=device))[:, None]
    cos, sin = llm.rope(n_past[:, None], x.dtype)
    mask = torch.cat([torch.arange(pm, device=device)[None] < n_past[:, None],
                      torch.ones(b, 1, dtype=torch.bool, device=device)], -1)[:, None, None]
    out = {}
    for l, layer in enumerate(llm.model.layers[:max(by_layer) + 1]):
        if l in by_layer:
            out[l] = x
        if l < max(by_layer):
            pk = _padded([c[l][0] for c in caches], pm)
            pv = _padded([c[l][1] for c in caches], pm)
            x = x + _attend_after(layer.self_attn, layer.input_layernorm(x), cos, sin, pk, pv,
                                  mask)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
    return out


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


def _audio_rows(attn, xn, cos, sin, heads, keys) -> torch.Tensor:
    """(len(heads), T, audio positions) fp32 for one input: the softmax of ``heads``' scores
    from its rows ``xn`` (1, T, C) over its kept audio ``keys`` (KV heads, A, D; normed and
    rotated as the decode wrote them)."""
    t = xn.shape[1]
    q = _rms(attn.q_proj(xn).view(1, t, attn.h, attn.d), attn.q_norm).transpose(1, 2)[0, heads]
    q = q * cos.float() + rotate_half(q) * sin.float()
    k = keys[[h // (attn.h // attn.kv) for h in heads]].float()
    return (q @ k.transpose(-1, -2) / attn.d ** 0.5).softmax(-1)


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
