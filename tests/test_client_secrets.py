"""Client secrets for /v1/realtime (serving/client_secrets.py) against the running app with
--api-key: OpenAI's POST /v1/realtime/client_secrets shape; a WebSocket without a secret, with a
wrong, a spent or an expired one is refused before it is accepted; a good one opens one session
with the settings it was minted with, whose audio /metrics counts (received, none dropped). And
the page has no Gradio microphone stream left (#33: a stream chunk claiming 1 Hz)."""
from __future__ import annotations

import base64
import json
import os
import sys
import time

import numpy as np
import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _app_server import app_model_dir, start_app  # noqa: E402,F401

from serving.client_secrets import ClientSecrets, SecretError  # noqa: E402

KEY = "sk-client-secret-test-key"
BEARER = {"Authorization": f"Bearer {KEY}"}
PATH = "/v1/realtime?intent=transcription"


@pytest.fixture(scope="module")
def app(app_model_dir, tmp_path_factory):
    server = start_app(app_model_dir, tmp_path_factory.mktemp("client_secrets"),
                       env={"FUNASR_NANO_API_KEY": KEY})
    yield server
    server.stop()


def mint(app, body=None, headers=BEARER):
    return requests.post(app.url + "/v1/realtime/client_secrets", json=body, headers=headers,
                         timeout=30)


def ws_with(app, secret=None, headers=None):
    protocols = ["realtime"] + ([f"openai-insecure-api-key.{secret}"] if secret else [])
    return connect(app.url.replace("http://", "ws://") + PATH, subprotocols=protocols,
                   additional_headers=headers or {}, open_timeout=30, legacy=True)


def refused(app, secret=None, headers=None) -> int:
    with pytest.raises(InvalidStatus) as e:
        ws_with(app, secret, headers)
    body = json.loads(e.value.response.body)
    assert body["error"]["code"] == "invalid_api_key", body
    return e.value.response.status_code


def metric(app, name) -> float:
    text = requests.get(app.url + "/metrics", headers=BEARER, timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{"))


def test_the_store_spends_and_expires_secrets():
    now = [1000.0]
    store = ClientSecrets(clock=lambda: now[0])
    a, b = store.mint(10), store.mint(60, {"type": "transcription", "audio": {}})
    assert a["value"].startswith("ek_") and a["expires_at"] == 1010 and a["value"] != b["value"]
    assert store.redeem(b["value"]) == (True, {"type": "transcription", "audio": {}})
    assert store.redeem(b["value"]) == (False, None)          # one session each
    now[0] = 1010.0
    assert store.redeem(a["value"]) == (False, None)          # expired
    for bad in (9, 7201, 10.5, True, "60"):
        with pytest.raises(SecretError):
            store.mint(bad)
    with pytest.raises(SecretError):
        store.mint(60, {"type": "realtime"})


def test_client_secrets_route_and_the_websocket_handshake(app):
    short = mint(app, {"expires_after": {"anchor": "created_at", "seconds": 10}}).json()
    minted_at = time.time()

    # the route: OpenAI's shape, behind the key, bad bodies named
    assert mint(app, headers={}).status_code == 401
    r = mint(app, {"session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 16000},
        "transcription": {"language": "en", "prompt": "Fun-ASR"}}}}})
    assert r.status_code == 200, r.text
    secret = r.json()
    assert secret["value"].startswith("ek_") and KEY not in r.text
    assert 590 <= secret["expires_at"] - time.time() <= 601
    assert secret["session"]["type"] == "transcription"
    for body, param in (({"expires_after": {"seconds": 5}}, "expires_after.seconds"),
                        ({"session": {"type": "realtime"}}, "session.type"),
                        ({"expires_after": {"anchor": "now"}}, "expires_after.anchor")):
        bad = mint(app, body)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param, bad.text
    assert mint(app, None, headers={**BEARER, "Content-Type": "application/json"}
                ).status_code == 200                               # an empty body: defaults

    # secrets hold no live slot until used (#33: page sessions held slots)
    assert requests.get(app.url + "/health", timeout=10).json()["live_sessions"] == 0

    # refused before accepted: nothing, a wrong secret, the key's look-alike
    assert refused(app) == 401
    assert refused(app, "ek_wrong") == 401
    assert refused(app, KEY) == 401       # the key itself is not a secret

    # a good one: accepted with the realtime subprotocol and the minted settings
    ws = ws_with(app, secret["value"])
    assert ws.subprotocol == "realtime"
    created = json.loads(ws.recv(timeout=30))
    assert created["type"] == "session.created", created
    audio_in = created["session"]["audio"]["input"]
    assert audio_in["format"]["rate"] == 16000
    assert audio_in["transcription"]["language"] == "en"
    assert audio_in["transcription"]["prompt"] == "Fun-ASR"
    # its audio is counted by /metrics: 3 s received, none dropped
    received = metric(app, "funasr_nano_live_audio_received_seconds_total")
    pcm = (np.random.default_rng(1).standard_normal(48000) * 300).astype("<i2")
    for i in range(0, len(pcm), 4800):
        ws.send(json.dumps({"type": "input_audio_buffer.append",
                            "audio": base64.b64encode(pcm[i:i + 4800].tobytes()).decode()}))
    ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription"}}))
    while json.loads(ws.recv(timeout=30))["type"] != "session.updated":
        pass                                 # answered after every append before it
    assert metric(app, "funasr_nano_live_audio_received_seconds_total") - received == 3.0
    ws.close()
    assert metric(app, "funasr_nano_live_audio_dropped_seconds_total") == 0
    assert metric(app, "funasr_nano_live_audio_received_seconds_total") - received == 3.0

    # spent: the same secret opens nothing more
    assert refused(app, secret["value"]) == 401
    # expired: refused after its 10 s, never used before
    time.sleep(max(0.0, minted_at + 10.5 - time.time()))
    assert refused(app, short["value"]) == 401
    # the key still works for a server-side client
    with connect(app.url.replace("http://", "ws://") + PATH, additional_headers=BEARER,
                 open_timeout=30) as ok:
        assert json.loads(ok.recv(timeout=30))["type"] == "session.created"


