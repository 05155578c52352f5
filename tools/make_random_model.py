#!/usr/bin/env python3
"""Write a random-weight Fun-ASR-(MLT-)Nano-2512 model directory in the official layout.

    python tools/make_random_model.py --out DIR --size tiny|full [--seed N] [--ctc] [--shapes S]

DIR gets what the official model directory has (docs: model-spec.md section 1):
  model.pt              torch.save({"state_dict": {...}}), every tensor bfloat16, with
                        llm.lm_head.weight stored and equal to llm.model.embed_tokens.weight
  config.yaml           the official fields (spec section 2), shrunk for --size tiny
  configuration.json    ModelScope pointer file that makes funasr's AutoModel resolve the paths
  multilingual.tiktoken copy of the repo's (Whisper's) rank file, for the CTC tokenizer
  Qwen3-0.6B/           config.json, generation_config.json and the 4 tokenizer files

Tensor names and shapes come from funasr 1.4.16's own FunASRNano class (built on the meta
device, so no memory or init time is spent on it); the values are ours (see `init_tensor`).
Without --ctc no ctc_decoder.* / ctc.* tensors are saved (as in the MLT checkpoint and the HF
Nano one: funasr then disables the CTC branch); with --ctc they are (as in the ModelScope Nano
checkpoint). full: 1261 tensors, 1,970,748,608 bytes of data (1347 with --ctc).

Random init (fp32 draws, then rounded to bf16), one torch.Generator per tensor seeded from
(seed, tensor name), so a tensor does not depend on the others or on torch's default init:
  * every matrix / conv kernel: N(0, 1/fan_in), i.e. variance-preserving, so activations keep
    an O(1) scale through all 70 encoder blocks, the adaptor and the LLM;
  * LayerNorm / RMSNorm weights 1 + N(0, 0.1^2); biases N(0, 0.02^2) (non-trivial values, so an
    engine that skips a norm weight or a bias is caught by parity tests).
The LLM gets a few deliberate changes so that greedy decoding is not degenerate. With the
stock std 0.02 the logits are nearly flat; and with tied embeddings the final hidden state
keeps a component along the input token's own embedding, so greedy decoding repeats the last
token forever (measured: runs of 40-60 identical tokens). So:
  * embeddings (= lm_head) N(0, 0.5^2): logits get std ~0.5*sqrt(hidden) (16 full, 4 tiny), so
    the typical top-1/top-2 gap (~0.2 std) is far above fp32 rounding noise;
  * final norm weight with random signs, (+-1)(1 + N(0, 0.1^2)): the self-logit term
    sum_i w_i e_i^2 then has zero mean, which removes the repeat-the-input attractor;
  * o_proj / down_proj std x RESIDUAL_GAIN*EMBED_STD (= 1): each layer adds about twice the
    embedding scale to the residual stream, so the context is mixed in;
  * q_norm / k_norm weights x QK_GAIN (= 2): sharper, position-dependent attention;
  * the <|im_end|> embedding row x EOS_GAIN (= 2.5): greedy decoding then stops by itself
    (the "stop" path gets exercised and tests stay quick; max_new_tokens covers "length").
Measured with seed 0 on the 10 shared clips (greedy, 100 tokens max): every clip stops by
itself, after 5-85 tokens (tiny) / 2-63 (full); outputs differ between clips; no token
follows itself (one pair at full size); logits std 4.0 (tiny) / 16 (full); top-1/top-2 gap
median 0.5-3.5 (tiny) / 0.5-11 (full), smallest over all steps 0.003 (tiny) / 0.02 (full).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path

import torch
import yaml

from tools.fetch_assets import TOKENIZER_FILES, fetch_qwen3_tokenizer

TOOL_VERSION = 1  # bump whenever the output for a given (size, seed, ctc) changes
REPO = Path(__file__).resolve().parents[1]
TIKTOKEN = REPO / "multilingual.tiktoken"
EMBED_STD = 0.5
RESIDUAL_GAIN = 2.0
QK_GAIN = 2.0
EOS_GAIN = 2.5
IM_END = 151645
NUM_CTC_SPECIALS = 1679  # SenseVoiceTokenizer appends these after the tiktoken ranks

def _size(*, d_model: int, units: int, blocks: int, tp_blocks: int, ctc_layers: int,
          hidden: int, layers: int, heads: int, kv_heads: int, head_dim: int, inter: int) -> dict:
    """One size's dimensions: the encoder (and the adaptor's and CTC decoder's, which follow
    its width) and the Qwen3 decoder."""
    return {"encoder": dict(output_size=d_model, linear_units=units, num_blocks=blocks,
                            tp_blocks=tp_blocks),
            "adaptor_ffn": units,
            "ctc_decoder": dict(ffn_dim=units, llm_dim=d_model, n_layer=ctc_layers),
            "qwen3": dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                          num_key_value_heads=kv_heads, head_dim=head_dim,
                          intermediate_size=inter)}


SIZES = {
    "full": _size(d_model=512, units=2048, blocks=50, tp_blocks=20, ctc_layers=5,
                  hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, inter=3072),
    # Every dimension shrunk, but the same structure: encoders0 + encoders + tp_encoders,
    # GQA with 2 query heads per KV head, kernel 11, LFR 7/6, and the real vocab (151936) so
    # that the real Qwen3 tokenizer works. Heads: encoder 4, adaptor 8 (code default).
    "tiny": _size(d_model=64, units=128, blocks=3, tp_blocks=2, ctc_layers=2,
                  hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, inter=128),
}

CONFIGURATION_JSON = {
    "framework": "pytorch",
    "task": "auto-speech-recognition",
    "model": {"type": "funasr"},
    # funasr's download_from_ms turns these into absolute paths under the model dir
    # (add_file_root_path), which is what makes the relative `Qwen3-0.6B` in config.yaml work.
    "file_path_metas": {
        "init_param": "model.pt",
        "config": "config.yaml",
        "tokenizer_conf": {"init_param_path": "Qwen3-0.6B"},
        "llm_conf": {"init_param_path": "Qwen3-0.6B"},
        "dataset_conf": {"ctc_tokenizer_conf": {"vocab_path": "multilingual.tiktoken"}},
    },
}

GENERATION_CONFIG = {  # stock Qwen3-0.6B; funasr ignores it (the LLM is built with from_config)
    "bos_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
    "pad_token_id": 151643, "temperature": 0.6, "top_k": 20, "top_p": 0.95,
    "transformers_version": "4.51.0",
}


def qwen3_config(size: str) -> dict:
    """Stock Qwen3-0.6B config.json, with the size-dependent dims of SIZES[size]."""
    cfg = {
        "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
        "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
        "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
        "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000,
        "sliding_window": None, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False,
        "vocab_size": 151936,
    }
    cfg.update(SIZES[size]["qwen3"])
    cfg["max_window_layers"] = cfg["num_hidden_layers"]
    return cfg


def model_config(size: str, ctc_vocab_size: int | None = None) -> dict:
    """config.yaml as reconstructed in model-spec.md section 2 (same keys, same order)."""
    s = SIZES[size]
    return {
        "model": "FunASRNano",
        "model_conf": {"lsm_weight": 0.1, "length_normalized_loss": True},
        "audio_encoder": "SenseVoiceEncoderSmall",
        "audio_encoder_conf": {
            "output_size": s["encoder"]["output_size"], "attention_heads": 4,
            "linear_units": s["encoder"]["linear_units"],
            "num_blocks": s["encoder"]["num_blocks"], "tp_blocks": s["encoder"]["tp_blocks"],
            "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1,
            "input_layer": "pe", "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True, "kernel_size": 11, "sanm_shfit": 0,
            "selfattention_layer_type": "sanm", "freeze": True, "freeze_layer_num": -1,
            "feat_permute": True,
        },
        "llm": "Qwen3-0.6b",
        "llm_conf": {
            "hub": "hf", "freeze": True, "llm_dtype": "bf16", "init_param_path": "Qwen3-0.6B",
            "use_lora": False,
            "lora_conf": {"freeze_lora": True, "task_type": "CAUSAL_LM", "r": 16,
                          "lora_alpha": 32, "lora_dropout": 0.05, "bias": "none",
                          "target_modules": ["q_proj", "v_proj"], "init_param_path": ""},
        },
        "audio_adaptor": "Transformer",
        "audio_adaptor_conf": {
            "downsample_rate": 1, "use_low_frame_rate": True, "ffn_dim": s["adaptor_ffn"],
            "llm_dim": s["qwen3"]["hidden_size"], "encoder_dim": s["encoder"]["output_size"],
            "n_layer": 2, "freeze": True,
        },
        "ctc_decoder": "Transformer",
        "detach_ctc_decoder": True,
        "ctc_decoder_conf": {"downsample_rate": 1, "ffn_dim": s["ctc_decoder"]["ffn_dim"],
                             "llm_dim": s["ctc_decoder"]["llm_dim"],
                             "encoder_dim": s["encoder"]["output_size"],
                             "n_layer": s["ctc_decoder"]["n_layer"], "freeze": False},
        "ctc_weight": 1.0,
        "ctc_conf": {"dropout_rate": 0.0, "ctc_type": "builtin", "reduce": True,
                     "ignore_nan_grad": True},
        # The official file has no ctc_vocab_size (code default 60515, the size of the real
        # extended tiktoken + specials). Ours is only written with --ctc, sized to Whisper's
        # smaller rank file, or funasr would skip ctc.ctc_lo.* as a shape mismatch.
        **({"ctc_vocab_size": ctc_vocab_size} if ctc_vocab_size else {}),
        "frontend": "WavFrontend",
        # No dither key, as in the official file: WavFrontend's default dither is 1.0.
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25,
                          "frame_shift": 10, "lfr_m": 7, "lfr_n": 6, "cmvn_file": None},
        "train_conf": {
            "use_lora": "${llm_conf.use_lora}", "accum_grad": 1, "grad_clip": 5, "max_epoch": 2,
            "keep_nbest_models": 200, "log_interval": 100,
            "effective_save_name_excludes": ["llm."], "resume": True,
            "validate_interval": 2000, "save_checkpoint_interval": 2000, "avg_nbest_model": 100,
            "use_bf16": False, "use_deepspeed": True, "deepspeed_config": None,
            "save_init_model": False,
        },
        "optim": "adamw",
        "optim_conf": {"lr": 5.0e-06, "weight_decay": 0.0},
        "scheduler": "warmuplr",
        "scheduler_conf": {"warmup_steps": 2500},
        "dataset": "FunASR",
        "dataset_conf": {
            "index_ds": "FunASR", "batch_sampler": "BatchSampler", "batch_type": "token",
            "batch_size": 6000, "max_token_length": 3500, "shuffle": True, "sort_size": 1024,
            "batch_size_scale_ratio_max": 2, "num_workers": 4,
            "audio_adaptor_downsample_rate": "${audio_adaptor_conf.downsample_rate}",
            "audio_encoder_downsample_rate": 6, "data_split_num": 256,
            "batch_size_sample_max": 10, "retry": 2000, "batch_size_token_max": 6000,
            "max_source_length": 12000, "max_target_length": 2048, "min_source_length": 10,
            "batch_size_scale_threshold": 3000, "prompt_classes": "MultiContextPrompt",
            "prompt_conf": {"max_neg_hotwords_num": 0, "min_neg_hotwords_num": 0,
                            "use_hist": False, "use_one_pass_result": True,
                            "use_hotwords": True, "use_asr_hotwords": True,
                            "chinese_hotwords_list": None, "english_hotwords_list": None},
            "ctc_tokenizer": "SenseVoiceTokenizer", "ctc_target_normalize": True,
            "ctc_tokenizer_conf": {"vocab_path": None, "is_multilingual": True,
                                   "num_languages": 8749},
            "use_dynamic_output_ratio": 0.0,
        },
        "tokenizer": "HuggingfaceTokenizer",
        "tokenizer_conf": {"init_param_path": "${llm_conf.init_param_path}"},
        "enable_tf32": True,
        "debug": False,
        "train_data_set_list": None,
        "valid_data_set_list": None,
        "init_param": None,
        "output_dir": None,
    }


def ctc_vocab_size(tiktoken_path: Path = TIKTOKEN) -> int:
    with open(tiktoken_path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip()) + NUM_CTC_SPECIALS


def write_layout(out: Path, size: str, ctc: bool) -> None:
    """Everything but model.pt."""
    (out / "Qwen3-0.6B").mkdir(parents=True, exist_ok=True)
    tok = fetch_qwen3_tokenizer()
    for name in TOKENIZER_FILES:
        shutil.copyfile(tok / name, out / "Qwen3-0.6B" / name)
    dump = lambda obj: json.dumps(obj, indent=2, ensure_ascii=False) + "\n"  # noqa: E731
    (out / "Qwen3-0.6B/config.json").write_text(dump(qwen3_config(size)))
    (out / "Qwen3-0.6B/generation_config.json").write_text(dump(GENERATION_CONFIG))
    (out / "configuration.json").write_text(dump(CONFIGURATION_JSON))
    shutil.copyfile(TIKTOKEN, out / "multilingual.tiktoken")
    cfg = model_config(size, ctc_vocab_size(out / "multilingual.tiktoken") if ctc else None)
    with open(out / "config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False, allow_unicode=True, width=100)


def is_ctc_key(name: str) -> bool:
    return name.startswith(("ctc_decoder.", "ctc."))


def reference_shapes(model_dir: Path) -> dict[str, torch.Size]:
    """Names and shapes of funasr's FunASRNano state_dict for the config in model_dir.

    Builds the model the way AutoModel.build_model does (same kwargs: config.yaml with the
    paths configuration.json makes absolute, input_size from the frontend), but on the meta
    device: no memory, no init time. Uses the built-in class even if someone re-registered
    "FunASRNano" in funasr's tables.
    """
    from omegaconf import OmegaConf
    from funasr.models.fun_asr_nano.model import FunASRNano

    conf = OmegaConf.to_container(OmegaConf.load(model_dir / "config.yaml"), resolve=True)
    conf["llm_conf"]["init_param_path"] = str(model_dir / "Qwen3-0.6B")
    conf["tokenizer_conf"]["init_param_path"] = str(model_dir / "Qwen3-0.6B")
    conf["dataset_conf"]["ctc_tokenizer_conf"]["vocab_path"] = str(model_dir / "multilingual.tiktoken")
    f = conf["frontend_conf"]
    conf["input_size"] = f["n_mels"] * f["lfr_m"]
    with torch.device("meta"):
        model = FunASRNano(**copy.deepcopy(conf["model_conf"]), **conf)
    return {k: v.shape for k, v in model.state_dict().items()}


def engine_shapes(model_dir: Path) -> dict[str, torch.Size]:
    """The same names and shapes from this repository's FunASRNano (model.py), built from the
    same config on the meta device: for machines without funasr (bench/gpu_check.py on a bare
    GPU machine). tests/test_random_model.py checks that both give the same checkpoint."""
    from engine.checkpoint import model_files, read_config
    from model import FunASRNano

    cfg = read_config(model_dir)
    files = model_files(model_dir, cfg)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    cfg["llm_conf"] = {**cfg["llm_conf"], "init_param_path": str(files["llm_dir"])}
    model = FunASRNano(**cfg, _materialize=False, _ctc_vocab_path=str(files["ctc_vocab"]))
    return {k: v.shape for k, v in model.state_dict().items()}


def shapes_for(model_dir: Path, source: str = "auto") -> dict[str, torch.Size]:
    """``source``: "funasr" (the reference's class), "engine" (ours), or "auto" (funasr when
    it imports, else ours)."""
    if source == "auto":
        try:
            import funasr  # noqa: F401
            source = "funasr"
        except Exception:  # noqa: BLE001 - any import failure: build the shapes without it
            source = "engine"
    return reference_shapes(model_dir) if source == "funasr" else engine_shapes(model_dir)


def init_tensor(name: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """One random fp32 tensor; the scheme is described in the module docstring."""
    if name == "llm.model.embed_tokens.weight":
        t = torch.randn(shape, generator=gen) * EMBED_STD
        t[IM_END] *= EOS_GAIN
        return t
    if len(shape) == 1:
        noise = torch.randn(shape, generator=gen)
        # LayerNorm / RMSNorm gains (encoder "norm1", adaptor "norm2", Qwen3 "*layernorm",
        # "q_norm", "model.norm", ...) around 1; every other vector is a bias.
        if not (name.endswith(".weight") and "norm" in name.rsplit(".", 2)[-2]):
            return 0.02 * noise
        t = 1.0 + 0.1 * noise
        if name.endswith(("q_norm.weight", "k_norm.weight")):
            t *= QK_GAIN
        if name == "llm.model.norm.weight":
            t *= torch.randint(0, 2, shape, generator=gen) * 2 - 1
        return t
    fan_in = shape[1:].numel()
    std = fan_in ** -0.5
    if name.startswith("llm.") and name.endswith(("o_proj.weight", "down_proj.weight")):
        std *= RESIDUAL_GAIN * EMBED_STD
    return torch.randn(shape, generator=gen) * std


def random_state_dict(shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator()
    state = {}
    for name, shape in shapes.items():
        if name == "llm.lm_head.weight":
            continue  # tied: filled from the embedding below
        gen.manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        state[name] = init_tensor(name, shape, gen).to(torch.bfloat16)
    # The official file stores lm_head separately (its own storage, so torch.save writes
    # the bytes twice: 1.97 GB), bitwise equal to the embedding.
    state["llm.lm_head.weight"] = state["llm.model.embed_tokens.weight"].clone()
    return {name: state[name] for name in shapes}  # reference order


def make_random_model(out: str | Path, size: str = "tiny", seed: int = 0,
                      ctc: bool = False, shapes: str = "auto") -> Path:
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_layout(out, size, ctc)
    shapes = shapes_for(out, shapes)
    if not ctc:
        shapes = {k: v for k, v in shapes.items() if not is_ctc_key(k)}
    state = random_state_dict(shapes, seed)
    tmp = out / "model.pt.tmp"
    torch.save({"state_dict": state}, tmp)
    tmp.replace(out / "model.pt")  # atomic: a model.pt that exists is complete
    return out


def models_cache() -> Path:
    return Path(os.environ.get("FUNASR_NANO_MODELS") or Path.home() / ".cache/funasr-nano/models")


def cached_random_model(size: str = "tiny", seed: int = 0, ctc: bool = False) -> Path:
    """make_random_model into the cache, once per (tool version, size, seed, ctc).

    The key includes a hash of this file and fetch_assets.py, so editing the generator can
    never serve a stale directory. Built in a temp dir and renamed, so parallel test workers
    and interrupted runs never see a half-written model.
    """
    here = Path(__file__).resolve().parent
    src = hashlib.sha1()
    for name in ("make_random_model.py", "fetch_assets.py"):
        src.update((here / name).read_bytes())
    name = f"{size}{'-ctc' if ctc else ''}-{seed}-v{TOOL_VERSION}-{src.hexdigest()[:8]}"
    final = models_cache() / name
    if (final / "model.pt").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    try:
        make_random_model(tmp, size, seed, ctc)
        tmp.chmod(0o755)
        try:
            tmp.rename(final)
        except OSError:  # another process finished first
            if not (final / "model.pt").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def summary(out: Path) -> str:
    state = torch.load(out / "model.pt", map_location="cpu", mmap=True)["state_dict"]
    groups: dict[str, list[int]] = {}
    for k, v in state.items():
        g = groups.setdefault(k.split(".")[0], [0, 0])
        g[0] += 1
        g[1] += v.numel()
    lines = [f"{out}: {len(state)} tensors, "
             f"{sum(v.numel() for v in state.values()) * 2:,} bytes of bf16 data, "
             f"model.pt {os.path.getsize(out / 'model.pt'):,} bytes"]
    lines += [f"  {g:14s} {n:5d} tensors {p:>13,} params" for g, (n, p) in groups.items()]
    lines.append(f"  dtypes {sorted({str(v.dtype) for v in state.values()})}, lm_head == embed: "
                 f"{torch.equal(state['llm.lm_head.weight'], state['llm.model.embed_tokens.weight'])}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ctc", action="store_true", help="also save ctc_decoder.* and ctc.*")
    p.add_argument("--shapes", choices=("auto", "funasr", "engine"), default="auto",
                   help="tensor names and shapes from funasr's class or from model.py (the same "
                        "checkpoint; auto: funasr when it imports)")
    a = p.parse_args(argv)
    t0 = time.time()
    out = make_random_model(a.out, a.size, a.seed, a.ctc, a.shapes)
    print(summary(out))
    print(f"  size={a.size} seed={a.seed} ctc={a.ctc} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
