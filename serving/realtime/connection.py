"""One ``/v1/realtime`` connection: the WebSocket loop (reading at a bounded rate, the
bounded outbox, idle and size limits, slow readers) and the session's lifecycle (its engine
LiveSession, compliance monitor, speaker labels). Event shapes and parsing:
serving.realtime.protocol.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path

import anyio
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from compliance.live import LiveMonitor
from compliance.report import render_html
from engine import SAMPLE_RATE
from engine.checkpoint import release_freed_memory
from engine.language_id import detect
from engine.live import LiveError, LiveEvent, LiveOptions, LiveSession

from .. import limits
from ..live import LiveSessions, decode_function
from ..model_holder import ModelUnavailable
from .protocol import (CLOSE_POLICY, CLOSE_TOO_BIG, ClientError, Config, append_audio,
                       engine_events, error_event, new_id, parse_event, pcm16_samples)

log = logging.getLogger("funasr_nano.app")

READ_AHEAD = 2   # messages read while a session is throttled (each at most the message limit)


class Connection:
    """One WebSocket: client events in, server events out, one engine LiveSession."""

    def __init__(self, ws: WebSocket, settings, holder, sessions: LiveSessions):
        self.ws, self.settings, self.holder, self.sessions = ws, settings, holder, sessions
        self.id = new_id("sess")
        # The model's folder name, not its path (the session object goes to every client).
        self.config = Config(Path(str(holder.info()["model"])).name or "fun-asr-nano")
        self.loop = asyncio.get_running_loop()
        # Server events, serialized, waiting for the client to read them: bounded per connection
        # (limits.REALTIME_OUTBOX_*); a client that leaves more unread is closed (slow reader).
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.outbox_bytes = 0
        self.slow_reader = False
        self._reader: anyio.CancelScope | None = None
        self._ahead: list[asyncio.Future] = []   # messages read during a pause (at most 2)
        self.events = limits.RateLimit(limits.REALTIME_EVENT_RATE, limits.REALTIME_EVENT_BURST)
        self.audio = limits.RateLimit(limits.REALTIME_AUDIO_SPEED, limits.REALTIME_AUDIO_BURST_S)
        self.bytes = limits.RateLimit(limits.REALTIME_BYTE_RATE, limits.REALTIME_BYTE_BURST)
        self.items: dict[int, str] = {}
        self.previous_item: str | None = None
        self.odd_byte = b""
        self.model_error_sent = False
        self.monitor: LiveMonitor | None = None   # compliance alerts (session.compliance)
        self.alert_webhook = None                 # compliance.alerts.WebhookSender, or None
        self.stable: dict[int, str] = {}
        self.speakers = online_speakers(ws, settings)   # ?speakers=auto: labels (extension)
        self.live = self._new_session()

    def _new_session(self) -> LiveSession:
        options = LiveOptions(max_new_tokens=self.settings.max_new_tokens,
                              batch_size=self.settings.batch_size, words=True,
                              **self.config.live_changes())
        decode = decode_function(self.holder, self.settings, self.sessions)

        def guarded(inputs, kind, **kw):
            if kind == "final" and _seconds(inputs) > limits.REALTIME_LIVE_FINAL_S:
                # a commit of a long buffer (engine.longform's segments, together over 30 s):
                # not a live utterance but long audio, decoded as the offline API decodes a long
                # file (serving.pipeline): "bulk", after everyone's clips and live utterances
                kw["priority"] = "bulk"
            try:
                if self.monitor is not None:   # watch terms as hotwords (docs/compliance.md)
                    kw["hotwords"] = self.monitor.hotwords(kw.get("hotwords"), self.holder.get())
                return decode(inputs, kind, **kw)
            except ModelUnavailable as e:
                self._threadsafe(self._model_unavailable, str(e))
                raise
        return LiveSession(guarded, options, on_event=lambda e: self._threadsafe(
            self._engine_event, e, self._speaker_of(e)), name=self.id)

    def _speaker_of(self, e: LiveEvent) -> str | None:
        """A completed utterance's speaker, on the session's worker thread (not the loop)."""
        if self.speakers is None or e.kind != "final":
            return None
        try:
            return self.speakers.label(e.start, e.end)
        except Exception:  # noqa: BLE001 - an optional label never costs the transcript
            log.exception("realtime %s: speaker labelling failed", self.id)
            return None

    def _threadsafe(self, fn, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass   # the loop is gone: the connection ended

    # -- sending
    def send(self, event: dict) -> None:
        if self.slow_reader:
            return
        text = json.dumps({"event_id": new_id("event"), **event}, ensure_ascii=False)
        if (self.outbox.qsize() >= limits.REALTIME_OUTBOX_EVENTS
                or self.outbox_bytes + len(text) > limits.REALTIME_OUTBOX_BYTES):
            # The client does not read what it is sent: drop its backlog and end the session
            # (an error event could not reach it either). See run().
            self.slow_reader = True
            while not self.outbox.empty():
                self.outbox.get_nowait()
            self.outbox_bytes = 0
            log.warning("realtime %s: the client left over %d events or %d KB unread: closed "
                        "(slow reader)", self.id, limits.REALTIME_OUTBOX_EVENTS,
                        limits.REALTIME_OUTBOX_BYTES >> 10)
            if self._reader is not None:
                self._reader.cancel()
            return
        self.outbox_bytes += len(text)
        self.outbox.put_nowait(text)

    def error(self, message: str, code: str, param: str | None = None,
              event_id: str | None = None, kind: str = "invalid_request_error") -> None:
        self.send(error_event(message, code, param, event_id, kind))

    async def _sender(self) -> None:
        try:
            while True:
                event = await self.outbox.get()
                if event is None:
                    return
                self.outbox_bytes -= len(event)
                await self.ws.send_text(event)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return   # the client is gone; the receiving side notices too

    async def flush_and_close(self, code: int, reason: str) -> None:
        self.outbox.put_nowait(None)
        with anyio.move_on_after(5):
            await self._send_task
        if self.ws.application_state == WebSocketState.CONNECTED:
            try:
                await self.ws.close(code, reason)
            except RuntimeError:
                pass

    # -- engine events (on the loop)
    def _item(self, n: int) -> str:
        if n not in self.items:
            self.items[n] = new_id("item")
        return self.items[n]

    def _engine_event(self, e: LiveEvent, speaker: str | None = None) -> None:
        item = self._item(e.item) if e.item is not None else None
        extra = None
        if e.kind == "final":
            extra = {**self._heard(e.text),
                     **({"speaker": speaker} if self.speakers is not None else {})}
        elif e.kind == "failed":
            log.warning("realtime %s: %s failed: %s", self.id, item, e.error)
        for event in engine_events(e, item, self.previous_item, extra):
            self.send(event)
        if e.kind == "committed":
            self.previous_item = item
        elif e.kind == "partial" and self.monitor is not None:
            self.stable[e.item] = self.stable.get(e.item, "") + e.delta
            self.monitor.on_partial(item, self.stable[e.item], e.start, e.end,
                                    self.config.language, e.text)
        elif e.kind == "final" and self.monitor is not None:   # compliance.alert events follow
            self.stable.pop(e.item, None)
            self.monitor.on_final(item, e.text, e.start, e.end, self.config.language,
                                  e.words, speaker)
        if e.kind in ("final", "failed"):
            self.items.pop(e.item, None)

    def _heard(self, text: str) -> dict:
        """Extension fields of a completed item with no language set: the one heard
        (engine.language_id, from the text: ``language``, ``language_name``,
        ``language_probability``)."""
        if self.config.language is not None:
            return {}
        return detect(text) or {}

    def _model_unavailable(self, message: str) -> None:
        if not self.model_error_sent:
            self.model_error_sent = True
            self.error(message, "model_unavailable", kind="server_error")

    # -- client events
    async def run(self) -> None:
        self._send_task = asyncio.create_task(self._sender())
        self.send({"type": "session.created", "session": self.config.ga(self.id)})
        idle = self.settings.live_idle_seconds
        limit = self.settings.live_max_message_bytes
        try:
            while True:
                await self._wait_for_finals()
                if self.slow_reader:
                    return await self._close_slow_reader()
                try:
                    with anyio.CancelScope() as self._reader:
                        with anyio.fail_after(idle):
                            message = await self._receive()
                except TimeoutError:
                    self.error(f"no message for {idle:g} s: the session is closed",
                               "idle_timeout")
                    return await self.flush_and_close(CLOSE_POLICY, "idle timeout")
                if self.slow_reader:
                    return await self._close_slow_reader()
                if message["type"] == "websocket.disconnect":
                    return
                text, data = message.get("text"), message.get("bytes")
                size = _size(text, data)
                if size > limit:
                    self.error(f"a message of {size / (1 << 20):.1f} MB is over this server's "
                               f"limit of {self.settings.live_max_message_mb:g} MB; send audio "
                               "in smaller appends",
                               "message_too_large")
                    return await self.flush_and_close(CLOSE_TOO_BIG, "message too big")
                # over either rate: read more slowly (limits). Events alone let a client send
                # 200 MB/s of 1 MB events, all parsed on the event loop: others waited seconds
                if not await self._pause(max(self.events.take_later(1),
                                             self.bytes.take_later(size))):
                    return   # the client left meanwhile
                if text is None:
                    self.error("binary messages are not supported: send JSON text events",
                               "invalid_event")
                    continue
                await self._handle(text)
                # let the sender run: the outbox grows only while the client does not read,
                # not because a burst of events was answered faster than this loop yields
                await asyncio.sleep(0)
                if self.slow_reader:
                    return await self._close_slow_reader()
        except WebSocketDisconnect:
            return
        finally:
            self.live.close()
            threading.Thread(target=_release_after, args=(self.live,), daemon=True,
                             name=f"{self.id}-release").start()
            if not self._send_task.done():
                self._send_task.cancel()
            for task in self._ahead:
                task.cancel()

    async def _wait_for_finals(self) -> None:
        """While this session has more than limits.REALTIME_PENDING_FINALS finals waiting for
        the model, its socket is not read (the client's sends block): a client cannot queue
        more work, and memory, than the model takes from it."""
        deadline = self.loop.time() + limits.REALTIME_FINALS_WAIT_S
        while (self.live.pending_finals > limits.REALTIME_PENDING_FINALS
               and self.loop.time() < deadline and not self.slow_reader):
            # re-checked twice a second, watching for the client leaving meanwhile
            if not await self._pause(min(0.5, max(0.01, deadline - self.loop.time()))):
                raise WebSocketDisconnect()

    async def _receive(self) -> dict:
        """The next message: one read ahead by ``_pause``, else from the socket."""
        if self._ahead:
            return await self._ahead.pop(0)
        return await self.ws.receive()

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (a rate limit, a full queue of finals), all of them, while watching
        the socket: False as soon as the client has gone (its slot is freed at once, not after
        the wait). At most ``READ_AHEAD`` messages are read meanwhile (handled next, in order);
        once they are, the rest of the wait is plain (a client that leaves after sending them
        is noticed when it ends). The wait ended at the first message read ahead: a client
        that kept sending was never slowed down."""
        if seconds <= 0:
            return True
        deadline = self.loop.time() + seconds
        while (rest := deadline - self.loop.time()) > 0:
            if self._ahead and self._ahead[-1].done():
                if _gone(self._ahead[-1]):
                    return False
                if len(self._ahead) >= READ_AHEAD:
                    await asyncio.sleep(rest)
                    return True
            if not self._ahead or self._ahead[-1].done():
                self._ahead.append(asyncio.ensure_future(self.ws.receive()))
            await asyncio.wait({self._ahead[-1]}, timeout=rest)
        return not (self._ahead and self._ahead[-1].done() and _gone(self._ahead[-1]))

    async def _close_slow_reader(self) -> None:
        """The client left too much unread: stop sending and close (1008) without waiting for
        it to read the close frame for long."""
        if not self._send_task.done():
            self._send_task.cancel()
        if self.ws.application_state == WebSocketState.CONNECTED:
            with anyio.move_on_after(2):
                try:
                    await self.ws.close(CLOSE_POLICY, "slow reader")
                except (RuntimeError, OSError, WebSocketDisconnect):
                    pass

    async def _handle(self, text: str) -> None:
        event_id = None
        try:
            event, kind, event_id = parse_event(text)
            handler = {"session.update": self._session_update,
                       "transcription_session.update": self._session_update,
                       "input_audio_buffer.append": self._append,
                       "input_audio_buffer.commit": self._commit,
                       "input_audio_buffer.clear": self._clear,
                       "compliance.report": self._compliance_report}[kind]
            await handler(event, kind)
        except ClientError as e:
            self.error(str(e), e.code, e.param, e.event_id or event_id)
        except LiveError as e:
            self.error(str(e), e.code, None, event_id)

    async def _session_update(self, event: dict, kind: str) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            raise ClientError("session must be an object", param="session")
        new = Config(self.config.model_name)
        new.__dict__.update(vars(self.config))
        if kind == "session.update":
            new.update_ga(session)
        else:
            new.update_legacy(session)
        try:
            self.live.configure(**new.live_changes())
        except ValueError as e:
            if isinstance(e, LiveError):
                raise
            raise ClientError(str(e), param="session") from None
        if new.compliance is not self.config.compliance:
            self._compliance_monitor(new)
        self.config = new
        if kind == "session.update":
            self.send({"type": "session.updated", "session": new.ga(self.id)})
        else:
            self.send({"type": "transcription_session.updated", "session": new.legacy(self.id)})

    def _compliance_monitor(self, new: Config) -> None:
        if new.compliance is None:
            self.monitor = None
            return
        det = new.compliance["detector"]
        det.find_text("", new.language)      # compile the watch list once, now
        self.monitor = LiveMonitor(det, self.send, self.id, new.compliance["partials"],
                                   webhook=self.alert_webhook)

    async def _compliance_report(self, event: dict, kind: str) -> None:
        """Extension: ``{"type": "compliance.report", "html": false}`` -> the session's audit
        report so far (``compliance.report`` with ``report`` and, if asked, ``html``)."""
        if self.monitor is None:
            raise ClientError("compliance is off in this session: send session.update with "
                              "session.compliance first", param="type")
        report = self.monitor.report()
        self.send({"type": "compliance.report", "report": report,
                   **({"html": render_html(report)} if event.get("html") else {})})

    async def _append(self, event: dict, kind: str) -> None:
        raw = append_audio(event)
        # over 2x real time (after a burst): read more slowly (limits.REALTIME_AUDIO_*)
        if not await self._pause(self.audio.take_later(len(raw) / 2 / self.config.rate)):
            raise WebSocketDisconnect()
        samples, self.odd_byte = pcm16_samples(self.odd_byte, raw)
        if samples is not None:
            await anyio.to_thread.run_sync(self.live.feed, samples)
            if self.speakers is not None:
                if self.speakers.rate != self.config.rate:   # the format changed: start over
                    self.speakers = online_speakers(self.ws, self.settings, self.config.rate)
                self.speakers.feed(samples)

    async def _commit(self, event: dict, kind: str) -> None:
        await anyio.to_thread.run_sync(self.live.commit)

    async def _clear(self, event: dict, kind: str) -> None:
        self.odd_byte = b""
        await anyio.to_thread.run_sync(self.live.clear)


def _gone(task: asyncio.Future) -> bool:
    """Whether a finished read says the client has gone."""
    return (task.cancelled() or task.exception() is not None
            or task.result()["type"] == "websocket.disconnect")


def _release_after(live: LiveSession, timeout: float = 120.0) -> None:
    """Once a closed session's running decode is over, the heap pages it freed go back to the
    OS. glibc keeps them in the arenas of the threads that used them (the session's worker,
    the model's): a client that committed 60 s at a time for 30 s left the server's RSS about
    100 MB up after it had gone (bench/abuse.py, queued_finals)."""
    deadline = time.monotonic() + timeout
    while live.pending_finals and time.monotonic() < deadline:
        time.sleep(0.5)
    release_freed_memory()


def _size(text: str | None, data: bytes | None) -> int:
    """A message's size in bytes; an ASCII text (every JSON event without raw non-ASCII) is
    not copied to count it (uvicorn lets messages up to 16 MB through to here)."""
    if text is None:
        return len(data or b"")
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _seconds(inputs) -> float:
    """Seconds of audio in one decode call's inputs (arrays at 16 kHz or (array, rate))."""
    total = 0.0
    for x in inputs:
        samples, rate = x if isinstance(x, tuple) else (x, SAMPLE_RATE)
        total += len(samples) / float(rate)
    return total


def online_speakers(ws, settings, rate: int = 24000):
    """Speaker labels for this session when its URL asks (``?speakers=auto``), else None."""
    if ws.query_params.get("speakers", "").lower() not in ("auto", "1", "true", "on"):
        return None
    from engine.speakers.online import OnlineSpeakers
    return OnlineSpeakers(rate, getattr(settings, "speaker_model", None))

