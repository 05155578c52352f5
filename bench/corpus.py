#!/usr/bin/env python3
"""Corpus throughput: the single-process CLI against ``transcribe.py --ray`` with 1 and 2
model replicas, on the same files, in one run.

    flock -x /work/locks/cpu.lock python bench/corpus.py                  # full-size random model
    python bench/corpus.py --files 32 --seconds 10 --max-new-tokens 32 --model DIR

Each case is a fresh ``python transcribe.py`` process, timed from start to exit, so model loads
and (for Ray) starting a local cluster and its replicas are included; Ray's own summary line
also gives the time to its first result. The Ray cases split the machine's cores among the
replicas (1 replica x all cores, 2 replicas x half). The corpus is real speech clips
(shared/data/speech) joined into files of about ``--seconds`` each. Writes
``bench/results/corpus-<host>-<date>.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from bench._common import REPO as ROOT, find_speech_dir, machine_info

SPEECH = find_speech_dir("manifest.tsv")
# Ray on loopback only, no usage reports, no token between our own processes.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled"}


def make_corpus(out: Path, n: int, seconds: float) -> float:
    from engine.audio import load_audio

    clips = [load_audio(SPEECH / line.split("\t")[0]) for line in
             (SPEECH / "manifest.tsv").read_text().splitlines()[1:] if line.strip()]
    total = 0.0
    for i in range(n):
        parts, k = [], i
        while sum(len(p) for p in parts) < seconds * 16000:
            parts += [clips[k % len(clips)], np.zeros(4000, np.float32)]
            k += 3
        wave = np.concatenate(parts)[: int(seconds * 16000)]
        sf.write(out / f"f{i:03d}.wav", wave, 16000)
        total += len(wave) / 16000
    return total


def run_case(name: str, cmd: list[str], env: dict) -> dict:
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    first = re.search(r"first results after ([\d.]+) s", proc.stderr)
    summary = next((line for line in proc.stderr.splitlines() if line.startswith("ray: ")), "")
    steady = re.search(r"after them .*\(([\d.]+)x real time\)$", summary)
    return {"case": name, "wall_s": round(wall, 2),
            "first_result_s": float(first.group(1)) if first else None,
            "steady_rtfx": float(steady.group(1)) if steady and first else None,
            "load_before": round(load0, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--model", default=None,
                   help="model directory (default: the full-size random-weight model)")
    p.add_argument("--files", type=int, default=32, help="files in the corpus (default: 32)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each (default: 10)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="per file (default: 32)")
    p.add_argument("--batch-size", type=int, default=8, help="(default: 8)")
    p.add_argument("--dtype", default="fp32", help="(default: fp32)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"), help="results folder")
    args = p.parse_args(argv)
    if SPEECH is None:
        raise SystemExit("no speech clips: ../shared/data/speech is missing")
    if args.model is None:
        from tools.make_random_model import cached_random_model
        args.model = str(cached_random_model("full", 1, ctc=False))
    cores = os.cpu_count() or 2
    env = {**os.environ, **RAY_ENV}
    env.pop("RAY_ADDRESS", None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="corpus-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        audio_s = make_corpus(data, args.files, args.seconds)
        files = sorted(str(f) for f in data.glob("*.wav"))
        common = ["--model", args.model, "--dtype", args.dtype, "--batch-size",
                  str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens), "--quiet"]
        cli = [sys.executable, str(ROOT / "transcribe.py")]
        cases = [("single process (transcribe.py)", cli + common + files)]
        for replicas in (1, 2):
            cases.append((f"ray, {replicas} replica(s) x {cores // replicas} CPU",
                          cli + ["--ray", "--replicas", str(replicas), "--num-cpus",
                                 str(cores // replicas), "--output-dir",
                                 str(Path(tmp) / f"out{replicas}")] + common + [str(data)]))
        for name, cmd in cases:
            print(f"{name} ...", file=sys.stderr, flush=True)
            row = run_case(name, cmd, env)
            row["audio_s"] = round(audio_s, 1)
            row["rtfx"] = round(audio_s / row["wall_s"], 2)
            rows.append(row)
            print(f"  {row}", file=sys.stderr, flush=True)
    base = rows[0]["wall_s"]
    stamp = time.strftime("%Y%m%d-%H%M")
    info = {**machine_info(), "model": args.model, "dtype": args.dtype, "files": args.files,
            "seconds": args.seconds, "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size, "date": stamp, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"corpus-{info['host']}-{stamp}"
    (out / f"{name}.json").write_text(json.dumps(info, indent=2) + "\n")
    lines = [f"# Corpus throughput, {stamp}", "",
             f"Machine: {info['host']}, {info['cpu']}, {info['cpu_count']} cores; Python "
             f"{info['python']}. Model: `{Path(args.model).name}` ({args.dtype}), "
             f"{args.files} files x {args.seconds:g} s of real speech, at most "
             f"{args.max_new_tokens} tokens each, batch size {args.batch_size}. Each case is "
             "one fresh process, timed start to exit (loads and Ray start-up included). "
             "For Ray, \"after them\": the files that arrived after the first batch of results, "
             "over the time from that batch to the last (the running pool's throughput).", "",
             "| case | wall | audio / wall | first results after | audio / time after them | "
             "wall vs single process | load avg before |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        first = "-" if r["first_result_s"] is None else f"{r['first_result_s']:.1f} s"
        steady = "-" if r["steady_rtfx"] is None else f"{r['steady_rtfx']:.1f}x"
        lines.append(f"| {r['case']} | {r['wall_s']:.1f} s | {r['rtfx']:.2f}x | {first} | "
                     f"{steady} | {base / r['wall_s']:.2f}x | {r['load_before']} |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten: {out / name}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
