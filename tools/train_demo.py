#!/usr/bin/env python3
"""Train the demo checkpoint (models/demo): a small FunASRNano trained end to end on synthetic speech.

The model is the engine's own ``model.FunASRNano`` (SAN-M encoder -> Transformer adaptor -> Qwen3
decoder), built from a small config.yaml in the official layout and trained with teacher forcing:
the ChatML prompt of the reference (spec 8.2) is embedded, the first ceil(T/8) adaptor vectors are
spliced in at the speech placeholder, and cross-entropy is taken on the target tokens plus
``<|im_end|>``.  Each sample's prompt is drawn at random: with or without the language
(``语音转写成英文：`` / ``语音转写：``), ITN on or off (``，不进行文本规整``, target in words).

  python tools/demo_data.py                 # synthetic data -> .cache/demo_data  (~8 min)
  python tools/train_demo.py                # features, tokenizer, training, export -> models/demo
  python tools/eval_demo.py                 # the per-language table

Seeded (same data + seed -> same batches, prompts and init), prints progress, saves a resumable
checkpoint to --work every --save-every steps and resumes from it, and stops at --max-minutes of
training (default 80) whatever --steps says, exporting what it has.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from engine.adaptor import low_frame_rate_length
from engine.frontend import Frontend
from engine.languages import LANGUAGES
from engine.prompt import SYSTEM_PROMPT, chatml_pieces, instruction
from tools.demo_tokenizer import build_tokenizer, padded_vocab_size

ROOT = Path(__file__).resolve().parent.parent

LLM_DIR = "Qwen3-demo"
MODEL_NAMES = {lang.code: lang.model_name for lang in LANGUAGES}

# ----------------------------------------------------------------------------------- the config

DIMS = dict(
    encoder=dict(output_size=128, attention_heads=4, linear_units=512, num_blocks=5, tp_blocks=1),
    adaptor_ffn=256,
    # The adaptor stacks this many encoder frames into one (the official config has 1) and the
    # decoder gets all of them (use_low_frame_rate false): one audio vector per 120 ms, aligned
    # with the speech. The official model keeps the first ceil(T/8) of T unstacked frames, which
    # makes the adaptor learn to route the whole utterance into the first eighth of its output:
    # too slow to learn in an hour of CPU. Both switches are read by the engine and by funasr.
    adaptor_downsample=2, use_low_frame_rate=False,
    qwen3=dict(hidden_size=192, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
               head_dim=48, intermediate_size=512),
)


def demo_configs(vocab_size: int, bos: int, eos: int) -> tuple[dict, dict]:
    """(config.yaml, Qwen3 config.json): the official files' fields with the demo's sizes, no CTC."""
    from tools.make_random_model import model_config, qwen3_config

    cfg = model_config("tiny")
    for key in ("ctc_decoder", "detach_ctc_decoder", "ctc_decoder_conf", "ctc_weight", "ctc_conf"):
        cfg.pop(key, None)
    cfg["audio_encoder_conf"].update(DIMS["encoder"])
    cfg["audio_adaptor_conf"].update(ffn_dim=DIMS["adaptor_ffn"], llm_dim=DIMS["qwen3"]["hidden_size"],
                                     encoder_dim=DIMS["encoder"]["output_size"],
                                     downsample_rate=DIMS["adaptor_downsample"],
                                     use_low_frame_rate=DIMS["use_low_frame_rate"])
    cfg["llm_conf"]["init_param_path"] = LLM_DIR
    cfg["frontend_conf"]["dither"] = 0.0  # deterministic features, also under funasr's WavFrontend
    cfg["dataset_conf"].pop("ctc_tokenizer", None)
    cfg["dataset_conf"].pop("ctc_tokenizer_conf", None)
    qcfg = qwen3_config("tiny")
    qcfg.update(DIMS["qwen3"])
    qcfg.update(vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos,
                max_window_layers=DIMS["qwen3"]["num_hidden_layers"], max_position_embeddings=4096,
                torch_dtype="float32")
    return cfg, qcfg


def write_layout(model_dir: Path, tok_texts: list[str], vocab: int) -> Path:
    """Everything but model.pt: config.yaml, configuration.json, Qwen3-demo/ (tokenizer + config)."""
    from tools.make_random_model import CONFIGURATION_JSON, GENERATION_CONFIG

    llm_dir = model_dir / LLM_DIR
    tok = build_tokenizer(tok_texts, llm_dir, vocab)
    ids = {t: tok.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}
    cfg, qcfg = demo_configs(padded_vocab_size(tok.get_vocab_size()), ids["<|endoftext|>"], ids["<|im_end|>"])
    dump = lambda obj: json.dumps(obj, indent=2, ensure_ascii=False) + "\n"  # noqa: E731
    (llm_dir / "config.json").write_text(dump(qcfg))
    gen = dict(GENERATION_CONFIG, bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
               eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]])
    (llm_dir / "generation_config.json").write_text(dump(gen))
    meta = json.loads(json.dumps(CONFIGURATION_JSON))
    meta["file_path_metas"].update(tokenizer_conf={"init_param_path": LLM_DIR},
                                   llm_conf={"init_param_path": LLM_DIR})
    meta["file_path_metas"].pop("dataset_conf", None)
    (model_dir / "configuration.json").write_text(dump(meta))
    with open(model_dir / "config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False, allow_unicode=True, width=100)
    return model_dir


def copy_layout(src: Path, model_dir: Path) -> Path:
    """Everything but model.pt, from an exported model directory (config.yaml, configuration.json,
    Qwen3-demo/)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.name in ("model.pt", "DEMO.md"):
            continue
        if item.is_dir():
            shutil.copytree(item, model_dir / item.name, dirs_exist_ok=True)
        else:
            shutil.copyfile(item, model_dir / item.name)
    return model_dir


