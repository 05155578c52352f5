#!/usr/bin/env python3
"""This checkout against an earlier revision: the engine in turns with the earlier one, and
the app under concurrent clients from both trees, with bench/load.py.

    git worktree add --detach /tmp/prev c800c1d
    python bench/against_revision.py --tree /tmp/prev

1. This checkout's load.py with ``--baseline-rev`` (the earlier revision's files): its engine
   child and the earlier engine's run the lone 10 s clip and the 8-clip batch in turns, both
   loaded, so the ratio of each pair (this / earlier) is free of the machine's drift; the same
   run measures this checkout's app (lone, 8 clients at once, 10 s during a 1 min file) and each
   of its numbers against the engine measured right before it (the app's own overhead).
2. The earlier tree's load.py (PYTHONPATH set to it): the same app numbers for the earlier app.
The app's times depend on the load from other work; its ratios to the engine, measured in
turns within one run, are the comparable numbers. (bench/benchmark.py measures the same engine
call with more detail, but one side at a time: on a shared, loaded machine its runs drift more
than the difference looked for.) Results: bench/results/<host>-<date>-against-<rev>.md and .json.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._common import (REPO, RESULTS, loadavg, machine_info, machine_line, markdown_table,
                           safe_host, write_results)

LOAD_ARGS = ["--dtype", "int8", "--modes", "batch", "--clients", "8", "--tokens", "64",
             "--repeats", "2", "--long-minutes", "1"]


def run(tree: Path, script: str, args: list[str], log: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with open(log, "ab") as f:
        subprocess.run([sys.executable, str(tree / "bench" / script), *args], cwd=tree, env=env,
                       stdout=f, stderr=subprocess.STDOUT, check=True)


def load_numbers(folder: Path) -> dict:
    res = json.loads(next(folder.glob("*.json")).read_text())
    m = res["modes"][0]
    out = {"app lone p50 s": m["lone"]["p50"], "app lone / engine": m["lone"]["vs_engine"],
           "app 8 x 10 s wall s": m["concurrent"]["wall"],
           "app 8 x 10 s / engine batch": m["concurrent"]["vs_engine_batch"]}
    if "during_long" in m:
        out["app 10 s during long p50 s"] = m["during_long"]["p50"]
    return out


def run_info(folder: Path) -> str:
    res = json.loads(next(folder.glob("*.json")).read_text())
    return (f"started {res['started']}, load average {res['loadavg_start']} at the start, "
            f"{res['loadavg_end']} at the end")


def engine_numbers(folder: Path) -> dict:
    base = json.loads(next(folder.glob("*.json")).read_text())["baseline"]
    return {"engine lone, this / earlier (in turns)": base["ratio_lone"],
            "engine 8-clip batch, this / earlier (in turns)": base["ratio_batch"],
            "same texts": base["same_texts"]}


def engines_in_turns(tree: Path, rounds: int) -> dict:
    """Both engines loaded side by side (load.py's EngineWorker, the full-size int8 checkpoint,
    8 clips of 10 s, 64 tokens), the lone clip and the 8-clip batch run ABBA ``rounds`` times:
    {case: {"this": [s], "earlier": [s], "ratios": [this / earlier per round]}}."""
    import numpy as np

    from bench.load import EngineWorker, english_concat, wav_bytes, windows
    from engine.audio import load_audio
    from tools.make_random_model import cached_random_model
    args = argparse.Namespace(model_dir=cached_random_model("full", 1, ctc=False), dtype="int8",
                              tokens=64)
    concat, _ = english_concat()
    waves_path = Path(tempfile.mkdtemp(prefix="against-")) / "waves.npy"
    np.save(waves_path, np.stack([load_audio(wav_bytes(w), 16000)
                                  for w in windows(concat, 8, 10.0)]))
    workers = {"this": EngineWorker(args, REPO, waves_path),
               "earlier": EngineWorker(args, tree, waves_path)}
    out = {case: {"this": [], "earlier": [], "ratios": []} for case in ("lone", "batch")}
    try:
        for i in range(rounds):
            order = ("this", "earlier") if i % 2 == 0 else ("earlier", "this")
            for case in ("lone", "batch"):
                took = {side: workers[side].run(case) for side in order}
                for side, t in took.items():
                    out[case][side].append(t)
                out[case]["ratios"].append(took["this"] / took["earlier"])
                print(f"round {i + 1} {case}: this {took['this']:.2f} s, earlier "
                      f"{took['earlier']:.2f} s (load average {loadavg()})", flush=True)
        out["same_texts"] = workers["this"].texts == workers["earlier"].texts
    finally:
        for w in workers.values():
            w.close()
    return out


def engines_main(args, rev: str, here: str) -> int:
    started, la_start = _dt.datetime.now(), loadavg()
    res = engines_in_turns(args.tree.resolve(), args.rounds)
    rows = [[case, " / ".join(f"{t:.2f}" for t in res[case]["earlier"]),
             " / ".join(f"{t:.2f}" for t in res[case]["this"]),
             " / ".join(f"{r:.3f}" for r in res[case]["ratios"]),
             f"**{statistics.median(res[case]['ratios']):.3f}**"] for case in ("lone", "batch")]
    text = "\n".join([
        f"# The engine, this checkout ({here}) against {rev}, in turns ({started:%Y-%m-%d %H:%M})",
        "", f"Command: `python bench/against_revision.py {' '.join(sys.argv[1:])}`", "",
        f"{machine_line(machine_info('cpu'))}. Load average {la_start} at the start, "
        f"{loadavg()} at the end (other work shared the machine).", "",
        "Both engines loaded side by side (the full-size random checkpoint, int8, 64 tokens per "
        "sequence); each round runs the lone 10 s clip and the 8-clip batch on both, ABBA order. "
        f"Same texts: {'yes' if res['same_texts'] else 'NO'}.", "",
        *markdown_table(["case", f"{rev} s per round", f"{here} s per round",
                         "ratio per round", "median ratio"], rows, "lrrrr"), ""])
    print(text)
    write_results(args.results_dir / f"{safe_host()}-{started:%Y%m%d-%H%M}-engine-against-{rev}",
                  text, res)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", required=True, type=Path, help="a checkout of the earlier revision")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--engines-only", action="store_true",
                   help="only the two engines side by side, ABBA, --rounds times")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--this-results", type=Path, help="a finished step 1 (its --results-dir): "
                   "not run again")
    p.add_argument("--earlier-results", type=Path, help="a finished step 2 (the earlier tree's "
                   "load.py with these settings, e.g. run at the same time): not run again")
    args = p.parse_args(argv)
    rev = subprocess.run(["git", "-C", str(args.tree), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=True).stdout.strip()
    here = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    if args.engines_only:
        return engines_main(args, rev, here)
    work = Path(tempfile.mkdtemp(prefix="against-"))
    started, la_start = _dt.datetime.now(), loadavg()
    this_dir, earlier_dir = args.this_results or work / "this", args.earlier_results or work / "earlier"
    if not args.this_results:
        print(f"this checkout, with the earlier engine in turns; load average {la_start}",
              flush=True)
        run(REPO, "load.py", [*LOAD_ARGS, "--baseline-rev", rev, "--results-dir", str(this_dir)],
            work / "this.log")
    if not args.earlier_results:
        print(f"the earlier tree; load average {loadavg()}", flush=True)
        run(args.tree.resolve(), "load.py", [*LOAD_ARGS, "--results-dir", str(earlier_dir)],
            work / "earlier.log")
    this, earlier = load_numbers(this_dir), load_numbers(earlier_dir)
    engine = engine_numbers(this_dir)
    rows = [[k, f"{earlier[k]:.3f}", f"{this[k]:.3f}", f"**{this[k] / earlier[k]:.3f}**"]
            for k in this if k in earlier]
    la_end = loadavg()
    text = "\n".join([
        f"# This checkout ({here}) against {rev} ({started:%Y-%m-%d %H:%M})", "",
        f"Command: `python bench/against_revision.py {' '.join(argv or sys.argv[1:])}`", "",
        f"{machine_line(machine_info('cpu'))}. Load average {la_start} at the start, {la_end} "
        "at the end: other work shared this machine, so the times are slow and noisy; compare "
        "the ratios.", "",
        f"load.py {' '.join(LOAD_ARGS)}, the full-size random checkpoint. The engines in turns "
        f"(this checkout's run, --baseline-rev {rev}): lone 10 s clip this / earlier "
        f"**{engine['engine lone, this / earlier (in turns)']:.3f}**, 8-clip batch "
        f"**{engine['engine 8-clip batch, this / earlier (in turns)']:.3f}**, same texts: "
        f"{'yes' if engine['same texts'] else 'NO'}.", "",
        f"This checkout's run: {run_info(this_dir)}. The earlier tree's run: "
        f"{run_info(earlier_dir)}.", "",
        "The app (each tree's own run; \"/ engine\": against its own engine measured just "
        "before, in the same run):", "",
        *markdown_table(["metric", rev, here, f"{here} / {rev}"], rows, "lrrr"), ""])
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    write_results(args.results_dir / f"{safe_host()}-{started:%Y%m%d-%H%M}-against-{rev}", text,
                  {"earlier": rev, "this": here, "engine": engine,
                   "app": {"earlier": earlier, "this": this}, "loadavg": [la_start, la_end]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
