"""From token times to word times, and the fallback that spreads words over the speech.

A word is a run of non-space characters, except that each CJK character (Han, kana) is a word of
its own; punctuation stays with the word it follows (or, opening a text, the one it precedes).
A token may hold several characters (or a word several tokens): the characters of a token share
its time span evenly (spaces take none), and a word runs from its first character's start to its
last one's end.
"""
from __future__ import annotations

import unicodedata

import numpy as np


def is_cjk_char(ch: str) -> bool:
    """A character written without spaces around it: Han, kana, CJK punctuation and full-width
    forms (Hangul is not: Korean uses spaces). The same ranges as engine.longform.subtitles,
    which sits above this package."""
    o = ord(ch)
    return any(lo <= o <= hi for lo, hi in _CJK_RANGES)


_CJK_RANGES = ((0x2E80, 0x2FDF), (0x3000, 0x303F), (0x3040, 0x30FF), (0x3190, 0x31FF),
               (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFF00, 0xFFEF),
               (0x20000, 0x3134F))

_SIL = "/sil"  # the model's pause marker: clean_text makes it a space


class _Punct:
    """Punctuation only (Unicode P*): symbols such as $ and € are words' own characters."""

    @staticmethod
    def match(s: str) -> bool:
        return bool(s) and all(unicodedata.category(c).startswith("P") for c in s)


_PUNCT = _Punct()


def token_pieces(decode, tokens: list[int]) -> list[str]:
    """The text each token adds, decoding prefixes so multi-byte characters split over tokens
    land on the token that completes them. ``decode(ids) -> str``."""
    pieces, prev = [], ""
    for k in range(len(tokens)):
        cur = decode(tokens[:k + 1])
        if cur.startswith(prev) and "\ufffd" not in cur[len(prev):]:
            pieces.append(cur[len(prev):])
            prev = cur
        else:  # an incomplete character: nothing yet
            pieces.append("")
    return pieces


def word_spans(text: str) -> list[tuple[int, int]]:
    """(first char, end char) of each word of ``text`` (see the module docstring)."""
    spans: list[list[int]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if is_cjk_char(ch):
            j = i + 1
            if _PUNCT.match(ch) and spans:  # CJK punctuation joins the word before it
                spans[-1][1] = j
            else:
                spans.append([i, j])
            i = j
            continue
        j = i
        while j < n and not text[j].isspace() and not (is_cjk_char(text[j]) and j > i):
            j += 1
        if _PUNCT.match(text[i:j]) and spans and spans[-1][1] == i:
            spans[-1][1] = j  # punctuation right after a word belongs to it
        else:
            spans.append([i, j])
        i = j
    # a word of punctuation alone (a leading quote) joins the next word
    out: list[list[int]] = []
    carry = None
    for s in spans:
        if _PUNCT.match(text[s[0]:s[1]]):
            if out and carry is None and text[out[-1][1]:s[0]].strip() == "":
                out[-1][1] = s[1]
            else:
                carry = s[0] if carry is None else carry
            continue
        if carry is not None:
            s = [carry, s[1]]
            carry = None
        out.append(s)
    if carry is not None and out:
        out[-1][1] = spans[-1][1]
    return [(a, b) for a, b in out]


def words_from_token_times(pieces: list[str], starts: np.ndarray, ends: np.ndarray) -> list[dict]:
    """Words with times from each token's text piece and its (start, end) in seconds."""
    text_chars, t0, t1 = [], [], []
    for piece, a, b in zip(pieces, starts, ends):
        piece = piece.replace(_SIL, " " * len(_SIL))
        # spaces take no time: a word token's leading space (" close") must not push the word's
        # start into its span
        m, j = sum(not ch.isspace() for ch in piece), 0
        for ch in piece:
            text_chars.append(ch)
            t0.append(a + (b - a) * j / m if m else a)
            j += not ch.isspace()
            t1.append(a + (b - a) * j / m if m else a)
    text = "".join(text_chars)
    return [{"word": text[a:b], "start": float(t0[a]), "end": float(t1[b - 1])}
            for a, b in word_spans(text)]


_SMALL_KANA = set("ゃゅょぁぃぅぇぉゎャュョァィゥェォヮ")


def _speaking_weight(ch: str) -> float:
    """About how long a character takes to say, in Latin letters: a kana is one mora (a small
    one joins the mora before it), a Han character a syllable (Chinese) or, on average, two
    morae (Japanese: a kanji's reading is one to four morae, which the text does not tell; the
    synthetic-speech benchmark's kanji average 1.7), a digit a short number word. Punctuation
    counts as one letter, full-width or not: it marks a breath at most (a longer pause is a gap
    between the VAD's speech regions). Weighting a full-width mark as a Han character (as this
    did before) moved every Japanese word before a final 。 early by a quarter of a second."""
    if ch.isspace():
        return 0.0
    if unicodedata.category(ch).startswith("P"):
        return 1.0
    o = ord(ch)
    if 0x3040 <= o <= 0x30FF:  # hiragana, katakana, the prolonged sound mark
        return 0.6 if ch in _SMALL_KANA else 2.0
    if is_cjk_char(ch):  # Han
        return 4.0
    if ch.isdigit():
        return 3.0
    return 1.0


# silero-vad's speech regions run on past the last word: 0.05-0.09 s (mean per language) on the
# 12 languages of bench/timing.py's synthetic speech. The fallback takes it off each region's
# end, so the words are spread over the speech itself.
VAD_RUN_ON_S = 0.07


def spread_over_speech(text: str, regions: list[tuple[float, float]], start: float,
                       end: float) -> list[dict]:
    """The fallback: words of ``text`` laid over the speech ``regions`` (seconds, from the VAD:
    each loses its run-on, ``VAD_RUN_ON_S``) in proportion to how long they take to say
    (``_speaking_weight``), every word ``estimated``.
    With no regions, the span ``start``..``end``."""
    spans = word_spans(text.replace(_SIL, " " * len(_SIL)))
    if not spans:
        return []
    regions = [(a, max(a + min(b - a, 0.1), b - VAD_RUN_ON_S)) for a, b in regions]
    regions = [(max(a, start), min(b, end)) for a, b in regions if min(b, end) > max(a, start)]
    if not regions:
        regions = [(start, end)]
    weights = np.array([sum(map(_speaking_weight, text[a:b])) for a, b in spans], float)
    weights = np.maximum(weights, 0.5)
    edges = np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum()
    speech = np.array([b - a for a, b in regions])
    cum = np.concatenate([[0.0], np.cumsum(speech)])
    total = cum[-1]

    def at(frac: float) -> float:  # a fraction of the speech time -> seconds on the clock
        s = frac * total
        r = min(int(np.searchsorted(cum, s, side="right")) - 1, len(regions) - 1)
        return regions[r][0] + (s - cum[r])

    words = []
    for (a, b), f0, f1 in zip(spans, edges[:-1], edges[1:]):
        w0 = at(f0)
        w1 = max(w0, at(f1 - 1e-9) if f1 < 1 else regions[-1][1])
        words.append({"word": text[a:b], "start": round(w0, 3), "end": round(w1, 3),
                      "estimated": True})
    return words

