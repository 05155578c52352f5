"""Helpers for the app tests: a model directory, test audio, and the real app as a subprocess
(bench/_common.py's AppProcess, which the benchmarks use too: tests import from bench, never the
other way)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench._common import AppProcess, free_port, get_json, pyav_encode  # noqa: F401 (for tests)

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MAX_NEW_TOKENS = 8  # the random model never stops by itself: keep decoding short


@pytest.fixture(scope="session")
def app_model_dir(request, tmp_path_factory) -> str:
    """conftest's session ``tiny_model_dir`` when there is one, else a tiny random model built
    here with tools/make_random_model.py."""
    try:
        return str(request.getfixturevalue("tiny_model_dir"))
    except pytest.FixtureLookupError:
        out = tmp_path_factory.mktemp("tiny_model") / "tiny"
        subprocess.run([PYTHON, str(ROOT / "tools" / "make_random_model.py"), "--out", str(out),
                        "--size", "tiny"], check=True, cwd=ROOT, capture_output=True)
        return str(out)


@pytest.fixture(scope="session")
def engine(app_model_dir):
    """The engine in this process, to compare the app's answers with."""
    from model import FunASRNano
    return FunASRNano.from_pretrained(app_model_dir, device="cpu", dtype="fp32")


@pytest.fixture(scope="session")
def audio_files(tmp_path_factory) -> dict[str, Path]:
    """A few short distinct recordings (tones, chirp, noise) in wav and flac."""
    d = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    sr = 16000
    t = np.arange(int(sr * 1.5)) / sr
    clips = {
        "tone.wav": 0.3 * np.sin(2 * np.pi * 440 * t),
        "chirp.wav": 0.3 * np.sin(2 * np.pi * (200 + 600 * t) * t),
        "noise.wav": 0.1 * rng.standard_normal(int(sr * 1.0)),
        "tone44k.flac": None,
    }
    out = {}
    for name, x in clips.items():
        if x is None:
            t44 = np.arange(int(44100 * 2.0)) / 44100
            sf.write(d / name, (0.2 * np.sin(2 * np.pi * 330 * t44)).astype(np.float32), 44100)
        else:
            sf.write(d / name, x.astype(np.float32), sr)
        out[name] = d / name
    return out


def expected_text(engine, path, language=None, itn=True, hotwords=()) -> str:
    """What the engine itself says for this file and these settings."""
    [r] = engine.transcribe([str(path)], language=language, itn=itn, hotwords=list(hotwords),
                            max_new_tokens=MAX_NEW_TOKENS)
    assert r["error"] is None and r["text"]
    return r["text"]


def start_app(model_dir: str, tmp_path: Path, *args: str, env: dict | None = None) -> AppProcess:
    app = AppProcess(["--model", model_dir, "--max-new-tokens", str(MAX_NEW_TOKENS), *args],
                     tmp_path / "app.log", env)
    try:
        app.wait_ready(120)
        return app
    except Exception:
        app.stop()
        raise
