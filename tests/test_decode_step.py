"""Decode steps on AVX-512 CPUs (engine/kernels/csrc/avx512.cpp, engine/kernels/decode_step.py). int8 (VNNI): the
kernel computes exactly the integer arithmetic it promises, a batch row's result never depends
on the other rows, a fused step gives the decoder layer's numbers within int8 rounding, and int8
mode uses it for every layer. bf16-stored weights: the product is fp32 arithmetic on the exact
weights, and the fused step gives the layer's own numbers."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from engine.kernels import int8
from engine.kernels import avx512_kernels
from engine.kernels.packed import PackedLinear
from engine.kernels.decode_step import DecodeStep
from engine.kernels.int8 import q8_weight
from engine.qwen3 import KVCache, Qwen3Config, Qwen3ForCausalLM
from model import FunASRNano

ROOT = Path(__file__).resolve().parent.parent

from tests._fixtures import kernels_or_missing  # noqa: E402

# under CI=true a kernel build that failed on an AVX2+ CPU fails here rather than skipping
q8 = int8.vnni_kernels(kernels_or_missing()) if int8.available() else None
needs_vnni = pytest.mark.skipif(q8 is None, reason="CPU without AVX-512 VNNI (or no kernel)")


def _quantized(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    w8 = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    return q8_weight(w8, torch.rand(n, generator=g) * 0.01 + 1e-3)


def _emulated(x, w8, scale, bias=None):
    """What the kernel promises, in float64 from the same fp32 roundings: per row
    s = max|x| / 127, q = round(x * (1 / s)) (fp32, half to even), y = s * scale * (q . w)."""
    s = x.abs().amax(dim=1) / 127
    q = torch.round(x * (1 / s)[:, None]).clamp(-127, 127)
    y = (q.double() @ w8.double().T) * s.double()[:, None] * scale.double()[None]
    return y if bias is None else y + bias.double()


@needs_vnni
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 8, 9])
def test_q8_linear_is_the_promised_integer_arithmetic(rows):
    """K = 200 leaves a 8-byte tail after three 64-byte blocks; N = 70 leaves 2 rows after the
    blocks of 4: every path of the kernel is covered, bias included."""
    w8, scale, sums = _quantized(70, 200, seed=rows)
    x = torch.randn(rows, 200, generator=torch.Generator().manual_seed(100 + rows))
    bias = torch.randn(70)
    got = q8.q8_linear(x, w8, scale, sums, bias)
    want = _emulated(x, w8, scale, bias)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5), (got - want).abs().max()
    assert torch.equal(sums, w8.sum(1, dtype=torch.int32))


@needs_vnni
def test_q8_rows_do_not_depend_on_the_batch():
    """Per-row activation scales: a sequence decodes to the same numbers alone or in a batch
    (fbgemm's per-tensor scale does not have this)."""
    w8, scale, sums = _quantized(300, 1024, seed=1)
    x = torch.randn(6, 1024, generator=torch.Generator().manual_seed(2))
    x[3] *= 50  # a loud row must not coarsen the others
    together = q8.q8_linear(x, w8, scale, sums, torch.empty(0))
    for i in range(6):
        assert torch.equal(together[i], q8.q8_linear(x[i:i + 1], w8, scale, sums, torch.empty(0))[0])


@needs_vnni
@pytest.mark.parametrize("rows", [17, 40, 97, 200])
@pytest.mark.parametrize("with_bias", [True, False])
def test_q8_gemm_is_q8_linear_exactly(rows, with_bias):
    """The many-row kernel on the panel layout gives the few-row kernel's numbers bit for bit
    (same integer sums, same epilogue), so a row's result does not depend on which one the batch
    size picked. N = 70: a part panel (6 rows) and part tiles; K = 203: a part group of 4; rows
    97 and 200: more than one 96-row pass and a part tile of 6."""
    w8, scale, sums = _quantized(70, 203, seed=rows)
    wp = int8.q8_pack(w8)
    assert wp.shape == (5, 51, 64)
    unpacked = wp.view(5, 51, 16, 4).permute(0, 2, 1, 3).reshape(80, 204)
    assert torch.equal(unpacked[:70, :203], w8) and not unpacked[70:].any() and not unpacked[:, 203:].any()
    x = torch.randn(rows, 203, generator=torch.Generator().manual_seed(7 + rows))
    x[rows // 2] *= 30  # a loud row must not coarsen the others
    bias = torch.randn(70) if with_bias else torch.empty(0)
    got = q8.q8_gemm(x, wp, scale, sums, bias)
    assert torch.equal(got, q8.q8_linear(x, w8, scale, sums, bias))
    want = _emulated(x, w8, scale, bias if with_bias else None)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5), (got - want).abs().max()


@needs_vnni
@pytest.mark.parametrize("rows", [1, 2, 5, 6, 7, 13, 16])
@pytest.mark.parametrize("with_bias", [True, False])
def test_q8_linear_on_panels_is_q8_linear_on_rows_exactly(rows, with_bias):
    """The few-row product reads q8_gemm's panels as well as the plain rows, to the same floats
    (same integer sums, same epilogue): a process then reads, and keeps resident, one layout.
    N = 70 and K = 203: a part panel and a part group of 4; 7 and 13 rows: part tiles of 6."""
    w8, scale, sums = _quantized(70, 203, seed=rows)
    x = torch.randn(rows, 203, generator=torch.Generator().manual_seed(11 + rows))
    bias = torch.randn(70) if with_bias else torch.empty(0)
    got = q8.q8_linear(x, int8.q8_pack(w8), scale, sums, bias)
    assert torch.equal(got, q8.q8_linear(x, w8, scale, sums, bias))


@needs_vnni
def test_stacked_panels_off_a_panel_boundary_are_refused():
    """Stacked parts on panels must start on a panel (16 rows): a part of 70 rows is refused with
    an error before any thread starts, and the process goes on."""
    (w1, s1, u1), (w2, s2, u2) = _quantized(70, 96, seed=1), _quantized(64, 96, seed=2)
    dn = _quantized(96, 67, seed=3)
    x = torch.randn(1, 1, 96)
    with pytest.raises(RuntimeError, match="multiple of 16"):
        q8.q8_mlp(x, torch.ones(96), 1e-6, [int8.q8_pack(w1), int8.q8_pack(w2)], [s1, s2],
                  [u1, u2], int8.q8_pack(dn[0]), dn[1], dn[2])


@needs_vnni
@torch.inference_mode()
def test_int8_mode_never_reads_the_plain_int8_rows():
    """Every int8 product that has panels (all but none of the model's Linears on VNNI CPUs) reads
    only them, decoding included: with every plain row copy zeroed the texts do not change. Were
    any product still reading the rows, it would read zeros and the text would change. So the
    decoder's int8 weights are resident once, not twice (prefill's panels + decode's rows)."""
    asr = FunASRNano.from_pretrained(str(ROOT / "models" / "demo"), device="cpu", dtype="int8")
    clips = [str(ROOT / "example" / "en.wav"), str(ROOT / "example" / "zh.wav")]
    before = [r["text"] for r in asr.transcribe(clips)]
    linears = [m for m in asr.modules() if isinstance(m, int8.DynamicInt8Linear)]
    assert linears and all(m.q8_panel_tensors() is not None for m in linears)
    assert all(t[0].dim() == 3 for l in asr.llm.model.layers for t in
               [l.step.o, l.step.down] + [(w,) for w in l.step.qkv[0] + l.step.gate_up[0]])
    for m in linears:
        m.int8_weight()[0].zero_()  # the memory-mapped cache is a private (copy-on-write) map
    assert all(not m.int8_weight()[0].any() for m in linears)
    assert [r["text"] for r in asr.transcribe(clips)] == before
    assert all(t.strip() for t in before), before


@needs_vnni
def test_q8_gemm_refuses_a_panel_of_another_shape():
    w8, scale, sums = _quantized(64, 128, seed=3)
    with pytest.raises(RuntimeError, match="another shape"):
        q8.q8_gemm(torch.randn(20, 132), int8.q8_pack(w8), scale, sums, torch.empty(0))


@needs_vnni
def test_int8_mode_on_vnni_never_packs_for_fbgemm(monkeypatch):
    """On VNNI CPUs every int8 product, the encoder's and the prefill's included, goes through the
    project's kernels: fbgemm's prepack (3-6 s of a full-size load) is never called."""
    calls = []
    real = torch.ops.quantized.linear_prepack

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(torch.ops.quantized, "linear_prepack", counted)
    asr = FunASRNano.from_pretrained(str(ROOT / "models" / "demo"), device="cpu", dtype="int8")
    texts = [r["text"] for r in asr.transcribe([str(ROOT / "example" / "en.wav"),
                                                 str(ROOT / "example" / "fi.wav")])]
    assert all(t.strip() for t in texts), texts
    assert not calls
    linears = [m for m in asr.modules() if isinstance(m, int8.DynamicInt8Linear)]
    assert linears and all(m._packed is None and m._many_rows is not None for m in linears)


def _tiny_llm(seed=0, vocab_size=300):
    # hidden 96 and head_dim 40: tails in the product (K % 64) and in the attention's lanes;
    # intermediate 528: several 32-row blocks to a thread's share of gate/up, and a part block
    cfg = Qwen3Config(vocab_size=vocab_size, hidden_size=96, intermediate_size=528,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=40)
    torch.manual_seed(seed)
    llm = Qwen3ForCausalLM(cfg)
    for name, p in llm.named_parameters():
        p.data = (1 + 0.3 * torch.randn_like(p)) if "norm" in name else 0.1 * torch.randn_like(p)
    return llm, cfg


@needs_vnni
@torch.inference_mode()
def test_decode_step_matches_the_layer_within_int8_rounding():
    """A padded batch of 3 through Q8DecodeStep against the same layer in plain PyTorch with the
    dequantised weights (exact activations): output and the cache column it writes agree to
    within activation rounding; the earlier cache columns are untouched."""
    llm, cfg = _tiny_llm()
    ref = copy.deepcopy(llm)
    llm.pack_for_cpu("int8")
    ref.float()
    for (name, mod), (_, rmod) in zip(llm.named_modules(), ref.named_modules()):
        if isinstance(mod, int8.DynamicInt8Linear):
            rmod.weight.data = mod.dequantized()
    layer, rlayer = llm.model.layers[0], ref.model.layers[0]
    assert isinstance(layer.step, DecodeStep) and layer.step.kind == "int8"

    b, t = 3, 7
    pos = torch.tensor([7, 4, 6])   # each sequence at its own length
    rows = torch.tensor([2, 0, 3])  # in its own row of a pool of 4
    cos, sin = llm.rope(pos[:, None], torch.float32)
    x = torch.randn(b, 1, 96, generator=torch.Generator().manual_seed(5))
    caches = []
    for _ in range(2):
        c = KVCache(cfg, 4, t + 1, torch.float32, "cpu")
        torch.manual_seed(6)
        c.layers[0][0].normal_(), c.layers[0][1].normal_()
        caches.append(c.layers[0])
    before = caches[0][0].clone()
    got = layer.step(x, cos, sin, caches[0], rows, pos)
    want = rlayer(x, cos, sin, caches[1], rows, pos)
    rel = ((got - want).norm() / (want - x).norm()).item()  # error relative to the layer's update
    assert rel < 0.03, rel
    written = torch.zeros_like(before, dtype=torch.bool)
    for kv in range(2):
        for r, p in zip(rows.tolist(), pos.tolist()):
            col, rcol = caches[0][kv][r, :, p], caches[1][kv][r, :, p]
            assert ((col - rcol).norm() / rcol.norm()).item() < 0.02
            written[r, :, p] = True
    assert torch.equal(caches[0][0][~written], before[~written])  # nothing else is touched


@needs_vnni
@torch.inference_mode()
@pytest.mark.parametrize("b", [3, 12])
def test_decode_step_rows_do_not_depend_on_the_batch(b):
    llm, cfg = _tiny_llm(seed=1)
    llm.pack_for_cpu("int8")
    step = llm.model.layers[1].step
    assert b <= step.max_rows  # int8 batches up to 16 rows decode through the step
    t = 5
    x = torch.randn(b, 1, 96, generator=torch.Generator().manual_seed(7))
    pos = torch.arange(b) % t + 1  # sequences of different lengths
    cos, sin = llm.rope(pos[:, None], torch.float32)
    cache = KVCache(cfg, b, t + 1, torch.float32, "cpu")
    torch.manual_seed(8)
    cache.layers[1][0].normal_(), cache.layers[1][1].normal_()
    alone = []
    for i in range(b):
        one = tuple(c[i:i + 1].clone() for c in cache.layers[1])
        alone.append(step(x[i:i + 1], cos[i:i + 1], sin[i:i + 1], one, torch.tensor([0]),
                          pos[i:i + 1]))
    together = step(x, cos, sin, cache.layers[1], torch.arange(b), pos)
    assert torch.equal(together, torch.cat(alone))


@needs_vnni
def test_int8_mode_decodes_through_the_fused_steps(monkeypatch):
    """Every decoder layer gets a step; greedy decoding with them stays close to fbgemm's
    (same int8 weights, different activation rounding), and FUNASR_NANO_NO_AVX512 turns it off."""
    demo = str(ROOT / "models" / "demo")
    asr = FunASRNano.from_pretrained(demo, device="cpu", dtype="int8")
    assert all(isinstance(layer.step, DecodeStep) for layer in asr.llm.model.layers)
    monkeypatch.setenv("FUNASR_NANO_NO_AVX512", "1")
    plain = FunASRNano.from_pretrained(demo, device="cpu", dtype="int8")
    assert all(layer.step is None for layer in plain.llm.model.layers)
    clips = sorted((ROOT / "example").glob("*.wav"))[:4]
    assert clips
    a = [r["text"] for r in asr.transcribe([str(c) for c in clips])]
    b = [r["text"] for r in plain.transcribe([str(c) for c in clips])]
    import difflib
    for x, y in zip(a, b):
        assert x.strip() and difflib.SequenceMatcher(None, x, y).ratio() > 0.8, (x, y)


avx512 = avx512_kernels()
needs_avx512 = pytest.mark.skipif(avx512 is None, reason="CPU without AVX-512 (or no kernel)")


@needs_avx512
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 9])
def test_b16_linear_is_fp32_arithmetic_on_the_exact_weights(rows):
    """K = 200: a tail after the 16-lane blocks; N = 70: 2 rows after the blocks of 4."""
    g = torch.Generator().manual_seed(rows)
    w = (torch.randn(70, 200, generator=g) * 0.05).to(torch.bfloat16)
    x = torch.randn(rows, 200, generator=g)
    bias = torch.randn(70, generator=g)
    got = avx512.b16_linear(x, w, bias)
    want = x.double() @ w.double().T + bias.double()
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5), (got - want).abs().max()


