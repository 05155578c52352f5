"""The Realtime transcription protocol: the shapes of client and server events, parsing and
validating what a client sends, and the bounds on it. No I/O here: serving.realtime.connection
runs the WebSocket and the session with these.
"""
from __future__ import annotations

import base64
import binascii
import json
import secrets

import numpy as np

from compliance import service as compliance_service
from engine.live import LiveEvent, VadOptions

from .. import limits
from ..pipeline import RequestError, parse_hotwords, parse_language

RATES = (24000, 16000)
CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_TRY_LATER, CLOSE_ERROR = 1008, 1009, 1013, 1011

# the client events a transcription session takes (compliance.report: an extension)
CLIENT_EVENTS = ("session.update", "transcription_session.update", "input_audio_buffer.append",
                 "input_audio_buffer.commit", "input_audio_buffer.clear", "compliance.report")

_TOO_DEEP = object()


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


class ClientError(ValueError):
    """A client event that cannot be taken: answered with an ``error`` event, the session goes
    on."""

    def __init__(self, message: str, code: str = "invalid_value", param: str | None = None,
                 event_id: str | None = None):
        super().__init__(message)
        self.code, self.param, self.event_id = code, param, event_id


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



# --------------------------------------------------------------------------- client events

def parse_event(text: str) -> tuple[dict, str, str | None]:
    """A client's text message -> (event, its type, its event_id cut to limits.EVENT_ID_CHARS
    for echoing). ClientError for anything that is not an event this session takes."""
    try:
        event = json.loads(text)
    except ValueError as e:
        raise ClientError(f"the message is not valid JSON: {e}", "invalid_json") from None
    except RecursionError:
        event = _TOO_DEEP   # nested past Python's recursion limit: refused just below
    if event is _TOO_DEEP or limits.json_depth(event) > limits.REALTIME_MAX_DEPTH:
        raise ClientError(f"the event is nested deeper than {limits.REALTIME_MAX_DEPTH} levels",
                          "invalid_event")
    if not isinstance(event, dict):
        raise ClientError("an event must be a JSON object", "invalid_event")
    event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
    if event_id is not None and len(event_id) > limits.EVENT_ID_CHARS:
        event_id = event_id[:limits.EVENT_ID_CHARS] + "..."   # echoed bounded
    kind = event.get("type")
    if not isinstance(kind, str):
        raise ClientError("The 'type' field is missing.", "invalid_event", "type", event_id)
    if kind not in CLIENT_EVENTS:
        raise ClientError(f"unknown or unsupported event type {kind[:80]!r}; a transcription "
                          "session takes session.update, input_audio_buffer.append, "
                          "input_audio_buffer.commit and input_audio_buffer.clear",
                          "invalid_event", "type", event_id)
    return event, kind, event_id


def append_audio(event: dict) -> bytes:
    """The pcm16 bytes of an ``input_audio_buffer.append``."""
    audio = event.get("audio")
    if not isinstance(audio, str):
        raise ClientError("audio must be a base64 string of pcm16 samples", param="audio")
    try:
        return base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError("audio is not valid base64", "invalid_audio", "audio") from None


def pcm16_samples(odd_byte: bytes, raw: bytes) -> tuple[np.ndarray | None, bytes]:
    """(the whole int16 samples of ``odd_byte + raw``, or None, the byte left over): a sample
    may be split across two appends."""
    raw = odd_byte + raw
    cut = len(raw) // 2 * 2
    samples = np.frombuffer(raw[:cut], dtype="<i2").astype(np.int16) if cut else None
    return samples, raw[cut:]


# --------------------------------------------------------------------------- server events

def error_event(message: str, code: str, param: str | None = None,
                event_id: str | None = None, kind: str = "invalid_request_error") -> dict:
    return {"type": "error", "error": {"type": kind, "code": code, "message": message,
                                       "param": param, "event_id": event_id}}


def engine_events(e: LiveEvent, item: str | None, previous_item: str | None,
                  completed_extra: dict | None = None) -> list[dict]:
    """The server events for one engine event (``completed_extra``: the extension fields of a
    completed item: language heard, speaker)."""
    if e.kind == "speech_started":
        return [{"type": "input_audio_buffer.speech_started", "item_id": item,
                 "audio_start_ms": int(round(e.start * 1000))}]
    if e.kind == "speech_stopped":
        return [{"type": "input_audio_buffer.speech_stopped", "item_id": item,
                 "audio_end_ms": int(round(e.end * 1000))}]
    if e.kind == "committed":
        return [{"type": "input_audio_buffer.committed", "item_id": item,
                 "previous_item_id": previous_item}]
    if e.kind == "partial":
        return [{"type": "conversation.item.input_audio_transcription.delta",
                 "item_id": item, "content_index": 0, "delta": e.delta,
                 "partial": e.text, "start": round(e.start, 3), "end": round(e.end, 3)}]
    if e.kind == "final":
        delta = [{"type": "conversation.item.input_audio_transcription.delta",
                  "item_id": item, "content_index": 0, "delta": e.delta,
                  "partial": e.text, "start": e.start, "end": e.end}] if e.delta else []
        return delta + [{
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item, "content_index": 0, "transcript": e.text,
            "usage": {"type": "duration", "seconds": round(e.end - e.start, 3)},
            "start": e.start, "end": e.end, **(completed_extra or {}),
            **({"words": e.words} if e.words is not None else {})}]
    if e.kind == "failed":
        # the model's load failure is the user's business; any other error stays in the log
        message = (e.error if e.error and e.error.startswith("cannot load the model")
                   else "transcription failed (see the server log)")
        return [{"type": "conversation.item.input_audio_transcription.failed",
                 "item_id": item, "content_index": 0,
                 "error": {"type": "server_error", "code": "transcription_failed",
                           "message": message, "param": None}}]
    if e.kind == "cleared":
        return [{"type": "input_audio_buffer.cleared"}]
    return []
