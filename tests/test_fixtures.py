"""Tests that cannot pass by not running: with CI=true a missing ../shared or a broken funasr
fails the run; without CI the same tests are skipped with the reason.

Each case runs pytest in a subprocess on a copy of tests/ in a checkout of its own (the rest of
the repository linked in), so that ../shared really is absent next to it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """tmp/checkout: tests/ copied (conftest finds the repository from its own path), every other
    top-level entry a link to this repository; no ../shared next to it."""
    co = tmp_path_factory.mktemp("isolated") / "checkout"
    co.mkdir()
    for entry in ROOT.iterdir():
        if entry.name in ("tests", ".git") or entry.name.startswith(".pytest"):
            continue
        (co / entry.name).symlink_to(entry)
    shutil.copytree(ROOT / "tests", co / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    assert not (co.parent / "shared").exists()
    return co


def _pytest(checkout: Path, *args: str, ci: bool, extra_path: Path | None = None):
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "SPEECH_DATA", "PYTHONPATH")}
    if ci:
        env["CI"] = "true"
    if extra_path:
        env["PYTHONPATH"] = str(extra_path)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           *args], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=600)


SPEECH_TESTS = ["tests/test_audio.py",                                   # module level
                "tests/test_longform.py::test_merging_and_min_segment"]  # speech_dir fixture


def test_missing_shared_fails_under_ci(checkout):
    proc = _pytest(checkout, *SPEECH_TESTS, ci=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "no speech clips" in out and "CI=true" in out, out[-3000:]
    assert "passed" not in out.splitlines()[-1], out[-3000:]


def test_missing_shared_skips_with_the_reason_outside_ci(checkout):
    proc = _pytest(checkout, *SPEECH_TESTS, ci=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "skipped" in out and "no speech clips" in out, out[-3000:]
    assert "error" not in out.splitlines()[-1] and "passed" not in out.splitlines()[-1]


def test_shared_clips_via_speech_data(checkout):
    """$SPEECH_DATA points a checkout without ../shared at the clips: the tests run."""
    env_dir = os.environ.get("SPEECH_DATA") or str(ROOT.parent / "shared" / "data" / "speech")
    if not (Path(env_dir) / "manifest.tsv").is_file():
        pytest.fail(f"this test needs the clips themselves ({env_dir})")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           SPEECH_TESTS[1]], cwd=checkout, capture_output=True, text=True,
                          timeout=600, env={**env, "SPEECH_DATA": env_dir, "CI": "true"})
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:]


@pytest.fixture()
def broken_funasr(tmp_path) -> Path:
    """A ``funasr`` package that fails on import, ahead of the real one on PYTHONPATH."""
    (tmp_path / "funasr").mkdir()
    (tmp_path / "funasr" / "__init__.py").write_text(
        "raise ImportError('broken on purpose by tests/test_fixtures.py')\n")
    return tmp_path


@pytest.mark.parametrize("ci", [True, False], ids=["ci", "local"])
def test_failed_reference_import(checkout, broken_funasr, ci):
    proc = _pytest(checkout, "tests/test_random_model.py", "--collect-only", ci=ci,
                   extra_path=broken_funasr)
    out = proc.stdout + proc.stderr
    assert "the reference (funasr) cannot be imported" in out and "broken on purpose" in out, \
        out[-3000:]
    if ci:
        assert proc.returncode != 0, out[-3000:]
    else:
        assert proc.returncode in (0, 5), out[-3000:]   # 5: nothing collected, all skipped
