"""From uploaded files to result rows: checks, decoding, batching, long-form dispatch, timing.

The page and the HTTP API both call ``transcribe_items``, once per request (the request is the
``caller`` the scheduler is fair between); the CLI and corpus runs (serving.corpus.transcribe_files,
on a model rather than the scheduler) route and order their files by the same ``route`` and
``decode_routed``. Per input:

1. the duration is probed (cheap, from the header) and checked against ``max_audio_seconds``;
2. audio to be decoded whole (``engine.decoded_whole``: up to 30 s) is decoded here and goes
   to the scheduler (``holder.transcribe``, priority "interactive") ``batch_size`` at a time;
3. longer audio goes to ``engine.longform.transcribe_long`` (VAD segments, streamed from the
   file), which sends the scheduler a batch of segments at a time at priority "bulk", so a
   short request sent meanwhile is not held up behind them.

The header may lie or say nothing, so the limits hold while decoding too: the short path stops
decoding just past its ceiling (``SHORT_CEILING_S``) and hands such a file to the long path,
which stops at ``max_audio_seconds`` (HTTP 413). Memory is one short clip or one streamed block.

A bad input gives its own row an error and never stops the others. Every row is a dict:
``file, duration, language, language_name, processing_time, text, error, error_kind, segments,
finish_reason`` (language: the ISO code given; none given, the one heard with
``language_probability`` (engine.language_id), or ``"auto"`` when the text tells nothing)
with ``error_kind`` one of None, "audio" (cannot be decoded: HTTP 400), "too_long" (HTTP 413),
"model" (decoding failed: HTTP 500). ``segments`` is ``[{start, end, text}]``: the long-form
segments, or one segment 0..duration for a single utterance.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from engine import MAX_UTTERANCE_S, decoded_whole
from engine.audio import SAMPLE_RATE, AudioError, AudioTooLong, load_audio, probe_duration
from engine.frontend import MIN_SECONDS, too_short
from engine.language_id import language_fields
from engine.languages import Language, describe_language, resolve_language
from engine.prompt import MAX_HOTWORD_CHARS, HotwordsError, check_hotwords

from . import request_id
from .diarized import transcribe_with_speakers

log = logging.getLogger("funasr_nano.app")

SHORT_CEILING_S = MAX_UTTERANCE_S + 1.0   # decoded in memory up to here, else streamed


class RequestError(ValueError):
    """A problem with what the client sent; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param


@dataclass
class Options:
    language: str | None = None          # as the user gave it: code, name, "auto" or None
    itn: bool = True
    hotwords: list[str] = field(default_factory=list)
    # hotwords offered on the user's behalf (watch terms, most severe first): added after
    # ``hotwords`` as far as the caps allow, where the model was trained with hotword prompts
    watch_hotwords: list[str] = field(default_factory=list)
    max_new_tokens: int = 512
    batch_size: int = 8
    max_audio_seconds: float | None = None
    speakers: object | None = None       # engine.speakers.options.SpeakerRequest: diarize
    words: bool = False                  # word timings (engine.alignment): rows get ``words``


def parse_language(value) -> Language | None:
    """None for automatic; RequestError (400) for a name the model does not know."""
    try:
        return resolve_language(value)
    except ValueError as e:
        raise RequestError(str(e), 400, "language") from e


def parse_hotwords(value) -> list[str]:
    """Hotwords from a string (comma, Chinese comma or newline separated) or a list;
    RequestError (400, param ``prompt``) when they are over the caps of engine.prompt (count and
    characters here; tokens once the model is loaded, in ``transcribe_items``)."""
    if value is None:
        return []
    if isinstance(value, str) and len(value) > 4 * MAX_HOTWORD_CHARS:
        _hotwords_error(f"the field is {len(value)} characters long; the hotwords may take "
                        f"at most {MAX_HOTWORD_CHARS}")   # refused before splitting a huge field
    parts = value if isinstance(value, (list, tuple)) else re.split(r"[,，、;\n]+", str(value))
    out = []
    for p in parts:
        p = str(p).strip()
        if p and p not in out:
            out.append(p)
    try:
        check_hotwords(out)
    except HotwordsError as e:
        _hotwords_error(str(e))
    return out


def _hotwords_error(message: str):
    raise RequestError(f"prompt (hotwords): {message}", 400, "prompt")


def single_segment(text: str, duration: float, finish_reason: str | None = None) -> list[dict]:
    """The one segment of a short file; flagged where the repetition guard cut a loop."""
    if not text:
        return []
    seg = {"start": 0.0, "end": round(float(duration), 3), "text": text}
    if finish_reason == "repetition":
        seg["flag"] = "repetition"
    return [seg]


def _row(name: str, lang: Language | None) -> dict:
    return {"file": name, "duration": 0.0, **describe_language(lang.code if lang else None),
            "processing_time": 0.0, "text": "",
            "error": None, "error_kind": None, "segments": [], "finish_reason": None,
            "longform": False}


