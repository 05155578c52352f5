"""The CPU kernels' build and its state: ``python -m engine.kernels`` as the install step, and
the real app with an empty kernel cache, where the build runs in the background and the first
request does not wait for it. Fake compilers (shell scripts named by $CXX) stand for a broken
toolchain and for a slow one that we release when the test is ready."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _app_server import ROOT, app_model_dir, audio_files, get_json, start_app  # noqa: E402,F401

PYTHON = sys.executable
FAKE_MESSAGE = "fake-c++: this compiler refuses to compile anything"


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def failing_cxx(tmp_path) -> str:
    return _script(tmp_path / "failing-c++", f'echo "{FAKE_MESSAGE}" >&2\nexit 1\n')


def _kernels_json(env: dict) -> tuple[int, dict, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("FUNASR_NANO_")}
    full.update(env)
    p = subprocess.run([PYTHON, "-m", "engine.kernels", "--json"], cwd=ROOT, env=full,
                       capture_output=True, text=True, timeout=600)
    return p.returncode, json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


def test_build_step_reports_ready_from_the_cache():
    """The install step against the shared cache: ready, with this CPU's paths."""
    rc, state, _ = _kernels_json({})
    assert rc == 0 and state["state"] == "ready" and state["reason"] is None
    assert state["paths"].startswith("avx2")


def test_build_step_disabled(tmp_path):
    rc, state, _ = _kernels_json({"FUNASR_NANO_NO_KERNELS": "1",
                                  "FUNASR_NANO_KERNEL_CACHE": str(tmp_path)})
    assert rc == 1 and state["state"] == "disabled" and "FUNASR_NANO_NO_KERNELS" in state["reason"]
    assert state["paths"] == "none"


def test_build_step_failure_says_why(tmp_path, failing_cxx):
    cache = tmp_path / "kernels"
    rc, state, stderr = _kernels_json({"CXX": failing_cxx, "FUNASR_NANO_KERNEL_CACHE": str(cache)})
    assert rc == 1 and state["state"] == "failed" and state["paths"] == "none"
    assert "compiler failed" in state["reason"]
    assert FAKE_MESSAGE in state["detail"] and FAKE_MESSAGE in stderr  # the log says why
    assert not any(cache.glob("*/*.so")) and not any(cache.glob("*.tmp*"))  # nothing half-built


@pytest.mark.parametrize("quiet", [False, True])
def test_cli_says_it_compiles_and_runs_without(app_model_dir, audio_files, tmp_path, failing_cxx,
                                               quiet):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNASR_NANO_")}
    env.update(CXX=failing_cxx, FUNASR_NANO_KERNEL_CACHE=str(tmp_path / "kernels"))
    p = subprocess.run([PYTHON, str(ROOT / "transcribe.py"), "--model", app_model_dir,
                        "--max-new-tokens", "4", *(["--quiet"] if quiet else []),
                        str(audio_files["tone.wav"])],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "compiling CPU kernels (once)" in p.stderr
    assert FAKE_MESSAGE in p.stderr and "plain PyTorch" in p.stderr   # and why not
    # ... and the transcript is plain PyTorch's: that of a run with the kernels turned off
    env.update(FUNASR_NANO_NO_KERNELS="1")
    plain = subprocess.run([PYTHON, str(ROOT / "transcribe.py"), "--model", app_model_dir,
                            "--max-new-tokens", "4", "--quiet", str(audio_files["tone.wav"])],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    row, want = json.loads(p.stdout.splitlines()[0]), json.loads(plain.stdout.splitlines()[0])
    assert row["error"] is None and row["file"].endswith("tone.wav") and row["duration"] == 1.5
    assert row["text"] and (row["text"], row["finish_reason"]) == (want["text"], want["finish_reason"])


def _wait_health(app, pred, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = get_json(app.url + "/health")
        if pred(health):
            return health
        time.sleep(0.5)
    raise AssertionError(f"/health never showed {what}: {health}\n{app.log()}")


def _transcribe(app, path) -> requests.Response:
    with open(path, "rb") as f:
        return requests.post(app.url + "/v1/audio/transcriptions",
                             files={"file": (path.name, f)}, timeout=120)


def test_app_with_a_failing_compiler_runs_plain_pytorch(app_model_dir, audio_files, tmp_path,
                                                         failing_cxx):
    app = start_app(app_model_dir, tmp_path, env={
        "CXX": failing_cxx, "FUNASR_NANO_KERNEL_CACHE": str(tmp_path / "kernels")})
    try:
        health = _wait_health(app, lambda h: h["kernels"]["state"] == "failed", 120, "failed")
        k = health["kernels"]
        assert k["paths"] == "none" and "compiler failed" in k["reason"]
        assert FAKE_MESSAGE not in json.dumps(health)  # compiler output stays in the log
        r = _transcribe(app, audio_files["tone.wav"])
        assert r.status_code == 200 and r.json()["text"]
        health = get_json(app.url + "/health")
        assert health["model_loaded"] and health["kernels"]["in_use"] is False
        log = app.log_path.read_text()
        assert FAKE_MESSAGE in log and "plain PyTorch" in log
    finally:
        app.stop()


def test_first_request_does_not_wait_for_the_build(app_model_dir, audio_files, tmp_path):
    """A compiler held back until the first transcription is answered: /health says compiling
    with the seconds so far, the page says so, the request is served on the plain path; then
    the real compiler runs, and the server switches its model onto the kernels."""
    gate = tmp_path / "gate"
    cxx = _script(tmp_path / "gated-c++",
                  f'while [ ! -e "{gate}" ]; do sleep 0.2; done\nexec c++ "$@"\n')
    cache = tmp_path / "kernels"
    app = start_app(app_model_dir, tmp_path, env={"CXX": cxx,
                                                  "FUNASR_NANO_KERNEL_CACHE": str(cache)})
    try:
        first = get_json(app.url + "/health")["kernels"]
        assert first["state"] == "compiling" and first["paths"] == "none"
        t0 = time.monotonic()
        r = _transcribe(app, audio_files["tone.wav"])
        assert r.status_code == 200 and r.json()["text"]
        assert time.monotonic() - t0 < 60
        health = get_json(app.url + "/health")
        k = health["kernels"]
        assert k["state"] == "compiling" and k["seconds"] > first["seconds"]
        assert health["model_loaded"] and k["in_use"] is False

        from gradio_client import Client
        status = Client(app.url + "/", verbose=False).predict(api_name="/model_status")
        assert "compiling CPU kernels (once)" in status
        assert "compiling CPU kernels (once)" in app.log_path.read_text()

        gate.touch()  # now the real compiler builds them
        health = _wait_health(app, lambda h: h["kernels"]["in_use"] is True, 600,
                              "the model on the kernels")
        assert health["kernels"]["state"] == "ready"
        assert health["kernels"]["paths"].startswith("avx2")
        assert list(cache.glob("*/funasr_nano_kernels.so"))
        r = _transcribe(app, audio_files["chirp.wav"])
        assert r.status_code == 200 and r.json()["text"]
        assert "model switched to the CPU kernels" in app.log_path.read_text()
    finally:
        app.stop()
