#!/usr/bin/env python3
"""A Fun-ASR-Nano checkpoint as ONNX in the layout of sherpa-onnx's Fun-ASR-Nano runtime
(``sherpa_onnx.OfflineRecognizer.from_funasr_nano``), and the check that the export is faithful.

    python -m bench.sherpa_export --model-dir DIR --out DIR [--int8 DIR]
    python -m bench.sherpa_export --model-dir DIR --out DIR --check WAV   # encoder and texts

The layout, as sherpa-onnx 2.0.1's C++ runtime reads it (its sdist, csrc/offline-funasr-nano-
model.cc and offline-recognizer-funasr-nano-impl.cc):
  encoder_adaptor.onnx  (1, T, 560) LFR features -> (1, N, llm_dim): every output row becomes an
                        audio token of the prompt. Metadata lfr_window_size, lfr_window_shift,
                        llm_dim. The runtime computes the features itself: Kaldi fbank (80 bins,
                        hamming, snip_edges false, mel banks up to Nyquist - 400 Hz, no dither,
                        samples x 32768), then LFR 7/6 *without* the m//2 frames of left padding
                        that funasr's (and our) LFR adds (sherpa_features).
  embedding.onnx        (1, S) int64 ids -> (1, S, hidden).
  llm.onnx (+llm.data)  inputs_embeds (1, S, hidden) f32, attention_mask (1, past + S) int64,
                        cache_position (S,) int64, then cache_key_i, cache_value_i
                        (1, max_total_len, kv_heads, head_dim) for every layer; outputs logits
                        (1, S', vocab) (the runtime reads the last row) and key_delta_i,
                        value_delta_i (1, S, kv_heads, head_dim): the new positions' keys and
                        values, which the runtime copies into its cache at cache_position.
                        Metadata: model_type containing "kv_delta", num_layers, max_total_len,
                        vocab_size, hidden_size. External weights must be one file, llm.data.
  Qwen3-0.6B/           tokenizer.json, vocab.json, merges.txt (the runtime's own BPE).
It builds the ChatML prompt as ours does (system prompt, "语音转写：", the audio rows, the
assistant turn), decodes one stream at a time (batch 1), greedy when temperature <= 1e-6, and
stops at <|endoftext|> or <|im_end|>. It writes the first generated token at position prompt + 1
(column ``prompt`` stays empty and masked), so its RoPE positions are one higher than ours.

Our export (written here, from the engine's own modules, not from sherpa-onnx's scripts):
  * encoder + adaptor: engine.encoder / engine.adaptor with the checkpoint's weights in fp32,
    every block as the engine runs it (the first block's feed-forward included: an earlier
    export by others skipped it); the FSMN memory as the depthwise Conv1d it is (the engine's
    shifted sums are the same products); the output cut to the first low_frame_rate_length(T)
    rows, the audio tokens ours gives the decoder (model.py ``prepare``).
  * LLM: our Qwen3 layers (RMSNorm, q/k norm, RoPE with the engine's frequencies, GQA, SwiGLU),
    keys and values attended as cache[:past] + the new ones; logits for the last position only
    (the runtime reads no other). ``ban``: the logits of <|im_end|> and <|endoftext|> are -inf,
    so the runtime always decodes max_new_tokens tokens, as ours does with ``ignore_eos`` (which
    bans the same two): the benchmark's like-for-like token count.
  * int8: onnxruntime's quantize_dynamic, as sherpa-onnx's published Fun-ASR-Nano scripts do:
    encoder MatMuls QUInt8; LLM QInt8 per channel, symmetric; embedding table (Gather) QInt8.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

EXPORT_VERSION = 1          # bump when the graphs change: cached exports are then rebuilt
MAX_TOTAL_LEN = 512         # KV capacity (prompt + audio + tokens), sherpa-onnx's scripts' default
OPSET = 17
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json")
FILES = {"fp32": ("encoder_adaptor.onnx", "llm.onnx", "embedding.onnx"),
         "int8": ("encoder_adaptor.int8.onnx", "llm.int8.onnx", "embedding.int8.onnx")}


# =============================================================================== our modules
def plain_model(model_dir: Path):
    """The checkpoint in our engine's module classes, fp32 weights, no CPU kernels packed (so
    every op is a plain torch op the ONNX exporter knows)."""
    import model as ours
    from engine.checkpoint import load_state_dict, model_files, read_config
    cfg = read_config(model_dir)
    files = model_files(model_dir, cfg)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    cfg["llm_conf"] = {**(cfg.get("llm_conf") or {}), "init_param_path": str(files["llm_dir"])}
    m = ours.FunASRNano(**cfg, _materialize=False, _ctc_vocab_path=str(files["ctc_vocab"]))
    state = load_state_dict(files["weights"])
    keep = ("audio_encoder.", "audio_adaptor.", "llm.")
    params = {k: v.float() for k, v in state.items() if k.startswith(keep)}
    m.load_state_dict(params, strict=False, assign=True)
    m.llm.tie_weights()
    m.eval()
    torch.set_grad_enabled(False)
    return m, files


def _fsmn_conv(self, v):
    """The FSMN memory as a depthwise Conv1d over time (the engine's fsmn() computes the same
    products as shifted sums, which the exporter would write as 11 slices and adds)."""
    x = F.pad(v.transpose(1, 2), self.padding)
    return F.conv1d(x, self.fsmn_block.weight, groups=v.shape[-1]).transpose(1, 2)


def lfr_tokens(t):
    """low_frame_rate_length (engine.adaptor) on a traced length: the audio rows the LLM sees."""
    n = 1 + (t - 1) // 2
    n = 1 + (n - 1) // 2
    return (n - 1) // 2 + 1


class EncoderAdaptor(nn.Module):
    """(1, T, 560) -> the audio tokens (1, N, llm_dim), as model.py prepare() makes them."""

    def __init__(self, m):
        super().__init__()
        self.encoder, self.adaptor = m.audio_encoder, m.audio_adaptor
        self.low_frame_rate = m.use_low_frame_rate
        for mod in self.encoder.modules():
            if hasattr(mod, "fsmn_block"):
                mod.fsmn = types.MethodType(_fsmn_conv, mod)

    def forward(self, x):
        t = torch._shape_as_tensor(x)[1:2]
        enc, lens = self.encoder(x, t)
        out, _ = self.adaptor(enc, lens)
        if not self.low_frame_rate:
            return out
        return out.index_select(1, torch.arange(lfr_tokens(t)[0]))


def _rms(x, w, eps):
    """RMSNorm as the engine's (HF's) formula, in ops the exporter knows (aten::rms_norm not)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


