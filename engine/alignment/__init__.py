"""Word timings from the model itself: the decoder's attention over the audio positions of its
prompt (attention.py), heads chosen per checkpoint without a reference (heads.py), a monotonic
path through their attention (dtw.py), tokens joined into words (words.py); where the alignment
is not trustworthy, the words are spread over the speech the VAD finds and marked ``estimated``.

    words = align(model, [(prepared, tokens, text)])[0]
    # [{"word": "Hello", "start": 0.42, "end": 0.71}, ...]  seconds from the start of the audio
"""
from __future__ import annotations

import logging

import numpy as np

from ..audio import vad
from .attention import audio_attention
from .dtw import dtw, median_filter
from .heads import choose_for_model, head_scores
from .words import spread_over_speech, token_pieces, words_from_token_times

log = logging.getLogger(__name__)

MEDIAN_FILTER = 3      # audio positions (120 ms each for the demo) smoothed before the path
# An utterance whose chosen heads score lower (heads.head_scores: sharpness x monotonicity x
# coverage, 1 for a perfectly sharp diagonal) is not trusted. The demo checkpoint's chosen
# heads score 0.37 (its best single head 0.46) and their word times are off by a median
# 0.20-0.43 s on speech with known word times, the fallback's 0.03-0.08 s (docs/timing.md), so
# its words are the fallback's, marked estimated; a head built to align scores 0.72.
MIN_SCORE = 0.5
MAX_WORD_S = 2.0       # no word is longer than this, nor than 3x the median word
SNAP_S = 0.6           # a word edge in a pause moves to the speech at most this far


def prepare(model) -> None:
    """Choose ``model``'s alignment heads now (12 short decodes of the example clips, or the
    choice read back from the disk cache), so that the first request for words does not wait
    for it: the server calls this when it loads its model. Never raises: words are optional."""
    try:
        choose_for_model(model)
    except Exception:  # noqa: BLE001
        log.exception("choosing the alignment heads failed; the first request for words "
                      "tries again")


def align_layers(model, choose: bool = True) -> tuple[int, ...]:
    """The decoder layers of the alignment heads, for the decode to keep what the alignment
    reads (engine.batching ``align_layers``); () where no attention pass will run, or, with
    ``choose=False``, where the heads are not chosen yet. Never raises: words are optional."""
    if getattr(model, "_alignment_score", 1.0) < MIN_SCORE:
        return ()
    try:
        heads = choose_for_model(model) if choose else getattr(model, "_alignment_heads", None)
        return tuple(sorted({layer for layer, _ in heads or ()}))
    except Exception:  # noqa: BLE001 - align() tries again and falls back
        log.exception("choosing the alignment heads failed")
        return ()


def align(model, items, speech=None, captured=None) -> list[list[dict]]:
    """Word timings for ``items``: (Prepared, generated token ids, result text) each, decoded by
    ``model`` (a FunASRNano). ``speech``: per item, speech regions [(start_s, end_s)] where the
    caller has them (long audio), else None (found here with the VAD). One list of words per
    item; where the alignment fails or is not trusted the words are spread over the speech and
    carry ``"estimated": True``. ``captured``: per item, what its decode kept
    (``Generation.captured``) or None: with it there is no second pass over prompt and tokens.
    Never raises for one bad item."""
    out: list[list[dict] | None] = [None] * len(items)
    speech = list(speech) if speech is not None else [None] * len(items)
    todo = [i for i, (p, toks, text) in enumerate(items) if toks and text.strip()
            and p.audio_span is not None]
    for i, (p, toks, text) in enumerate(items):
        if not text.strip():
            out[i] = []
    weights = {}
    if todo and getattr(model, "_alignment_score", 1.0) < MIN_SCORE:
        todo = []  # the checkpoint's best heads failed the bar on the example clips: no pass
    if todo:
        try:
            heads = choose_for_model(model)
            ws = audio_attention(model.llm, [items[i][0].embeds for i in todo],
                                 [items[i][0].audio_span for i in todo],
                                 [items[i][1] for i in todo], heads,
                                 None if captured is None else [captured[i] for i in todo])
            weights = dict(zip(todo, ws))
        except Exception:  # noqa: BLE001 - word times are optional: the text stays
            log.exception("word alignment failed; words are estimated")
    for i, (p, toks, text) in enumerate(items):
        if out[i] is not None:
            continue
        regions = speech[i]
        words = None
        try:
            if regions is None:
                regions = _speech_regions(p)
            words = _from_weights(model, p, toks, text, weights.get(i), regions)
        except Exception:  # noqa: BLE001
            log.exception("word alignment failed; words are estimated")
        if words is None:
            words = spread_over_speech(text.strip(), regions or [], 0.0, p.seconds or 0.0)
        out[i] = words
    return out


