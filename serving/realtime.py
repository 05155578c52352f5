"""``/v1/realtime``: OpenAI's Realtime API in transcription mode, over a WebSocket.

    ws://HOST:7860/v1/realtime?intent=transcription      (Authorization as for /v1/*)

Client events: ``session.update`` (the GA shape: ``session.type = "transcription"``,
``session.audio.input.{format, transcription, turn_detection, noise_reduction}``) and the older
``transcription_session.update`` (``input_audio_format``, ``input_audio_transcription``,
``turn_detection``), ``input_audio_buffer.append`` / ``.commit`` / ``.clear``.

Server events: ``session.created``, ``session.updated`` (``transcription_session.updated`` for
the older update), ``input_audio_buffer.speech_started`` / ``.speech_stopped`` / ``.committed`` /
``.cleared``, ``conversation.item.input_audio_transcription.delta`` / ``.completed`` /
``.failed`` and ``error``, with OpenAI's payloads. Extensions, all additive:

* audio ``pcm16`` at 24 kHz (OpenAI's only rate) or 16 kHz (``format.rate: 16000``);
* ``transcription.prompt`` is the hotwords (comma separated), ``transcription.itn`` (bool) turns
  inverse text normalisation off; ``transcription.model`` is accepted and ignored;
* ``delta`` is the newly *stable* text of the open utterance (never taken back, so clients can
  append it); the delta event also carries ``partial`` (the whole current hypothesis) and
  ``start`` / ``end`` (seconds of session audio it covers);
* ``completed`` carries ``words`` (``[{word, start, end}]``, docs/timing.md), ``start`` / ``end``
  (seconds from the session's first sample) and
  ``usage: {"type": "duration", "seconds": ...}``; its ``transcript`` equals the offline API's
  text for those samples with the same options.

Limits, each with an ``error`` event and a close code: ``--live-sessions`` sessions at a time
(1013 try again later), ``--live-max-message-mb`` per message (1009 message too big),
``--live-idle-seconds`` without a message (1008). Malformed JSON, JSON nested deeper than 16
levels, unknown events and bad base64 get an ``error`` event and the session goes on. A client
that disconnects frees its session at once (its running decode finishes unseen).

Per connection (serving.limits, docs/security.md): events are read at most 200/s and audio at
most 2x real time (after bursts; beyond, the socket is read more slowly); while more than 2 of
the session's finals wait for the model the socket is not read; a client's values are echoed
cut short; a client that leaves 256 events or 1 MB unread is closed as a slow reader (1008).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
from pathlib import Path

import anyio
import numpy as np
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from compliance import service as compliance_service
from compliance.live import LiveMonitor
from compliance.report import render_html
from engine.language_id import detect
from engine.live import LiveError, LiveEvent, LiveOptions, LiveSession, VadOptions

from . import client_secrets, limits
from .live import LiveSessions, TooManySessions, decode_function
from .model_holder import ModelUnavailable
from .pipeline import RequestError, parse_hotwords, parse_language

log = logging.getLogger("funasr_nano.app")

RATES = (24000, 16000)
CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_TRY_LATER, CLOSE_ERROR = 1008, 1009, 1013, 1011
SUPPORTED_IGNORED = ("noise_reduction", "include", "input_audio_noise_reduction", "modalities",
                     "client_secret", "type", "object", "id", "expires_at")


_TOO_DEEP = object()


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


class ClientError(ValueError):
    def __init__(self, message: str, code: str = "invalid_value", param: str | None = None):
        super().__init__(message)
        self.code, self.param = code, param


# --------------------------------------------------------------------------- configuration

class Config:
    """The session's settings, in both of OpenAI's shapes."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.rate = 24000
        self.language: str | None = None
        self.prompt = ""
        self.itn = True
        self.vad: VadOptions | None = VadOptions()
        self.compliance = None     # compliance.live settings (extension: session.compliance)

    # -- reading updates (only the fields present change)
    def update_ga(self, session: dict) -> None:
        if session.get("type") not in (None, "transcription"):
            raise ClientError("this server has transcription sessions only: "
                              "session.type must be 'transcription'", param="session.type")
        audio = _obj(session.get("audio", {}), "session.audio")
        inp = _obj(audio.get("input", {}), "session.audio.input")
        if "format" in inp:
            self.rate = _rate(inp["format"], "session.audio.input.format")
        if "transcription" in inp:
            self._transcription(inp["transcription"], "session.audio.input.transcription")
        if "turn_detection" in inp:
            self._turn_detection(inp["turn_detection"], "session.audio.input.turn_detection")
        # Older fields inside session.update are read too (some clients mix the shapes).
        self.update_legacy(session)
        if "compliance" in session:
            self.compliance = _compliance(session["compliance"])

    def update_legacy(self, session: dict) -> None:
        if "input_audio_format" in session:
            self.rate = _rate(session["input_audio_format"], "session.input_audio_format")
        if "input_audio_transcription" in session:
            self._transcription(session["input_audio_transcription"],
                                "session.input_audio_transcription")
        if "turn_detection" in session:
            self._turn_detection(session["turn_detection"], "session.turn_detection")

    def _transcription(self, value, where: str) -> None:
        if value is None:
            return   # "turn transcription off" has no meaning here: it is all we do
        t = _obj(value, where)
        if "language" in t:
            lang = t["language"]
            if lang not in (None, "") and not isinstance(lang, str):
                raise ClientError("language must be a string", param=f"{where}.language")
            try:
                parsed = parse_language(lang or None)
            except RequestError as e:
                raise ClientError(str(e), param=f"{where}.language") from None
            self.language = parsed.code if parsed else None
        if "prompt" in t:
            if t["prompt"] is not None and not isinstance(t["prompt"], str):
                raise ClientError("prompt must be a string", param=f"{where}.prompt")
            self.prompt = t["prompt"] or ""
        if "itn" in t:
            if not isinstance(t["itn"], bool):
                raise ClientError("itn must be true or false", param=f"{where}.itn")
            self.itn = t["itn"]

    def _turn_detection(self, value, where: str) -> None:
        if value is None:
            self.vad = None
            return
        td = _obj(value, where)
        kind = td.get("type", "server_vad")
        if kind != "server_vad":
            raise ClientError(f"turn_detection type {limits.shown(kind)} is not supported; use "
                              "'server_vad' or null", param=f"{where}.type")
        vad = VadOptions() if self.vad is None else VadOptions(**vars(self.vad))
        for key, attr, lo, hi in (("threshold", "threshold", 0.0, 1.0),
                                  ("silence_duration_ms", "silence_ms", 0, 10_000),
                                  ("prefix_padding_ms", "prefix_ms", 0, 10_000)):
            if key in td and td[key] is not None:
                v = td[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                    raise ClientError(f"{key} must be a number from {lo} to {hi}",
                                      param=f"{where}.{key}")
                if key == "threshold" and not 0.0 < v < 1.0:
                    raise ClientError("threshold must be between 0 and 1 (exclusive)",
                                      param=f"{where}.{key}")
                setattr(vad, attr, float(v) if key == "threshold" else int(v))
        self.vad = vad

    # -- writing
    def _turn_detection_out(self) -> dict | None:
        if self.vad is None:
            return None
        return {"type": "server_vad", "threshold": self.vad.threshold,
                "prefix_padding_ms": self.vad.prefix_ms,
                "silence_duration_ms": self.vad.silence_ms}

    def _transcription_out(self) -> dict:
        return {"model": self.model_name, "language": self.language, "prompt": self.prompt,
                "itn": self.itn}

    def ga(self, session_id: str) -> dict:
        return {"id": session_id, "object": "realtime.session", "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": self.rate},
                                    "transcription": self._transcription_out(),
                                    "turn_detection": self._turn_detection_out(),
                                    "noise_reduction": None}},
                "include": None,
                **({"compliance": self.compliance["public"]} if self.compliance else {})}

    def legacy(self, session_id: str) -> dict:
        fmt = "pcm16" if self.rate == 24000 else {"type": "pcm16", "rate": self.rate}
        return {"id": session_id, "object": "realtime.transcription_session",
                "input_audio_format": fmt,
                "input_audio_transcription": self._transcription_out(),
                "turn_detection": self._turn_detection_out(),
                "input_audio_noise_reduction": None, "include": None}

    def live_changes(self) -> dict:
        return {"sample_rate": self.rate, "language": self.language, "itn": self.itn,
                "hotwords": parse_hotwords(self.prompt), "vad": self.vad}


