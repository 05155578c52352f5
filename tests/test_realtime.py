"""/v1/realtime against the real app (``python app.py`` with the demo model, whose texts mean
something): a real WebSocket client streams two utterances at 24 kHz faster than real time, the
published ``openai`` package's realtime client transcribes, and every malformed input, limit and
disconnect gets an error event or a close code while the server stays up."""
from __future__ import annotations

import base64
import json
import os
import socket
import sys
import threading
import time

import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _app_server import get_json, start_app  # noqa: E402
from bench._live_audio import DEMO_MODEL, recording, span, wav_bytes  # noqa: E402

KEY = "k3y"
AUTH = "ann:pw"
BEARER = {"Authorization": f"Bearer {KEY}"}
PATH = "/v1/realtime?intent=transcription"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    server = start_app(str(DEMO_MODEL), tmp_path_factory.mktemp("realtime"),
                       "--max-new-tokens", "64", "--live-sessions", "2",
                       env={"FUNASR_NANO_API_KEY": KEY, "FUNASR_NANO_AUTH": AUTH})
    try:
        # Load and warm the model first: partials before each utterance ends are the point,
        # and a cold first decode (load, first-call setup) takes longer than an utterance.
        offline_text(server, recording(("sv.wav",), rate=16000), 16000)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def strict_app(tmp_path_factory):
    """One live session at a time, closed after 1.5 s without a message."""
    server = start_app(str(DEMO_MODEL), tmp_path_factory.mktemp("realtime_strict"),
                       "--max-new-tokens", "64", "--live-sessions", "1",
                       "--live-idle-seconds", "1.5")
    yield server
    server.stop()


def ws_url(app) -> str:
    return app.url.replace("http://", "ws://") + PATH


def ws_connect(url, headers=None):
    # legacy=True: a connection kept across statements (websockets' own name for it)
    return connect(url, additional_headers=headers or {}, max_size=None, open_timeout=30,
                   legacy=True)


def open_ws(app, headers=BEARER):
    ws = ws_connect(ws_url(app), headers)
    created = json.loads(ws.recv(timeout=30))
    assert created["type"] == "session.created", created
    return ws, created


def send(ws, **event):
    ws.send(json.dumps(event))


def recv(ws, timeout=60.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def append_all(ws, pcm, rate, chunk_s=0.1, pace=0.5):
    """input_audio_buffer.append in ``chunk_s`` pieces, ``pace`` x real time per piece."""
    step = int(chunk_s * rate)
    for i in range(0, len(pcm), step):
        send(ws, type="input_audio_buffer.append",
             audio=base64.b64encode(pcm[i:i + step].astype("<i2").tobytes()).decode())
        if pace:
            time.sleep(chunk_s * pace)


def offline_text(app, pcm, rate, **fields) -> str:
    r = requests.post(app.url + "/v1/audio/transcriptions", headers=BEARER,
                      files={"file": ("span.wav", wav_bytes(pcm, rate))}, data=fields,
                      timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["text"]


def expect_error(ws, code, timeout=30.0) -> dict:
    event = recv(ws, timeout)
    assert event["type"] == "error", event
    assert event["error"]["code"] == code, event
    assert event["error"]["message"] and event["error"]["type"]
    return event


def wait_health(app, key, value, timeout=15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = get_json(app.url + "/health")
        if health[key] == value or time.monotonic() > deadline:
            return health
        time.sleep(0.1)


# --------------------------------------------------------------------------- transcription

def test_two_utterances_at_24khz_equal_the_offline_api(app):
    pcm = recording(("en.wav", "fi.wav"), rate=24000)
    ws, created = open_ws(app)
    session = created["session"]
    assert session["type"] == "transcription"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    send(ws, type="session.update", session={
        "type": "transcription",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                            "transcription": {"model": "whatever", "prompt": ""},
                            "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                               "prefix_padding_ms": 300,
                                               "silence_duration_ms": 500}}}})
    updated = recv(ws)
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500

    sender = threading.Thread(target=append_all, args=(ws, pcm, 24000), kwargs={"pace": 0.5})
    started = time.monotonic()
    sender.start()
    events = []
    while sum(e["type"].endswith(".completed") for e in events) < 2:
        events.append(recv(ws, 120))
        assert events[-1]["type"] != "error", events[-1]
    sender.join()
    took = time.monotonic() - started
    ws.close()
    assert took < len(pcm) / 24000                     # faster than real time

    completed = [e for e in events if e["type"].endswith(".completed")]
    assert len({e["event_id"] for e in events}) == len(events)
    previous = None
    for c in completed:
        item = c["item_id"]
        types = [e["type"] for e in events if e.get("item_id") == item]
        stopped = types.index("input_audio_buffer.speech_stopped")
        assert types[0] == "input_audio_buffer.speech_started"
        assert "conversation.item.input_audio_transcription.delta" in types[:stopped], types
        committed = next(e for e in events if e["type"] == "input_audio_buffer.committed"
                         and e["item_id"] == item)
        assert committed["previous_item_id"] == previous
        previous = item
        assert c["content_index"] == 0 and c["usage"]["type"] == "duration"
        assert c["usage"]["seconds"] == pytest.approx(c["end"] - c["start"], abs=1e-3)
        # the final is the offline API's text for exactly those samples, same options
        want = offline_text(app, span(pcm, 24000, c["start"], c["end"]), 24000)
        assert c["transcript"] == want.strip() and want.strip()
    assert completed[0]["end"] <= completed[1]["start"]
    # no language set: each completed item says the one heard (extension fields)
    assert [(c["language"], c["language_name"]) for c in completed] == [
        ("en", "English"), ("fi", "Finnish")]
    assert all(0.5 < c["language_probability"] <= 1 for c in completed)
    assert wait_health(app, "live_sessions", 0)["live_sessions"] == 0


