"""Helpers for the app tests: a model directory, test audio, and the real app as a subprocess."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

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
    sys.path.insert(0, str(ROOT))
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


def pyav_encode(path, audio, rate, fmt, codec, codec_rate=None):
    """Encode (channels, samples) float audio with PyAV's bundled FFmpeg (no ffmpeg CLI)."""
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    with av.open(str(path), "w", format=fmt) as out:
        st = out.add_stream(codec, rate=codec_rate or rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, np.float32),
                                           format="fltp", layout=layout)
        frame.sample_rate = rate
        for pkt in st.encode(frame):
            out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return path


def expected_text(engine, path, language=None, itn=True, hotwords=()) -> str:
    """What the engine itself says for this file and these settings."""
    [r] = engine.transcribe([str(path)], language=language, itn=itn, hotwords=list(hotwords),
                            max_new_tokens=MAX_NEW_TOKENS)
    assert r["error"] is None and r["text"]
    return r["text"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class AppProcess:
    """``python app.py ...`` on a free port, logging to a file; ``stop()`` ends it."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        # The flags given here decide; settings from the caller's environment must not leak in.
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("FUNASR_NANO_", "GRADIO_SERVER_"))}
        full_env.update({"GRADIO_ANALYTICS_ENABLED": "False", "FUNASR_NANO_OFFLINE": "1",
                         **(env or {})})
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([PYTHON, str(ROOT / "app.py"), "--host", "127.0.0.1",
                                      "--port", str(self.port), *args],
                                     cwd=ROOT, env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> "AppProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}:\n{self.log()}")
            try:
                get_json(self.url + "/health", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        raise RuntimeError(f"app.py not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def start_app(model_dir: str, tmp_path: Path, *args: str, env: dict | None = None) -> AppProcess:
    app = AppProcess(["--model", model_dir, "--max-new-tokens", str(MAX_NEW_TOKENS), *args],
                     tmp_path / "app.log", env)
    try:
        return app.wait_ready()
    except Exception:
        app.stop()
        raise
