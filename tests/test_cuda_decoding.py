"""The CUDA decode loop (engine/cuda_decoding.py), run on CPU: the same tokens and finish reasons
as the dynamic loop (engine.batching.greedy_generate) on real audio through the real pipeline,
whatever the batch, the padding, the token limit, the host-sync interval or the repetition guard;
sequences that join and leave a running batch decode as they would alone; a step is free of
host syncs and data-dependent shapes (it runs on meta tensors, where any sync raises) and only
ever sees bucketed shapes; SDPA gets float masks or is_causal, never a boolean mask. The audio
side's padding masks, additive off the CPU (for the same reason), give the boolean ones' numbers."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine import cuda_decoding
from engine.adaptor import low_frame_rate_length
from engine.audio import load_audio
from engine.cuda_decoding import (BATCH_BUCKETS, LENGTH_BUCKET, StaticBatchDecoder,
                                  static_greedy_generate)
from engine.batching import greedy_generate
from engine.qwen3 import Qwen3Config, Qwen3ForCausalLM
from model import FunASRNano

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "demo"


@pytest.fixture(scope="module")
def asr(tiny_model_dir):
    return FunASRNano.from_pretrained(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def clips(speech_dir):
    found = sorted(str(p) for p in speech_dir.glob("*/*") if p.suffix in (".wav", ".flac", ".mp3"))
    assert len(found) == 10
    return found


def _both(asr, clips, **kw):
    out = {}
    for kind in ("dynamic", "static"):
        asr.decoder = kind
        try:
            out[kind] = asr.transcribe(clips, **kw)
        finally:
            asr.decoder = None
    return out["dynamic"], out["static"]


def _fields(results):
    return [(r["text"], r["finish_reason"], r["num_tokens"], r["error"]) for r in results]


@pytest.mark.parametrize("kw", [dict(max_new_tokens=100, batch_size=10),
                                dict(max_new_tokens=100, batch_size=3),
                                dict(max_new_tokens=7, batch_size=4),
                                dict(max_new_tokens=20, ignore_eos=True, batch_size=10),
                                dict(max_new_tokens=30, batch_size=1, language="en")],
                         ids=["all", "batches-of-3", "limit-7", "ignore-eos", "one-by-one"])
def test_same_results_as_the_dynamic_loop(asr, clips, kw):
    dynamic, static = _both(asr, clips, **kw)
    assert _fields(static) == _fields(dynamic)
    reasons = {r["finish_reason"] for r in static}
    if kw.get("ignore_eos"):
        assert reasons == {"length"} and {r["num_tokens"] for r in static} == {20}
    elif kw["max_new_tokens"] == 100:
        assert "stop" in reasons        # rows finish early and at different steps
        assert len({r["num_tokens"] for r in static}) > 3


def test_default_decoder_by_device(asr, monkeypatch):
    assert asr.decoder_kind() == "dynamic" and asr.describe()["placement"]["decoder"] == "dynamic"
    monkeypatch.setenv("FUNASR_NANO_DECODER", "static")
    assert asr.decoder_kind() == "static"
    monkeypatch.setenv("FUNASR_NANO_DECODER", "graphs")
    with pytest.raises(ValueError, match="decoder must be one of static, dynamic"):
        asr.decoder_kind()


def _prompts(asr, clips):
    """Each clip's decoder input (prompt and audio embeddings), as transcribe() builds it."""
    adaptor, lens, _, _ = asr.encode([load_audio(c, 16000) for c in clips])
    prefix, suffix = asr.prompt_ids(None, True, ())
    return [asr._embed_prompt(prefix, suffix, adaptor[i, :low_frame_rate_length(int(lens[i]))])
            for i in range(len(clips))]


@pytest.mark.parametrize("sync_every", [1, 3, 8, 50])
def test_host_sync_interval_changes_nothing(asr, clips, sync_every):
    prompts = _prompts(asr, clips)
    eos, end = asr.tokenizer.im_end, (asr.tokenizer.endoftext,)
    want = greedy_generate(asr.llm, prompts, eos, 60, end_ids=end)
    dec = StaticBatchDecoder(asr.llm, eos, end, rows=16, sync_every=sync_every)
    got = static_greedy_generate(asr.llm, prompts, eos, 60, end_ids=end, decoder=dec)
    assert got == want
    assert not dec.active and dec.free_rows == 16     # every row came back
    # the decoder is reusable: a second run on its kept cache gives the same again
    assert static_greedy_generate(asr.llm, prompts[:3], eos, 60, end_ids=end, decoder=dec) \
        == want[:3]