class KvDeltaLLM(nn.Module):
    """Our Qwen3 decoder with sherpa-onnx's KV-delta interface (see the module docstring)."""

    def __init__(self, llm, banned=()):
        super().__init__()
        self.llm, self.cfg = llm, llm.config
        # the engine's RoPE frequencies (rounded through the checkpoint's dtype, as it does)
        self.register_buffer("inv_freq", llm._inv_freq(torch.device("cpu")).clone())
        ban = torch.zeros(self.cfg.vocab_size)
        ban[list(banned)] = float("-inf")
        self.register_buffer("ban", ban)

    def forward(self, x, attention_mask, cache_position, *cache):
        cfg = self.cfg
        h, kv, d, eps = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, \
            cfg.rms_norm_eps
        s = x.shape[1]
        freqs = cache_position.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        past = torch.arange(cache_position[0])  # the cache columns already written
        keys = torch.arange(attention_mask.shape[1])
        allowed = (keys[None, :] <= cache_position[:, None]) & (attention_mask[0] != 0)
        mask = allowed[None, None]
        deltas = []
        for i, layer in enumerate(self.llm.model.layers):
            a = layer.self_attn
            y = _rms(x, layer.input_layernorm.weight, eps)
            q = _rms(a.q_proj(y).view(1, s, h, d), a.q_norm.weight, eps).transpose(1, 2)
            k = _rms(a.k_proj(y).view(1, s, kv, d), a.k_norm.weight, eps).transpose(1, 2)
            v = a.v_proj(y).view(1, s, kv, d).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            deltas += [k.transpose(1, 2), v.transpose(1, 2)]
            kk = torch.cat([cache[2 * i].index_select(1, past).transpose(1, 2), k], dim=2)
            vv = torch.cat([cache[2 * i + 1].index_select(1, past).transpose(1, 2), v], dim=2)
            n = kk.shape[2]  # grouped-query: query head j reads KV head j // (h // kv)
            kk = kk[:, :, None].expand(1, kv, h // kv, n, d).reshape(1, h, n, d)
            vv = vv[:, :, None].expand(1, kv, h // kv, n, d).reshape(1, h, n, d)
            att = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
            x = x + a.o_proj(att.transpose(1, 2).reshape(1, s, h * d))
            x = x + layer.mlp(_rms(x, layer.post_attention_layernorm.weight, eps))
        last = _rms(x[:, -1:], self.llm.model.norm.weight, eps)
        return (self.llm.lm_head(last) + self.ban, *deltas)


def _rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Embedding(nn.Module):
    def __init__(self, llm):
        super().__init__()
        self.table = llm.model.embed_tokens

    def forward(self, ids):
        return self.table(ids)


# =============================================================================== writing
def _set_meta(path: Path, meta: dict, data_file: str | None = None) -> None:
    """Metadata into an exported file; with ``data_file`` its weights are rewritten into that
    one external file beside it (the runtime looks for exactly <name>.data)."""
    import onnx
    m = onnx.load(str(path), load_external_data=True)
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=str(k), value=str(v))
    if data_file:
        for f in path.parent.iterdir():  # the exporter's one-file-per-tensor data
            if f != path and f.suffix not in (".onnx", ".json") and f.is_file():
                f.unlink()
        onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_file, size_threshold=1024)
    else:
        onnx.save_model(m, str(path))


