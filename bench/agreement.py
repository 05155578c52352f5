#!/usr/bin/env python3
"""How far each fast mode's transcripts are from fp32, on a checkpoint with trained weights.

The speed benchmark compares modes on random weights, whose nearly flat logits make any rounding
flip tokens; that overstates the loss. This script runs a trained checkpoint (by default the demo
checkpoint, models/demo) over real clips in every mode the device offers and prints, per mode:
how many clips get exactly the fp32 text, the character error rate between that mode's text and
fp32's, and each mode's CER against the expected transcripts.

    python bench/agreement.py                              # models/demo, example/ clips
    python bench/agreement.py --heldout 20                 # + 20 held-out clips per language
    python bench/agreement.py --model-dir DIR --clips a.wav b.wav --language en

Clips: example/examples.tsv (file, language, text_itn, ...), plus with ``--heldout N`` the first
N held-out utterances per language of tools/demo_data.py's manifest (.cache/demo_data).
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from bench._common import REPO


def clips_from_args(args) -> list[dict]:
    clips = []
    if args.clips:
        return [{"path": str(p), "language": args.language, "expected": None} for p in args.clips]
    with open(REPO / "example" / "examples.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            clips.append({"path": str(REPO / "example" / row["file"]), "language": row["language"],
                          "expected": row["text_itn"]})
    manifest = Path(args.data) / "manifest.jsonl"
    if args.heldout and manifest.is_file():
        per = {}
        for line in manifest.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r["split"] == "test" and per.get(r["lang"], 0) < args.heldout:
                per[r["lang"]] = per.get(r["lang"], 0) + 1
                clips.append({"path": str(Path(args.data) / r["wav"]), "language": r["lang"],
                              "expected": r["text_itn"]})
    return clips


def main(argv=None) -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default=str(REPO / "models" / "demo"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--modes", help="comma-separated; default: fp32 + the device's other modes")
    p.add_argument("--clips", nargs="+", help="audio files instead of example/")
    p.add_argument("--language", default="auto", help="with --clips")
    p.add_argument("--heldout", type=int, default=0)
    p.add_argument("--data", default=str(REPO / ".cache" / "demo_data"))
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)

    import torch

    from tools.eval_demo import cer_counts
    from model import FunASRNano

    torch.set_num_threads(torch.get_num_threads())
    modes = (args.modes.split(",") if args.modes else
             ["fp32", "bf16"] + (["int8"] if args.device == "cpu" else []))
    clips = clips_from_args(args)
    by_lang = {}
    for i, c in enumerate(clips):
        by_lang.setdefault(c["language"], []).append(i)
    texts, secs = {}, {}
    for mode in modes:
        asr = FunASRNano.from_pretrained(args.model_dir, device=args.device, dtype=mode)
        out = [None] * len(clips)
        t0 = time.perf_counter()
        for lang, idx in by_lang.items():  # one language per call: the prompt names it
            res = asr.transcribe([clips[i]["path"] for i in idx], language=lang, itn=True,
                                 batch_size=args.batch_size)
            for i, r in zip(idx, res):
                if r.get("error"):
                    raise SystemExit(f"{clips[i]['path']}: {r['error']}")
                out[i] = r["text"]
        secs[mode] = time.perf_counter() - t0
        texts[mode] = out
        del asr

    def cer(refs, hyps, langs):
        e = n = 0
        for r, h, lang in zip(refs, hyps, langs):
            if r is None:
                continue
            de, dn = cer_counts(r, h, lang)
            e, n = e + de, n + dn
        return e / max(n, 1)

    langs = [c["language"] for c in clips]
    expected = [c["expected"] for c in clips]
    print(f"Model {args.model_dir}, device {args.device}, {len(clips)} clips "
          f"({len(by_lang)} languages), ITN on, language given, greedy.\n")
    print("| mode | clips with the fp32 text | CER vs fp32 | CER vs expected | wall s |")
    print("|---|---:|---:|---:|---:|")
    for mode in modes:
        same = sum(a == b for a, b in zip(texts["fp32"], texts[mode]))
        print(f"| {mode} | {same}/{len(clips)} | {cer(texts['fp32'], texts[mode], langs) * 100:.2f}% "
              f"| {cer(expected, texts[mode], langs) * 100:.1f}% | {secs[mode]:.1f} |")
    diffs = [(i, m) for m in modes for i in range(len(clips)) if texts[m][i] != texts["fp32"][i]]
    if diffs:
        print("\nDiffering clips:")
        for i, m in diffs[:20]:
            print(f"- {Path(clips[i]['path']).name} {m}: {texts[m][i]!r} (fp32: {texts['fp32'][i]!r})")


if __name__ == "__main__":
    main()
