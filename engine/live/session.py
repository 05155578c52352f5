"""A live transcription session: PCM chunks in; speech events, partial and final text out.

    session = LiveSession(decode, LiveOptions(sample_rate=24000, language="en"), on_event=print)
    session.feed(int16_chunk)        # as audio arrives, any chunk size
    ...
    session.finish()                 # end of the stream: the open utterance's final, then return
    session.close()

``decode(inputs, kind, **options)`` runs the model: ``inputs`` is a list of ``(samples,
sample_rate)`` pairs, ``kind`` is ``"partial"`` or ``"final"``, ``options`` are
``FunASRNano.transcribe``'s (``language``, ``itn``, ``hotwords``, ``max_new_tokens``, and
``batch_size`` for long buffers); it returns one result dict per input, as
``FunASRNano.transcribe`` does, or, for a partial only, raises ``SkipPartial`` to decline it
(the model is busy with finals). The serving layer passes its shared model path here.

How it works:

* With turn detection (``LiveOptions.vad``), the audio goes through silero-vad in streaming mode
  (``engine.audio.vad.SpeechProbabilities``, after a streaming resampler to 16 kHz) and an
  ``Endpointer`` (``endpoint.py``) marks speech start, pauses, end and forced cuts. Without it,
  the client commits: everything since the previous commit is one utterance.
* One worker thread per session runs its decodes, one at a time: never more than one decode of a
  session is waiting for the model. Finals come first and in order and are never dropped.
  Partials re-decode the open utterance so far; one is due when ``partial_interval_s`` of new
  audio has arrived and the worker has rested ``partial_rest`` times the last partial's decode
  time (so a partial rarely delays the final); when the worker is behind, partials are skipped.
* Finals: when a pause begins, the worker decodes the utterance up to the audio seen so far at
  once, before the pause is long enough to end it. If the pause holds, that decode's span *is*
  the utterance (it ends inside the pause) and its text is the final; if speech resumes, it is
  thrown away. Either way a final decodes exactly the input samples of its span, at the input
  rate, through the same ``decode`` call as the offline API, so it equals the offline
  transcript of that span with the same options.
* Partial text is made stable with ``stable.StablePrefix`` (a word is stable once two
  partials of at least 1 s of speech agree on it and on all before it); each partial event
  carries the new stable text (``delta``) and the whole hypothesis.

Nothing a client sends is lost unseen: ``accounting()`` counts the samples received and where
each went. Every received sample is in exactly one of: an utterance that was committed (its final
decodes exactly those samples), the silence before or between utterances, the open utterance
(or, at the end, the audio after the last one), the audio the client cleared, or, without turn
detection only, a chunk cut at the full buffer (``dropped``, with an error to the client).

Times are seconds from the first sample fed to the session. Memory is bounded: the session keeps
the open utterance (at most ``vad.max_utterance_s``) plus the prefix padding, or, without turn
detection, at most ``max_buffer_s`` of uncommitted audio.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from .. import decoded_whole
from ..audio.vad import SAMPLE_RATE, WINDOW, SpeechProbabilities
from .endpoint import Boundary, Endpointer, VadOptions
from .stable import StablePrefix

log = logging.getLogger(__name__)


class SkipPartial(Exception):
    """Raised by ``decode`` for a partial it will not run now (the model is needed for finals);
    the session tries again after ``partial_interval_s``."""


class LiveError(ValueError):
    """A request the session cannot honour (empty commit, full buffer, bad options)."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


@dataclass
class LiveOptions:
    sample_rate: int = SAMPLE_RATE
    language: str | None = None
    itn: bool = True
    hotwords: list[str] = field(default_factory=list)
    max_new_tokens: int = 512
    batch_size: int = 8                      # for committed buffers over 30 s (engine.longform)
    vad: VadOptions | None = field(default_factory=VadOptions)   # None: the client commits
    partial_interval_s: float = 0.5          # new audio between two partials, at least
    first_partial_s: float = 0.3             # speech before the first partial of an utterance
    partial_rest: float = 1.0                # idle time after a partial, x its decode time
    max_buffer_s: float = 300.0              # uncommitted audio kept without turn detection
    words: bool = False                      # finals with word times (engine.alignment)

    def validate(self) -> None:
        if not 8000 <= int(self.sample_rate) <= 192000:
            raise ValueError(f"sample rate {self.sample_rate} Hz is not supported")
        if self.vad is not None:
            self.vad.validate()
        if self.partial_interval_s <= 0 or self.first_partial_s < 0 or self.partial_rest < 0:
            raise ValueError("partial timings must be positive")
        if self.max_buffer_s <= 0:
            raise ValueError("max_buffer_s must be positive")


