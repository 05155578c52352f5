"""The long fuzz runs, written up: the audio input (tests/test_fuzz.py, issue 16) and
/v1/realtime and the page's Gradio routes (tests/test_fuzz_live.py, issue 33).

Runs ``python -m pytest -q tests/test_fuzz.py tests/test_fuzz_live.py`` (``--tests`` picks) with ``FUNASR_NANO_FUZZ_CASES=N`` (cases per
test: N through the loader, N through the HTTP API) and ``FUNASR_NANO_FUZZ_REPORT``, then writes
the counts (formats, mutations, outcomes), the slowest case, the server's idle and peak RSS, the
machine and the command to bench/results/fuzz-<host>-<date>.md (and .json). The test itself fails
on a crash, a hang (60 s), a 5xx, a body outside the error shape or peak RSS over idle + 300 MB;
its exit status is this script's.

    python bench/fuzz.py --cases 5000
    python bench/fuzz.py --cases 5000 --tests tests/test_fuzz_live.py
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

from bench._common import REPO, loadavg, machine_info


def _table(title: str, counts: dict) -> list[str]:
    rows = [f"| {title} | cases |", "| --- | ---: |"]
    rows += [f"| {k} | {v} |" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    return rows + [f"| total | {sum(counts.values())} |", ""]


def render(meta: dict) -> str:
    """The Markdown write-up of a run's JSON."""
    counts, m = meta["counts"], meta["machine"]
    mem = counts.get("http_memory_mb", {})
    loader, http = counts.get("loader", {}), counts.get("http", {})
    load = meta["loadavg"]
    audio = bool(loader or http)
    live = [t for t in ("realtime", "page") if counts.get(t)]
    what = " and ".join((["the audio input"] if audio else []) +
                        (["/v1/realtime and the page"] if live else [])) or "nothing"
    lines = [f"# Fuzz run of {what}, {meta['started']}", "",
             f"Command: `{meta['command']}` (`bench/fuzz.py --cases {meta['cases_per_test']}"
             f"{' --tests ' + ' '.join(meta['tests']) if meta.get('tests') else ''}`). "
             "The audio fuzzing's server runs with `--max-upload-mb 2 --max-audio-minutes 1 "
             "--body-timeout 10 --max-new-tokens 4`, the live one's with `--max-new-tokens 4 "
             "--live-sessions 4 --live-max-message-mb 1 --live-idle-seconds 30 --preload`; both with the "
             "tiny random-weight model.", "",
             f"Machine: {m.get('cpu')}, {m.get('cpu_count')} cores, {m.get('ram_gib')} GiB, "
             f"torch {m.get('torch')}, Python {m.get('python')}; load average {load['start']} "
             f"at the start, {load['end']} at the end.", "",
             f"Result: pytest `{meta['pytest']}` (exit status {meta['exit_status']}). Every case "
             "was checked against the pass rules in the tests' docstrings (the test stops at "
             "the first failure).", ""]
    if not audio:
        return _live_sections(lines, counts)
    lines += [f"Loader: "
             f"{loader.get('cases', 0)} cases in {loader.get('seconds', '?')} s; HTTP API: "
             f"{http.get('cases', 0)} cases in {http.get('seconds', '?')} s; "
             f"{loader.get('cases', 0) + http.get('cases', 0)} mutated inputs in all. Every "
             "case was checked: no crash, no hang (60 s), no 5xx, no body outside the error "
             "shape (the test stops at the first).", "",
             f"Server memory: idle RSS {mem.get('idle_rss')} MB (model loaded), peak RSS "
             f"{mem.get('peak_rss')} MB during the run: {mem.get('peak_over_idle')} MB over "
             "idle (limit: 300 MB).", "",
             "A case applies 1-3 mutations, so the mutation counts add up to more than the "
             "cases. `wav_fmt` changes WAV files only, and `length_lie` leaves a file whose "
             "damage already hides its length field as it is.", ""]
    titles = {"loader": "Loader (load_audio, stream_audio, probe_duration)",
              "http": "HTTP API (POST /v1/audio/transcriptions)"}
    for test, title in titles.items():
        lines += [f"## {title}", ""]
        lines += _table("outcome", counts.get(f"{test}_outcome", {}))
        lines += _table("format", counts.get(f"{test}_format", {}))
        lines += _table("mutation", counts.get(f"{test}_mutation", {}))
        slowest = counts.get(f"{test}_progress", {}).get("slowest_ms")
        case = next(iter(counts.get(f"{test}_slowest", {})), "")
        lines += [f"Slowest case: {slowest} ms (`{case}`).", ""]
    return _live_sections(lines, counts)


