"""Hits: watch terms and personal data found in a transcript, with times, speaker and context.

``Detector(watch=WatchList, pii=True).scan(row)`` reads a result row (``text``, ``segments``
[{start, end, text, speaker?, words?}], ``words``?, ``language``) and returns hits::

    {"kind": "watch"|"pii", "category": "confidential"|"phone"|..., "label": "CONFIDENTIAL"|
     "PHONE"|..., "term": "project falcon" (watch) or None, "severity": "high",
     "validator": "phonenumbers" (pii), "text": "Project Falcon" (as transcribed),
     "start": 1.23, "end": 2.05, "time_source": "words"|"segment", "segment": 0,
     "speaker": "SPEAKER_00" or None, "context": "... about Project Falcon tomorrow ..."}

Segments are read as one text (joined by a space in the views), so a term split across two
segments is found; its start is in the first and its end in the last. Times come from word
times when the row has them (``words`` on the segments or on the row), else from the segments.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from . import pii as _pii
from . import textview
from .watchlist import WatchList

CONTEXT_CHARS = 40
_AUTO_LANGS = ("en", "zh")     # number words read when the language is not known


def languages_for(language: str | None) -> tuple[str, ...]:
    if not language or language == "auto":
        return _AUTO_LANGS
    return (language,)


@dataclass
class Detector:
    watch: WatchList | None = None
    pii: tuple[str, ...] = ()                 # kinds of personal data to find (pii.KINDS)
    context_chars: int = CONTEXT_CHARS

    def __post_init__(self):
        if self.pii is True:
            self.pii = _pii.KINDS
        elif not self.pii:
            self.pii = ()
        else:
            bad = [k for k in self.pii if k not in _pii.KINDS]
            if bad:
                raise ValueError(f"unknown personal-data kind {bad[0]!r}; one of "
                                 f"{', '.join(_pii.KINDS)}")
            self.pii = tuple(self.pii)

    @property
    def active(self) -> bool:
        return bool(self.watch) or bool(self.pii)

    def settings(self) -> dict:
        """What this detector looks for, as the report states it."""
        return {"watch_list": self.watch.source if self.watch else None,
                "watch_terms": len(self.watch) if self.watch else 0,
                "watch_categories": sorted({t.category for t in self.watch.terms})
                if self.watch else [],
                "pii": list(self.pii)}

    # ------------------------------------------------------------------ finding

    def find_text(self, text: str, language: str | None = None) -> list[tuple]:
        """(start, end, kind, category, extra) character spans in ``text``."""
        langs = languages_for(language)
        out = []
        if self.watch:
            view = textview.build(text, langs, "watch")
            auto = self.watch.automaton(langs)
            vt = view.text
            for end, found in auto.iter(vt):
                for i, length in found:
                    term = self.watch.terms[i]
                    a, b = end + 1 - length, end + 1
                    if not _bounded(vt, a, b, term.prefix):
                        continue
                    while term.prefix and b < len(vt) and textview.spaced_word_char(vt[b]):
                        b += 1       # "salasana*" covers the whole word "salasanan"
                    s, e = view.span(a, b)
                    out.append((s, e, "watch", term.category, term))
        if self.pii:
            view = textview.build(text, langs, "pii")
            for a, b, kind, validator in _pii.find(view.text, language, self.pii):
                s, e = view.span(a, b)
                out.append((s, e, "pii", kind, validator))
        return _no_overlaps(out)

    def scan(self, row: dict) -> list[dict]:
        """The hits of one result row (see the module docstring)."""
        segments = [s for s in (row.get("segments") or []) if s.get("text")]
        if not segments:
            if not row.get("text"):
                return []
            segments = [{"start": 0.0, "end": float(row.get("duration") or 0.0),
                         "text": row["text"]}]
        joined, seg_at = [], []
        pos = 0
        for k, s in enumerate(segments):
            if k:
                joined.append(" ")
                pos += 1
            seg_at.append(pos)
            joined.append(s["text"])
            pos += len(s["text"])
        text = "".join(joined)
        words = _locate_words(text, segments, seg_at, row.get("words"))
        hits = []
        for s, e, kind, category, extra in self.find_text(text, row.get("language")):
            first = _segment_of(seg_at, s)
            last = _segment_of(seg_at, max(s, e - 1))
            inside = [w for w in words if w[0] < e and s < w[1]]
            if inside:
                start, end, source = min(w[2] for w in inside), max(w[3] for w in inside), "words"
            else:
                start, end = segments[first].get("start", 0.0), segments[last].get("end", 0.0)
                source = "segment"
            a = max(0, s - self.context_chars)
            b = min(len(text), e + self.context_chars)
            hit = {"kind": kind, "category": category,
                   "label": category.upper() if kind == "watch" else _pii.LABELS[category],
                   "term": extra.term if kind == "watch" else None,
                   "severity": extra.severity if kind == "watch" else "high",
                   "validator": extra if kind == "pii" else None,
                   "text": text[s:e], "start": round(float(start), 3),
                   "end": round(float(end), 3), "time_source": source, "segment": first,
                   "speaker": segments[first].get("speaker"),
                   "context": ("…" if a else "") + text[a:b] + ("…" if b < len(text) else ""),
                   "char_start": s, "char_end": e}
            hits.append(hit)
        return hits


def _bounded(vt: str, a: int, b: int, prefix: bool) -> bool:
    if a > 0 and textview.spaced_word_char(vt[a]) and textview.spaced_word_char(vt[a - 1]):
        return False
    if (not prefix and b < len(vt) and textview.spaced_word_char(vt[b - 1])
            and textview.spaced_word_char(vt[b])):
        return False
    return True


def _no_overlaps(spans: list[tuple]) -> list[tuple]:
    """Personal data first, then longer watch terms; a span overlapping a kept one is dropped."""
    order = sorted(spans, key=lambda h: (h[2] != "pii", -(h[1] - h[0]), h[0]))
    kept: list[tuple] = []
    for h in order:
        if not any(k[0] < h[1] and h[0] < k[1] for k in kept):
            kept.append(h)
    return sorted(kept, key=lambda h: h[0])


def _segment_of(seg_at: list[int], pos: int) -> int:
    k = 0
    for i, a in enumerate(seg_at):
        if a <= pos:
            k = i
    return k


def _locate_words(text: str, segments, seg_at, row_words) -> list[tuple[int, int, float, float]]:
    """(char start, char end, start s, end s) of each timed word found in order in the text."""
    out = []
    if any(s.get("words") for s in segments):
        lists = [(seg_at[k], s.get("words") or [], len(s["text"])) for k, s in
                 enumerate(segments)]
    elif row_words:
        lists = [(0, row_words, len(text))]
    else:
        return out
    for base, words, length in lists:
        pos = base
        limit = base + length
        for w in words:
            token = str(w.get("word", "")).strip()
            if not token:
                continue
            i = text.find(token, pos, limit)
            if i < 0:
                continue
            try:
                out.append((i, i + len(token), float(w["start"]), float(w["end"])))
            except (KeyError, TypeError, ValueError):
                continue
            pos = i + len(token)
    return out


def redact_text(text: str, spans) -> str:
    """``text`` with each (start, end, label) span replaced by ``[LABEL]``."""
    out, pos = [], 0
    for s, e, label in sorted(spans):
        if s < pos:
            continue
        out.append(text[pos:s])
        out.append(f"[{label}]")
        pos = e
    out.append(text[pos:])
    return re.sub(r"(\[[A-Z_0-9-]+\])(?:\s*\1)+", r"\1", "".join(out))