def _export(module, args, path: Path, names_in, names_out, axes) -> None:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(module, args, str(path), input_names=names_in, output_names=names_out,
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True,
                          dynamo=False)


def export_fp32(model_dir: Path, out: Path, log=print) -> Path:
    """encoder_adaptor.onnx, embedding.onnx, llm.onnx + llm.data and the tokenizer in ``out``
    (written into a temp folder, renamed when complete)."""
    m, files = plain_model(model_dir)
    cfg = m.llm.config
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "llm").mkdir(parents=True)
    t0 = time.perf_counter()
    fe = m.frontend
    x = torch.randn(1, 61, fe.output_size())
    _export(EncoderAdaptor(m), (x,), tmp / FILES["fp32"][0], ["x"], ["encoder_out"],
            {"x": {1: "T"}, "encoder_out": {1: "N"}})
    _set_meta(tmp / FILES["fp32"][0], {
        "model_type": "funasr_nano_encoder_adaptor", "lfr_window_size": fe.lfr_m,
        "lfr_window_shift": fe.lfr_n, "llm_dim": cfg.hidden_size, "normalize_samples": 0,
        "exporter": f"bench/sherpa_export.py v{EXPORT_VERSION}"})
    log(f"[sherpa] encoder_adaptor.onnx written ({time.perf_counter() - t0:.0f} s)")
    ids = torch.tensor([[1, 2, 3]])
    _export(Embedding(m.llm), (ids,), tmp / FILES["fp32"][2], ["input_ids"], ["inputs_embeds"],
            {"input_ids": {0: "B", 1: "S"}, "inputs_embeds": {0: "B", 1: "S"}})
    _set_meta(tmp / FILES["fp32"][2], {"hidden_size": cfg.hidden_size})
    log(f"[sherpa] embedding.onnx written ({time.perf_counter() - t0:.0f} s)")
    tok = m.tokenizer
    banned = (tok.im_end, tok.endoftext)
    kv, d, layers = cfg.num_key_value_heads, cfg.head_dim, cfg.num_hidden_layers
    s, p = 4, 3
    args = (torch.randn(1, s, cfg.hidden_size), torch.ones(1, p + s, dtype=torch.int64),
            torch.arange(p, p + s), *[torch.zeros(1, MAX_TOTAL_LEN, kv, d)] * (2 * layers))
    names_in = ["inputs_embeds", "attention_mask", "cache_position"]
    names_out = ["logits"]
    for i in range(layers):
        names_in += [f"cache_key_{i}", f"cache_value_{i}"]
        names_out += [f"key_delta_{i}", f"value_delta_{i}"]
    axes = {"inputs_embeds": {1: "S"}, "attention_mask": {1: "L"}, "cache_position": {0: "S"}}
    axes.update({n: {1: "S"} for n in names_out[1:]})
    llm_path = tmp / "llm" / FILES["fp32"][1]  # its own folder: one file per tensor at first
    _export(KvDeltaLLM(m.llm, banned), args, llm_path, names_in, names_out, axes)
    del m
    _set_meta(llm_path, {
        "model_type": "qwen3_kv_delta", "num_layers": layers, "max_total_len": MAX_TOTAL_LEN,
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "num_kv_heads": kv,
        "head_dim": d, "quantization_type": "fp32", "banned_ids": ",".join(map(str, banned)),
        "exporter": f"bench/sherpa_export.py v{EXPORT_VERSION}"}, data_file="llm.data")
    for f in (llm_path, llm_path.with_suffix(".data")):
        f.rename(tmp / f.name)
    (tmp / "llm").rmdir()
    log(f"[sherpa] llm.onnx + llm.data written ({time.perf_counter() - t0:.0f} s)")
    _copy_tokenizer(files["llm_dir"], tmp)
    _done(tmp, model_dir, "fp32")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def export_int8(fp32: Path, out: Path, log=print) -> Path:
    """The fp32 export quantized as sherpa-onnx's scripts do (module docstring)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    enc, llm, emb = FILES["fp32"]
    q_enc, q_llm, q_emb = FILES["int8"]
    quantize_dynamic(str(fp32 / enc), str(tmp / q_enc), op_types_to_quantize=["MatMul"],
                     weight_type=QuantType.QUInt8)
    quantize_dynamic(str(fp32 / emb), str(tmp / q_emb), op_types_to_quantize=["Gather"],
                     weight_type=QuantType.QInt8)
    quantize_dynamic(str(fp32 / llm), str(tmp / q_llm), weight_type=QuantType.QInt8,
                     per_channel=True, reduce_range=False,
                     extra_options={"WeightSymmetric": True})
    for name, src in ((q_enc, enc), (q_llm, llm), (q_emb, emb)):  # quantize_dynamic drops them
        import onnx
        meta = {p.key: p.value for p in onnx.load(str(fp32 / src),
                                                  load_external_data=False).metadata_props}
        if name == q_llm:
            meta["quantization_type"] = "int8"
        _set_meta(tmp / name, meta)
    log(f"[sherpa] int8 export written ({time.perf_counter() - t0:.0f} s)")
    shutil.copytree(fp32 / "Qwen3-0.6B", tmp / "Qwen3-0.6B")
    _done(tmp, Path(json.loads((fp32 / "export.json").read_text())["model_dir"]), "int8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _copy_tokenizer(src: Path, out: Path) -> None:
    (out / "Qwen3-0.6B").mkdir()
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, out / "Qwen3-0.6B" / name)


def _done(folder: Path, model_dir: Path, mode: str) -> None:
    (folder / "export.json").write_text(json.dumps(
        {"exporter_version": EXPORT_VERSION, "model_dir": str(model_dir), "mode": mode,
         "max_total_len": MAX_TOTAL_LEN, "files": FILES[mode]}, indent=1))


def complete(folder: Path, mode: str) -> bool:
    """An export of this exporter version is there (export.json is written last)."""
    try:
        meta = json.loads((folder / "export.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("exporter_version") == EXPORT_VERSION and all(
        (folder / f).is_file() for f in FILES[mode])


def ensure(model_dir: Path, root: Path, modes, log=print) -> dict[str, Path]:
    """{mode: export folder} for fp32 / int8 under ``root`` (one folder per checkpoint), each
    built only when missing (int8 from the fp32 export)."""
    base = root / model_dir.name
    out = {}
    for mode in ("fp32", "int8"):
        need = mode in modes or (mode == "fp32" and "int8" in modes
                                 and not complete(base / "int8", "int8"))
        if not need:
            continue
        folder = base / mode
        if not complete(folder, mode):
            log(f"[sherpa] exporting {model_dir.name} ({mode}) to {folder} ...")
            if mode == "fp32":
                export_fp32(model_dir, folder, log)
            else:
                export_int8(base / "fp32", folder, log)
        out[mode] = folder
    return {m: out[m] for m in modes}


def recognizer_args(folder: Path, mode: str) -> dict:
    """Keyword arguments of OfflineRecognizer.from_funasr_nano for an export folder."""
    enc, llm, emb = FILES[mode]
    return {"encoder_adaptor": str(folder / enc), "llm": str(folder / llm),
            "embedding": str(folder / emb), "tokenizer": str(folder / "Qwen3-0.6B"),
            "user_prompt": "语音转写：",  # ours (engine/prompt.py); the Python default has ':'
            "temperature": 1e-6}       # greedy (its sampler's threshold)


# =============================================================================== the check
def sherpa_features(wave, fe):
    """The features sherpa-onnx's runtime computes, (1, T, 560): Kaldi fbank as ours but with
    snip_edges false and the mel banks' upper edge at Nyquist - 400 Hz (kaldi-native-fbank's
    default, which funasr and we set to Nyquist), then LFR without the left padding. (Found by
    feeding its runtime a probe graph whose output token encodes the sum of its audio rows.)"""
    import kaldi_native_fbank as knf
    import numpy as np
    opts = knf.FbankOptions()
    f = opts.frame_opts
    f.samp_freq, f.frame_length_ms, f.frame_shift_ms = float(fe.fs), fe.frame_length, \
        fe.frame_shift
    f.dither, f.snip_edges, f.window_type = 0.0, False, fe.window
    opts.mel_opts.num_bins, opts.mel_opts.high_freq = fe.n_mels, -400.0
    opts.energy_floor = 0.0
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(float(fe.fs), np.asarray(wave, dtype=np.float32) * 32768.0)
    fb.input_finished()
    feats = torch.from_numpy(np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)]))
    n = (feats.shape[0] - fe.lfr_m) // fe.lfr_n + 1
    idx = torch.arange(n)[:, None] * fe.lfr_n + torch.arange(fe.lfr_m)[None, :]
    return feats[idx].reshape(1, n, -1)


def onnx_greedy(folder: Path, feats, prefix, suffix, tokens: int, threads: int = 2,
                sherpa_positions: bool = False) -> list[int]:
    """Greedy decoding with the exported graphs run by onnxruntime (the cache kept here):
    ``feats`` (1, T, 560) through encoder_adaptor.onnx, the prompt through embedding.onnx,
    then llm.onnx. ``sherpa_positions``: as sherpa-onnx 2.0.1's loop does it, the first
    generated token goes to position prompt + 1 (cache column ``prompt`` left empty and masked)."""
    import numpy as np
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    enc, llm_f, emb_f = (ort.InferenceSession(str(folder / f), opts,
                                              providers=["CPUExecutionProvider"])
                         for f in FILES["fp32"])
    audio = enc.run(None, {"x": np.asarray(feats, dtype=np.float32)})[0]
    emb = lambda ids: emb_f.run(None, {"input_ids": np.array([ids])})[0]  # noqa: E731
    x = emb(list(prefix) + [0] * audio.shape[1] + list(suffix))
    x[0, len(prefix):len(prefix) + audio.shape[1]] = audio[0]
    meta = llm_f.get_modelmeta().custom_metadata_map
    layers, cap = int(meta["num_layers"]), int(meta["max_total_len"])
    shape = llm_f.get_inputs()[3].shape
    cache = [np.zeros((1, cap, shape[2], shape[3]), np.float32) for _ in range(2 * layers)]
    mask = np.zeros(cap, np.int64)
    out, pos = [], 0
    for step in range(tokens):
        s = x.shape[1]
        mask[pos:pos + s] = 1
        feed = {"inputs_embeds": x, "attention_mask": mask[None, :pos + s].copy(),
                "cache_position": np.arange(pos, pos + s)}
        for i in range(layers):
            feed[f"cache_key_{i}"], feed[f"cache_value_{i}"] = cache[2 * i], cache[2 * i + 1]
        res = llm_f.run(None, feed)
        for i in range(2 * layers):
            cache[i][:, pos:pos + s] = res[1 + i]
        out.append(int(res[0][0, -1].argmax()))
        pos += s + (1 if sherpa_positions and step == 0 else 0)
        x = emb([out[-1]])
    return out


def check(model_dir: Path, folder: Path, wave, tokens: int = 64, threads: int = 2) -> dict:
    """Faithfulness of an fp32 export on one clip, ``tokens`` greedy tokens (stop tokens banned,
    as the benchmark runs both sides):
      encoder: the ONNX encoder+adaptor (onnxruntime) against our engine's fp32 one on our own
        features: the largest |difference| and that over the largest |value|;
      text: sherpa-onnx's text (its runtime, its front end) against ours (transcribe);
      graphs_equal_ours: the exported graphs run by onnxruntime on our features give our tokens;
      runtime_equals_graphs: the same graphs on sherpa-onnx's features with its decode
        positions (onnx_greedy) give sherpa-onnx's text: what is left between the two texts is
        its front end and its positions, not the export."""
    import numpy as np
    import sherpa_onnx

    import model as ours
    from engine.adaptor import low_frame_rate_length
    from engine.batching import greedy_generate
    torch.set_num_threads(threads)
    asr = ours.FunASRNano.from_pretrained(str(model_dir), device="cpu", dtype="fp32")
    tok = asr.tokenizer
    prefix, suffix = asr.prompt_ids()
    res = {"clip_seconds": round(len(wave) / 16000, 2), "tokens": tokens}
    with torch.inference_mode():
        feats = asr.frontend(wave)[None]
        enc, lens = asr.audio_encoder(feats, torch.tensor([feats.shape[1]]))
        ref, _ = asr.audio_adaptor(enc, lens)
        ref = ref[0, :low_frame_rate_length(feats.shape[1])]
        ours_ids = greedy_generate(asr.llm, [asr._embed_prompt(prefix, suffix, ref)],
                                   tok.im_end, tokens, ignore_eos=True, end_ids=(tok.endoftext,),
                                   stop_loops=False)[0].tokens
    ref = ref.numpy()
    ours_text = asr.transcribe([wave], max_new_tokens=tokens, ignore_eos=True)[0]["text"]
    sf = sherpa_features(wave, asr.frontend)
    del asr
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    got = ort.InferenceSession(str(folder / FILES["fp32"][0]), opts, providers=[
        "CPUExecutionProvider"]).run(None, {"x": feats.numpy()})[0][0]
    diff = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
    res["encoder"] = {"rows": list(ref.shape), "onnx_rows": list(got.shape),
                      "max_abs_diff": diff, "max_abs": float(np.abs(ref).max()),
                      "rel_diff": diff / float(np.abs(ref).max())}
    graph_ids = onnx_greedy(folder, feats, prefix, suffix, tokens, threads)
    res["graphs_equal_ours"] = graph_ids == list(ours_ids)
    emulated = onnx_greedy(folder, sf, prefix, suffix, tokens, threads, sherpa_positions=True)
    rec = sherpa_onnx.OfflineRecognizer.from_funasr_nano(
        **recognizer_args(folder, "fp32"), num_threads=threads, max_new_tokens=tokens)
    st = rec.create_stream()
    st.accept_waveform(16000, np.asarray(wave, dtype=np.float32))
    rec.decode_stream(st)
    peer = st.result
    res["text"] = {"ours": ours_text, "sherpa": peer.text, "equal": ours_text == peer.text,
                   "sherpa_tokens": len(peer.tokens)}
    # token by token: sherpa-onnx gives each token's text, the emulation ids
    res["runtime_equals_graphs"] = list(peer.tokens) == [tok.decode([i]) for i in emulated]
    res["first_differing_token"] = next(
        (i for i, (a, b) in enumerate(zip(peer.tokens, (tok.decode([t]) for t in ours_ids)))
         if a != b), None)
    return res


# =============================================================================== command line
def main(argv=None) -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--out", required=True, help="the fp32 export's folder")
    p.add_argument("--int8", help="also write the int8 export into this folder")
    p.add_argument("--check", metavar="WAV", help="check the fp32 export on this clip instead")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    model_dir, out = Path(args.model_dir).resolve(), Path(args.out)
    if args.check:
        from engine.audio import load_audio
        print(json.dumps(check(model_dir, out, load_audio(args.check, 16000), args.tokens,
                               args.threads), indent=1, ensure_ascii=False))
        return
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    if not complete(out, "fp32"):
        export_fp32(model_dir, out, log)
    if args.int8 and not complete(Path(args.int8), "int8"):
        export_int8(out, Path(args.int8), log)


if __name__ == "__main__":
    main()
