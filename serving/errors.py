"""One error shape for every error on /v1/*: OpenAI's
``{"error": {"message", "type", "param", "code"}}``, whoever raises it (our routes, FastAPI's
validation, the multipart parser, an unknown path or method, an internal error). Internal errors
are logged with the request id and the body gives only the id (serving.request_id).
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from . import request_id

log = logging.getLogger("funasr_nano.app")

API_PREFIX = "/v1/"
_TEXT = {400: "bad request", 401: "authentication required", 403: "forbidden",
         404: "not found", 405: "method not allowed", 408: "request timeout",
         413: "request too large", 429: "too many requests", 500: "internal error",
         503: "service unavailable"}


def error_body(status: int, message: str, param: str | None = None,
               code: str | None = None) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 401:
        kind = "authentication_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(status: int, message: str, param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status,
                        headers=headers)


def is_api(path: str) -> bool:
    return path.startswith(API_PREFIX) or path == API_PREFIX.rstrip("/")


def install_handlers(app: FastAPI) -> None:
    """Exception handlers that answer in the OpenAI shape on /v1/* (elsewhere: FastAPI's own)."""
    from fastapi.exception_handlers import (http_exception_handler,
                                            request_validation_exception_handler)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if not is_api(request.url.path):
            return await http_exception_handler(request, exc)
        cause = exc.__cause__
        if isinstance(cause, MultiPartException):   # the parser's own reason: clear, not internal
            message = f"the multipart form cannot be read: {cause.message}"
        elif isinstance(exc.detail, str) and exc.detail and exc.status_code < 500:
            message = exc.detail
        else:
            message = _TEXT.get(exc.status_code, "error")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(exc.status_code, message, None, code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        if not is_api(request.url.path):
            return await request_validation_exception_handler(request, exc)
        first = (exc.errors() or [{}])[0]
        loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query")]
        return error_response(400, f"{'.'.join(loc) or 'request'}: {first.get('msg', 'invalid')}",
                              loc[-1] if loc else None)


def install_fallback(app: FastAPI) -> None:
    """404 (or 405 with Allow) for /v1/* paths no route takes, instead of the Gradio page's
    answer. Call it after every /v1 HTTP route is added and before the page is mounted."""
    from starlette.routing import Match, Mount

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    async def not_found(request: Request):
        path, allowed = request.url.path, []
        others = [r for r in app.router.routes
                  if r is not fallback and not isinstance(r, Mount)]
        for method in methods:   # which methods some other route takes on this path
            scope = {**request.scope, "method": method}
            if any(r.matches(scope)[0] == Match.FULL for r in others):
                allowed.append(method)
        if allowed:
            return error_response(405, f"{request.method} is not allowed on {path}", None,
                                  "method_not_allowed", headers={"Allow": ", ".join(allowed)})
        return error_response(404, f"no such endpoint: {path}", None, "not_found")

    app.add_api_route("/v1/{rest:path}", not_found, include_in_schema=False, methods=methods)
    fallback = app.router.routes[-1]


def internal_error_response(what: str, exc: BaseException | None = None) -> JSONResponse:
    """A 500 whose body holds only the request id; the details go to the log."""
    return error_response(500, request_id.internal_error(log, what, exc), None, "internal_error")
