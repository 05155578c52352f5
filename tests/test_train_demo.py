"""The demo checkpoint's recipe runs end to end on a tiny set: espeak-ng data -> training ->
export in the official layout -> the engine loads and runs it. Training is reproducible and
resumable: two steps, a stop and a resume give the same weights as four steps in one go."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests._fixtures import missing

ROOT = Path(__file__).resolve().parents[1]

if shutil.which("espeak-ng") is None:   # Debian's espeak-ng speaks the training data
    missing("espeak-ng is not installed (apt-get install espeak-ng)", module_level=True)


def _run(*args: str) -> str:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("demo_data")
    _run("tools/demo_data.py", "--out", str(data), "--langs", "en,zh", "--train-per-lang", "24",
         "--test-per-lang", "4", "--workers", "1")
    return data


def _train(data: Path, work: Path, out: Path, steps: int, *extra: str) -> str:
    return _run("tools/train_demo.py", "--data", str(data), "--work", str(work), "--out", str(out),
                "--steps", str(steps), "--threads", "1", "--vocab", "400", "--max-batch", "4",
                "--batch-frames", "400", "--log-every", "1", "--eval-every", "0",
                # the encoder-CTC cut-off is a fraction of --steps, which differs between the
                # runs compared here
                "--ctc-until", "1", *extra)


def test_data_is_seeded_and_held_out(tiny_data, tmp_path):
    recs = [json.loads(x) for x in (tiny_data / "manifest.jsonl").read_text().splitlines()]
    assert {r["lang"] for r in recs} == {"en", "zh"}
    train = {r["text_noitn"] for r in recs if r["split"] == "train"}
    test = {r["text_noitn"] for r in recs if r["split"] == "test"}
    assert test and not train & test
    assert any(r["text_itn"] != r["text_noitn"] for r in recs)  # numbers in both forms
    again = tmp_path / "again"
    _run("tools/demo_data.py", "--out", str(again), "--langs", "en,zh", "--train-per-lang", "24",
         "--test-per-lang", "4", "--workers", "1")
    assert (again / "manifest.jsonl").read_text() == (tiny_data / "manifest.jsonl").read_text()
    first = recs[0]["wav"]
    assert (again / first).read_bytes() == (tiny_data / first).read_bytes()


def test_training_resumes_to_the_same_weights_and_exports_a_loadable_model(tiny_data, tmp_path):
    log = _train(tiny_data, tmp_path / "w1", tmp_path / "m1", 4)
    assert "step 4/4" in log and "exported" in log
    _train(tiny_data, tmp_path / "w2", tmp_path / "m2", 2)
    log = _train(tiny_data, tmp_path / "w2", tmp_path / "m2", 4)
    assert "resumed from" in log and "at step 2" in log
    a = torch.load(tmp_path / "m1" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "m2" / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)

    for name in ("config.yaml", "configuration.json", "Qwen3-demo/tokenizer.json",
                 "Qwen3-demo/config.json"):
        assert (tmp_path / "m1" / name).is_file(), name
    from model import FunASRNano
    asr = FunASRNano.from_pretrained(str(tmp_path / "m1"), device="cpu")
    rec = json.loads((tiny_data / "manifest.jsonl").read_text().splitlines()[0])
    [res] = asr.transcribe([str(tiny_data / rec["wav"])], language="en", max_new_tokens=8)
    assert res["error"] is None and res["num_tokens"] >= 1


def test_number_phrase_data_keeps_the_held_out_set(tiny_data, tmp_path):
    """The second stage's data (number phrases, more numbers) is drawn after the same held-out
    sentences: the table before and after a change measures the same clips."""
    data = tmp_path / "phrases"
    _run("tools/demo_data.py", "--out", str(data), "--langs", "en,zh", "--train-per-lang", "24",
         "--test-per-lang", "4", "--workers", "1", "--phrase-share", "0.5", "--numeric-share", "0.7")
    recs = [json.loads(x) for x in (data / "manifest.jsonl").read_text().splitlines()]
    base = [json.loads(x) for x in (tiny_data / "manifest.jsonl").read_text().splitlines()]
    test = [r for r in recs if r["split"] == "test"]
    assert test == [r for r in base if r["split"] == "test"]
    assert (data / test[0]["wav"]).read_bytes() == (tiny_data / test[0]["wav"]).read_bytes()
    phrases = [r for r in recs if r["kind"].startswith("phrase-")]
    assert phrases and all(r["split"] == "train" for r in phrases)
    # a phrase is numbers only: ITN on writes digits where ITN off writes words
    assert all(any(c.isdigit() for c in r["text_itn"]) and not any(c.isdigit() for c in r["text_noitn"])
               for r in phrases)
    assert not {r["text_noitn"] for r in recs if r["split"] == "train"} & {r["text_noitn"] for r in test}


def test_second_stage_starts_from_an_exported_model(tiny_data, tmp_path):
    """--init-from a model directory keeps its tokenizer and config and starts from its weights:
    with a learning rate of 0 the second stage exports the very same tensors."""
    _train(tiny_data, tmp_path / "w1", tmp_path / "m1", 2)
    log = _train(tiny_data, tmp_path / "w2", tmp_path / "m2", 2, "--init-from", str(tmp_path / "m1"),
                 "--lr", "0", "--ctc-weight", "0")
    assert "initialised all" in log
    for name in ("Qwen3-demo/tokenizer.json", "config.yaml"):
        assert (tmp_path / "m2" / name).read_bytes() == (tmp_path / "m1" / name).read_bytes(), name
    a = torch.load(tmp_path / "m1" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "m2" / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_data_set_adds_its_new_utterances_and_extends_the_feature_cache(tiny_data, tmp_path):
    """A weighted stage trains on a set plus a bigger run of the same generator for some
    languages: the shared utterances come once, the held-out ones stay held out, the features
    cached for the first set are extended, not recomputed, and give the same arrays."""
    import numpy as np
    from tools.train_demo import load_features, read_manifests

    more = tmp_path / "more_en"
    _run("tools/demo_data.py", "--out", str(more), "--langs", "en", "--train-per-lang", "36",
         "--test-per-lang", "4", "--workers", "1")
    base = read_manifests([tiny_data])
    both = read_manifests([tiny_data, more])
    assert both[:len(base)] == base
    added = both[len(base):]
    assert len(added) == 12 and all(r["lang"] == "en" and r["split"] == "train" for r in added)
    assert all(Path(r["wav"]).parent.parent.parent == more for r in added)
    test_texts = {r["text_noitn"] for r in both if r["split"] == "test"}
    assert not test_texts & {r["text_noitn"] for r in added}

    train0 = [r for r in base if r["split"] == "train"]
    train1 = [r for r in both if r["split"] == "train"]
    cache = tmp_path / "fbank"
    load_features(train0, cache, 1)
    feats, offsets = load_features(train1, cache, 1)
    fresh, fresh_offsets = load_features(train1, tmp_path / "fresh", 1)
    assert np.array_equal(offsets, fresh_offsets)
    assert np.array_equal(np.asarray(feats), np.asarray(fresh))

    other = tmp_path / "other_seed"   # another seed: other held-out sentences under the same ids
    _run("tools/demo_data.py", "--out", str(other), "--langs", "en", "--train-per-lang", "24",
         "--test-per-lang", "4", "--workers", "1", "--seed", "7")
    with pytest.raises(SystemExit, match="differs"):
        read_manifests([tiny_data, other])
