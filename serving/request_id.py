"""Request ids: one per HTTP request (and per page transcription), in the ``X-Request-ID``
response header, in every log line written while the request is handled (serving.logs), and
available to error bodies through ``current_request_id()``.

A client may send its own ``X-Request-ID`` (a proxy's, say); it is kept when it is a short token
(letters, digits and ``-_.:``, at most 64), otherwise replaced, so a hostile header never reaches
the logs. The id lives in a context variable: it follows the request into ``anyio`` worker
threads, and the scheduler carries it to the model thread with each sequence.
"""
from __future__ import annotations

import contextlib
import contextvars
import re
import uuid

HEADER = "X-Request-ID"
_HEADER_BYTES = HEADER.lower().encode()
_SAFE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(value: str | bytes | None) -> str:
    """The client's id when it is safe to log and echo, else a new one."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if value and _SAFE.fullmatch(value) else new_request_id()


def current_request_id() -> str | None:
    return _current.get()


@contextlib.contextmanager
def request_id_scope(request_id: str | None = None):
    """Set the current request id (a new one by default) for the code inside."""
    token = _current.set(request_id or new_request_id())
    try:
        yield _current.get()
    finally:
        _current.reset(token)


class RequestIdMiddleware:
    """ASGI: every HTTP and WebSocket request gets an id (the client's, if safe); HTTP
    responses carry it in ``X-Request-ID``."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        given = next((v for k, v in scope.get("headers") or () if k == _HEADER_BYTES), None)
        rid = accept_request_id(given)
        token = _current.set(rid)

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers") or () if k != _HEADER_BYTES]
                headers.append((_HEADER_BYTES, rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
