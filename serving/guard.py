"""The ASGI middleware in front of everything: what a request must pass before any route sees it.

For every HTTP request:
* a request id (serving.request_id), sent back as ``X-Request-ID``;
* body timeouts: a body that pauses longer than ``--body-timeout``, or that after that long
  averages under ``MIN_BODY_RATE``, is answered 408 and the connection closed (a client that
  announces 2.5 MB and sends 120 KB no longer holds a connection forever).

For /v1/* (and the page's upload route, for the cap):
* a stopping server (``Lifecycle.draining``) answers new requests 503;
* the key (or Basic auth) is checked from the headers, before the body is read (401);
* ``Content-Length`` over ``--max-upload-mb`` is 413 before reading; a chunked body as soon as
  it passes the limit;
* at most ``--max-uploads`` request bodies are received at once (503 with Retry-After beyond),
  and at most ``--max-uploads-per-client`` of them from one client address, so one client's
  slow uploads cannot hold every slot;
* an error no route handled is a 500 in the OpenAI shape with the request id, and a request
  still running when the stop grace period (``--stop-timeout``) ends is answered 503.
WebSocket connections pass through (/v1/realtime checks its own credentials before accepting).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

from . import request_id
from .access import access_required, credentials_ok, denied_response
from .errors import error_body, is_api

log = logging.getLogger("funasr_nano.app")

FORM_SLACK_BYTES = 1 << 20          # multipart headers and the small form fields around a file
MIN_BODY_RATE = 16 * 1024           # bytes/s a body must average once --body-timeout has passed
UPLOAD_PATHS = ("/gradio_api/upload",)   # the page's uploads count against --max-uploads too
PAGE_API = "/gradio_api/"


@dataclass
class Lifecycle:
    """Shared between app.py's server and the middleware: set ``draining`` when a stop begins."""
    draining: bool = False


class RequestGuard:
    def __init__(self, app, settings, lifecycle: Lifecycle | None = None):
        self.app, self.settings = app, settings
        self.lifecycle = lifecycle or Lifecycle()
        self.uploads = 0   # bodies being received now (counted ones); one event loop: no lock
        self.per_client: dict[str, int] = {}   # the same, per client address

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        rid = request_id.accept(headers.get(b"x-request-id"))
        token = request_id.set_current(rid)
        try:
            await _Exchange(self, scope, receive, send, headers, rid).run()
        finally:
            request_id.reset(token)


