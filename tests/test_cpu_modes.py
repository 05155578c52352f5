"""The CPU decoding kernel and the modes built on it: bf16-stored weights give fp32's numbers,
int8 stays within its quantisation error, the kernel (few rows) and the matmul fallback (many
rows) agree, fp32 mode never rounds fp32 weights, and every mode transcribes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.kernels import int8
from engine.kernels import avx512_kernels
from engine.kernels import kernels
from engine.kernels.packed import PackedLinear
from model import FunASRNano

ROOT = Path(__file__).resolve().parent.parent

from tests._fixtures import kernels_or_missing  # noqa: E402

needs_kernel = pytest.mark.skipif(kernels_or_missing() is None,
                                  reason="CPU without AVX2, or FUNASR_NANO_NO_KERNELS=1")


def _weights(n=300, k=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, k, generator=g) * 0.05).to(torch.bfloat16).float()  # bf16 values


@needs_kernel
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 32, 33, 70])
def test_bf16_storage_computes_fp32(rows):
    """K = 200 is not a multiple of the kernel's 16/32 blocks: the tails are covered too."""
    w = _weights()
    x = torch.randn(rows, 200, generator=torch.Generator().manual_seed(rows))
    got = PackedLinear(w, "bf16")(x)
    want = torch.nn.functional.linear(x.double(), w.double()).float()
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (got - want).abs().max()


@needs_kernel
@pytest.mark.parametrize("rows", [1, 7, 32, 33, 70])
def test_int8_is_within_its_rounding(rows):
    w = _weights(seed=1)
    lin = PackedLinear(w, "int8")
    x = torch.randn(rows, 200, generator=torch.Generator().manual_seed(rows))
    got = lin(x)
    # the exact product with the dequantised weights: what the kernel must compute
    deq = lin.weight.double() * lin.scale.double()[:, None]
    want = x.double() @ deq.T
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5)
    # and the quantisation error itself is bounded by half a step per weight
    step = lin.scale.double()[:, None] / 2
    assert ((deq - w.double()).abs() <= step * 1.001).all()  # fp32 division: ties may flip
    full = x.double() @ w.double().T
    rel = (got.double() - full).norm() / full.norm()
    assert rel < 0.02, rel


@needs_kernel
def test_kernel_and_fallback_agree():
    """Rows <= MAX_KERNEL_ROWS go through the kernel, more through a matmul: same numbers."""
    w = _weights(seed=2)
    x = torch.randn(PackedLinear.MAX_KERNEL_ROWS + 1, 200)
    for mode in ("bf16", "int8"):
        lin = PackedLinear(w, mode)
        together = lin(x)  # fallback path
        one_by_one = torch.cat([lin(x[i:i + 1]) for i in range(x.shape[0])])  # kernel path
        assert torch.allclose(together, one_by_one, rtol=1e-5, atol=1e-6), mode


@needs_kernel
def test_bf16_gemm_tails_and_rows_independent():
    """The bf16 GEMM kernel (many rows on AVX2-only CPUs; 3 x 4 tiles over 8-wide k): M, N and
    K off those multiples give fp32's numbers, and a row's output is bit-identical whatever the
    other rows are (a prompt's numbers must not depend on its batch neighbours)."""
    gemm = kernels().gemm_bf16
    g = torch.Generator().manual_seed(4)
    w = (torch.randn(67, 203, generator=g) * 0.05).to(torch.bfloat16)
    x = torch.randn(101, 203, generator=g)
    got = gemm(x, w)
    want = torch.nn.functional.linear(x.double(), w.double()).float()
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (got - want).abs().max()
    assert torch.allclose(PackedLinear(w, "bf16")(x), want, rtol=1e-5, atol=1e-5)
    others = torch.randn(100, 203, generator=g)
    for m in (1, 2, 4, 40, 100):
        mixed = torch.cat([x[:1], others[:m - 1]])  # row 0 first, in tiles of other sizes
        assert torch.equal(gemm(mixed, w)[0], got[0]), m
        assert torch.equal(gemm(torch.cat([others[:m - 1], x[:1]]), w)[-1], got[0]), m
    assert torch.equal(gemm(x, w[5:6])[:, 0], got[:, 5])  # a weight row alone: the same bits


bf16dot = avx512_kernels(need_bf16=True, module=kernels_or_missing())
needs_bf16dot = pytest.mark.skipif(bf16dot is None, reason="CPU without AVX512_BF16 (or no kernel)")