@needs_avx512
@torch.inference_mode()
@pytest.mark.parametrize("b", [1, 3])
def test_bf16_decode_step_is_the_layer(b):
    """bf16-stored weights, fp32 arithmetic: the fused step gives the PyTorch layer's numbers
    (summation order aside), on a batch of different lengths; the step reads the Linears' own
    tensors (no second copy) and a right-padded prefill through the layer's modules agrees too."""
    llm, cfg = _tiny_llm(seed=2)
    for name, p in llm.named_parameters():
        if "norm" not in name:
            p.data = p.data.to(torch.bfloat16).float()
    ref = copy.deepcopy(llm)
    llm.pack_for_cpu("bf16")
    layer, rlayer = llm.model.layers[0], ref.model.layers[0]
    step = layer.step
    assert isinstance(step, DecodeStep) and step.kind == "bf16"
    q = layer.self_attn.q_proj
    assert isinstance(q, PackedLinear) and step.qkv[0][0] is q.weight

    t = 6
    lengths = torch.tensor([6, 4, 5])[:b]
    caches = [KVCache(cfg, b, t + 1, torch.float32, "cpu") for _ in range(2)]
    xp = torch.randn(b, t, 96, generator=torch.Generator().manual_seed(3))
    cos, sin = llm.rope(torch.arange(t)[None].expand(b, t), torch.float32)
    got_p = layer(xp, cos, sin, caches[0].layers[0])  # prefill: the layer's modules
    want_p = rlayer(xp, cos, sin, caches[1].layers[0])
    assert torch.allclose(got_p, want_p, rtol=1e-4, atol=1e-4), (got_p - want_p).abs().max()

    x = torch.randn(b, 1, 96, generator=torch.Generator().manual_seed(4))
    cos1, sin1 = llm.rope(lengths[:, None], torch.float32)
    rows = torch.arange(b)
    got = layer(x, cos1, sin1, caches[0].layers[0], rows, lengths)  # one token: the step
    want = rlayer(x, cos1, sin1, caches[1].layers[0], rows, lengths)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), (got - want).abs().max()
    for kv in range(2):
        for r, n in enumerate(lengths.tolist()):
            assert torch.allclose(caches[0].layers[0][kv][r, :, :n + 1],
                                  caches[1].layers[0][kv][r, :, :n + 1], rtol=1e-4, atol=1e-5)


