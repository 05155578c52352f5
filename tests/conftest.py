"""Session fixtures: random-weight model directories in the official layout, and speech clips.

The model directories are built by tools/make_random_model.py into a cache
(`$FUNASR_NANO_MODELS` or ~/.cache/funasr-nano/models), keyed by the tool's version and source
hash and the seed, so they are built once per machine (tiny: ~10 s), not once per run.
The first build needs the network once, for the Qwen3 tokenizer files (tools/fetch_assets.py).

Fixtures from outside the repository (the speech clips, the reference funasr) skip their tests
when missing, and fail them under ``CI=true`` (tests/_fixtures.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tests import the top-level modules (`model`, `engine.*`), `tests.reference` and the tools.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
# ... and so do the bench and tools scripts the tests start, installed (pip install -e .) or not
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)

from tests._fixtures import require_funasr, require_speech  # noqa: E402
from tools.make_random_model import cached_random_model  # noqa: E402
from tests._ray_cluster import LOOPBACK_ENV  # noqa: E402

# Ray reads these when it is first imported: the test clusters stay on 127.0.0.1.
for _k, _v in LOOPBACK_ENV.items():
    os.environ.setdefault(_k, _v)

TINY_SEED = 0


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """Tiny model, no CTC tensors (like the MLT checkpoint: funasr disables its CTC branch)."""
    return cached_random_model("tiny", TINY_SEED, ctc=False)


@pytest.fixture(scope="session")
def tiny_ctc_model_dir() -> Path:
    """Tiny model with ctc_decoder.* / ctc.* saved (like the ModelScope Nano checkpoint)."""
    return cached_random_model("tiny", TINY_SEED, ctc=True)


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    """The shared clips (zh/, en/, manifest.tsv): $SPEECH_DATA, else ../shared/data/speech."""
    return require_speech()


@pytest.fixture(scope="session")
def tiny_reference(tiny_model_dir):
    """funasr's AutoModel on the tiny dir (see tests/reference.py), built once per session."""
    require_funasr()
    from tests.reference import build_reference

    return build_reference(tiny_model_dir)


@pytest.fixture(scope="session")
def full_model_dir() -> Path:
    """Full-size random-weight model (2 GB, official shapes), built once per machine (~40 s)."""
    return cached_random_model("full", 1, ctc=False)


@pytest.fixture(scope="session", autouse=True)
def cpu_kernels():
    """Build the CPU kernels once before any test (as the install step would): otherwise every
    app process that the tests start would begin its own background build on a fresh machine.
    tests/test_kernel_build.py builds into empty caches of its own where it means to."""
    from engine.kernels import kernels
    return kernels()


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster (2 CPUs, 300 MB object store) for the whole session, joined by this
    process and by the subprocesses given ``ray_cluster.env()``; stopped at the end."""
    import ray

    from tests._ray_cluster import LocalRayCluster

    cluster = LocalRayCluster()
    try:
        ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
                 log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.stop()
