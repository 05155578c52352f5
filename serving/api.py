"""HTTP API on the app's port: GET /health, GET /metrics (Prometheus), GET /v1/models and the
OpenAI-compatible POST /v1/audio/transcriptions (with ``stream=true``: server-sent events,
serving.streaming).

Each request waits for its results in a worker thread (never on the event loop) while the
scheduler batches it with everyone else's work (serving.scheduler); the request id (the
``X-Request-ID`` response header) is its caller identity there. Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``: 400 bad audio or parameters, 401
missing/wrong key, 413 upload or audio too large, 503 no model.
"""
from __future__ import annotations

import logging
import time

import anyio
from fastapi import APIRouter, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import Response

from compliance import service as compliance

from . import errors, streaming
from .access import access_required, check_access, credentials_ok  # noqa: F401 (realtime)
from .errors import error_response  # noqa: F401 (one error shape; re-exported)
from .diarized import SpeakerError, settings_speaker_model, speaker_request
from .formats import RESPONSE_FORMATS, render
from .guard import Lifecycle, RequestGuard
from .metrics import HttpMetricsMiddleware
from .model_holder import RETRY_AFTER_FAILURE_S, ModelUnavailable
from .pipeline import Options, RequestError, parse_hotwords, parse_language, transcribe_items

log = logging.getLogger("funasr_nano.app")

API_PREFIX = errors.API_PREFIX
API_THREADS = 64            # API requests in progress (decoding or waiting for the model) at once


# --------------------------------------------------------------------------- routes

def display_name(filename: str | None) -> str:
    """The client's file name as messages and results show it: its last path component, no
    control characters, at most 200 characters."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())
    return (name[:100] + "..." + name[-97:] if len(name) > 200 else name) or "audio"


GRANULARITIES = ("word", "segment")


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


def create_api(settings, holder, started_at: float | None = None, live=None,
               metrics=None) -> APIRouter:
    router = APIRouter()
    started_at = started_at or time.time()

    # Waiting API requests hold their own worker threads, never the shared pool that Gradio and
    # FastAPI's sync routes use; /health is async and takes no lock, so it always answers.
    limiter = anyio.CapacityLimiter(API_THREADS)

    @router.get("/health")
    async def health(request: Request):
        # Paths on this machine only for a caller who proved to be the operator.
        private = access_required(settings) and credentials_ok(
            request.headers.get("authorization"), settings)
        info = holder.info(private=private)
        return {"status": "ok", **info, "uptime_s": round(time.time() - started_at, 1),
                "scheduler": holder.scheduler_stats(), "max_upload_mb": settings.max_upload_mb,
                "max_audio_minutes": settings.max_audio_minutes,
                "live_sessions": live.active if live else 0,
                "max_live_sessions": live.limit if live else settings.live_sessions}

    @router.get("/metrics")
    async def prometheus_metrics(request: Request):
        denied = check_access(request, settings)  # the same key or login as /v1/*
        if denied:
            return denied
        if metrics is None:
            return error_response(404, "metrics are off")
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @router.get("/v1/models")
    async def models(request: Request):
        denied = check_access(request, settings)
        if denied:
            return denied
        info = holder.info()
        return {"object": "list", "data": [{"id": info["model"], "object": "model",
                                            "created": int(started_at), "owned_by": "local"}]}

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
        response_format = (response_format or "json").strip().lower()
        if response_format not in RESPONSE_FORMATS:
            return error_response(400, f"response_format must be one of "
                                  f"{', '.join(RESPONSE_FORMATS)}", "response_format")
        try:
            words = wants_words(timestamp_granularities, response_format)
            parse_language(language)
            hotwords = parse_hotwords(prompt)
            detector = compliance.detector_from_request(watch_list, pii)
        except RequestError as e:
            return error_response(e.status, str(e), e.param)
        except compliance.ComplianceRequestError as e:
            return error_response(400, str(e), e.param)
        if redact and detector is None:
            return error_response(400, "redact needs watch_list or pii", "redact")
        try:   # speakers: diarized_json, `speakers`, known speakers (serving.diarized)
            form = await request.form()
            speakers = await anyio.to_thread.run_sync(
                speaker_request, {k: form.getlist(k) if k.endswith("[]") or k.startswith(
                    "known_speaker") else form.get(k) for k in form.keys()},
                response_format, settings_speaker_model(settings), limiter=limiter)
        except SpeakerError as e:
            return error_response(400, str(e), e.param)
        data = await file.read(settings.max_upload_bytes + 1)
        name = display_name(file.filename)
        if len(data) > settings.max_upload_bytes:
            return error_response(413, f"{name} is over this server's limit of "
                                  f"{settings.max_upload_mb:g} MB", "file", "file_too_large")
        if not data:
            return error_response(400, f"{name}: the uploaded file is empty", "file",
                                  "invalid_audio")
        opts = Options(language=language, itn=itn, hotwords=hotwords,
                       watch_hotwords=compliance.watch_hotwords(detector),
                       max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
                       max_audio_seconds=settings.max_audio_seconds, speakers=speakers,
                       words=words)
        if stream:   # server-sent events (serving.streaming), as OpenAI's streaming models
            if response_format not in ("json", "text"):
                return error_response(400, f"stream=true sends text events; response_format "
                                      f"{response_format} cannot be streamed (use json or text, "
                                      f"or stream=false)", "stream")
            parsed = parse_language(language)
            return await streaming.respond(
                lambda on_segments: transcribe_items(holder, [(name, data)], opts,
                                                     on_segments=on_segments),
                parsed.code if parsed else None, _failure, limiter)
        try:
            rows = await anyio.to_thread.run_sync(
                transcribe_items, holder, [(name, data)], opts, limiter=limiter)
        except (ModelUnavailable, RequestError) as e:
            return _failure(e)
        row = rows[0]
        if row["error"]:
            return _failure(row)
        row = compliance.apply(row, detector, redact)
        body, media_type = render(row, response_format, holder.info()["model"])
        log.info("api: %s (%.1f s audio) in %.2f s", name, row["duration"], row["processing_time"])
        return Response(body, media_type=media_type)

    return router


def _failure(what) -> Response | None:
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


def install(app: FastAPI, settings, holder, started_at: float | None = None, live=None,
            metrics=None) -> Lifecycle:
    """Routes, the request guard (serving.guard: ids, credentials before the body, upload
    limits, body timeouts, the stop) and OpenAI-shaped errors on /v1/*; with ``metrics``,
    request counts on every route (outside the guard, so its own answers count too). Returns
    the guard's Lifecycle (app.py marks it draining when a stop begins)."""
    app.include_router(create_api(settings, holder, started_at, live, metrics))
    lifecycle = Lifecycle()
    app.add_middleware(RequestGuard, settings=settings, lifecycle=lifecycle)
    if metrics is not None:
        app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    errors.install_handlers(app)
    return lifecycle
