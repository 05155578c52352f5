#!/usr/bin/env python3
"""Evaluate the demo checkpoint on the held-out synthetic test set, through the app's code path.

Loads the model with ``FunASRNano.from_pretrained`` (exactly as the app and the CLI do) and
transcribes every held-out utterance of ``.cache/demo_data/manifest.jsonl`` four times: with and
without the language in the prompt, ITN on and off.  The reference is ``text_itn`` with ITN on,
``text_noitn`` (numbers as words) with ITN off.  Prints

  * a per-language CER table (markdown) for the four conditions, with the mean over languages;
  * the ITN switch rate: of the held-out sentences with numbers, dates, times or amounts, the
    share where ITN on writes digits and ITN off writes none (language given);
  * of those sentences, how many come back exactly right (language given, ITN on): a wrong
    number is the demo's commonest error, and one wrong digit costs a short sentence little CER;
  * the bundled examples (example/examples.tsv): which of them come back exactly as expected,
    language given, ITN on and off.

CER: Levenshtein distance over characters after NFKC, lower-casing and removing punctuation;
whitespace is dropped for zh / yue / ja and collapsed elsewhere.

  python tools/eval_demo.py [--model models/demo] [--data .cache/demo_data] [--json out.json]
  python tools/eval_demo.py --conditions lang-itn     # one condition only: a quicker check
"""
from __future__ import annotations

import argparse
import json
import re
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NO_SPACE = {"zh", "yue", "ja", "th"}


