"""The engine's own promises: bad inputs are reported per file, inputs of every kind decode,
the CLI prints one line per file, the full-size layout loads in fp32 and bf16."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.checkpoint import CheckpointError, ModelNotFoundError
from engine.languages import describe_language
from model import FunASRNano

ROOT = Path(__file__).resolve().parent.parent
GOOD = ["zh/funasr_sample.wav", "en/whisper_jfk.flac", "en/common_voice_en_651325.mp3"]


@pytest.fixture(scope="module")
def asr(tiny_model_dir):
    return FunASRNano.from_pretrained(str(tiny_model_dir), device="cpu")


@pytest.fixture()
def bad_files(tmp_path, speech_dir):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 50)
    mp3 = (speech_dir / "en/common_voice_en_651325.mp3").read_bytes()
    truncated = tmp_path / "truncated.mp3"
    truncated.write_bytes(mp3[:300])  # a header and a fraction of one frame
    folder = tmp_path / "a_directory.wav"
    folder.mkdir()
    return {"empty": empty, "notes": text, "truncated": truncated, "a_directory": folder,
            "missing": tmp_path / "missing.flac"}


def test_bad_files_do_not_stop_the_batch(asr, speech_dir, bad_files):
    good = [str(speech_dir / g) for g in GOOD]
    inputs = [good[0], *map(str, bad_files.values()), good[1], good[2]]
    results = asr.transcribe(inputs, max_new_tokens=8, batch_size=4)
    assert [r["key"] for r in results] == [Path(p).stem for p in inputs]
    for r in results:
        if r["key"] in bad_files:
            assert r["error"] and r["key"] in r["error"], r
            assert r["text"] == ""
        else:
            assert r["error"] is None and r["text"] and r["duration"] > 0, r
    reasons = {r["key"]: r["error"].lower() for r in results if r["error"]}
    assert "empty" in reasons["empty"]
    assert "directory" in reasons["a_directory"]
    assert "not found" in reasons["missing"] or "no such file" in reasons["missing"]


def test_bad_files_alone_give_results_not_exceptions(asr, bad_files):
    results = asr.transcribe([str(p) for p in bad_files.values()], max_new_tokens=4)
    assert len(results) == len(bad_files) and all(r["error"] for r in results)


def test_input_kinds_agree(asr, speech_dir):
    """A path, its bytes, (array, rate) at the file's rate, and a 16 kHz array give one text."""
    path = speech_dir / "en/lhotse_ljspeech_LJ002-0020.wav"  # 22.05 kHz
    audio, rate = sf.read(str(path), dtype="float32")
    from engine.audio import load_audio
    wave16 = load_audio(str(path))
    results = asr.transcribe([str(path), path.read_bytes(), (audio, rate), wave16],
                             max_new_tokens=12)
    assert all(r["error"] is None for r in results)
    assert len({r["text"] for r in results}) == 1
    assert results[0]["duration"] == pytest.approx(len(audio) / rate, abs=0.01)


def test_result_fields_and_no_fake_timestamps(asr, speech_dir):
    r = asr.transcribe(str(speech_dir / GOOD[0]), language="English", itn=False,
                       max_new_tokens=5)[0]
    assert (r["language"], r["language_name"]) == ("en", "English")
    assert r["finish_reason"] in ("stop", "length", "repetition")
    assert r["num_tokens"] <= 5
    assert "timestamps" not in r  # this checkpoint has no CTC weights
    assert asr.describe()["ctc"] is False
    auto = asr.transcribe(str(speech_dir / GOOD[0]), max_new_tokens=2)[0]
    # not told: the language heard (engine.language_id), spelled as a given one, with how sure
    if auto["language"] == "auto":   # nothing to tell from (no letters in the random text)
        assert auto["language_name"] == "automatic" and "language_probability" not in auto
    else:
        assert describe_language(auto["language"])["language_name"] == auto["language_name"]
        assert 0 < auto["language_probability"] <= 1
    for spelling in ("yue", "Cantonese", "粵語", "粤语", "zh-HK"):
        r = asr.transcribe(str(speech_dir / GOOD[0]), language=spelling, max_new_tokens=2)[0]
        assert (r["language"], r["language_name"]) == ("yue", "Cantonese"), spelling
    with pytest.raises(ValueError, match="unknown language"):
        asr.transcribe(str(speech_dir / GOOD[0]), language="Klingon")


def test_ctc_checkpoint_gives_timestamps(tiny_ctc_model_dir, speech_dir):
    asr = FunASRNano.from_pretrained(str(tiny_ctc_model_dir), device="cpu")
    assert asr.describe()["ctc"] is True
    r = asr.transcribe(str(speech_dir / GOOD[0]), max_new_tokens=10)[0]
    assert "ctc_text" in r and isinstance(r["timestamps"], list)
    ends = [t["end_time"] for t in r["timestamps"]]
    starts = [t["start_time"] for t in r["timestamps"]]
    assert all(s < e for s, e in zip(starts, ends)) and ends == sorted(ends)
    assert not ends or ends[-1] <= r["duration"] + 0.06


