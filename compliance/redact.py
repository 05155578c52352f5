"""Redaction: the text, segments (so subtitles) and JSON with each hit replaced by its label,
and a copy of the audio with the hit spans silenced or bleeped.

Text redaction replaces the characters a hit covers (``[PHONE]``, ``[CARD]``, ``[CONFIDENTIAL]``);
a hit that crosses segments is replaced in each segment it touches. Audio redaction writes a
new file: every sample inside a hit's [start, end) (plus ``pad`` seconds each side) becomes 0
or a 1 kHz tone, every other sample is copied unchanged.
"""
from __future__ import annotations

import copy

import numpy as np

from .detect import redact_text

BLEEP_HZ = 1000.0
BLEEP_LEVEL = 0.2


def _segment_spans(row: dict, hits: list[dict]):
    """Per segment index: (start, end, label) in that segment's own text."""
    segments = [s for s in (row.get("segments") or []) if s.get("text")]
    starts, pos = [], 0
    for k, s in enumerate(segments):
        if k:
            pos += 1
        starts.append(pos)
        pos += len(s["text"])
    spans: dict[int, list] = {}
    for h in hits:
        for k, s in enumerate(segments):
            a, b = starts[k], starts[k] + len(s["text"])
            lo, hi = max(a, h["char_start"]), min(b, h["char_end"])
            if lo < hi:
                spans.setdefault(k, []).append((lo - a, hi - a, h["label"]))
    return segments, spans


def redact_row(row: dict, hits: list[dict], detector=None) -> dict:
    """A copy of ``row`` with ``text`` and ``segments[].text`` redacted (and ``words`` of
    redacted spans dropped). ``detector`` (optional) re-finds the hits in ``row["text"]`` when
    the row text is not the segments joined by a space (long audio joins per language)."""
    out = copy.deepcopy(row)
    segments, spans = _segment_spans(row, hits)
    red_segments = []
    for k, s in enumerate(segments):
        s2 = dict(s)
        if k in spans:
            s2["text"] = redact_text(s["text"], spans[k])
            if s.get("words"):
                s2["words"] = _redact_words(s["words"], [h for h in hits if h["segment"] <= k])
        red_segments.append(s2)
    if row.get("segments"):
        # segments without text stay as they are
        it = iter(red_segments)
        out["segments"] = [next(it) if s.get("text") else dict(s) for s in row["segments"]]
    joined = " ".join(s["text"] for s in segments)
    if not segments or joined == row.get("text"):
        out["text"] = (" ".join(s["text"] for s in red_segments) if segments else
                       redact_text(row.get("text", ""), [(h["char_start"], h["char_end"],
                                                          h["label"]) for h in hits]))
    elif detector is not None:
        found = detector.find_text(row.get("text", ""), row.get("language"))
        labels = {h["text"]: h["label"] for h in hits}
        out["text"] = redact_text(row["text"], [
            (s, e, labels.get(row["text"][s:e], _label(kind, cat)))
            for s, e, kind, cat, _ in found])
    else:
        out["text"] = " ".join(s["text"] for s in red_segments)
    if row.get("words"):
        out["words"] = _redact_words(row["words"], hits)
    return out


def _label(kind: str, category: str) -> str:
    from .pii import LABELS
    return LABELS[category] if kind == "pii" else category.upper()


def _redact_words(words: list[dict], hits: list[dict]) -> list[dict]:
    out = []
    for w in words:
        try:
            a, b = float(w["start"]), float(w["end"])
        except (KeyError, TypeError, ValueError):
            out.append(w)
            continue
        hit = next((h for h in hits if h["time_source"] == "words" and h["start"] < b
                    and a < h["end"]), None)
        out.append({**w, "word": f"[{hit['label']}]"} if hit else w)
    return out


def spans_to_samples(hits: list[dict], sample_rate: int, n: int, pad: float = 0.0):
    """[(first sample, end sample)] of each hit, merged and clipped to [0, n)."""
    spans = sorted((max(0, int(np.floor((h["start"] - pad) * sample_rate))),
                    min(n, int(np.ceil((h["end"] + pad) * sample_rate)))) for h in hits)
    merged: list[list[int]] = []
    for a, b in spans:
        if b <= a:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [tuple(m) for m in merged]


def redact_audio(src, dst, hits: list[dict], mode: str = "silence", pad: float = 0.0) -> list:
    """Write a copy of the audio file ``src`` to ``dst`` (WAV/FLAC by its suffix) at the file's
    own sample rate and channels, with the hit spans silenced (``mode="silence"``) or replaced
    by a tone (``"bleep"``). Returns the (first, end) sample spans changed."""
    import soundfile as sf
    if mode not in ("silence", "bleep"):
        raise ValueError("mode must be 'silence' or 'bleep'")
    data, sr = sf.read(src, always_2d=True, dtype="float32")
    info = sf.info(src)
    spans = spans_to_samples(hits, sr, len(data), pad)
    for a, b in spans:
        if mode == "silence":
            data[a:b] = 0.0
        else:
            t = np.arange(a, b) / sr
            data[a:b] = (BLEEP_LEVEL * np.sin(2 * np.pi * BLEEP_HZ * t)).astype(np.float32)[:, None]
    subtype = info.subtype if str(dst).lower().endswith((".wav", ".flac")) else None
    try:
        sf.write(dst, data, sr, subtype=subtype)
    except (ValueError, TypeError, RuntimeError):
        sf.write(dst, data, sr)
    return spans
