"""A normalised view of a transcript that keeps, for every character, where it came from.

Two views:
  ``watch``  case-folded (NFKC), punctuation as spaces, number words as digits, no spaces
             between digits: what watch terms are matched against (terms go through the same);
  ``pii``    case kept, punctuation kept, number words as digits: what the personal-data
             detectors read (e-mail needs its ``@`` and dots, phone numbers their ``+``).

``View.span(a, b)`` maps a match in the view back to the original text, so hits report and
redact the words the transcript really holds (``four one five`` where ITN was off).
"""
from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

import ahocorasick

from . import numwords


def no_space_script(ch: str) -> bool:
    """Scripts written without spaces between words (CJK, kana, Thai) and hangul (whose
    particles attach to the word): a term there needs no word boundary."""
    o = ord(ch)
    return (0x0E00 <= o <= 0x0E7F or 0x3040 <= o <= 0x30FF or 0x3400 <= o <= 0x9FFF
            or 0xF900 <= o <= 0xFAFF or 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF
            or 0x20000 <= o <= 0x2FFFF)


def spaced_word_char(ch: str) -> bool:
    return (ch.isalnum() or unicodedata.category(ch).startswith("M")) and not no_space_script(ch)


@dataclass
class View:
    text: str
    src: list[tuple[int, int]]     # per view character: [start, end) in the original

    def span(self, a: int, b: int) -> tuple[int, int]:
        return self.src[a][0], self.src[b - 1][1]


_PIECES: dict[str, dict[str, str]] = {"watch": {}, "pii": {}}


def _pieces(ch: str, mode: str) -> str:
    """What one original character becomes in the view (cached: NFKC and case folding per
    character are the cost of loading a long watch list)."""
    cache = _PIECES[mode]
    got = cache.get(ch)
    if got is None:
        d = numwords.digit_value(ch)
        if d is not None:
            got = d
        else:
            got = unicodedata.normalize("NFKC", ch)
            if mode == "watch":
                got = "".join(c if (c.isalnum() or unicodedata.category(c).startswith("M"))
                              else " " for c in got.casefold())
            else:
                got = "".join(" " if c.isspace() else c for c in got)
        if len(cache) < 100_000:
            cache[ch] = got
    return got


def _chars(text: str, mode: str) -> tuple[list[str], list[tuple[int, int]]]:
    out, src = [], []
    last_space = True
    for i, ch in enumerate(text):
        for c in _pieces(ch, mode):
            if c == " ":
                if last_space:
                    continue
                last_space = True
            else:
                last_space = False
            out.append(c)
            src.append((i, i + 1))
    while out and out[-1] == " ":
        out.pop()
        src.pop()
    return out, src


@functools.lru_cache(maxsize=64)
def _number_automaton(langs: tuple[str, ...]):
    auto = ahocorasick.Automaton()
    n = 0
    for lang in langs:
        for phrase, value in numwords.lexicon(lang).items():
            if phrase and phrase not in auto:
                auto.add_word(phrase, (len(phrase), value))
                n += 1
    if not n:
        return None
    auto.make_automaton()
    return auto


def _lower_same_length(chars: list[str]) -> str:
    out = []
    for c in chars:
        lc = c.lower()
        lc = lc if len(lc) == 1 else c
        out.append(" " if lc in "-," else lc)
    return "".join(out)


