"""POST /v1/audio/transcriptions, OpenAI-compatible (with ``stream=true``: server-sent events,
serving.streaming).

The request's fields are checked first (each refusal a 400 naming the field), then the upload
is read within the size limit, then the file goes through serving.pipeline.transcribe_items in
a worker thread (never on the event loop) while the scheduler batches it with everyone else's
work; the answer is rendered by serving.formats.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response

from compliance import service as compliance

from . import streaming
from .access import check_access
from .diarized import SpeakerError, settings_speaker_model, speaker_request
from .errors import error_response
from .formats import RESPONSE_FORMATS, render
from .model_holder import RETRY_AFTER_FAILURE_S, ModelUnavailable
from .pipeline import Options, RequestError, parse_hotwords, parse_language, transcribe_items

log = logging.getLogger("funasr_nano.app")

API_THREADS = 64            # API requests in progress (decoding or waiting for the model) at once
GRANULARITIES = ("word", "segment")


class Refused(Exception):
    """A request answered with an error before any transcription; ``response`` says why."""

    def __init__(self, response: Response):
        super().__init__()
        self.response = response


def display_name(filename: str | None) -> str:
    """The client's file name as messages and results show it: its last path component, no
    control characters, at most 200 characters."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())
    return (name[:100] + "..." + name[-97:] if len(name) > 200 else name) or "audio"


def wants_words(granularities, response_format: str) -> bool:
    """Word timings for this request: ``timestamp_granularities[]`` has "word" (OpenAI: only
    with verbose_json), or the format is srt/vtt, whose cues start and end at words.
    RequestError (400) for another value or "word" with json/text."""
    given = [g.strip().lower() for g in granularities or () if g and g.strip()]
    bad = [g for g in given if g not in GRANULARITIES]
    if bad:
        raise RequestError(f"timestamp_granularities[]: {bad[0][:40]!r} is not one of "
                           f"{', '.join(GRANULARITIES)}", 400, "timestamp_granularities")
    if given and response_format != "verbose_json" and response_format not in ("srt", "vtt"):
        raise RequestError("timestamp_granularities[] needs response_format verbose_json",
                           400, "timestamp_granularities")
    return "word" in given or response_format in ("srt", "vtt")


@dataclass
class Fields:
    """The request's fields, checked."""
    response_format: str
    words: bool
    hotwords: list
    detector: object           # compliance's detector, or None
    redact: bool


def checked_fields(response_format, language, prompt, watch_list, pii, redact,
                   granularities) -> Fields:
    """Every field but the file and the speakers, checked; Refused with a 400 naming the first
    field that is wrong."""
    response_format = (response_format or "json").strip().lower()
    if response_format not in RESPONSE_FORMATS:
        raise Refused(error_response(400, f"response_format must be one of "
                                     f"{', '.join(RESPONSE_FORMATS)}", "response_format"))
    try:
        words = wants_words(granularities, response_format)
        parse_language(language)
        hotwords = parse_hotwords(prompt)
        detector = compliance.detector_from_request(watch_list, pii)
    except RequestError as e:
        raise Refused(error_response(e.status, str(e), e.param)) from None
    except compliance.ComplianceRequestError as e:
        raise Refused(error_response(400, str(e), e.param)) from None
    if redact and detector is None:
        raise Refused(error_response(400, "redact needs watch_list or pii", "redact"))
    return Fields(response_format, words, hotwords, detector, redact)


async def speakers_asked(request: Request, response_format: str, settings, limiter):
    """The SpeakerRequest of the form (diarized_json, ``speakers``, known speakers: see
    serving.diarized), or None; Refused with a 400 naming the field."""
    try:
        form = await request.form()
        fields = {k: form.getlist(k) if k.endswith("[]") or k.startswith("known_speaker")
                  else form.get(k) for k in form.keys()}
        return await anyio.to_thread.run_sync(
            speaker_request, fields, response_format, settings_speaker_model(settings),
            limiter=limiter)
    except SpeakerError as e:
        raise Refused(error_response(400, str(e), e.param)) from None