@needs_bf16dot
@pytest.mark.parametrize("shape", [(150, 1024, 64), (101, 203, 67), (3, 31, 5), (1, 32, 1),
                                   (7, 65, 4), (13, 2050, 70), (7, 1027, 17)])
def test_bf16dot_gemm_is_rounded_activations_fp32_sums(shape):
    """The bf16 mode's prefill kernel on AVX512_BF16 CPUs (tiles of 6 rows x 64 columns, panels
    of 512 k pairs): the activations rounded to bf16 (nearest even, PyTorch's cast), the products
    and sums fp32; M, N and K off those multiples included, odd K and K over one panel too. Only
    the summation order differs from the reference."""
    m, k, n = shape
    g = torch.Generator().manual_seed(m + k + n)
    w = (torch.randn(n, k, generator=g) * 0.05).to(torch.bfloat16)
    x = torch.randn(m, k, generator=g) * 3
    got = bf16dot.gemm_bf16dot(x, w)
    xr = x.to(torch.bfloat16).double()
    want = torch.nn.functional.linear(xr, w.double())
    bound = torch.nn.functional.linear(xr.abs(), w.double().abs())  # sum |x w|: fp32's scale
    assert got.dtype == torch.float32 and got.shape == (m, n)
    assert ((got.double() - want).abs() <= 1e-6 * bound + 1e-30).all(), \
        ((got.double() - want).abs() / bound).max()
    # and not fp32's products: the rounding of x is visible (the kernel is the one asked for)
    if k >= 32:
        exact = torch.nn.functional.linear(x.double(), w.double())
        assert ((got.double() - exact).abs() > 1e-5 * bound).any()


@needs_bf16dot
def test_bf16dot_rows_independent_and_only_for_bf16_mode():
    """A row's output is bit-identical whatever its neighbours; PackedLinear takes the kernel for
    many rows only with round_acts (the bf16 mode), so fp32 mode keeps exact products."""
    g = torch.Generator().manual_seed(9)
    w = (torch.randn(37, 100, generator=g) * 0.05).to(torch.bfloat16)
    x = torch.randn(50, 100, generator=g)
    got = bf16dot.gemm_bf16dot(x, w)
    for m in (1, 3, 4, 5, 49):
        assert torch.equal(bf16dot.gemm_bf16dot(torch.cat([x[:1], x[1:m] * 2]), w)[0], got[0]), m
    rows = PackedLinear.MAX_KERNEL_ROWS + 1
    assert torch.equal(PackedLinear(w, "bf16", round_acts=True)(x[:rows]), got[:rows])
    exact = PackedLinear(w, "bf16")(x[:rows])
    assert torch.equal(exact, kernels().gemm_bf16(x[:rows], w))
    assert not torch.equal(exact, got[:rows])


def _rounded_causal_attention(q, k, v, heads, kv_heads):
    """float64 causal grouped-query attention of q, k, v rounded to bf16: (B, T, heads * D)."""
    b, t, _ = q.shape
    d = q.shape[2] // heads

    def split(z, n):
        return z.view(b, t, n, d).transpose(1, 2).to(torch.bfloat16).double()
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    out = torch.nn.functional.scaled_dot_product_attention(
        split(q, heads), split(k, kv_heads), split(v, kv_heads), attn_mask=mask, enable_gqa=True)
    return out.transpose(1, 2).reshape(b, t, heads * d)


@needs_bf16dot
@pytest.mark.parametrize("d,heads,kv_heads,t", [(128, 16, 8, 150), (48, 4, 2, 37), (16, 3, 3, 1),
                                               (64, 4, 1, 13), (128, 2, 2, 7)])
