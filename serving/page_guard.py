"""The page's Gradio routes, hardened where Gradio itself is not:

* ``error_text(exc)``: what the page (and gradio_client) shows for an error Gradio raised before
  or around our handler. Gradio shows such an exception's own text (the page is mounted with
  ``show_error=True`` so that our ``gr.Error`` reasons reach the user): the server's absolute
  path for a relative one ("Cannot move /srv/app/x.wav to the gradio cache dir"), "embedded null
  byte", "Original error: IndexError" with component reprs. Here each becomes a sentence about
  what the user sent; anything else is an internal error: logged under a request id, and the
  user sees the id only. ``install()`` puts it in front of Gradio's ``error_payload``.
* ``install()`` also takes from Gradio every way of fetching a URL on the server: a FileData
  whose ``path`` (or ``url``) is a URL made Gradio download it into its cache (private addresses
  refused, public ones and huggingface.co fetched), through every route that takes a file (the
  queue, run/predict, /gradio_api/call/NAME). The page's files are uploaded by the browser; no
  route reads a URL a client names (``RemoteFileRefused``, a sentence for the user).
* ``PageGuard``: an ASGI middleware answering ``/gradio_api/queue/data`` for a session the queue
  does not know (and ``/gradio_api/call/NAME/EVENT`` for an unknown event) with a plain 404
  before Gradio starts its event stream (Gradio raised the 404
  inside the stream, which uvicorn logged as "Exception in ASGI application" with a traceback,
  once per request).
"""
from __future__ import annotations

import html
import logging
import re
from pathlib import PurePath
from urllib.parse import parse_qs, urlsplit

from gradio.exceptions import Error as GradioError

from . import request_id
from .limits import ECHO_CHARS, escape_control

log = logging.getLogger("funasr_nano.app")

QUEUE_DATA = "/gradio_api/queue/data"
_CALL = re.compile(r"/gradio_api/(?:call|run)/([^/]+)/?$")
_CALL_RESULT = re.compile(r"/gradio_api/call/[^/]+/([^/]+)$")
_CANNOT_MOVE = re.compile(r"^Cannot move (.*) to the gradio cache dir", re.S)


class RemoteFileRefused(GradioError):
    """A request named a file by URL: this server never fetches one for a client. A gr.Error:
    its message is the user's (Gradio shows it as HTML: the name is escaped), no traceback."""

    def __init__(self, url):
        name = PurePath(urlsplit(str(url)).path).name or "file"
        super().__init__(f"{html.escape(escape_control(name)[:ECHO_CHARS])}: not a file "
                         "uploaded to this page (files given by URL are not fetched); upload "
                         "the file and try again", print_exception=False)


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
        return FIT_MESSAGE
    if _raised_by_gradio(exc):
        # Gradio's own code (its examples handler, its payload models) choking on a value the
        # client sent: the client's mistake, not a fault of ours
        log.warning("request %s: page request refused: %s", request_id.current(),
                    escape_control(f"{type(exc).__name__}: {text}")[:300], exc_info=exc)
        if any("processing_utils" in f.filename for f in _frames(exc)):
            return ("a file in the request is not one uploaded to this page; upload the file "
                    "and try again")
        return FIT_MESSAGE
    return request_id.internal_error(log, "page request", exc)


def _validation(exc: BaseException | None) -> bool:
    """A request model's ValidationError (pydantic's, FastAPI's), or one that led to ``exc``
    (FastAPI's answer to it failing: an infinite number cannot be written back as JSON)."""
    seen = 0
    while exc is not None and seen < 5:
        if type(exc).__name__.endswith("ValidationError"):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _frames(exc: BaseException):
    import traceback
    return traceback.extract_tb(exc.__traceback__)


FIT_MESSAGE = ("the request's values do not fit this page's inputs (the files, the microphone, "
               "the language, ITN, the hotwords, the speakers, the known speakers' names and "
               "their clips, the watch list, in that order); reload the page and try again")
_INPUT_ERRORS = (TypeError, ValueError, LookupError, AttributeError)


_LIBRARY = ("/gradio/", "/gradio_client/", "/pydantic/", "/pydantic_core/", "/safehttpx/",
            "/httpx/", "/httpcore/")
_OURS = ("/serving/ui.py", "/serving/files_tab.py", "/serving/pipeline.py", "/engine/", "/model.py")


def _raised_by_gradio(exc: BaseException) -> bool:
    """True for an exception raised in Gradio's (or pydantic's) code while it read a request's
    values: the innermost frame is theirs, and either it is a TypeError/ValueError/... or no
    frame of this project's code is on the way (it never reached our handlers). Logged with
    its traceback (serving.logs), so a Gradio bug is not lost; the client gets a 400."""
    tb, frames = exc.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    if not frames or not any(part in frames[-1] for part in _LIBRARY):
        return False
    ours = any(part in f for f in frames for part in _OURS)
    return isinstance(exc, (*_INPUT_ERRORS, ArithmeticError)) or not ours


