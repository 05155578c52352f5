"""``stream=true`` on POST /v1/audio/transcriptions: server-sent events as OpenAI's API sends
them for its streaming transcription models.

    data: {"type": "transcript.text.delta", "delta": "..."}          one or more
    data: {"type": "transcript.text.done", "text": "...", "usage": {...}, ...}

The deltas joined are exactly the done event's ``text`` (and the non-streamed ``text``). A short
file (up to engine.MAX_UTTERANCE_S) is decoded in one piece, so it gets one delta; a
long file gets one delta per segment, sent as each batch of segments is decoded (the segments of
one batch finish together). ``logprobs`` are never sent (OpenAI sends them only for
``include[]=logprobs``, and this server has none to give: docs/language-and-streaming.md).
``usage`` is ``{"type": "duration", "seconds"}``, as OpenAI reports duration-billed
transcriptions (and as this server's /v1/realtime does).

Errors found before the first delta (unreadable audio, too long, no model) are answered as the
non-streamed route answers them: a status and OpenAI's JSON error. An error after the stream has
started is an ``error`` event carrying OpenAI's error object, which the ``openai`` SDK raises as
``APIError``; then the stream ends.
"""
from __future__ import annotations

import asyncio
import json
import logging

import anyio
from fastapi.responses import Response, StreamingResponse

from engine.language_id import language_fields, openai_languages
from engine.longform.subtitles import join_texts

from .errors import error_body

log = logging.getLogger("funasr_nano.app")

MEDIA_TYPE = "text/event-stream"


def sse(event: dict, name: str | None = None) -> bytes:
    head = f"event: {name}\n" if name else ""
    return (head + "data: " + json.dumps(event, ensure_ascii=False) + "\n\n").encode("utf-8")


def delta_event(delta: str) -> dict:
    return {"type": "transcript.text.delta", "delta": delta}


def done_event(row: dict) -> dict:
    """The final event: the text, the usage, and (this server's extension, as in ``json``) the
    language, with OpenAI's ``languages`` where it was detected."""
    langs = openai_languages(row)
    return {"type": "transcript.text.done", "text": row["text"],
            "usage": {"type": "duration", "seconds": row["duration"]},
            **({"languages": langs} if langs else {}), **language_fields(row)}


class _Deltas:
    """The text sent so far; each new piece is what the joined segments add to it."""

    def __init__(self, language: str | None):
        self.language, self.texts, self.sent = language, [], ""

    def add(self, texts: list[str]) -> str:
        self.texts += [t for t in texts if t]
        joined = join_texts(self.texts, self.language)
        if not joined.startswith(self.sent):   # never expected: join_texts only appends
            return ""
        piece, self.sent = joined[len(self.sent):], joined
        return piece

    def rest(self, text: str) -> str:
        return text[len(self.sent):] if text.startswith(self.sent) else ""


async def respond(run, language: str | None, error_of, limiter) -> Response:
    """Run ``run(on_segments) -> rows`` (serving.pipeline.transcribe_items for one file) in a
    worker thread and answer with its events. ``error_of(row_or_exception)`` -> a Response for an
    error before the first event, or None when there is none."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def put(item):
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def work():
        try:
            put(("done", run(lambda _i, segs: put(("segments", segs)))))
        except BaseException as e:  # noqa: BLE001 - reported to the client, below
            put(("failed", e))

    worker = asyncio.ensure_future(anyio.to_thread.run_sync(work, limiter=limiter))
    deltas = _Deltas(language)
    first = await queue.get()
    if first[0] != "segments":
        early = error_of(first[1] if first[0] == "failed" else first[1][0])
        if early is not None:
            await worker
            return early

    async def events():
        item = first
        try:
            while True:
                kind, value = item
                if kind == "segments":
                    for seg in value:   # one delta per segment
                        piece = deltas.add([seg.get("text", "")])
                        if piece:
                            yield sse(delta_event(piece))
                elif kind == "done":
                    row = value[0]
                    failed = error_of(row)
                    if failed is not None:
                        yield sse({"type": "error", **json.loads(failed.body)}, "error")
                        return
                    piece = deltas.rest(row["text"])
                    if piece:
                        yield sse(delta_event(piece))
                    yield sse(done_event(row))
                    return
                else:
                    failed = error_of(value)
                    body = (json.loads(failed.body) if failed is not None
                            else error_body(500, "transcription failed"))
                    yield sse({"type": "error", **body}, "error")
                    return
                item = await queue.get()
        finally:
            if not worker.done():   # the client left: the decoding finishes on its own
                worker.add_done_callback(lambda f: f.exception())

    return StreamingResponse(events(), media_type=MEDIA_TYPE,
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
