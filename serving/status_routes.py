"""The service's own routes: GET /health (always answers: async, no lock), GET /metrics
(Prometheus, behind the same key or login as /v1/*) and GET /v1/models."""
from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .access import access_required, check_access, credentials_ok
from .errors import error_response


def status_router(settings, holder, started_at: float, live=None, metrics=None) -> APIRouter:
    router = APIRouter()

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

    return router
