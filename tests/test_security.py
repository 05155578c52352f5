"""Security and robustness (issue 16): the holes and faults an outside probe found, each checked
against the real app (``python app.py`` on a free port, tiny random-weight model) with real
clients: requests, raw sockets, gradio_client, the service script."""
from __future__ import annotations

import json
import os
import sys
import uuid

import pytest
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _app_server import (app_model_dir, audio_files, engine, expected_text,  # noqa: E402,F401
                         start_app)

KEY = "s3cret"


@pytest.fixture(scope="module")
def app(app_model_dir, tmp_path_factory):
    server = start_app(app_model_dir, tmp_path_factory.mktemp("sec_app"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keyed_app(app_model_dir, tmp_path_factory):
    server = start_app(app_model_dir, tmp_path_factory.mktemp("sec_keyed"),
                       "--api-key", KEY, "--auth", "ann:pw")
    yield server
    server.stop()


# --------------------------------------------------------------------------- Gradio file inputs

def _file_data(path: str) -> dict:
    return {"path": path, "orig_name": os.path.basename(path), "meta": {"_type": "gradio.FileData"}}


def _sse_events(response) -> list[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream body (a requests or an httpx response)."""
    events, event = [], None
    lines = (response.iter_lines(decode_unicode=True) if hasattr(response, "iter_content")
             else response.iter_lines())
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            events.append((event, line[5:].strip()))
    return events


def _call_api(app, data, auth=None) -> tuple[bool, str]:
    """POST /gradio_api/call/transcribe then read its result stream: (completed?, text)."""
    r = requests.post(app.url + "/gradio_api/call/transcribe", json={"data": data},
                      cookies=auth, timeout=30)
    assert r.status_code == 200, r.text
    with requests.get(app.url + f"/gradio_api/call/transcribe/{r.json()['event_id']}",
                      cookies=auth, stream=True, timeout=120) as s:
        events = _sse_events(s)
    final = [e for e in events if e[0] in ("complete", "error")][-1]
    return final[0] == "complete", final[1]


def _queue(app, data, auth=None) -> tuple[bool, str]:
    """The browser's and gradio_client's route: POST /gradio_api/queue/join, then the SSE
    stream of /gradio_api/queue/data for the session: (completed?, text)."""
    config = requests.get(app.url + "/config", cookies=auth, timeout=10).json()
    fn_index = next(i for i, d in enumerate(config["dependencies"])
                    if d.get("api_name") == "transcribe")
    session = uuid.uuid4().hex
    r = requests.post(app.url + "/gradio_api/queue/join", cookies=auth, timeout=30,
                      json={"data": data, "fn_index": fn_index, "session_hash": session,
                            "event_data": None, "trigger_id": config["dependencies"][fn_index]
                            ["targets"][0][0]})
    assert r.status_code == 200, r.text
    with requests.get(app.url + "/gradio_api/queue/data", params={"session_hash": session},
                      cookies=auth, stream=True, timeout=120) as s:
        for event, payload in _sse_events(s):
            msg = json.loads(payload)
            if msg.get("msg") == "process_completed":
                output = msg.get("output") or {}
                return bool(msg.get("success")), json.dumps(output.get("data", output))
    raise AssertionError("the queue stream ended without process_completed")


def _login(app) -> dict:
    r = requests.post(app.url + "/login", data={"username": "ann", "password": "pw"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.cookies.get_dict()


SERVER_PATHS = {
    "text file": "/etc/passwd",
    "missing": "/nonexistent/secret.wav",
    "traversal": "/tmp/gradio/../../etc/hostname",
}


@pytest.mark.parametrize("route", [_call_api, _queue], ids=["call", "queue"])
@pytest.mark.parametrize("server", ["app", "keyed_app"])
def test_gradio_inputs_read_only_uploaded_files(request, server, route, audio_files, tmp_path,
                                                engine):
    """Hole 1: a FileData naming any server path was transcribed (or answered 'not an audio
    file' / 'file not found': an existence oracle). Now every such path is refused with one
    message, on both Gradio routes, for both inputs, logged in or not."""
    app = request.getfixturevalue(server)
    auth = _login(app) if server == "keyed_app" else None
    outside = tmp_path / "outside.wav"                     # real audio the server never handed out
    outside.write_bytes(audio_files["tone.wav"].read_bytes())
    paths = {**SERVER_PATHS, "audio outside the cache": str(outside)}
    answers = {}
    for what, path in paths.items():
        for slot in ("files", "microphone"):
            data = ([[_file_data(path)], None] if slot == "files" else [None, _file_data(path)])
            ok, text = route(app, data + ["auto", True, "", "off", "", None, ""], auth)
            assert not ok, f"{what} via {slot}: transcribed {text[:300]}"
            for leak in ("not an audio file", "not found", "No such file", "contains text",
                         "root:", "ERROR:"):
                assert leak not in text, f"{what} via {slot}: {text[:300]}"
            answers[(what, slot)] = text.replace(path, "PATH").replace(
                os.path.abspath(path), "PATH").replace(os.path.basename(path), "NAME")
    for slot in ("files", "microphone"):
        # the same answer whether the file exists, is text, audio or missing
        assert answers[("missing", slot)] == answers[("audio outside the cache", slot)]
    # an upload through Gradio's own route still works, through the same route
    with open(audio_files["chirp.wav"], "rb") as f:
        up = requests.post(app.url + "/gradio_api/upload", files={"files": ("chirp.wav", f)},
                           cookies=auth, timeout=30)
    assert up.status_code == 200, up.text
    ok, text = route(app, [[_file_data(up.json()[0])], None, "auto", True, "", "off", "", None, ""], auth)
    assert ok, text
    assert json.loads(text)[1] == expected_text(engine, audio_files["chirp.wav"])


def test_gradio_client_cannot_name_server_files(app, tmp_path, audio_files):
    """gradio_client uploads local files before it calls; a hostile one skips that step and
    sends the FileData path as it is (here: its upload step replaced by the identity)."""
    from gradio_client import Client
    client = Client(app.url, verbose=False)
    endpoint = client.endpoints[client._infer_fn_index("/transcribe", None)]
    endpoint.process_input_files = lambda *data: data
    outside = tmp_path / "outside.wav"
    outside.write_bytes(audio_files["tone.wav"].read_bytes())
    answers = []
    for path in (*SERVER_PATHS.values(), str(outside)):
        try:
            out = client.predict([_file_data(path)], None, "auto", True, "", api_name="/transcribe")
        except Exception as e:  # noqa: BLE001 - gradio_client raises the server's error
            answers.append(str(e).replace(path, "PATH").replace(os.path.abspath(path), "PATH")
                           .replace(os.path.basename(path), "NAME"))   # (issue 33: the name)
            continue
        raise AssertionError(f"{path}: transcribed {out[1]!r}")
    assert all("not found" not in a and "not an audio" not in a for a in answers), answers
    assert answers[1] == answers[-1]          # missing and existing audio: the same answer


def test_ui_handler_reads_only_the_upload_cache_and_examples(tmp_path):
    """The handler's own check (second line of defence), the same message for a file that
    exists and one that does not."""
    import gradio as gr
    from gradio.utils import get_upload_folder

    from serving.files_tab import readable_input

    examples = tmp_path / "example"
    examples.mkdir()
    (examples / "a.wav").write_bytes(b"RIFF")
    cached = os.path.join(get_upload_folder(), "test_security_cached.wav")
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with open(cached, "wb") as f:
        f.write(b"RIFF")
    try:
        assert readable_input(cached, examples) == os.path.realpath(cached)
        assert readable_input(examples / "a.wav", examples) == str((examples / "a.wav").resolve())
        link = tmp_path / "example" / "link.wav"
        link.symlink_to("/etc/passwd")
        messages = []
        for bad in ("/etc/passwd", "/nonexistent/a.wav", str(examples / ".." / "a.wav"),
                    str(link), get_upload_folder(), os.path.join(get_upload_folder(), "..",
                                                                 "x.wav")):
            with pytest.raises(gr.Error) as err:
                readable_input(bad, examples)
            messages.append(str(err.value.message).replace(os.path.basename(bad), "NAME"))
        assert len(set(messages)) == 1, messages
    finally:
        os.remove(cached)


# --------------------------------------------------------------------------- decoding limits

@pytest.fixture(scope="module")
def limited_app(app_model_dir, tmp_path_factory):
    """The probe's second server: small limits."""
    server = start_app(app_model_dir, tmp_path_factory.mktemp("sec_limited"),
                       "--max-upload-mb", "2", "--max-audio-minutes", "1")
    yield server
    server.stop()


def _peak_rss_mb(app) -> float:
    """The server process's peak resident memory so far (VmHWM), in MB."""
    with open(f"/proc/{app.proc.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def _post_bytes(app, name, data, headers=None, timeout=120, **fields):
    return requests.post(app.url + "/v1/audio/transcriptions", headers=headers or {},
                         files={"file": (name, data)}, data=fields, timeout=timeout)


def test_lying_length_headers_cannot_defeat_the_audio_limit(limited_app, audio_files):
    """Hole 2: an hour of silence in ~1 MB whose header claims 5 s (FLAC, Matroska, MP4) or
    nothing (FLAC) was decoded whole before its 413. Now decoding stops at the limit and the
    server's peak memory barely moves."""
    from _audio_variants import claim_seconds, encode, flac_total_samples

    import numpy as np
    assert _post_bytes(limited_app, "tone.wav", audio_files["tone.wav"].read_bytes()
                       ).status_code == 200                       # model loaded: the idle peak
    hour = np.zeros(16000 * 3600, np.float32)
    files = {"unknown.flac": flac_total_samples(encode("flac", hour, 16000), 0),
             "short.mkv": claim_seconds("mkv", encode("mkv", hour, 16000), 5.0, 16000)}
    before = _peak_rss_mb(limited_app)
    for name, data in files.items():
        assert len(data) < 2 << 20
        r = _post_bytes(limited_app, name, data)
        assert r.status_code == 413, (name, r.status_code, r.text[:300])
        err = r.json()["error"]
        assert err["code"] == "audio_too_long" and name in err["message"]
        assert "1 min" in err["message"]
    grown = _peak_rss_mb(limited_app) - before
    assert grown < 100, f"peak RSS grew by {grown:.0f} MB while refusing"


def test_header_shorter_than_the_audio_is_transcribed_as_long_audio(app, speech_dir):
    """The other side of the budget: audio longer than its header says, within the limit, is
    not cut at the short path's ceiling but streamed as long audio."""
    import soundfile as sf
    from _audio_variants import claim_seconds, encode

    import numpy as np
    clip, rate = sf.read(speech_dir / "en" / "wenet_librispeech_1995-1837-0001.wav",
                         dtype="float32")
    audio = np.concatenate([np.concatenate([clip, np.zeros(rate, np.float32)])] * 5)
    data = claim_seconds("m4a", encode("m4a", audio, rate), 5.0, rate)
    r = _post_bytes(app, "lies.m4a", data, response_format="verbose_json")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["duration"] == pytest.approx(len(audio) / rate, abs=0.2)
    assert len(body["segments"]) >= 2


def test_nan_samples_are_a_400(app, tmp_path):
    """Fault: NaN/inf samples answered 500 decoding_failed."""
    import numpy as np
    import soundfile as sf
    for name, value in (("nan.wav", np.nan), ("inf.wav", np.inf), ("-inf.wav", -np.inf)):
        x = np.zeros(16000, np.float32)
        x[100] = value
        path = tmp_path / name
        sf.write(path, x, 16000, subtype="FLOAT")
        r = _post_bytes(app, name, path.read_bytes())
        assert r.status_code == 400, (name, r.text)
        err = r.json()["error"]
        assert err["code"] == "invalid_audio" and err["message"].startswith(name + ": "), err
        assert "NaN" in err["message"] or "inf" in err["message"], err


# --------------------------------------------------------------------------- prompt / hotwords

def test_prompt_and_hotwords_are_capped(app, engine, audio_files):
    """Hole 3: a 100 KB prompt made the decoder allocate 42 GB and answered 500 after 43 s, with
    torch's message in the body. Now every cap (count, characters, tokens) is a quick 400 that
    names it, on the API, the page and the engine."""
    from engine.prompt import MAX_HOTWORD_CHARS, MAX_HOTWORD_TOKENS, MAX_HOTWORDS, HotwordsError
    wav = audio_files["tone.wav"].read_bytes()
    rare = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(600))   # many tokens
    assert len(rare) <= MAX_HOTWORD_CHARS
    assert len(engine.tokenizer.encode(rare)) > MAX_HOTWORD_TOKENS
    cases = {"x" * 100_000: "characters",
             ", ".join(f"w{i}" for i in range(MAX_HOTWORDS + 1)): "hotwords",
             "abc, " + "y" * MAX_HOTWORD_CHARS: "characters",
             rare: "tokens"}
    for prompt, cap in cases.items():
        r = _post_bytes(app, "tone.wav", wav, prompt=prompt)
        assert r.status_code == 400, (cap, r.status_code, r.text[:300])
        err = r.json()["error"]
        assert err["param"] == "prompt" and cap in err["message"], err
    ok = _post_bytes(app, "tone.wav", wav, prompt=", ".join(f"name{i}" for i in range(30)))
    assert ok.status_code == 200, ok.text

    from gradio_client import Client, handle_file
    client = Client(app.url, verbose=False)
    with pytest.raises(Exception, match="tokens"):
        client.predict([handle_file(str(audio_files["tone.wav"]))], None, "auto", True, rare,
                       api_name="/transcribe")
    with pytest.raises(HotwordsError, match="tokens"):
        engine.transcribe([str(audio_files["tone.wav"])], hotwords=[rare])
    with pytest.raises(HotwordsError, match="hotwords"):
        engine.transcribe([str(audio_files["tone.wav"])], hotwords=[str(i) for i in range(101)])


# --------------------------------------------------------------------------- one error shape

ERROR_KEYS = {"message", "type", "param", "code"}


def _assert_openai_error(r, status=None):
    assert status is None or r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert r.headers.get("x-request-id"), "every response carries X-Request-ID"
    return body["error"]


def test_every_v1_error_has_the_openai_shape(app):
    """Fault: errors of the multipart parser and FastAPI (8,000-character filename, 1.5 MB field,
    1,200 fields), unknown paths and methods came back as {"detail": ...}."""
    url = app.url + "/v1/audio/transcriptions"
    cases = {
        "long filename": lambda: requests.post(url, files={"file": ("x" * 8000 + ".wav", b"RIFF")}),
        "1.5 MB field": lambda: requests.post(url, files={"file": ("a.wav", b"RIFF")},
                                              data={"prompt": "p" * 1_500_000}),
        "1200 fields": lambda: requests.post(url, files=[("file", ("a.wav", b"RIFF"))] + [
            (f"f{i}", (None, "1")) for i in range(1200)]),
        "broken multipart": lambda: requests.post(url, data=b"--zz\r\nnonsense", headers={
            "Content-Type": "multipart/form-data; boundary=zz"}),
        "json body": lambda: requests.post(url, json={"file": "a.wav"}),
        "bad itn": lambda: requests.post(url, files={"file": ("a.wav", b"RIFF")},
                                         data={"itn": "maybe"}),
        "unknown path": lambda: requests.get(app.url + "/v1/nothing/here"),
        "wrong method": lambda: requests.get(url),
        "wrong method on models": lambda: requests.delete(app.url + "/v1/models"),
    }
    for what, call in cases.items():
        r = call()
        assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:200])
        err = _assert_openai_error(r)
        assert "Traceback" not in err["message"], what
    assert requests.get(app.url + "/v1/nothing", timeout=10).status_code == 404
    r = requests.put(url, timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    for path in ("/health", "/", "/v1/models"):           # the id on every response
        assert requests.get(app.url + path, timeout=10).headers.get("x-request-id")
    mine = requests.get(app.url + "/health", headers={"X-Request-ID": "trace-42"}, timeout=10)
    assert mine.headers["x-request-id"] == "trace-42"
    assert requests.get(app.url + "/health", headers={"X-Request-ID": "bad id\u00e9"},
                        timeout=10).headers["x-request-id"] != "bad id"


def test_internal_errors_leave_only_a_request_id(app_model_dir, audio_files, caplog,
                                                 monkeypatch):
    """Hole 3's other half: torch's message reached the 500 body. Now an engine error and an
    error no handler expected are logged with the request id, and the body holds only that id.
    (The real app in process, with the real tiny model; its decoder made to fail.)"""
    from fastapi.testclient import TestClient

    import app as app_module
    from model import FunASRNano
    from serving.settings import parse_settings

    secret = "CUDA out of memory: tried to allocate 42.00 GiB at /secret/path/x.py:12"

    def failing_decode(self, *a, **k):
        raise RuntimeError(secret)

    # the encoder/prefill step both the scheduler and FunASRNano.transcribe go through
    monkeypatch.setattr(FunASRNano, "prepare", failing_decode)
    caplog.set_level("INFO")
    fastapi_app, _ = app_module.create_app(parse_settings(["--model", app_model_dir],
                                                          environ={}))
    with TestClient(fastapi_app, raise_server_exceptions=False) as client:
        wav = audio_files["tone.wav"].read_bytes()
        r = client.post("/v1/audio/transcriptions", files={"file": ("tone.wav", wav)})
        err = _assert_openai_error(r, 500)
        rid = r.headers["x-request-id"]
        assert rid in err["message"] and "secret" not in r.text and "CUDA" not in r.text
        assert any(rid in rec.getMessage() and secret in rec.getMessage()
                   for rec in caplog.records), "the log has the details under the id"

        from serving import transcription_routes
        monkeypatch.setattr(transcription_routes, "transcribe_items", lambda *a, **k: 1 / 0)
        r = client.post("/v1/audio/transcriptions", files={"file": ("tone.wav", wav)})
        err = _assert_openai_error(r, 500)
        assert r.headers["x-request-id"] in err["message"] and "division" not in r.text


# --------------------------------------------------------------------------- slow clients, keys

def _connect(app, head: bytes, body: bytes = b""):
    import socket
    s = socket.create_connection(("127.0.0.1", app.port), timeout=30)
    s.sendall(head + body)
    return s


def _response(sock, timeout: float) -> tuple[int, dict, bytes]:
    """Read one HTTP/1.1 response (status, headers, body) or raise socket.timeout."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed without a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":")
                                                              for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _upload_head(length: int, auth: str | None = None) -> bytes:
    return (b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: test\r\n"
            + (f"Authorization: {auth}\r\n".encode() if auth else b"")
            + b"Content-Type: multipart/form-data; boundary=zz\r\n"
            + f"Content-Length: {length}\r\n\r\n".encode())


_PART = b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'


@pytest.fixture(scope="module")
def strict_app(app_model_dir, tmp_path_factory):
    server = start_app(app_model_dir, tmp_path_factory.mktemp("sec_strict"),
                       "--body-timeout", "2", "--max-uploads", "3")
    yield server
    server.stop()


def test_slow_or_silent_clients_are_cut_off(strict_app, audio_files):
    """Fault: a client that announced 2.5 MB and sent 120 KB was held forever (50 such
    connections stayed open). Now: silence or a trickle is a 408 and a closed connection, and at
    most --max-uploads bodies are received at once (503 beyond, at once)."""
    import socket
    import time
    silent = _connect(strict_app, _upload_head(2_500_000), _PART + b"a" * 120_000)
    status, headers, body = _response(silent, 15)
    assert status == 408 and headers.get("connection") == "close"
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert silent.recv(10) == b""                          # and the server closed it
    trickle = _connect(strict_app, _upload_head(2_500_000), _PART)
    for _ in range(40):                                   # 200 bytes/s: far under 16 KB/s
        try:
            trickle.sendall(b"a" * 100)
        except OSError:
            break
        time.sleep(0.5)
        trickle.settimeout(0.01)
        try:
            if trickle.recv(1, socket.MSG_PEEK):          # an answer is there
                break
        except (BlockingIOError, TimeoutError, OSError):
            pass
    status, _, body = _response(trickle, 15)
    assert status == 408 and b"KB/s" in body

    held = [_connect(strict_app, _upload_head(2_500_000), _PART) for _ in range(3)]
    time.sleep(0.5)
    r = _post_bytes(strict_app, "tone.wav", audio_files["tone.wav"].read_bytes(), timeout=10)
    err = _assert_openai_error(r, 503)
    assert err["code"] == "too_many_uploads" and r.headers.get("retry-after")
    for s in held:
        s.close()
    time.sleep(0.5)
    assert _post_bytes(strict_app, "tone.wav", audio_files["tone.wav"].read_bytes()
                       ).status_code == 200


def test_key_is_checked_before_the_body_is_read(keyed_app):
    """Fault: a request without a key was read in full before its 401. Now the 401 comes from
    the headers alone: here the body is never sent at all."""
    for auth in (None, "Bearer wrong", "Basic " + __import__("base64").b64encode(
            b"ann:nope").decode()):
        sock = _connect(keyed_app, _upload_head(50 << 20, auth))
        status, headers, body = _response(sock, 10)
        assert status == 401 and headers.get("connection") == "close"
        assert json.loads(body)["error"]["type"] == "authentication_error"
        sock.close()


def test_docs_and_schema_need_the_key(keyed_app, app):
    """Fault: /v1/docs and /v1/openapi.json were open although /v1/* needs the key."""
    import base64
    for path in ("/v1/docs", "/v1/openapi.json"):
        _assert_openai_error(requests.get(keyed_app.url + path, timeout=10), 401)
        ok = requests.get(keyed_app.url + path, headers={"Authorization": f"Bearer {KEY}"},
                          timeout=10)
        assert ok.status_code == 200
        basic = "Basic " + base64.b64encode(b"ann:pw").decode()
        assert requests.get(keyed_app.url + path, headers={"Authorization": basic},
                            timeout=10).status_code == 200
        assert requests.get(app.url + path, timeout=10).status_code == 200   # no key set
    assert "/v1/audio/transcriptions" in requests.get(
        keyed_app.url + "/v1/openapi.json", headers={"Authorization": f"Bearer {KEY}"},
        timeout=10).json()["paths"]


def test_health_shows_no_server_paths(app, keyed_app, app_model_dir):
    """Fault: /health showed the model's path on this machine to anyone."""
    for server in (app, keyed_app):
        text = requests.get(server.url + "/health", timeout=10).text
        health = json.loads(text)
        assert app_model_dir not in text and os.path.dirname(app_model_dir) not in text
        assert health["model"] == os.path.basename(app_model_dir)
        assert "model_path" not in health and "model_dir" not in health
    models = requests.get(app.url + "/v1/models", timeout=10).json()
    assert models["data"][0]["id"] == os.path.basename(app_model_dir)
    own = requests.get(keyed_app.url + "/health", headers={"Authorization": f"Bearer {KEY}"},
                       timeout=10).json()
    assert own["model_path"] == app_model_dir            # the operator, with the key, sees it


# --------------------------------------------------------------------------- graceful stop

def test_stop_lets_requests_finish_and_answers_the_rest_503(app_model_dir, tmp_path, engine,
                                                            audio_files):
    """Fault: requests in flight at `service.sh stop` got a plain-text 500. Now a request that
    can finish within the grace period (STOP_TIMEOUT less a third: 6 s of 9) gets its
    transcript, one that cannot gets a JSON 503, and the app exits before the SIGKILL (it once
    missed a 2 s margin on a loaded CI machine)."""
    import threading
    import time
    import types

    from _app_server import MAX_NEW_TOKENS, free_port
    from test_service import service

    port = free_port()
    env = {"STOP_TIMEOUT": "9"}
    r = service(tmp_path, "start", "--model", app_model_dir, "--port", str(port),
                "--max-new-tokens", str(MAX_NEW_TOKENS), env=env)
    assert r.returncode == 0, r.stdout + r.stderr

    srv = types.SimpleNamespace(port=port, url=f"http://127.0.0.1:{port}")
    wav = audio_files["chirp.wav"].read_bytes()
    assert _post_bytes(srv, "chirp.wav", wav).status_code == 200      # model loaded
    tail = b"\r\n--zz--\r\n"
    finishing = _connect(srv, _upload_head(len(_PART) + len(wav) + len(tail)),
                         _PART + wav[:len(wav) // 2])
    unfinished = _connect(srv, _upload_head(2_000_000), _PART)
    stopping = threading.Thread(target=lambda: setattr(srv, "stop", service(tmp_path, "stop",
                                                                            env=env)))
    t0 = time.monotonic()
    stopping.start()
    time.sleep(1.0)
    finishing.sendall(wav[len(wav) // 2:] + tail)         # completes during the grace period
    status, _, body = _response(finishing, 30)
    assert status == 200, body
    assert json.loads(body)["text"] == expected_text(engine, audio_files["chirp.wav"])
    sent = 0
    while stopping.is_alive() and sent < 1_500_000:        # 40 KB/s: alive, never complete
        try:
            unfinished.sendall(b"a" * 20_000)
        except OSError:
            break
        sent += 20_000
        time.sleep(0.5)
    status, headers, body = _response(unfinished, 30)
    assert status == 503 and headers["content-type"].startswith("application/json"), body
    err = json.loads(body)["error"]
    assert set(err) == ERROR_KEYS and err["code"] == "shutting_down"
    stopping.join(30)
    assert srv.stop.returncode == 0 and "SIGKILL" not in srv.stop.stdout, srv.stop.stdout
    assert time.monotonic() - t0 < 9 + 2


def test_what_the_fuzzer_found_is_a_400(app, audio_files):
    """Regressions from tests/test_fuzz.py: a clip of a few milliseconds (the frontend cannot
    analyse it: was a 500), and a FLAC cut after its header (libsndfile's seek failed: was an
    internal error)."""
    import io

    import numpy as np
    import soundfile as sf
    from _audio_variants import encode

    buf = io.BytesIO()
    sf.write(buf, np.full(160, 0.1, np.float32), 16000, format="WAV")
    r = _post_bytes(app, "click.wav", buf.getvalue())
    err = _assert_openai_error(r, 400)
    assert err["code"] == "invalid_audio" and "too short" in err["message"]
    audio, rate = sf.read(audio_files["tone.wav"], dtype="float32")
    flac = encode("flac", audio, rate)
    r = _post_bytes(app, "cut.flac", flac[:len(flac) // 32])
    err = _assert_openai_error(r, 400)
    assert err["code"] == "invalid_audio" and "internal error" not in err["message"]
    assert err["message"].startswith("cut.flac: ")


def test_page_errors_leave_only_a_request_id(app_model_dir, audio_files, caplog, monkeypatch):
    """The page's side of 'no internal exception text in any body': the page is mounted with
    show_error=True (so that a user sees why their file was refused), which also showed any
    unexpected exception's text. Here writing the downloads fails as a full disk would, through
    Gradio's call API of the real app in process: the event says only the request id, the log
    has the details."""
    from fastapi.testclient import TestClient

    import app as app_module
    from serving import files_tab
    from serving.settings import parse_settings

    secret = "/srv/secret/gradio/abc123/transcript.txt"

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device", secret)

    monkeypatch.setattr(files_tab, "write_downloads", full_disk)
    caplog.set_level("INFO")
    fastapi_app, _ = app_module.create_app(parse_settings(["--model", app_model_dir],
                                                          environ={}))
    with TestClient(fastapi_app, raise_server_exceptions=False) as client:
        with open(audio_files["tone.wav"], "rb") as f:
            up = client.post("/gradio_api/upload", files={"files": ("tone.wav", f)})
        assert up.status_code == 200, up.text
        r = client.post("/gradio_api/call/transcribe", json={"data": [
            [_file_data(up.json()[0])], None, "auto", True, "", "off", "", None, ""]})
        assert r.status_code == 200, r.text
        with client.stream("GET", f"/gradio_api/call/transcribe/{r.json()['event_id']}") as s:
            events = _sse_events(s)
    kind, text = [e for e in events if e[0] in ("complete", "error")][-1]
    assert kind == "error", events
    assert "internal error (request id " in text, text
    assert "No space" not in text and "secret" not in text and "Errno" not in text, text
    rid = text.split("request id ")[1].split(")")[0]
    assert any(rid in rec.getMessage() and rec.exc_info and secret in str(rec.exc_info[1])
               for rec in caplog.records), "the log has the details under the id"


def test_live_tab_errors_leave_only_a_request_id(app_model_dir, caplog, monkeypatch):
    """The same for the Live tab: writing its downloads at Stop fails unexpectedly (here as a
    full disk would); the browser's route (Gradio's queue) gets the request id, not the
    exception."""
    from fastapi.testclient import TestClient

    import app as app_module
    from serving import live_tab
    from serving.settings import parse_settings

    secret = "/srv/secret/live/session.wav"

    def broken(*a, **k):
        raise OSError(28, "No space left on device", secret)

    monkeypatch.setattr(live_tab, "write_downloads", broken)
    caplog.set_level("INFO")
    fastapi_app, _ = app_module.create_app(parse_settings(["--model", app_model_dir],
                                                          environ={}))
    with TestClient(fastapi_app, raise_server_exceptions=False) as client:
        config = client.get("/config").json()
        stop_id = next(c["id"] for c in config["components"]
                       if c.get("props", {}).get("elem_id") == "live-stop")
        fn_index, dep = next((i, d) for i, d in enumerate(config["dependencies"])
                             if [stop_id, "click"] in [list(t) for t in d["targets"]])
        session = uuid.uuid4().hex
        transcript = json.dumps({"duration": 2.0, "language": None, "segments": [
            {"start": 0.1, "end": 1.5, "text": "hello"}]})
        r = client.post("/gradio_api/queue/join", json={
            "data": [transcript], "fn_index": fn_index, "session_hash": session,
            "event_data": None, "trigger_id": dep["targets"][0][0]})
        assert r.status_code == 200, r.text
        done = None
        with client.stream("GET", "/gradio_api/queue/data",
                           params={"session_hash": session}) as s:
            for _, payload in _sse_events(s):
                msg = json.loads(payload)
                if msg.get("msg") == "process_completed":
                    done = msg
                    break
    assert done is not None and not done.get("success"), done
    text = json.dumps(done)
    assert "internal error (request id " in text, text
    assert "No space" not in text and "secret" not in text and "Errno" not in text, text
    rid = text.split("request id ")[1].split(")")[0]
    assert any(rid in rec.getMessage() and rec.exc_info and secret in str(rec.exc_info[1])
               for rec in caplog.records), "the log has the details under the id"
