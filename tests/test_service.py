"""scripts/service.sh: start, status, a refused second start, stop, status; stale pid files."""
from __future__ import annotations

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _app_server import (MAX_NEW_TOKENS, PYTHON, ROOT, app_model_dir,  # noqa: E402,F401
                         free_port, get_json)

SCRIPT = str(ROOT / "scripts" / "service.sh")


def service(tmp_path, *args, timeout=180, env=None):
    """scripts/service.sh with its files under tmp_path; ``env`` adds or overrides variables."""
    extra = env or {}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FUNASR_NANO_", "GRADIO_SERVER_"))}
    env.update(PID_FILE=str(tmp_path / "run" / "app.pid"),
               LOG_FILE=str(tmp_path / "logs" / "app.log"),
               PYTHON=PYTHON, FUNASR_NANO_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               STOP_TIMEOUT="20")
    env.update(extra)
    return subprocess.run(["bash", SCRIPT, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_start_status_second_start_stop_status(app_model_dir, tmp_path):
    pid_file = tmp_path / "run" / "app.pid"
    pid_file.parent.mkdir()
    pid_file.write_text("999999\n")                     # a stale pid file from a crash
    r = service(tmp_path, "status")
    assert r.returncode == 1 and "stale" in r.stdout     # LSB: dead, pid file exists

    port = free_port()
    r = service(tmp_path, "start", "--model", app_model_dir, "--port", str(port),
                "--max-new-tokens", str(MAX_NEW_TOKENS))
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert "stale pid file" in r.stdout and "ready" in r.stdout
        pid = int(pid_file.read_text())
        # start waited for readiness: the server answers at once
        health = get_json(f"http://127.0.0.1:{port}/health")
        assert health["status"] == "ok" and health["model_loaded"] is False

        r = service(tmp_path, "status")
        assert r.returncode == 0 and str(pid) in r.stdout

        r = service(tmp_path, "start", "--model", app_model_dir, "--port", str(port))
        assert r.returncode != 0 and "already running" in r.stderr
        assert int(pid_file.read_text()) == pid            # untouched

        r = service(tmp_path, "logs")
        assert r.returncode == 0 and "ready: http://" in r.stdout
    finally:
        r = service(tmp_path, "stop")
    assert r.returncode == 0 and "stopped" in r.stdout
    assert not pid_file.exists()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            time.sleep(0.1)
        except ProcessLookupError:
            break
    else:
        raise AssertionError(f"pid {pid} still alive after stop")

    r = service(tmp_path, "status")
    assert r.returncode == 3 and "not running" in r.stdout
    assert service(tmp_path, "stop").returncode == 0     # stopping a stopped service is fine
    assert service(tmp_path, "bogus").returncode == 2


def test_start_that_fails_reports_the_log(tmp_path):
    r = service(tmp_path, "start", "--no-such-flag", timeout=60)
    assert r.returncode == 1
    assert "no-such-flag" in r.stderr                   # the end of the log is shown
    assert not (tmp_path / "run" / "app.pid").exists()
    assert service(tmp_path, "status").returncode == 3
