"""The web app and its HTTP API, run for real as ``python app.py`` on a free port with a tiny
random-weight model; plus in-process tests of the serving modules."""
from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import sys
import threading
import time

import pytest
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _app_server import (app_model_dir, audio_files, engine, expected_text,  # noqa: E402,F401
                         get_json, start_app)

from serving.settings import parse_settings  # noqa: E402

UPLOAD_MB = 1


@pytest.fixture(scope="module")
def app(app_model_dir, tmp_path_factory):
    server = start_app(app_model_dir, tmp_path_factory.mktemp("app"),
                       "--max-upload-mb", str(UPLOAD_MB))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keyed_app(app_model_dir, tmp_path_factory):
    server = start_app(app_model_dir, tmp_path_factory.mktemp("keyed"),
                       env={"FUNASR_NANO_API_KEY": "s3cret", "FUNASR_NANO_AUTH": "ann:pw"})
    yield server
    server.stop()


def post(app, path, headers=None, timeout=60, **data):
    with open(path, "rb") as f:
        return requests.post(app.url + "/v1/audio/transcriptions", headers=headers or {},
                             files={"file": (path.name, f)}, data=data, timeout=timeout)


# --------------------------------------------------------------------------- the real app
# The HTTP API's contract: tests/test_ray_serve.py runs these same functions against the Ray
# Serve application (its own ``app`` and ``keyed_app`` fixtures).
API_CONTRACT = ("test_api_formats_and_options",
                "test_bad_requests_get_clear_errors_and_the_server_keeps_serving",
                "test_ten_concurrent_requests_all_answered", "test_models_lists_the_model",
                "test_api_key_and_auth")


def test_lazy_load_then_api_and_gradio_client_match_engine(app, engine, audio_files):
    health = get_json(app.url + "/health")
    assert health["status"] == "ok"
    assert health["model_loaded"] is False            # nothing loaded until the first request
    assert health["device"] == "cpu" and health["dtype"] == "fp32"
    assert health["model"]
    planned = health["placement"]                     # what will run where, before the load
    assert planned["device"] == "cpu" and planned["device_name"] and planned["mode"] == "fp32"
    assert planned["compute"] == {"audio_encoder": "fp32", "audio_adaptor": "fp32",
                                  "llm": "fp32"}

    wav = audio_files["tone.wav"]
    r = post(app, wav, language="en")
    assert r.status_code == 200, r.text
    assert r.json() == {"text": expected_text(engine, wav, "en"), "language": "en",
                        "language_name": "English"}

    after = get_json(app.url + "/health")
    assert after["model_loaded"] is True
    assert after["device"] == "cpu" and after["dtype"] == "fp32"
    assert after["load_seconds"] > 0
    assert after["placement"]["compute"] == planned["compute"]  # the loaded model's own
    assert after["placement"]["decoder"] == "dynamic" and after["placement"]["capability"] is None

    from gradio_client import Client, handle_file
    client = Client(app.url, verbose=False)
    chirp = audio_files["chirp.wav"]
    table, transcript, downloads, rows, status = client.predict(
        [handle_file(str(chirp))], None, "ja", False, "alpha, beta", api_name="/transcribe")
    want = expected_text(engine, chirp, "ja", itn=False, hotwords=["alpha", "beta"])
    assert transcript == want
    assert table["headers"][:4] == ["File", "Duration (s)", "Language", "Processing time (s)"]
    [row] = table["data"]
    assert row[0] == "chirp.wav" and row[1] == pytest.approx(1.5) and row[2] == "ja (Japanese)"
    assert row[4] == want
    assert rows[0]["text"] == want and rows[0]["error"] is None
    assert (rows[0]["language"], rows[0]["language_name"]) == ("ja", "Japanese")
    names = sorted(os.path.basename(p) for p in downloads)
    assert names == ["chirp.srt", "chirp.vtt", "transcript.json", "transcript.txt"]
    srt = open(next(p for p in downloads if p.endswith(".srt")), encoding="utf-8").read()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,500\n")
    assert "loaded" in status and "cpu" in status
    assert "loaded" in client.predict(api_name="/model_status")