@needs_avx512
def test_fp32_mode_takes_the_bf16_steps_only_for_bf16_stored_weights(tiny_model_dir):
    """The random checkpoint stores bf16 (as the official one): fp32 mode decodes through the
    steps, exactly. The demo checkpoint stores fp32: fp32 mode leaves it to PyTorch, bf16
    mode (which rounds the weights) takes the steps."""
    bf16_ckpt = FunASRNano.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")
    assert all(isinstance(l.step, DecodeStep) for l in bf16_ckpt.llm.model.layers)
    demo = str(ROOT / "models" / "demo")
    assert all(l.step is None for l in FunASRNano.from_pretrained(demo, device="cpu", dtype="fp32").llm.model.layers)
    assert all(isinstance(l.step, DecodeStep)
               for l in FunASRNano.from_pretrained(demo, device="cpu", dtype="bf16").llm.model.layers)


@needs_avx512
@torch.inference_mode()
@pytest.mark.parametrize("mode", ["int8", "bf16"])
@pytest.mark.parametrize("b", [1, 3])
def test_decode_stack_is_the_layers_one_by_one(mode, b):
    """The whole decoder in one kernel call per token gives the per-layer steps' floats exactly,
    output and every cache column written, over several steps of sequences of different
    lengths; a step that taps layer inputs (word timings) goes layer by layer, to the same
    result."""
    if mode == "int8" and q8 is None:
        pytest.skip("CPU without AVX-512 VNNI")
    llm, cfg = _tiny_llm(seed=3)
    llm.pack_for_cpu(mode)
    stack = llm.decode_stack
    assert stack is not None and stack.kind == mode
    g = torch.Generator().manual_seed(9)
    rows = torch.tensor([2, 0, 1])[:b]
    pos = torch.tensor([5, 3, 4])[:b]
    caches = [KVCache(cfg, 3, 12, torch.float32, "cpu") for _ in range(3)]
    torch.manual_seed(10)
    for layer in range(cfg.num_hidden_layers):
        for kv in range(2):
            caches[0].layers[layer][kv].normal_()
            for c in caches[1:]:
                c.layers[layer][kv].copy_(caches[0].layers[layer][kv])
    for _ in range(3):
        x = torch.randn(b, 1, 96, generator=g)
        llm.decode_stack = stack
        got = llm.decode(x, caches[0], rows, pos)
        taps = {0: None, 1: None}
        tapped = llm.decode(x, caches[2], rows, pos, taps)
        assert taps[1] is not None and taps[1].shape == (b, 1, 96)
        llm.decode_stack = None
        want = llm.decode(x, caches[1], rows, pos)
        assert torch.equal(got, want) and torch.equal(tapped, want)
        pos = pos + 1
    for layer in range(cfg.num_hidden_layers):
        for kv in range(2):
            assert torch.equal(caches[0].layers[layer][kv], caches[1].layers[layer][kv])
            assert torch.equal(caches[2].layers[layer][kv], caches[1].layers[layer][kv])


