"""The declared interfaces (engine/decoder.py, serving/interfaces.py) and what implements them:
the CPU and CUDA decode loops are Decoders handing out the one Sequence, FunASRNano is the
DecodingModel the scheduler drives, ModelHolder and Ray's ReplicaPool are ModelSources; each
implementation has every member of its protocol and accepts the protocol's parameters."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from engine import batching, cuda_decoding
from engine.decoder import Decoder, DecodingModel
from model import FunASRNano
from serving.interfaces import ModelSource
from serving.model_holder import ModelHolder


def _members(proto) -> list[str]:
    return [n for n in dir(proto) if not n.startswith("_")] + list(
        getattr(proto, "__annotations__", {}))


def _refused(impl_fn, proto_fn) -> list[str]:
    """The protocol's named parameters that ``impl_fn`` would refuse."""
    impl = inspect.signature(impl_fn).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in impl.values())
    return [n for n, p in inspect.signature(proto_fn).parameters.items()
            if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
            and n not in impl and not takes_any]


def _conforms(obj, proto) -> None:
    assert isinstance(obj, proto), f"{type(obj).__name__} is not a {proto.__name__}"
    for name in _members(proto):
        assert hasattr(obj, name), f"{type(obj).__name__} lacks {name}"
        want = getattr(proto, name, None)
        if inspect.isfunction(want):
            assert not _refused(getattr(obj, name), want), (type(obj).__name__, name)


@pytest.fixture(scope="module")
def asr(tiny_model_dir):
    return FunASRNano.from_pretrained(tiny_model_dir, device="cpu", dtype="fp32")


def test_one_sequence_for_both_loops():
    assert cuda_decoding.Sequence is batching.Sequence


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_both_loops_are_decoders_and_keep_the_sequence_contract(asr, kind):
    """Each step: ``length`` counts the cache columns (the prompt and every token fed back)."""
    eos = asr.tokenizer.im_end
    dec = (batching.BatchDecoder(asr.llm, eos, rows=4) if kind == "dynamic"
           else cuda_decoding.StaticBatchDecoder(asr.llm, eos, rows=4, sync_every=1))
    _conforms(dec, Decoder)
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(16000 * (i + 1))).astype(np.float32) for i in range(2)]
    prepared = asr.prepare(waves, asr.prompt_ids())
    seqs = dec.add([p.embeds for p in prepared], max_new_tokens=6, ignore_eos=True)
    assert [s.tokens != [] and s.row >= 0 for s in seqs] == [True, True]
    assert dec.free_rows == 2
    while dec.active:
        for s in dec.active:
            assert s.length == s.prompt_length + len(s.tokens) - 1
        dec.step()
    assert all(s.done and len(s.tokens) == 6 and s.finish_reason == "length" for s in seqs)
    assert dec.free_rows == 4


def test_the_model_is_what_the_scheduler_drives(asr):
    _conforms(asr, DecodingModel)
    _conforms(asr.new_decoder(2), Decoder)


def test_both_model_holders_are_model_sources(tiny_model_dir):
    _conforms(ModelHolder(tiny_model_dir, "cpu", "fp32"), ModelSource)
    ray_serve = pytest.importorskip("serving.ray_serve")   # ray: requirements-ray.txt
    pool = ray_serve.ReplicaPool(None, tiny_model_dir, "cpu", "fp32", demo=False)
    _conforms(pool, ModelSource)