def test_api_formats_and_options(app, engine, audio_files):
    flac = audio_files["tone44k.flac"]
    want = expected_text(engine, flac, "pt", itn=False,
                         hotwords=["Lisboa", "Porto"])
    common = dict(language="Portuguese", prompt="Lisboa, Porto", itn="false", model="whisper-1")
    assert post(app, flac, response_format="text", **common).text == want + "\n"
    verbose = post(app, flac, response_format="verbose_json", **common).json()
    assert verbose["text"] == want and verbose["duration"] == pytest.approx(2.0)
    assert (verbose["language"], verbose["language_name"]) == ("pt", "Portuguese")
    plain = post(app, flac, response_format="json", **common).json()
    assert plain == {"text": want, "language": "pt", "language_name": "Portuguese"}
    auto = post(app, flac, response_format="verbose_json").json()   # not told: the one heard
    if auto["language"] == "auto":   # nothing to tell from (no letters in the random text)
        assert auto["language_name"] == "automatic" and "language_probability" not in auto
    else:
        assert auto["languages"] == [{"code": auto["language"]}]
        assert 0 < auto["language_probability"] <= 1
    assert verbose["segments"][0]["start"] == 0 and verbose["segments"][0]["text"] == want
    srt = post(app, flac, response_format="srt", **common)
    assert srt.status_code == 200 and "00:00:00,000 --> 00:00:02,000" in srt.text
    vtt = post(app, flac, response_format="vtt", **common)
    assert vtt.text.startswith("WEBVTT") and "00:00:00.000 --> 00:00:02.000" in vtt.text
    # the language by ISO code, native name or the model's own name: the same prompt
    for lang in ("pt", "Português", "葡萄牙语"):
        assert post(app, flac, **{**common, "language": lang}).json()["text"] == want


def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(app, audio_files, tmp_path):
    big = tmp_path / "big.wav"
    big.write_bytes(os.urandom((UPLOAD_MB + 2) * 1024 * 1024))
    r = post(app, big)
    assert r.status_code == 413, r.text
    assert "limit" in r.json()["error"]["message"]

    # just over the limit, within the slack allowed for the form around the file
    over = tmp_path / "over.wav"
    over.write_bytes(b"\0" * (UPLOAD_MB * 1024 * 1024 + 10))
    assert post(app, over).status_code == 413

    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all\n" * 20)
    r = post(app, text)
    assert r.status_code == 400
    err = r.json()["error"]
    assert "notes.wav" in err["message"] and "not an audio file" in err["message"]

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert post(app, empty).status_code == 400
    assert post(app, audio_files["tone.wav"], language="klingon").status_code == 400
    assert post(app, audio_files["tone.wav"], response_format="xml").status_code == 400
    r = requests.post(app.url + "/v1/audio/transcriptions", data={"language": "en"}, timeout=10)
    assert r.status_code == 400 and "file" in r.json()["error"]["message"]

    assert get_json(app.url + "/health")["status"] == "ok"
    assert post(app, audio_files["tone.wav"]).status_code == 200


def test_ten_concurrent_requests_all_answered(app, engine, audio_files):
    files = [audio_files[n] for n in ("tone.wav", "chirp.wav", "noise.wav", "tone44k.flac")]
    want = {p.name: expected_text(engine, p) for p in files}
    jobs = [files[i % len(files)] for i in range(10)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(lambda p: (p.name, post(app, p, timeout=120)), p) for p in jobs]
        time.sleep(0.3)
        t0 = time.monotonic()
        assert get_json(app.url + "/health")["status"] == "ok"   # not stuck behind the queue
        assert time.monotonic() - t0 < 5
        results = [f.result() for f in futures]
    assert len(results) == 10
    for name, r in results:
        assert r.status_code == 200, r.text
        assert r.json()["text"] == want[name]
    # the page's queue and the API share the model: both work meanwhile
    assert get_json(app.url + "/health")["model_loaded"] is True


def test_page_is_served(app):
    r = requests.get(app.url + "/", timeout=10)
    assert r.status_code == 200 and "<html" in r.text.lower()


def test_models_lists_the_model(app):
    models = requests.get(app.url + "/v1/models", timeout=10).json()
    assert models["object"] == "list"
    assert models["data"][0]["id"] == get_json(app.url + "/health")["model"]