def _refuse_fetching() -> None:
    """Gradio's download functions (processing_utils: every server-side fetch of a URL named in
    a request: preprocessing a FileData, a file component's value, an image or audio by URL)
    replaced by a refusal. Patched on the module: Gradio calls them as
    ``processing_utils.NAME``, so each call site (blocks, components) gets the refusal."""
    import gradio.processing_utils as pu

    def refuse(url=None, *args, **kwargs):
        log.info("request %s: a file given by URL refused (not fetched): %s",
                 request_id.current(), escape_control(str(url))[:200])
        raise RemoteFileRefused(url)

    async def refuse_async(url=None, *args, **kwargs):
        refuse(url)

    for name in ("ssrf_protected_download", "save_url_to_cache", "unsafe_download"):
        setattr(pu, name, refuse)
    for name in ("async_ssrf_protected_download", "async_ssrf_protected_get"):
        setattr(pu, name, refuse_async)


def install() -> None:
    """Route Gradio's error payloads through ``error_text`` and refuse every fetch of a URL a
    client names (idempotent)."""
    import gradio.queueing
    import gradio.utils
    from gradio.exceptions import Error as AppError

    original = gradio.utils.error_payload
    if getattr(original, "_funasr_nano", False):
        return
    _refuse_fetching()

    def error_payload(error, show_error):
        if error is not None and not isinstance(error, AppError) and show_error:
            return {"error": error_text(error), "visible": True}
        return original(error, show_error)

    error_payload._funasr_nano = True
    gradio.utils.error_payload = error_payload
    gradio.queueing.error_payload = error_payload


def _api_names(blocks) -> set:
    return {getattr(fn, "api_name", None) for fn in getattr(blocks, "fns", {}).values()}


class PageGuard:
    """See the module docstring. ``blocks``: the mounted gr.Blocks (its queue)."""

    def __init__(self, app, blocks):
        self.app, self.blocks = app, blocks

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "GET":
            path = scope["path"]
            queue = getattr(self.blocks, "_queue", None)
            sessions = getattr(queue, "pending_messages_per_session", None)
            if sessions is not None and path.endswith(QUEUE_DATA):
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                if (query.get("session_hash") or [""])[0] not in sessions:
                    return await _not_found(send)
            elif sessions is not None and _CALL_RESULT.search(path):
                # the result stream of /gradio_api/call/NAME: Gradio looks the event up the
                # same way and raises its 404 inside the stream
                event_id = _CALL_RESULT.search(path).group(1)
                pending = getattr(queue, "pending_event_ids_session", {}) or {}
                if (event_id not in getattr(queue, "event_ids_to_events", {})
                        and event_id not in sessions
                        and not any(event_id in ids for ids in pending.values())):
                    return await _not_found(send)
        if scope["type"] != "http" or scope["path"].startswith("/v1"):
            return await self.app(scope, receive, send)   # /v1/*: serving.guard answers
        named = _CALL.search(scope["path"]) if scope.get("method") == "POST" else None
        # "predict": the page's own route for its events, which name their function by
        # fn_index in the body (queue=False events post to /gradio_api/run/predict)
        if named and named.group(1) != "predict" and named.group(1) not in _api_names(self.blocks):
            return await _json(send, 404, {"detail": f"no such function: "
                                           f"{escape_control(named.group(1))[:ECHO_CHARS]}"})
        started = held = False
        body = bytearray()

        async def tracked(message):
            # Starlette's ServerErrorMiddleware (inside Gradio's app) answers an exception with
            # a plain "Internal Server Error" 500 and raises it on, and /gradio_api/run/predict
            # answers every error 500 (a user's mistake too): that answer is held back and
            # replaced below (a 400 for the client's values, else a 500 with a request id)
            nonlocal started, held
            if message["type"] == "http.response.start" and message["status"] == 500:
                held = True
            if held:
                if message["type"] == "http.response.body" and len(body) < 65536:
                    body.extend(message.get("body", b"")[:65536])
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
            if held:
                said = _user_error(bytes(body))
                if said is not None:    # run/predict's answer to the client's mistake
                    return await _json(send, 400, said)
                message = request_id.internal_error(log, f"page request {scope['path'][:200]}")
                await _json(send, 500, {"detail": message})
            return
        except Exception as e:  # noqa: BLE001
            # an exception out of a Gradio route (its request models rejecting a client's
            # values): uvicorn would log "Exception in ASGI application" with the traceback
            if started:   # answered already (Gradio's 500): the details go to our log
                request_id.internal_error(log, f"page request {scope['path'][:200]}", e)
                return
            if _raised_by_gradio(e) or _validation(e):
                log.info("page request %s %s refused: %s", scope.get("method"),
                         escape_control(scope["path"])[:200],
                         escape_control(f"{type(e).__name__}: {e}")[:300])
                return await _json(send, 400, {"detail": FIT_MESSAGE})
            message = request_id.internal_error(log, f"page request {scope['path'][:200]}", e)
            return await _json(send, 500, {"detail": message})


def _user_error(body: bytes) -> dict | None:
    """Gradio's error payload (``{"error": ...}``) when it holds a sentence for the user (a
    gr.Error, or error_text's answer to the client's values), else None (an internal error:
    error_text logged it under a request id)."""
    import json
    try:
        content = json.loads(body)
    except ValueError:
        return None
    said = content.get("error") if isinstance(content, dict) else None
    if not isinstance(said, str) or not said or said.startswith("internal error"):
        return None
    return content


async def _not_found(send) -> None:
    await _json(send, 404, {"detail": "no such session or event: join the queue first"})


async def _json(send, status: int, content: dict) -> None:
    import json
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