def transcribe_items(holder, items: list[tuple[str, object]], opts: Options,
                     progress: Callable[[float, str], None] | None = None,
                     caller: str | None = None, on_segments=None) -> list[dict]:
    """``items``: (display name, path or bytes). Rows in input order. ``progress(fraction,
    message)`` is called as the batch advances (by seconds of audio done). ``caller``: who is
    asking, for the scheduler's fairness (default: the current request id).
    ``on_segments(index, segments)``: a long file's segments as each batch of them is done."""
    caller = caller or request_id.peek() or request_id.new_id()
    lang = parse_language(opts.language)
    code = lang.code if lang else None
    rows = [_row(name, lang) for name, _ in items]
    # ("short", 16 kHz waveform) | ("long", waveform or source) | None (the row has its error)
    routes = [_read_input(rows[i], name, src, opts) for i, (name, src) in enumerate(items)]
    tracker = _Progress(progress, sum(rows[i]["duration"] for i, r in enumerate(routes) if r))
    if any(routes):
        opts = _load_model(holder, opts, tracker)
    tracker.report(0.0, "starting")
    decode_routed(routes, opts.batch_size,
                  lambda chunk: _decode_short(holder, chunk, rows, code, opts, caller, tracker),
                  lambda i, src: _decode_long(holder, i, src, rows[i], code, opts, caller,
                                              tracker, on_segments))
    if progress:
        progress(1.0, "done")
    return rows


def route(duration: float, speakers=None, limit: float | None = None) -> str:
    """The 30 s rule for files: "short" (decoded whole, engine.decoded_whole; ``limit``: the
    CLI's --max-segment-seconds) or "long" (engine.longform's segments; always where speaker
    turns are asked for, since the turns are what gets transcribed)."""
    return "short" if decoded_whole(duration, limit) and not speakers else "long"


def decode_routed(routes: list, batch_size: int, decode_short, decode_long) -> None:
    """The order every caller's files are decoded in (the page, the API, the CLI, corpus
    runs): ``routes[i]`` is ``(route, x)`` for input i, or None for an input already failed.
    Short inputs first, ``batch_size`` at a time, one ``decode_short([(i, x), ...])`` call
    (one model call) each; then each long input alone, ``decode_long(i, x)``."""
    short = [(i, r[1]) for i, r in enumerate(routes) if r and r[0] == "short"]
    step = max(1, batch_size)
    for start in range(0, len(short), step):
        decode_short(short[start:start + step])
    for i, r in enumerate(routes):
        if r and r[0] == "long":
            decode_long(i, r[1])


def _read_input(row: dict, name: str, src, opts: Options):
    """Checks one input's length and decodes it when it is short: ("short", waveform) to decode
    whole (engine.decoded_whole), ("long", waveform or source) for engine.longform, or None
    with the row's error set."""
    try:
        duration = probe_duration(src, name=name, max_seconds=opts.max_audio_seconds)
        _check_length(duration, opts, name)
        wave = None
        if duration <= SHORT_CEILING_S:
            try:
                wave = load_audio(src, SAMPLE_RATE, name=name,
                                  max_seconds=min(SHORT_CEILING_S,
                                                  opts.max_audio_seconds or SHORT_CEILING_S))
            except AudioTooLong:
                if opts.max_audio_seconds and opts.max_audio_seconds <= SHORT_CEILING_S:
                    raise
                # longer than its header says: streamed as long audio, within the limit
        if wave is None:
            row["duration"] = round(duration, 3)
            return "long", src
        duration = len(wave) / SAMPLE_RATE
        if len(wave) == 0:
            raise AudioError(name, "no audio samples")
        if len(wave) < MIN_SECONDS * SAMPLE_RATE:
            raise AudioError(name, too_short(len(wave)))
        _check_length(duration, opts, name)
        row["duration"] = round(duration, 3)
        return route(duration, opts.speakers), wave
    except (RequestError, AudioTooLong) as e:
        row.update(error=str(e), error_kind="too_long")
    except AudioError as e:
        row.update(error=str(e), error_kind="audio")
    except Exception as e:  # noqa: BLE001 - a broken file must not stop the batch
        # not one of the decoder's own errors: its text is internal, the log gets it
        row.update(error=f"{name}: cannot read the audio: "
                   + request_id.internal_error(log, f"cannot read {name}", e),
                   error_kind="audio")
    return None


class _Progress:
    """``progress(fraction, message)`` by seconds of audio done out of ``total``."""

    def __init__(self, progress, total: float):
        self.progress, self.total, self.done = progress, total or 1.0, 0.0

    def report(self, extra: float, message: str):
        if self.progress:
            self.progress(min(1.0, (self.done + extra) / self.total), message)


def _load_model(holder, opts: Options, tracker: _Progress) -> Options:
    """Loads the model first (once), so processing times are decoding times; then the
    hotwords' token cap, which needs the model's tokenizer. The options come back with the
    watch terms merged into the hotwords as far as the model takes them."""
    tracker.report(0.0, "loading the model")
    model = holder.get()
    check = getattr(model, "check_hotwords", None)
    if check is not None and opts.hotwords:
        try:
            check(opts.hotwords)
        except HotwordsError as e:
            _hotwords_error(str(e))
    merge = getattr(model, "hotwords_with", None)
    if merge is not None and opts.watch_hotwords:
        opts = replace(opts, hotwords=merge(opts.hotwords, opts.watch_hotwords),
                       watch_hotwords=[])
    return opts