def _live_sections(lines: list[str], counts: dict) -> str:
    """The sections of tests/test_fuzz_live.py (when it ran)."""
    titles = {"realtime": ("/v1/realtime event sequences", "realtime_message", "message"),
              "page": ("The page's Gradio routes", "page_request", "request")}
    for test, (title, key, what) in titles.items():
        if not counts.get(test):
            continue
        c, mem = counts[test], counts.get(f"{test}_memory_mb", {})
        lines += [f"## {title} (tests/test_fuzz_live.py)", "",
                  f"{c.get('cases')} cases in {c.get('seconds')} s; server RSS idle "
                  f"{mem.get('idle_rss')} MB (model loaded), peak {mem.get('peak_rss')} MB: "
                  f"{mem.get('peak_over_idle')} MB over idle (limit: 300 MB).", ""]
        lines += _table("outcome", counts.get(f"{test}_outcome", {}))
        lines += _table(what, counts.get(key, {}))
        slowest = counts.get(f"{test}_progress", {}).get("slowest_ms")
        case = next(iter(counts.get(f"{test}_slowest", {})), "")
        lines += [f"Slowest case: {slowest} ms (`{case}`).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--cases", type=int, default=5000, help="cases per test (default: 5000)")
    p.add_argument("--results-dir", default=str(REPO / "bench" / "results"))
    p.add_argument("--tests", nargs="+", default=["tests/test_fuzz.py", "tests/test_fuzz_live.py"],
                   help="the fuzz test files to run (default: the audio input, then /v1/realtime "
                   "and the page)")
    p.add_argument("--render", metavar="JSON", help="write the .md of a saved run again; no run")
    args = p.parse_args(argv)
    if args.render:
        saved = Path(args.render)
        saved.with_suffix(".md").write_text(render(json.loads(saved.read_text())))
        return 0

    report = Path(tempfile.mkdtemp(prefix="fuzz-")) / "fuzz.json"
    # its own basetemp: pytest keeps only the last 3 of /tmp/pytest-of-USER/pytest-N, so any
    # other pytest run on the machine during a long run would delete its server's files
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "--basetemp", str(report.parent / "basetemp"), *args.tests]
    env = {**os.environ, "FUNASR_NANO_FUZZ_CASES": str(args.cases),
           "FUNASR_NANO_FUZZ_REPORT": str(report)}
    shown = (f"FUNASR_NANO_FUZZ_CASES={args.cases} FUNASR_NANO_FUZZ_REPORT=FILE "
             f"python -m pytest -q {' '.join(args.tests)}")
    started, load_before, t0 = _dt.datetime.now(), loadavg(), time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
    counts = json.loads(report.read_text()) if report.exists() else {}

    meta = {"started": started.isoformat(timespec="seconds"), "command": shown,
            "cases_per_test": args.cases, "exit_status": proc.returncode, "pytest": summary,
            "wall_s": round(wall, 1), "tests": args.tests, "machine": machine_info("cpu"),
            "loadavg": {"start": load_before, "end": loadavg()}, "counts": counts}
    host = re.sub(r"[^A-Za-z0-9_.-]+", "_", socket.gethostname()) or "host"
    stem = Path(args.results_dir) / f"fuzz-{host}-{started.strftime('%Y%m%d-%H%M')}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")

    stem.with_suffix(".md").write_text(render(meta))
    print(f"written: {stem}.md")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
