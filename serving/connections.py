"""uvicorn's HTTP protocol with a header deadline: a connection whose request headers are not
complete ``limits.HEADER_TIMEOUT_S`` after it opened (or after its previous response) is closed.

uvicorn times out idle keep-alive connections only once a response is sent; a client that opens
a connection and sends half a request line, or a header a byte at a time, holds it (and a file
descriptor) for ever: 500 of them stayed open for the probe. The body has its own deadline
(serving.guard), WebSockets theirs (serving.realtime.connection).
"""
from __future__ import annotations

import logging

from .limits import HEADER_TIMEOUT_S, REALTIME_PONG_BEHIND_BYTES, escape_control

log = logging.getLogger("funasr_nano.app")


def protocol_class(timeout: float = HEADER_TIMEOUT_S):
    """A subclass of uvicorn's HTTP protocol (httptools when installed, else h11) with the
    header deadline."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderDeadline(AutoHTTPProtocol):
        _deadline = None
        _armed_for = None

        def _arm(self) -> None:
            self._disarm()
            self._armed_for = self.cycle   # a new request replaces self.cycle
            self._deadline = self.loop.call_later(timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.cycle is self._armed_for and not self.transport.is_closing():
                peer = "%s:%s" % self.client if self.client else "?"
                log.info("connection from %s: no complete request headers after %g s: closed",
                         escape_control(peer), timeout)
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()   # the next request on a kept-alive connection: a new deadline

        def handle_websocket_upgrade(self, *args) -> None:
            self._disarm()    # the WebSocket's own limits hold from here
            super().handle_websocket_upgrade(*args)

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadline


AFTER_CLOSE_BYTES = 64 << 10   # what a client may still send once the server has closed
CLOSE_WAIT_S = 2.0             # for the client's close frame, then the connection is dropped


def ws_protocol_class():
    """uvicorn's WebSocket protocol (websockets' sans-I/O one) made to let go of a client:

    * once the server has sent its close frame, uvicorn kept reading (and parsing) whatever the
      client sent for 10 s: a flooding client's frames, parsed on the event loop, held /health
      for seconds after its session was closed. Now the client has ``CLOSE_WAIT_S`` and
      ``AFTER_CLOSE_BYTES`` to answer, then the connection is dropped;
    * a client that did not answer a ping, or the close, was closed with ``transport.close()``,
      which waits until the client has read what is buffered for it: a client that never reads
      kept its connection (and its session slot) for ever. It is aborted instead.
    * the ping's timeout ran while the server itself was not reading (a throttled session: the
      app has not taken the message uvicorn holds): the client's pong, behind its messages,
      could not arrive, and a session the server was merely slowing down was closed with 1011.
      The timeout now waits while reading is paused, until ``REALTIME_PONG_BEHIND_BYTES`` have
      been read past the ping: a client that reads answers a ping at once, so its pong is
      behind at most what it had in flight then (the kernel buffers of both ends: a few MB).
      A client that never reads but keeps sending is still caught: the server reads on at the
      session's byte rate (serving.limits), past that much, and no pong has come.
    Returns uvicorn's "auto" when its implementation is another one (then without these)."""
    from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol)
    except ImportError:
        return "auto"
    if AutoWebSocketsProtocol is not WebSocketsSansIOProtocol:
        return "auto"

    class LetGo(WebSocketsSansIOProtocol):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.close_timeout = CLOSE_WAIT_S
            self._after_close = 0
            self._received = 0      # bytes read from the client, in all ...
            self._at_ping = 0       # ... when the last ping was sent

        def data_received(self, data: bytes) -> None:
            self._received += len(data)
            if self.close_sent:
                self._after_close += len(data)
                if self._after_close > AFTER_CLOSE_BYTES:
                    self.transport.abort()
                    return
            super().data_received(data)

        def send_keepalive_ping(self) -> None:
            self._at_ping = self._received
            super().send_keepalive_ping()

        def keepalive_timeout(self) -> None:
            if (self.read_paused and not self.close_sent and not self.transport.is_closing()
                    and self._received - self._at_ping < REALTIME_PONG_BEHIND_BYTES):
                # the server is not reading (the app has not taken a message: a session it
                # throttles): the client's pong may wait unread behind what it sent; look again
                # soon (past that many bytes read since the ping, no pong is coming)
                self.pong_timer = self.loop.call_later(min(2.0, self.ping_timeout),
                                                       self.keepalive_timeout)
                return
            super().keepalive_timeout()
            self.transport.abort()

        async def send(self, message) -> None:
            await super().send(message)
            if message.get("type") == "websocket.close" and self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = self.loop.call_later(self.close_timeout,
                                                        self.transport.abort)

    return LetGo
