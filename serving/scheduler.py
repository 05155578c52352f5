"""One scheduler between every caller and the model.

The API, the page, long-audio segments and live sessions all call ``transcribe(...)`` (the
arguments and result dicts of ``FunASRNano.transcribe``, plus ``priority`` and ``caller``) from
their own threads; it decodes the audio there, queues one sequence per input and blocks until
that caller's results are ready. One thread, the only one that runs the model, decides what runs
next, between every two decode steps:

* **Continuous batching.** Newcomers are encoded and prefilled into free rows of a running
  ``engine.batching.BatchDecoder`` and decode with the sequences already there; finished ones
  leave at once. A request that arrives while others decode starts after the current step (or
  prefill), never after the whole batch; a lone request runs at once, alone.
* **Priorities.** ``live`` (partials and finals of live sessions) is admitted first, then
  ``interactive`` (a file someone waits for: the API, the page), then ``bulk`` (segments of long
  recordings). Bulk work is not admitted while live or interactive work waits or decodes (except
  that one bulk sequence is always kept going), and while latency work decodes at most
  ``batch_size // 4`` (at least one) bulk sequences share each step; the others keep their cache
  rows and wait. So a 10 s clip sent during an hour-long file decodes nearly as fast as alone.
* **Fairness.** Within a priority, the next sequence comes from the caller with the fewest
  sequences decoding (then first come, first served): one caller's 200 segments never hold back
  another caller's single clip.
* **Requests sent together start together.** When nothing is decoding, the first newcomer
  waits ``GATHER_SECONDS`` (20 ms) for others before its prefill: eight clients that send at
  once (their uploads parsed over a few ms) share one prefill instead of one alone and seven
  after it. Once a decode runs there is no wait: newcomers join between steps.
* **Bounded stalls.** A prefill stops every decode for its duration, so one takes at most
  ``max_prefill_seconds`` of audio (bulk: ``BULK_PREFILL_SECONDS``, about one long segment).
* **Model swaps between requests.** ``replace_model`` (the holder's switch onto the CPU kernels)
  stops admitting, lets the sequences in flight finish on the old model, then swaps.
* **Failures stay with their request.** A prefill or step that raises is retried one sequence at
  a time; the sequence that still fails gets ``error``, the others carry on, and so does the
  thread.
* **Memory back when idle.** ``IDLE_RELEASE_SECONDS`` (10 s) without work after some, the
  activation memory the allocator keeps for the next prefill is given back to the OS
  (``engine.allocator.release_idle_memory``).

``batch_size`` is the most sequences one decode step takes of each kind (latency, bulk); the
decoder has room for both, so bulk rows can wait while a full batch of latency work decodes.

``SerialScheduler`` is the old path, one ``model.transcribe`` call at a time in the caller's
thread, kept for comparisons (``--scheduler serial``, bench/load.py).
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.allocator import release_idle_memory
from engine.language_id import SPOKEN_TOKENS, label_all, preload
from engine.languages import model_language_name

from .request_id import peek as current_request_id

if TYPE_CHECKING:   # the declared interfaces (engine/decoder.py); torch is not imported here
    from engine.decoder import Decoder, DecodingModel

log = logging.getLogger("funasr_nano.scheduler")

PRIORITIES = ("live", "interactive", "bulk")
LIVE, INTERACTIVE, BULK = range(3)
from engine import SAMPLE_RATE  # noqa: E402
PREFILL_SECONDS = 80.0       # audio per prefill for live and interactive work (8 x 10 s clips)
BULK_PREFILL_SECONDS = 30.0  # for bulk work: about one long-audio segment
GATHER_SECONDS = 0.02        # an idle scheduler's wait for companions of its first newcomer
# idle this long after work: the activation memory the allocator keeps for reuse is given back
# (engine/allocator.py; ~0.5 GB after a batch of the full model, ~30 ms to return)
IDLE_RELEASE_SECONDS = 10.0


def priority_rank(priority: str) -> int:
    try:
        return PRIORITIES.index(priority)
    except ValueError:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, "
                         f"not {priority!r}") from None


class _NoMetrics:
    """The hooks serving.metrics.Metrics implements, doing nothing."""

    def __getattr__(self, name):
        return lambda *a, **k: None


_call_ids = itertools.count(1)


def _new_caller() -> str:
    return f"call-{next(_call_ids)}"


@dataclass(eq=False)
class _Request:
    results: list[dict]
    priority: str
    caller: str
    request_id: str | None
    pending: int
    submitted: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(eq=False)
class _Work:
    """One input of a request: queued, then decoding, then done."""
    request: _Request
    index: int
    wave: object
    prompt: tuple
    max_new_tokens: int
    ignore_eos: bool
    repetition_guard: bool
    rank: int
    order: int
    queued_at: float = field(default_factory=time.perf_counter)
    prepared: object = None
    seq: object = None
    words: bool = False  # word timings (engine.alignment) when it finishes
    speech: object = None  # the input's speech regions, where the caller has them (long audio)

    @property
    def seconds(self) -> float:
        return len(self.wave) / SAMPLE_RATE if self.wave is not None else 0.0

    @property
    def key(self) -> str:
        return self.request.results[self.index]["key"]


class Scheduler:
    def __init__(self, model: DecodingModel, batch_size: int = 8, metrics=None,
                 max_prefill_seconds: float = PREFILL_SECONDS,
                 gather_seconds: float = GATHER_SECONDS,
                 idle_release_seconds: float | None = IDLE_RELEASE_SECONDS):
        self.model = model
        self.batch_size = max(1, int(batch_size))
        self.rows = 2 * self.batch_size  # a full batch of each kind: latency and bulk
        self.max_prefill_seconds = max_prefill_seconds
        self.gather_seconds = gather_seconds
        self.idle_release_seconds = idle_release_seconds
        self._worked = False  # work done since the memory was last given back
        self.metrics = metrics or _NoMetrics()
        self._cv = threading.Condition()
        # per priority: caller -> their queued work, oldest first
        self._waiting: list[OrderedDict[str, deque[_Work]]] = [OrderedDict() for _ in PRIORITIES]
        self._resident: list[_Work] = []  # in the decoder, in order of admission
        self._decoder: Decoder | None = None
        self._next_model = None  # replace_model's, taken once nothing decodes
        self._thread: threading.Thread | None = None
        self._closed = False
        self._order = itertools.count()

    # ------------------------------------------------------------------ callers
    def transcribe(self, inputs, language: str | None = None, itn: bool = True, hotwords=(),
                   batch_size: int | None = None, max_new_tokens: int = 512, keys=None,
                   ignore_eos: bool = False, repetition_guard: bool = True,
                   priority: str = "interactive", caller: str | None = None,
                   words: bool = False, speech=None) -> list[dict]:
        """``FunASRNano.transcribe`` through the shared batch: one dict per input, in order;
        blocks until all of them are done. ``priority``: "live", "interactive" or "bulk";
        ``caller``: who is asking, for fairness (default: this call alone). ``batch_size`` is
        accepted for compatibility and ignored: the scheduler batches across callers.
        ``words``, ``speech``: as ``FunASRNano.transcribe``'s."""
        rank = priority_rank(priority)
        model = self.model
        prompt = model.prompt_ids(language, itn, hotwords)  # bad language or hotwords: raises
        results, waves = model.load_inputs(inputs, language, keys)  # in the caller's thread
        if model_language_name(language) is None and rank != LIVE:
            preload()   # the language classifier loads while this decodes
        if not waves:
            return results
        req = _Request(results, priority, caller or _new_caller(), current_request_id(),
                       len(waves))
        with self._cv:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            for i, wave in waves.items():
                work = _Work(req, i, wave, prompt, int(max_new_tokens), bool(ignore_eos),
                             bool(repetition_guard), rank, next(self._order), words=words,
                             speech=None if speech is None else speech[i])
                self._waiting[rank].setdefault(req.caller, deque()).append(work)
            self._ensure_thread()
            self._cv.notify_all()
        req.done.wait()
        # none given: the one heard. Not for live partials, many a second: the live paths
        # label their finished utterances themselves (serving.realtime)
        if model_language_name(language) is None and rank != LIVE:
            def respeak(ws):
                return [r["text"] for r in self.transcribe(
                    ws, None, False, hotwords, max_new_tokens=min(max_new_tokens, SPOKEN_TOKENS),
                    repetition_guard=repetition_guard, priority=priority, caller=req.caller)]
            label_all(results, waves, itn, None if ignore_eos else respeak)
        self.metrics.request_done(priority, time.perf_counter() - req.submitted,
                                  sum(r["duration"] for r in results if not r.get("error")))
        return results

    def stats(self) -> dict:
        """Sequences waiting and decoding, by priority (for /health and /metrics)."""
        with self._cv:
            waiting = {p: sum(len(q) for q in self._waiting[r].values())
                       for r, p in enumerate(PRIORITIES)}
            running = {p: sum(1 for w in self._resident if w.rank == r)
                       for r, p in enumerate(PRIORITIES)}
        return {"mode": "batch", "batch_size": self.batch_size, "waiting": waiting,
                "running": running}

    def replace_model(self, model) -> None:
        """Serve with ``model`` from now on: sequences already decoding finish on the current
        one, newcomers wait for them (a few steps), then the swap."""
        with self._cv:
            self._next_model = model
            self._cv.notify_all()

    def _swap_if_due(self) -> None:
        """Under the lock: the swap replace_model asked for, once nothing decodes."""
        if self._next_model is not None and not self._resident:
            self.model, self._next_model, self._decoder = self._next_model, None, None
            import gc
            gc.collect()  # the old copy goes now
            from engine.checkpoint import release_freed_memory
            release_freed_memory()
            log.info("the scheduler now serves the new model")

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread; requests still queued or decoding get an error."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._fail_all("the server is shutting down")

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="model-scheduler",
                                            daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ the model thread
    def _run(self) -> None:
        import torch
        try:
            with torch.inference_mode():
                while True:
                    with self._cv:
                        while not (self._closed or self._resident or self._any_waiting()
                                   or self._next_model is not None):
                            if not self._worked or self.idle_release_seconds is None:
                                self._cv.wait()
                            elif not self._cv.wait(self.idle_release_seconds):
                                self._worked = False  # idle that long: memory back to the OS
                                release_idle_memory()
                        if self._closed:
                            return
                        if not self._resident and self.gather_seconds > 0:
                            self._gather()
                        self._swap_if_due()
                        group = self._admit() if self._next_model is None else []
                    if group:
                        self._worked = True
                        self._start(group)
                    batch = self._select()
                    if batch:
                        self._step(batch)
        except BaseException:  # noqa: BLE001 - a bug here must not leave callers waiting forever
            log.exception("the scheduler stopped")
            raise
        finally:
            self._fail_all("the server is shutting down" if self._closed
                           else "the scheduler stopped")

    def _gather(self) -> None:
        """Under the lock, nothing decoding: give requests sent together with the first one
        ``gather_seconds`` to arrive (a lone request loses that much, about 1% of a 10 s clip's
        latency; eight together save a prefill)."""
        deadline = time.perf_counter() + self.gather_seconds
        while not self._closed and (left := deadline - time.perf_counter()) > 0:
            self._cv.wait(left)

    def _any_waiting(self) -> bool:
        return any(q for per_caller in self._waiting for q in per_caller.values())

    def _admit(self) -> list[_Work]:
        """The next prefill group (under the lock): by priority, then the caller with the
        fewest sequences decoding, then arrival; within the free rows, the per-kind batch
        limits and the prefill budget."""
        free = self.rows - len(self._resident)
        if free <= 0:
            return []
        decoding: dict[str, int] = {}
        latency = bulk = 0
        for w in self._resident:
            decoding[w.request.caller] = decoding.get(w.request.caller, 0) + 1
            if w.rank == BULK:
                bulk += 1
            else:
                latency += 1
        group: list[_Work] = []
        seconds = 0.0
        while len(group) < free:
            latency_waiting = any(self._waiting[LIVE].values()) or \
                any(self._waiting[INTERACTIVE].values())
            rank = None
            if latency_waiting and latency < self.batch_size:
                rank = LIVE if any(self._waiting[LIVE].values()) else INTERACTIVE
            elif not latency_waiting and any(self._waiting[BULK].values()) and \
                    bulk < self.batch_size and (latency == 0 or bulk == 0):
                rank = BULK
            if rank is None:
                break
            callers = self._waiting[rank]
            name = min((c for c, q in callers.items() if q),
                       key=lambda c: (decoding.get(c, 0), callers[c][0].order))
            work = callers[name][0]
            budget = BULK_PREFILL_SECONDS if rank == BULK else self.max_prefill_seconds
            if group and seconds + work.seconds > budget:
                break
            callers[name].popleft()
            if not callers[name]:
                del callers[name]
            group.append(work)
            seconds += work.seconds
            decoding[name] = decoding.get(name, 0) + 1
            if rank == BULK:
                bulk += 1
            else:
                latency += 1
        return group

    def _select(self) -> list[_Work]:
        """The sequences of the next step: every live and interactive one and, beside them, at
        most a quarter batch of bulk ones (at least one); bulk alone: a full batch."""
        latency = [w for w in self._resident if w.rank != BULK]
        bulk = [w for w in self._resident if w.rank == BULK]
        if not latency:
            return bulk[:self.batch_size]
        share = max(1, self.batch_size // 4) if bulk else 0
        return latency[:self.batch_size] + bulk[:share]

    def _decoder_or_new(self):
        if self._decoder is None:
            self._decoder = self.model.new_decoder(self.rows)
        return self._decoder

    def _start(self, group: list[_Work]) -> None:
        """Encode and prefill ``group`` together; one by one if that fails."""
        now = time.perf_counter()
        t0 = now
        try:
            prepared = self.model.prepare([w.wave for w in group], [w.prompt for w in group])
            seqs = self._decoder_or_new().add([p.embeds for p in prepared],
                                              [w.max_new_tokens for w in group],
                                              [w.ignore_eos for w in group], tags=group,
                                              stop_loops=[w.repetition_guard for w in group],
                                              align=[w.words for w in group])
        except Exception as e:  # noqa: BLE001 - isolate the input that fails
            self._isolate(group, self._start, e)
            return
        took = time.perf_counter() - t0
        self.metrics.prefilled(len(group), took)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("prefill of %d sequence(s), %.1f s of audio, in %.3f s; waited %s s; "
                      "%d decoding", len(group), sum(w.seconds for w in group), took,
                      ", ".join(f"{now - w.queued_at:.3f}" for w in group), len(self._resident))
        for w, p, s in zip(group, prepared, seqs):
            self.metrics.admitted(PRIORITIES[w.rank], now - w.queued_at)
            w.prepared, w.seq, w.wave = p, s, None
            if s.done:
                self._complete(w)
            else:
                with self._cv:
                    self._resident.append(w)

    def _isolate(self, works: list[_Work], retry, error: Exception, release: bool = False) -> None:
        """A prefill or step over ``works`` raised ``error`` (called in its ``except``): each
        is tried again alone; one that was alone gets the error (its row freed with
        ``release``) and the others carry on."""
        if len(works) > 1:
            for w in works:
                retry([w])
            return
        [w] = works
        log.exception("decoding %s failed", w.key, extra={"request_id": w.request.request_id})
        if release:
            self._decoder.release(w.seq)
        self._fail(w, error)

    def _step(self, batch: list[_Work]) -> None:
        """One decode step for ``batch``; one sequence at a time if it fails."""
        t0 = time.perf_counter()
        try:
            finished = self._decoder.step([w.seq for w in batch])
        except Exception as e:  # noqa: BLE001 - isolate the sequence that fails
            self._isolate(batch, self._step, e, release=True)
            return
        self.metrics.stepped(len(batch), time.perf_counter() - t0)
        for s in finished:
            self._complete(s.tag)

    # ------------------------------------------------------------------ results
    def _leave(self, w: _Work) -> None:
        with self._cv:
            if w in self._resident:
                self._resident.remove(w)

    def _complete(self, w: _Work) -> None:
        self._leave(w)
        try:
            result = self.model.finish(w.prepared, w.seq.generation(), w.repetition_guard,
                                       w.ignore_eos,
                                       **({"words": True, "speech": w.speech} if w.words else {}))
        except Exception as e:  # noqa: BLE001
            log.exception("decoding %s failed", w.key, extra={"request_id": w.request.request_id})
            self._fail(w, e)
            return
        self.metrics.finished(PRIORITIES[w.rank], result.get("finish_reason") or "length")
        self._deliver(w, result)

    def _fail(self, w: _Work, error: BaseException) -> None:
        self._leave(w)
        self.metrics.finished(PRIORITIES[w.rank], "error")
        message = self.model.decode_error(w.key, error)
        self._deliver(w, {"error": message})

    def _deliver(self, w: _Work, result: dict) -> None:
        req = w.request
        req.results[w.index].update(result)
        w.prepared = w.seq = w.wave = None
        with self._cv:
            req.pending -= 1
            last = req.pending == 0
        if last:
            req.done.set()

    def _fail_all(self, reason: str) -> None:
        with self._cv:
            works = [w for per_caller in self._waiting for q in per_caller.values() for w in q]
            works += self._resident
            for per_caller in self._waiting:
                per_caller.clear()
            self._resident = []
            self._decoder = None
        for w in works:
            self.metrics.finished(PRIORITIES[w.rank], "error")
            self._deliver(w, {"error": f"{w.key}: {reason}"})


class SerialScheduler:
    """The old path: one ``model.transcribe`` call at a time, in the caller's thread, each
    call's inputs decoded as their own batch. Same interface as Scheduler."""

    def __init__(self, model: DecodingModel, batch_size: int = 8, metrics=None):
        self.model = model
        self.batch_size = max(1, int(batch_size))
        self.metrics = metrics or _NoMetrics()
        self._lock = threading.Lock()    # the model: one call at a time
        self._counts = threading.Lock()  # the counts below
        self._waiting = [0] * len(PRIORITIES)
        self._running = [0] * len(PRIORITIES)

    def transcribe(self, inputs, language=None, itn=True, hotwords=(), batch_size=None,
                   max_new_tokens=512, keys=None, ignore_eos=False, repetition_guard=True,
                   priority="interactive", caller=None, words=False, speech=None) -> list[dict]:
        rank = priority_rank(priority)
        t0 = time.perf_counter()
        kwargs = dict(language=language, itn=itn, hotwords=hotwords, keys=keys,
                      batch_size=batch_size or self.batch_size, max_new_tokens=max_new_tokens)
        if ignore_eos:
            kwargs["ignore_eos"] = True
        if not repetition_guard:
            kwargs["repetition_guard"] = False
        if rank == LIVE:   # live partials: no language detection (as Scheduler)
            kwargs["detect_language"] = False
        if words:
            kwargs["words"] = True
            if speech is not None:
                kwargs["speech"] = speech
        with self._counts:
            self._waiting[rank] += 1
        with self._lock:
            with self._counts:
                self._waiting[rank] -= 1
                self._running[rank] += 1
            try:
                self.metrics.admitted(priority, time.perf_counter() - t0)
                results = self.model.transcribe(inputs, **kwargs)
            finally:
                with self._counts:
                    self._running[rank] -= 1
        self.metrics.request_done(priority, time.perf_counter() - t0,
                                  sum(r.get("duration", 0.0) for r in results
                                      if not r.get("error")))
        return results

    def replace_model(self, model) -> None:
        with self._lock:  # after the call in progress
            self.model = model

    def stats(self) -> dict:
        return {"mode": "serial", "batch_size": self.batch_size,
                "waiting": dict(zip(PRIORITIES, self._waiting)),
                "running": dict(zip(PRIORITIES, self._running))}

    def close(self, timeout: float = 5.0) -> None:
        pass


def make_scheduler(model, mode: str = "batch", batch_size: int = 8, metrics=None):
    """``mode`` "batch" (the scheduler) or "serial" (the old path). A model without the
    continuous-batching part of ``engine.decoder.DecodingModel`` (prepare / new_decoder /
    finish) runs serially."""
    if mode not in ("batch", "serial"):
        raise ValueError(f"scheduler mode must be batch or serial, not {mode!r}")
    batching = all(callable(getattr(model, n, None))
                   for n in ("load_inputs", "prompt_ids", "prepare", "new_decoder", "finish"))
    if mode == "batch" and batching:
        return Scheduler(model, batch_size, metrics)
    return SerialScheduler(model, batch_size, metrics)