def test_openai_realtime_client_transcribes(app):
    from openai import OpenAI
    pcm = recording(("pt.wav",), rate=24000)
    client = OpenAI(base_url=app.url + "/v1", api_key=KEY)
    with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        first = conn.recv()
        assert first.type == "session.created"
        conn.session.update(session={
            "type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                "transcription": {"model": "gpt-4o-transcribe",
                                                  "language": "pt"},
                                "turn_detection": {"type": "server_vad",
                                                   "silence_duration_ms": 500}}}})
        step = 2400
        for i in range(0, len(pcm), step):
            conn.input_audio_buffer.append(
                audio=base64.b64encode(pcm[i:i + step].tobytes()).decode())
        got = {}
        for event in conn:
            got.setdefault(event.type, []).append(event)
            if event.type == "conversation.item.input_audio_transcription.completed":
                break
            assert event.type != "error", event
    assert got["session.updated"][0].session.audio.input.transcription.language == "pt"
    [done] = got["conversation.item.input_audio_transcription.completed"]
    assert done.transcript and done.item_id == got["input_audio_buffer.committed"][0].item_id
    [row] = [e for e in got["input_audio_buffer.speech_started"]]
    assert row.item_id == done.item_id
    extra = done.model_extra or {}
    want = offline_text(app, span(pcm, 24000, extra["start"], extra["end"]), 24000,
                        language="pt")
    assert done.transcript == want.strip()
    assert "language_probability" not in extra   # the session set its language
    # extension: the final's words, in session time, inside the item's span (lead-in 0.6 s)
    words = extra["words"]
    assert "".join(w["word"] for w in words).replace(" ", "") == done.transcript.replace(" ", "")
    assert all(extra["start"] <= w["start"] <= w["end"] <= extra["end"] for w in words), words
    assert abs(words[0]["start"] - 0.6) <= 0.3, words


def test_manual_commit_at_16khz_with_the_older_session_event(app):
    pcm = recording(("nl.wav",), rate=16000, lead_s=0.3, tail_s=0.3)
    ws, _ = open_ws(app, headers={"Authorization": "Basic " + base64.b64encode(
        AUTH.encode()).decode()})
    send(ws, type="transcription_session.update", event_id="ev1", session={
        "input_audio_format": {"type": "pcm16", "rate": 16000},
        "input_audio_transcription": {"language": "nl", "prompt": "vergadering", "itn": False},
        "turn_detection": None})
    updated = recv(ws)
    assert updated["type"] == "transcription_session.updated"
    s = updated["session"]
    assert s["turn_detection"] is None and s["input_audio_format"]["rate"] == 16000
    assert s["input_audio_transcription"]["language"] == "nl"
    send(ws, type="input_audio_buffer.commit", event_id="ev2")
    err = expect_error(ws, "input_audio_buffer_commit_empty")
    assert err["error"]["event_id"] == "ev2"
    append_all(ws, pcm, 16000, chunk_s=0.25, pace=0)
    send(ws, type="input_audio_buffer.commit")
    events = [recv(ws)]
    while not events[-1]["type"].endswith(".completed"):
        events.append(recv(ws))
        assert events[-1]["type"] != "error", events[-1]
    assert "input_audio_buffer.speech_started" not in [e["type"] for e in events]
    done = events[-1]
    assert (done["start"], done["end"]) == (0.0, pytest.approx(len(pcm) / 16000))
    want = offline_text(app, pcm, 16000, language="nl", prompt="vergadering", itn="false")
    assert done["transcript"] == want.strip()
    send(ws, type="input_audio_buffer.append", audio=base64.b64encode(pcm[:8000].tobytes())
         .decode())
    send(ws, type="input_audio_buffer.clear")
    assert recv(ws)["type"] == "input_audio_buffer.cleared"
    ws.close()


# --------------------------------------------------------------------------- bad input

