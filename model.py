"""Fun-ASR-(MLT-)Nano-2512: audio encoder -> adaptor -> Qwen3 decoder, loaded from the official
model directory unchanged.

    from model import FunASRNano
    asr = FunASRNano.from_pretrained("FunAudioLLM/Fun-ASR-MLT-Nano-2512", device="cpu")
    asr.transcribe(["a.wav", "b.mp3"], language="en")

The same class is registered with funasr, so
``funasr.AutoModel(model=DIR, trust_remote_code=True, remote_code="model.py")`` builds it too.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # siblings, also as funasr remote code

from ctc import CTC, greedy_ids, timestamps as ctc_timestamps  # noqa: E402
from engine.adaptor import TransformerAdaptor, low_frame_rate_length  # noqa: E402
from engine.alignment import align as align_words, align_layers  # noqa: E402
from engine.audio import AudioError, load_audio  # noqa: E402
from engine.checkpoint import (check_state_dict, load_state_dict, model_files,  # noqa: E402
                               release_freed_memory,
                               read_config, resolve_model_dir)
from engine import placement  # noqa: E402
from engine.allocator import keep_freed_memory  # noqa: E402
from engine.batching import BatchDecoder, Generation, greedy_generate  # noqa: E402
from engine.cuda_decoding import StaticBatchDecoder, static_greedy_generate  # noqa: E402
from engine.decoding import clean_text, normalized_text  # noqa: E402
from engine.repetition import collapse_repeats, looks_looping  # noqa: E402
from engine.encoder import SenseVoiceEncoderSmall  # noqa: E402
from engine.frontend import MIN_SECONDS, Frontend, too_short  # noqa: E402
from engine.languages import describe_language, model_language_name  # noqa: E402
from engine.language_id import SPOKEN_TOKENS, label_all, preload  # noqa: E402
from engine.prompt import chatml_pieces, merge_hotwords  # noqa: E402
from engine.prompt import check_hotwords as _check_hotwords  # noqa: E402
from engine.qwen3 import Qwen3Config, Qwen3ForCausalLM  # noqa: E402
from engine.tokenizer import CTCTokenizer, TextTokenizer  # noqa: E402

log = logging.getLogger("funasr_nano")

# fp32: faithful to the reference. bf16: on CUDA the decoder in bfloat16, the audio side in fp32
# (as the reference's bf16=True); on CPU decoder weights stored as bf16 with fp32 arithmetic
# (faster than bf16 arithmetic on AVX2), which for the official checkpoint (bf16 weights) is
# exactly fp32. int8: CPU only, every Linear of encoder, adaptor and decoder in int8 with int8
# activations (fbgemm's dynamic quantisation; lossy, fastest). engine/placement.py decides.
MODES = ("fp32", "bf16", "int8")
from engine import SAMPLE_RATE  # noqa: E402
# "static": engine.cuda_decoding (fixed-shape steps, CUDA graphs on CUDA); "dynamic":
# engine.batching.greedy_generate. Default: static on CUDA, dynamic on CPU (its kernels).
DECODERS = ("static", "dynamic")


@dataclass(eq=False)
class Prepared:
    """One input made ready for the decoder: its prompt as input embeddings (L, C), and for a
    checkpoint with CTC its encoder output (1, T, D) for the CTC text and timestamps."""
    embeds: torch.Tensor
    encoder_out: torch.Tensor | None = None
    # for word timings (engine.alignment): the audio's positions in ``embeds``, its length in
    # seconds and its samples (the fallback finds the speech in them)
    audio_span: tuple[int, int] | None = None
    seconds: float | None = None
    wave: object = None


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_mode(device: str) -> str:
    """The device's default (engine.placement): bf16 on GPUs with native bf16 (compute
    capability 8.0+), fp32 on older GPUs; fp32 on CPU, which already streams the decoder's
    weights as bf16 (exact) through the CPU kernel."""
    return placement.default_mode(device)


def _use_available_cores() -> None:
    """As many threads as cores this process may run on (containers and taskset included)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    if int(os.environ.get("OMP_NUM_THREADS", 0) or 0) <= 0:
        torch.set_num_threads(n)