def test_bf16_prefill_attention_is_rounded_inputs_causal_softmax(d, heads, kv_heads, t):
    """The bf16 mode's prompt attention: q, k, v rounded to bf16, causal grouped-query softmax,
    the weights rounded to bf16 too (each off by at most 2^-8 of itself, bf16's unit roundoff, so
    an output by at most 2^-8 of max |v| with the fp32 sums), and not fp32's attention (the
    rounding is visible). A
    row does not depend on the rows after it: a right-padded prompt's real rows are the unpadded
    prompt's, bit for bit."""
    g = torch.Generator().manual_seed(d + t)
    b = 2
    q = torch.randn(b, t, heads * d, generator=g) * 2
    k = torch.randn(b, t, kv_heads * d, generator=g) * 2
    v = torch.randn(b, t, kv_heads * d, generator=g)
    got = bf16dot.prefill_attention_bf16(q, k, v, heads, kv_heads)
    want = _rounded_causal_attention(q, k, v, heads, kv_heads)
    vmax = v.to(torch.bfloat16).abs().max().item()
    assert got.shape == q.shape and got.dtype == torch.float32
    assert (got.double() - want).abs().max() <= 2 ** -8 * vmax + 1e-5
    if t > 1:
        exact = torch.nn.functional.scaled_dot_product_attention(
            *(z.view(b, t, n, d).transpose(1, 2).double() for z, n in
              ((q, heads), (k, kv_heads), (v, kv_heads))),
            attn_mask=torch.ones(t, t, dtype=torch.bool).tril(), enable_gqa=True)
        exact = exact.transpose(1, 2).reshape(b, t, heads * d)
        assert (got.double() - exact).abs().max() > 1e-4
    for n in {1, t // 2 + 1, t}:
        part = bf16dot.prefill_attention_bf16(q[:, :n].contiguous(), k[:, :n].contiguous(),
                                              v[:, :n].contiguous(), heads, kv_heads)
        assert torch.equal(part, got[:, :n]), n


@needs_bf16dot
def test_bf16_prefill_attention_refuses_what_it_cannot_take():
    """Shapes it was not built for are errors that say which, before any work."""
    q, kv = torch.zeros(1, 4, 2 * 40), torch.zeros(1, 4, 40)
    with pytest.raises(RuntimeError, match="multiple of 16"):
        bf16dot.prefill_attention_bf16(q, kv, kv, 2, 1)   # head_dim 40
    q, kv = torch.zeros(1, 4, 2 * 48), torch.zeros(1, 3, 48)
    with pytest.raises(RuntimeError, match="k and v must be"):
        bf16dot.prefill_attention_bf16(q, kv, kv, 2, 1)   # k's T differs
    with pytest.raises(RuntimeError, match="fp32"):
        bf16dot.prefill_attention_bf16(q.double(), kv, kv, 2, 1)


@needs_bf16dot
@torch.inference_mode()
def test_only_the_bf16_mode_takes_the_prefill_attention_kernel():
    """pack_for_cpu("bf16") puts every decoder layer's prompt attention on the kernel, "fp32"
    none (its attention stays PyTorch's exact one). A right-padded batch of prompts of different
    lengths through the kernel fills the KV cache exactly as PyTorch's path does (the same k and
    v) and gives each prompt's last hidden state within the bf16 rounding of that path's."""
    from engine.qwen3 import Attention, KVCache, Qwen3Config, Qwen3ForCausalLM
    cfg = Qwen3Config(hidden_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=48,
                      intermediate_size=64, num_hidden_layers=2, vocab_size=50)
    models = {}
    for mode in ("fp32", "bf16"):
        torch.manual_seed(0)
        m = Qwen3ForCausalLM(cfg)
        m.to(torch.bfloat16).pack_for_cpu(mode)
        models[mode] = m
    atts = [[a for a in models[mode].modules() if isinstance(a, Attention)] for mode in models]
    assert all(a.prefill_bf16 is None for a in atts[0])
    assert all(a.prefill_bf16 is not None for a in atts[1]) and len(atts[1]) == 2
    m = models["bf16"]
    x = torch.randn(3, 9, 96, generator=torch.Generator().manual_seed(1))
    lengths, rows = torch.tensor([9, 4, 6]), torch.tensor([2, 0, 1])
    got = {}
    for on in (True, False):
        for a in atts[1]:
            a.prefill_bf16 = bf16dot.prefill_attention_bf16 if on else None
        cache = KVCache(cfg, 3, 16, torch.float32, "cpu")
        h = m.prefill(x, lengths, cache, rows)
        got[on] = (h, [c[r, :, :n].clone() for c in cache.layers[0]
                       for r, n in zip(rows.tolist(), lengths.tolist())])
    (h1, kv1), (h0, kv0) = got[True], got[False]
    assert all(torch.equal(a, b) for a, b in zip(kv1, kv0))   # layer 0's k, v: before attention
    assert not torch.equal(h1, h0)                            # the kernel ran
    assert (h1 - h0).abs().max() <= 0.05 * h0.abs().max(), (h1 - h0).abs().max()


def _attention(seed=3):
    from engine.qwen3 import Attention, Qwen3Config
    cfg = Qwen3Config(hidden_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=40,
                      intermediate_size=64, num_hidden_layers=1, vocab_size=50)
    torch.manual_seed(seed)
    att = Attention(cfg)
    for norm in (att.q_norm, att.k_norm):  # not all ones, so a missing scale shows
        norm.weight.data = 1 + 0.3 * torch.randn(cfg.head_dim)
    return att, cfg


@needs_kernel
@torch.inference_mode()
def test_fused_decoder_ops_match_pytorch():
    """The kernels behind CPU decoding (RMSNorm; q/k norm + RoPE; one-token cache write +
    grouped-query attention) give PyTorch's numbers: a right-padded prefill of prompts of
    different lengths into scattered cache rows, then steps where every sequence writes its own
    row at its own column. head_dim 40 is not a multiple of the kernels' 8/16 lanes: tails are
    covered."""
    from engine.qwen3 import KVCache, Qwen3ForCausalLM, RMSNorm
    att, cfg = _attention()
    norm = RMSNorm(96, 1e-6)
    norm.weight.data = 1 + 0.3 * torch.randn(96)
    x = torch.randn(3, 5, 96)
    plain = norm(x)
    norm.fast = kernels()
    assert torch.allclose(norm(x), plain, rtol=1e-5, atol=1e-6)
    assert torch.allclose(norm(x[:, -1]), plain[:, -1], rtol=1e-5, atol=1e-6)  # strided input

    rope = Qwen3ForCausalLM(cfg).rope
    b, t = 3, 6
    lengths = torch.tensor([6, 4, 5])
    rows = torch.tensor([4, 0, 2])  # cache rows of a pool of 5: not the batch order
    xp = torch.randn(b, t, 96, generator=torch.Generator().manual_seed(9))
    outs = []
    for fast in (None, kernels()):
        att.fast = fast
        cache = KVCache(cfg, 5, t + 3, torch.float32, "cpu")
        cos, sin = rope(torch.arange(t)[None].expand(b, t), torch.float32)
        prefill = att(xp, cos, sin, cache.layers[0], rows)
        steps = []
        for s in range(2):
            pos = lengths + s
            cos1, sin1 = rope(pos[:, None], torch.float32)
            xs = torch.randn(b, 1, 96, generator=torch.Generator().manual_seed(s))
            steps.append(att(xs, cos1, sin1, cache.layers[0], rows, pos))
        # the columns each row holds: its prompt, then its two steps
        kept = [torch.cat([c[r, :, :n + 2] for r, n in zip(rows.tolist(), lengths.tolist())], 1)
                for c in cache.layers[0]]
        real = [prefill[i, :n] for i, n in enumerate(lengths.tolist())]
        outs.append((*real, *steps, *kept))
    for got, want in zip(outs[1], outs[0]):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), (got - want).abs().max()