def prompt_texts() -> list[str]:
    """Every prompt the demo can be given, so the tokenizer covers them with few tokens."""
    out = [SYSTEM_PROMPT]
    for name in [None] + [lang.model_name for lang in LANGUAGES]:
        for itn in (True, False):
            out.extend(chatml_pieces(name, itn))
            out.append(instruction(name, itn))
    return out


def build_model(model_dir: Path, seed: int):
    """model.FunASRNano from the demo config, with a fresh seeded init (the class itself leaves
    weights uninitialised: they normally come from model.pt)."""
    from engine.checkpoint import model_files, read_config
    from engine.qwen3 import RMSNorm
    from model import FunASRNano

    cfg = read_config(model_dir)
    files = model_files(model_dir, cfg)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    cfg["llm_conf"] = {**cfg["llm_conf"], "init_param_path": str(files["llm_dir"])}
    torch.manual_seed(seed)
    model = FunASRNano(**cfg)
    for m in model.modules():
        if isinstance(m, torch.nn.Embedding):
            torch.nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, RMSNorm):
            torch.nn.init.ones_(m.weight)
        elif hasattr(m, "reset_parameters"):
            m.reset_parameters()
    model.llm.tie_weights()
    return model


# ----------------------------------------------------------------------------------- data


def read_manifest(data_dir: Path) -> list[dict]:
    with open(data_dir / "manifest.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def read_manifests(data_dirs: list[Path]) -> list[dict]:
    """The utterances of several data sets, each ``wav`` made a full path.

    Sets made by demo_data.py with the same seed share their held-out sentences and the first
    training sentences of each language (``--train-per-lang 14000`` starts with the 7000 of a
    smaller run), so an utterance whose id came earlier is dropped; one whose text differs
    means the sets were not made alike, and mixing them could put a held-out sentence in the
    training data, so that is an error."""
    recs, seen = [], {}
    for d in data_dirs:
        for r in read_manifest(d):
            r = dict(r, wav=str(d / r["wav"]))
            prev = seen.get(r["id"])
            if prev is not None:
                if (prev["text_itn"], prev["text_noitn"]) != (r["text_itn"], r["text_noitn"]):
                    raise SystemExit(f"{d}: utterance {r['id']} differs from the one in an earlier --data "
                                     "set (made with another seed or --test-per-lang?)")
                continue
            seen[r["id"]] = r
            recs.append(r)
    return recs


def _fbank_job(args):
    path, = args
    import wave
    with wave.open(path) as f:
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    return Frontend(dither=0.0).fbank(pcm).numpy().astype(np.float16)


def load_features(recs: list[dict], cache: Path, workers: int):
    """80-d fbank of every utterance (engine.frontend, dither 0), cached as one fp16 array on disk
    (``cache``/feats.f16, offsets.npy, ids.json) and read back memory-mapped: tens of hours of
    features stay in the page cache instead of each process's heap, and computing them holds
    one utterance's at a time.  A cache of the first utterances of ``recs`` (an added --data
    set) is extended rather than computed again."""
    ids = [r["id"] for r in recs]
    feats_path, offsets_path, ids_path = cache / "feats.f16", cache / "offsets.npy", cache / "ids.json"
    have = json.loads(ids_path.read_text()) if ids_path.is_file() else []
    if have != ids:
        from concurrent.futures import ProcessPoolExecutor
        t0 = time.time()
        keep = len(have) if have and have == ids[:len(have)] else 0
        lengths = list(np.diff(np.load(offsets_path))) if keep else []
        cache.mkdir(parents=True, exist_ok=True)
        ids_path.unlink(missing_ok=True)  # written last: a cache without it is incomplete
        with ProcessPoolExecutor(workers) as pool, open(feats_path, "ab" if keep else "wb") as out:
            for x in pool.map(_fbank_job, [(r["wav"],) for r in recs[keep:]], chunksize=64):
                out.write(np.ascontiguousarray(x, dtype=np.float16).tobytes())
                lengths.append(len(x))
        np.save(offsets_path, np.cumsum([0] + lengths))
        ids_path.write_text(json.dumps(ids))
        print(f"[train_demo] fbank of {len(recs) - keep} utterances in {time.time() - t0:.0f}s"
              + (f" ({keep} from the cache)" if keep else ""), flush=True)
    offsets = np.load(offsets_path)
    frames = int(offsets[-1])
    dim = feats_path.stat().st_size // (2 * max(frames, 1))  # 80 mel bins
    feats = np.memmap(feats_path, dtype=np.float16, mode="r", shape=(frames, dim))
    return feats, offsets


def make_batches(lengths: np.ndarray, max_frames: int, max_batch: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches (padded LFR frames <= max_frames), in random order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches, cur = [], []
    for i in order:
        if cur and ((len(cur) + 1) * lengths[i] > max_frames or len(cur) >= max_batch):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


class Batcher:
    def __init__(self, model, recs, feats, offsets, seed: int, p_lang: float = 0.5, p_itn: float = 0.5):
        self.model, self.recs, self.feats, self.offsets = model, recs, feats, offsets
        self.seed, self.p_lang, self.p_itn = seed, p_lang, p_itn
        self.front = model.frontend
        self._prompts = {}
        self.tok = model.tokenizer

    def prompt(self, name, itn):
        key = (name, itn)
        if key not in self._prompts:
            self._prompts[key] = self.model.prompt_ids(name, itn)
        return self._prompts[key]

    def lfr(self, i: int) -> torch.Tensor:
        fb = torch.from_numpy(self.feats[self.offsets[i]:self.offsets[i + 1]].astype(np.float32))
        return self.front.lfr(fb)

    def build(self, idx: list[int], step: int):
        rng = random.Random(self.seed * 1_000_003 + step)
        feats = [self.lfr(i) for i in idx]
        lengths = torch.tensor([f.shape[0] for f in feats])
        feats = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        items = []
        for i in idx:
            r = self.recs[i]
            name = MODEL_NAMES[r["lang"]] if rng.random() < self.p_lang else None
            itn = rng.random() < self.p_itn
            target = r["text_itn"] if itn else r["text_noitn"]
            prefix, suffix = self.prompt(name, itn)
            items.append((prefix, suffix, self.tok.encode(target) + [self.tok.im_end],
                          self.tok.encode(r["text_noitn"])))
        return feats, lengths, items


class TiedBlank(torch.nn.Module):
    """The blank row of the adaptor-side CTC, whose other rows are the decoder's own token
    embeddings (a training aid: not shipped)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(1, dim) * 0.02)


def _ctc(logits, lens, items):
    logp = F.log_softmax(logits.float(), -1).transpose(0, 1)  # (T, B, V+1)
    tg = [torch.tensor(it[3]) for it in items]
    return F.ctc_loss(logp, torch.cat(tg), lens, torch.tensor([len(t) for t in tg]),
                      blank=logits.shape[-1] - 1, zero_infinity=True)


def forward_loss(model, feats, lengths, items, ctc_head=None, tied_blank=None):
    """Cross-entropy on the target tokens, plus two optional CTC losses against the spoken-form
    tokens (training aids; neither head is shipped):

    * ``ctc_head``: a Linear on the encoder output;
    * ``tied_blank``: on the adaptor output, scored against the decoder's token embeddings (and
      one blank row). It pulls each audio vector towards the embedding of the token spoken there,
      so the decoder only has to learn to copy from its audio prefix: without it the decoder
      first learns the sentence patterns and ignores the audio for ~1,500 steps.
    """
    enc, enc_lens = model.audio_encoder(feats, lengths)
    ctc_loss = ad_ctc_loss = None
    if ctc_head is not None:
        ctc_loss = _ctc(ctc_head(enc), enc_lens, items)
    ad, ad_lens = model.audio_adaptor(enc, enc_lens)
    if tied_blank is not None:
        rows = torch.cat([model.llm.model.embed_tokens.weight, tied_blank.weight])
        ad_ctc_loss = _ctc(F.linear(ad, rows), ad_lens, items)
    embed = model.llm.embed
    seqs, labels = [], []
    for i, (prefix, suffix, target, _) in enumerate(items):
        n = low_frame_rate_length(int(ad_lens[i])) if model.use_low_frame_rate else int(ad_lens[i])
        ids = torch.tensor(prefix + suffix + target)
        e = embed(ids)
        p = len(prefix)
        seqs.append(torch.cat([e[:p], ad[i, :n], e[p:]]))
        lab = torch.full((len(prefix) + n + len(suffix) + len(target),), -100)
        lab[-len(target):] = torch.tensor(target)
        labels.append(lab)
    x = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)  # right padding: causal = no leak
    labels = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=-100)
    # logits only where a label is predicted: the final-normed states, then the head on those
    # rows (no KV cache: nothing is decoded after this pass)
    h = model.llm.prefill(x, last_only=False)
    tgt = labels[:, 1:]
    sel = tgt != -100
    logits = model.llm.lm_head(h[:, :-1][sel])
    loss = F.cross_entropy(logits.float(), tgt[sel])
    acc = (logits.argmax(-1) == tgt[sel]).float().mean()
    return loss, acc, int(sel.sum()), ctc_loss, ad_ctc_loss


# ----------------------------------------------------------------------------------- evaluation


def cer(ref: str, hyp: str, lang: str) -> tuple[int, int]:
    from rapidfuzz.distance import Levenshtein
    from tools.eval_demo import normalize
    r, h = normalize(ref, lang), normalize(hyp, lang)
    return Levenshtein.distance(r, h), max(len(r), 1)


@torch.no_grad()
def quick_eval(model, recs, feats, offsets, batcher, n_per_lang: int = 2) -> float:
    """Greedy CER on a few held-out utterances per language (language given, ITN on)."""
    from engine.batching import greedy_generate
    model.eval()
    by_lang = {}
    for i, r in enumerate(recs):
        by_lang.setdefault(r["lang"], [])
        if len(by_lang[r["lang"]]) < n_per_lang:
            by_lang[r["lang"]].append(i)
    errs = tot = 0
    shown = []
    for lang, idx in by_lang.items():
        fs = [batcher.lfr(i) for i in idx]
        lengths = torch.tensor([f.shape[0] for f in fs])
        enc, el = model.audio_encoder(torch.nn.utils.rnn.pad_sequence(fs, batch_first=True), lengths)
        ad, al = model.audio_adaptor(enc, el)
        prefix, suffix = batcher.prompt(MODEL_NAMES[lang], True)
        prompts = [model._embed_prompt(prefix, suffix, ad[j, :low_frame_rate_length(int(al[j]))
                                          if model.use_low_frame_rate else int(al[j])])
                   for j in range(len(idx))]
        gens = greedy_generate(model.llm, prompts, model.tokenizer.im_end, 64)
        for j, g in zip(idx, gens):
            hyp = model.tokenizer.decode(g.tokens)
            e, n = cer(recs[j]["text_itn"], hyp, lang)
            errs, tot = errs + e, tot + n
            if len(shown) < 3 or lang in ("zh", "ja"):
                shown.append(f"    {lang}: {hyp!r}  (ref {recs[j]['text_itn']!r})")
    model.train()
    print("\n".join(shown[:6]), flush=True)
    return errs / max(tot, 1)


# ----------------------------------------------------------------------------------- export


def export(model, work_model_dir: Path, out: Path, dtype: str) -> None:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    state = {k: v.to(torch_dtype).contiguous() for k, v in state.items()}
    out.mkdir(parents=True, exist_ok=True)
    for item in work_model_dir.iterdir():
        if item.name == "model.pt":
            continue
        dest = out / item.name
        if item.is_dir():
            shutil.copytree(item, dest, dirs_exist_ok=True)
        else:
            shutil.copyfile(item, dest)
    tmp = out / "model.pt.tmp"
    torch.save({"state_dict": state}, tmp)
    tmp.replace(out / "model.pt")
    n = sum(v.numel() for k, v in state.items() if k != "llm.lm_head.weight")
    print(f"[train_demo] exported {len(state)} tensors ({n:,} parameters, {dtype}) to {out}, "
          f"model.pt {os.path.getsize(out / 'model.pt') / 1e6:.1f} MB", flush=True)


# ----------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, nargs="+", default=[ROOT / ".cache" / "demo_data"],
                    help="data sets of tools/demo_data.py; more than one: made with the same seed, "
                         "the utterances of the later ones added to the first's")
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "demo_train")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "demo")
    ap.add_argument("--seed", type=int, default=2512)
    ap.add_argument("--steps", type=int, default=0,
                    help="total steps (learning-rate schedule); 0: fit the schedule to --max-minutes "
                         "from the speed of the first 40 steps (the number is kept for resuming)")
    ap.add_argument("--max-minutes", type=float, default=80.0,
                    help="training budget in idle-machine minutes: the process's CPU time divided by "
                         "--threads (on an idle machine that is the wall-clock time; on a busy one, "
                         "where other processes take CPU, wall-clock time runs longer)")
    ap.add_argument("--max-wall-minutes", type=float, default=84.0,
                    help="hard wall-clock cap on training, whatever the load")
    # 2e-3 kept the decoder ignoring the audio for ~1,200 steps (it learnt the sentence patterns
    # first); at 1e-3 it listens after ~1,500 steps and held-out CER falls much faster.
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--batch-frames", type=int, default=1600, help="padded LFR frames per batch")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--export-dtype", choices=["bf16", "fp32"], default="fp32")
    ap.add_argument("--ctc-weight", type=float, default=0.5,
                    help="weight of the auxiliary CTC loss on the encoder (0: none)")
    # The encoder CTC head (128 -> 4,033) costs a fifth of a step. It matters while the encoder
    # learns to hear; later the adaptor CTC, whose gradient also reaches the encoder, suffices,
    # and the time goes to more steps instead.
    ap.add_argument("--ctc-until", type=float, default=0.4,
                    help="use the encoder CTC loss for this fraction of the schedule (1: always)")
    ap.add_argument("--ema", type=float, default=0.999,
                    help="decay of the exponential moving average of the weights that is exported "
                         "(0: export the last weights)")
    ap.add_argument("--adaptor-ctc-weight", type=float, default=0.5,
                    help="weight of the auxiliary CTC loss on the adaptor output against the "
                         "decoder's token embeddings (0: none)")
    ap.add_argument("--init-from", type=Path,
                    help="start from these weights: a checkpoint.pt of --work (tensors whose shape "
                         "differs are initialised afresh), or an exported model directory such as "
                         "models/demo, whose config and tokenizer are then kept (a second stage "
                         "of training); ignored when --work has a checkpoint to resume")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --work")
    ap.add_argument("--export-only", action="store_true", help="export the checkpoint in --work")
    return ap


def setup_model(args, train: list[dict]):
    """The working model directory (a fresh layout and tokenizer, or an exported model's as the
    start of a second stage) and the model built from it, in training mode."""
    model_dir = args.work / "model"
    tok_texts = [t for r in train for t in (r["text_itn"], r["text_noitn"])] + prompt_texts() * 20
    init_dir = args.init_from if args.init_from and args.init_from.is_dir() else None
    if args.fresh or not (model_dir / "config.yaml").is_file():
        if init_dir is not None:
            # the same token ids as the weights: the tokenizer is not retrained on the new data
            copy_layout(init_dir, model_dir)
        else:
            write_layout(model_dir, tok_texts, args.vocab)
    model = build_model(model_dir, args.seed)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[train_demo] model: {n_params:,} parameters; vocab {model.tokenizer.vocab_size} "
          f"(embedding rows {model.llm_config.vocab_size}); <|im_end|> = {model.tokenizer.im_end}",
          flush=True)
    return model_dir, model, init_dir


class Trainer:
    """The model's optimiser, the auxiliary CTC heads and theirs, the moving average of the
    weights that is exported, and where training stands (step, idle-machine seconds, the step
    the encoder CTC stopped): what a checkpoint holds."""

    def __init__(self, args, model, model_dir: Path):
        self.args, self.model, self.model_dir = args, model, model_dir
        self.ckpt_path = args.work / "checkpoint.pt"
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
        self.ctc_head = self.ctc_opt = self.tied_blank = None
        self.aux = []
        if args.ctc_weight > 0:
            torch.manual_seed(args.seed + 1)
            self.ctc_head = torch.nn.Linear(model.audio_encoder.output_size(),
                                            model.llm_config.vocab_size + 1)
            self.aux += list(self.ctc_head.parameters())
        if args.adaptor_ctc_weight > 0:
            torch.manual_seed(args.seed + 2)
            self.tied_blank = TiedBlank(model.llm_config.hidden_size)
            self.aux += list(self.tied_blank.parameters())
        if self.aux:
            self.ctc_opt = torch.optim.AdamW(self.aux, lr=args.lr, betas=(0.9, 0.98),
                                             weight_decay=0.01)
        # exported weights: a moving average over the last ~1/(1-decay) steps, which smooths the
        # step-to-step noise of a short, small-batch run
        self.params = [p for _, p in model.named_parameters()]
        self.ema = [p.detach().clone() for p in self.params] if args.ema > 0 else None
        self.step, self.trained_seconds = 0, 0.0
        self.ctc_stop = None  # the step the encoder CTC was switched off (fixed once reached)

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then a cosine down to 3% over the schedule (``--steps``)."""
        args = self.args
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        total = args.steps or 10 ** 9
        frac = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
        return args.lr * (0.03 + 0.97 * 0.5 * (1 + math.cos(math.pi * frac)))

    # ------------------------------------------------------------------ where it starts
    def start(self, init_dir: Path | None) -> None:
        """Resume --work's checkpoint, else start from --init-from (an exported model or a
        checkpoint), else from the fresh weights."""
        args = self.args
        if self.ckpt_path.is_file() and not args.fresh:
            self._resume()
        elif init_dir is not None:
            state = torch.load(init_dir / "model.pt", map_location="cpu",
                               weights_only=True)["state_dict"]
            self.model.load_state_dict({k: v.float() for k, v in state.items()})
            self.model.llm.tie_weights()
            if self.ema is not None:  # the average starts from the weights it continues
                self.ema = [p.detach().clone() for p in self.params]
            print(f"[train_demo] initialised all {len(state)} tensors from "
                  f"{init_dir / 'model.pt'}", flush=True)
        elif args.init_from:
            own = self.model.state_dict()
            ck = torch.load(args.init_from, map_location="cpu", weights_only=False)
            if self.ctc_head is not None and "ctc_head" in ck:
                self.ctc_head.load_state_dict(ck["ctc_head"])
            keep = {k: v for k, v in ck["model"].items() if k in own and own[k].shape == v.shape}
            self.model.load_state_dict(keep, strict=False)
            self.model.llm.tie_weights()
            print(f"[train_demo] initialised {len(keep)}/{len(own)} tensors from "
                  f"{args.init_from}; fresh: {sorted(set(own) - set(keep))}", flush=True)

    def _resume(self) -> None:
        ck = torch.load(self.ckpt_path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optim"])
        self.step, self.trained_seconds = ck["step"], ck["seconds"]
        self.ctc_stop = ck.get("ctc_stop")
        for part, key in ((self.ctc_head, "ctc_head"), (self.tied_blank, "tied_blank"),
                          (self.ctc_opt, "ctc_optim")):
            if part is not None and key in ck:
                part.load_state_dict(ck[key])
        if self.ema is not None and "ema" in ck:
            self.ema = [t.clone() for t in ck["ema"]]
        self.args.steps = self.args.steps or ck.get("total_steps", 0)
        print(f"[train_demo] resumed from {self.ckpt_path} at step {self.step} "
              f"({self.trained_seconds / 60:.1f} min trained)", flush=True)

    def save(self) -> None:
        """The checkpoint, replaced atomically."""
        tmp = self.ckpt_path.with_suffix(".tmp")
        parts = {"ctc_head": self.ctc_head, "tied_blank": self.tied_blank,
                 "ctc_optim": self.ctc_opt}
        torch.save({"model": self.model.state_dict(), "optim": self.opt.state_dict(),
                    "step": self.step, "seconds": self.trained_seconds,
                    "total_steps": self.args.steps, "ctc_stop": self.ctc_stop,
                    **{k: v.state_dict() for k, v in parts.items() if v is not None},
                    **({"ema": self.ema} if self.ema is not None else {})}, tmp)
        tmp.replace(self.ckpt_path)

    # ------------------------------------------------------------------ the weights out
    @contextlib.contextmanager
    def averaged_weights(self):
        """The model holds the moving average inside the block, its trained weights after."""
        if self.ema is None:
            yield
            return
        with torch.no_grad():
            raw = [p.detach().clone() for p in self.params]
            torch._foreach_copy_(self.params, self.ema)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, raw)

    def export(self) -> None:
        with self.averaged_weights():
            export(self.model, self.model_dir, self.args.out, self.args.export_dtype)

    # ------------------------------------------------------------------ one step
    def train_step(self, f, lens, items) -> dict:
        """One optimiser step on a batch: the losses, token accuracy and gradient norm."""
        args, model = self.args, self.model
        for g in self.opt.param_groups + (self.ctc_opt.param_groups if self.ctc_opt else []):
            g["lr"] = self.lr_at(self.step)
        if self.ctc_stop is None and args.steps and self.step >= args.ctc_until * args.steps:
            self.ctc_stop = self.step  # latched: a re-fit of the schedule must not switch it back on
            print(f"[train_demo] step {self.step}: encoder CTC off from here", flush=True)
        use_ctc = self.ctc_head is not None and self.ctc_stop is None
        loss, acc, ntok, ctc_loss, ad_ctc_loss = forward_loss(
            model, f, lens, items, self.ctc_head if use_ctc else None, self.tied_blank)
        self.opt.zero_grad(set_to_none=True)
        total = loss
        if ctc_loss is not None:
            total = total + args.ctc_weight * ctc_loss
        if ad_ctc_loss is not None:
            total = total + args.adaptor_ctc_weight * ad_ctc_loss
        if self.ctc_opt:
            self.ctc_opt.zero_grad(set_to_none=True)
        total.backward()
        # encoder and decoder side clipped apart: the CTC gradient (encoder only) must not
        # scale down the decoder's
        torch.nn.utils.clip_grad_norm_(model.audio_encoder.parameters(), 1.0)
        gnorm = torch.nn.utils.clip_grad_norm_(
            [p for n, p in model.named_parameters() if not n.startswith("audio_encoder.")], 1.0)
        self.opt.step()
        if self.ctc_opt:
            torch.nn.utils.clip_grad_norm_([p for p in self.aux if p.grad is not None], 1.0)
            self.ctc_opt.step()
        if self.ema is not None:
            # short warm-up so the average does not start from the random init
            d = min(args.ema, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, [p.detach() for p in self.params], 1 - d)
        return {"loss": loss.item(), "acc": acc.item(), "tokens": ntok, "gnorm": float(gnorm),
                "ctc": ctc_loss.item() if ctc_loss is not None else 0.0,
                "ad_ctc": ad_ctc_loss.item() if ad_ctc_loss is not None else 0.0}


def epoch_batches(lfr_len, args):
    """``batch_for(step)``: the (epoch, utterance indices) of that step. Epoch e's batch order is
    fixed by (seed, e), so a resumed run continues the same sequence."""
    batches: dict[int, list] = {}

    def batch_for(s):
        e, k = 0, s
        while True:
            if e not in batches:
                batches[e] = make_batches(lfr_len, args.batch_frames, args.max_batch,
                                          random.Random(args.seed * 7919 + e))
            if k < len(batches[e]):
                return e, batches[e][k]
            k -= len(batches[e])
            e += 1
    return batch_for


class Progress:
    """The training log: running means over ``--log-every`` steps, and the schedule's length
    fitted to what is left of both budgets (``--steps 0``)."""

    def __init__(self, trainer: Trainer, auto_steps: bool):
        self.t, self.auto_steps = trainer, auto_steps
        args = trainer.args
        self.budget, self.wall_budget = args.max_minutes * 60, args.max_wall_minutes * 60
        self.wall_start = time.time()
        self.mark = (trainer.step, trainer.trained_seconds, time.time())
        self._reset()

    def _reset(self) -> None:
        self.sums = {"loss": 0.0, "acc": 0.0, "ctc": 0.0, "ad_ctc": 0.0}
        self.seen = self.n = 0
        self.t_log = time.time()

    def running(self) -> bool:
        t, args = self.t, self.t.args
        return ((not args.steps or t.step < args.steps) and t.trained_seconds < self.budget
                and time.time() - self.wall_start < self.wall_budget)

    def after_step(self, stats: dict, epoch: int, utterances: int) -> None:
        for k in self.sums:
            self.sums[k] += stats[k]
        self.seen += utterances
        self.n += 1
        if self.auto_steps and self.t.step - self.mark[0] >= (40 if not self.t.args.steps else 100):
            self._fit_schedule()
        if self.t.step % self.t.args.log_every == 0:
            self._log(stats, epoch)

    def _fit_schedule(self) -> None:
        """The schedule's length from the recent speed and what is left of both budgets."""
        t, args = self.t, self.t.args
        cpu_sps = (t.trained_seconds - self.mark[1]) / (t.step - self.mark[0])
        wall_sps = (time.time() - self.mark[2]) / (t.step - self.mark[0])
        left = min((self.budget - t.trained_seconds) / cpu_sps,
                   (self.wall_budget - (time.time() - self.wall_start)) / wall_sps)
        new_total = max(args.warmup + 100, t.step + int(0.97 * left))
        if not args.steps or abs(new_total - args.steps) > 0.05 * args.steps:
            print(f"[train_demo] {cpu_sps:.2f} s/step (idle-machine), {wall_sps:.2f} s/step "
                  f"(wall): schedule set to {new_total} steps", flush=True)
            args.steps = new_total
        self.mark = (t.step, t.trained_seconds, time.time())

    def _log(self, stats: dict, epoch: int) -> None:
        t, args, m = self.t, self.t.args, {k: v / self.n for k, v in self.sums.items()}
        dt = time.time() - self.t_log
        eta = min((args.steps - t.step) * dt / args.log_every if args.steps else self.budget,
                  self.wall_budget - (time.time() - self.wall_start))
        print(f"[train_demo] step {t.step}/{args.steps} epoch {epoch} loss {m['loss']:.3f} "
              f"tok-acc {m['acc']:.3f} ctc {m['ctc']:.2f} ad-ctc {m['ad_ctc']:.2f} "
              f"lr {t.lr_at(t.step):.2e} gnorm {stats['gnorm']:.2f} "
              f"{self.seen / dt:.1f} utt/s  {t.trained_seconds / 60:.1f} idle-min "
              f"({(time.time() - self.wall_start) / 60:.1f} wall-min), ~{eta / 60:.0f} min left",
              flush=True)
        self._reset()


def train(trainer: Trainer, train_set: list[dict], test_set: list[dict], auto_steps: bool) -> None:
    """Steps until the schedule or a budget ends, saving and evaluating on the way; then the
    last save, the final held-out CER of the last and the averaged weights, the export."""
    args, model = trainer.args, trainer.model
    feats, offsets = load_features(train_set, args.work / "fbank_train", args.threads)
    tfeats, toffsets = load_features(test_set, args.work / "fbank_test", args.threads)
    lfr_len = np.array([-(-(offsets[i + 1] - offsets[i]) // 6) for i in range(len(train_set))])
    batcher = Batcher(model, train_set, feats, offsets, args.seed)
    test_batcher = Batcher(model, test_set, tfeats, toffsets, args.seed)
    batch_for = epoch_batches(lfr_len, args)
    progress = Progress(trainer, auto_steps)
    while progress.running():
        cpu0 = time.process_time()
        epoch, idx = batch_for(trainer.step)
        f, lens, items = batcher.build(idx, trainer.step)
        stats = trainer.train_step(f, lens, items)
        trainer.step += 1
        trainer.trained_seconds += (time.process_time() - cpu0) / args.threads
        progress.after_step(stats, epoch, len(idx))
        if trainer.step % args.save_every == 0:
            trainer.save()
        if args.eval_every and trainer.step % args.eval_every == 0:
            c = quick_eval(model, test_set, tfeats, toffsets, test_batcher)
            print(f"[train_demo] step {trainer.step}: held-out CER (quick, 2/lang, ITN on, "
                  f"language given) {c * 100:.1f}%", flush=True)
    trainer.save()
    print(f"[train_demo] stopped at step {trainer.step} after "
          f"{trainer.trained_seconds / 60:.1f} min of training", flush=True)
    if trainer.ema is not None and args.eval_every:
        c = quick_eval(model, test_set, tfeats, toffsets, test_batcher)
        with trainer.averaged_weights():
            c_ema = quick_eval(model, test_set, tfeats, toffsets, test_batcher)
        print(f"[train_demo] held-out CER (quick): last weights {c * 100:.1f}%, "
              f"moving average (exported) {c_ema * 100:.1f}%", flush=True)
    trainer.export()


def main(argv=None):
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    auto_steps = not args.steps
    random.seed(args.seed)
    np.random.seed(args.seed)
    recs = read_manifests(args.data)
    train_set = [r for r in recs if r["split"] == "train"]
    test_set = [r for r in recs if r["split"] == "test"]
    print(f"[train_demo] {len(train_set)} training / {len(test_set)} held-out utterances, "
          f"{len({r['lang'] for r in train_set})} languages, "
          f"{sum(r['duration'] for r in train_set) / 3600:.2f} h of training audio", flush=True)
    model_dir, model, init_dir = setup_model(args, train_set)
    trainer = Trainer(args, model, model_dir)
    trainer.start(init_dir)
    if args.export_only:
        trainer.export()
        return
    train(trainer, train_set, test_set, auto_steps)


if __name__ == "__main__":
    main()
