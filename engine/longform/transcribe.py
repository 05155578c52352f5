"""Transcribe audio of any length: stream -> VAD segments -> batched decoding -> joined text.

The model is trained on utterances up to about 30 s; longer input makes it loop or stop early.
So the file is streamed twice from disk: once through the VAD (keeping one probability per 32 ms)
and once to cut the segments' audio, which is decoded a batch at a time. Memory therefore depends
on the batch, not on the length of the recording.

Repetition guard: the engine stops and trims a loop in every utterance (engine.repetition,
``finish_reason == "repetition"``). Here a segment that looped, hit the token limit or still looks
like a loop (one n-gram covering most of the text) is decoded again in two halves, split at the
quietest point near the middle, and those halves once more if needed. What still fails is kept,
with the loop collapsed to one copy, and flagged ``"flag": "repetition"``.
"""

from __future__ import annotations

import logging

import numpy as np

from ..audio import vad
from ..audio import SAMPLE_RATE, AudioError, AudioTooLong, load_audio, stream_audio
from ..language_id import summarize
from ..languages import describe_language
from ..repetition import collapse_repeats, looks_looping
from .subtitles import join_texts

log = logging.getLogger(__name__)

MAX_SPLIT_DEPTH = 2        # halves, then quarters
MIN_WINDOW_S = 2.0         # pieces shorter than this are not split again


def transcribe_long(model, src, language=None, itn=True, hotwords=(), batch_size=8,
                    max_segment_s=vad.MAX_SEGMENT_S, progress=None, *, name=None, max_new_tokens=512,
                    vad_options=None, max_seconds=None, spans=None, on_segments=None,
                    words=False) -> dict:
    """Transcribe a recording of any length with ``model.transcribe`` (the engine API).

    ``src``: a path, bytes, a binary file object, an ``(array, sr)`` tuple or a 16 kHz array.
    Returns ``{"text", "segments": [{"start", "end", "text"[, "flag"][, "error"]}], "duration",
    "error", "language", "language_name"}`` (language as in ``engine.languages.describe_language``;
    with none given, the one heard, per segment and for the whole: engine.language_id);
    an unreadable input gives ``error`` (naming the input) and no segments.
    ``progress(done_segments, total_segments)`` is called before the first batch and after each.
    ``vad_options``: extra keyword arguments for ``vad.segments_from_probabilities``.
    ``max_seconds``: the longest audio accepted; longer raises ``AudioTooLong`` (during the VAD
    pass, before any decoding), whatever the file's header claims.
    ``spans``: ``[(start_s, end_s)]`` to transcribe instead of the VAD's segments (speaker turns,
    engine.speakers.transcript), sorted, not overlapping, each under 30 s.
    ``on_segments(new_segments)``: called with each batch's segments, in order, as they are
    done (the API's ``stream=true`` sends them on).
    ``words``: also ``words`` ([{word, start, end}], seconds from the start of the recording,
    engine.alignment) at the top level and in each segment.
    """
    spelled = describe_language(language)   # an unknown language fails before any work
    try:
        src, name = _replayable(src, name)
        probs, n = vad.speech_probabilities(stream_audio(src, name=name, max_seconds=max_seconds))
    except AudioTooLong:
        raise
    except AudioError as e:
        return {"text": "", "segments": [], "duration": 0.0, "error": str(e), **spelled}
    duration = n / SAMPLE_RATE
    if spans is None:
        spans = vad.segments_from_probabilities(probs, n, max_segment_s=max_segment_s,
                                                **(vad_options or {}))
    opts = dict(language=language, itn=itn, batch_size=batch_size,
                hotwords=hotwords if isinstance(hotwords, str) else list(hotwords),
                max_new_tokens=max_new_tokens)
    if words:
        opts["words"] = True
        # the file's speech regions, from the VAD pass above: a segment's words that are
        # estimated are spread over them, with no VAD pass of their own (engine.alignment)
        opts["speech"] = vad.speech_regions(probs, n)
    segments, done = [], 0
    if progress:
        progress(0, len(spans))
    for batch in _batched(_cut(src, name, spans, max_seconds), max(1, batch_size)):
        new = [seg for group in _decode_guarded(model, batch, opts, probs) for seg in group]
        segments += new
        if on_segments:
            on_segments(new)
        done += len(batch)
        if progress:
            progress(done, len(spans))
    errors = [s["error"] for s in segments if s.get("error")]
    summary = f"{len(errors)} of {len(segments)} segments failed: {errors[0]}" if errors else None
    text = join_texts([s["text"] for s in segments], language)
    if spelled["language"] == "auto":   # none given: the one heard (engine.language_id)
        spelled = summarize(segments, text) or spelled
    out = {
        "text": text,
        "segments": segments,
        "duration": round(duration, 3),
        "error": summary,
        **spelled,
    }
    if words:
        out["words"] = [w for s in segments for w in s.get("words", ())]
    return out