def test_one_step_call_decodes_sync_every_tokens(asr, clips):
    prompts = _prompts(asr, clips[:2])
    dec = StaticBatchDecoder(asr.llm, asr.tokenizer.im_end, rows=4, sync_every=5)
    seqs = dec.add(prompts, max_new_tokens=40, ignore_eos=True)
    assert [len(s.tokens) for s in seqs] == [1, 1]        # the prefill's token
    dec.step()
    assert [len(s.tokens) for s in seqs] == [6, 6]        # 5 more per row, one host read
    dec.step(seqs[:1])                                      # the other one waits
    assert [len(s.tokens) for s in seqs] == [11, 6]


def test_joining_and_leaving_a_running_batch(asr, clips):
    """Sequences added while others decode, stepped in subsets, released halfway, moved down
    into freed rows: each one's tokens are those it gets decoded alone."""
    prompts = _prompts(asr, clips)
    eos = asr.tokenizer.im_end
    alone = [greedy_generate(asr.llm, [p], eos, 40)[0] for p in prompts]
    dec = StaticBatchDecoder(asr.llm, eos, rows=6, sync_every=4)
    pending = list(range(len(prompts)))
    seqs, done, dropped, rounds = {}, {}, None, 0
    while pending or dec.active:
        take = pending[:min(dec.free_rows, 2)]
        for i, s in zip(take, dec.add([prompts[i] for i in take], 40, tags=take)):
            seqs[i] = s
            if s.done:
                done[i] = s
        pending = pending[len(take):]
        if dropped is None and rounds == 2 and dec.active:   # a caller gives up on one
            dropped = dec.active[0]
            dec.release(dropped)
        active = list(dec.active)
        if active:
            subset = active[::2] if rounds % 3 == 1 else active   # some wait a step
            for s in dec.step(subset):
                done[s.tag] = s
        rounds += 1
    assert dropped is not None and dropped.finish_reason == "cancelled"
    for i, s in seqs.items():
        if s is dropped:
            assert s.tokens == alone[i].tokens[:len(s.tokens)]
            continue
        assert s.generation() == alone[i], i
    assert dec.free_rows == 6


def test_repetition_guard_and_the_reference_behaviour(speech_dir, tmp_path):
    """The demo model loops on JFK at half speed: both loops cut it at the same token with the
    guard, and run on with the loop without it (the reference's behaviour)."""
    from tests._audio_variants import half_speed_jfk

    demo = FunASRNano.from_pretrained(str(DEMO), device="cpu")
    clip = str(half_speed_jfk(speech_dir, tmp_path))
    other = str(ROOT / "example" / "en.wav")
    runs = {}
    for guard in (True, False):
        dynamic, static = _both(demo, [other, clip], language="en", batch_size=2,
                                repetition_guard=guard, max_new_tokens=200)
        assert _fields(static) == _fields(dynamic)
        assert static[0]["finish_reason"] == "stop"
        runs[guard] = static[1]
    assert runs[True]["finish_reason"] == "repetition"
    assert runs[False]["finish_reason"] != "repetition"
    assert runs[False]["num_tokens"] > runs[True]["num_tokens"]


def test_add_refuses_more_prompts_than_free_rows_and_takes_none(asr, clips):
    prompts = _prompts(asr, clips[:3])
    dec = StaticBatchDecoder(asr.llm, asr.tokenizer.im_end, rows=2)
    with pytest.raises(ValueError, match="3 prompts for 2 free rows"):
        dec.add(prompts)
    assert dec.free_rows == 2 and not dec.active
    [s] = dec.add(prompts[:1], max_new_tokens=0)
    assert s.finish_reason == "length" and s.tokens == [] and dec.free_rows == 2


