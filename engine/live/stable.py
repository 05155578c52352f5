"""The stable part of a growing transcript, so that partial text does not flicker.

Each partial re-decodes the whole open utterance, and the model may revise its last words as more
audio arrives. A word is shown as *stable* once two consecutive hypotheses agree on it and on
everything before it (the "local agreement" rule of streaming Whisper systems); what is stable is
never taken back, so clients can append it (OpenAI's ``delta`` events) while the rest of the
newest hypothesis is shown as tentative. Agreement is counted in words for languages written with
spaces and in characters for Chinese and Japanese (``engine.longform.subtitles.is_cjk_char``).
The final transcript replaces all of it.
"""
from __future__ import annotations

from ..longform.subtitles import is_cjk_char


def _boundary(s: str, k: int) -> bool:
    """Whether position ``k`` of ``s`` separates two units (never the end of ``s``: the last
    word of a hypothesis may still grow)."""
    if k == 0:
        return True
    if k >= len(s):
        return False
    before, after = s[k - 1], s[k]
    return (before.isspace() or after.isspace() or is_cjk_char(before) or is_cjk_char(after))


def agreed_prefix(a: str, b: str) -> str:
    """The longest common prefix of ``a`` and ``b`` made of whole units in both. The last unit
    of a hypothesis is never agreed, even when the two are equal: it may still grow."""
    n = 0
    limit = min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    while n > 0 and not (_boundary(a, n) and _boundary(b, n)):
        n -= 1
    return a[:n]


class StablePrefix:
    """Feed hypotheses in order; ``update`` returns the newly stable text (possibly "").

    A hypothesis of less than ``min_audio_s`` of audio is shown but never agreed with: on so
    little audio a model tends to guess a whole sentence, and may guess the same one twice."""

    def __init__(self, min_audio_s: float = 1.0):
        self.stable = ""
        self.min_audio_s = min_audio_s
        self._last: str | None = None

    def update(self, hypothesis: str, audio_s: float | None = None) -> str:
        hypothesis = hypothesis.lstrip()
        if audio_s is not None and audio_s < self.min_audio_s:
            return ""
        last, self._last = self._last, hypothesis
        if last is None:
            return ""
        agreed = agreed_prefix(last, hypothesis)
        if len(agreed) <= len(self.stable) or not agreed.startswith(self.stable):
            return ""   # a revision of shown text: keep what was shown, the final will fix it
        delta = agreed[len(self.stable):]
        self.stable = agreed
        return delta

    def finish(self, final: str) -> str:
        """The rest of ``final`` after the stable text, when the final extends it; else ""."""
        final = final.lstrip()
        if final.startswith(self.stable):
            delta = final[len(self.stable):]
            self.stable = final
            return delta
        return ""
