"""Joining segment texts, and TXT / SRT / VTT / TSV / JSON writers with subtitle shaping.

A segment is ``{"start": seconds, "end": seconds, "text": str}`` (extra keys are kept in JSON).
Every writer also accepts a ``transcribe_long`` result dict and uses its ``segments``.

Shaping (SRT/VTT): a cue has at most ``max_lines`` lines of ``max_chars`` columns (a CJK character
is two columns) and lasts at most ``max_cue_s`` seconds (defaults 42 / 2 / 7 s, the usual
broadcast limits). A longer segment is split into cues at word boundaries, or, for Chinese and
Japanese text without spaces, between characters, preferring punctuation. Segments with ``words``
(engine.alignment) time their cues by them and never run a cue over a pause longer than 1 s;
without words, cue times are interpolated in proportion to text length.
"""

from __future__ import annotations

import json
import re
import unicodedata

from ..languages import resolve_language

_CJK_RANGES = ((0x2E80, 0x2FDF), (0x3000, 0x303F), (0x3040, 0x30FF), (0x3190, 0x31FF),
               (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFF00, 0xFFEF),
               (0x20000, 0x3134F))
_PUNCT_END = "。！？!?.；;…"
_PUNCT_ANY = _PUNCT_END + "，,、：:）)」』】》”’\"'"


def is_cjk_char(ch: str) -> bool:
    """Han, kana, CJK punctuation, full-width forms (Hangul is not: Korean uses spaces)."""
    o = ord(ch)
    return any(lo <= o <= hi for lo, hi in _CJK_RANGES)


def is_cjk_language(language) -> bool | None:
    """True for Chinese/Cantonese/Japanese, False for another known language, None if unknown
    or automatic. Names as ``engine.languages`` accepts them (zh, Chinese, 中文, ...)."""
    try:
        lang = resolve_language(language)
    except ValueError:
        return None
    return None if lang is None else lang.code in ("zh", "yue", "ja")