def _batched(items, n):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _replayable(src, name):
    """The file is read twice: make file objects into bytes, and decode arrays once."""
    if isinstance(src, (tuple, np.ndarray)) or hasattr(src, "detach"):
        return load_audio(src, name=name), name or "<array>"
    if hasattr(src, "read"):
        name = name or str(getattr(src, "name", "") or "<file object>")
        if hasattr(src, "seek"):
            src.seek(0)
        return src.read(), name
    return src, name


def _cut(src, name, spans, max_seconds=None):
    """Yield ``{"start", "end", "audio"}`` per span (sorted, not overlapping), streaming the file
    once more. Audio before the current span is dropped as blocks arrive, so the buffer holds
    at most one span plus one block, however long the silences are."""
    blocks = stream_audio(src, block_seconds=10.0, name=name, max_seconds=max_seconds)
    buf, buf_start = np.zeros(0, np.float32), 0     # buf holds samples [buf_start, buf_start+len)
    for start, end in spans:
        s, e = int(round(start * SAMPLE_RATE)), int(round(end * SAMPLE_RATE))
        while buf_start + len(buf) < e:
            block = next(blocks, None)
            if block is None:
                break
            buf = np.concatenate([buf, block])
            drop = min(max(0, s - buf_start), len(buf))
            buf, buf_start = buf[drop:], buf_start + drop
        yield {"start": start, "end": end, "audio": buf[max(0, s - buf_start):e - buf_start].copy()}


def _decode_guarded(model, items, opts, probs, depth=0) -> list[list[dict]]:
    """Decode ``items`` in one call; re-decode failing ones in halves. One list of segment dicts
    per item (more than one where it was split)."""
    call = dict(opts)
    if "speech" in opts:  # the file's regions -> each item's, from its own start
        call["speech"] = [_regions_within(opts["speech"], it["start"], it["end"]) for it in items]
    results = model.transcribe([(it["audio"], SAMPLE_RATE) for it in items], **call)
    out, retry, halves = [], [], []
    for i, (it, res) in enumerate(zip(items, results)):
        text = (res.get("text") or "").strip()
        bad = not res.get("error") and (res.get("finish_reason") in ("length", "repetition")
                                        or looks_looping(text))
        if bad and depth < MAX_SPLIT_DEPTH and it["end"] - it["start"] >= 2 * MIN_WINDOW_S:
            retry.append(i)
            halves += _halves(it, probs)
            out.append(None)
            continue
        seg = {"start": round(it["start"], 3), "end": round(it["end"], 3),
               "text": collapse_repeats(text).strip() if bad else text}
        if bad:
            seg["flag"] = "repetition"
        if res.get("error"):
            seg["error"] = res["error"]
        if "language_probability" in res:   # detected (no language given): per segment
            seg.update(language=res["language"], language_probability=res["language_probability"])
        if "words" in res or opts.get("words"):
            seg["words"] = _shifted(res.get("words") or [], it["start"], it["end"], seg["text"],
                                    bad)
        out.append([seg])
    if retry:
        redone = _decode_guarded(model, halves, opts, probs, depth + 1)
        for j, i in enumerate(retry):
            out[i] = redone[2 * j] + redone[2 * j + 1]
    return out


def _regions_within(regions, start, end) -> list[tuple[float, float]]:
    """The speech ``regions`` of the file that lie in [start, end], from ``start``."""
    return [(max(a, start) - start, min(b, end) - start) for a, b in regions
            if b > start and a < end]


def _shifted(words, start, end, text, collapsed) -> list[dict]:
    """A segment's word times from its own start to the recording's, inside the segment. A
    segment whose loop was collapsed here gets its words spread over it, estimated."""
    if collapsed:
        from ..alignment import spread_over_speech
        return [{**w, "start": round(w["start"] + start, 3), "end": round(w["end"] + start, 3)}
                for w in spread_over_speech(text, [], 0.0, end - start)]
    return [{**w, "start": round(min(max(w["start"] + start, start), end), 3),
             "end": round(min(max(w["end"] + start, start), end), 3)} for w in words]


def _halves(item, probs):
    """Split at the quietest 32 ms window in the middle third."""
    start, end = item["start"], item["end"]
    lo = int((start + (end - start) / 3) / vad.WINDOW_S)
    hi = int((start + 2 * (end - start) / 3) / vad.WINDOW_S)
    cut_s = vad.quietest_point(probs, lo, max(hi, lo + 1)) * vad.WINDOW_S
    cut_s = min(max(cut_s, start + MIN_WINDOW_S / 2), end - MIN_WINDOW_S / 2)
    k = int(round((cut_s - start) * SAMPLE_RATE))
    audio = item["audio"]
    return [{"start": start, "end": start + k / SAMPLE_RATE, "audio": audio[:k]},
            {"start": start + k / SAMPLE_RATE, "end": end, "audio": audio[k:]}]