async def read_upload(file: UploadFile, settings) -> tuple[str, bytes]:
    """(display name, bytes) of the upload; Refused when it is over the limit or empty."""
    data = await file.read(settings.max_upload_bytes + 1)
    name = display_name(file.filename)
    if len(data) > settings.max_upload_bytes:
        raise Refused(error_response(413, f"{name} is over this server's limit of "
                                     f"{settings.max_upload_mb:g} MB", "file", "file_too_large"))
    if not data:
        raise Refused(error_response(400, f"{name}: the uploaded file is empty", "file",
                                     "invalid_audio"))
    return name, data


def transcriptions_router(settings, holder) -> APIRouter:
    router = APIRouter()
    # Waiting API requests hold their own worker threads, never the shared pool that Gradio and
    # FastAPI's sync routes use; /health is async and takes no lock, so it always answers.
    limiter = anyio.CapacityLimiter(API_THREADS)

    async def answer(name, data, f: Fields, opts: Options):
        """The whole transcription in the asked format, or the row's error."""
        try:
            rows = await anyio.to_thread.run_sync(
                transcribe_items, holder, [(name, data)], opts, limiter=limiter)
        except (ModelUnavailable, RequestError) as e:
            return failure(e)
        row = rows[0]
        if row["error"]:
            return failure(row)
        row = compliance.apply(row, f.detector, f.redact)
        body, media_type = render(row, f.response_format, holder.info()["model"])
        log.info("api: %s (%.1f s audio) in %.2f s", name, row["duration"], row["processing_time"])
        return Response(body, media_type=media_type)

    def streamed(name, data, f: Fields, opts: Options, language):
        """Server-sent events (serving.streaming), as OpenAI's streaming models."""
        if f.response_format not in ("json", "text"):
            raise Refused(error_response(
                400, f"stream=true sends text events; response_format {f.response_format} "
                "cannot be streamed (use json or text, or stream=false)", "stream"))
        parsed = parse_language(language)
        return streaming.respond(
            lambda on_segments: transcribe_items(holder, [(name, data)], opts,
                                                 on_segments=on_segments),
            parsed.code if parsed else None, failure, limiter)

    @router.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request, file: UploadFile = File(...),
                             model: str | None = Form(None), language: str | None = Form(None),
                             prompt: str | None = Form(None),
                             response_format: str = Form("json"),
                             temperature: float | None = Form(None),
                             itn: bool = Form(True), stream: bool = Form(False),
                             watch_list: str | None = Form(None), pii: str | None = Form(None),
                             redact: bool = Form(False),
                             timestamp_granularities: list[str] | None = Form(
                                 None, alias="timestamp_granularities[]")):
        denied = check_access(request, settings)
        if denied:
            return denied
        try:
            f = checked_fields(response_format, language, prompt, watch_list, pii, redact,
                               timestamp_granularities)
            speakers = await speakers_asked(request, f.response_format, settings, limiter)
            name, data = await read_upload(file, settings)
            opts = Options(language=language, itn=itn, hotwords=f.hotwords,
                           watch_hotwords=compliance.watch_hotwords(f.detector),
                           max_new_tokens=settings.max_new_tokens,
                           batch_size=settings.batch_size,
                           max_audio_seconds=settings.max_audio_seconds, speakers=speakers,
                           words=f.words)
            if stream:
                return await streamed(name, data, f, opts, language)
        except Refused as e:
            return e.response
        return await answer(name, data, f, opts)

    return router


def failure(what) -> Response | None:
    """The error answer for a failed transcription: an exception, or a result row whose
    ``error`` is set (None for a row without one). Text from unexpected exceptions stays in
    the log."""
    if isinstance(what, ModelUnavailable):
        return error_response(503, str(what), None, "model_unavailable",
                              headers={"Retry-After": str(round(RETRY_AFTER_FAILURE_S))})
    if isinstance(what, RequestError):
        return error_response(what.status, str(what), what.param)
    if isinstance(what, BaseException):
        log.error("api: transcription failed", exc_info=what)
        return error_response(500, "transcription failed (see the server log)", None,
                              "decoding_failed")
    if not what.get("error"):
        return None
    status = {"audio": 400, "too_long": 413}.get(what["error_kind"], 500)
    return error_response(status, what["error"], "file" if status < 500 else None,
                          {"audio": "invalid_audio", "too_long": "audio_too_long"}.get(
                              what["error_kind"], "decoding_failed"))