@needs_kernel
@torch.inference_mode()
@pytest.mark.parametrize("shift", [0, 3])
def test_fused_fsmn_matches_pytorch(shift):
    """The encoder's FSMN memory in one kernel pass = the shifted-copy sum, on a padded batch
    (C = 60: not a multiple of 8, so the tails are covered)."""
    from engine.encoder import SANMAttention
    torch.manual_seed(shift)
    att = SANMAttention(heads=4, in_dim=60, dim=60, kernel_size=11, sanm_shift=shift)
    x = torch.randn(3, 17, 60)
    mask = torch.arange(17)[None] < torch.tensor([17, 9, 1])[:, None]
    plain = [att(x, mask), att(x[:1], None)]
    att.fast = kernels()
    fused = [att(x, mask), att(x[:1], None)]
    for got, want in zip(fused, plain):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (got - want).abs().max()


needs_fbgemm = pytest.mark.skipif(not int8.available(), reason="torch built without fbgemm")


@needs_fbgemm
@pytest.mark.parametrize("rows", [1, 8, 100])
def test_dynamic_int8_linear_is_close(rows):
    """fbgemm's int8 GEMM: weights within half a quantisation step, outputs within ~2%, any
    leading dimensions, bias included."""
    w = _weights(seed=3)
    bias = torch.randn(300, generator=torch.Generator().manual_seed(4)) * 0.1
    lin = int8.DynamicInt8Linear.from_float(w, bias)
    step = w.abs().amax(dim=1, keepdim=True) / 127 / 2
    assert ((lin.dequantized() - w).abs() <= step * 1.001).all()
    x = torch.randn(2, rows, 200, generator=torch.Generator().manual_seed(rows))
    got = lin(x)
    want = torch.nn.functional.linear(x.double(), w.double(), bias.double()).float()
    assert got.shape == want.shape
    rel = ((got - want).norm() / want.norm()).item()
    assert 0 < rel < 0.03, rel  # rounded (not exact), but close


