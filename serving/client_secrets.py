"""Short-lived client secrets for ``/v1/realtime``, as OpenAI mints them for browsers.

A browser cannot set an ``Authorization`` header on a WebSocket, and a long-lived key must never
reach a page. So a trusted party (a server holding the key, or the page's own authenticated
Gradio session) asks for a client secret:

    POST /v1/realtime/client_secrets      (Authorization as for /v1/*)
    {"expires_after": {"anchor": "created_at", "seconds": 600},        # optional, 10..7200
     "session": {"type": "transcription", "audio": {"input": {...}}}}  # optional
    -> {"value": "ek_...", "expires_at": 1767225600, "session": {...}}

and the browser connects with it in OpenAI's WebSocket subprotocol:

    new WebSocket(url, ["realtime", "openai-insecure-api-key." + value])

(``Authorization: Bearer ek_...`` works too, for clients that can set headers.) Here a secret is
bound to one session: it opens one WebSocket and is spent; after ``expires_at`` it opens none.
The session it was minted with is the WebSocket session's starting configuration. A WebSocket
that needs credentials and offers no valid key or secret is refused before it is accepted
(HTTP 401 where the server can answer the handshake, else close 1008).

Without ``--api-key`` and ``--auth`` nothing needs proving: the route mints secrets for anyone
(the page uses the same flow either way) and the WebSocket takes clients with or without one.
"""
from __future__ import annotations

import hmac
import secrets as _secrets
import threading
import time

from fastapi import APIRouter, Request

from engine.errors import ParamError

from .access import access_required, check_access, credentials_ok
from .errors import error_response

PREFIX = "ek_"
SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
DEFAULT_SECONDS, MIN_SECONDS, MAX_SECONDS = 600, 10, 7200
MAX_OUTSTANDING = 1000      # unspent, unexpired secrets kept; the oldest goes first
MAX_BODY = 64 * 1024


class SecretError(ParamError):
    """A client-secret request or secret that cannot be honoured."""


class ClientSecrets:
    """The unspent secrets of this process (thread-safe); each holds its expiry and session."""

    def __init__(self, clock=time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._live: dict[str, tuple[float, dict | None]] = {}

    def mint(self, seconds: int = DEFAULT_SECONDS, session: dict | None = None) -> dict:
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not (
                MIN_SECONDS <= seconds <= MAX_SECONDS):
            raise SecretError(f"expires_after.seconds must be a whole number from {MIN_SECONDS}"
                              f" to {MAX_SECONDS}", "expires_after.seconds")
        if session is not None:
            if not isinstance(session, dict):
                raise SecretError("session must be an object", "session")
            if session.get("type", "transcription") != "transcription":
                raise SecretError("this server has transcription sessions only: session.type "
                                  "must be 'transcription'", "session.type")
        value = PREFIX + _secrets.token_urlsafe(24)
        expires_at = int(self._clock()) + seconds
        with self._lock:
            self._forget_expired()
            while len(self._live) >= MAX_OUTSTANDING:
                self._live.pop(next(iter(self._live)))
            self._live[value] = (expires_at, session)
        return {"value": value, "expires_at": expires_at,
                "session": {"type": "transcription", **(session or {})}}

    def redeem(self, value: str) -> tuple[bool, dict | None]:
        """(True, the secret's session) and the secret is spent; (False, None) for an unknown,
        spent or expired one."""
        with self._lock:
            self._forget_expired()
            for known in list(self._live):
                if hmac.compare_digest(known.encode(), value.encode()):
                    _, session = self._live.pop(known)
                    return True, session
        return False, None

    def _forget_expired(self) -> None:
        now = self._clock()
        for value in [v for v, (exp, _) in self._live.items() if exp <= now]:
            del self._live[value]


def offered_secret(ws) -> str | None:
    """The secret a WebSocket handshake offers: OpenAI's subprotocol, or a Bearer ek_ header."""
    for p in ws.headers.get("sec-websocket-protocol", "").split(","):
        p = p.strip()
        if p.startswith(SUBPROTOCOL_PREFIX):
            return p[len(SUBPROTOCOL_PREFIX):]
    scheme, _, value = ws.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip().startswith(PREFIX):
        return value.strip()
    return None


def check_websocket(ws, settings, store: ClientSecrets) -> tuple[object | None, dict | None]:
    """(denial response or None, the session a secret carries or None) for a /v1/realtime
    handshake. A secret offered is always spent, even where none is needed."""
    secret = offered_secret(ws)
    ok, session = store.redeem(secret) if secret else (False, None)
    if ok or not access_required(settings) or credentials_ok(ws.headers.get("authorization"),
                                                             settings):
        return None, session
    return check_access(ws, settings), None


def apply_session(conn, session: dict) -> None:
    """Start a realtime connection (serving.realtime.connection.Connection) with the session its secret
    was minted with; a bad setting is an ``error`` event, as the same session.update would be."""
    try:
        conn.config.update_ga(session)
        conn.live.configure(**conn.config.live_changes())
    except ValueError as e:
        conn.error(f"the client secret's session: {e}", getattr(e, "code", "invalid_value"),
                   getattr(e, "param", None))


def create_router(settings, store: ClientSecrets) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/realtime/client_secrets")
    async def client_secrets(request: Request):
        denied = check_access(request, settings)
        if denied is not None:
            return denied
        body = await request.body()
        if len(body) > MAX_BODY:
            return error_response(413, f"the request body is over {MAX_BODY // 1024} KB", None,
                                  "request_too_large")
        try:
            import json
            data = json.loads(body) if body.strip() else {}
            if not isinstance(data, dict):
                raise SecretError("the body must be a JSON object")
            after = data.get("expires_after") or {}
            if not isinstance(after, dict):
                raise SecretError("expires_after must be an object", "expires_after")
            if after.get("anchor", "created_at") != "created_at":
                raise SecretError("expires_after.anchor must be 'created_at'",
                                  "expires_after.anchor")
            return store.mint(after.get("seconds", DEFAULT_SECONDS), data.get("session"))
        except ValueError as e:
            param = getattr(e, "param", None)
            message = str(e) if isinstance(e, SecretError) else "the body is not valid JSON"
            return error_response(400, message, param, "invalid_request_error")

    return router
