"""Which decoder heads align tokens with audio, chosen per checkpoint without any reference.

A head that aligns attends, from each token, sharply to one stretch of the audio, and that
stretch moves forward through the utterance as the tokens do. So each head is scored on
utterances by

* sharpness: the mean over tokens of the attention mass inside the best window as wide as an
  average token's share of the audio (positions / tokens), against a uniform spread as zero.
  (The largest single weight, as this was first measured, is at most 1 / its width for a head
  that attends evenly over a token's audio: with the demo's whole-word tokens over 120 ms
  positions, a head built to align perfectly scored 0.16; tests/test_word_timing.py builds it.)
* monotonicity: the Spearman correlation between token order and the attended position
  (the attention's centre of mass),
* coverage: how much of the audio the attended positions span (a head that looks at one spot
  all the time is sharp and trivially monotone, but says nothing),

and a head's score is their product, averaged over the utterances. The best heads (up to
``MAX_HEADS``, those within half the best score) are used; the rest are left out. For a
checkpoint the utterances are the example clips in ``example/`` decoded by the model itself
(``choose_for_model``), and the choice is kept per model object.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

MAX_HEADS = 6
EXAMPLES = Path(__file__).resolve().parents[2] / "example"


def head_scores(weights: torch.Tensor) -> np.ndarray:
    """Scores (heads,) of one utterance's weights (heads, rows, audio positions); rows are the
    tokens then the end token (left out here)."""
    w = weights[:, :-1].double().numpy() if weights.shape[1] > 1 else weights.double().numpy()
    h, r, n = w.shape
    if r < 3 or n < 3:
        return np.zeros(h)
    width = int(min(n, max(1, round(n / r))))  # an average token's share of the positions
    base = width / n                              # a uniform spread's mass in such a window
    cum = np.cumsum(np.pad(w, [(0, 0), (0, 0), (1, 0)]), -1)
    mass = (cum[..., width:] - cum[..., :-width]).max(-1)  # (h, r): the best window's mass
    sharp = np.clip((mass.mean(-1) - base) / (1 - base), 0, 1) if base < 1 else np.zeros(h)
    pos = np.arange(n)
    centre = (w * pos).sum(-1)  # (h, r)
    order = np.argsort(np.argsort(centre, axis=-1), axis=-1).astype(float)
    ranks = np.arange(r, dtype=float)
    a = order - order.mean(-1, keepdims=True)
    b = ranks - ranks.mean()
    denom = np.sqrt((a * a).sum(-1) * (b * b).sum()) + 1e-12
    mono = np.clip((a * b).sum(-1) / denom, 0, None)
    cover = np.clip((centre.max(-1) - centre.min(-1)) / (n - 1), 0, 1)
    return sharp * mono * cover


def pick(scores: np.ndarray, heads: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The best heads: at most MAX_HEADS, each within half the best score."""
    order = np.argsort(-scores)
    best = scores[order[0]]
    return [heads[i] for i in order[:MAX_HEADS] if scores[i] >= 0.5 * best and scores[i] > 0]


CALIBRATION_TOKENS = 96  # per example clip (they are short sentences)


def _cache_file(model) -> Path | None:
    """Where the choice for this checkpoint is kept: keyed by the weights file (path, size,
    mtime) and this file's code, under the kernel cache's root (FUNASR_NANO_KERNEL_CACHE's
    parent, default ~/.cache/funasr-nano)."""
    weights = getattr(model, "checkpoint_file", None)
    if not weights:
        return None
    try:
        st = os.stat(weights)
    except OSError:
        return None
    key = hashlib.sha1(f"{os.path.abspath(weights)}|{st.st_size}|{st.st_mtime_ns}|".encode()
                       + Path(__file__).read_bytes()).hexdigest()[:16]
    root = os.environ.get("FUNASR_NANO_KERNEL_CACHE")
    base = Path(root).parent if root else Path.home() / ".cache" / "funasr-nano"
    return base / "alignment" / f"heads-{key}.json"


def choose_for_model(model) -> list[tuple[int, int]]:
    """The alignment heads of ``model`` (a FunASRNano), from its own transcripts of the example
    clips; kept on the model and, per checkpoint, on disk. Without clips: every head of every
    layer."""
    cached = getattr(model, "_alignment_heads", None)
    if cached is not None:
        return cached
    path = _cache_file(model)
    if path is not None and path.is_file():
        try:
            kept = json.loads(path.read_text())
            model._alignment_score = float(kept["score"])
            model._alignment_heads = [tuple(h) for h in kept["heads"]]
            return model._alignment_heads
        except (OSError, ValueError, KeyError, TypeError):
            pass
    from .attention import audio_attention
    cfg = model.llm_config
    heads = [(l, h) for l in range(cfg.num_hidden_layers) for h in range(cfg.num_attention_heads)]
    clips = sorted(EXAMPLES.glob("*.wav"))
    chosen = heads
    if clips:
        from ..audio import load_audio
        waves = [load_audio(str(c)) for c in clips]
        total = np.zeros(len(heads))
        for i in range(0, len(waves), 4):
            batch = waves[i:i + 4]
            prepared = model.prepare(batch, model.prompt_ids(None, True, ()))
            gens = model._generate([p.embeds for p in prepared], CALIBRATION_TOKENS, False, True)
            ws = audio_attention(model.llm, [p.embeds for p in prepared],
                                 [p.audio_span for p in prepared], [g.tokens for g in gens], heads)
            for w in ws:
                total += head_scores(w)
        mean = total / len(waves)
        chosen = pick(mean, heads) or heads
        # how the chosen heads did on the clips: under engine.alignment.MIN_SCORE the checkpoint
        # is not trusted and its attention pass is skipped
        model._alignment_score = float(np.mean([mean[heads.index(h)] for h in chosen]))
        log.info("alignment heads (layer, head) from %d example clips: %s", len(waves), chosen)
        if path is not None:
            try:  # written whole, then renamed: a reader never sees half a file
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"heads": [list(h) for h in chosen],
                                           "score": getattr(model, "_alignment_score", 0.0)}))
                os.replace(tmp, path)
            except OSError:
                log.warning("cannot keep the alignment heads in %s", path.parent)
    model._alignment_heads = chosen
    return chosen
