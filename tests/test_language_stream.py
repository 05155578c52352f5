"""The language heard (engine.language_id), ``stream=true`` (serving.streaming), verbose_json's
scores, and several files to stdout in a subtitle format: through the CLI and the running app
with the demo checkpoint, the app spoken to with the ``openai`` SDK.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo"
EXAMPLES = ROOT / "example"
sys.path.insert(0, str(ROOT))

from tests._fixtures import missing  # noqa: E402

if not (DEMO / "model.pt").is_file():
    missing(f"no demo checkpoint: {DEMO / 'model.pt'} is missing", module_level=True)

from engine import language_id  # noqa: E402


def examples() -> list[dict]:
    with open(EXAMPLES / "examples.tsv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


# ----------------------------------------------------------------------------- text side

def test_text_language_of_every_example_in_spoken_form():
    """The spoken forms (ITN off) are long enough for the text alone."""
    for row in examples():
        found = language_id.detect(row["text_noitn"])
        assert found["language"] == row["language"], (row, found)
        assert 0.5 < found["language_probability"] <= 1.0


def test_cantonese_and_mandarin_are_told_apart_by_their_characters():
    assert language_id.detect("我哋班有七百三十四個學生。")["language"] == "yue"
    assert language_id.detect("佢今日唔得閒，聽日先嚟。")["language"] == "yue"
    assert language_id.detect("这本书有九页。")["language"] == "zh"
    assert language_id.detect("我們的關係很好，明天見。")["language"] == "zh"   # 係 is not a marker


def test_no_letters_no_language():
    assert language_id.detect("") is None and language_id.detect("123 4.5 !") is None
    r = {"language": "auto", "language_name": "automatic", "text": "...", "error": None}
    language_id.label_all([r], {})
    assert r["language"] == "auto" and "language_probability" not in r


def test_a_given_language_is_kept_without_probability():
    r = {"language": "de", "text": "Custa oitenta euros", "error": None}
    language_id.label_all([r], {0: None}, respeak=lambda ws: pytest.fail("not asked"))
    assert r == {"language": "de", "text": "Custa oitenta euros", "error": None}


def test_a_failing_second_decode_keeps_the_text_answer():
    r = {"language": "auto", "text": "Custa 89,20 €.", "error": None}

    def broken(ws):
        raise RuntimeError("boom")
    language_id.label_all([r], {0: np.zeros(16000, np.float32)}, True, broken)
    assert r["language"] != "auto" and "language_probability" in r


# ----------------------------------------------------------------------------- CLI

def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "transcribe.py"), "--model", str(DEMO),
                           "--quiet", "--max-new-tokens", "96", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_reports_the_language_heard_in_all_12_examples():
    rows = examples()
    out = _cli("--format", "json", *(EXAMPLES / r["file"] for r in rows))
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    heard = [(r["language"], res["language"]) for r, res in zip(rows, results)]
    assert all(a == b for a, b in heard), heard
    for res in results:
        assert 0.5 < res["language_probability"] <= 1.0
        assert res["language_name"] != "automatic"


def test_cli_given_language_is_reported_as_given():
    out = _cli("--format", "json", "--language", "en", EXAMPLES / "en.wav")
    res = json.loads(out.stdout)
    assert (res["language"], res["language_name"]) == ("en", "English")
    assert "language_probability" not in res


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_cli_refuses_several_files_to_stdout_in_a_subtitle_format(fmt):
    out = _cli("--format", fmt, EXAMPLES / "en.wav", EXAMPLES / "nl.wav")
    assert out.returncode == 2 and out.stdout == ""
    assert "--output-dir" in out.stderr and f"--format {fmt}" in out.stderr


# ----------------------------------------------------------------------------- the app

@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from tests._app_server import start_app
    server = start_app(str(DEMO), tmp_path_factory.mktemp("langstream"), "--max-new-tokens", "96")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(app):
    import openai
    return openai.OpenAI(base_url=app.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory) -> Path:
    """Six example clips in six languages, 6 s of silence between them (longer than the VAD's
    merge gap, so each is its own segment): 40 s or so, decoded as long audio."""
    parts = []
    for name in ("en", "nl", "pt", "fi", "sv", "pl"):
        audio, sr = sf.read(EXAMPLES / f"{name}.wav", dtype="float32")
        assert sr == 16000
        parts += [np.zeros(6 * sr, np.float32), audio]
    path = tmp_path_factory.mktemp("long") / "six.wav"
    sf.write(path, np.concatenate(parts + [np.zeros(16000, np.float32)]), 16000)
    return path


def test_api_reports_the_language_heard_in_all_12_examples(client):
    for row in examples():
        with open(EXAMPLES / row["file"], "rb") as f:
            res = client.audio.transcriptions.create(model="x", file=f,
                                                     response_format="verbose_json")
        assert res.language == row["language"], (row["file"], res.language, res.text)
        extra = res.model_extra
        assert 0.5 < extra["language_probability"] <= 1.0
        assert extra["languages"] == [{"code": row["language"]}]
        [seg] = res.segments
        # real or absent: no placeholder zeros
        assert seg.compression_ratio > 0
        assert "avg_logprob" not in seg.model_fields_set
        assert "no_speech_prob" not in seg.model_fields_set


def test_api_given_language_keeps_it(client):
    with open(EXAMPLES / "en.wav", "rb") as f:
        res = client.audio.transcriptions.create(model="x", file=f, language="en")
    assert res.model_extra["language"] == "en" and "language_probability" not in res.model_extra


def _stream(client, path, **kw):
    with open(path, "rb") as f:
        return list(client.audio.transcriptions.create(model="x", file=f, stream=True, **kw))


def test_stream_short_file_deltas_then_done(client):
    path = EXAMPLES / "pt.wav"
    with open(path, "rb") as f:
        plain = client.audio.transcriptions.create(model="x", file=f)
    events = _stream(client, path)
    assert [e.type for e in events][-1] == "transcript.text.done"
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert deltas and "".join(deltas) == plain.text == events[-1].text
    done = events[-1]
    assert done.languages[0].code == "pt" and done.model_extra["language"] == "pt"
    assert done.usage.type == "duration"


def test_stream_long_file_one_delta_per_segment(client, long_recording):
    with open(long_recording, "rb") as f:
        plain = client.audio.transcriptions.create(model="x", file=f,
                                                   response_format="verbose_json")
    events = _stream(client, long_recording)
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert events[-1].type == "transcript.text.done"
    assert "".join(deltas) == plain.text == events[-1].text
    assert len(deltas) == len(plain.segments) == 6
    # per segment, the language heard
    assert [s.model_extra.get("language") for s in plain.segments] == [
        "en", "nl", "pt", "fi", "sv", "pl"]
    codes = {x.code for x in events[-1].languages}
    assert codes == {"en", "nl", "pt", "fi", "sv", "pl"}


def test_stream_errors_are_openai_errors(client):
    import openai
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model="x", file=("bad.wav", b"not audio"),
                                           stream=True)
    assert e.value.body["code"] == "invalid_audio" and "bad.wav" in e.value.body["message"]
    with open(EXAMPLES / "en.wav", "rb") as f, pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model="x", file=f, stream=True,
                                           response_format="srt")
    assert e.value.body["param"] == "stream"


def test_an_error_after_the_first_delta_is_an_openai_error_event():
    """A long file whose later segments fail in the model: the deltas sent stay sent, then an
    ``error`` event in OpenAI's shape, which the SDK raises as APIError (serving.streaming with
    a stand-in for the pipeline, in a real app, through the real SDK)."""
    import anyio
    import openai
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from serving import streaming
    from serving.transcription_routes import failure as _failure

    app = FastAPI()

    def run(on_segments):
        on_segments(0, [{"start": 0.0, "end": 5.0, "text": "first part"}])
        return [{"file": "long.wav", "text": "first part", "duration": 60.0,
                 "error": "long.wav: decoding failed: internal error (request id x)",
                 "error_kind": "model", "language": "auto"}]

    @app.post("/v1/audio/transcriptions")
    async def route():
        return await streaming.respond(run, None, _failure, anyio.CapacityLimiter(2))

    client = openai.OpenAI(base_url="http://testserver/v1", api_key="x", max_retries=0,
                           http_client=TestClient(app))
    stream = client.audio.transcriptions.create(model="x", file=("long.wav", b"RIFF"),
                                                stream=True)
    first = next(iter(stream))
    assert first.type == "transcript.text.delta" and first.delta == "first part"
    with pytest.raises(openai.APIError) as e:
        next(iter(stream))
    assert "decoding failed" in e.value.message
    assert e.value.body["code"] == "decoding_failed" and e.value.body["type"] == "server_error"