def normalize(text: str, lang: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    if lang in NO_SPACE:
        return re.sub(r"\s+", "", text)
    return re.sub(r"\s+", " ", text).strip()


def cer_counts(ref: str, hyp: str, lang: str) -> tuple[int, int]:
    from rapidfuzz.distance import Levenshtein
    r, h = normalize(ref, lang), normalize(hyp, lang)
    return Levenshtein.distance(r, h), max(len(r), 1)


def has_digit(text: str) -> bool:
    return any(c.isdigit() for c in text)


CONDITIONS = (("lang", True), ("lang", False), ("auto", True), ("auto", False))
EXAMPLES = ROOT / "example"


def condition_name(mode: str, itn: bool) -> str:
    return f"{mode}-{'itn' if itn else 'noitn'}"


def read_examples(folder: Path = EXAMPLES) -> list[dict]:
    import csv
    with open(folder / "examples.tsv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def check_examples(asr, folder: Path = EXAMPLES) -> list[dict]:
    """Each bundled example, language given, ITN on and off: the output and whether it is
    exactly the expected transcript."""
    rows = read_examples(folder)
    out = []
    for itn in (True, False):
        for r in rows:  # one at a time, as the page and the CLI run an example
            [o] = asr.transcribe([str(folder / r["file"])], language=r["language"], itn=itn,
                                 max_new_tokens=96)
            ref = r["text_itn"] if itn else r["text_noitn"]
            out.append({"file": r["file"], "itn": itn, "expected": ref, "text": o["text"],
                        "exact": o["text"] == ref})
    return out


def evaluate(model_dir: Path, data_dir: Path, batch_size: int = 16, limit: int | None = None,
             conditions=CONDITIONS) -> dict:
    from model import FunASRNano

    recs = [json.loads(line) for line in open(data_dir / "manifest.jsonl", encoding="utf-8")]
    test = [r for r in recs if r["split"] == "test"]
    langs = list(dict.fromkeys(r["lang"] for r in test))
    if limit:
        test = [r for lang in langs for r in [x for x in test if x["lang"] == lang][:limit]]
    asr = FunASRNano.from_pretrained(str(model_dir), device="cpu")
    t0 = time.time()
    hyps: dict[tuple, dict[str, str]] = {}
    for mode, itn in conditions:
        for lang in langs:
            rows = [r for r in test if r["lang"] == lang]
            out = asr.transcribe([str(data_dir / r["wav"]) for r in rows],
                                 language=lang if mode == "lang" else None, itn=itn,
                                 batch_size=batch_size, max_new_tokens=96)
            for r, o in zip(rows, out):
                hyps[(mode, itn, r["id"])] = o["text"]
    seconds = time.time() - t0
    table = {}
    for lang in langs:
        rows = [r for r in test if r["lang"] == lang]
        table[lang] = {}
        for mode, itn in conditions:
            e = n = 0
            for r in rows:
                de, dn = cer_counts(r["text_itn"] if itn else r["text_noitn"], hyps[(mode, itn, r["id"])], lang)
                e, n = e + de, n + dn
            table[lang][condition_name(mode, itn)] = e / n
        nums = [r for r in rows if r["kind"] != "plain"]
        if ("lang", True) in conditions and ("lang", False) in conditions:
            ok = sum(1 for r in nums if has_digit(hyps[("lang", True, r["id"])])
                     and not has_digit(hyps[("lang", False, r["id"])]))
            table[lang]["itn_switch"] = (ok, len(nums))
        if ("lang", True) in conditions:
            table[lang]["numbers_exact"] = (sum(hyps[("lang", True, r["id"])] == r["text_itn"] for r in nums),
                                            len(nums))
    # where the errors are: plain sentences vs those with numbers (language given, ITN on)
    by_kind = {}
    first = conditions[0]
    for kind, pick in (("plain", lambda r: r["kind"] == "plain"), ("numbers", lambda r: r["kind"] != "plain")):
        e = n = 0
        for r in test:
            if pick(r):
                de, dn = cer_counts(r["text_itn"] if first[1] else r["text_noitn"], hyps[(*first, r["id"])],
                                    r["lang"])
                e, n = e + de, n + dn
        by_kind[kind] = e / max(n, 1)
    examples = {lang: [(r["text_itn"], hyps.get(("lang", True, r["id"])), r["text_noitn"],
                        hyps.get(("lang", False, r["id"]))) for r in test if r["lang"] == lang][:2]
                for lang in langs}
    return {"table": table, "langs": langs, "n_test": len(test), "seconds": seconds,
            "conditions": [condition_name(m, i) for m, i in conditions], "by_kind": by_kind,
            "by_kind_condition": condition_name(*first), "examples": examples,
            "bundled": check_examples(asr)}


HEADINGS = {"lang-itn": "CER, language given, ITN on", "lang-noitn": "language given, ITN off",
            "auto-itn": "no language, ITN on", "auto-noitn": "no language, ITN off",
            "itn_switch": "ITN on → digits, off → words",
            "numbers_exact": "number sentences exactly right (language given, ITN on)"}


def format_table(res: dict) -> str:
    cols = res["conditions"]
    counts = [c for c in ("itn_switch", "numbers_exact") if c in res["table"][res["langs"][0]]]
    lines = ["| language | " + " | ".join(HEADINGS[c] for c in cols + counts) + " |",
             "|" + "---|" * (1 + len(cols) + len(counts))]
    sums = {c: 0.0 for c in cols}
    totals = {c: [0, 0] for c in counts}
    for lang in res["langs"]:
        row = res["table"][lang]
        cells = []
        for c in cols:
            sums[c] += row[c]
            cells.append(f"{row[c] * 100:.1f}%")
        for c in counts:
            ok, n = row[c]
            totals[c][0] += ok
            totals[c][1] += n
            cells.append(f"{ok}/{n}")
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    k = len(res["langs"])
    lines.append("| **mean** | " + " | ".join(
        [f"**{sums[c] / k * 100:.1f}%**" for c in cols]
        + [f"**{ok}/{n} = {ok / max(n, 1) * 100:.0f}%**" for ok, n in totals.values()]) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "demo")
    ap.add_argument("--data", type=Path, default=ROOT / ".cache" / "demo_data")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--limit", type=int, help="at most this many test utterances per language")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--conditions", default=",".join(condition_name(m, i) for m, i in CONDITIONS),
                    help="comma-separated, of " + ", ".join(condition_name(m, i) for m, i in CONDITIONS))
    args = ap.parse_args(argv)
    by_name = {condition_name(m, i): (m, i) for m, i in CONDITIONS}
    names = [c for c in args.conditions.split(",") if c]
    unknown = [c for c in names if c not in by_name]
    if unknown or not names:
        ap.error(f"--conditions: unknown {unknown or names}; choose from {', '.join(by_name)}")
    res = evaluate(args.model, args.data, args.batch_size, args.limit, tuple(by_name[c] for c in names))
    print(f"held-out synthetic test set: {res['n_test']} utterances, {len(res['langs'])} languages, "
          f"{len(names)} condition(s) decoded in {res['seconds']:.0f} s\n")
    print(format_table(res))
    print(f"\nCER by sentence kind (all languages pooled, {HEADINGS[res['by_kind_condition']].removeprefix('CER, ')}): "
          + ", ".join(f"{k} {v * 100:.1f}%" for k, v in res["by_kind"].items()))
    bundled = res["bundled"]
    for itn in (True, False):
        rows = [b for b in bundled if b["itn"] == itn]
        print(f"\nbundled examples (example/), language given, ITN {'on' if itn else 'off'}: "
              f"{sum(b['exact'] for b in rows)}/{len(rows)} exactly as expected")
        for b in rows:
            if not b["exact"]:
                print(f"  {b['file']}: {b['text']!r}, expected {b['expected']!r}")
    print("\nexamples (reference -> output, ITN on | ITN off):")
    for lang, ex in res["examples"].items():
        for ref_on, hyp_on, ref_off, hyp_off in ex:
            print(f"  {lang}: {ref_on!r} -> {hyp_on!r} | {ref_off!r} -> {hyp_off!r}")
    if args.json:
        args.json.write_text(json.dumps(res, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