def _number_matches(key: str, langs: tuple[str, ...]) -> list[tuple[int, int, str]]:
    """(start, end, digits) of the number words in ``key`` (lower case, one char per char)."""
    found: list[tuple[int, int, str]] = []
    free = bool(langs) and all(lang in numwords.NO_SPACES for lang in langs)
    auto = _number_automaton(langs)
    if auto is not None:
        lex = [(end + 1 - ln, end + 1, str(v)) for end, (ln, v) in auto.iter_long(key)]
        # a number word must be a word (or a chain of them in one compound), not part of one
        chains, cur = [], []
        for m in lex:
            if cur and cur[-1][1] == m[0]:
                cur.append(m)
            else:
                if cur:
                    chains.append(cur)
                cur = [m]
        if cur:
            chains.append(cur)
        for chain in chains:
            a, b = chain[0][0], chain[-1][1]
            if free or ((a == 0 or not spaced_word_char(key[a - 1]))
                        and (b == len(key) or not spaced_word_char(key[b]))):
                found.extend(chain)
    cjk = any(lang in numwords.CJK for lang in langs)
    ko = "ko" in langs
    if cjk or ko:
        i = 0
        while i < len(key):
            ch = key[i]
            if cjk and ch in numwords.CJK_NUMERAL_CHARS:
                j = i
                while j < len(key) and key[j] in numwords.CJK_NUMERAL_CHARS:
                    j += 1
            elif ko and ch in numwords.KO_NUMERAL_CHARS and (i == 0 or key[i - 1] == " "):
                j = i
                while j < len(key) and key[j] in numwords.KO_NUMERAL_CHARS:
                    j += 1
                if j < len(key) and key[j] != " ":   # 공일공 but not 이번 / 사과
                    i = j
                    continue
            else:
                i += 1
                continue
            digits = numwords.parse_cjk(key[i:j])
            if digits is not None:
                found.append((i, j, digits))
            i = j
    found.sort()
    kept, end = [], -1
    for m in found:
        if m[0] >= end:
            kept.append(m)
            end = m[1]
    return kept


def build(text: str, langs: tuple[str, ...], mode: str = "watch") -> View:
    chars, src = _chars(text, mode)
    key = _lower_same_length(chars)
    matches = _number_matches(key, langs)
    out: list[str] = []
    osrc: list[tuple[int, int]] = []
    pos = 0
    for k, (a, b, digits) in enumerate(matches):
        # digit words in a row ("four one five") are one number: drop the spaces between
        # them; larger number words keep theirs ("forty one fifty five" is "41 55"), so the
        # phone detector sees the groups the speaker said
        if out and pos == a - 1 and key[a - 1] == " " and k and matches[k - 1][1] == pos \
                and len(digits) == 1 and len(matches[k - 1][2]) == 1:
            pass
        else:
            out.extend(chars[pos:a])
            osrc.extend(src[pos:a])
        span = (src[a][0], src[b - 1][1])
        out.extend(digits)
        osrc.extend([span] * len(digits))
        pos = b
    out.extend(chars[pos:])
    osrc.extend(src[pos:])
    if mode == "watch":
        # "415 555 0132" and "4155550132" are the same number; "内部 资料" (a term cut
        # across two segments, joined by a space) is "内部资料"
        keep = [i for i, c in enumerate(out)
                if not (c == " " and 0 < i < len(out) - 1
                        and ((out[i - 1].isdigit() and out[i + 1].isdigit())
                             or (no_space_script(out[i - 1]) and no_space_script(out[i + 1]))))]
        out = [out[i] for i in keep]
        osrc = [osrc[i] for i in keep]
    return View("".join(out), osrc)


_NS = "\u0e00-\u0e7f\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af\u1100-\u11ff" \
      "\U00020000-\U0002ffff"
_JOIN = re.compile(rf"(?<=\d) (?=\d)|(?<=[{_NS}]) (?=[{_NS}])")


def watch_key(text: str, langs: tuple[str, ...]) -> str:
    """``build(text, langs, "watch").text`` without the offsets: how a watch term is compiled
    (about 5x faster, which is most of loading a 10,000-term list)."""
    s = " ".join("".join(_pieces(ch, "watch") for ch in text).split())
    matches = _number_matches(s, langs)
    if matches:
        parts, pos = [], 0
        for a, b, digits in matches:
            parts.append(s[pos:a])
            parts.append(digits)
            pos = b
        parts.append(s[pos:])
        s = "".join(parts)
    return _JOIN.sub("", s)
