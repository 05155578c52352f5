#!/usr/bin/env python3
"""This checkout against an earlier revision, in turns: bench/benchmark.py (the engine) and
bench/load.py (the app under concurrent clients), each run from both trees alternately, so
that drift in the speed of a shared machine hits both sides alike.

    git worktree add --detach /tmp/prev c800c1d
    python bench/against_revision.py --tree /tmp/prev [--rounds 2]

Each round runs prev then this checkout: benchmark.py (ours, int8, 1x10s and 8x10s, 64
tokens, 2 repeats) and load.py (int8, the scheduler, 8 clients, lone / 8 x 10 s / 10 s during
a 1 min file, 2 repeats), each tree's scripts with PYTHONPATH set to that tree. The table gives
each side's median over the rounds and the ratio this / previous (under 1: faster now), with
load.py's app-over-engine ratios (the app's own overhead, measured in turns with the engine in
one run, so the least noisy numbers here). Results: bench/results/<host>-<date>-against-<rev>.md
and .json.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._common import REPO, RESULTS, loadavg, machine_info, machine_line, markdown_table

BENCH_ARGS = ["--engines", "ours", "--modes", "int8", "--cases", "1x10s,8x10s", "--tokens", "64",
              "--repeats", "2", "--no-save"]
LOAD_ARGS = ["--dtype", "int8", "--modes", "batch", "--clients", "8", "--repeats", "2",
             "--long-minutes", "1"]


def run(tree: Path, script: str, args: list[str], log: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with open(log, "ab") as f:
        subprocess.run([sys.executable, str(tree / "bench" / script), *args], cwd=tree, env=env,
                       stdout=f, stderr=subprocess.STDOUT, check=True)


def benchmark_numbers(path: Path) -> dict:
    rows = json.loads(path.read_text())["rows"]
    return {f"engine {r['case']} e2e s": r["e2e_s"] for r in rows if "e2e_s" in r}


def load_numbers(folder: Path) -> dict:
    res = json.loads(next(folder.glob("*.json")).read_text())
    m = res["modes"][0]
    out = {"app lone p50 s": m["lone"]["p50"], "app lone / engine": m["lone"]["vs_engine"],
           "app 8 x 10 s wall s": m["concurrent"]["wall"],
           "app 8 x 10 s / engine batch": m["concurrent"]["vs_engine_batch"]}
    if "during_long" in m:
        out["app 10 s during long p50 s"] = m["during_long"]["p50"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", required=True, type=Path, help="a checkout of the earlier revision")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    rev = subprocess.run(["git", "-C", str(args.tree), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=True).stdout.strip()
    here = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="against-"))
    started, la_start = _dt.datetime.now(), loadavg()
    sides = {"previous": args.tree.resolve(), "this": REPO}
    got = {side: [] for side in sides}
    for i in range(args.rounds):
        for side, tree in sides.items():
            log = work / f"{side}.log"
            print(f"round {i + 1}: {side} ({tree}), load average {loadavg()}", flush=True)
            bench_json = work / f"bench-{side}-{i}.json"
            run(tree, "benchmark.py", [*BENCH_ARGS, "--json", str(bench_json)], log)
            load_dir = work / f"load-{side}-{i}"
            run(tree, "load.py", [*LOAD_ARGS, "--results-dir", str(load_dir)], log)
            got[side].append({**benchmark_numbers(bench_json), **load_numbers(load_dir)})
    metrics = list(got["this"][0])
    med = {side: {k: statistics.median(r[k] for r in runs if k in r) for k in metrics}
           for side, runs in got.items()}
    rows = [[k, f"{med['previous'][k]:.3f}", f"{med['this'][k]:.3f}",
             f"**{med['this'][k] / med['previous'][k]:.3f}**",
             " / ".join(f"{r[k]:.3f}" for r in got["previous"]),
             " / ".join(f"{r[k]:.3f}" for r in got["this"])] for k in metrics]
    la_end = loadavg()
    text = "\n".join([
        f"# This checkout ({here}) against {rev}, in turns ({started:%Y-%m-%d %H:%M})", "",
        f"Command: `python bench/against_revision.py {' '.join(argv or sys.argv[1:])}`", "",
        f"{machine_line(machine_info('cpu'))}. Load average {la_start} at the start, {la_end} "
        "at the end: other work shared this machine, so compare the ratios, not the times.", "",
        f"Each round: {rev}, then this checkout; benchmark.py {' '.join(BENCH_ARGS)}; load.py "
        f"{' '.join(LOAD_ARGS)}. Medians over {args.rounds} rounds; the ratio is this / "
        "previous (under 1: faster now).", "",
        *markdown_table(["metric", f"{rev}", f"{here}", "ratio", f"{rev} per round",
                         f"{here} per round"], rows, "lrrrrr"), ""])
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"{socket.gethostname()}-{started:%Y%m%d-%H%M}-against-{rev}"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(
        {"previous": rev, "this": here, "rounds": got, "median": med,
         "loadavg": [la_start, la_end]}, indent=1) + "\n")
    print(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