def _latin(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def join_texts(texts, language=None) -> str:
    """Join segment texts: no space between Chinese/Japanese segments, a single space otherwise.

    With a CJK ``language`` segments are glued, except that a space is kept between two Latin
    words (an English term at a segment edge). With another language a space is always used.
    With no language it is decided per joint by script: no space if both sides are CJK.
    """
    cjk = is_cjk_language(language)
    out = ""
    for t in texts:
        t = " ".join(str(t).split())
        if not t:
            continue
        if out:
            if cjk is False:
                sep = " "
            elif cjk is True:
                sep = " " if _latin(out[-1]) and _latin(t[0]) else ""
            else:
                sep = "" if is_cjk_char(out[-1]) and is_cjk_char(t[0]) else " "
            out += sep
        out += t
    return out


# --------------------------------------------------------------------------- shaping

_P = r"\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"   # CJK punctuation
_L = (r"\u2e80-\u2fdf\u3040-\u30ff\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
      r"\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uffef\U00020000-\U0003134f")  # CJK letters
_TOKEN = re.compile(rf"[{_P}]+\s*|[{_L}][{_P}]*\s*|[^\s{_L}{_P}]+\s*")


def _tokens(text: str) -> list[str]:
    """Unbreakable pieces whose concatenation is ``text``: one CJK character with the punctuation
    that follows it, or one word with its trailing space. Lines may break between any two."""
    out = []
    for t in _TOKEN.findall(text):
        if out and re.fullmatch(rf"[{_P}]+\s*", t):
            out[-1] += t          # punctuation never starts a line
        else:
            out.append(t)
    return out


def _width(s: str) -> int:
    """Display width: CJK characters count double (42 columns = 21 Chinese characters, close to
    the usual 16-20 per line). Also used to share time, as a CJK character takes about as long
    to say as two or three Latin letters."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s.strip())


def _wrap(tokens, max_chars, max_lines):
    """Break tokens into at most ``max_lines`` lines of ``max_chars``, as balanced as possible and
    preferring a break after punctuation; None if they do not fit."""
    text = "".join(tokens).strip()
    if _width(text) <= max_chars:
        return [text]
    if max_lines < 2:
        return None
    best = None
    for k in range(1, len(tokens)):
        first = "".join(tokens[:k]).strip()
        if _width(first) > max_chars:
            break
        rest = _wrap(tokens[k:], max_chars, max_lines - 1)
        if rest is None:
            continue
        score = max(map(_width, [first] + rest)) - (6 if first[-1] in _PUNCT_ANY else 0)
        if best is None or score < best[0]:
            best = (score, [first] + rest)
    return best[1] if best else None


def _break_quality(token: str) -> int:
    """How good a cue break after ``token`` is: sentence end > clause end > between words >
    between two CJK characters."""
    t = token.rstrip()
    if t and t[-1] in _PUNCT_END:
        return 3
    if t and t[-1] in _PUNCT_ANY:
        return 2
    return 1 if token != t else 0


def _line_count(widths, spaces, max_chars):
    """Lines needed when filling greedily (which needs the fewest lines). ``widths``: the tokens'
    widths, ``spaces``: the width of the space after each (0 inside CJK text)."""
    lines, used = 1, 0
    for w, sp in zip(widths, spaces):
        if used and used + w > max_chars:
            lines, used = lines + 1, 0
        used += w + sp
    return lines


def _hard_split_long_tokens(tokens, max_chars):
    out = []
    for t in tokens:
        while _width(t) > max_chars:
            out.append(t[:max_chars])
            t = t[max_chars:]
        out.append(t)
    return out


MAX_PAUSE_IN_CUE_S = 1.0  # a cue never runs over a pause between words longer than this


def _pieces(seg, max_pause_s):
    """A segment as ``(text, start, end, word spans)`` pieces: with ``words`` (engine.alignment)
    one piece per run of words without a pause over ``max_pause_s``, timed by its words, each
    word's character span in the piece's text kept; without words the segment itself."""
    words = [w for w in seg.get("words") or () if str(w.get("word", "")).strip()]
    text = " ".join(str(seg.get("text", "")).split())
    if not words:
        return [(text, float(seg["start"]), float(seg["end"]), None)] if text else []
    runs, cur = [], [words[0]]
    for w in words[1:]:
        if float(w["start"]) - float(cur[-1]["end"]) > max_pause_s:
            runs.append(cur)
            cur = []
        cur.append(w)
    runs.append(cur)
    out = []
    for run in runs:
        piece, spans = "", []
        for w in run:
            word = " ".join(str(w["word"]).split())
            if piece and not (is_cjk_char(piece[-1]) and is_cjk_char(word[0])):
                piece += " "
            spans.append((len(piece), len(piece) + len(word), float(w["start"]), float(w["end"])))
            piece += word
        out.append((piece, float(run[0]["start"]), float(run[-1]["end"]), spans))
    return out


def shape_cues(segments, max_chars: int = 42, max_lines: int = 2,
               max_cue_s: float = 7.0, max_pause_s: float = MAX_PAUSE_IN_CUE_S) -> list[dict]:
    """Segments -> cues ``{"start", "end", "lines": [str, ...]}`` within the shaping limits.

    Each cue is grown while it fits (lines and duration); the break is then placed at the best
    point (sentence end, clause end, word boundary, the latest among equals) in the last two
    thirds of that span, so cues are neither cut mid-phrase nor left very short. A segment with
    ``words`` has its cues start at their first word and end at their last, and a pause between
    words over ``max_pause_s`` always ends a cue; without words, cue times are interpolated in
    proportion to text length."""
    cues = []
    for seg in _segments(segments):
        for text, start, end, spans in _pieces(seg, max_pause_s):
            cues += _shape_piece(text, start, end, spans, max_chars, max_lines, max_cue_s,
                                  seg.get("speaker"))
    return cues


def _shape_piece(text, start, end, spans, max_chars, max_lines, max_cue_s, speaker=None):
    tokens = _hard_split_long_tokens(_tokens(text), max_chars)
    widths = [_width(t) for t in tokens]
    spaces = [len(t) - len(t.rstrip()) for t in tokens]
    offsets = [0]
    for t in tokens:
        offsets.append(offsets[-1] + len(t))
    total = sum(widths) or 1
    per_col = (end - start) / total        # seconds per column of text

    def word_time(char: int, edge: int) -> float:
        """The start (edge 0) or end (edge 1) of the word holding character ``char``."""
        for k, (a, b, t0, t1) in enumerate(spans):
            if char < b:
                if char >= a:
                    return t1 if edge else t0
                # between words: the next one starts, the one before ends
                return spans[k - 1][3] if edge and k else t0
        return spans[-1][3]

    cues = []
    i, done, t0 = 0, 0, start
    while i < len(tokens):
        j, w = i + 1, widths[i]             # tokens[i:j] fits; grow it while it still does
        while (j < len(tokens) and (w + widths[j]) * per_col <= max_cue_s
               and _line_count(widths[i:j + 1], spaces[i:j + 1], max_chars) <= max_lines):
            w += widths[j]
            j += 1
        if j < len(tokens):
            lo = i + max(1, (j - i + 1) // 3)
            j = max(range(lo, j + 1), key=lambda k: (_break_quality(tokens[k - 1]), k))
        done += sum(widths[i:j])
        t1 = end if j == len(tokens) else start + per_col * done
        if spans:
            t0 = word_time(offsets[i], 0)
            last = offsets[j] - 1 - (len(tokens[j - 1]) - len(tokens[j - 1].rstrip()))
            t1 = max(t0, word_time(max(last, offsets[i]), 1))
        lines = _wrap(tokens[i:j], max_chars, max_lines) or ["".join(tokens[i:j]).strip()]
        cues.append({"start": round(t0, 3), "end": round(t1, 3), "lines": lines,
                     **({"speaker": speaker} if speaker else {})})
        i, t0 = j, t1
    return cues


# --------------------------------------------------------------------------- writers

def _segments(segments):
    if isinstance(segments, dict):
        return segments.get("segments") or []
    return list(segments)


def _timestamp(t: float, sep: str) -> str:
    ms = max(0, int(round(t * 1000)))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_txt(segments) -> str:
    """One line per segment."""
    return "".join(" ".join(str(s.get("text", "")).split()) + "\n"
                   for s in _segments(segments) if str(s.get("text", "")).strip())


def to_srt(segments, max_chars: int = 42, max_lines: int = 2, max_cue_s: float = 7.0) -> str:
    out = []
    for i, c in enumerate(shape_cues(segments, max_chars, max_lines, max_cue_s), 1):
        lines = list(c["lines"])
        if c.get("speaker"):          # who speaks, as subtitlers write it: "A: text"
            lines[0] = f"{c['speaker']}: {lines[0]}"
        out.append(f"{i}\n{_timestamp(c['start'], ',')} --> {_timestamp(c['end'], ',')}\n"
                   + "\n".join(map(_srt_text, lines)) + "\n")
    return "\n".join(out)


def _vtt_escape(s: str) -> str:
    # WebVTT cue text: & and < start entities/tags; escaping > also rules out "-->".
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _srt_text(s: str) -> str:
    return s.replace("-->", "->")   # a cue line with "-->" reads as a timing line


def to_vtt(segments, max_chars: int = 42, max_lines: int = 2, max_cue_s: float = 7.0) -> str:
    out = ["WEBVTT\n"]
    for c in shape_cues(segments, max_chars, max_lines, max_cue_s):
        voice = f"<v {_vtt_escape(c['speaker'])}>" if c.get("speaker") else ""   # WebVTT voice span
        out.append(f"{_timestamp(c['start'], '.')} --> {_timestamp(c['end'], '.')}\n" + voice
                   + "\n".join(_vtt_escape(line) for line in c["lines"]) + "\n")
    return "\n".join(out)


def to_tsv(segments) -> str:
    """``start<TAB>end<TAB>text`` with times in seconds (3 decimals) and a header line (a
    speaker column where speakers were asked for). A segment with ``words`` gives a row per run
    of words without a pause over 1 s, timed by its first and last word."""
    segs = _segments(segments)
    who = any("speaker" in s for s in segs)
    rows = ["start	end	speaker	text" if who else "start	end	text"]
    for s in segs:
        spk = f"{s.get('speaker') or ''}	" if who else ""
        if not s.get("words"):
            text = " ".join(str(s.get("text", "")).split())
            rows.append(f"{float(s['start']):.3f}	{float(s['end']):.3f}	{spk}{text}")
            continue
        for text, start, end, _ in _pieces(s, MAX_PAUSE_IN_CUE_S):
            rows.append(f"{start:.3f}	{end:.3f}	{spk}{text}")
    return "\n".join(rows) + "\n"


def to_json(segments, language=None, **extra) -> str:
    """``{"text": joined text, "segments": [...], **extra}``; a result dict is written as is."""
    if isinstance(segments, dict):
        doc = dict(segments)
        doc.setdefault("text", join_texts([s.get("text", "") for s in doc.get("segments") or []],
                                          language))
    else:
        segs = _segments(segments)
        doc = {"text": join_texts([s.get("text", "") for s in segs], language), "segments": segs}
    doc.update(extra)
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
