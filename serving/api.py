"""HTTP API on the app's port, a router per route group: GET /health, GET /metrics
(Prometheus) and GET /v1/models (serving.status_routes); the OpenAI-compatible
POST /v1/audio/transcriptions (serving.transcription_routes; ``stream=true``: server-sent
events, serving.streaming).

Each request waits for its results in a worker thread (never on the event loop) while the
scheduler batches it with everyone else's work (serving.scheduler); the request id (the
``X-Request-ID`` response header) is its caller identity there. Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``: 400 bad audio or parameters, 401
missing/wrong key, 413 upload or audio too large, 503 no model.
"""
from __future__ import annotations

import time

from fastapi import APIRouter, FastAPI

from . import errors
from .guard import Lifecycle, RequestGuard
from .metrics import HttpMetricsMiddleware
from .status_routes import status_router
from .transcription_routes import transcriptions_router


def create_api(settings, holder, started_at: float | None = None, live=None,
               metrics=None) -> APIRouter:
    """The routes of every group, on one router."""
    router = APIRouter()
    router.include_router(status_router(settings, holder, started_at or time.time(), live,
                                        metrics))
    router.include_router(transcriptions_router(settings, holder))
    return router


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