class FunASRNano(nn.Module):
    """Constructed from config.yaml's fields (as funasr passes them) plus the resolved paths.

    Parameter names equal the checkpoint's: ``audio_encoder.*``, ``audio_adaptor.*``, ``llm.*``
    and, where configured, ``ctc_decoder.*`` / ``ctc.*``.
    """

    def __init__(self, audio_encoder: str = "SenseVoiceEncoderSmall", audio_encoder_conf=None,
                 audio_adaptor: str = "Transformer", audio_adaptor_conf=None, llm_conf=None,
                 frontend_conf=None, input_size: int | None = None, **kwargs):
        super().__init__()
        if audio_encoder != "SenseVoiceEncoderSmall" or audio_adaptor != "Transformer":
            raise ValueError(f"unsupported architecture: audio_encoder={audio_encoder}, "
                             f"audio_adaptor={audio_adaptor}")
        llm_conf = dict(llm_conf or {})
        llm_dir = Path(llm_conf.get("init_param_path") or "Qwen3-0.6B")
        self.frontend = Frontend(**dict(frontend_conf or {}))
        enc_conf = dict(audio_encoder_conf or {})
        ad_conf = dict(audio_adaptor_conf or {})
        self.use_low_frame_rate = bool(ad_conf.get("use_low_frame_rate", False))
        dataset_conf = dict(kwargs.get("dataset_conf") or {})
        self.do_think = dataset_conf.get("do_think", True)
        self.sys_prompt = dataset_conf.get("sys_prompt", True)
        # Whether training put hotword lists in the prompt (the reference's data loader reads
        # dataset_conf.prompt_conf.use_hotwords): the official model yes; a checkpoint that
        # declares false never saw one, so hotwords offered on the user's behalf (watch terms)
        # are not added to its prompt (a user's own hotwords still are).
        self.hotword_prompts = bool((dataset_conf.get("prompt_conf") or {})
                                    .get("use_hotwords", True))

        self.llm_config = Qwen3Config.from_json(llm_dir / "config.json")
        self.tokenizer = TextTokenizer(llm_dir)
        with torch.device("meta"):  # no random init: every weight comes from model.pt
            self.audio_encoder = SenseVoiceEncoderSmall(
                input_size=input_size or self.frontend.output_size(), **enc_conf)
            ad_conf["encoder_dim"] = self.audio_encoder.output_size()
            ad_conf["llm_dim"] = self.llm_config.hidden_size
            self.audio_adaptor = TransformerAdaptor(**ad_conf)
            rope_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
                llm_conf.get("llm_dtype"), torch.float32)
            self.llm = Qwen3ForCausalLM(self.llm_config, rope_dtype)
            self.ctc_decoder = self.ctc = None
            if kwargs.get("ctc_decoder"):
                ctc_conf = dict(kwargs.get("ctc_decoder_conf") or {})
                ctc_conf["encoder_dim"] = self.audio_encoder.output_size()
                self.ctc_decoder = TransformerAdaptor(**ctc_conf)
                vocab = kwargs.get("ctc_vocab_size", 60515)
                self.ctc = CTC(vocab, self.audio_encoder.output_size(),
                               blank_id=(kwargs.get("ctc_conf") or {}).get("blank_id"))
        self._ctc_vocab_path = kwargs.get("_ctc_vocab_path") or (
            (dataset_conf.get("ctc_tokenizer_conf") or {}).get("vocab_path"))
        self.ctc_tokenizer = None
        self.model_name = str(kwargs.get("_model_name") or llm_dir.parent)
        self.mode = "fp32"
        self.decoder = None  # DECODERS, or None for the device's (see decoder_kind)
        self._static_decoder = None
        self._static_lock = threading.Lock()
        self._prepared = False  # kernels set up (load_weights, or the first funasr inference)
        if kwargs.get("_materialize", True):  # funasr's loader copies into real tensors
            self.to_empty(device="cpu")
            self.llm.tie_weights()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, model: str | os.PathLike = "FunAudioLLM/Fun-ASR-MLT-Nano-2512",
                        device: str | None = None, dtype: str | None = None) -> "FunASRNano":
        """Load an official-layout directory or hub id. dtype: "fp32" (faithful to the
        reference), "bf16" (bfloat16 arithmetic on CUDA; on CPU bf16-stored decoder weights,
        fp32 arithmetic, except the prefill's products on AVX512_BF16 CPUs, which round the
        activations to bf16), "int8" (CPU:
        int8 matmuls in encoder, adaptor and decoder); None picks the device's fast path (``default_mode``)."""
        t0 = time.perf_counter()
        device = device or _default_device()
        where = placement.choose(placement.probe(device), dtype)  # ValueError: fp16, int8 on CUDA
        device, dtype = where.device.device, where.mode
        if device == "cpu":
            _use_available_cores()
        model_dir = resolve_model_dir(model)
        cfg = read_config(model_dir)
        files = model_files(model_dir, cfg)
        cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
        cfg["llm_conf"] = {**(cfg.get("llm_conf") or {}), "init_param_path": str(files["llm_dir"])}
        self = cls(**cfg, _materialize=False, _ctc_vocab_path=str(files["ctc_vocab"]),
                   _model_name=str(model))
        self.model_dir = model_dir
        self.checkpoint_file = files["weights"]
        self.load_weights(load_state_dict(files["weights"]), device, dtype)
        self.eval()
        release_freed_memory()
        if device == "cpu":
            keep_freed_memory()  # from here on, activation buffers are reused, not faulted in again
        self.load_seconds = time.perf_counter() - t0
        log.info("loaded %s from %s on %s (%s) in %.1f s", model, model_dir, device, dtype,
                 self.load_seconds)
        log.info("placement: %s; decoder %s", self.placement.summary(), self.decoder_kind())
        return self

    def load_weights(self, state: dict, device: str, mode: str) -> None:
        expected = {k: v.shape for k, v in self.state_dict(keep_vars=True).items()}
        tied = self.llm_config.tie_word_embeddings
        absent = check_state_dict(expected, state, optional_prefixes=("ctc_decoder.", "ctc."),
                                  optional_keys=("llm.lm_head.weight",) if tied else ())
        self._disable_incomplete_ctc(set(expected) - set(absent))
        cuda = device.startswith("cuda")
        where = placement.choose(placement.probe(device), mode)
        if cuda:  # fp32 means fp32: TF32 would round the audio side's (and fp32 mode's) matmuls
            torch.backends.cuda.matmul.allow_tf32 = where.tf32
            torch.backends.cudnn.allow_tf32 = where.tf32
        # int8 on CPU replaces every Linear of the audio side: its weights stay as stored (no
        # fp32 copy that would be dropped at once; from the int8 cache they are never read)
        replaced = set()
        if not cuda and mode == "int8":
            replaced = {f"{n}.weight" for n, m in self.named_modules()
                        if isinstance(m, nn.Linear) and n.startswith(("audio_encoder.",
                                                                      "audio_adaptor."))}
        params = {}
        for name in expected:
            if name in absent or (tied and name == "llm.lm_head.weight"):
                continue
            t = state[name]
            # On CPU the decoder keeps bf16 checkpoint tensors as they are (exact, half the
            # bytes to stream per token); the audio side is compute-bound and runs in fp32.
            keep = not cuda and (name.startswith("llm.") and t.dtype == torch.bfloat16
                                 or name in replaced)
            # CUDA: each part in its placement's dtype (bf16: the decoder only)
            wide = where.tensor_dtype(name) if cuda else torch.float32
            params[name] = t.to(device=device, dtype=t.dtype if keep else wide)
        self.load_state_dict(params, strict=False, assign=True)
        self.llm.tie_weights()
        self._prepare_for_inference(device, mode)

    def _prepare_for_inference(self, device: str, mode: str) -> None:
        """After the weights are in place: on CPU, the decoder's kernels (packed Linears, fused
        decode steps, the screened greedy pick) and the encoder's FSMN kernel."""
        self.kernels_in_use = False
        if not str(device).startswith("cuda"):
            from engine.kernels import int8, kernels
            # one answer for the whole load: a background build that finishes meanwhile must
            # not leave the model half on each path (the server reloads it then instead)
            fast = kernels()
            self.kernels_in_use = fast is not None
            if mode == "int8" and int8.available():
                from engine.kernels import prepared as _prepared
                # quantised once per checkpoint, then memory-mapped from the cache
                prepared = _prepared.int8_weights(self, getattr(self, "checkpoint_file", None))
                self.llm.pack_for_cpu(mode, fast, prepared)
                # the audio side is compute-bound: int8 GEMM there too
                q8 = int8.vnni_kernels(fast)
                int8.quantize_linears(self.audio_encoder, q8=q8, prepared=prepared,
                                      prefix="audio_encoder.")
                int8.quantize_linears(self.audio_adaptor, q8=q8, prepared=prepared,
                                      prefix="audio_adaptor.")
                del prepared
            elif fast is not None:
                self.llm.pack_for_cpu(mode, fast)
            else:
                if mode == "int8":
                    log.warning("int8 needs fbgemm or the CPU kernel, neither is available: "
                                "using fp32")
                    mode = "fp32"
                self.llm.float()
                self.llm.compute_dtype = torch.float32
            if fast is not None:  # the encoder's FSMN memory in one kernel pass
                from engine.encoder import SANMAttention
                for m in self.audio_encoder.modules():
                    if isinstance(m, SANMAttention):
                        m.fast = fast
        self.mode = mode
        self.placement = placement.choose(placement.probe(str(device)), mode)
        self._prepared = True

    def _prepare_after_funasr_load(self) -> None:
        """funasr's loader copies model.pt into this module's fp32 parameters and never calls
        ``load_weights``. On CPU the decoder's parameters that hold bf16 values exactly (all of
        them for a bf16 checkpoint) go back to bf16 storage, which is lossless, and the model
        gets the same kernels as ``from_pretrained`` gives it, so AutoModel runs as fast."""
        device = self.device
        if device.type == "cpu":
            with torch.no_grad():
                for p in self.llm.parameters():
                    if p.dtype == torch.float32 and torch.equal(p, p.to(torch.bfloat16).float()):
                        p.data = p.data.to(torch.bfloat16)
        self._prepare_for_inference(str(device), "fp32")

    def on_pretrained_model_loaded(self, loaded_keys) -> None:
        """funasr's loader calls this: same rule as the reference, no half-loaded CTC branch."""
        self._disable_incomplete_ctc(set(loaded_keys))

    def _disable_incomplete_ctc(self, loaded: set) -> None:
        if self.ctc_decoder is None:
            return
        need = [k for k in self.state_dict() if k.startswith(("ctc_decoder.", "ctc."))]
        if all(k in loaded for k in need):
            self.ctc_tokenizer = CTCTokenizer(self._ctc_vocab_path)
            return
        log.info("checkpoint has no trained CTC weights: CTC text and timestamps are off")
        self.ctc_decoder = self.ctc = None

    def describe(self) -> dict:
        where = getattr(self, "placement", None)
        return {"model": self.model_name, "model_dir": str(getattr(self, "model_dir", "")),
                "device": str(self.device), "dtype": self.mode,
                "placement": {**where.as_dict(), "decoder": self.decoder_kind()}
                if where is not None else None,
                "ctc": self.ctc is not None,
                "hotword_prompts": self.hotword_prompts,
                "kernels": bool(getattr(self, "kernels_in_use", False)),
                "demo": bool(getattr(self, "model_dir", None)
                             and (Path(self.model_dir) / "DEMO.md").is_file())}

    # ------------------------------------------------------------------ inference
    @property
    def device(self) -> torch.device:
        return self.audio_encoder.after_norm.weight.device

    @torch.inference_mode()
    def encode(self, waves):
        """Audio encoder + adaptor for a batch of 16 kHz waveforms: (adaptor_out, lengths,
        encoder_out, encoder_lengths), all padded."""
        feats, lengths = self.frontend.batch(waves)
        feats, lengths = feats.to(self.device), lengths.to(self.device)
        enc, enc_lens = self.audio_encoder(feats, lengths)
        out, out_lens = self.audio_adaptor(enc, enc_lens)
        return out, out_lens, enc, enc_lens

    def check_hotwords(self, hotwords) -> None:
        """``engine.prompt.HotwordsError`` when the list is over the caps of engine/prompt.py
        (count, characters, tokens): a prompt's tokens cost KV cache in every sequence."""
        _check_hotwords(hotwords, self.tokenizer.encode)

    def hotwords_with(self, given, extra) -> list[str]:
        """The user's ``given`` hotwords plus as many of ``extra`` (offered on the user's
        behalf, most important first: watch terms) as the caps allow, counted in this model's
        tokens; ``given`` alone where the checkpoint was trained without hotword prompts."""
        if not self.hotword_prompts:
            return list(given or ())
        return merge_hotwords(given, extra, self.tokenizer.encode)

    def prompt_ids(self, language=None, itn=True, hotwords=()) -> tuple[list[int], list[int]]:
        """The (prefix, suffix) token ids around the audio. ``language``: a code, a name or the
        model's own name (ValueError for an unknown one); ``hotwords``: a list, or a string
        split at commas (HotwordsError over the caps)."""
        if isinstance(hotwords, str):  # the reference would join a string char by char
            hotwords = [w.strip() for w in hotwords.split(",") if w.strip()]
        self.check_hotwords(hotwords)
        prefix, suffix = chatml_pieces(model_language_name(language), itn, hotwords,
                                       system_prompt=self.sys_prompt, do_think=self.do_think)
        return self.tokenizer.encode(prefix), self.tokenizer.encode(suffix)

    def _embed_prompt(self, prefix, suffix, audio: torch.Tensor) -> torch.Tensor:
        dev = self.device
        embed = self.llm.embed
        return torch.cat([embed(torch.tensor(prefix, device=dev)),
                          audio.to(self.llm.dtype),
                          embed(torch.tensor(suffix, device=dev))])

    @torch.inference_mode()
    def prepare(self, waves, prompt_ids) -> list[Prepared]:
        """Encoder and adaptor for a batch of 16 kHz waveforms, and each one's prompt embedded
        around its audio. ``prompt_ids``: one (prefix, suffix) pair of ``prompt_ids()`` for
        all, or a list with one per wave (callers with different options share a batch)."""
        if isinstance(prompt_ids, tuple):
            prompt_ids = [prompt_ids] * len(waves)
        adaptor_out, lens, enc, enc_lens = self.encode(waves)
        out = []
        for i, (prefix, suffix) in enumerate(prompt_ids):
            n = low_frame_rate_length(int(lens[i])) if self.use_low_frame_rate else int(lens[i])
            ctc_in = enc[i:i + 1, :int(enc_lens[i])].clone() if self.ctc is not None else None
            out.append(Prepared(self._embed_prompt(prefix, suffix, adaptor_out[i, :n]), ctc_in,
                                (len(prefix), len(prefix) + n), len(waves[i]) / SAMPLE_RATE,
                                waves[i]))
        return out

    @staticmethod
    def decode_error(key: str, error: BaseException) -> str:
        """The ``error`` of an input whose decoding failed (here and in serving.scheduler)."""
        return f"{key}: decoding failed: {error}"

    def new_decoder(self, rows: int) -> BatchDecoder | StaticBatchDecoder:
        """A continuous-batching decoder for up to ``rows`` sequences (serving.scheduler's):
        engine.batching's, or with the static loop (CUDA) engine.cuda_decoding's, which has the
        same interface."""
        end_ids = (self.tokenizer.endoftext,)
        if self.decoder_kind() == "static":
            return StaticBatchDecoder(self.llm, self.tokenizer.im_end, end_ids, rows=rows)
        # the heads chosen already (the server chooses them as it loads the model): sequences
        # added with align=True keep what word timings read
        return BatchDecoder(self.llm, self.tokenizer.im_end, end_ids=end_ids, rows=rows,
                            align_layers=align_layers(self, choose=False))

    @torch.inference_mode()
    def finish(self, prepared: Prepared, gen: Generation, repetition_guard: bool = True,
               ignore_eos: bool = False, words: bool = False, speech=None) -> dict:
        """The result fields of one decoded input: text, text_tn, finish_reason, num_tokens and,
        with CTC, ctc_text and timestamps. With ``repetition_guard`` a run the decoder stopped
        in a loop, or that hit the token limit looking like one, keeps one copy of the loop.
        ``words``: also ``words`` ([{word, start, end}], engine.alignment); ``speech``: the
        input's speech regions [(start_s, end_s)] where the caller has them (long audio: the
        fallback then runs no VAD of its own)."""
        response = self.tokenizer.decode(gen.tokens)
        reason = gen.finish_reason
        if repetition_guard and not ignore_eos and (
                reason == "repetition" or (reason == "length" and looks_looping(response))):
            response, reason = collapse_repeats(response), "repetition"
        r = {"text": clean_text(response), "text_tn": normalized_text(response),
             "finish_reason": reason, "num_tokens": len(gen.tokens)}
        if self.ctc is not None and prepared.encoder_out is not None:
            enc = prepared.encoder_out
            lens = torch.tensor([enc.shape[1]], device=enc.device)
            logp = self.ctc.log_softmax(self.ctc_decoder(enc, lens)[0])[0]
            blank = self.ctc.blank_id
            r["ctc_text"] = self.ctc_tokenizer.decode(greedy_ids(logp, blank)).replace(
                "<|nospeech|>", "")
            r["timestamps"] = ctc_timestamps(logp, r["text"], self.ctc_tokenizer, blank)
        if words:
            r["words"] = align_words(self, [(prepared, gen.tokens, r["text"])], [speech],
                                     captured=[gen.captured])[0]
        return r

    @torch.inference_mode()
    def _decode_batch(self, waves, language, itn, hotwords, max_new_tokens, ignore_eos=False,
                      repetition_guard=True, words=False, speech=None):
        prepared = self.prepare(waves, self.prompt_ids(language, itn, hotwords))
        # with words the decode keeps what the alignment reads (no second pass)
        gens = self._generate([p.embeds for p in prepared], max_new_tokens, ignore_eos,
                              repetition_guard, align_layers(self) if words else ())
        out = [self.finish(p, g, repetition_guard, ignore_eos) for p, g in zip(prepared, gens)]
        if words:  # one batched alignment pass for the whole batch
            for r, w in zip(out, align_words(self, [(p, g.tokens, r["text"]) for p, g, r
                                                    in zip(prepared, gens, out)], speech,
                                             captured=[g.captured for g in gens])):
                r["words"] = w
        return out

    def load_inputs(self, inputs, language: str | None = None, keys=None):
        """Decode every input to 16 kHz: (results, waves). ``results`` has one dict per input
        (key, file, text, text_tn, language, language_name, duration, error) with ``error`` set where the
        audio cannot be read; ``waves`` maps the index of each readable input to its samples.
        Raises ValueError for an unknown language."""
        if isinstance(inputs, (str, os.PathLike, bytes)) or (
                hasattr(inputs, "ndim") and inputs.ndim == 1) or (
                isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[1], int)):
            inputs = [inputs]
        inputs = list(inputs)
        spelled = describe_language(language)  # ValueError for an unknown language
        keys = list(keys) if keys is not None else [_key_of(x, i) for i, x in enumerate(inputs)]
        results = [{"key": k, "file": str(x) if isinstance(x, (str, os.PathLike)) else None,
                    "text": "", "text_tn": "", **spelled, "duration": 0.0,
                    "error": None} for k, x in zip(keys, inputs)]
        waves = {}
        for i, x in enumerate(inputs):
            try:
                waves[i] = load_audio(x, SAMPLE_RATE, name=keys[i])
                results[i]["duration"] = round(len(waves[i]) / SAMPLE_RATE, 3)
                if len(waves[i]) == 0:
                    raise AudioError(f"{keys[i]}: no audio samples")
                if len(waves[i]) < MIN_SECONDS * SAMPLE_RATE:
                    raise AudioError(keys[i], too_short(len(waves[i])))
            except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
                results[i]["error"] = str(e) if isinstance(e, AudioError) else f"{keys[i]}: {e}"
                waves.pop(i, None)
        return results, waves

    def decoder_kind(self) -> str:
        """The greedy loop in use (DECODERS): ``self.decoder`` when set, else
        $FUNASR_NANO_DECODER, else static on CUDA and dynamic on CPU."""
        kind = self.decoder or os.environ.get("FUNASR_NANO_DECODER", "").strip().lower()
        if kind and kind not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, not {kind!r}")
        return kind or ("static" if self.device.type == "cuda" else "dynamic")

    def _generate(self, prompts, max_new_tokens, ignore_eos, stop_loops, align_layers=()):
        """Greedy decoding; ``align_layers``: engine.batching's, for word timings (the static
        loop keeps nothing: the alignment then runs prompt and tokens again)."""
        eos, end_ids = self.tokenizer.im_end, (self.tokenizer.endoftext,)
        if self.decoder_kind() == "dynamic":
            return greedy_generate(self.llm, prompts, eos, max_new_tokens, ignore_eos=ignore_eos,
                                   end_ids=end_ids, stop_loops=stop_loops,
                                   align_layers=align_layers)
        with self._static_lock:  # one static decoder per model: its cache and graphs are kept
            dec = self._static_decoder
            if dec is None or dec.rows < len(prompts):
                self._static_decoder = dec = None  # the old cache goes before the new one
                dec = StaticBatchDecoder(self.llm, eos, end_ids,
                                         rows=max(8, 1 << (len(prompts) - 1).bit_length()))
                self._static_decoder = dec
            return static_greedy_generate(self.llm, prompts, eos, max_new_tokens, ignore_eos,
                                          end_ids, stop_loops, decoder=dec)

    def transcribe(self, inputs, language: str | None = None, itn: bool = True, hotwords=(),
                   batch_size: int = 8, max_new_tokens: int = 512, keys=None,
                   ignore_eos: bool = False, repetition_guard: bool = True,
                   detect_language: bool = True, words: bool = False,
                   speech=None) -> list[dict]:
        """Transcribe paths, bytes, (array, sample_rate) pairs or 16 kHz arrays; one dict per
        input in order. A bad input gets ``error`` set and never stops the others. Hotwords over
        the caps (``check_hotwords``) raise ``HotwordsError`` before anything is decoded.

        Each dict: ``key, file, text, text_tn, language`` (the ISO code given; with none given
        the one heard, engine.language_id, with ``language_probability``; ``"auto"`` when the
        text has no letters), ``language_name`` (English, or ``"automatic"``), ``duration, error, finish_reason``
        (``"stop"``, ``"length"`` at the token limit, or ``"repetition"``: the repetition guard,
        engine.repetition, stopped a loop and kept one copy; ``repetition_guard=False`` decodes
        as the reference does), ``num_tokens``, and with a CTC head ``ctc_text, timestamps``.
        ``detect_language=False``: no language detection (live partials), ``"auto"`` stays.
        ``words=True``: also ``words``, ``[{"word", "start", "end"}]`` in seconds from the start
        of the input, from the decoder's own attention (engine.alignment; ``"estimated": True``
        on words spread over the speech where that alignment is not trusted); ``speech``: per
        input, its speech regions [(start_s, end_s)] where the caller found them already (long
        audio), else None (the words' fallback runs the VAD on the input)."""
        if isinstance(hotwords, str):  # the reference would join a string char by char
            hotwords = [w.strip() for w in hotwords.split(",") if w.strip()]
        hotwords = list(hotwords or ())
        self.check_hotwords(hotwords)
        results, waves = self.load_inputs(inputs, language, keys)
        keys = [r["key"] for r in results]
        lang_name = model_language_name(language)
        detect_language = detect_language and lang_name is None
        if detect_language:
            preload()   # the language classifier loads while the batch decodes
        # Similar lengths together: less padding, and results do not depend on batch neighbours.
        order = sorted(waves, key=lambda i: len(waves[i]))
        for start in range(0, len(order), max(1, batch_size)):
            chunk = order[start:start + batch_size]
            for i, r in zip(chunk, self._decode_safely(chunk, waves, keys, lang_name, itn,
                                                       hotwords, max_new_tokens, ignore_eos,
                                                       repetition_guard, words, speech=speech)):
                results[i].update(r)
        if detect_language:   # no language given: say which one was heard (engine.language_id)
            def respeak(ws):
                return [r["text"] for r in self.transcribe(
                    ws, None, False, hotwords, batch_size, min(max_new_tokens, SPOKEN_TOKENS),
                    repetition_guard=repetition_guard)]
            label_all(results, waves, itn, None if ignore_eos else respeak)
        return results

    def _decode_safely(self, chunk, waves, keys, *args, speech=None):
        try:
            return self._decode_batch([waves[i] for i in chunk], *args,
                                      speech=None if speech is None else [speech[i] for i in chunk])
        except Exception as e:  # noqa: BLE001
            if len(chunk) == 1:
                log.exception("decoding %s failed", keys[chunk[0]])
                return [{"error": self.decode_error(keys[chunk[0]], e)}]
            # Retry one by one so a single bad input (or an OOM) does not fail its neighbours.
            return [r for i in chunk
                    for r in self._decode_safely([i], waves, keys, *args, speech=speech)]

    # ------------------------------------------------------------------ funasr AutoModel
    def inference(self, data_in, data_lengths=None, key=None, tokenizer=None, frontend=None,
                  **kwargs):
        """funasr's entry point: ``AutoModel(...).generate(input=[...], language=..., itn=...)``."""
        if key and isinstance(key[0], (list, tuple)):
            key = list(key[0])
        if not self._prepared:  # built by AutoModel: weights loaded and moved by funasr
            self._prepare_after_funasr_load()
        items = [x.numpy() if isinstance(x, torch.Tensor) else x for x in data_in]
        results = self.transcribe(items, language=kwargs.get("language"),
                                  itn=kwargs.get("itn", True), hotwords=kwargs.get("hotwords", ()),
                                  batch_size=max(len(items), 1),
                                  max_new_tokens=kwargs.get("max_length", 512), keys=key,
                                  repetition_guard=kwargs.get("repetition_guard", True))
        return results, {"batch_data_time": sum(r["duration"] for r in results) or -1}


def _key_of(x, i: int) -> str:
    if isinstance(x, (str, os.PathLike)):
        return Path(x).stem or str(x)
    return f"audio_{i}"


if "funasr" in sys.modules:  # imported as funasr remote code: make AutoModel build this class
    from funasr.register import tables as _tables

    _tables.register("model_classes", "FunASRNano")(FunASRNano)
