"""The repetition guard (engine/repetition.py) on every utterance and every path: no output of
the shared clips or the bundled examples repeats one token more than 8 times in a row, with the
demo model and with the tiny random model; the Python API, the CLI, the HTTP API and the page's
endpoint agree. The stage-1 demo checkpoint looped on JFK ("juo juo juo ..." to the token limit);
the shipped one loops on JFK played at half speed (tests/_audio_variants.half_speed_jfk)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.repetition import MAX_RUN, collapse_repeats, longest_run, loop_at, units
from model import FunASRNano
from tests._app_server import start_app
from tests._audio_variants import half_speed_jfk

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo"


def test_loop_at_finds_loops_at_the_end_and_keeps_one_copy():
    assert loop_at([5] * MAX_RUN) is None and loop_at([1, 2] + [5] * MAX_RUN) is None
    assert loop_at([1, 2] + [5] * (MAX_RUN + 1)) == 3              # [1, 2, 5] kept
    assert loop_at([7, 8] * 7) is None                             # 14 tokens: under 16
    assert loop_at([9] + [7, 8] * 8) == 3                          # [9, 7, 8]
    assert loop_at([1, 2, 3] * 5 + [4]) is None                    # the loop must end the text
    assert loop_at([1, 2, 3, 4] * 3) is None and loop_at([1, 2, 3, 4] * 4) == 4
    long_unit = list(range(100, 130))                              # a 30-token sentence ...
    assert loop_at(long_unit * 3) is None and loop_at([0] + long_unit * 4) == 31   # ... 4 times
    assert loop_at(list(range(40)) + [3, 3, 3]) is None


def test_collapse_and_units():
    assert collapse_repeats("Harganya Rp2520.0 juo juo juo juo juo") == "Harganya Rp2520.0 juo"
    assert [u for u, _, _ in units("我想问 Hello, world!")] == ["我", "想", "问", "hello", "world"]
    assert longest_run([1, 1, 2, 2, 2, 1]) == 3 and longest_run([]) == 0


def _clips(speech_dir):
    shared = sorted(p for p in speech_dir.glob("*/*") if p.suffix in (".wav", ".flac", ".mp3"))
    return shared + sorted((ROOT / "example").glob("*.wav"))


def _check(asr, results, clips):
    for clip, r in zip(clips, results):
        assert r["error"] is None, r
        ids = asr.tokenizer.encode(r["text"])
        runs = (longest_run(ids), longest_run(u for u, _, _ in units(r["text"])))
        assert max(runs) <= MAX_RUN, (clip.name, runs, r["text"][:200])


@pytest.fixture(scope="module")
def demo():
    return FunASRNano.from_pretrained(str(DEMO), device="cpu")


@pytest.mark.parametrize("language", [None, "en"], ids=["auto", "en"])
def test_no_clip_repeats_a_token_more_than_8_times(demo, tiny_model_dir, speech_dir, language):
    clips = _clips(speech_dir)
    assert len(clips) == 22
    for asr in (demo, FunASRNano.from_pretrained(str(tiny_model_dir), device="cpu")):
        _check(asr, asr.transcribe([str(c) for c in clips], language=language), clips)


def test_guard_changes_only_the_loop(demo, speech_dir, tmp_path):
    """On JFK at half speed the demo model loops. Without the guard the decoder runs on with the
    loop (the reference's behaviour); with it, it stops there: the same text up to the loop, one
    copy."""
    clip = str(half_speed_jfk(speech_dir, tmp_path))
    raw = demo.transcribe(clip, language="en", repetition_guard=False)[0]
    assert longest_run(demo.tokenizer.encode(raw["text"])) > MAX_RUN, raw["text"]
    guarded = demo.transcribe(clip, language="en")[0]
    assert guarded["finish_reason"] == "repetition"
    assert guarded["num_tokens"] < raw["num_tokens"]
    assert raw["text"].startswith(guarded["text"].rstrip())
    assert collapse_repeats(raw["text"]).startswith(guarded["text"].rstrip())
    # batched with a clip that does not loop, neither changes
    other = str(ROOT / "example" / "en.wav")
    both = demo.transcribe([other, clip], language="en", batch_size=2)
    assert both[1]["text"] == guarded["text"]
    assert both[0]["text"] == demo.transcribe(other, language="en")[0]["text"]
    assert both[0]["finish_reason"] == "stop"


def test_cli_api_and_page_endpoint_guard_too(demo, speech_dir, tmp_path):
    clip = half_speed_jfk(speech_dir, tmp_path)
    want = demo.transcribe(str(clip), language="en")[0]["text"]
    out = subprocess.run([sys.executable, str(ROOT / "transcribe.py"), "--model", str(DEMO),
                          "--language", "en", "--quiet", str(clip)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = json.loads(out.stdout)
    assert line["text"] == want and line["finish_reason"] == "repetition"
    assert line["segments"][0]["flag"] == "repetition"

    import requests
    from gradio_client import Client, handle_file
    app = start_app(str(DEMO), tmp_path, "--max-new-tokens", "512")
    try:
        with open(clip, "rb") as f:
            r = requests.post(app.url + "/v1/audio/transcriptions", timeout=300,
                              files={"file": (clip.name, f)},
                              data={"language": "en", "response_format": "verbose_json"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["text"] == want and body["finish_reason"] == "repetition"
        assert body["segments"][0]["flag"] == "repetition"
        client = Client(app.url + "/", verbose=False)
        result = client.predict([handle_file(str(clip))], None, "en", True, "",
                                api_name="/transcribe")
        rows = result[3]
        assert rows[0]["text"] == want and rows[0]["segments"][0]["flag"] == "repetition"
    finally:
        app.stop()
