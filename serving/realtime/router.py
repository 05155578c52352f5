"""The ``/v1/realtime`` route: access (key, login or client secret) before the socket opens,
the intent, a live slot, then one serving.realtime.connection.Connection per socket.
"""
from __future__ import annotations

import json
import logging

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketState

from .. import client_secrets
from ..live import LiveSessions, TooManySessions
from .connection import Connection
from .protocol import CLOSE_ERROR, CLOSE_POLICY, CLOSE_TRY_LATER, ClientError, error_event, new_id

log = logging.getLogger("funasr_nano.app")


def _subprotocol(ws: WebSocket) -> str | None:
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
    return "realtime" if "realtime" in offered else None


def create_router(settings, holder, sessions: LiveSessions,
                  secrets: client_secrets.ClientSecrets | None = None) -> APIRouter:
    router = APIRouter()
    secrets = secrets or client_secrets.ClientSecrets()
    webhook = None
    if getattr(settings, "alert_webhook", None):
        from compliance.alerts import WebhookSender   # live alerts POSTed (--alert-webhook)
        webhook = WebhookSender(settings.alert_webhook, settings.alert_webhook_secret)

    @router.websocket("/v1/realtime")
    async def realtime(ws: WebSocket):
        # a key, a login, or a client secret (spent here): see serving/client_secrets.py
        denied, minted = client_secrets.check_websocket(ws, settings, secrets)
        if denied is not None:
            if "websocket.http.response" in ws.scope.get("extensions", {}):
                await ws.send_denial_response(denied)
            else:
                await ws.close(CLOSE_POLICY, "unauthorized")
            return
        intent = ws.query_params.get("intent")
        await ws.accept(subprotocol=_subprotocol(ws))
        conn = None
        try:
            if intent not in (None, "", "transcription"):
                raise ClientError(f"intent {intent[:40]!r} is not supported: this server "
                                  "serves transcription sessions (?intent=transcription)",
                                  "invalid_intent", "intent")
            slot = sessions.acquire()
        except (ClientError, TooManySessions) as e:
            code = e.code if isinstance(e, ClientError) else "session_limit"
            await ws.send_text(json.dumps({
                "event_id": new_id("event"),
                **error_event(str(e), code, getattr(e, "param", None))}))
            await ws.close(CLOSE_POLICY if isinstance(e, ClientError) else CLOSE_TRY_LATER,
                           code)
            return
        try:
            if not holder.loaded:
                holder.preload_in_background()   # loads while the client starts talking
            conn = Connection(ws, settings, holder, sessions)
            conn.alert_webhook = webhook
            sessions.attach(slot, conn.live)   # /metrics counts its audio
            if minted:
                client_secrets.apply_session(conn, minted)
            log.info("realtime %s: connected", conn.id)
            await conn.run()
        except Exception:  # noqa: BLE001 - one broken session must not take others down
            log.exception("realtime session failed")
            if ws.application_state == WebSocketState.CONNECTED:
                try:
                    await ws.close(CLOSE_ERROR, "internal error")
                except RuntimeError:
                    pass
        finally:
            sessions.release(slot)
            if conn is not None:
                log.info("realtime %s: closed", conn.id)

    return router
