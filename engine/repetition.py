"""The repetition guard: a decoder that loops ("juo juo juo ...", "4444...", one sentence over and
over) is stopped as soon as the loop is plain, and its text keeps one copy of what repeated.

Greedy decoding of an attention decoder falls into such loops on audio it does not understand
(noise, music, a language it was not trained on, a demo model on real speech) and then runs to
the token limit: 512 wasted decode steps and a transcript of garbage. Two checks, both cheap:

* during decoding (``loop_at``, on token ids): the generated tail is one token more than
  ``MAX_RUN`` (8) times in a row, or a unit of 2..``MAX_UNIT`` tokens back to back at least
  ``MIN_COPIES`` (4) times and over at least ``MIN_LOOP_TOKENS`` (16) tokens. Real speech does
  not say a word nine times in a row, or a phrase four times over sixteen tokens. Digits are
  single tokens, so a number trips it only with nine equal digits in a row (a billion written
  without separators would be cut: the price of catching "4444..." at once);
* after decoding (``looks_looping``, on words, or characters for CJK): a text whose one n-gram
  occurs 4 or more times and covers half of it, typically a run that hit the token limit.

What the guard keeps: the text before the loop and one copy of the loop (``collapse_repeats``
on text). Long-form transcription (engine.longform) also re-decodes such segments in halves.
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np

MAX_RUN = 8            # one token more than this many times in a row is a loop
MIN_COPIES = 4         # a repeated unit of 2+ tokens: at least this many copies ...
MIN_LOOP_TOKENS = 16   # ... covering at least this many tokens
MAX_UNIT = 32          # the longest repeating unit looked for, in tokens


def loop_at(tokens: list[int]) -> int | None:
    """Where the loop at the end of ``tokens`` has its second copy (so ``tokens[:i]`` keeps the
    text before it and one copy), or None when the tail does not loop. Called once per new
    token, so only loops that end at the last token are looked for."""
    n_tok = len(tokens)
    if n_tok <= MAX_RUN:
        return None
    last = tokens[-1]
    for n in range(1, min(MAX_UNIT, n_tok // 2) + 1):
        if tokens[-1 - n] != last:          # cheap reject: the unit must repeat at its end
            continue
        need = MAX_RUN + 1 if n == 1 else max(MIN_COPIES, -(-MIN_LOOP_TOKENS // n))
        if need * n > n_tok:
            continue
        unit = tokens[-n:]
        copies = 1
        while copies < need and tokens[-(copies + 1) * n:-copies * n] == unit:
            copies += 1
        if copies >= need:
            # walk back over earlier copies too, so the cut keeps exactly one
            while (copies + 1) * n <= n_tok and \
                    tokens[n_tok - (copies + 1) * n:n_tok - copies * n] == unit:
                copies += 1
            return n_tok - (copies - 1) * n
    return None


def longest_run(items) -> int:
    """The longest run of one item in a row (tokens, words)."""
    best = run = 0
    prev = object()
    for x in items:
        run = run + 1 if x == prev else 1
        best = max(best, run)
        prev = x
    return best


# --------------------------------------------------------------------------- text

_UNIT = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff]|[^\s\u2e80-\u9fff\uf900-\ufaff]+")


def units(text: str) -> list[tuple[str, int, int]]:
    """Comparable units with their spans in ``text``: CJK characters one by one, other words
    whole; case and punctuation are ignored."""
    out = []
    for m in _UNIT.finditer(text):
        key = re.sub(r"[\W_]+", "", m.group().lower())
        if key:
            out.append((key, m.start(), m.end()))
    return out


def _top_ngram_coverage(keys, n):
    grams = Counter(tuple(keys[i:i + n]) for i in range(len(keys) - n + 1))
    gram, count = grams.most_common(1)[0]
    covered = np.zeros(len(keys), bool)
    for i in range(len(keys) - n + 1):
        if tuple(keys[i:i + n]) == gram:
            covered[i:i + n] = True
    return gram, count, covered.mean()


def looks_looping(text: str, min_units: int = 12, coverage: float = 0.5, max_n: int = 12) -> bool:
    """True if one n-gram (n <= ``max_n`` words, or characters for CJK) occurs at least 4 times
    and covers at least ``coverage`` of a text of at least ``min_units`` units."""
    keys = [k for k, _, _ in units(text)]
    if len(keys) < min_units:
        return False
    for n in range(1, min(max_n, len(keys) // 4) + 1):
        _, count, cov = _top_ngram_coverage(keys, n)
        if count >= 4 and cov >= coverage:
            return True
    return False


def collapse_repeats(text: str, min_repeats: int = 3, max_n: int = 30) -> str:
    """Remove back-to-back repeats (3 or more copies of the same n-gram) down to one copy."""
    for _ in range(20):   # each pass removes one run; loops rarely have more than a few
        found = units(text)
        keys = [k for k, _, _ in found]
        best = None   # (covered units, i, n, copies)
        for n in range(1, min(max_n, len(keys) // min_repeats) + 1):
            i = 0
            while i + 2 * n <= len(keys):
                copies = 1
                while keys[i + copies * n:i + (copies + 1) * n] == keys[i:i + n]:
                    copies += 1
                if copies >= min_repeats and (best is None or copies * n > best[0]):
                    best = (copies * n, i, n, copies)
                i += max(1, (copies - 1) * n) if copies > 1 else 1
        if best is None:
            return text
        _, i, n, copies = best
        cut_from = found[i + n - 1][2]                  # end of the first copy
        cut_to = found[i + copies * n - 1][2]           # end of the last copy
        text = text[:cut_from] + text[cut_to:]
    return text