def test_api_key_and_auth(keyed_app, engine, audio_files):
    wav = audio_files["noise.wav"]
    assert get_json(keyed_app.url + "/health")["status"] == "ok"      # health stays open
    r = post(keyed_app, wav)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert post(keyed_app, wav, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert requests.get(keyed_app.url + "/v1/models", timeout=10).status_code == 401
    r = post(keyed_app, wav, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200 and r.json()["text"] == expected_text(engine, wav)
    basic = "Basic " + base64.b64encode(b"ann:pw").decode()
    assert post(keyed_app, wav, headers={"Authorization": basic}).status_code == 200
    bad = "Basic " + base64.b64encode(b"ann:nope").decode()
    assert post(keyed_app, wav, headers={"Authorization": bad}).status_code == 401


def test_page_needs_the_login(keyed_app, engine, audio_files):
    """The page and its Gradio API need the --auth login."""
    wav = audio_files["noise.wav"]
    from gradio_client import Client, handle_file
    assert requests.get(keyed_app.url + "/config", timeout=10).status_code == 401
    client = Client(keyed_app.url, auth=("ann", "pw"), verbose=False)
    out = client.predict([handle_file(str(wav))], None, "auto", True, "", api_name="/transcribe")
    assert out[1] == expected_text(engine, wav)


# --------------------------------------------------------------------------- in process

def test_model_loads_once_under_concurrent_first_requests():
    from serving.model_holder import ModelHolder, ModelUnavailable

    calls = []

    class Fake:
        def describe(self):
            return {"model": "fake", "device": "cpu", "dtype": "fp32", "demo": False}

        def transcribe(self, inputs, **kw):
            return [{"text": "ok"} for _ in inputs]

    def loader(spec, device, dtype):
        calls.append(spec)
        time.sleep(0.3)
        return Fake()

    holder = ModelHolder("fake", "cpu", "fp32", loader=loader)
    assert holder.info()["model_loaded"] is False
    barrier = threading.Barrier(8)

    def first_request(_):
        barrier.wait()
        return holder.transcribe([b"x"])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        out = list(pool.map(first_request, range(8)))
    assert calls == ["fake"] and holder.loads == 1
    assert all(o == [{"text": "ok"}] for o in out)
    assert holder.info()["model_loaded"] is True and holder.info()["model"] == "fake"

    # a failed load is reported, and retried by a later request
    attempts = []

    def flaky(spec, device, dtype):
        attempts.append(1)
        if len(attempts) == 1:
            raise FileNotFoundError("no model.pt")
        return Fake()

    h3 = ModelHolder("fake", "cpu", "fp32", loader=lambda *a: Fake())
    h3.preload_in_background().join(10)                   # --preload
    assert h3.loaded and h3.loads == 1

    h2 = ModelHolder("x", "cpu", "fp32", loader=flaky)
    with pytest.raises(ModelUnavailable, match="no model is available"):
        h2.get()
    assert h2.info()["load_error"] and not h2.info()["model_loaded"]
    assert "no model.pt" in h2.info(private=True)["load_error_detail"]   # the operator's view
    h2._error_at -= 60  # as if the retry pause had passed
    assert isinstance(h2.get(), Fake) and h2.info()["load_error"] is None


def test_long_audio_goes_to_longform(monkeypatch, audio_files, tmp_path):
    import numpy as np
    import soundfile as sf

    from serving import pipeline

    long_wav = tmp_path / "long.wav"
    sf.write(long_wav, np.zeros(16000 * 45, np.float32), 16000)
    calls = []

    def fake_long(holder, src, name, language, opts, progress):
        calls.append((name, language))
        progress(1, 2)
        progress(2, 2)
        return {"text": "a b", "duration": 45.0, "error": None,
                "segments": [{"start": 0.0, "end": 20.0, "text": "a"},
                             {"start": 25.0, "end": 40.0, "text": "b"}]}

    class Holder:
        def get(self):
            return self

        def client(self, priority, caller):
            return self

        def transcribe(self, waves, **kw):
            return [{"text": f"short{len(w)}", "error": None, "finish_reason": "stop"}
                    for w in waves]

    monkeypatch.setattr(pipeline, "transcribe_long", fake_long)
    seen = []
    rows = pipeline.transcribe_items(
        Holder(), [("long.wav", str(long_wav)), ("tone.wav", str(audio_files["tone.wav"])),
                   ("bad.wav", b"not audio")],
        pipeline.Options(language="zh", max_audio_seconds=3600),
        progress=lambda f, m: seen.append(f))
    assert calls == [("long.wav", "zh")]
    assert rows[0]["longform"] and rows[0]["text"] == "a b" and len(rows[0]["segments"]) == 2
    assert rows[1]["text"] == "short24000" and rows[1]["segments"] == [
        {"start": 0.0, "end": 1.5, "text": "short24000"}]
    assert rows[2]["error_kind"] == "audio" and rows[2]["error"].startswith("bad.wav")
    assert seen[-1] == 1.0 and seen == sorted(seen)
    too_long = pipeline.transcribe_items(Holder(), [("long.wav", str(long_wav))],
                                         pipeline.Options(max_audio_seconds=30))
    assert too_long[0]["error_kind"] == "too_long"


def test_formats():
    from serving.formats import combined_transcript, render, write_downloads

    row = {"file": "a.wav", "duration": 3.25, "language": "en", "processing_time": 0.1,
           "text": "hello world", "error": None, "finish_reason": "stop",
           "segments": [{"start": 0.0, "end": 3.25, "text": "hello world"}]}
    assert json.loads(render(row, "json")[0]) == {"text": "hello world", "language": "en",
                                                  "language_name": "English"}
    assert render(row, "text") == ("hello world\n", "text/plain; charset=utf-8")
    assert "00:00:03,250" in render(row, "srt")[0]
    assert render(row, "vtt")[0].startswith("WEBVTT")
    verbose = json.loads(render(row, "verbose_json")[0])
    assert verbose["language"] == "en" and verbose["language_name"] == "English"
    assert verbose["segments"][0]["end"] == 3.25
    bad = {**row, "file": "b.wav", "text": "", "error": "b.wav: broken", "segments": []}
    assert combined_transcript([row]) == "hello world"
    assert combined_transcript([row, bad]) == (
        "[a.wav]\nhello world\n\n[b.wav]\n[error] b.wav: broken")
    paths = write_downloads([row, bad])
    assert sorted(os.path.basename(p) for p in paths) == ["a.srt", "a.vtt", "transcript.json",
                                                         "transcript.txt"]
    doc = json.load(open(next(p for p in paths if p.endswith(".json")), encoding="utf-8"))
    assert [f["error"] for f in doc["files"]] == [None, "b.wav: broken"]


def test_settings_flags_and_environment():
    s = parse_settings([], environ={})
    assert (s.host, s.port, s.scheduler, s.model, s.api_key) == ("127.0.0.1", 7860, "batch", None,
                                                                 None)
    env = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "9000",
           "FUNASR_NANO_MODEL": "/m", "FUNASR_NANO_API_KEY": "k", "FUNASR_NANO_PRELOAD": "1",
           "FUNASR_NANO_MAX_UPLOAD_MB": "5"}
    s = parse_settings([], environ=env)
    assert (s.host, s.port, s.model, s.api_key, s.preload) == ("0.0.0.0", 9000, "/m", "k", True)
    assert s.max_upload_bytes == 5 * 1024 * 1024
    s = parse_settings(["--port", "1234", "--model", "/x", "--auth", "u:p:q"], environ=env)
    assert (s.port, s.model, s.auth_pair) == (1234, "/x", ("u", "p:q"))
    with pytest.raises(SystemExit):
        parse_settings(["--auth", "nocolon"], environ={})
    with pytest.raises(SystemExit):
        parse_settings(["--dtype", "fp16"], environ={})


def test_language_menu_lists_all_31_languages():
    from engine.languages import LANGUAGES, model_language_name
    from serving.page_common import language_choices

    choices = language_choices()
    assert choices[0][1] == "auto" and len(choices) == 32
    labels = dict((v, k) for k, v in choices)
    assert labels["ja"] == "日本語 — Japanese"
    assert labels["en"] == "English"
    for lang in LANGUAGES:
        assert lang.english in labels[lang.code] and lang.native in labels[lang.code]
        assert model_language_name(lang.code) == lang.model_name


def test_demo_model_gets_a_banner_and_a_log_line(monkeypatch, app_model_dir, tmp_path, caplog):
    """No --model and no official weights here: the demo checkpoint, announced on the page and in
    the log with how to get the real weights."""
    import shutil

    from fastapi.testclient import TestClient

    import app as app_module
    from serving import model_choice

    demo = tmp_path / "demo"
    shutil.copytree(app_model_dir, demo)
    (demo / "DEMO.md").write_text("A small demo model trained on synthetic speech.\n")

    def not_cached(hub_id, local_only=False):
        raise FileNotFoundError(hub_id)

    monkeypatch.setattr(model_choice, "DEMO_DIR", demo)
    monkeypatch.setattr(model_choice, "missing_files", lambda path: ["model.pt"])
    monkeypatch.setattr(model_choice, "resolve_model_dir", not_cached)
    monkeypatch.delenv("FUNASR_NANO_MODEL", raising=False)
    caplog.set_level("INFO", logger="funasr_nano.app")
    fastapi_app, holder = app_module.create_app(parse_settings([], environ={}))
    assert holder.spec == str(demo) and holder.demo
    assert any("Demo model" in r.message and "synthetic speech" in r.message
               and "python -m engine.download" in r.message for r in caplog.records)
    with TestClient(fastapi_app) as client:
        health = client.get("/health").json()
        assert health["demo"] is True and health["model"] == demo.name   # a name, not a path
        assert health["model_loaded"] is False
        page_config = client.get("/config").text
        assert "Demo model" in page_config and "python -m engine.download" in page_config


def test_docs_flags_table_is_current():
    from pathlib import Path

    from serving.settings import flags_table

    docs = (Path(__file__).resolve().parents[1] / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert flags_table() in docs, "docs/deployment.md: paste serving.settings.flags_table() output"


def test_long_audio_through_engine_longform(engine, speech_dir, tmp_path):
    """A 35+ s recording goes through the real engine.longform and the scheduler (bulk
    priority): several VAD segments, and the row's text is their joined text."""
    import numpy as np
    import soundfile as sf

    from engine import MAX_UTTERANCE_S
    from engine.audio import load_audio
    from serving.model_holder import ModelHolder
    from serving.pipeline import Options, transcribe_items

    clips = sorted(p for p in (speech_dir / "en").iterdir() if p.is_file())
    parts, total = [], 0.0
    while total < MAX_UTTERANCE_S + 5:
        for clip in clips:
            wave = load_audio(clip)
            parts += [wave, np.zeros(16000, np.float32)]
            total += len(wave) / 16000 + 1
    long_wav = tmp_path / "long.wav"
    sf.write(long_wav, np.concatenate(parts), 16000)
    from serving.metrics import Metrics
    metrics = Metrics()
    holder = ModelHolder("in-process", "cpu", "fp32", loader=lambda *a: engine, metrics=metrics)
    try:
        [row] = transcribe_items(holder, [("long.wav", str(long_wav))],
                                 Options(language="en", max_new_tokens=4, batch_size=8))
    finally:
        holder.close()
    assert row["longform"] and row["error"] is None
    done = sum(metrics.registry.get_sample_value(
        "funasr_nano_sequences_total", {"priority": "bulk", "outcome": o}) or 0 for o in ("length", "stop"))
    assert done >= len(row["segments"])  # every segment went to the scheduler as bulk work
    assert row["duration"] == pytest.approx(total, abs=0.1)
    assert len(row["segments"]) >= 2
    assert all(0 <= s["start"] < s["end"] <= row["duration"] + 0.01 for s in row["segments"])
    assert row["text"] and row["segments"][0]["text"] in row["text"]


def test_examples_from_the_example_folder(tmp_path, audio_files):
    import json as _json
    import shutil

    from serving.model_holder import ModelHolder
    from serving.ui import build_blocks

    shutil.copy(audio_files["tone.wav"], tmp_path / "hello.wav")
    shutil.copy(audio_files["tone.wav"], tmp_path / "hei.wav")
    (tmp_path / "README.txt").write_text("not a clip")
    (tmp_path / "examples.tsv").write_text("file\tlanguage\ttext_itn\nhei.wav\tfi\tHei.\n")
    from serving.files_tab import example_files
    assert [(os.path.basename(p), code, label) for p, code, label in example_files(tmp_path)] == [
        ("hei.wav", "fi", "Finnish (hei.wav)"), ("hello.wav", "auto", "hello.wav")]
    holder = ModelHolder("x", "cpu", "fp32", loader=lambda *a: None)
    blocks = build_blocks(parse_settings([], environ={}), holder, examples_dir=tmp_path)
    config = _json.dumps(blocks.get_config_file(), default=str)
    assert "hello.wav" in config and "README.txt" not in config
    assert not holder.loaded                               # building the page loads nothing


def test_healthcheck_script_reports_what_runs_where(app, engine, audio_files):
    """scripts/healthcheck.py (the image's HEALTHCHECK) against the real app: exit 0 and one
    line naming the device and each part's dtype; against a port nobody serves: exit 1."""
    import subprocess
    from pathlib import Path

    from _app_server import free_port
    script = Path(__file__).resolve().parents[1] / "scripts" / "healthcheck.py"
    assert post(app, audio_files["tone.wav"], language="en").status_code == 200  # loaded
    ok = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                        timeout=30, env={**os.environ, "GRADIO_SERVER_PORT": str(app.port)})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    line = ok.stdout.strip()
    assert line.startswith("ok: model loaded; cpu (") and "\n" not in line, line
    assert "audio_encoder fp32, audio_adaptor fp32, llm fp32; decoder dynamic" in line, line
    down = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "GRADIO_SERVER_PORT": str(free_port())})
    assert down.returncode == 1 and down.stdout.startswith("unhealthy:"), down.stdout
