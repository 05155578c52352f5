"""The greedy pick screened by an int8 copy of the lm_head (engine/kernels/exact_argmax.py) gives the
token the full fp32 product's argmax gives: on random rows, loud channels, banned ids, exact
ties and near-ties built to sit inside the int8 rounding, and through the decoder and
greedy_generate. It must also do what it is for: compute only a few rows exactly."""
from __future__ import annotations

import pytest
import torch

from engine.kernels import int8
from engine.kernels import avx512_kernels
from engine.kernels.packed import PackedLinear
from engine.batching import greedy_generate
from engine.kernels.exact_argmax import ExactArgmax
from engine.qwen3 import KVCache

from test_decode_step import _tiny_llm as tiny_decoder

from tests._fixtures import kernels_or_missing  # noqa: E402

# under CI=true a kernel build that failed on an AVX2+ CPU fails here rather than skipping
k = avx512_kernels(need_vnni=True, module=kernels_or_missing()) if int8.available() else None
pytestmark = pytest.mark.skipif(k is None, reason="CPU without AVX-512 VNNI (or no kernel)")

NONE = torch.empty(0)


def _weight(n, kdim, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, kdim, generator=g) * 0.05).bfloat16()


def _full_argmax(x, w, banned=()):
    logits = k.b16_linear(x.contiguous(), w, NONE)  # what PackedLinear computes for few rows
    if len(banned):
        logits[:, list(banned)] = float("-inf")
    return logits.argmax(-1)


@pytest.mark.parametrize("kdim", [37, 200, 1024])
def test_int8_copy_and_bound_terms(kdim):
    """The int8 copy is round(w / s) with s = max|w| / 127 (as the decoder's int8 weights), and
    the bound's per-row terms are at least s |q| and |w - s q| (computed here in float64)."""
    w = _weight(300, kdim, seed=kdim)
    head = ExactArgmax(w, k)
    wd = w.double()
    s = (w.float().abs().amax(1) / 127)
    assert torch.equal(head.scale, s)
    assert torch.equal(head.w8, torch.round(w.float() / s[:, None]).clamp(-127, 127).to(torch.int8))
    assert torch.equal(head.sums, head.w8.sum(1, dtype=torch.int32))
    q = head.w8.double()
    assert bool((head.qnorm.double() >= s.double() * q.norm(dim=1)).all())
    assert bool((head.enorm.double() >= (wd - s.double()[:, None] * q).norm(dim=1)).all())


@pytest.mark.parametrize("rows", [1, 3, 8])
def test_same_token_as_the_full_product(rows):
    """N = 5003, K = 200: tails in both the int8 and the bf16 kernels' loops. Rows with a
    channel 40x louder than the rest, and with all channels alike."""
    w = _weight(5003, 200, seed=rows)
    head = ExactArgmax(w, k)
    g = torch.Generator().manual_seed(10 + rows)
    for trial in range(20):
        x = torch.randn(rows, 200, generator=g) * (0.1 + trial)
        if trial % 2:
            x[:, trial] *= 40
        got = head(x)
        assert got is not None and torch.equal(got, _full_argmax(x, w)), trial
        assert head.candidates <= 0.02 * 5003 * rows  # the point: a few rows, not all


def test_banned_ids_are_never_picked():
    w = _weight(3000, 256, seed=3)
    head = ExactArgmax(w, k)
    x = torch.randn(4, 256)
    first = _full_argmax(x, w)
    banned = torch.tensor(sorted(set(first.tolist())))
    got = head(x, banned)
    assert torch.equal(got, _full_argmax(x, w, banned.tolist()))
    assert not set(got.tolist()) & set(banned.tolist())


def test_exact_ties_take_the_first_index():
    """Copies of one row give bit-identical logits: torch.argmax's first index must win."""
    w = _weight(2000, 128, seed=4)
    x = torch.randn(2, 128)
    top = int(_full_argmax(x[:1], w))
    for dst in (5, 1500, 1999):
        w[dst] = w[top]
    head = ExactArgmax(w, k)
    got = head(x)
    assert torch.equal(got, _full_argmax(x, w))
    assert int(got[0]) == min(5, top)


def test_near_ties_inside_the_int8_rounding():
    """4000 rows that differ from one another by less than a step of their int8 copy: the int8
    estimate alone ranks them wrongly in most trials (checked below), so the bound has to keep
    the true best among the rows computed exactly."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(512, generator=g) * 0.05
    w = (base + 0.0005 * torch.randn(4000, 512, generator=g)).bfloat16()
    head = ExactArgmax(w, k)
    estimate_wrong = 0
    for trial in range(20):
        x = torch.randn(2, 512, generator=g)
        want = _full_argmax(x, w)
        assert torch.equal(head(x), want), trial
        assert head.candidates >= 4
        estimate = k.q8_linear(x, head.w8, head.scale, head.sums, NONE).argmax(-1)
        estimate_wrong += int((estimate != want).sum())
    assert estimate_wrong >= 10


def test_non_finite_rows_fall_back():
    w = _weight(1000, 64, seed=7)
    x = torch.randn(2, 64)
    x[1, 3] = float("nan")
    assert ExactArgmax(w, k)(x) is None


def _tiny_llm(seed=0):
    """test_decode_step's tiny decoder with a 3000-token vocabulary, stored as bf16 (as the
    official checkpoint is), so that fp32 mode packs its lm_head for the screen."""
    llm, cfg = tiny_decoder(seed, vocab_size=3000)
    return llm.bfloat16(), cfg


@torch.inference_mode()
def test_fp32_and_bf16_modes_pick_through_the_screen():
    for mode in ("fp32", "bf16"):
        llm, cfg = _tiny_llm()
        llm.pack_for_cpu(mode)
        assert isinstance(llm.lm_head, PackedLinear) and llm.exact_argmax is not None
        x = torch.randn(3, 7, cfg.hidden_size)
        lengths = torch.tensor([7, 4, 6])
        cache = KVCache(cfg, 3, 16, torch.float32, "cpu")
        logits = llm(x, lengths, cache)
        cache = KVCache(cfg, 3, 16, torch.float32, "cpu")
        assert torch.equal(llm.pick(llm.prefill(x, lengths, cache)), logits.argmax(-1))


@torch.inference_mode()
def test_greedy_generate_same_tokens_with_and_without_the_screen():
    llm, cfg = _tiny_llm(seed=1)
    llm.pack_for_cpu("fp32")
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randn(n, cfg.hidden_size, generator=g) for n in (9, 5, 12)]
    screened = greedy_generate(llm, prompts, eos_id=7, max_new_tokens=20)
    head, llm.exact_argmax = llm.exact_argmax, None
    full = greedy_generate(llm, prompts, eos_id=7, max_new_tokens=20)
    llm.exact_argmax = head
    assert [s.tokens for s in screened] == [f.tokens for f in full]
    forced = greedy_generate(llm, prompts, eos_id=7, max_new_tokens=20, ignore_eos=True)
    assert all(len(f.tokens) == 20 and 7 not in f.tokens for f in forced)
