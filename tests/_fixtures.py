"""What the tests need from outside the repository, and what happens when it is missing.

Outside CI a missing fixture (the shared speech clips, the reference funasr, Debian's espeak-ng or
Chromium) skips the tests that need it, with the reason in pytest's summary. Under ``CI=true`` it
fails them instead: a CI run that passes because half of it did not run is worse than a red one.

Speech clips: ``$SPEECH_DATA`` when set, else ``../shared/data/speech`` next to the checkout.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def missing(reason: str, module_level: bool = False):
    """Skip (locally) or fail (under CI=true) because a fixture is missing."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing fixture fails the run instead of skipping)",
                    pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)


def speech_data_dir() -> Path | None:
    """The shared clips (zh/, en/, manifest.tsv), or None when there are none."""
    env = os.environ.get("SPEECH_DATA")
    cand = Path(env) if env else REPO.parent / "shared" / "data" / "speech"
    return cand if (cand / "manifest.tsv").is_file() else None


def speech_missing_reason() -> str:
    env = os.environ.get("SPEECH_DATA")
    where = f"$SPEECH_DATA={env}" if env else str(REPO.parent / "shared" / "data" / "speech")
    return f"no speech clips: {where} has no manifest.tsv"


def require_speech(module_level: bool = False) -> Path:
    path = speech_data_dir()
    if path is None:
        missing(speech_missing_reason(), module_level)
    return path


def require_funasr(module_level: bool = False):
    """The reference implementation; any import failure (not only a missing package) counts."""
    try:
        import funasr
    except Exception as e:  # noqa: BLE001 - a broken install is as missing as an absent one
        missing(f"the reference (funasr) cannot be imported: {type(e).__name__}: {e}",
                module_level)
    return funasr


def kernels_or_missing():
    """The CPU kernels, or None. Under CI=true, where the CPU has AVX2 they must build (CI
    installs g++): only a CPU without AVX2, or FUNASR_NANO_NO_KERNELS=1, is a reason to run
    without them. Call at import; the caller skips its kernel tests on None."""
    import torch

    from engine.kernels import kernels
    k = kernels()
    if k is None and in_ci() and os.environ.get("FUNASR_NANO_NO_KERNELS") != "1" and \
            torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        pytest.fail("the CPU kernels did not build on this AVX2 CPU (is g++ installed?)",
                    pytrace=False)
    return k