@needs_avx512
def test_decode_stack_refuses_caches_for_another_depth():
    llm, cfg = _tiny_llm(seed=4)
    llm.pack_for_cpu("bf16")
    cache = KVCache(cfg, 1, 4, torch.float32, "cpu")
    cache.layers = cache.layers[:1]
    with pytest.raises(RuntimeError, match="2 layers but 1 key and 1 value caches"):
        llm.decode_stack(torch.zeros(1, 1, 96), *llm.rope(torch.zeros(1, 1, dtype=torch.long),
                                                          torch.float32),
                         cache, torch.tensor([0]), torch.tensor([0]))


@needs_avx512
@torch.inference_mode()
@pytest.mark.parametrize("head_dim", [40, 128])
@pytest.mark.parametrize("heads", [4, 6])
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_bf16_attention_step_is_the_kernels_one_by_one(head_dim, heads, cache_dtype):
    """The fused attention block gives exactly the floats of its parts called one by one (the
    products, RMSNorm, q/k norm + RoPE, decode_attention, the residual), cache columns
    included: groups of 2 and 3 query heads, head sizes with and without a 16-lane tail,
    sequences of 1-10 positions, fp32 and bf16 caches."""
    cfg = Qwen3Config(vocab_size=300, hidden_size=96, intermediate_size=528, num_hidden_layers=1,
                      num_attention_heads=heads, num_key_value_heads=2, head_dim=head_dim)
    torch.manual_seed(head_dim + heads)
    llm = Qwen3ForCausalLM(cfg)
    for name, p in llm.named_parameters():
        p.data = (1 + 0.3 * torch.randn_like(p)) if "norm" in name else 0.1 * torch.randn_like(p)
    llm.pack_for_cpu("bf16")
    layer = llm.model.layers[0]
    att, n1 = layer.self_attn, layer.input_layernorm
    rows, pos = torch.tensor([1, 3, 0]), torch.tensor([5, 0, 9])
    b, c = 3, cfg.hidden_size
    x = torch.randn(b, 1, c, generator=torch.Generator().manual_seed(11))
    cos, sin = llm.rope(pos[:, None], torch.float32)
    caches = [KVCache(cfg, 4, 12, cache_dtype, "cpu").layers[0] for _ in range(2)]
    torch.manual_seed(12)
    for kv in range(2):
        caches[0][kv].normal_()
        caches[1][kv].copy_(caches[0][kv])
    none = torch.empty(0)
    xn = avx512.rms_norm(x.view(b, c), n1.weight, n1.eps)
    q, k, v = (avx512.b16_linear(xn, lin.weight, none) for lin in (att.q_proj, att.k_proj, att.v_proj))
    avx512.qk_norm_rope_(q, k, att.q_norm.weight, att.k_norm.weight, cos.reshape(b, -1),
                         sin.reshape(b, -1), att.q_norm.eps)
    o = avx512.decode_attention(q, k, v, *caches[1], rows, pos)
    want = avx512.b16_linear(o, att.o_proj.weight, none) + x.view(b, c)
    h = layer.step.norms  # the step's own attention call, as DecodeStep makes it
    got = layer.step._attention(x, h[0].weight, h[0].eps, *layer.step.qkv, h[2].weight,
                                h[3].weight, cos, sin, *caches[0], rows, pos, *layer.step.o)
    assert torch.equal(got.view(b, c), want)
    assert torch.equal(caches[0][0], caches[1][0]) and torch.equal(caches[0][1], caches[1][1])



