"""The page's Gradio routes, hardened where Gradio itself is not:

* ``error_text(exc)``: what the page (and gradio_client) shows for an error Gradio raised before
  or around our handler. Gradio shows such an exception's own text (the page is mounted with
  ``show_error=True`` so that our ``gr.Error`` reasons reach the user): the server's absolute
  path for a relative one ("Cannot move /srv/app/x.wav to the gradio cache dir"), "embedded null
  byte", "Original error: IndexError" with component reprs. Here each becomes a sentence about
  what the user sent; anything else is an internal error: logged under a request id, and the
  user sees the id only. ``install()`` puts it in front of Gradio's ``error_payload``.
* ``PageGuard``: an ASGI middleware answering ``/gradio_api/queue/data`` for a session the queue
  does not know with a plain 404 before Gradio starts its event stream (Gradio raised the 404
  inside the stream, which uvicorn logged as "Exception in ASGI application" with a traceback,
  once per request).
"""
from __future__ import annotations

import logging
import re
from pathlib import PurePath
from urllib.parse import parse_qs

from . import request_id
from .limits import ECHO_CHARS, escape_control

log = logging.getLogger("funasr_nano.app")

QUEUE_DATA = "/gradio_api/queue/data"
_CANNOT_MOVE = re.compile(r"^Cannot move (.*) to the gradio cache dir", re.S)


def error_text(exc: BaseException) -> str:
    """A user's sentence for an exception Gradio would show as its own text."""
    text = str(exc)
    moved = _CANNOT_MOVE.match(text)
    if moved or type(exc).__name__ == "InvalidPathError":
        name = PurePath(moved.group(1)).name if moved else "input"
        return (f"{escape_control(name)[:ECHO_CHARS]}: not a file uploaded to this page; "
                "upload the file and try again")
    if "null byte" in text or "null character" in text:
        return ("a file name or value contains a null character; upload the file again or "
                "correct the value")
    if ("didn't receive enough input values" in text or "Original error" in text
            or "Could not preprocess" in text or "Could not postprocess" in text):
        return ("the request's values do not fit this page's inputs (the files, the "
                "microphone, the language, ITN and the hotwords, in that order); reload the "
                "page and try again")
    return request_id.internal_error(log, "page request", exc)


def install() -> None:
    """Route Gradio's error payloads through ``error_text`` (idempotent)."""
    import gradio.queueing
    import gradio.utils
    from gradio.exceptions import Error as AppError

    original = gradio.utils.error_payload
    if getattr(original, "_funasr_nano", False):
        return

    def error_payload(error, show_error):
        if error is not None and not isinstance(error, AppError) and show_error:
            return {"error": error_text(error), "visible": True}
        return original(error, show_error)

    error_payload._funasr_nano = True
    gradio.utils.error_payload = error_payload
    gradio.queueing.error_payload = error_payload


class PageGuard:
    """See the module docstring. ``blocks``: the mounted gr.Blocks (its queue)."""

    def __init__(self, app, blocks):
        self.app, self.blocks = app, blocks

    async def __call__(self, scope, receive, send):
        if (scope["type"] == "http" and scope["path"].endswith(QUEUE_DATA)
                and scope.get("method") == "GET"):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            session = (query.get("session_hash") or [""])[0]
            queue = getattr(self.blocks, "_queue", None)
            known = getattr(queue, "pending_messages_per_session", None)
            if known is not None and session not in known:
                return await _not_found(send)
        return await self.app(scope, receive, send)


async def _not_found(send) -> None:
    body = b'{"detail":"no such session: join the queue first"}'
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
