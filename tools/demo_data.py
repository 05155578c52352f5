#!/usr/bin/env python3
"""Synthetic speech for the demo checkpoint: sentences of tools/demo_lang.py spoken by espeak-ng.

Each utterance gets a random espeak-ng voice variant (``-v en+f3``), speed (``-s``) and pitch
(``-p``), random silence around it, then (with numpy) white or low-passed noise at a random SNR and
a random gain.  Output: 16 kHz mono 16-bit wav files and ``manifest.jsonl`` with one line per
utterance::

  {"id", "lang", "split": "train"|"test", "kind": "plain"|"card"|"time"|..., "text_itn",
   "text_noitn", "say", "voice", "speed", "pitch", "snr_db", "gain_db", "duration", "wav"}

Held-out test sentences (split "test") are drawn first; no training sentence has the same text.
Everything is seeded: the same arguments give the same sentences and the same audio.

  python tools/demo_data.py                       # -> .cache/demo_data (about 30k utterances, 25 h)
  python tools/demo_data.py --train-per-lang 200  # a small set for a smoke test
  python tools/demo_data.py --examples example/   # also writes one clean clip per language

Needs the ``espeak-ng`` program (Debian: ``apt-get install -y espeak-ng``) and the Python packages
``num2words`` and ``pypinyin`` (requirements-demo.txt).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from engine import SAMPLE_RATE
from tools.demo_lang import LANGS, make_sentence, number_phrase

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / ".cache" / "demo_data"
SR = SAMPLE_RATE
MAX_SECONDS = 6.0

VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "croak",
            "klatt", "klatt2", "klatt3", "Alex", "Andy", "Annie", "david", "edward", "john", "linda",
            "max", "michel", "steph", "zac", "iven", "shelby", "travis", "victor", "grandma", "grandpa",
            "Mr", "paul", "rob", "aunty", "belinda", "benjamin"]
# Slower default speeds for the syllable-dense languages.
SPEED = {"zh": (120, 175), "yue": (120, 175), "ja": (130, 190), "ko": (120, 175)}


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synth(say: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng -> float32 mono at 16 kHz."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", tmp.name, say],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with wave.open(tmp.name) as f:
            sr, n = f.getframerate(), f.getnframes()
            pcm = np.frombuffer(f.readframes(n), dtype=np.int16).astype(np.float32) / 32768.0
    if sr != SR:
        import soxr
        pcm = soxr.resample(pcm, sr, SR).astype(np.float32)
    # trim espeak's own leading/trailing silence
    idx = np.flatnonzero(np.abs(pcm) > 1e-3)
    if len(idx):
        pcm = pcm[max(idx[0] - 160, 0): idx[-1] + 800]
    return pcm


def augment(pcm: np.ndarray, rng: np.random.Generator, clean: bool = False) -> tuple[np.ndarray, float, float]:
    lead, tail = (0.15, 0.2) if clean else (rng.uniform(0.03, 0.4), rng.uniform(0.05, 0.4))
    x = np.concatenate([np.zeros(int(lead * SR), np.float32), pcm, np.zeros(int(tail * SR), np.float32)])
    snr = float("inf")
    if not clean and rng.random() < 0.8:
        snr = float(rng.uniform(8, 40))
        noise = rng.standard_normal(len(x)).astype(np.float32)
        if rng.random() < 0.5:  # low-passed ("rumble"/babble-like) noise
            a = rng.uniform(0.8, 0.98)
            from scipy.signal import lfilter
            noise = lfilter([1 - a], [1, -a], noise).astype(np.float32)
        p_sig = float(np.mean(pcm ** 2)) + 1e-10
        noise *= np.sqrt(p_sig / (10 ** (snr / 10)) / (float(np.mean(noise ** 2)) + 1e-12))
        x = x + noise
    peak = float(np.max(np.abs(x))) + 1e-9
    gain_db = -3.0 if clean else float(rng.uniform(-24, 0))
    x = x / peak * 10 ** (gain_db / 20)
    return np.clip(x, -1, 1).astype(np.float32), snr, gain_db


def write_wav(path: Path, pcm: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SR)
        f.writeframes((pcm * 32767).round().astype(np.int16).tobytes())


def make_texts(lang: str, n_train: int, n_test: int, numeric_share: float, seed: int,
               phrase_share: float = 0.0):
    """Test sentences first (half with numbers), then training sentences never equal to one.

    The test sentences depend only on (lang, n_test, seed): the training options change what
    follows them, never them. ``phrase_share`` of the training clips are number phrases on their
    own (demo_lang.number_phrase); with 0 the random sequence is the one before that option
    existed, so older data sets regenerate unchanged."""
    rng = random.Random(f"{seed}-{lang}")
    test, seen = [], set()
    while len(test) < n_test:
        numeric = len(test) < n_test // 2
        form, kind = make_sentence(lang, rng, numeric, test=True)
        if form.noitn in seen:
            continue
        seen.add(form.noitn)
        test.append((form, kind))
    train = []
    while len(train) < n_train:
        if phrase_share and rng.random() < phrase_share:
            form, kind = number_phrase(lang, rng)
        else:
            form, kind = make_sentence(lang, rng, rng.random() < numeric_share)
        if form.noitn in seen or form.itn in seen:
            continue
        train.append((form, kind))
    return train, test


def _job(args):
    item, out_dir, clean = args
    rng = np.random.default_rng(item["seed"])
    spec = LANGS[item["lang"]]
    voice = spec["voices"][rng.integers(len(spec["voices"]))]
    variant = "" if clean else VARIANTS[rng.integers(len(VARIANTS))]
    lo, hi = SPEED.get(item["lang"], (135, 200))
    speed = 160 if clean else int(rng.integers(lo, hi + 1))
    pitch = 50 if clean else int(rng.integers(25, 76))
    v = voice + ("+" + variant if variant else "")
    pcm = synth(item["say"], v, speed, pitch)
    for _ in range(3):  # too long: speak faster
        if len(pcm) / SR <= MAX_SECONDS - 0.5:
            break
        speed = int(speed * 1.25)
        pcm = synth(item["say"], v, speed, pitch)
    if len(pcm) / SR > MAX_SECONDS - 0.3:
        return None
    x, snr, gain = augment(pcm, rng, clean)
    path = Path(out_dir) / item["wav"]
    write_wav(path, x)
    rec = {k: item[k] for k in ("id", "lang", "split", "kind", "text_itn", "text_noitn", "say", "wav")}
    rec.update(voice=v, speed=speed, pitch=pitch, snr_db=None if snr == float("inf") else round(snr, 1),
               gain_db=round(gain, 1), duration=round(len(x) / SR, 3))
    return rec


def build(out: Path, langs: list[str], n_train: int, n_test: int, numeric_share: float, seed: int,
          workers: int, phrase_share: float = 0.0) -> list[dict]:
    items = []
    for lang in langs:
        train, test = make_texts(lang, n_train, n_test, numeric_share, seed, phrase_share)
        for split, rows in (("test", test), ("train", train)):
            for i, (form, kind) in enumerate(rows):
                uid = f"{lang}-{split}-{i:05d}"
                items.append(dict(id=uid, lang=lang, split=split, kind=kind, text_itn=form.itn,
                                  text_noitn=form.noitn, say=form.say, wav=f"wav/{lang}/{uid}.wav",
                                  seed=int(hashlib.sha256(f"{seed}:{uid}".encode()).hexdigest()[:8], 16)))
    out.mkdir(parents=True, exist_ok=True)
    t0, recs, dropped = time.time(), [], 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, rec in enumerate(pool.map(_job, [(it, str(out), False) for it in items], chunksize=32)):
            if rec is None:
                dropped += 1
            else:
                recs.append(rec)
            if (i + 1) % 1000 == 0 or i + 1 == len(items):
                el = time.time() - t0
                print(f"[demo_data] {i + 1}/{len(items)} utterances, {el:.0f}s "
                      f"({(i + 1) / el:.1f}/s), {dropped} dropped (too long)", flush=True)
    with open(out / "manifest.jsonl", "w", encoding="utf-8") as f:
        for rec in recs:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    hours = sum(r["duration"] for r in recs) / 3600
    print(f"[demo_data] wrote {len(recs)} utterances ({hours:.2f} h) to {out / 'manifest.jsonl'}")
    return recs


def write_examples(manifest: Path, dest: Path, langs: list[str]) -> None:
    """One clean clip per language, from the held-out test sentences (numbers where possible)."""
    recs = [json.loads(line) for line in open(manifest, encoding="utf-8")]
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for lang in langs:
        tests = [r for r in recs if r["lang"] == lang and r["split"] == "test"]
        pick = next((r for r in tests if r["kind"] != "plain" and r["duration"] < 4.5), tests[0])
        item = dict(pick, seed=1234, split="example", wav=f"{lang}.wav")
        rec = _job((item, str(dest), True))
        rows.append((f"{lang}.wav", lang, rec["text_itn"], rec["text_noitn"]))
    with open(dest / "examples.tsv", "w", encoding="utf-8") as f:
        f.write("file\tlanguage\ttext_itn\ttext_noitn\n")
        for row in rows:
            f.write("\t".join(row) + "\n")
    print(f"[demo_data] wrote {len(rows)} example clips and examples.tsv to {dest}")


def main(argv=None):
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--langs", default=",".join(LANGS))
    ap.add_argument("--train-per-lang", type=int, default=2400)
    ap.add_argument("--test-per-lang", type=int, default=60)
    ap.add_argument("--numeric-share", type=float, default=0.45,
                    help="share of the training sentences with a number, date, time or amount")
    ap.add_argument("--phrase-share", type=float, default=0.0,
                    help="share of the training clips that are number phrases on their own "
                         "(the second stage of the recipe, models/demo/DEMO.md)")
    ap.add_argument("--seed", type=int, default=2512)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--examples", type=Path, help="also write one clean test clip per language here")
    ap.add_argument("--examples-only", action="store_true", help="reuse the existing manifest")
    args = ap.parse_args(argv)
    if not espeak_available():
        sys.exit("espeak-ng not found: apt-get install -y espeak-ng")
    langs = [x for x in args.langs.split(",") if x]
    if not args.examples_only:
        build(args.out, langs, args.train_per_lang, args.test_per_lang, args.numeric_share, args.seed,
              args.workers, args.phrase_share)
    if args.examples:
        write_examples(args.out / "manifest.jsonl", args.examples, langs)


if __name__ == "__main__":
    main()