@needs_avx512
@torch.inference_mode()
def test_a_bf16_cache_is_the_fp32_one_rounded():
    """decode_attention on a bf16 cache: the new column is the fp32 k and v rounded as torch
    rounds them (nearest even; NaN stays NaN), and the output is exactly the fp32 cache's when
    that holds the same rounded values."""
    b, kvh, h, d, cap = 2, 2, 4, 36, 9  # tails after 16 and after 8 lanes
    g = torch.Generator().manual_seed(13)
    rows, pos = torch.tensor([1, 0]), torch.tensor([6, 3])
    q = torch.randn(b, h * d, generator=g)
    k = torch.randn(b, kvh * d, generator=g)
    v = torch.randn(b, kvh * d, generator=g)
    k[0, 5], v[1, 7] = float("nan"), 3.0 + 2 ** -7  # a NaN, and a tie that rounds to even
    c16 = [torch.randn(2, kvh, cap, d, generator=g).to(torch.bfloat16) for _ in range(2)]
    out16 = avx512.decode_attention(q, k, v, *c16, rows, pos)
    for cache, new in zip(c16, (k, v)):
        for i, (r, p) in enumerate(zip(rows.tolist(), pos.tolist())):
            col, want = cache[r, :, p].float(), new[i].view(kvh, d).to(torch.bfloat16).float()
            assert torch.equal(col.isnan(), want.isnan())
            assert torch.equal(col.nan_to_num(), want.nan_to_num())
    assert c16[1][0, 0, 3, 7].item() == 3.0  # the tie went to the even neighbour
    # the same values in fp32 caches, the new columns rounded beforehand: the same floats out
    k[0, 5] = 0.5
    c32 = [c.float() for c in c16]
    c16[0][1, 0, 6, 5] = 0.5
    k16, v16 = k.to(torch.bfloat16).float(), v.to(torch.bfloat16).float()
    out16 = avx512.decode_attention(q, k16, v16, *c16, rows, pos)
    out32 = avx512.decode_attention(q, k16, v16, *c32, rows, pos)
    assert torch.equal(out16, out32)
    with pytest.raises(RuntimeError, match="one dtype, fp32 or bf16"):
        avx512.decode_attention(q, k, v, c16[0], c32[1], rows, pos)


