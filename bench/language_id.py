#!/usr/bin/env python3
"""How well engine.language_id tells the language heard: text side over the model's 31
languages, audio side on the 12 example clips with the demo checkpoint.

    python bench/language_id.py [--per-language 40] [--no-audio] [--no-write]

Text side: for the demo's 12 languages, sentences from its own generator (tools/demo_lang.py,
held-out test sentences, half with numbers, each in its ITN form as the model writes it with ITN
on and its spoken form as with ITN off); for the other 19, the sentences in
bench/data/language_texts.tsv (written for this project). Each sentence is classified whole and
cut to its first 3 words (CJK and Thai: first 6 characters), the short answers a live partial or
a one-word reply gives. Accuracy per language and the share the label would send to the second,
spoken-form decode (text probability under AUDIO_CHECK_BELOW).

Audio side: the 12 clips of example/ through FunASRNano.transcribe with no language, and, side
by side in the same run, with their language given: the language reported, its probability,
whether the spoken-form decode was needed, and the time with / without detection.

Writes bench/results/language-id-<host>-<stamp>.md and .json.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import time
from datetime import datetime, timezone

from bench._common import REPO, RESULTS, machine_info, machine_line
from engine import language_id
from engine.languages import LANGUAGES

TEXTS = REPO / "bench" / "data" / "language_texts.tsv"
EXAMPLES = REPO / "example"
DEMO = REPO / "models" / "demo"
NO_SPACES = {"zh", "yue", "ja", "th"}


def demo_sentences(n: int) -> dict[str, list[str]]:
    from tools.demo_lang import LANGS, make_sentence
    out = {}
    for lang in LANGS:
        rng = random.Random(f"langid-{lang}")
        texts = []
        for i in range(n):
            form, _ = make_sentence(lang, rng, numeric=i % 2 == 0, test=True)
            texts += [form.itn, form.noitn]
        out[lang] = texts
    return out


def written_sentences() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with open(TEXTS, encoding="utf-8") as f:
        rows = csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t")
        for row in rows:
            out.setdefault(row["lang"], []).append(row["text"])
    return out


def short(text: str, lang: str) -> str:
    return text[:6] if lang in NO_SPACES else " ".join(text.split()[:3])


def text_side(per_language: int) -> dict:
    texts = {**written_sentences(), **demo_sentences(per_language)}
    missing = [x.code for x in LANGUAGES if x.code not in texts]
    assert not missing, f"no sentences for {missing}"
    table = {}
    for lang in [x.code for x in LANGUAGES]:
        row = {"n": len(texts[lang]), "source": "generator" if lang in demo_sentences(1)
               else "written"}
        for kind in ("full", "short"):
            ok = unsure = 0
            confusions: dict[str, int] = {}
            for t in texts[lang]:
                t = t if kind == "full" else short(t, lang)
                scores = language_id.text_scores(t)
                got = scores[0][0] if scores else "auto"
                ok += got == lang
                unsure += language_id.unsure(scores)
                if got != lang:
                    confusions[got] = confusions.get(got, 0) + 1
            row[kind] = {"correct": ok, "unsure": unsure, "confused_with": confusions}
        if row["source"] == "generator":   # (ITN form, spoken form) pairs: the whole method
            pairs = list(zip(texts[lang][0::2], texts[lang][1::2]))
            ok = 0
            for itn, spoken in pairs:
                second = spoken if language_id.unsure(language_id.text_scores(itn)) else None
                found = language_id.detect(itn, second)
                ok += bool(found) and found["language"] == lang
            row["itn_with_spoken"] = {"correct": ok, "n": len(pairs)}
        table[lang] = row
    return table


def audio_side() -> dict:
    from engine.audio import load_audio
    from model import FunASRNano

    with open(EXAMPLES / "examples.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    m = FunASRNano.from_pretrained(str(DEMO), device="cpu", dtype="fp32")
    files = [str(EXAMPLES / r["file"]) for r in rows]
    waves = [load_audio(p, 16000) for p in files]
    m.transcribe(waves[:2], max_new_tokens=96)   # warm-up
    best = {"given": [float("inf")] * len(waves), "auto": [float("inf")] * len(waves)}
    auto = [None] * len(waves)
    for _ in range(5):   # clip by clip, given then not given: both see the same noise
        for i, (w, r) in enumerate(zip(waves, rows)):
            t0 = time.perf_counter()
            m.transcribe([w], language=r["language"], max_new_tokens=96)
            best["given"][i] = min(best["given"][i], time.perf_counter() - t0)
            t0 = time.perf_counter()
            auto[i] = m.transcribe([w], max_new_tokens=96)[0]
            best["auto"][i] = min(best["auto"][i], time.perf_counter() - t0)
    times = {k: [sum(v)] for k, v in best.items()}
    clips = []
    for r, res in zip(rows, auto):
        scores = language_id.text_scores(res["text"])
        clips.append({"file": r["file"], "expected": r["language"], "text": res["text"],
                      "reported": res["language"], "probability": res.get("language_probability"),
                      "text_only": scores[0][0] if scores else "auto",
                      "text_probability": round(scores[0][1], 3) if scores else None,
                      "spoken_form_decode": language_id.unsure(scores)})
    return {"clips": clips, "seconds": {k: min(v) for k, v in times.items()}}


def report(info: dict) -> str:
    m = info["machine"]
    lines = [f"# Language heard: engine.language_id ({info['started']})", "",
             f"{machine_line(m)}. py3langid {info['py3langid']}; unsure below "
             f"{language_id.AUDIO_CHECK_BELOW:g}.", "",
             "## Text side: 31 languages", "",
             "| language | sentences | source | full: correct | full: unsure | first 3 words: "
             "correct | short: unsure | confused with (full; short) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    tot = {"n": 0, "full": 0, "short": 0, "fu": 0, "su": 0}
    for lang, r in info["text"].items():
        f, s = r["full"], r["short"]
        conf = ", ".join(f"{k} {v}" for k, v in f["confused_with"].items()) or "-"
        conf_s = ", ".join(f"{k} {v}" for k, v in s["confused_with"].items()) or "-"
        lines.append(f"| {lang} | {r['n']} | {r['source']} | {f['correct']}/{r['n']} | "
                     f"{f['unsure']} | {s['correct']}/{r['n']} | {s['unsure']} | "
                     f"{conf}; {conf_s} |")
        tot["n"] += r["n"]
        tot["full"] += f["correct"]
        tot["short"] += s["correct"]
        tot["fu"] += f["unsure"]
        tot["su"] += s["unsure"]
    lines += [f"| **all** | {tot['n']} | | **{tot['full']}/{tot['n']} "
              f"({tot['full'] / tot['n']:.1%})** | {tot['fu']} | "
              f"**{tot['short']}/{tot['n']} ({tot['short'] / tot['n']:.1%})** | {tot['su']} | |"]
    per = info["text"].values()
    macro_f = sum(r["full"]["correct"] / r["n"] for r in per) / len(per)
    macro_s = sum(r["short"]["correct"] / r["n"] for r in per) / len(per)
    written = [r for r in per if r["source"] == "written"]
    w_ok = sum(r["full"]["correct"] for r in written)
    w_n = sum(r["n"] for r in written)
    lines += ["", f"Mean of the 31 per-language accuracies: whole sentences **{macro_f:.1%}**, "
              f"first 3 words {macro_s:.1%}. The 19 written-sentence languages alone: "
              f"{w_ok}/{w_n} ({w_ok / w_n:.1%}). \"unsure\": the text probability is under "
              f"{language_id.AUDIO_CHECK_BELOW:g}, so with audio at hand the clip would be "
              f"decoded once more with ITN off."]
    gen = {k: r for k, r in info["text"].items() if "itn_with_spoken" in r}
    lines += ["", "The whole method on the generator's sentences: the ITN form (what the model "
              "writes by default), and where that is unsure its spoken form (what the second "
              "decode gives):", "", "| " + " | ".join(gen) + " | all |",
              "| " + " | ".join("---" for _ in gen) + " | --- |",
              "| " + " | ".join(f"{r['itn_with_spoken']['correct']}/{r['itn_with_spoken']['n']}"
                                for r in gen.values())
              + f" | {sum(r['itn_with_spoken']['correct'] for r in gen.values())}/"
                f"{sum(r['itn_with_spoken']['n'] for r in gen.values())} |"]
    if info.get("audio"):
        a = info["audio"]
        ok = sum(c["reported"] == c["expected"] for c in a["clips"])
        ok_text = sum(c["text_only"] == c["expected"] for c in a["clips"])
        lines += ["", "## Audio side: the 12 example clips, demo model, no language given", "",
                  "| clip | transcript | text alone | text p | spoken-form decode | reported "
                  "| p |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for c in a["clips"]:
            mark = "" if c["reported"] == c["expected"] else " (wrong)"
            lines.append(f"| {c['file']} | {c['text']} | {c['text_only']} | "
                         f"{c['text_probability']} | {'yes' if c['spoken_form_decode'] else '-'} "
                         f"| {c['reported']}{mark} | {c['probability']} |")
        g, au = a["seconds"]["given"], a["seconds"]["auto"]
        lines += ["", f"Reported correctly: **{ok}/12** (text alone: {ok_text}/12). "
                  f"Time for the 12 clips one by one (each clip's best of 5, given and not "
                  f"given alternating clip by clip in one run, summed): "
                  f"language given {g:.2f} s, not given (with detection and the spoken-form "
                  f"decodes) {au:.2f} s: ratio {au / g:.2f}."]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--per-language", type=int, default=40,
                   help="generated sentences per demo language (each in 2 forms; default: 40)")
    p.add_argument("--no-audio", action="store_true", help="text side only")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    from importlib.metadata import version
    info = {"started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_info("cpu"), "py3langid": version("py3langid"),
            "text": text_side(args.per_language)}
    if not args.no_audio:
        info["audio"] = audio_side()
    text = report(info)
    print(text)
    if not args.no_write:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M")
        out = RESULTS / f"language-id-{info['machine']['host']}-{stamp}"
        out.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
        print(f"\nwrote {out}.md / .json")


if __name__ == "__main__":
    main()
