"""tools/make_random_model.py writes the official layout, and funasr's AutoModel accepts it."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from tests._fixtures import require_funasr
from tools import make_random_model as mrm
from tools.fetch_assets import SPECIAL_IDS

require_funasr(module_level=True)

ZH = "zh/funasr_sample.wav"
EN = "en/lhotse_ljspeech_LJ002-0020.wav"


def _state(model_dir) -> dict[str, torch.Tensor]:
    return torch.load(Path(model_dir) / "model.pt", map_location="cpu")["state_dict"]


def test_full_size_names_and_shapes(tmp_path):
    """Spec 1.1 / 6.1 / 11 from the reference class itself, without writing 2 GB."""
    mrm.write_layout(tmp_path, "full", ctc=True)
    shapes = mrm.reference_shapes(tmp_path)
    main = {k: s for k, s in shapes.items() if not mrm.is_ctc_key(k)}
    assert len(main) == 1261 and len(shapes) == 1347
    assert Counter(k.split(".")[0] for k in main) == {
        "audio_encoder": 914, "llm": 311, "audio_adaptor": 36}
    assert sum(s.numel() for s in main.values()) * 2 == 1_970_748_608  # bf16 bytes, spec 1.1
    assert main["llm.model.embed_tokens.weight"] == main["llm.lm_head.weight"] == (151936, 1024)
    assert main["llm.model.layers.27.self_attn.q_proj.weight"] == (2048, 1024)
    assert main["audio_encoder.encoders0.0.self_attn.linear_q_k_v.weight"] == (1536, 560)
    assert main["audio_encoder.tp_encoders.19.self_attn.fsmn_block.weight"] == (512, 1, 11)
    assert main["audio_adaptor.blocks.1.feed_forward.w_1.weight"] == (256, 1024)
    # CTC head sized to our (Whisper) tiktoken: 50257 ranks + 1679 specials, not 60515.
    assert shapes["ctc.ctc_lo.weight"] == (mrm.ctc_vocab_size(), 512) == (51936, 512)


def test_tiny_layout(tiny_model_dir):
    d = Path(tiny_model_dir)
    for name in ("model.pt", "config.yaml", "configuration.json", "multilingual.tiktoken",
                 "Qwen3-0.6B/config.json", "Qwen3-0.6B/generation_config.json",
                 "Qwen3-0.6B/tokenizer.json", "Qwen3-0.6B/vocab.json",
                 "Qwen3-0.6B/merges.txt", "Qwen3-0.6B/tokenizer_config.json"):
        assert (d / name).is_file(), name
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["model"] == "FunASRNano"
    assert cfg["audio_encoder_conf"]["kernel_size"] == 11
    assert (cfg["frontend_conf"]["lfr_m"], cfg["frontend_conf"]["lfr_n"]) == (7, 6)
    assert cfg["audio_adaptor_conf"]["use_low_frame_rate"] is True
    assert "dither" not in cfg["frontend_conf"] and "ctc_vocab_size" not in cfg  # as official
    qwen = json.loads((d / "Qwen3-0.6B/config.json").read_text())
    assert qwen["vocab_size"] == 151936 and qwen["tie_word_embeddings"] is True
    meta = json.loads((d / "configuration.json").read_text())["file_path_metas"]
    assert meta["init_param"] == "model.pt" and meta["llm_conf"]["init_param_path"] == "Qwen3-0.6B"

    state = _state(d)
    want = {k: s for k, s in mrm.reference_shapes(d).items() if not mrm.is_ctc_key(k)}
    assert {k: v.shape for k, v in state.items()} == want
    assert {v.dtype for v in state.values()} == {torch.bfloat16}
    assert torch.equal(state["llm.lm_head.weight"], state["llm.model.embed_tokens.weight"])


def test_tokenizer_special_ids(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(Path(tiny_model_dir) / "Qwen3-0.6B"))
    assert {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_IDS} == SPECIAL_IDS


def test_seeded_and_deterministic(tiny_model_dir):
    """The cached file (built in some earlier process) is reproduced exactly from its seed."""
    seed = int(Path(tiny_model_dir).name.split("-")[1])  # cache name: tiny-<seed>-v<N>-<hash>
    state = _state(tiny_model_dir)
    shapes = {k: v.shape for k, v in state.items()}
    again = mrm.random_state_dict(shapes, seed)
    assert all(torch.equal(state[k], again[k]) for k in state)
    other = mrm.random_state_dict(shapes, seed + 1)
    assert not torch.equal(state["llm.model.norm.weight"], other["llm.model.norm.weight"])


def test_automodel_loads_every_tensor(tiny_model_dir, tiny_reference):
    """funasr skips shape-mismatched tensors silently (ignore_init_mismatch): compare values."""
    loaded = tiny_reference.model.state_dict()
    state = _state(tiny_model_dir)
    assert set(loaded) == set(state)  # CTC branch disabled: no ctc keys left on the model
    for k, v in state.items():
        assert torch.equal(loaded[k].float(), v.float()), k
    assert tiny_reference.model.ctc_decoder is None


def test_automodel_transcribes(tiny_reference, speech_dir):
    from tests.reference import reference_first_logits, reference_transcribe

    paths = [speech_dir / ZH, speech_dir / EN]
    res = reference_transcribe(tiny_reference, paths, max_length=32)
    assert [r["key"] for r in res] == ["funasr_sample", "lhotse_ljspeech_LJ002-0020"]
    assert all(r["text"] for r in res) and res[0]["text"] != res[1]["text"]
    assert reference_transcribe(tiny_reference, paths, max_length=32) == res  # dither is 0
    # generate(batch_size=2) really batches on CPU: the batch path's dicts have no "label".
    batched = reference_transcribe(tiny_reference, paths, batch_size=2, max_length=32)
    assert all("label" not in r for r in batched)
    # Non-degenerate random LLM: a clear winner for the first token.
    top2 = reference_first_logits(tiny_reference, paths[0]).topk(2).values
    assert float(top2[0] - top2[1]) > 1e-3


def test_ctc_model_keeps_its_ctc_branch(tiny_ctc_model_dir, speech_dir):
    from tests.reference import (build_reference, reference_ctc_logprobs, reference_encoder,
                                 reference_lfr, reference_transcribe)

    state = _state(tiny_ctc_model_dir)
    ctc = [k for k in state if mrm.is_ctc_key(k)]
    assert len(ctc) == 4 + 16 * 2 + 2  # tiny ctc_decoder has 2 blocks (full: 5 -> 86)
    auto = build_reference(tiny_ctc_model_dir)
    assert auto.model.ctc_decoder is not None
    enc = reference_encoder(auto, reference_lfr(auto, speech_dir / ZH))
    logp = reference_ctc_logprobs(auto, enc)
    assert logp.shape == (enc.shape[0], mrm.ctc_vocab_size())
    assert torch.allclose(logp.exp().sum(-1), torch.ones(enc.shape[0]), atol=1e-4)
    # The reference's CTC timestamps use torchaudio's forced_align. The PyPI torchaudio wheel
    # does not load with torch 2.13, and without it generate() raises for any model with CTC
    # weights (the README's finding; our engine aligns with its own Viterbi, test_engine).
    try:
        import torchaudio  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="torchaudio"):
            reference_transcribe(auto, [speech_dir / ZH], max_length=16)
    else:
        res = reference_transcribe(auto, [speech_dir / ZH], max_length=16)[0]
        assert "timestamps" in res and "ctc_text" in res


def test_reference_ignores_a_reregistered_class(tiny_model_dir):
    """A later @tables.register("model_classes", "FunASRNano") (remote code, our model.py)
    must not change what build_reference builds, and is left registered afterwards."""
    from funasr.register import tables

    from tests.reference import BUILTIN_FUNASR_NANO, build_reference

    class Impostor(BUILTIN_FUNASR_NANO):
        pass

    before = tables.model_classes["FunASRNano"]
    tables.model_classes["FunASRNano"] = Impostor
    try:
        auto = build_reference(tiny_model_dir)
        assert type(auto.model) is BUILTIN_FUNASR_NANO
        assert tables.model_classes["FunASRNano"] is Impostor
    finally:
        tables.model_classes["FunASRNano"] = before


def test_reference_rope_frequencies_are_bf16_rounded(tiny_reference):
    """The LLM is built, cast to bf16 (buffers included) and later upcast: the reference's
    RoPE inv_freq is bf16(1/theta^(2i/d)), which an engine must reproduce for parity."""
    llm = tiny_reference.model.llm
    d, theta = llm.config.head_dim, llm.config.rope_parameters["rope_theta"]
    exact = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d)
    inv_freq = llm.model.rotary_emb.inv_freq
    assert inv_freq.dtype == torch.float32
    assert torch.equal(inv_freq, exact.bfloat16().float()) and not torch.equal(inv_freq, exact)
