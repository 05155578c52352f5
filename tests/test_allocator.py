"""glibc's malloc tuned for CPU inference (engine/allocator.py): once a model is loaded for the
CPU, a prefill's activation buffers are reused from the heap instead of being faulted in afresh.

Measured in child processes (the setting is process-wide): the minor page faults of a bf16
prefill of eight 150-token prompts through two decoder layers of the real model's width. Without
the tuning glibc returned those buffers to the OS after each op (750k faults per prefill of the
full model, a fifth of its time, docs/peers.md)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, torch
from engine.qwen3 import Qwen3Config, Qwen3ForCausalLM
tuned = sys.argv[1] == "tuned"
if tuned:
    from engine.allocator import keep_freed_memory
    assert keep_freed_memory() and keep_freed_memory()  # applied, and idempotent
torch.set_num_threads(2)
torch.manual_seed(0)
cfg = Qwen3Config(num_hidden_layers=2, vocab_size=1000)
m = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
m.pack_for_cpu("bf16")
x = torch.randn(8, 150, cfg.hidden_size)
faults, out = [], None
with torch.inference_mode():
    for _ in range(8):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        h = m.prefill(x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        out = h if out is None else out
        assert torch.equal(h, out)
print(json.dumps({"faults": faults}))
"""


def _child(code: str, kind: str) -> dict:
    """Run ``code`` with ``kind`` ("tuned" or not) in a fresh process (the setting is
    process-wide); its last line of output, as JSON."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    r = subprocess.run([sys.executable, "-c", code, kind], capture_output=True, text=True,
                       cwd=str(ROOT), env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _faults(kind: str) -> list[int]:
    return _child(CHILD, kind)["faults"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc (Linux) only")
def test_tuned_prefill_reuses_its_activation_memory():
    """Once warm (the last six of eight prefills), a prefill faults in little: on average under
    10% of the pages its activations span (8 x 150 rows: each MLP activation alone is 14.7 MB,
    3,600 pages, and a layer makes about ten such buffers). Measured here: with the tuning 0-4.8k
    per prefill (2.4k at most on average, one buffer now and then); without it 16.8k every time
    (23%; the full model's prefill, 750k each time)."""
    tuned = _faults("tuned")
    activation_pages = 2 * 10 * 8 * 150 * 3072 * 4 // 4096
    warm = tuned[2:]
    assert sum(warm) / len(warm) < 0.10 * activation_pages, (tuned, activation_pages)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc (Linux) only")
def test_users_own_glibc_settings_are_left_alone():
    """Any MALLOC_*_ variable in the environment (glibc's own tuning) and nothing is changed."""
    code = ("import engine.allocator as a; print(a.keep_freed_memory())")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "MALLOC_TRIM_THRESHOLD_": "131072"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT),
                       env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr[-2000:]


RELEASE = r"""
import json, sys, torch
from engine.allocator import keep_freed_memory, release_idle_memory
def anon_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) / 1024
tuned = sys.argv[1] == "tuned"
if tuned:
    assert keep_freed_memory()
base = anon_mb()
bufs = [torch.ones(15 << 18) for _ in range(24)]   # 24 buffers of 15 MB, as a prefill's
del bufs
kept = anon_mb()
released = release_idle_memory()
print(json.dumps({"base": base, "kept": kept, "after": anon_mb(), "released": released}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc (Linux) only")
def test_idle_release_gives_the_kept_memory_back():
    """The tuning keeps 360 MB of freed buffers resident; release_idle_memory returns them (to
    within 10%). Untuned, glibc has already returned them and there is nothing to do."""
    tuned = _child(RELEASE, "tuned")
    assert tuned["kept"] - tuned["base"] > 300, tuned            # kept for reuse
    assert tuned["released"] is True
    assert tuned["after"] - tuned["base"] < 36, tuned             # and given back
    plain = _child(RELEASE, "plain")
    assert plain["released"] is False and plain["kept"] - plain["base"] < 36, plain