class _Exchange:
    """One HTTP request through the guard."""

    def __init__(self, guard: RequestGuard, scope, receive, send, headers, rid):
        self.guard, self.scope, self._receive, self._send = guard, scope, receive, send
        self.headers, self.rid = headers, rid
        # Under a mount or a Ray Serve route prefix the path starts with root_path.
        path, root = scope["path"], scope.get("root_path") or ""
        self.path = path[len(root):] if root and path.startswith(root) else path
        self.api = is_api(self.path)
        # the page's own requests (queue joins, calls): JSON of a few fields and file
        # references, bounded like a form's fields (its uploads have --max-upload-mb)
        self.page_json = (self.path.startswith(PAGE_API) and self.path not in UPLOAD_PATHS)
        self.started = self.rejected = False
        self.body_done = not self._has_body()
        self.counted = False
        client = scope.get("client")
        self.client = str(client[0]) if client else "?"

    def _has_body(self) -> bool:
        length = self.headers.get(b"content-length")
        return (length is not None and length.strip() not in (b"", b"0")) or \
            b"chunked" in self.headers.get(b"transfer-encoding", b"").lower()

    async def run(self):
        guard, settings = self.guard, self.guard.settings
        if self.api:
            if guard.lifecycle.draining:
                return await self.reject(503, "the server is shutting down; retry on another "
                                         "instance or later", "shutting_down")
            if access_required(settings) and not credentials_ok(
                    self.headers.get(b"authorization", b"").decode("latin-1"), settings):
                return await self.respond(denied_response(settings))
            length = self.headers.get(b"content-length")
            if length is not None and (not length.strip().isdigit() or
                                       int(length) > self.upload_limit()):
                if not length.strip().isdigit():
                    return await self.reject(400, "invalid Content-Length", None)
                return await self.too_large(int(length))
        if self.page_json:
            length = self.headers.get(b"content-length")
            if length is not None and length.strip().isdigit() and \
                    int(length) > FORM_SLACK_BYTES:
                return await self.too_large(int(length), FORM_SLACK_BYTES)
        if not self.body_done and (self.api or self.path in UPLOAD_PATHS):
            if guard.uploads >= settings.max_uploads:
                return await self.reject(503, f"this server receives at most "
                                         f"{settings.max_uploads} uploads at once; retry shortly",
                                         "too_many_uploads", {"Retry-After": "2"})
            per_client = settings.uploads_per_client
            if guard.per_client.get(self.client, 0) >= per_client:
                return await self.reject(503, f"this server receives at most {per_client} "
                                         "uploads at once from one client; retry when one "
                                         "has finished", "too_many_uploads",
                                         {"Retry-After": "2"})
            guard.uploads += 1
            guard.per_client[self.client] = guard.per_client.get(self.client, 0) + 1
            self.counted = True
        try:
            await self.guard.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            # uvicorn cancels what is still running when the stop grace period ends
            if self.api and not self.started and not self.rejected:
                await self.reject(503, "the server is shutting down; the request did not finish "
                                  "in time", "shutting_down")
                # answered: end the task here rather than hand uvicorn a CancelledError that it
                # logs as "Exception in ASGI application" with a traceback at every stop
                return
            raise
        except Exception as e:  # noqa: BLE001
            if self.rejected:
                return          # we answered already; the app saw a disconnect and gave up
            if not self.api or self.started:
                raise
            message = request_id.internal_error(log, f"{self.scope['method']} {self.path}", e)
            await self.reject(500, message, "internal_error")
        finally:
            self.release()

    # ------------------------------------------------------------------ body
    def upload_limit(self) -> int:
        return self.guard.settings.max_upload_bytes + FORM_SLACK_BYTES

    def release(self):
        if self.counted:
            self.counted = False
            self.guard.uploads -= 1
            left = self.guard.per_client.get(self.client, 1) - 1
            if left > 0:
                self.guard.per_client[self.client] = left
            else:
                self.guard.per_client.pop(self.client, None)

    async def receive(self):
        if self.rejected:
            return {"type": "http.disconnect"}
        if self.body_done:
            return await self._receive()   # waiting for a disconnect: no deadline
        timeout = self.guard.settings.body_timeout
        if not hasattr(self, "_t0"):
            self._t0, self._seen = time.monotonic(), 0
        try:
            message = await asyncio.wait_for(self._receive(), timeout)
        except asyncio.TimeoutError:
            return await self._timed_out(f"no data for {timeout:g} s")
        if message["type"] == "http.request":
            self._seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.body_done = True
                self.release()
            elif self.api and self._seen > self.upload_limit():
                await self.too_large(self._seen)
                return {"type": "http.disconnect"}
            elif self.page_json and self._seen > FORM_SLACK_BYTES:
                await self.too_large(self._seen, FORM_SLACK_BYTES)
                return {"type": "http.disconnect"}
            elapsed = time.monotonic() - self._t0
            if not self.body_done and elapsed > timeout and self._seen < MIN_BODY_RATE * elapsed:
                return await self._timed_out(f"{self._seen / elapsed / 1024:.1f} KB/s, under the "
                                             f"{MIN_BODY_RATE // 1024} KB/s required")
        return message

    async def _timed_out(self, why: str):
        log.info("request %s: %s %s: body too slow (%s)", self.rid, self.scope["method"],
                 self.path, why)
        await self.reject(408, f"the request body arrived too slowly ({why}); send it at once",
                          "request_timeout")
        return {"type": "http.disconnect"}

    async def too_large(self, size: int, limit: int | None = None):
        if limit is not None:
            return await self.reject(413, f"a request of {size / (1 << 20):.1f} MB is over this "
                                     f"route's limit of {limit / (1 << 20):g} MB",
                                     "request_too_large")
        mb = self.guard.settings.max_upload_mb
        return await self.reject(413, f"upload of {size / (1 << 20):.1f} MB is over this "
                                 f"server's limit of {mb:g} MB", "file_too_large", param="file")

    # ------------------------------------------------------------------ answers
    async def send(self, message):
        if self.rejected:
            return
        if message["type"] == "http.response.start":
            self.started = True
            hdrs = list(message.get("headers") or [])
            if not any(k.lower() == b"x-request-id" for k, _ in hdrs):
                hdrs.append((b"x-request-id", self.rid.encode()))
            message = {**message, "headers": hdrs}
        await self._send(message)

    async def reject(self, status: int, message: str, code: str | None,
                     headers: dict | None = None, param: str | None = None):
        """Answer ``status`` in the OpenAI shape (if nothing was sent yet) and close; whatever
        the app sends afterwards is dropped."""
        if self.started or self.rejected:
            self.rejected = True
            return
        body = error_body(status, message, param, code)
        if not self.api:   # Gradio's routes speak {"detail": ...}
            body = {"detail": message}
        await self.respond(_json(status, body, {**(headers or {}), "Connection": "close"}))

    async def respond(self, response):
        await self.send({"type": "http.response.start", "status": response.status_code,
                         "headers": response.raw_headers})
        await self.send({"type": "http.response.body", "body": response.body})
        self.rejected = True


def _json(status: int, body: dict, headers: dict):
    from starlette.responses import Response
    return Response(json.dumps(body), status_code=status, headers=headers,
                    media_type="application/json")
