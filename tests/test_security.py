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
    """(event, data) pairs of a text/event-stream body."""
    events, event = [], None
    for line in response.iter_lines(decode_unicode=True):
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
            ok, text = route(app, data + ["auto", True, ""], auth)
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
    ok, text = route(app, [[_file_data(up.json()[0])], None, "auto", True, ""], auth)
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
            answers.append(str(e).replace(path, "PATH").replace(os.path.abspath(path), "PATH"))
            continue
        raise AssertionError(f"{path}: transcribed {out[1]!r}")
    assert all("not found" not in a and "not an audio" not in a for a in answers), answers
    assert answers[1] == answers[-1]          # missing and existing audio: the same answer


def test_ui_handler_reads_only_the_upload_cache_and_examples(tmp_path):
    """The handler's own check (second line of defence), the same message for a file that
    exists and one that does not."""
    import gradio as gr
    from gradio.utils import get_upload_folder

    from serving.ui import readable_input

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
    x = np.zeros(16000, np.float32)
    x[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    r = _post_bytes(app, "nan.wav", path.read_bytes())
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_audio" and "nan.wav" in err["message"]
    assert "NaN" in err["message"]


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