def test_malformed_events_get_errors_and_the_session_goes_on(app):
    ws, _ = open_ws(app)
    ws.send("{not json")
    expect_error(ws, "invalid_json")
    ws.send("[1, 2]")
    expect_error(ws, "invalid_event")
    send(ws, session={})
    expect_error(ws, "invalid_event")                       # no "type"
    send(ws, type="response.create", event_id="e7")
    assert expect_error(ws, "invalid_event")["error"]["event_id"] == "e7"
    send(ws, type="input_audio_buffer.append", audio="@@ not base64 @@")
    assert expect_error(ws, "invalid_audio")["error"]["param"] == "audio"
    send(ws, type="input_audio_buffer.append", audio=12)
    expect_error(ws, "invalid_value")
    ws.send(b"\x00\x01binary")
    expect_error(ws, "invalid_event")
    for bad, param in (({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}}}},
                        "session.audio.input.format.rate"),
                       ({"audio": {"input": {"format": {"type": "audio/pcmu"}}}},
                        "session.audio.input.format"),
                       ({"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}},
                        "session.audio.input.turn_detection.type"),
                       ({"audio": {"input": {"turn_detection": {"threshold": 7}}}},
                        "session.audio.input.turn_detection.threshold"),
                       ({"audio": {"input": {"transcription": {"language": "klingon"}}}},
                        "session.audio.input.transcription.language"),
                       ({"type": "realtime"}, "session.type")):
        send(ws, type="session.update", session=bad)
        assert expect_error(ws, "invalid_value")["error"]["param"] == param
    # still a working session: a whole utterance in one append, then its final
    pcm = recording(("ko.wav",), rate=24000)
    append_all(ws, pcm, 24000, chunk_s=len(pcm) / 24000, pace=0)
    event = recv(ws)
    while not event["type"].endswith(".completed"):
        assert event["type"] != "error", event
        event = recv(ws)
    assert event["transcript"]
    # a 10 MB message: an error event, then close code 1009
    ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 10_000_000}))
    expect_error(ws, "message_too_large")
    with pytest.raises(ConnectionClosed) as closed:
        recv(ws)
    assert closed.value.rcvd.code == 1009
    assert get_json(app.url + "/health")["status"] == "ok"


def test_auth_is_required_like_the_rest_of_v1(app):
    for headers in ({}, {"Authorization": "Bearer wrong"},
                    {"Authorization": "Basic " + base64.b64encode(b"ann:nope").decode()}):
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(ws_url(app), headers)
        assert refused.value.response.status_code == 401
        body = json.loads(refused.value.response.body)
        assert body["error"]["code"] == "invalid_api_key"


def test_disconnect_mid_utterance_frees_the_session(app):
    pcm = recording(("vi.wav",), rate=24000)
    ws, _ = open_ws(app)
    append_all(ws, pcm[:int(2.5 * 24000)], 24000, pace=0)     # into the speech
    event = recv(ws)
    assert event["type"] == "input_audio_buffer.speech_started", event
    assert wait_health(app, "live_sessions", 1)["live_sessions"] == 1
    ws.socket.shutdown(socket.SHUT_RDWR)                       # vanish, no close handshake
    ws.socket.close()
    assert wait_health(app, "live_sessions", 0)["live_sessions"] == 0
    # the server goes on: a new session transcribes
    ws2, _ = open_ws(app)
    append_all(ws2, pcm, 24000, chunk_s=1.0, pace=0)
    event = recv(ws2)
    while not event["type"].endswith(".completed"):
        event = recv(ws2)
    assert event["transcript"]
    ws2.close()


def test_session_limit_and_idle_timeout(strict_app):
    ws, _ = open_ws(strict_app, headers={})
    assert get_json(strict_app.url + "/health")["max_live_sessions"] == 1
    second = ws_connect(ws_url(strict_app))
    expect_error(second, "session_limit")
    with pytest.raises(ConnectionClosed) as closed:
        recv(second)
    assert closed.value.rcvd.code == 1013
    # the first one sends nothing: closed after 1.5 s with an error event and 1008
    expect_error(ws, "idle_timeout", timeout=10)
    with pytest.raises(ConnectionClosed) as idle:
        recv(ws)
    assert idle.value.rcvd.code == 1008
    assert wait_health(strict_app, "live_sessions", 0)["live_sessions"] == 0
    third, created = open_ws(strict_app, headers={})
    assert created["session"]["type"] == "transcription"
    third.close()
    assert wait_health(strict_app, "live_sessions", 0)["live_sessions"] == 0
    # a conversation session is refused in words and with 1008
    other = ws_connect(ws_url(strict_app).replace("intent=transcription",
                                                  "intent=conversation"))
    expect_error(other, "invalid_intent")
    with pytest.raises(ConnectionClosed) as refused:
        recv(other)
    assert refused.value.rcvd.code == 1008
    assert get_json(strict_app.url + "/health")["status"] == "ok"
