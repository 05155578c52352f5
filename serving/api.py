"""HTTP API on the app's port: GET /health, GET /v1/models and the OpenAI-compatible
POST /v1/audio/transcriptions.

The model runs in a worker thread (never on the event loop); the model holder limits how many
decodes run at once. Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``:
400 bad audio or parameters, 401 missing/wrong key, 413 upload or audio too large, 503 no model.
"""
from __future__ import annotations

import base64
import hmac
import logging
import time

import anyio
from fastapi import APIRouter, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from .formats import RESPONSE_FORMATS, render
from .model_holder import ModelUnavailable
from .pipeline import Options, RequestError, parse_hotwords, parse_language, transcribe_items

log = logging.getLogger("funasr_nano.app")

API_PREFIX = "/v1/"
FORM_SLACK_BYTES = 1 << 20  # multipart headers and the small form fields around the file
API_THREADS = 64            # API requests in progress (decoding or waiting for the model) at once


def error_response(status: int, message: str, param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 401:
        kind = "authentication_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param,
                                   "code": code}}, status_code=status, headers=headers)


# --------------------------------------------------------------------------- upload size

class UploadLimitMiddleware:
    """413 for request bodies over the limit on /v1/*: at once from Content-Length, or as soon
    as a chunked body passes the limit (before FastAPI spools it to disk)."""

    def __init__(self, app, max_bytes: int, prefix: str = API_PREFIX):
        self.app, self.max_bytes, self.prefix = app, max_bytes, prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            return await self.app(scope, receive, send)
        limit = self.max_bytes + FORM_SLACK_BYTES
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await self._reject(scope, receive, send, int(length))
        seen = 0
        started = rejected = False

        async def counting_receive():
            nonlocal seen, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit and not started:
                    # Answer now and make the app stop reading; what it sends later is dropped.
                    rejected = True
                    await self._reject(scope, receive, send, seen)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message):
            nonlocal started
            if rejected:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            if not rejected:
                raise

    async def _reject(self, scope, receive, send, size):
        mb = self.max_bytes / (1 << 20)
        response = error_response(413, f"upload of {size / (1 << 20):.1f} MB is over this "
                                  f"server's limit of {mb:g} MB", "file", "file_too_large",
                                  headers={"Connection": "close"})
        await response(scope, receive, send)


# --------------------------------------------------------------------------- auth

def check_access(request: Request, settings) -> JSONResponse | None:
    """None when the request may use /v1/*: no --api-key and no --auth, or a matching
    'Authorization: Bearer KEY', or (with --auth) matching HTTP Basic credentials."""
    if not settings.api_key and not settings.auth:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if settings.api_key and scheme.lower() == "bearer" and hmac.compare_digest(
            value.encode(), settings.api_key.encode()):
        return None
    if settings.auth and scheme.lower() == "basic":
        try:
            given = base64.b64decode(value).decode("utf-8")
        except Exception:  # noqa: BLE001
            given = ""
        if hmac.compare_digest(given.encode(), settings.auth.encode()):
            return None
    what = "an API key: 'Authorization: Bearer KEY'" if settings.api_key else "HTTP Basic auth"
    return error_response(401, f"this server requires {what}", None, "invalid_api_key",
                          headers={"WWW-Authenticate": "Bearer" if settings.api_key else "Basic"})


# --------------------------------------------------------------------------- routes

def create_api(settings, holder, started_at: float | None = None, live=None) -> APIRouter:
    router = APIRouter()
    started_at = started_at or time.time()

    # Waiting API requests hold their own worker threads, never the shared pool that Gradio and
    # FastAPI's sync routes use; /health is async and takes no lock, so it always answers.
    limiter = anyio.CapacityLimiter(API_THREADS)

    @router.get("/health")
    async def health():
        info = holder.info()
        return {"status": "ok", **info, "uptime_s": round(time.time() - started_at, 1),
                "concurrency": settings.concurrency, "max_upload_mb": settings.max_upload_mb,
                "max_audio_minutes": settings.max_audio_minutes,
                "live_sessions": live.active if live else 0,
                "max_live_sessions": live.limit if live else settings.live_sessions}

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
                             itn: bool = Form(True)):
        denied = check_access(request, settings)
        if denied:
            return denied
        response_format = (response_format or "json").strip().lower()
        if response_format not in RESPONSE_FORMATS:
            return error_response(400, f"response_format must be one of "
                                  f"{', '.join(RESPONSE_FORMATS)}", "response_format")
        try:
            parse_language(language)
            hotwords = parse_hotwords(prompt)
        except RequestError as e:
            return error_response(e.status, str(e), e.param)
        data = await file.read(settings.max_upload_bytes + 1)
        name = file.filename or "audio"
        if len(data) > settings.max_upload_bytes:
            return error_response(413, f"{name} is over this server's limit of "
                                  f"{settings.max_upload_mb:g} MB", "file", "file_too_large")
        if not data:
            return error_response(400, f"{name}: the uploaded file is empty", "file")
        opts = Options(language=language, itn=itn, hotwords=hotwords,
                       max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
                       max_audio_seconds=settings.max_audio_seconds)
        try:
            rows = await anyio.to_thread.run_sync(
                transcribe_items, holder, [(name, data)], opts, limiter=limiter)
        except ModelUnavailable as e:
            return error_response(503, str(e), None, "model_unavailable")
        except RequestError as e:
            return error_response(e.status, str(e), e.param)
        row = rows[0]
        if row["error"]:
            status = {"audio": 400, "too_long": 413}.get(row["error_kind"], 500)
            return error_response(status, row["error"], "file" if status < 500 else None,
                                  {"audio": "invalid_audio", "too_long": "audio_too_long"}.get(
                                      row["error_kind"], "decoding_failed"))
        body, media_type = render(row, response_format, holder.info()["model"])
        log.info("api: %s (%.1f s audio) in %.2f s", name, row["duration"], row["processing_time"])
        return Response(body, media_type=media_type)

    return router


def install(app: FastAPI, settings, holder, started_at: float | None = None, live=None) -> None:
    """Routes, the upload limit and OpenAI-style validation errors on /v1/*."""
    app.include_router(create_api(settings, holder, started_at, live))
    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = (exc.errors() or [{}])[0]
        loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query")]
        return error_response(400, f"{'.'.join(loc) or 'request'}: {first.get('msg', 'invalid')}",
                              loc[-1] if loc else None)
