"""int8 weights prepared once per checkpoint (engine/kernels/prepared.py): the first int8 load
writes them to the cache, later loads map them; the model built from the cache computes exactly
what the freshly quantised one does; a changed checkpoint gets new weights."""
from __future__ import annotations

import logging
import os
import shutil
import time

import pytest
import torch

from engine.kernels import int8
from model import FunASRNano

pytestmark = pytest.mark.skipif(not int8.available(), reason="this torch has no fbgemm")

CLIPS = 3


@pytest.fixture
def clips(tiny_model_dir, tmp_path):
    import numpy as np
    import soundfile as sf
    rng = np.random.default_rng(4)
    out = []
    for i in range(CLIPS):
        p = tmp_path / f"clip{i}.wav"
        sf.write(p, (0.2 * rng.standard_normal(16000 + 4000 * i)).astype("float32"), 16000)
        out.append(str(p))
    return out


def _load(model_dir, cache, monkeypatch):
    monkeypatch.setenv("FUNASR_NANO_PREPARED_CACHE", str(cache))
    return FunASRNano.from_pretrained(model_dir, device="cpu", dtype="int8")


def _int8_linears(m):
    return {n: mod for n, mod in m.named_modules() if isinstance(mod, int8.DynamicInt8Linear)}


def test_cached_int8_weights_give_the_same_numbers_and_tokens(tiny_model_dir, clips, tmp_path,
                                                               monkeypatch, caplog):
    cache = tmp_path / "prepared"
    fresh = _load(tiny_model_dir, "off", monkeypatch)          # today's way: quantise at load
    assert not cache.exists()
    with caplog.at_level(logging.INFO, logger="funasr_nano"):
        first = _load(tiny_model_dir, cache, monkeypatch)      # miss: prepared, then cached
        files = list(cache.glob("*-int8-*.pt"))
        assert len(files) == 1 and "int8 weights cached" in caplog.text
        caplog.clear()
        second = _load(tiny_model_dir, cache, monkeypatch)     # hit: mapped
        assert "int8 weights mapped from the cache" in caplog.text
        assert "prepared in" not in caplog.text

    lin_f, lin_s = _int8_linears(fresh), _int8_linears(second)
    assert set(lin_f) == set(lin_s) and len(lin_f) > 10
    for name, a in lin_f.items():
        b = lin_s[name]
        assert torch.equal(a.int8_weight()[0], b.int8_weight()[0]), name
        x = torch.randn(40, a.in_features, generator=torch.Generator().manual_seed(1))
        for rows in (1, 3, 40):  # kernel paths and fbgemm
            assert torch.equal(a(x[:rows]), b(x[:rows])), (name, rows)

    kw = dict(language="en", max_new_tokens=12, ignore_eos=True)
    want = fresh.transcribe(clips, **kw)
    for m in (first, second):
        got = m.transcribe(clips, **kw)
        assert [r["text"] for r in got] == [r["text"] for r in want]
        assert all(r["num_tokens"] == 12 for r in got)


def test_a_changed_checkpoint_is_prepared_again(tiny_model_dir, tmp_path, monkeypatch, caplog):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    cache = tmp_path / "prepared"
    _load(model_dir, cache, monkeypatch)
    [old] = cache.glob("*-int8-*.pt")
    ckpt = model_dir / "model.pt"
    later = time.time() + 5
    os.utime(ckpt, (later, later))                            # same bytes, new mtime
    with caplog.at_level(logging.INFO, logger="funasr_nano"):
        _load(model_dir, cache, monkeypatch)
    assert "int8 weights prepared in" in caplog.text          # a miss
    [new] = cache.glob("*-int8-*.pt")
    assert new != old and not old.exists()                    # the stale file is gone

    # another checkpoint (other weights): its own file, next to the first one's
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    sd = state.get("state_dict", state)
    key = next(k for k in sd if k.endswith("down_proj.weight"))
    sd[key] = sd[key] * 2
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    torch.save(state, other / "model.pt")
    m = _load(other, cache, monkeypatch)
    assert len(list(cache.glob("*-int8-*.pt"))) == 2
    w8 = _int8_linears(m)[key.removesuffix(".weight")].int8_weight()[0]
    fresh_w8, _ = int8.quantize_weight(sd[key])
    assert torch.equal(w8, fresh_w8)


def test_unwritable_cache_still_loads(tiny_model_dir, clips, tmp_path, monkeypatch):
    """A cache that cannot be written costs the cache, not the model: the weights are quantised
    at load as without a cache, and give the same int8 weights and tokens."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    m = _load(tiny_model_dir, blocker / "prepared", monkeypatch)
    fresh = _load(tiny_model_dir, "off", monkeypatch)
    got, want = _int8_linears(m), _int8_linears(fresh)
    assert got.keys() == want.keys() and got
    assert all(torch.equal(got[n].int8_weight()[0], want[n].int8_weight()[0]) for n in got)
    [a] = m.transcribe([clips[0]], max_new_tokens=8)
    [b] = fresh.transcribe([clips[0]], max_new_tokens=8)
    assert a["error"] is None and a["num_tokens"] > 0
    assert (a["text"], a["num_tokens"], a["finish_reason"]) == (b["text"], b["num_tokens"], b["finish_reason"])
    assert not blocker.is_dir() and blocker.read_text() == "not a directory"