def test_the_page_streams_no_microphone_through_gradio(app):
    """#33 "Live tab sample rate" (a stream chunk whose WAV header claims 1 Hz, resampled
    unchecked) and "Live tab slots" (a Gradio stream session holding its slot): the page has no
    streaming component and no stream event left; its Live tab is a /v1/realtime client."""
    config = requests.get(app.url + "/config", timeout=30).json()
    streaming = [c.get("props", {}).get("elem_id") for c in config["components"]
                 if c.get("props", {}).get("streaming")]
    assert not streaming, streaming
    triggers = [t[1] for d in config["dependencies"] for t in d["targets"]]
    assert "stream" not in triggers and "start_recording" not in triggers, triggers
    assert "live-start" in {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert "funasrLive" in config.get("head", "")


def test_the_pages_transcript_is_checked_before_its_downloads():
    """Stop hands the browser's transcript to Python for the downloads: it is client input."""
    from serving.live_tab import transcript_row
    from serving.pipeline import RequestError

    row = transcript_row(json.dumps({"duration": 3.5, "language": "en", "segments": [
        {"start": 0.25, "end": 1.5, "text": "Hello.", "speaker": "A"},
        {"start": 2.0, "end": 3.0, "text": "Again."}]}))
    assert row["text"] == "Hello. Again." and row["duration"] == 3.5
    assert row["segments"][0] == {"start": 0.25, "end": 1.5, "text": "Hello.", "speaker": "A"}
    for bad in ("{", "[]", json.dumps({"segments": [{"start": "x", "end": 1, "text": "a"}]}),
                json.dumps({"segments": [{"start": float("nan"), "end": 1, "text": "a"}]}),
                json.dumps({"segments": [{"start": 0, "end": 1}]}), None,
                json.dumps({"segments": [{"start": 0, "end": 1, "text": "a" * (5 << 20)}]})):
        with pytest.raises(RequestError):
            transcript_row(bad)


def test_the_live_tabs_alert_settings_are_checked_before_the_session():
    """The Live tab's compliance settings become the session.compliance its page sends first;
    a watch list that cannot be used is refused at Start, naming the line, before any socket."""
    from serving.live_tab import compliance_for
    from serving.pipeline import RequestError

    assert compliance_for(False, "") is None and compliance_for(False, None) is None
    assert compliance_for(True, "") == {"pii": True}
    assert compliance_for(False, "ticket\tproduct\thigh\n") == {
        "pii": False, "watch_list": "ticket\tproduct\thigh"}
    for bad, why in (("x\tnosuchcat", "line 1: unknown category 'nosuchcat'"),
                     ("ok\na\tb\tc\td", "line 2: 4 TAB-separated fields"),
                     (5, "must be text")):
        with pytest.raises(RequestError, match=why):
            compliance_for(True, bad)
