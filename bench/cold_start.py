#!/usr/bin/env python3
"""Cold CLI runs: ``transcribe.py`` started fresh for each run (start, load, transcribe, exit),
fp32 against int8, where int8 runs twice: first with an empty prepared-weights cache (it
quantises the checkpoint and writes the cache), then again (it maps the cache).

    python bench/cold_start.py [--model-dir DIR] [--cases 1x10s,8x10s] [--tokens 64]

Inputs are benchmark.py's (the shared English clips, the same offsets); the model is the
full-size random-weight directory unless --model-dir names one; the CPU kernels must already be
built (they are not what is timed). The OS page cache keeps model.pt and the int8 cache file
warm between runs, as on a server that restarts or a machine that runs the CLI often. Writes a
table to bench/results/<host>-cold-<date>.md (and .json).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import REPO, SR, build_inputs, loadavg, machine_info

LOADED = re.compile(r"loaded .* in ([0-9.]+) s")


def run_cli(model_dir: Path, files: list[str], dtype: str, tokens: int, env: dict) -> dict:
    cmd = [sys.executable, str(REPO / "transcribe.py"), "--model", str(model_dir), "--device",
           "cpu", "--dtype", dtype, "--max-new-tokens", str(tokens), "--batch-size",
           str(len(files)), *files]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    m = LOADED.search(p.stderr)
    results = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return {"wall_s": round(wall, 2), "load_s": float(m.group(1)) if m else None,
            "texts": [r["text"] for r in results],
            "cache_note": next((ln for ln in p.stderr.splitlines() if "int8 weights" in ln), None)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--cases", default="1x10s,8x10s")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--results-dir", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)
    if args.model_dir:
        model_dir = Path(args.model_dir)
    else:
        from tools.make_random_model import cached_random_model
        model_dir = cached_random_model("full", 1, ctc=False)

    from engine.kernels import kernels, state
    if kernels() is None:
        raise SystemExit(f"CPU kernels not available ({state()}); build them first: "
                         "python -m engine.kernels")
    started = _dt.datetime.now()
    cases = args.cases.split(",")
    inputs, desc = build_inputs(cases)
    import soundfile as sf

    rows = []
    with tempfile.TemporaryDirectory(prefix="cold-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FUNASR_NANO_PREPARED")}
        env["FUNASR_NANO_PREPARED_CACHE"] = str(Path(tmp) / "prepared")
        for case in cases:
            files = []
            for i, wave in enumerate(inputs[case]):
                files.append(str(Path(tmp) / f"{case}-{i}.wav"))
                sf.write(files[-1], wave, SR)
            for f in Path(tmp, "prepared").glob("*") if Path(tmp, "prepared").exists() else []:
                f.unlink()  # each case's first int8 run starts from an empty cache
            for label, dtype in (("fp32", "fp32"), ("int8, first run", "int8"),
                                 ("int8, second run", "int8")):
                r = run_cli(model_dir, files, dtype, args.tokens, env)
                rows.append({"case": case, "run": label, **r})
                print(f"{case:7s} {label:17s} wall {r['wall_s']:6.2f} s  load {r['load_s']} s",
                      flush=True)

    meta = {"started": started.isoformat(timespec="seconds"), "model_dir": str(model_dir),
            "tokens": args.tokens, "cases": cases, "inputs": desc,
            "machine": machine_info("cpu"), "loadavg_end": loadavg(),
            "kernels": state(), "command": " ".join(["bench/cold_start.py", *(argv or
                                                                                  sys.argv[1:])])}
    lines = [f"# Cold CLI runs, {meta['started']}", "",
             f"Machine: {meta['machine'].get('cpu')}, {meta['machine'].get('cpu_count')} cores, "
             f"torch {meta['machine'].get('torch')}; load average at the end "
             f"{meta['loadavg_end']}. Model: `{model_dir}` (full-size random weights), "
             f"{args.tokens} tokens per clip, one `transcribe.py` process per run "
             f"(`{meta['command']}`).", "",
             "| case | run | wall (start to exit) | load | vs fp32 wall |",
             "| --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        base = next(x for x in rows if x["case"] == r["case"] and x["run"] == "fp32")
        lines.append(f"| {r['case']} | {r['run']} | {r['wall_s']:.2f} s | {r['load_s']} s | "
                     f"{base['wall_s'] / r['wall_s']:.2f}x |")
    same = all(x["texts"] == next(y for y in rows if y["case"] == x["case"]
                                  and y["run"] == "int8, first run")["texts"]
               for x in rows if x["run"].startswith("int8"))
    lines += ["", f"int8 texts, second run (cached weights) vs first run (quantised at load): "
              f"{'identical' if same else 'DIFFERENT'}."]
    host = re.sub(r"[^A-Za-z0-9_.-]+", "_", socket.gethostname()) or "host"
    stem = Path(args.results_dir) / f"{host}-cold-{started.strftime('%Y%m%d-%H%M')}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print("\n".join(lines))
    print(f"written: {stem}.md")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
