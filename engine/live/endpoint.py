"""Streaming end-pointing: silero-vad probabilities in, utterance boundaries out.

Fed one speech probability per 32 ms window (``engine.audio.vad.SpeechProbabilities``), an
``Endpointer`` reports, in window indices:

* ``onset``: speech confirmed. Speech *starts* at the first window >= ``threshold``; it is
  confirmed once ``min_speech_ms`` of windows followed without a window under the lower
  threshold (``threshold - 0.15``, silero's hysteresis), so clicks and breaths start nothing.
* ``pause``: a run of windows under the lower threshold began at ``speech_end`` and has lasted
  ``suffix_ms``: the utterance *may* be over. The session starts the final's decode now,
  speculatively, instead of waiting for the whole ``silence_ms``.
* ``resume``: speech came back before the pause reached ``silence_ms``.
* ``end``: the pause reached ``silence_ms`` (OpenAI's ``silence_duration_ms``): the utterance
  ended at ``speech_end``. Past ``soft_limit_s`` a pause of ``soft_pause_ms`` is enough, so long
  monologues are cut at their next breath instead of growing towards the model's 30 s.
* ``cut``: the utterance reached ``max_utterance_s`` without any such pause; it is cut at the
  quietest window of its second half (``engine.audio.vad.quietest_point``, as the offline
  segmenter does) and speech goes on in a new utterance from there.

The rules are those of ``engine.audio.vad.segments_from_probabilities`` (start at the threshold,
end after a silence under the lower threshold), decided as the windows arrive.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..audio.vad import NEG_THRESHOLD, THRESHOLD, WINDOW_S, quietest_point

WINDOW_MS = WINDOW_S * 1000.0


@dataclass
class VadOptions:
    threshold: float = THRESHOLD      # OpenAI server_vad "threshold"
    silence_ms: int = 500             # OpenAI "silence_duration_ms": a pause this long ends speech
    prefix_ms: int = 300              # OpenAI "prefix_padding_ms": audio kept before the onset
    suffix_ms: int = 64               # audio kept after the last speech window
    min_speech_ms: int = 96           # shorter bursts are not speech
    soft_limit_s: float = 15.0        # past this, a shorter pause ends the utterance ...
    soft_pause_ms: int = 200          # ... this one
    max_utterance_s: float = 30.0     # the model is trained on utterances up to ~30 s

    def validate(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1, not {self.threshold}")
        for name in ("silence_ms", "prefix_ms", "suffix_ms", "min_speech_ms", "soft_pause_ms"):
            value = getattr(self, name)
            if not 0 <= value <= 10_000:
                raise ValueError(f"{name} must be between 0 and 10000 ms, not {value}")
        if not 2.0 <= self.max_utterance_s <= 30.0:
            raise ValueError("max_utterance_s must be between 2 and 30 s")
        if not 1.0 <= self.soft_limit_s <= self.max_utterance_s:
            raise ValueError("soft_limit_s must be between 1 s and max_utterance_s")

    def windows(self, ms: float) -> int:
        return max(1, round(ms / WINDOW_MS))


@dataclass(frozen=True)
class Boundary:
    kind: str        # "onset", "pause", "resume", "end" or "cut"
    window: int      # onset: first speech window; pause/end: first silent window; cut: the cut
    at: int          # the window being processed when this was decided


class Endpointer:
    """Decides utterance boundaries window by window (see the module docstring).

    Window ``k`` covers 16 kHz samples ``[512 k, 512 (k + 1))``. The utterance's padded span,
    which the limits count, starts ``prefix_ms`` before its onset (never before the previous
    utterance's padded end) and ends ``suffix_ms`` after its last speech window.
    """

    def __init__(self, options: VadOptions | None = None):
        self.options = options or VadOptions()
        self.options.validate()
        self.n = 0                            # windows seen
        self.in_speech = False
        self.start: int | None = None         # first window of the open utterance's padded span
        self._prev_end = 0                    # padded end of the previous utterance
        self._candidate: int | None = None    # first window of unconfirmed speech
        self._silence_from: int | None = None
        self._paused = False
        self._base = 0                        # window index of _probs[0]
        self._probs: list[float] = []         # recent windows (all of the open utterance)

    @property
    def speech_end(self) -> int | None:
        """First silent window of the pause in progress, if any."""
        return self._silence_from

    def reset(self) -> None:
        """Forget the open utterance (the client cleared the buffer)."""
        self.in_speech = False
        self.start = self._candidate = self._silence_from = None
        self._paused = False
        self._prev_end = self.n

    def push(self, probs) -> list[Boundary]:
        out: list[Boundary] = []
        for p in np.asarray(probs, dtype=np.float32).tolist():
            out += self._step(p)
        return out

    def _step(self, p: float) -> list[Boundary]:
        o = self.options
        i = self.n
        self.n += 1
        self._probs.append(p)
        neg = max(o.threshold - (THRESHOLD - NEG_THRESHOLD), 0.01)
        if not self.in_speech:
            out: list[Boundary] = []
            if self._candidate is not None and p < neg:
                self._candidate = None
            elif self._candidate is None and p >= o.threshold:
                self._candidate = i
            if self._candidate is not None and i - self._candidate + 1 >= o.windows(
                    o.min_speech_ms):
                out = self._confirm(i)
            self._trim()
            return out

        out = []
        if p >= o.threshold:
            if self._paused:
                out.append(Boundary("resume", self._silence_from, i))
            self._silence_from, self._paused = None, False
        elif p < neg:
            if self._silence_from is None:
                self._silence_from = i
            silent = i - self._silence_from + 1
            if not self._paused and silent >= o.windows(o.suffix_ms):
                self._paused = True
                out.append(Boundary("pause", self._silence_from, i))
            long_enough = i + 1 - self.start >= round(o.soft_limit_s / WINDOW_S)
            if silent >= o.windows(o.soft_pause_ms if long_enough else o.silence_ms):
                if not self._paused:   # a pause shorter than the suffix ends it at once
                    out.append(Boundary("pause", self._silence_from, i))
                out.append(Boundary("end", self._silence_from, i))
                self._prev_end = self._silence_from + round(o.suffix_ms / WINDOW_MS)
                self.in_speech = False
                self.start = self._silence_from = None
                self._paused = False
                self._trim()
                return out
        # The padded span (the suffix included) stays within max_utterance_s.
        limit = int((o.max_utterance_s * 1000.0 - o.suffix_ms) // WINDOW_MS)
        if i + 1 - self.start >= limit:
            lo = self.start + limit // 2     # the second half, as the offline segmenter cuts
            probs = np.asarray(self._probs, dtype=np.float32)
            cut = self._base + quietest_point(probs, lo - self._base, i + 1 - self._base)
            cut = min(max(cut, lo + 1), i)
            out.append(Boundary("cut", cut, i))
            self.start = self._prev_end = cut
            if self._silence_from is not None and self._silence_from < cut:
                self._silence_from, self._paused = None, False
            self._trim()
        return out

    def _confirm(self, i: int) -> list[Boundary]:
        o = self.options
        onset = self._candidate
        self.in_speech = True
        self.start = max(self._prev_end, onset - round(o.prefix_ms / WINDOW_MS), 0)
        self._candidate = self._silence_from = None
        self._paused = False
        return [Boundary("onset", onset, i)]

    def _trim(self) -> None:
        """Keep the open utterance's windows, or (between utterances) just enough history for
        the next one's prefix."""
        o = self.options
        keep_from = self.start if self.in_speech else self.n - (
            round(o.prefix_ms / WINDOW_MS) + o.windows(o.min_speech_ms) + 2)
        drop = keep_from - self._base
        if drop > 256:
            del self._probs[:drop]
            self._base += drop