def _speech_regions(p) -> list[tuple[float, float]]:
    if p.wave is None:
        return [(0.0, p.seconds or 0.0)]
    probs, n = vad.speech_probabilities(p.wave)
    return [(a, b) for a, b in vad.speech_regions(probs, n)]


def _from_weights(model, p, tokens, text, w, regions) -> list[dict] | None:
    """Words from one item's attention (heads, rows, positions), or None when not trusted."""
    if w is None or w.shape[-1] < 2:
        return None
    score = float(head_scores(w).mean())
    if score < MIN_SCORE:
        log.info("word alignment not trusted (head score %.3f): words are estimated", score)
        return None
    pieces = token_pieces(model.tokenizer.decode, tokens)
    joined = "".join(pieces)
    if " ".join(joined.replace("/sil", " ").split()) != " ".join(text.split()):
        return None  # the text was changed after decoding (a loop collapsed): no token map
    x = w.numpy().astype(np.float64)
    mean, std = x.mean(-2, keepdims=True), x.std(-2, keepdims=True) + 1e-9
    x = median_filter((x - mean) / std, MEDIAN_FILTER).mean(0)
    rows, cols = dtw(-x)
    jumps = np.concatenate([[True], np.diff(rows) > 0])
    per_pos = (p.seconds or 0.0) / w.shape[-1]
    jump_times = cols[jumps] * per_pos  # the first position of each row: n tokens + the end
    starts, ends = jump_times[:-1], jump_times[1:]
    words = words_from_token_times(pieces, starts, ends)
    return _tidy(words, regions, p.seconds or 0.0)


def _tidy(words, regions, duration) -> list[dict]:
    """Clamp outliers (over-long words), move edges that lie in pauses onto the speech, keep
    times in order and inside the audio; 3 decimals."""
    if not words:
        return words
    durs = np.array([w["end"] - w["start"] for w in words])
    limit = min(MAX_WORD_S, max(3 * float(np.median(durs)), 0.3))
    for k, w in enumerate(words):
        if w["end"] - w["start"] > limit:
            if k == 0:  # the first word: its start is the doubtful edge (it opens a pause)
                w["start"] = w["end"] - limit
            else:
                w["end"] = w["start"] + limit
    if regions:
        starts = np.array([a for a, _ in regions])
        ends = np.array([b for _, b in regions])
        for w in words:
            w["start"], w["end"] = _snap(w["start"], w["end"], starts, ends)
    prev = 0.0
    for w in words:
        w["start"] = round(min(max(w["start"], prev), duration), 3)
        w["end"] = round(min(max(w["end"], w["start"]), duration), 3)
        prev = w["start"]
    return words


def _snap(s, e, starts, ends):
    """A start in a pause moves forward to the next speech, an end in a pause back to the last."""
    inside = lambda t: bool(((starts <= t) & (t <= ends)).any())  # noqa: E731
    if not inside(s):
        nxt = starts[starts > s]
        if len(nxt) and nxt[0] - s <= SNAP_S and nxt[0] < e:
            s = float(nxt[0])
    if not inside(e):
        prv = ends[ends < e]
        if len(prv) and e - prv[-1] <= SNAP_S and prv[-1] > s:
            e = float(prv[-1])
    return s, e
