"""What live sessions (``/v1/realtime``, the page's Live tab among its clients) share: a cap on
live sessions, and the decode function each ``engine.live.LiveSession`` calls.

* ``LiveSessions`` counts open sessions against ``--live-sessions``; a session over the cap is
  refused with a clear message, and ``/health`` reports the count. Each open session holds a
  slot (0 to the cap - 1, the bounded label of its audio counters in ``/metrics``): the audio it
  received and the audio it dropped (``engine.live.LiveSession.accounting``), read when scraped.
* ``decode_function(holder, settings, sessions)`` is the session's ``decode``: it goes through
  the shared model path (``holder.transcribe``, the same call and options as the offline API) at
  the scheduler's "live" priority (ahead of files and long-audio segments), with the session as
  its caller (fairness between sessions). Finals of all sessions come before partials: while any
  session's final is waiting for the model or running, partials are declined (``SkipPartial``;
  the session asks again later), so a busy server drops partial updates rather than letting
  finals fall behind.
* Benchmarks only: ``FUNASR_NANO_BENCH_TOKENS_PER_SECOND=4`` makes every live decode produce
  exactly ``ceil(4 x seconds of audio)`` tokens (end-of-text is ignored, as
  ``bench/benchmark.py`` forces its token count), so a random-weight checkpoint, which never
  stops by itself, costs what real speech would. Never set it in production.
"""
from __future__ import annotations

import logging
import os
import contextlib
import threading

from engine.audio import SAMPLE_RATE
from engine.live import SkipPartial, tokens_for

from .request_id import new_id

log = logging.getLogger("funasr_nano.app")

BENCH_TOKENS_ENV = "FUNASR_NANO_BENCH_TOKENS_PER_SECOND"


class TooManySessions(RuntimeError):
    pass


class LiveSessions:
    """A counter of open live sessions with a cap, and of the finals waiting for the model
    (thread-safe). /metrics' ``live_sessions`` reads ``active``."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self._open = 0
        self._slots: dict[int, object] = {}      # slot -> its open LiveSession, or None
        self._closed_seconds = {s: [0.0, 0.0] for s in range(self.limit)}  # received, dropped
        self._finals = 0          # finals waiting for the model or running, all sessions
        self._lock = threading.Lock()

    @property
    def active(self) -> int:
        return self._open

    def acquire(self) -> int:
        """Take a slot (its number) or raise ``TooManySessions``."""
        with self._lock:
            if self._open >= self.limit:
                raise TooManySessions(f"this server takes at most {self.limit} live session"
                                      f"{'s' if self.limit != 1 else ''} at a time; try again "
                                      "later")
            self._open += 1
            slot = next(s for s in range(self.limit) if s not in self._slots)
            self._slots[slot] = None
            log.info("live session opened (%d of %d)", self._open, self.limit)
            return slot

    def attach(self, slot: int, session) -> None:
        """The engine LiveSession in ``slot``: /metrics counts its audio."""
        with self._lock:
            if slot in self._slots:
                self._slots[slot] = session

    def audio_seconds(self) -> dict[int, tuple[float, float]]:
        """slot -> (seconds received, seconds dropped), closed and open sessions together."""
        with self._lock:
            out = {s: list(v) for s, v in self._closed_seconds.items()}
            open_now = dict(self._slots)
        for slot, session in open_now.items():
            if session is not None:
                received, dropped = _seconds_of(session)
                out[slot][0] += received
                out[slot][1] += dropped
        return {s: (v[0], v[1]) for s, v in out.items()}

    @property
    def finals_waiting(self) -> int:
        return self._finals

    @contextlib.contextmanager
    def final(self):
        with self._lock:
            self._finals += 1
        try:
            yield
        finally:
            with self._lock:
                self._finals -= 1

    def release(self, slot: int | None = None) -> None:
        with self._lock:
            session = self._slots.pop(slot, None) if slot is not None else None
            if session is not None:
                received, dropped = _seconds_of(session)
                self._closed_seconds[slot][0] += received
                self._closed_seconds[slot][1] += dropped
                if dropped:
                    log.warning("live session in slot %d dropped %.2f s of audio", slot,
                                dropped)
            self._open = max(0, self._open - 1)
            log.info("live session closed (%d of %d open)", self._open, self.limit)


def _seconds_of(session) -> tuple[float, float]:
    a = session.accounting()
    return a["received"] / a["sample_rate"], a["dropped"] / a["sample_rate"]


def _seconds(inputs) -> float:
    longest = 0.0
    for x in inputs:
        samples, rate = x if isinstance(x, tuple) else (x, SAMPLE_RATE)
        longest = max(longest, len(samples) / float(rate))
    return longest


def decode_function(holder, settings, sessions: LiveSessions | None = None):
    """``decode(inputs, kind, **options)`` for ``engine.live.LiveSession`` through ``holder``."""
    raw = os.environ.get(BENCH_TOKENS_ENV, "").strip()
    per_second = float(raw) if raw else None
    if per_second:
        log.warning("%s=%s: live decodes are forced to that many tokens per second of audio "
                    "(benchmarks only)", BENCH_TOKENS_ENV, raw)

    caller = "live-" + new_id()  # one per session: decode_function runs per session

    def decode(inputs, kind, **options):
        options.setdefault("max_new_tokens", settings.max_new_tokens)
        priority = options.pop("priority", "live")
        if per_second:
            options.update(ignore_eos=True,
                           max_new_tokens=tokens_for(_seconds(inputs), per_second))
        if sessions is None:
            return holder.transcribe(list(inputs), priority=priority, caller=caller, **options)
        if kind == "partial":
            if sessions.finals_waiting:
                raise SkipPartial()
            return holder.transcribe(list(inputs), priority=priority, caller=caller, **options)
        with sessions.final():
            return holder.transcribe(list(inputs), priority=priority, caller=caller, **options)

    return decode
