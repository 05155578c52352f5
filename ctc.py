"""CTC head of Fun-ASR-Nano: greedy CTC text and token timestamps by forced alignment.

Only checkpoints that ship trained ``ctc_decoder.*`` / ``ctc.*`` tensors have it (the ModelScope
Nano one); the MLT checkpoint has none and the engine then switches the branch off.
Frames are LFR frames: 6 x 10 ms = 60 ms each.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

FRAME_SECONDS = 0.06


class CTC(nn.Module):
    def __init__(self, odim: int, encoder_output_size: int, blank_id: int | None = None, **_unused):
        super().__init__()
        self.ctc_lo = nn.Linear(encoder_output_size, odim)
        self.blank_id = odim - 1 if blank_id is None else blank_id

    def log_softmax(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.ctc_lo(x).float(), dim=-1)


def greedy_ids(logp: torch.Tensor, blank: int) -> list[int]:
    """Best path: argmax per frame, merge repeats, drop blanks."""
    best = torch.unique_consecutive(logp.argmax(dim=-1))
    return best[best != blank].tolist()


def forced_align(logp: torch.Tensor, targets: list[int], blank: int) -> list[dict]:
    """Viterbi CTC alignment of ``targets`` to (T, V) log-probs.

    Returns one item per target token: ``token``, ``start``/``end`` frame (end exclusive) and
    ``score`` = the best frame probability of the token, like the reference's torchaudio-based
    helper. An empty list when the targets cannot fit in the frames.
    """
    if not targets:
        return []
    lp = logp.detach().float().cpu().numpy()
    t_len = lp.shape[0]
    ext = np.full(2 * len(targets) + 1, blank, dtype=np.int64)  # blank, y1, blank, y2, ..., blank
    ext[1::2] = targets
    s_len = len(ext)
    # A state may skip the blank before it when its label differs from the label two back.
    skip = np.zeros(s_len, dtype=bool)
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    neg = -np.inf
    score = np.full(s_len, neg)
    score[0] = lp[0, ext[0]]
    score[1] = lp[0, ext[1]]
    back = np.zeros((t_len, s_len), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, t_len):
        prev1 = np.concatenate(([neg], score[:-1]))
        prev2 = np.where(skip, np.concatenate(([neg, neg], score[:-2])), neg)
        choice = np.stack([score, prev1, prev2])
        back[t] = choice.argmax(0)
        score = choice.max(0) + lp[t, ext]
    end = s_len - 1 if score[-1] >= score[-2] else s_len - 2
    if not np.isfinite(score[end]):
        return []
    states = np.empty(t_len, dtype=np.int64)
    for t in range(t_len - 1, -1, -1):
        states[t] = end
        end -= back[t, end]
    items = []
    t = 0
    while t < t_len:
        s = states[t]
        u = t
        while u + 1 < t_len and states[u + 1] == s:
            u += 1
        if s % 2 == 1:
            probs = np.exp(lp[t:u + 1, ext[s]])
            items.append({"token": int(ext[s]), "start": t, "end": u + 1,
                          "score": round(float(probs.max()), 3)})
        t = u + 1
    return items


def timestamps(logp: torch.Tensor, text: str, tokenizer, blank: int) -> list[dict]:
    """Token timestamps in seconds for ``text`` (re-tokenized with the CTC tokenizer)."""
    items = forced_align(logp, tokenizer.encode(text), blank)
    return [{"token": tokenizer.decode_token(it["token"]),
             "start_time": round(it["start"] * FRAME_SECONDS, 3),
             "end_time": round(it["end"] * FRAME_SECONDS, 3),
             "score": it["score"]} for it in items]
