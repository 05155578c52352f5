"""What the live paths (``/v1/realtime`` and the page's Live tab) share: a cap on live sessions,
and the decode function each ``engine.live.LiveSession`` calls.

* ``LiveSessions`` counts open sessions of both paths against ``--live-sessions``; a session over
  the cap is refused with a clear message, and ``/health`` reports the count.
* ``decode_function(holder, settings)`` is the session's ``decode``: it goes through the shared
  model path (``holder.transcribe``, the same call and options as the offline API) at the
  scheduler's "live" priority (ahead of files and long-audio segments), with the session as its
  caller (fairness between sessions).
* Benchmarks only: ``FUNASR_NANO_BENCH_TOKENS_PER_SECOND=4`` makes every live decode produce
  exactly ``ceil(4 x seconds of audio)`` tokens (end-of-text is ignored, as
  ``bench/benchmark.py`` forces its token count), so a random-weight checkpoint, which never
  stops by itself, costs what real speech would. Never set it in production.
"""
from __future__ import annotations

import logging
import os
import threading

from engine.audio import SAMPLE_RATE
from engine.live import tokens_for

from .request_id import new_id

log = logging.getLogger("funasr_nano.app")

BENCH_TOKENS_ENV = "FUNASR_NANO_BENCH_TOKENS_PER_SECOND"


class TooManySessions(RuntimeError):
    pass


class LiveSessions:
    """A counter of open live sessions with a cap (thread-safe)."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self._open = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> int:
        return self._open

    def acquire(self) -> None:
        with self._lock:
            if self._open >= self.limit:
                raise TooManySessions(f"this server takes at most {self.limit} live session"
                                      f"{'s' if self.limit != 1 else ''} at a time; try again "
                                      "later")
            self._open += 1
            log.info("live session opened (%d of %d)", self._open, self.limit)

    def release(self) -> None:
        with self._lock:
            self._open = max(0, self._open - 1)
            log.info("live session closed (%d of %d open)", self._open, self.limit)


def _seconds(inputs) -> float:
    longest = 0.0
    for x in inputs:
        samples, rate = x if isinstance(x, tuple) else (x, SAMPLE_RATE)
        longest = max(longest, len(samples) / float(rate))
    return longest


def decode_function(holder, settings):
    """``decode(inputs, kind, **options)`` for ``engine.live.LiveSession`` through ``holder``."""
    raw = os.environ.get(BENCH_TOKENS_ENV, "").strip()
    per_second = float(raw) if raw else None
    if per_second:
        log.warning("%s=%s: live decodes are forced to that many tokens per second of audio "
                    "(benchmarks only)", BENCH_TOKENS_ENV, raw)

    caller = "live-" + new_id()  # one per session: decode_function runs per session

    def decode(inputs, kind, **options):
        options.setdefault("max_new_tokens", settings.max_new_tokens)
        if per_second:
            options.update(ignore_eos=True,
                           max_new_tokens=tokens_for(_seconds(inputs), per_second))
        return holder.transcribe(list(inputs), priority="live", caller=caller, **options)

    return decode
