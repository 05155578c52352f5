"""Continuous batching (engine/batching.py): sequences that join a running batch between steps,
sit out steps, and leave as they finish decode exactly the tokens they decode alone; rows are
reused, the cache grows while sequences are in it, and a failed prefill takes no row."""
from __future__ import annotations

import random

import pytest
import torch

from engine.audio import load_audio
from engine.batching import BatchDecoder, greedy_generate
from model import FunASRNano

CLIPS = ["zh/funasr_sample.wav", "en/whisper_jfk.flac", "en/common_voice_en_651325.mp3",
         "zh/firered_BAC009S0764W0121.wav", "en/lhotse_ljspeech_LJ002-0020.wav",
         "zh/cosyvoice_zero_shot_prompt.wav", "en/wenet_librispeech_1995-1837-0001.wav"]
PROMPTS = [("en", True, ()), (None, True, ()), ("zh", False, ("Qwen",))]


@pytest.fixture(scope="module")
def asr(tiny_model_dir):
    return FunASRNano.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def prompts(asr, speech_dir):
    """Real clips, each with one of three prompts (language, ITN, hotwords)."""
    out = []
    for i, clip in enumerate(CLIPS):
        language, itn, hot = PROMPTS[i % len(PROMPTS)]
        [p] = asr.prepare([load_audio(str(speech_dir / clip))],
                          asr.prompt_ids(language, itn, hot))
        out.append(p.embeds)
    return out


def _alone(asr, prompt, limit, ignore_eos=False):
    [g] = greedy_generate(asr.llm, [prompt], asr.tokenizer.im_end, limit, ignore_eos=ignore_eos,
                          end_ids=(asr.tokenizer.endoftext,))
    return g


def _run_interleaved(asr, prompts, limits, forced, rows, seed):
    """Sequences join whenever rows are free (a random number at a time), and each step decodes
    a random subset of the batch: the schedule a busy server makes."""
    rng = random.Random(seed)
    dec = asr.new_decoder(rows)
    waiting = list(range(len(prompts)))
    seqs = {}
    while waiting or dec.active:
        if waiting and dec.free_rows and rng.random() < 0.6:
            n = rng.randint(1, min(dec.free_rows, len(waiting)))
            ids, waiting = waiting[:n], waiting[n:]
            for i, s in zip(ids, dec.add([prompts[i] for i in ids], [limits[i] for i in ids],
                                         [forced[i] for i in ids], tags=ids)):
                seqs[i] = s
        if dec.active:
            chosen = [s for s in dec.active if rng.random() < 0.7] or dec.active[:1]
            dec.step(chosen)
    return [seqs[i].generation() for i in range(len(prompts))]


@pytest.mark.parametrize("kernels", ["kernels", "pytorch"])
def test_joining_pausing_leaving_gives_the_tokens_decoded_alone(asr, prompts, kernels,
                                                                monkeypatch):
    """On the tiny random model (fp32, bf16-stored weights) and real clips: 7 sequences of
    different prompt lengths, limits and forcing, through 3 rows in random schedules, each equal
    to the same prompt decoded alone; with the CPU kernels and without them (plain PyTorch
    attention, one SDPA per row)."""
    if kernels == "pytorch":
        from engine.qwen3 import Attention, DecoderLayer
        for m in asr.llm.modules():
            if isinstance(m, DecoderLayer):
                monkeypatch.setattr(m, "step", None)
            if isinstance(m, Attention):
                monkeypatch.setattr(m, "fast", None)
    limits = [12, 30, 7, 25, 18, 40, 9]
    forced = [False, True, False, True, False, False, True]
    want = [_alone(asr, p, n, f) for p, n, f in zip(prompts, limits, forced)]
    assert len({len(p) for p in prompts}) > 3  # really different lengths
    assert any(w.finish_reason == "length" for w in want)
    for seed in range(3):
        got = _run_interleaved(asr, prompts, limits, forced, rows=3, seed=seed)
        assert [(g.tokens, g.finish_reason) for g in got] == \
            [(w.tokens, w.finish_reason) for w in want], seed
    # forced rows get exactly their limit, never an end token
    for g, n, f in zip(want, limits, forced):
        if f:
            assert len(g.tokens) == n and asr.tokenizer.im_end not in g.tokens


def test_cache_grows_while_sequences_are_in_it(asr, prompts):
    """A newcomer that needs more columns than the cache has makes it grow with two sequences
    mid-decode; they carry on with the same tokens."""
    from engine.batching import CAPACITY_STEP
    dec = asr.new_decoder(3)
    a, b = dec.add(prompts[:2], [20, 20], [True, True])
    for _ in range(5):
        dec.step()
    cap = dec.cache.capacity
    [c] = dec.add([prompts[2]], [cap + CAPACITY_STEP], [True])
    assert dec.cache.capacity > cap
    while a in dec.active or b in dec.active:
        dec.step([s for s in (a, b) if s in dec.active])
    assert a.tokens == _alone(asr, prompts[0], 20, True).tokens
    assert b.tokens == _alone(asr, prompts[1], 20, True).tokens
    for _ in range(30):
        dec.step([c])
    assert c.tokens == _alone(asr, prompts[2], 31, True).tokens[:31]
    dec.release(c)
    assert c.finish_reason == "cancelled" and dec.cache is None and dec.free_rows == 3


def test_a_failed_prefill_takes_no_row(asr, prompts):
    dec = asr.new_decoder(2)
    [a] = dec.add(prompts[:1], 50, True)
    bad = torch.full_like(prompts[1][:, :3], 1.0)  # wrong width: the prefill raises
    with pytest.raises(RuntimeError):
        dec.add([bad], 5)
    assert dec.free_rows == 1 and dec.active == [a]
    with pytest.raises(ValueError):
        dec.add(prompts[1:3], 5)  # two prompts, one free row
    dec.step()
    assert len(a.tokens) == 2


def test_zero_token_limit_and_rows_reused(asr, prompts):
    dec = BatchDecoder(asr.llm, asr.tokenizer.im_end, rows=1)
    [z] = dec.add(prompts[:1], 0)
    assert z.done and z.tokens == [] and z.finish_reason == "length" and dec.free_rows == 1
    for p in prompts[:3]:  # one row, used by one sequence after another
        [s] = dec.add([p], 4, True)
        while s in dec.active:
            dec.step()
        assert s.tokens == _alone(asr, p, 4, True).tokens