def test_forced_align_is_the_best_path():
    """Viterbi against brute force over every CTC path on a small random problem."""
    import itertools

    import torch

    from ctc import forced_align
    rng = np.random.default_rng(3)
    blank, targets, frames = 0, [1, 2, 2], 7
    logp = torch.log_softmax(torch.tensor(rng.normal(size=(frames, 3)) * 2), -1)

    def collapse(path):
        out = [k for k, _ in itertools.groupby(path)]
        return [k for k in out if k != blank]

    best = max((p for p in itertools.product(range(3), repeat=frames) if collapse(p) == targets),
               key=lambda p: sum(float(logp[t, k]) for t, k in enumerate(p)))
    items = forced_align(logp, targets, blank)
    assert [it["token"] for it in items] == targets
    path = [blank] * frames
    for it in items:
        path[it["start"]:it["end"]] = [it["token"]] * (it["end"] - it["start"])
    assert path == list(best)
    assert forced_align(logp[:2], targets, blank) == []  # cannot fit: no alignment


def test_missing_and_misshaped_tensors_are_named(tiny_model_dir, tmp_path):
    import shutil

    import torch
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    sd = torch.load(bad / "model.pt", weights_only=True)["state_dict"]
    del sd["audio_encoder.encoders.0.norm1.weight"]
    sd["audio_adaptor.linear1.bias"] = sd["audio_adaptor.linear1.bias"][:3]
    torch.save({"state_dict": sd}, bad / "model.pt")
    with pytest.raises(CheckpointError) as e:
        FunASRNano.from_pretrained(str(bad), device="cpu")
    assert "audio_encoder.encoders.0.norm1.weight" in str(e.value)
    assert "audio_adaptor.linear1.bias" in str(e.value)


def test_model_pt_in_the_old_non_zip_format_loads(asr, tiny_model_dir, speech_dir, tmp_path):
    """torch.save's pre-1.6 format (not a zip, cannot be memory-mapped; funasr reads it) loads
    and gives the text of the zip file it was converted from."""
    import shutil
    import zipfile

    import torch
    old = tmp_path / "old"
    shutil.copytree(tiny_model_dir, old)
    ckpt = torch.load(old / "model.pt", weights_only=True)
    torch.save(ckpt, old / "model.pt", _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(old / "model.pt")
    clip = str(speech_dir / GOOD[0])
    want = asr.transcribe(clip, max_new_tokens=8)[0]
    got = FunASRNano.from_pretrained(str(old), device="cpu").transcribe(clip, max_new_tokens=8)[0]
    assert got["error"] is None and got["text"] == want["text"]


def test_missing_model_files_are_listed(tiny_model_dir, tmp_path):
    import shutil
    part = tmp_path / "partial"
    shutil.copytree(tiny_model_dir, part)
    (part / "model.pt").unlink()
    with pytest.raises(ModelNotFoundError, match="model.pt"):
        FunASRNano.from_pretrained(str(part), device="cpu")


def test_offline_hub_id_says_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as e:
        FunASRNano.from_pretrained("FunAudioLLM/Fun-ASR-MLT-Nano-2512", device="cpu")
    msg = str(e.value)
    assert "model.pt" in msg and "Qwen3-0.6B/tokenizer.json" in msg and "download" in msg


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "transcribe.py"), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def test_cli_json_lines_and_exit_status(tiny_model_dir, speech_dir, bad_files):
    good = [str(speech_dir / g) for g in GOOD[:2]]
    proc = _cli("--model", str(tiny_model_dir), "--max-new-tokens", "6", "--format", "json",
                "--language", "en", "--no-itn", "--hotwords", "alpha,beta",
                good[0], str(bad_files["notes"]), good[1])
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["key"] for x in lines] == ["funasr_sample", "notes", "whisper_jfk"]
    assert lines[0]["error"] is None and lines[0]["text"] and lines[0]["file"] == good[0]
    assert lines[1]["error"] and "notes" in proc.stderr
    assert all((x["language"], x["language_name"]) == ("en", "English") for x in lines)
    ok = _cli("--model", str(tiny_model_dir), "--max-new-tokens", "4", "--format", "srt", good[0])
    # one SRT document whose cue is timed by the words (engine.alignment), not from 0
    assert ok.returncode == 0 and re.match(r"1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n\S",
                                           ok.stdout), ok.stdout


def test_full_size_layout_loads_and_transcribes(full_model_dir, speech_dir):
    """The official tensor layout at full size (random weights) in fp32 and bf16."""
    for dtype in ("fp32", "bf16"):
        asr = FunASRNano.from_pretrained(str(full_model_dir), device="cpu", dtype=dtype)
        r = asr.transcribe(str(speech_dir / GOOD[0]), max_new_tokens=3)[0]
        assert r["error"] is None and r["num_tokens"] >= 1
        assert asr.describe()["dtype"] == dtype
        del asr
