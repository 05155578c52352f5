"""Greedy batched decoding with the Qwen3 KV cache, and the reference's output text clean-up."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .qwen3 import KVCache, Qwen3ForCausalLM
from .repetition import loop_at


@dataclass
class Generation:
    tokens: list[int]
    finish_reason: str  # "stop" (end token), "length" (token limit) or "repetition" (a loop)


@torch.inference_mode()
def greedy_generate(llm: Qwen3ForCausalLM, prompts: list[torch.Tensor], eos_id: int,
                    max_new_tokens: int = 512, ignore_eos: bool = False,
                    end_ids: tuple[int, ...] = (), stop_loops: bool = True) -> list[Generation]:
    """Decode each prompt (L_i, C) of input embeddings until ``eos_id`` or the token limit.

    Prompts are left-padded into one batch; padded key columns are masked out and every row gets
    RoPE positions 0..L_i-1, as the reference's batched path does. Rows that finish are dropped
    from the batch so the rest decode at the smaller batch's cost. ``ignore_eos`` (benchmarks
    only) forces exactly ``max_new_tokens`` tokens the way HF ``min_new_tokens`` does in the
    reference: ``eos_id`` and ``end_ids`` can never be picked.

    ``stop_loops`` (the repetition guard, engine.repetition): a row whose tokens start to loop
    ends there with ``finish_reason="repetition"``, keeping one copy of what repeated. Off with
    ``ignore_eos``, which asks for exactly ``max_new_tokens``.
    """
    stop_loops = stop_loops and not ignore_eos
    device = prompts[0].device
    banned = torch.tensor(sorted({eos_id, *end_ids}), device=device) if ignore_eos else None
    dtype = llm.dtype
    b = len(prompts)
    lengths = torch.tensor([p.shape[0] for p in prompts], device=device)
    lmax = int(lengths.max())
    pad = lmax - lengths
    x = torch.zeros(b, lmax, prompts[0].shape[-1], dtype=dtype, device=device)
    for i, p in enumerate(prompts):
        x[i, lmax - p.shape[0]:] = p.to(dtype)
    capacity = lmax + max_new_tokens
    cols = torch.arange(capacity, device=device)
    valid = cols[None, :] >= pad[:, None]  # (B, capacity): False on left padding
    positions = (cols[None, :lmax] - pad[:, None]).clamp(min=0)

    padded = bool((pad > 0).any())
    mask = None
    if padded:  # causal, real keys only; a padded row sees itself so softmax never gets all -inf
        causal = torch.ones(lmax, lmax, dtype=torch.bool, device=device).tril()
        eye = torch.eye(lmax, dtype=torch.bool, device=device)
        mask = (causal[None] & (valid[:, None, :lmax] | eye[None]))[:, None]
    cache = KVCache(llm.config, b, capacity, dtype, device)
    next_tok = llm.next_tokens(x, positions, cache, 0, mask if padded else _causal(lmax, device),
                               banned)

    out: list[list[int]] = [[] for _ in range(b)]
    reasons = ["length"] * b
    rows = list(range(b))  # original index of each live batch row
    for step in range(max_new_tokens):
        toks = next_tok.tolist()
        keep = []
        for r, tok in enumerate(toks):
            i = rows[r]
            if tok == eos_id and not ignore_eos:
                reasons[i] = "stop"
                continue
            out[i].append(tok)
            cut = loop_at(out[i]) if stop_loops else None
            if cut is not None:
                del out[i][cut:]
                reasons[i] = "repetition"
            else:
                keep.append(r)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(rows):
            idx = torch.tensor(keep, device=device)
            cache.select(idx, lmax + step)
            next_tok, lengths, valid = next_tok[idx], lengths[idx], valid[idx]
            rows = [rows[r] for r in keep]
            padded = bool((~valid[:, :lmax]).any())
        start = lmax + step
        emb = llm.embed(next_tok)[:, None]
        pos = (lengths + step)[:, None]
        step_mask = valid[:, None, None, :start + 1] if padded else None
        next_tok = llm.next_tokens(emb, pos, cache, start, step_mask, banned)
    return [Generation(t, r) for t, r in zip(out, reasons)]


def _causal(n: int, device) -> torch.Tensor | None:
    return None if n == 1 else torch.ones(n, n, dtype=torch.bool, device=device).tril()


def clean_text(response: str) -> str:
    """``text``: /sil becomes a space and whitespace runs collapse (not stripped, as reference)."""
    return re.sub(r"\s+", " ", response.replace("/sil", " "))


def normalized_text(response: str) -> str:
    """``text_tn``: punctuation removed from the raw response (reference's regex)."""
    return re.sub(r"[^\w\s\u3000\u4e00-\u9fff]+", "", response)
