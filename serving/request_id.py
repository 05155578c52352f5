"""Request ids: one per HTTP request, in a context variable, sent back as ``X-Request-ID``.

The id ties a client's error to the server log: internal errors are logged with it and the body
says only "internal error (request id ...)"; every ``--log-format json`` line carries it
(serving.logs) and the scheduler takes it as the request's caller identity. serving.guard sets it for every HTTP request; code
running elsewhere (Gradio's queue workers) gets a fresh one from ``current()``. A client may send
its own ``X-Request-ID`` (up to 64 of ``A-Za-z0-9._:-``); anything else is replaced.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import uuid

HEADER = "X-Request-ID"
_VALID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def accept(value: bytes | None) -> str:
    """The client's id when it is well formed, else a new one."""
    return value.decode() if value and _VALID.fullmatch(value) else new_id()


def set_current(rid: str) -> contextvars.Token:
    return _current.set(rid)


def reset(token: contextvars.Token) -> None:
    _current.reset(token)


def current() -> str:
    """This request's id (a new one, remembered for this context, outside a request)."""
    rid = _current.get()
    if rid is None:
        rid = new_id()
        _current.set(rid)
    return rid


def peek() -> str | None:
    """This request's id, or None outside a request (log lines; never makes one)."""
    return _current.get()


@contextlib.contextmanager
def request_id_scope(rid: str | None = None):
    """A request id (a new one by default) for the code inside: a page transcription gets one
    for its log lines and as its caller identity in the scheduler."""
    token = _current.set(rid or new_id())
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def internal_error(log: logging.Logger, what: str, exc: BaseException | None = None) -> str:
    """Log ``what`` with the traceback of ``exc`` under the request id; return the text a client
    may see instead (no exception text, no paths)."""
    rid = current()
    log.error("request %s: %s", rid, what, exc_info=exc)
    return f"internal error (request id {rid})"