@needs_avx512
@torch.inference_mode()
@pytest.mark.parametrize("mode, want, rows", [("fp32", torch.float32, 2),
                                              ("bf16", torch.bfloat16, 9),
                                              ("int8", torch.float32, 17)])
def test_the_bf16_mode_keeps_the_cache_in_bf16(mode, want, rows):
    """fp32 keeps an fp32 cache (exact), int8 too (its texts), bf16 a bf16 one. A batch over
    the steps' rows (8 in bf16, 16 in int8: the layers' modules and decode_attention) decodes
    every sequence to the tokens it gets alone (through the steps)."""
    if mode == "int8" and q8 is None:
        pytest.skip("CPU without AVX-512 VNNI")
    from engine.batching import BatchDecoder
    llm, cfg = _tiny_llm(seed=5)
    for name, p in llm.named_parameters():  # bf16-stored, as the official checkpoint
        p.data = p.data.to(torch.bfloat16)
    llm.pack_for_cpu(mode)
    assert llm.cache_dtype == want and llm.decode_stack is not None
    assert rows > llm.decode_stack.max_rows or mode == "fp32"
    g = torch.Generator().manual_seed(14)
    prompts = [torch.randn(3 + i % 5, 96, generator=g) for i in range(rows)]
    dec = BatchDecoder(llm, eos_id=299, rows=rows)
    together = dec.add(prompts, 6, ignore_eos=True, stop_loops=False)
    assert dec.cache.layers[0][0].dtype == want
    while dec.active:
        dec.step()
    for p, seq in zip(prompts, together):
        alone = BatchDecoder(llm, eos_id=299, rows=1)
        (one,) = alone.add([p], 6, ignore_eos=True, stop_loops=False)
        while alone.active:
            alone.step()
        assert one.tokens == seq.tokens