@needs_fbgemm
@needs_kernel
def test_dynamic_int8_one_row_goes_through_the_weight_only_kernel():
    """One row (decoding one sequence): the same int8 weights, the input unquantised, so the
    result is the dequantised weight's exact product; two rows go through fbgemm (rounded)."""
    w = _weights(seed=5)
    bias = torch.randn(300, generator=torch.Generator().manual_seed(6)) * 0.1
    lin = int8.DynamicInt8Linear.from_float(w, bias, one_row=kernels())
    x = torch.randn(2, 200, generator=torch.Generator().manual_seed(7))
    exact = x.double() @ lin.dequantized().double().T + bias.double()
    one = torch.cat([lin(x[i:i + 1]) for i in range(2)])
    assert torch.allclose(one.double(), exact, rtol=1e-5, atol=1e-5)
    two = lin(x)
    assert not torch.allclose(two.double(), exact, rtol=1e-5, atol=1e-5)
    assert ((two.double() - exact).norm() / exact.norm()) < 0.03


@needs_fbgemm
def test_int8_mode_quantizes_every_linear():
    """int8 mode: encoder, adaptor and decoder (lm_head included) all run int8 GEMMs, while the
    embedding lookup keeps its table."""
    asr = FunASRNano.from_pretrained(str(ROOT / "models" / "demo"), device="cpu", dtype="int8")
    for part in (asr.audio_encoder, asr.audio_adaptor, asr.llm):
        assert not any(isinstance(m, (torch.nn.Linear, PackedLinear)) for m in part.modules())
        assert any(isinstance(m, int8.DynamicInt8Linear) for m in part.modules())
    assert isinstance(asr.llm.lm_head, int8.DynamicInt8Linear)
    assert asr.llm.model.embed_tokens.weight.dtype in (torch.float32, torch.bfloat16)


def _linears(asr):
    return {n: m for n, m in asr.llm.named_modules()
            if isinstance(m, (torch.nn.Linear, PackedLinear))}


def test_fp32_mode_keeps_fp32_weights_exact():
    """The demo checkpoint stores fp32 weights: fp32 mode must not round them to bf16."""
    demo = ROOT / "models" / "demo"
    state = torch.load(demo / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    assert state["llm.model.layers.0.mlp.up_proj.weight"].dtype == torch.float32
    asr = FunASRNano.from_pretrained(str(demo), device="cpu", dtype="fp32")
    for name, mod in _linears(asr).items():
        w = mod.widened() if isinstance(mod, PackedLinear) else mod.weight
        assert w.dtype == torch.float32
        assert torch.equal(w, state[f"llm.{name}.weight"].float()), name
    if kernels() is not None:
        bf = FunASRNano.from_pretrained(str(demo), device="cpu", dtype="bf16")
        assert all(isinstance(m, PackedLinear) and m.mode == "bf16" for m in _linears(bf).values())


@needs_kernel
def test_bf16_checkpoint_is_packed_exactly(tiny_model_dir):
    """The official layout stores bf16: fp32 mode keeps those values in bf16, unrounded."""
    state = torch.load(Path(tiny_model_dir) / "model.pt", map_location="cpu",
                       weights_only=True)["state_dict"]
    asr = FunASRNano.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")
    for name, mod in _linears(asr).items():
        key = f"llm.{name}.weight"
        if key not in state:  # a tied lm_head
            key = "llm.model.embed_tokens.weight"
        assert isinstance(mod, PackedLinear) and mod.mode == "bf16", name
        assert torch.equal(mod.weight, state[key].to(torch.bfloat16)), name


@pytest.mark.parametrize("mode", ["bf16", "int8"])
def test_every_cpu_mode_transcribes(mode, speech_dir):
    """Each mode runs the example clips with the demo checkpoint and stays close to fp32."""
    import csv
    import sys
    sys.path.insert(0, str(ROOT / "tools"))
    from eval_demo import cer_counts
    rows = list(csv.DictReader(open(ROOT / "example" / "examples.tsv", encoding="utf-8"),
                               delimiter="\t"))
    texts = {}
    for m in ("fp32", mode):
        asr = FunASRNano.from_pretrained(str(ROOT / "models" / "demo"), device="cpu", dtype=m)
        texts[m] = [asr.transcribe([str(ROOT / "example" / r["file"])], language=r["language"])[0]
                    for r in rows]
        assert all(not t.get("error") and t["text"] for t in texts[m]), m
    errs = tot = 0
    for r, a, b in zip(rows, texts["fp32"], texts[mode]):
        e, n = cer_counts(a["text"], b["text"], r["language"])
        errs, tot = errs + e, tot + n
    assert errs / tot <= 0.10, (mode, errs / tot)