def _compliance(value) -> dict | None:
    """``session.compliance`` (extension): ``{"watch_list": TSV text, "pii": true | "phone,card",
    "partials": false}``; null turns it off. See docs/compliance.md."""
    if value is None:
        return None
    c = _obj(value, "session.compliance")
    pii = c.get("pii")
    if isinstance(pii, list):
        pii = ",".join(str(k) for k in pii)
    watch = c.get("watch_list")
    if watch is not None and not isinstance(watch, str):
        raise ClientError("watch_list must be a string (the watch list's TSV lines)",
                          param="session.compliance.watch_list")
    try:
        detector = compliance_service.detector_from_request(watch, pii)
    except compliance_service.ComplianceRequestError as e:
        raise ClientError(str(e), param=f"session.compliance.{e.param}") from None
    if detector is None:
        return None
    partials = c.get("partials", False)
    if not isinstance(partials, bool):
        raise ClientError("partials must be true or false", param="session.compliance.partials")
    return {"detector": detector, "partials": partials,
            "public": {**detector.settings(), "partials": partials}}


def _obj(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ClientError(f"{where} must be an object", param=where)
    return value


def _rate(fmt, where: str) -> int:
    """24000 or 16000 from "pcm16", "audio/pcm" or {"type": ..., "rate": ...}."""
    kind, rate = fmt, 24000
    if isinstance(fmt, dict):
        kind, rate = fmt.get("type", "audio/pcm"), fmt.get("rate", 24000)
    if kind not in ("pcm16", "audio/pcm"):
        raise ClientError(f"audio format {limits.shown(kind)} is not supported; send pcm16 "
                          "(audio/pcm, 16-bit little-endian mono)", param=where)
    if isinstance(rate, bool) or rate not in RATES:
        raise ClientError(f"sample rate {limits.shown(rate)} is not supported; use 24000 or 16000",
                          param=f"{where}.rate" if isinstance(fmt, dict) else where)
    return int(rate)


# --------------------------------------------------------------------------- one connection

class Connection:
    """One WebSocket: client events in, server events out, one engine LiveSession."""

    def __init__(self, ws: WebSocket, settings, holder, sessions: LiveSessions):
        self.ws, self.settings, self.holder, self.sessions = ws, settings, holder, sessions
        self.id = _id("sess")
        # The model's folder name, not its path (the session object goes to every client).
        self.config = Config(Path(str(holder.info()["model"])).name or "fun-asr-nano")
        self.loop = asyncio.get_running_loop()
        # Server events, serialized, waiting for the client to read them: bounded per connection
        # (limits.REALTIME_OUTBOX_*); a client that leaves more unread is closed (slow reader).
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.outbox_bytes = 0
        self.slow_reader = False
        self._reader: anyio.CancelScope | None = None
        self._ahead: asyncio.Future | None = None   # a message read during a pause
        self.events = limits.RateLimit(limits.REALTIME_EVENT_RATE, limits.REALTIME_EVENT_BURST)
        self.audio = limits.RateLimit(limits.REALTIME_AUDIO_SPEED, limits.REALTIME_AUDIO_BURST_S)
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
        text = json.dumps({"event_id": _id("event"), **event}, ensure_ascii=False)
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
        self.send({"type": "error", "error": {"type": kind, "code": code, "message": message,
                                              "param": param, "event_id": event_id}})

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
            self.items[n] = _id("item")
        return self.items[n]

    def _engine_event(self, e: LiveEvent, speaker: str | None = None) -> None:
        item = self._item(e.item) if e.item is not None else None
        if e.kind == "speech_started":
            self.send({"type": "input_audio_buffer.speech_started", "item_id": item,
                       "audio_start_ms": int(round(e.start * 1000))})
        elif e.kind == "speech_stopped":
            self.send({"type": "input_audio_buffer.speech_stopped", "item_id": item,
                       "audio_end_ms": int(round(e.end * 1000))})
        elif e.kind == "committed":
            self.send({"type": "input_audio_buffer.committed", "item_id": item,
                       "previous_item_id": self.previous_item})
            self.previous_item = item
        elif e.kind == "partial":
            self.send({"type": "conversation.item.input_audio_transcription.delta",
                       "item_id": item, "content_index": 0, "delta": e.delta,
                       "partial": e.text, "start": round(e.start, 3), "end": round(e.end, 3)})
            if self.monitor is not None:
                self.stable[e.item] = self.stable.get(e.item, "") + e.delta
                self.monitor.on_partial(item, self.stable[e.item], e.start, e.end,
                                        self.config.language, e.text)
        elif e.kind == "final":
            if e.delta:
                self.send({"type": "conversation.item.input_audio_transcription.delta",
                           "item_id": item, "content_index": 0, "delta": e.delta,
                           "partial": e.text, "start": e.start, "end": e.end})
            self.send({"type": "conversation.item.input_audio_transcription.completed",
                       "item_id": item, "content_index": 0, "transcript": e.text,
                       "usage": {"type": "duration", "seconds": round(e.end - e.start, 3)},
                       "start": e.start, "end": e.end, **self._heard(e.text),
                       **({"speaker": speaker} if self.speakers is not None else {}),
                       **({"words": e.words} if e.words is not None else {})})
            if self.monitor is not None:     # compliance.alert events follow the final
                self.stable.pop(e.item, None)
                self.monitor.on_final(item, e.text, e.start, e.end, self.config.language,
                                      e.words, speaker)
            self.items.pop(e.item, None)
        elif e.kind == "failed":
            log.warning("realtime %s: %s failed: %s", self.id, item, e.error)
            message = (e.error if e.error and e.error.startswith("cannot load the model")
                       else "transcription failed (see the server log)")
            self.send({"type": "conversation.item.input_audio_transcription.failed",
                       "item_id": item, "content_index": 0,
                       "error": {"type": "server_error", "code": "transcription_failed",
                                 "message": message, "param": None}})
            self.items.pop(e.item, None)
        elif e.kind == "cleared":
            self.send({"type": "input_audio_buffer.cleared"})

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
                size = len(text.encode("utf-8", "surrogatepass")) if text is not None else len(
                    data or b"")
                if size > limit:
                    self.error(f"a message of {size / (1 << 20):.1f} MB is over this server's "
                               f"limit of {self.settings.live_max_message_mb:g} MB; send audio "
                               "in smaller appends",
                               "message_too_large")
                    return await self.flush_and_close(CLOSE_TOO_BIG, "message too big")
                # over the rate: read more slowly (limits)
                if not await self._pause(self.events.take_later(1)):
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
            if not self._send_task.done():
                self._send_task.cancel()
            if self._ahead is not None and not self._ahead.done():
                self._ahead.cancel()

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
        if self._ahead is not None:
            task, self._ahead = self._ahead, None
            return await task
        return await self.ws.receive()

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (a rate limit, a full queue of finals) while watching the socket:
        False as soon as the client has gone (its slot is freed at once, not after the wait).
        At most one message is read ahead meanwhile; it is handled next."""
        if seconds <= 0:
            return True
        if self._ahead is None:
            self._ahead = asyncio.ensure_future(self.ws.receive())
        done, _ = await asyncio.wait({self._ahead}, timeout=seconds)
        if done and not self._ahead.cancelled() and self._ahead.exception() is None and \
                self._ahead.result()["type"] == "websocket.disconnect":
            return False
        if done and not self._ahead.cancelled() and self._ahead.exception() is not None:
            return False
        return True

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
        try:
            event = json.loads(text)
        except ValueError as e:
            self.error(f"the message is not valid JSON: {e}", "invalid_json")
            return
        except RecursionError:
            event = _TOO_DEEP   # nested past Python's recursion limit: refused just below
        if event is _TOO_DEEP or limits.json_depth(event) > limits.REALTIME_MAX_DEPTH:
            self.error(f"the event is nested deeper than {limits.REALTIME_MAX_DEPTH} levels",
                       "invalid_event")
            return
        if not isinstance(event, dict):
            self.error("an event must be a JSON object", "invalid_event")
            return
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        if event_id is not None and len(event_id) > limits.EVENT_ID_CHARS:
            event_id = event_id[:limits.EVENT_ID_CHARS] + "..."   # echoed bounded
        kind = event.get("type")
        if not isinstance(kind, str):
            self.error("The 'type' field is missing.", "invalid_event", "type", event_id)
            return
        handler = {"session.update": self._session_update,
                   "transcription_session.update": self._session_update,
                   "input_audio_buffer.append": self._append,
                   "input_audio_buffer.commit": self._commit,
                   "input_audio_buffer.clear": self._clear,
                   "compliance.report": self._compliance_report}.get(kind)
        if handler is None:
            self.error(f"unknown or unsupported event type {kind[:80]!r}; a transcription "
                       "session takes session.update, input_audio_buffer.append, "
                       "input_audio_buffer.commit and input_audio_buffer.clear",
                       "invalid_event", "type", event_id)
            return
        try:
            await handler(event, kind)
        except ClientError as e:
            self.error(str(e), e.code, e.param, event_id)
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
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise ClientError("audio must be a base64 string of pcm16 samples", param="audio")
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ClientError("audio is not valid base64", "invalid_audio", "audio") from None
        # over 2x real time (after a burst): read more slowly (limits.REALTIME_AUDIO_*)
        if not await self._pause(self.audio.take_later(len(raw) / 2 / self.config.rate)):
            raise WebSocketDisconnect()
        raw = self.odd_byte + raw
        cut = len(raw) // 2 * 2
        self.odd_byte = raw[cut:]   # a sample split across two appends
        if cut:
            samples = np.frombuffer(raw[:cut], dtype="<i2").astype(np.int16)
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


def online_speakers(ws, settings, rate: int = 24000):
    """Speaker labels for this session when its URL asks (``?speakers=auto``), else None."""
    if ws.query_params.get("speakers", "").lower() not in ("auto", "1", "true", "on"):
        return None
    from engine.speakers.online import OnlineSpeakers
    return OnlineSpeakers(rate, getattr(settings, "speaker_model", None))


# --------------------------------------------------------------------------- the route

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
                "event_id": _id("event"), "type": "error",
                "error": {"type": "invalid_request_error", "code": code, "message": str(e),
                          "param": getattr(e, "param", None), "event_id": None}}))
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