def test_cache_grows_for_longer_prompts_and_keeps_what_is_there(asr, clips):
    prompts = _prompts(asr, clips)
    eos = asr.tokenizer.im_end
    dec = StaticBatchDecoder(asr.llm, eos, rows=4, sync_every=2)
    [first] = dec.add(prompts[:1], max_new_tokens=30, ignore_eos=True)
    small = dec.capacity
    dec.step()
    long_prompt = torch.cat([prompts[1]] * 6)           # past the first reservation
    [second] = dec.add([long_prompt], max_new_tokens=30, ignore_eos=True)
    assert dec.capacity > small
    while dec.active:
        dec.step()
    assert first.tokens == greedy_generate(asr.llm, prompts[:1], eos, 30, ignore_eos=True)[0].tokens
    assert second.tokens == greedy_generate(asr.llm, [long_prompt], eos, 30,
                                            ignore_eos=True)[0].tokens


# ---------------------------------------------------------------- what makes it capturable

def _meta_decoder(rows=8, sync_every=4):
    cfg = Qwen3Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    with torch.device("meta"):
        llm = Qwen3ForCausalLM(cfg)
    dec = StaticBatchDecoder(llm, eos_id=7, end_ids=(8,), rows=rows, sync_every=sync_every)
    dec._reserve(300)
    return dec


def test_a_decode_step_needs_no_host_sync():
    """On meta tensors (shapes only, no data) any host sync (.item(), .tolist(), bool() of a
    tensor, nonzero, a data-dependent shape) raises: a step that runs here can be captured as a
    CUDA graph. It runs for every batch bucket and with rows idle."""
    dec = _meta_decoder(rows=16)
    assert dec.capacity == 512
    with torch.inference_mode():  # as step() runs it
        for b in (1, 2, 8, 16):
            for span in (128, 256, 512):
                dec._decode_step(b, span)
    assert dec._state.shape == (6, 16) and dec._out.shape == (16, 4)


def test_steps_see_only_bucketed_shapes_and_fast_kernel_masks(asr, clips, monkeypatch):
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        calls.append((q.shape, k.shape, None if attn_mask is None else attn_mask.dtype,
                      is_causal, kw.get("enable_gqa", False), k.stride(-1), q.shape[2]))
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                    **kw)

    prompts = _prompts(asr, clips)  # (the audio side's own attention is not watched)
    monkeypatch.setattr(cuda_decoding.F, "scaled_dot_product_attention", spy)
    dec = StaticBatchDecoder(asr.llm, asr.tokenizer.im_end, rows=16, sync_every=4)
    static_greedy_generate(asr.llm, prompts, asr.tokenizer.im_end, 50, decoder=dec)
    prefill = [c for c in calls if c[3]]
    steps = [c for c in calls if not c[3]]
    assert prefill and steps
    for q, k, mask, causal, gqa, stride, _ in prefill:
        assert mask is None and not gqa and k[1] == q[1]   # repeated keys, is_causal
    groups = asr.llm.config.num_attention_heads // asr.llm.config.num_key_value_heads
    for q, k, mask, causal, gqa, stride, queries in steps:
        assert mask == asr.llm.dtype and mask != torch.bool and not gqa and stride == 1
        assert q[0] in BATCH_BUCKETS and k[2] % LENGTH_BUCKET == 0
        assert queries == groups                           # the query heads of one KV head
    assert len({(q[0], k[2]) for q, k, *_ in steps}) < len(steps) / 10   # few distinct shapes


def test_additive_padding_masks_give_the_boolean_ones_numbers(asr, clips, monkeypatch):
    """Off the CPU the encoder and adaptor pass SDPA 0 / -inf float masks (its memory-efficient
    kernel takes them); forced here on CPU, a padded batch encodes to the same numbers."""
    from engine import adaptor as adaptor_mod
    from engine import encoder as encoder_mod
    waves = [load_audio(c, 16000) for c in clips[:4]]       # different lengths: padding
    want = asr.encode(waves)
    real = encoder_mod.key_padding_mask

    def forced(mask, dtype):
        return real(mask, dtype, additive=True)

    monkeypatch.setattr(encoder_mod, "key_padding_mask", forced)
    monkeypatch.setattr(adaptor_mod, "key_padding_mask", forced)
    got = asr.encode(waves)
    for a, b in zip(want, got):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()
    mask = torch.tensor([[True, True, False]])
    assert real(mask, torch.float32).dtype == torch.bool                    # CPU: as before
    add = real(mask, torch.bfloat16, additive=True)
    assert add.dtype == torch.bfloat16 and add.shape == (1, 1, 1, 3)
    assert add[0, 0, 0].tolist() == [0.0, 0.0, float("-inf")]
