"""The reference implementation (funasr 1.4.16's AutoModel + FunASRNano), wrapped for parity tests.

Not a test module: tests import it (`from tests import reference as ref`).

    auto = build_reference(model_dir)                 # dither 0, warmed up (LLM already fp32)
    fb   = reference_fbank(auto, wav)                 # (T, 80)   float32
    lfr  = reference_lfr(auto, wav)                   # (T', 560) float32
    enc  = reference_encoder(auto, lfr)               # (T', D_enc)
    ada  = reference_adaptor(auto, enc)               # (T', D_llm), all frames (before ceil(T'/8))
    ctc  = reference_ctc_logprobs(auto, enc)          # (T', V_ctc), --ctc model dirs only
    ids  = reference_prompt(auto, wav)                # prompt ids, audio slot start and length
    lg   = reference_first_logits(auto, wav)          # (vocab,) logits of the 1st generated token
    res  = reference_transcribe(auto, [wav, ...])     # auto.generate(...) result dicts

Reference behaviour worth knowing (funasr 1.4.16):
  * Dither: WavFrontend defaults to dither=1.0 and config.yaml has no dither key. Passing
    `frontend_conf={"dither": 0.0}` to AutoModel works: download_from_ms deep-merges user
    kwargs over config.yaml before the frontend is built, and the kwargs snapshot taken at
    the end of __init__ (restored at every generate) already holds the dither-0 frontend.
    Setting `auto.kwargs["frontend"].dither = 0` afterwards does NOT stick: generate()
    restores kwargs["frontend"] from that snapshot (a deep copy made at construction).
    Without torchaudio, fbank runs in kaldi-native-fbank, whose dither RNG is not torch's,
    so dither 1.0 is not even reproducible with torch.manual_seed.
  * On CPU, build_model sets kwargs["batch_size"] = 1, but generate(batch_size=B) overrides it
    at run time: B > 1 inputs go through FunASRNano._inference_llm_batch (left padding,
    explicit position ids; result dicts have no "label" key) when the CTC branch is disabled,
    and one at a time (_inference_llm_ctc_sequential) when it is active.
  * The LLM is built in bf16 and upcast to fp32 in place by the first inference_llm call;
    before that, inputs_embeds (and so the audio rows) are bf16. build_reference warms up so
    every later call sees the fp32 LLM.
  * RoPE frequencies are bf16-rounded: FunASRNano builds the LLM and calls .to(bf16) (config
    llm_dtype), which also casts the rotary_emb.inv_freq buffer; the later .to(fp32) cannot
    restore the lost bits. So the reference rotates with bf16(1 / theta^(2i/d)), not the
    exact fp32 values (an engine with exact inv_freq is off by ~1e-3 relative in the logits
    even on the tiny model; with the rounded ones it matches to ~1e-6).
  * With CTC tensors present, every generate() also runs CTC forced alignment, which needs
    torchaudio (funasr.utils.torchaudio_compat raises ImportError otherwise): without
    torchaudio, the reference cannot transcribe with a --ctc model dir at all.
  * AutoModel calls torch.set_num_threads(ncpu) at build and at every generate (default 4);
    we pass the current thread count so the reference does not change it for the process.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math

import torch

import funasr  # noqa: F401  (imports every funasr module, which fills the registry)
from funasr.models.fun_asr_nano.model import FunASRNano as BUILTIN_FUNASR_NANO
from funasr.register import tables
from funasr.utils.load_utils import extract_fbank, load_audio_text_image_video

# A later `@tables.register("model_classes", "FunASRNano")` (the Fun-ASR repo's remote-code
# model.py, or a test double) replaces the registry entry; the class object imported above
# is always funasr's own.


def build_reference(model_dir, device: str = "cpu", stock_frontend: bool = False, **kwargs):
    """funasr AutoModel on model_dir with the built-in FunASRNano, dither 0, warmed up.
    ``stock_frontend``: no frontend_conf given, as a user's plain AutoModel(model=...) is built
    (WavFrontend's default dither=1.0)."""
    from funasr import AutoModel

    registered = tables.model_classes.get("FunASRNano")
    tables.model_classes["FunASRNano"] = BUILTIN_FUNASR_NANO
    log = io.StringIO()  # funasr print()s one "miss key in ckpt" line per absent CTC tensor
    try:
        with contextlib.redirect_stdout(log):
            auto = AutoModel(
                model=str(model_dir),
                device=device,
                disable_pbar=True,
                disable_update=True,
                log_level="WARNING",
                ncpu=torch.get_num_threads(),
                **({} if stock_frontend else {"frontend_conf": {"dither": 0.0}}),
                **kwargs,
            )
    finally:
        if registered is None:
            tables.model_classes.pop("FunASRNano", None)
        else:
            tables.model_classes["FunASRNano"] = registered
    auto.build_log = log.getvalue()
    assert type(auto.model) is BUILTIN_FUNASR_NANO, type(auto.model)
    assert stock_frontend or auto.kwargs["frontend"].dither == 0.0
    # Warm-up: the first inference_llm casts the LLM to fp32 for good (spec 7.3). One second
    # of a 440 Hz tone as a tensor input (the "!!" path), one new token.
    tone = 0.1 * torch.sin(2 * math.pi * 440 * torch.arange(16000) / 16000)
    try:
        auto.generate(input=[tone], max_length=1)
    except ImportError:
        # CTC model dir without torchaudio: forced_align fails after the LLM has run (and
        # been upcast); only the parts below generate() can be used then.
        if auto.model.ctc_decoder is None:
            raise
    assert next(auto.model.llm.parameters()).dtype == torch.float32
    return auto


def _kwargs(auto) -> dict:
    # generate() merges its runtime options into auto.kwargs and leaves them there until the
    # next call resets them; start from the constructor's configuration.
    auto._reset_runtime_configs()
    return auto.kwargs


def _load(auto, wav_path):
    frontend = auto.kwargs["frontend"]
    return load_audio_text_image_video(str(wav_path), fs=frontend.fs)


def reference_fbank(auto, wav_path) -> torch.Tensor:
    """(T, 80) Kaldi fbank: WavFrontend.forward itself, with LFR switched off (no CMVN here)."""
    frontend = auto.kwargs["frontend"]
    assert frontend.cmvn is None
    no_lfr = copy.copy(frontend)  # shallow copy: the model's own frontend is untouched
    no_lfr.lfr_m = no_lfr.lfr_n = 1
    feats, _ = extract_fbank(_load(auto, wav_path), data_type="sound", frontend=no_lfr)
    return feats[0]


def reference_lfr(auto, wav_path) -> torch.Tensor:
    """(T', 560) features as FunASRNano.data_load_speech computes them (fbank + LFR 7/6)."""
    feats, _ = extract_fbank(_load(auto, wav_path), data_type="sound",
                             frontend=auto.kwargs["frontend"], is_final=True)
    return feats[0]


@torch.no_grad()
def reference_encoder(auto, lfr: torch.Tensor) -> torch.Tensor:
    """(T', D_enc) audio encoder output for one (T', 560) feature matrix."""
    x = lfr.to(torch.float32)[None].clone()  # the encoder scales its input in place
    lens = torch.tensor([x.shape[1]], dtype=torch.int32)
    out, _ = auto.model.encode(x, lens)
    return out[0]


@torch.no_grad()
def reference_adaptor(auto, enc: torch.Tensor) -> torch.Tensor:
    """(T', D_llm) adaptor output for all T' frames (the LLM gets the first ceil(T'/8))."""
    lens = torch.tensor([enc.shape[0]], dtype=torch.int32)
    out, _ = auto.model.audio_adaptor(enc[None].to(torch.float32), lens)
    return out[0]


@torch.no_grad()
def reference_ctc_logprobs(auto, enc: torch.Tensor) -> torch.Tensor:
    """(T', ctc_vocab) CTC log-probs (ctc_decoder on the encoder output, then ctc.log_softmax),
    as inference_llm computes them; only for a model dir with CTC tensors (--ctc)."""
    model = auto.model
    assert model.ctc_decoder is not None, "CTC branch disabled: the checkpoint has no CTC tensors"
    lens = torch.tensor([enc.shape[0]], dtype=torch.int32)
    out, _ = model.ctc_decoder(enc[None].to(torch.float32), lens)
    return model.ctc.log_softmax(out)[0]


def _prepare(auto, wav_path, language, itn, hotwords):
    model = auto.model
    kwargs = _kwargs(auto)
    prompt = model.get_prompt(list(hotwords), language, itn)
    chat = model.generate_chatml(prompt, str(wav_path))
    with torch.no_grad():
        return model.inference_prepare([chat], None, ["ref"], **kwargs)


def reference_prompt(auto, wav_path, language=None, itn=True, hotwords=()) -> dict:
    """The LLM input ids as the reference builds them: audio slots hold id 0."""
    _, _, batch, source_ids, _ = _prepare(auto, wav_path, language, itn, hotwords)
    return {
        "ids": source_ids[0].tolist(),
        "audio_start": int(batch["fbank_beg"][0, 0]),
        "audio_len": int(batch["fake_token_len"][0, 0]),
    }


@torch.no_grad()
def reference_first_logits(auto, wav_path, language=None, itn=True, hotwords=()) -> torch.Tensor:
    """(vocab,) fp32 logits of the first generated token, from the reference's own
    inference_prepare and the same llm.generate call inference_llm makes."""
    inputs_embeds, _, batch, _, _ = _prepare(auto, wav_path, language, itn, hotwords)
    llm = auto.model.llm
    out = llm.generate(
        inputs_embeds=inputs_embeds.to(torch.float32),
        attention_mask=batch.get("attention_mask"),
        max_new_tokens=1,
        pad_token_id=llm.config.pad_token_id or llm.config.eos_token_id,
        output_logits=True,
        return_dict_in_generate=True,
    )
    return out.logits[0][0].float()


def reference_transcribe(auto, paths, language=None, itn=True, hotwords=(), batch_size=1,
                         max_length=512) -> list[dict]:
    """auto.generate(...) on a list of paths; batch_size > 1 really batches (see above)."""
    return auto.generate(
        input=[str(p) for p in paths],
        batch_size=batch_size,
        language=language,
        itn=itn,
        hotwords=list(hotwords),  # a string would be ", ".join-ed character by character
        max_length=max_length,
    )