def _decode_short(holder, chunk, rows, code, opts: Options, caller, tracker: _Progress):
    """One scheduler call for a batch of short inputs (priority "interactive"); each row's
    processing time is its share of the call, by duration."""
    names = [rows[i]["file"] for i, _ in chunk]
    tracker.report(0.0, f"transcribing {', '.join(names)}")
    t0 = time.perf_counter()
    results = holder.transcribe([w for _, w in chunk], language=code, itn=opts.itn,
                                hotwords=list(opts.hotwords), batch_size=len(chunk),
                                max_new_tokens=opts.max_new_tokens, keys=names,
                                priority="interactive", caller=caller,
                                **({"words": True} if opts.words else {}))
    elapsed = time.perf_counter() - t0
    chunk_seconds = sum(rows[i]["duration"] for i, _ in chunk) or 1.0
    for (i, _), res in zip(chunk, results, strict=True):
        row = rows[i]
        share = elapsed * row["duration"] / chunk_seconds  # one model call for the batch
        row.update(processing_time=round(share, 3), text=res.get("text", ""),
                   finish_reason=res.get("finish_reason"), **_heard(res))
        if res.get("error"):
            row.update(error=_model_error(row["file"], res["error"]), error_kind="model")
        row["segments"] = single_segment(row["text"], row["duration"], row["finish_reason"])
        if opts.words:
            row["words"] = res.get("words") or []
            for seg in row["segments"]:
                seg["words"] = row["words"]
        tracker.done += row["duration"]
    tracker.report(0.0, f"done {len(names)} file(s)")


def _decode_long(holder, i, src, row, code, opts: Options, caller, tracker: _Progress,
                 on_segments=None) -> None:
    """One long input through engine.longform (priority "bulk"), its speaker turns first
    when asked (serving.diarized)."""
    t0 = time.perf_counter()

    def run(spans=None):
        return transcribe_long(holder.client("bulk", caller), src, row["file"], code, opts,
                               lambda d, n: tracker.report(row["duration"] * d / max(n, 1),
                                                           f"{row['file']}: segment {d} of {n}"),
                               **({"spans": spans} if spans is not None else {}),
                               **({"on_segments": lambda segs: on_segments(i, segs)}
                                  if on_segments else {}))
    try:
        if opts.speakers:   # speaker turns are what gets transcribed (serving.diarized)
            res = transcribe_with_speakers(src, row["file"], opts.speakers, run,
                                           opts.max_audio_seconds)
            row.update({k: res[k] for k in ("speakers", "turns", "speakers_error")})
        else:
            res = run()
    except AudioTooLong as e:
        row.update(error=str(e), error_kind="too_long", duration=0.0)
        return
    row.update(processing_time=round(time.perf_counter() - t0, 3), longform=True,
               text=res.get("text", ""), segments=list(res.get("segments") or []),
               duration=round(float(res.get("duration") or row["duration"]), 3),
               **_heard(res))
    if opts.words:
        row["words"] = list(res.get("words") or [])
    if res.get("error"):
        if row["segments"]:   # segments failed in the model: engine text, kept in the log
            row.update(error=_model_error(row["file"], res["error"]), error_kind="model")
        else:                 # the decoder's own message (AudioError): meant for the client
            row.update(error=res["error"], error_kind="audio")
    tracker.done += row["duration"]


def transcribe_long(model, src, name: str, language: str | None, opts: Options, progress,
                    spans=None, on_segments=None) -> dict:
    """The one call into engine.longform (VAD segmentation, batched decoding, joining);
    ``model``: anything with the engine's ``transcribe`` (here the holder's bulk client)."""
    from engine.longform import transcribe_long as _long
    return _long(model, src, language=language, itn=opts.itn,
                 hotwords=list(opts.hotwords), batch_size=opts.batch_size, progress=progress,
                 name=name, max_new_tokens=opts.max_new_tokens,
                 max_seconds=opts.max_audio_seconds, spans=spans,
                 on_segments=on_segments, **({"words": True} if opts.words else {}))


def _heard(res: dict) -> dict:
    """The detected language of an engine result (none given), for its row."""
    if res.get("language_probability") is None:
        return {}
    return {**language_fields(res), **({"languages": res["languages"]} if res.get("languages")
                                       else {})}


def _model_error(name: str, detail: str) -> str:
    """The engine's error text (torch's messages, say) goes to the log, not to the client."""
    return f"{name}: decoding failed: " + request_id.internal_error(log, detail)


def _check_length(duration: float, opts: Options, name: str) -> None:
    if opts.max_audio_seconds and duration > opts.max_audio_seconds:
        raise RequestError(f"{name}: audio is {duration / 60:.1f} min long; this server accepts "
                           f"at most {opts.max_audio_seconds / 60:g} min", 413, "file")