@dataclass
class LiveEvent:
    """``kind``: "speech_started" (``start``), "speech_stopped" (``end``), "committed"
    (``start``, ``end``), "partial" (``text``: the hypothesis, ``delta``: its newly stable text,
    ``start``, ``end``: the audio it covers), "final" (``text``, ``delta``: what it adds to the
    stable text, ``start``, ``end``, ``result``: the decode's result dict), "failed" (``error``),
    "cleared". ``item`` numbers the utterances of the session from 0."""
    kind: str
    item: int | None = None
    start: float | None = None
    end: float | None = None
    text: str = ""
    delta: str = ""
    error: str | None = None
    result: dict | None = None
    decode_s: float | None = None
    words: list | None = None   # a final's words (options.words), seconds as start / end


@dataclass
class _Utterance:
    item: int
    start: int                                   # first input sample
    onset: int                                   # first sample of detected speech
    end: int | None = None                       # set when it ends
    stable: StablePrefix = field(default_factory=StablePrefix)
    partial_end: int = 0                         # audio end of the last partial started
    final_job: bool = False                      # its final is queued or running
    done: bool = False                           # final (or failure) sent
    candidates: dict = field(default_factory=dict)   # span end -> result dict, or None: running
    awaiting: int | None = None                  # ended: the candidate whose result is final


@dataclass
class _Job:
    kind: str                 # "final", "candidate" or "partial"
    utt: _Utterance
    start: int
    end: int
    audio: np.ndarray
    options: dict


class _Samples:
    """The input samples from an absolute index on, trimmed from the front as they age."""

    def __init__(self):
        self.base = 0          # absolute index of the first kept sample
        self.n = 0             # samples fed so far
        self._parts: deque[np.ndarray] = deque()
        self._dtype = None

    def append(self, x: np.ndarray) -> None:
        if self._dtype is None:
            self._dtype = x.dtype
        elif x.dtype != self._dtype:
            x = _convert(x, self._dtype)
        if len(x):
            self._parts.append(x)
            self.n += len(x)

    def slice(self, a: int, b: int) -> np.ndarray:
        a, b = max(a, self.base), min(b, self.n)
        if b <= a:
            return np.zeros(0, self._dtype or np.float32)
        self._compact()
        buf = self._parts[0]
        return buf[a - self.base:b - self.base].copy()

    def trim(self, before: int) -> None:
        """Forget samples before absolute index ``before``."""
        before = min(before, self.n)
        while self._parts and self.base + len(self._parts[0]) <= before:
            self.base += len(self._parts.popleft())
        if self._parts and before > self.base:
            self._parts[0] = self._parts[0][before - self.base:]
            self.base = before
        if not self._parts:
            self.base = max(self.base, before)

    def _compact(self) -> None:
        if len(self._parts) > 1:
            joined = np.concatenate(list(self._parts))
            self._parts.clear()
            self._parts.append(joined)


def _convert(x: np.ndarray, dtype) -> np.ndarray:
    if np.dtype(dtype) == np.int16:
        return np.clip(np.round(x.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    if x.dtype == np.int16:
        return (x.astype(np.float32) / 32768.0).astype(dtype)
    return x.astype(dtype)


def _as_samples(chunk) -> np.ndarray:
    x = np.asarray(chunk)
    if x.ndim != 1:
        raise LiveError(f"audio must be mono (1-D), not shape {x.shape}", "invalid_audio")
    if x.dtype == np.int16:
        return x
    if x.dtype.kind != "f":
        raise LiveError(f"audio must be int16 or float samples, not {x.dtype}", "invalid_audio")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise LiveError("audio contains NaN or infinite samples", "invalid_audio")
    return x


class LiveSession:
    """See the module docstring. ``feed``, ``commit``, ``clear``, ``configure``, ``finish`` and
    ``close`` are for one caller thread at a time; ``on_event`` is called from that thread and
    from the session's worker thread (never both at once) and must not block."""

    def __init__(self, decode: Callable[..., list[dict]], options: LiveOptions | None = None,
                 on_event: Callable[[LiveEvent], None] | None = None, name: str = "live"):
        self.options = options or LiveOptions()
        self.options.validate()
        self._decode = decode
        self._on_event = on_event or (lambda event: None)
        self._cond = threading.Condition()
        self._audio = _Samples()
        self._rate = int(self.options.sample_rate)
        self._vad: SpeechProbabilities | None = None
        self._endpointer: Endpointer | None = None
        self._resampler = None
        self._seen = 0                     # input samples the end-pointer has decided on
        self._windows = 0                  # VAD windows so far
        self._utt: _Utterance | None = None
        self._buffer_start = 0             # without VAD: first uncommitted sample
        self._finals: deque[_Job] = deque()
        self._busy: _Job | None = None
        self._rest_until = 0.0             # no partial before this (monotonic)
        self._items = 0
        self._closed = False
        # the ledger (see accounting()): samples up to _covered are accounted for
        self._received = self._in_utterances = self._silence = 0
        self._cleared = self._dropped = self._covered = 0
        self._setup_vad()
        self._worker = threading.Thread(target=self._work, name=f"{name}-decode", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ public
    @property
    def pending_finals(self) -> int:
        """Finals queued or running (a server bounds what one client may queue)."""
        busy = self._busy
        return len(self._finals) + (1 if busy is not None and busy.kind == "final" else 0)

    @property
    def seconds(self) -> float:
        """Audio fed so far."""
        return self._audio.n / self._rate

    def accounting(self) -> dict:
        """Samples (at ``options.sample_rate``) received and where they went: ``received ==
        in_utterances + silence + open + cleared + dropped`` at every moment."""
        with self._cond:
            return {"received": self._received, "in_utterances": self._in_utterances,
                    "silence": self._silence, "open": self._audio.n - self._covered,
                    "cleared": self._cleared, "dropped": self._dropped,
                    "sample_rate": self._rate}

    def feed(self, chunk) -> None:
        """Append samples (1-D int16, or float in [-1, 1]) at ``options.sample_rate``."""
        x = _as_samples(chunk)
        if self._closed:
            raise LiveError("the session is closed", "session_closed")
        with self._cond:
            self._received += len(x)
            if self.options.vad is None:
                room = int(self.options.max_buffer_s * self._rate) - (
                    self._audio.n - self._buffer_start)
                if room <= 0:
                    raise LiveError(f"the input audio buffer holds {self.options.max_buffer_s:g}"
                                    " s, its limit: commit or clear it", "input_audio_buffer_full")
                full = len(x) > room
                self._dropped += max(0, len(x) - room)
                x = x[:room]
            self._audio.append(x)
        if self.options.vad is None:
            with self._cond:
                self._seen = self._audio.n
                if self._utt is None and self._audio.n > self._buffer_start:
                    self._utt = self._new_utterance(self._buffer_start, self._buffer_start)
                self._cond.notify_all()
            if full:
                raise LiveError(f"the input audio buffer reached its limit of "
                                f"{self.options.max_buffer_s:g} s; the rest of this chunk was "
                                "dropped: commit or clear it", "input_audio_buffer_full")
            return
        probs = self._vad_push(x)
        with self._cond:
            self._on_windows(probs)

    def commit(self) -> int:
        """End the open utterance here (without turn detection: the whole buffer) and return
        its item number. ``LiveError`` when there is nothing to commit."""
        self._flush_vad(final=False)
        with self._cond:
            utt = self._utt
            if utt is None or self._audio.n <= utt.start:
                what = ("no speech since the last item" if self.options.vad is not None
                        else "the input audio buffer is empty")
                raise LiveError(f"nothing to commit: {what}", "input_audio_buffer_commit_empty")
            end = self._audio.n
            if self.options.vad is not None:
                self._emit(LiveEvent("speech_stopped", utt.item, end=self._t(end)))
            self._end_utterance(utt, end)
            if self.options.vad is None:
                self._buffer_start = end
            else:
                self._endpointer.reset()
            self._trim()
            return utt.item

    def clear(self) -> None:
        """Drop the uncommitted audio; the open utterance gets no final."""
        with self._cond:
            if self._utt is not None:
                self._utt.done = True
                self._utt = None
            self._buffer_start = self._audio.n
            self._cleared += self._audio.n - self._covered
            self._covered = self._audio.n
            if self._endpointer is not None:
                self._endpointer.reset()
            self._trim()
            self._emit(LiveEvent("cleared"))

    def configure(self, **changes) -> LiveOptions:
        """Change options between chunks (language, itn, hotwords, vad thresholds...). The
        sample rate and the turn-detection mode (on/off) only change while nothing is
        buffered."""
        with self._cond:
            new = replace(self.options, **changes)
            new.validate()
            rate_changed = int(new.sample_rate) != self._rate
            mode_changed = (new.vad is None) != (self.options.vad is None)
            if rate_changed and self._audio.n:
                raise LiveError("the sample rate cannot change once audio was sent",
                                "invalid_session_update")
            if mode_changed and (self._utt is not None or self._audio.n > self._buffer_start
                                 and self.options.vad is None):
                raise LiveError("turn detection cannot be switched on or off while audio is "
                                "buffered: commit or clear first", "invalid_session_update")
            self.options = new
            self._rate = int(new.sample_rate)
            if rate_changed or mode_changed:
                self._buffer_start = self._audio.n
                self._setup_vad()
            elif new.vad is not None:
                self._endpointer.options = new.vad
            return new

    def finish(self, timeout: float | None = None) -> bool:
        """End of the stream: the open utterance ends here; wait (up to ``timeout`` seconds)
        until every final is out. True when nothing is left to do."""
        self._flush_vad(final=True)
        try:
            self.commit()
        except LiveError:
            pass
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while (self._finals or self._busy is not None and self._busy.kind != "partial"
                   ) and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        """Stop: queued decodes are dropped, a running one finishes unseen."""
        with self._cond:
            self._closed = True
            self._finals.clear()
            self._cond.notify_all()

    # ------------------------------------------------------------------ VAD
    def _setup_vad(self) -> None:
        self._vad_origin = self._audio.n     # VAD windows count from here
        if self.options.vad is None:
            self._vad = self._endpointer = self._resampler = None
            return
        self._vad = SpeechProbabilities()
        self._endpointer = Endpointer(self.options.vad)
        self._windows = 0
        self._resampler = None
        if self._rate != SAMPLE_RATE:
            import soxr
            self._resampler = soxr.ResampleStream(self._rate, SAMPLE_RATE, 1, dtype="float32",
                                                  quality="HQ")

    def _vad_push(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        f = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x
        if self._resampler is not None:
            f = self._resampler.resample_chunk(f, last=last)
        probs = self._vad.push(f)
        if last:
            probs = np.concatenate([probs, self._vad.finish()])
        return probs

    def _flush_vad(self, final: bool) -> None:
        """Decide on the audio the VAD has not finished (end of stream only)."""
        if final and self._vad is not None:
            probs = self._vad_push(np.zeros(0, np.float32), last=True)
            with self._cond:
                self._on_windows(probs)

    def _sample_of(self, window: int) -> int:
        return self._vad_origin + int(round(window * WINDOW * self._rate / SAMPLE_RATE))

    def _ms(self, ms: float) -> int:
        return int(round(ms * self._rate / 1000.0))

    def _on_windows(self, probs: np.ndarray) -> None:
        """Under the lock: follow the end-pointer's decisions for these windows."""
        ep = self._endpointer
        for b in ep.push(probs):
            self._boundary(b)
        self._windows = ep.n
        self._seen = min(self._audio.n, self._sample_of(ep.n))
        self._trim()
        self._cond.notify_all()

    def _boundary(self, b: Boundary) -> None:
        vad = self.options.vad
        if b.kind == "onset":
            onset = self._sample_of(b.window)
            prev_end = self._buffer_start
            start = max(prev_end, onset - self._ms(vad.prefix_ms), self._audio.base)
            self._utt = self._new_utterance(start, onset)
            self._emit(LiveEvent("speech_started", self._utt.item, start=self._t(start)))
        elif self._utt is None:
            return
        elif b.kind == "pause":
            pass   # the worker sees the pause through the end-pointer and decodes a candidate
        elif b.kind == "resume":
            self._utt.candidates.clear()
        elif b.kind == "end":
            utt = self._utt
            end = min(self._sample_of(b.window) + self._ms(vad.suffix_ms), self._audio.n)
            # The latest candidate decoded inside this pause is the utterance (see docstring).
            ready = [e for e in utt.candidates if e >= end]
            if ready:
                end = max(ready)
            self._emit(LiveEvent("speech_stopped", utt.item, end=self._t(end)))
            self._end_utterance(utt, end)
        elif b.kind == "cut":
            utt = self._utt
            cut = self._sample_of(b.window)
            self._emit(LiveEvent("speech_stopped", utt.item, end=self._t(cut)))
            utt.candidates.clear()
            self._end_utterance(utt, cut)
            self._utt = self._new_utterance(cut, cut)
            self._emit(LiveEvent("speech_started", self._utt.item, start=self._t(cut)))

    # ------------------------------------------------------------------ utterances
    def _new_utterance(self, start: int, onset: int) -> _Utterance:
        self._silence += max(0, start - self._covered)
        self._covered = max(self._covered, start)
        utt = _Utterance(self._items, start, onset, partial_end=start)
        self._items += 1
        return utt

    def _end_utterance(self, utt: _Utterance, end: int) -> None:
        """Under the lock: ``utt`` ends at ``end``; its final comes from a candidate with that
        span, or from a decode queued now."""
        utt.end = end
        self._in_utterances += max(0, end - max(utt.start, self._covered))
        self._covered = max(self._covered, end)
        self._emit(LiveEvent("committed", utt.item, start=self._t(utt.start), end=self._t(end)))
        if self._utt is utt:
            self._utt = None
        self._buffer_start = max(self._buffer_start, end)
        if end in utt.candidates:
            utt.awaiting = end
            if utt.candidates[end] is not None:
                self._send_final(utt, utt.candidates[end], None)
            return
        utt.candidates.clear()
        utt.final_job = True
        self._finals.append(self._job("final", utt, utt.start, end))
        self._cond.notify_all()

    def _job(self, kind: str, utt: _Utterance, start: int, end: int) -> _Job:
        o = self.options
        options = {"language": o.language, "itn": o.itn, "hotwords": list(o.hotwords),
                   "max_new_tokens": o.max_new_tokens, "batch_size": o.batch_size}
        if o.words and kind != "partial":  # a candidate may become the final
            options["words"] = True
        return _Job(kind, utt, start, end, self._audio.slice(start, end), options)

    def _trim(self) -> None:
        keep = self._audio.n
        if self._utt is not None:
            keep = self._utt.start
        elif self.options.vad is not None:
            # Enough history for the next onset's prefix (onsets are confirmed late) and the
            # resampler's delay.
            keep = self._seen - self._ms(self.options.vad.prefix_ms + self.options.vad
                                         .min_speech_ms + 200)
        else:
            keep = self._buffer_start
        for job in ([self._busy] if self._busy else []) + list(self._finals):
            keep = min(keep, job.start)
        self._audio.trim(max(0, keep))

    def _t(self, sample: int) -> float:
        return sample / self._rate

    def _emit(self, event: LiveEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # noqa: BLE001 - a broken listener must not stop the session
            log.exception("live event listener failed")

    # ------------------------------------------------------------------ the worker
    def _next_job(self) -> tuple[_Job | None, float | None]:
        """Under the lock: the next decode, or (None, seconds to wait)."""
        if self._finals:
            return self._finals.popleft(), None
        utt = self._utt
        if utt is None or utt.done:
            return None, None
        ep = self._endpointer
        if ep is not None and ep.in_speech and ep.speech_end is not None:
            # A pause: decode the utterance up to here once (a candidate final), no partials.
            pause_start = self._sample_of(ep.speech_end)
            need = pause_start + self._ms(self.options.vad.suffix_ms)
            end = self._seen
            if end >= need and not any(e >= need for e in utt.candidates):
                utt.candidates[end] = None
                return self._job("candidate", utt, utt.start, end), None
            return None, None
        o = self.options
        end = self._seen
        if end - utt.onset < o.first_partial_s * self._rate:
            return None, None
        if end - utt.partial_end < o.partial_interval_s * self._rate and utt.partial_end > \
                utt.start:
            return None, None
        if self.options.vad is None and _is_long(end - utt.start, self._rate):
            return None, None   # a long buffer is decoded at commit only
        wait = self._rest_until - time.monotonic()
        if wait > 0:
            return None, wait
        utt.partial_end = end
        return self._job("partial", utt, utt.start, end), None

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    job, wait = self._next_job()
                    if job is not None:
                        break
                    self._cond.wait(wait)
                self._busy = job
            t0 = time.monotonic()
            try:
                result, error = self._run(job)
            except SkipPartial:
                result = error = None
            took = time.monotonic() - t0
            with self._cond:
                self._busy = None
                if result is None and error is None:     # skipped: try later
                    self._rest_until = time.monotonic() + self.options.partial_interval_s
                elif not self._closed:
                    self._handle(job, result, error, took)
                    if job.kind == "partial":
                        self._rest_until = time.monotonic() + self.options.partial_rest * took
                self._trim()
                self._cond.notify_all()

    def _run(self, job: _Job) -> tuple[dict | None, str | None]:
        inputs = [(job.audio, self._rate)]
        kind = "partial" if job.kind == "partial" else "final"
        try:
            if _is_long(len(job.audio), self._rate):
                from ..longform import transcribe_long
                res = transcribe_long(_DecodeAsModel(self._decode, kind), inputs[0],
                                      **job.options)
                res.setdefault("text", "")
                return res, res.get("error")
            [res] = self._decode(inputs, kind, **job.options)
            return res, res.get("error")
        except SkipPartial:
            if job.kind != "partial":
                return None, "the decode function declined a final"
            raise
        except Exception as e:  # noqa: BLE001 - reported as this item's failure
            log.warning("live %s decode failed: %s", job.kind, e)
            return None, str(e) or type(e).__name__

    def _handle(self, job: _Job, result: dict | None, error: str | None, took: float) -> None:
        utt = job.utt
        if utt.done:
            return
        if job.kind == "final":
            self._send_final(utt, result, error, took)
        elif job.kind == "candidate":
            if job.end not in utt.candidates:
                return                      # speech resumed: thrown away
            if error:
                # Retried as a plain final if the pause holds.
                del utt.candidates[job.end]
                if utt.awaiting == job.end:
                    utt.awaiting = None
                    utt.final_job = True
                    self._finals.append(self._job("final", utt, utt.start, job.end))
                return
            utt.candidates[job.end] = result
            if utt.awaiting == job.end:
                self._send_final(utt, result, None, took)
            elif utt.end is None:
                self._send_partial(utt, job, result, took)
        elif job.kind == "partial" and not error:
            self._send_partial(utt, job, result, took)

    def _send_partial(self, utt: _Utterance, job: _Job, result: dict, took: float) -> None:
        text = (result.get("text") or "").strip()
        if not text:
            return
        delta = utt.stable.update(text, self._t(job.end - utt.onset))
        self._emit(LiveEvent("partial", utt.item, start=self._t(job.start), end=self._t(job.end),
                             text=text, delta=delta, decode_s=took))

    def _send_final(self, utt: _Utterance, result: dict | None, error: str | None,
                    took: float | None = None) -> None:
        utt.done = True
        if error or result is None:
            self._emit(LiveEvent("failed", utt.item, start=self._t(utt.start),
                                 end=self._t(utt.end), error=error or "decoding failed"))
            return
        text = (result.get("text") or "").strip()
        words = None
        if result.get("words") is not None:  # from the utterance's start to the session's
            t0 = self._t(utt.start)
            words = [{**w, "start": round(w["start"] + t0, 3), "end": round(w["end"] + t0, 3)}
                     for w in result["words"]]
        self._emit(LiveEvent("final", utt.item, start=self._t(utt.start), end=self._t(utt.end),
                             text=text, delta=utt.stable.finish(text), result=result,
                             decode_s=took, words=words))


class _DecodeAsModel:
    """``decode`` with ``FunASRNano.transcribe``'s signature, for engine.longform."""

    def __init__(self, decode, kind: str):
        self._decode, self._kind = decode, kind

    def transcribe(self, inputs, **options):
        return self._decode(list(inputs), self._kind, **options)


def _is_long(n: int, rate: int) -> bool:
    """Whether ``n`` samples at ``rate`` go to engine.longform, by the offline API's rule
    (engine.decoded_whole, once resampled to 16 kHz, lengths as ``resample`` makes them)."""
    n16 = n if rate == SAMPLE_RATE else int(np.ceil(n * (float(SAMPLE_RATE) / rate)))
    return not decoded_whole(n16 / SAMPLE_RATE)


def tokens_for(seconds: float, per_second: float) -> int:
    """A realistic token count for ``seconds`` of speech (benchmarks force it)."""
    return max(1, math.ceil(seconds * per_second))
