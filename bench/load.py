#!/usr/bin/env python3
"""Load benchmark: concurrent real HTTP clients against the running app, the old one-at-a-time
path (``--scheduler serial``) and the scheduler (``--scheduler batch``) side by side in one run.

    python bench/load.py --dtype int8                  # full-size random checkpoint, all cases
    python bench/load.py --dtype fp32 --repeats 3 --long-minutes 10
    python bench/load.py --model-dir DIR --quick       # a smoke run (tests/test_benchmark_smoke.py)

The engine itself runs beside the app in a child process that stays loaded (idle while the app
works): ``FunASRNano.transcribe`` on the N clips with ``batch_size=N`` ("engine N-file batch",
no HTTP) and on one clip ("engine lone"). Each lone and concurrent repeat against the app comes
right after the same case through the engine, and the targets are medians of those pairs'
ratios: on a shared VM whose speed drifts by 10-20% within minutes, measurements taken in turns
are what can be compared.

For each scheduler mode (the app restarted for each, same flags otherwise):
  * ``python app.py --model DIR --dtype D --batch-size B --scheduler MODE --bench-tokens T
    --preload`` on a free port; ``--bench-tokens`` (benchmarks only) makes every sequence decode
    exactly T tokens, end tokens ignored, so a random-weight checkpoint costs what T tokens of
    real speech would. The benchmark waits until /health says the model is loaded, then sends
    one warm-up request.
  * ``lone``: one 10 s request at a time, ``--repeats`` times (each after an engine lone
    call): the latency of a lone request.
  * ``N x 10 s``: N clients (``--clients``) each POST a different 10 s clip at the same moment
    (a barrier), ``--repeats`` times (each after an engine N-file batch): wall time from the first send to the last answer, p50 /
    p95 / max latency, requests per second and audio seconds per second.
  * ``10 s during long``: one client uploads a ``--long-minutes`` recording (the English clips
    concatenated, 1 s pauses, repeated); once /health shows its segments decoding, another
    client sends a 10 s request, ``--repeats`` times one after another; their latencies against
    the lone latency. The app is then stopped (the long file is not waited for).
With ``--baseline-rev REV`` a second engine child runs REV's files (``git archive``, e.g. the
code before the scheduler: "today's" lone latency), in turns with this checkout's.

Inputs: the English clips of the shared speech data concatenated (as bench/benchmark.py: the
first clip is lhotse_librispeech_2412-153948-0000.flac); the N 10 s clips are windows spread
over it; the lone clip is the first window. Clips are sent as 16-bit WAV. The texts of the
concurrent case in batch mode are checked against those of the serial mode (each request
decoded alone): "same texts" in the table.

Results: a markdown table on stdout and bench/results/<host>-<date>-load-<dtype>.md and .json, with the
machine (bench/_common.py's machine_info) and the load average before and after.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench._common import (REPO, RESULTS, SR, AppProcess, loadavg, machine_info, safe_host,
                           speech_dir, write_results)

FIRST_CLIP = "lhotse_librispeech_2412-153948-0000.flac"


# =============================================================================== inputs
def english_concat() -> np.ndarray:
    from engine.audio import load_audio
    en = speech_dir() / "en"
    files = [en / FIRST_CLIP] + sorted(p for p in en.iterdir() if p.is_file()
                                       and p.name != FIRST_CLIP
                                       and p.suffix.lower() in (".wav", ".flac", ".mp3"))
    return np.concatenate([load_audio(str(p), SR) for p in files]).astype(np.float32), files


def windows(concat: np.ndarray, n: int, seconds: float) -> list[np.ndarray]:
    length = int(seconds * SR)
    starts = [0] if n == 1 else [round(i * (len(concat) - length) / (n - 1)) for i in range(n)]
    return [concat[s:s + length].copy() for s in starts]


def long_recording(concat: np.ndarray, files, minutes: float) -> np.ndarray:
    """The clips with 1 s pauses between them, repeated up to ``minutes``."""
    from engine.audio import load_audio
    pause = np.zeros(SR, np.float32)
    parts, total = [], 0
    clips = [load_audio(str(p), SR) for p in files]
    while total < minutes * 60 * SR:
        for c in clips:
            parts += [c, pause]
            total += len(c) + len(pause)
    return np.concatenate(parts)[:int(minutes * 60 * SR)]


def wav_bytes(wave: np.ndarray) -> bytes:
    import soundfile as sf
    buf = io.BytesIO()
    sf.write(buf, wave, SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# =============================================================================== the app
def start_app(args, mode: str, logdir: Path) -> AppProcess:
    """The app in ``mode`` (batch or serial) with the benchmark's flags; killed, not stopped, at
    the end (a long file may still be decoding)."""
    return AppProcess(["--model", str(args.model_dir), "--dtype", args.dtype, "--device", "cpu",
                       "--batch-size", str(args.batch_size), "--scheduler", mode,
                       "--bench-tokens", str(args.tokens), "--preload",
                       "--max-audio-minutes", str(max(60, args.long_minutes + 1)),
                       "--max-upload-mb", "500", "--log-level", "warning"],
                      logdir / f"app-{mode}.log")


def post(url: str, name: str, data: bytes, timeout: float = 3600) -> tuple[float, dict]:
    import requests
    t0 = time.perf_counter()
    r = requests.post(url + "/v1/audio/transcriptions", files={"file": (name, data)},
                      data={"language": "en", "response_format": "verbose_json"},
                      timeout=timeout)
    took = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"{name}: HTTP {r.status_code}: {r.text[:300]}")
    return took, r.json()


def stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return {"p50": statistics.median(xs), "p95": p95, "max": xs[-1], "n": len(xs)}


def run_mode(args, mode: str, clips: list[bytes], long_wav: bytes | None, logdir: Path,
             engine: "EngineWorker") -> dict:
    """The app in ``mode``; each lone and concurrent repeat right after the same case through
    ``engine`` (idle meanwhile), so that each pair saw the same machine."""
    out = {"mode": mode}
    app = start_app(args, mode, logdir)
    try:
        t0 = time.perf_counter()
        app.wait_loaded()
        out["load_s"] = round(time.perf_counter() - t0, 2)
        post(app.url, "warmup.wav", clips[0])
        # lone
        lone, engine_lone = [], []
        for _ in range(args.repeats):
            engine_lone.append(engine.run("lone"))
            lone.append(post(app.url, "lone.wav", clips[0])[0])
        out["lone"] = {"latency": lone, **stats(lone), "engine": engine_lone,
                       "vs_engine": statistics.median(a / b for a, b in zip(lone, engine_lone))}
        print(f"  {mode}: lone {out['lone']['p50']:.2f} s (engine {statistics.median(engine_lone):.2f} s)",
              flush=True)
        # N concurrent
        runs, engine_batch = [], []
        for rep in range(args.repeats):
            engine_batch.append(engine.run("batch"))
            barrier = threading.Barrier(len(clips))
            res = [None] * len(clips)

            def client(i, barrier=barrier, res=res):
                barrier.wait()
                took, body = post(app.url, f"c{i}.wav", clips[i])
                res[i] = (time.perf_counter(), took, body)  # (answered at, latency, body)

            threads = [threading.Thread(target=client, args=(i,)) for i in range(len(clips))]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = max(r[0] for r in res) - start
            runs.append({"wall": wall, "latency": [r[1] for r in res],
                         "texts": [r[2]["text"] for r in res],
                         "finish": [r[2].get("finish_reason") for r in res]})
        walls = [r["wall"] for r in runs]
        best = runs[walls.index(statistics.median_low(walls))]
        n = len(clips)
        audio = n * args.seconds
        out["concurrent"] = {"walls": walls, "wall": statistics.median(walls),
                             "engine_batch": engine_batch,
                             "vs_engine_batch": statistics.median(
                                 a / b for a, b in zip(walls, engine_batch)),
                             **stats(best["latency"]),
                             "req_per_s": n / statistics.median(walls),
                             "audio_s_per_s": audio / statistics.median(walls),
                             "texts": runs[0]["texts"],
                             "finish": runs[0]["finish"],
                             "texts_stable": all(r["texts"] == runs[0]["texts"] for r in runs)}
        print(f"  {mode}: {n} x {args.seconds:g} s wall {out['concurrent']['wall']:.2f} s "
              f"(engine batch {statistics.median(engine_batch):.2f} s)", flush=True)
        # a short request during a long file
        if long_wav is not None:
            holder = {}

            def long_client():
                try:
                    holder["took"], _ = post(app.url, "long.wav", long_wav)
                except Exception as e:  # noqa: BLE001 - the app is killed under it at the end
                    holder["error"] = str(e)

            lt = threading.Thread(target=long_client, daemon=True)
            lt.start()

            def bulk_busy() -> bool:
                sched = app.health()["scheduler"]
                return sched["running"]["bulk"] + sched["waiting"]["bulk"] > 0

            deadline = time.monotonic() + 600
            while not bulk_busy():
                if "took" in holder or "error" in holder or time.monotonic() > deadline:
                    raise RuntimeError(f"the long file's segments were never seen decoding "
                                       f"({holder.get('error') or 'it was done first'})")
                time.sleep(0.02)
            time.sleep(args.settle)
            during, overlapped = [], []
            for _ in range(args.repeats):
                if not bulk_busy():
                    break  # the long file is done: no more "during"
                during.append(post(app.url, "short.wav", clips[0])[0])
                overlapped.append(bulk_busy())  # still decoding when the short one came back
                time.sleep(0.5)
            if not during:
                raise RuntimeError("the long file was done before a short request was sent")
            out["during_long"] = {"latency": during, **stats(during),
                                  "long_still_running_after": overlapped,
                                  "long_finished": "took" in holder}
            print(f"  {mode}: {args.seconds:g} s during long {out['during_long']['p50']:.2f} s",
                  flush=True)
    finally:
        app.stop(graceful=False)
    return out


# =============================================================================== the engine
ENGINE_CHILD = r"""
import json, sys, time
import numpy as np
# sys.argv[1] is the checkout, our cwd: `python -c` puts it first on sys.path
from model import FunASRNano
waves = list(np.load(sys.argv[2]))
asr = FunASRNano.from_pretrained(sys.argv[3], device="cpu", dtype=sys.argv[4])
tokens = int(sys.argv[5])
asr.transcribe([waves[0]], max_new_tokens=4, ignore_eos=True)
in_use = getattr(asr, "kernels_in_use", None)
if in_use is None:  # revisions before engine.kernels.loader: the kernels load with the model
    from engine.kernels import kernels
    in_use = kernels() is not None
print("READY " + json.dumps({"kernels": bool(in_use)}), flush=True)
for line in sys.stdin:
    case = line.strip()
    inputs = waves if case == "batch" else [waves[0]]
    t0 = time.perf_counter()
    r = asr.transcribe(inputs, batch_size=len(inputs), max_new_tokens=tokens, ignore_eos=True)
    took = time.perf_counter() - t0
    assert all(x["num_tokens"] == tokens for x in r), r
    print("RESULT " + json.dumps({"seconds": took, "texts": [x["text"] for x in r]}), flush=True)
"""


class EngineWorker:
    """``FunASRNano.transcribe`` of ``repo`` in a child process that stays loaded (and idle)
    between cases: "batch" (the N clips, ``batch_size=N``) or "lone" (the first clip)."""

    def __init__(self, args, repo: Path, waves_path: Path):
        self.repo = repo
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ENGINE_CHILD, str(repo), str(waves_path), str(args.model_dir),
             args.dtype, str(args.tokens)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=repo)
        self._err = []
        threading.Thread(target=lambda: self._err.extend(self.proc.stderr), daemon=True).start()
        info = json.loads(self._line("READY "))
        if not info["kernels"] and not os.environ.get("FUNASR_NANO_NO_KERNELS"):
            self.close()
            raise RuntimeError(f"the engine in {repo} runs without its CPU kernels")
        self.runs: dict[str, list[float]] = {"batch": [], "lone": []}
        self.texts: dict[str, list[str]] = {}

    def _line(self, prefix: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix):]
        raise RuntimeError(f"engine child in {self.repo} failed:\n{''.join(self._err)[-3000:]}")

    def run(self, case: str) -> float:
        self.proc.stdin.write(case + "\n")
        self.proc.stdin.flush()
        r = json.loads(self._line("RESULT "))
        self.runs[case].append(r["seconds"])
        self.texts[case] = r["texts"]
        return r["seconds"]

    def summary(self) -> dict:
        return {"batch": statistics.median(self.runs["batch"]),
                "lone": statistics.median(self.runs["lone"]),
                "batch_runs": self.runs["batch"], "lone_runs": self.runs["lone"]}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def baseline_worktree(rev: str, trees: Path) -> tuple[Path, str]:
    """The files of ``rev`` (``git archive``, reused across runs; no git metadata touched),
    sharing this checkout's virtualenv."""
    sha = subprocess.run(["git", "rev-parse", rev], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    path = trees / sha[:12]
    if not (path / "model.py").is_file():
        tmp = path.with_name(path.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", sha], cwd=REPO, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        tmp.rename(path)
    venv = REPO / ".venv"
    if venv.exists() and not (path / ".venv").exists():
        (path / ".venv").symlink_to(venv.resolve())
    return path, sha


# =============================================================================== report
def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(res: dict, args) -> str:
    n, secs = args.clients, f"{args.seconds:g}"
    rows = ["| case | path | wall s | p50 s | p95 s | max s | req/s | audio s per s | "
            "engine in the same repeats |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def latencies(d):
        return f"{d['p50']:.2f}", f"{d['p95']:.2f}", f"{d['max']:.2f}"

    for m in res["modes"]:
        name = "one at a time (--scheduler serial)" if m["mode"] == "serial" else \
            "scheduler (--scheduler batch)"
        lo, c = m["lone"], m["concurrent"]
        rows.append(_row(f"lone 1 x {secs} s", name, "-", *latencies(lo), "-", "-",
                         f"lone {statistics.median(lo['engine']):.2f} s"))
        rows.append(_row(f"{n} x {secs} s concurrent", name, f"{c['wall']:.2f}", *latencies(c),
                         f"{c['req_per_s']:.2f}", f"{c['audio_s_per_s']:.1f}",
                         f"{n}-file batch {statistics.median(c['engine_batch']):.2f} s"))
        if "during_long" in m and m["during_long"]["n"]:
            rows.append(_row(f"1 x {secs} s during a {args.long_minutes:g} min file", name, "-",
                             *latencies(m["during_long"]), "-", "-", "-"))
    engines = [("all repeats", "FunASRNano.transcribe", "this checkout", res["engine"])]
    if res.get("baseline"):
        rev = f"{args.baseline_rev} ({res['baseline_sha'][:9]})"
        engines.append(("", rev, rev, res["baseline"]))
    for note, batch_path, lone_path, e in engines:
        suffix = f", {note}" if note else ""
        rows.append(_row(f"engine: one {n}-file batch (no HTTP){suffix}", batch_path,
                         f"{e['batch']:.2f}", "-", "-", "-", f"{n / e['batch']:.2f}",
                         f"{n * args.seconds / e['batch']:.1f}", "-"))
        rows.append(_row(f"engine: lone 1 x {secs} s (no HTTP){suffix}", lone_path, "-",
                         f"{e['lone']:.2f}", "-", "-", "-", "-", "-"))
    return "\n".join(rows)


def criteria(res: dict, args) -> list[str]:
    """The issue's targets; ratios of measurements taken in turns (median of the per-repeat
    ratios), which a noisy shared machine disturbs least."""
    by = {m["mode"]: m for m in res["modes"]}
    out = []
    if "batch" in by:
        b = by["batch"]
        c = b["concurrent"]
        out.append(f"- {args.clients} concurrent {args.seconds:g} s requests, scheduler wall / "
                   f"engine {args.clients}-file batch run just before it: median of "
                   f"{len(c['walls'])} pairs **{c['vs_engine_batch']:.2f}x** (target <= 1.3; "
                   f"medians {c['wall']:.2f} / {statistics.median(c['engine_batch']):.2f} s)")
        if "serial" in by:
            s = by["serial"]
            out.append(f"- throughput, scheduler / one at a time: "
                       f"{c['req_per_s']:.2f} / {s['concurrent']['req_per_s']:.2f} "
                       f"req/s = **{c['req_per_s'] / s['concurrent']['req_per_s']:.2f}x** "
                       f"(target >= 2.5)")
            out.append(f"- lone latency over the engine's lone call just before it: scheduler "
                       f"{b['lone']['vs_engine']:.3f}, one at a time {s['lone']['vs_engine']:.3f}"
                       f"; scheduler / one at a time **"
                       f"{b['lone']['vs_engine'] / s['lone']['vs_engine']:.3f}** (target <= 1.05;"
                       f" raw medians {b['lone']['p50']:.2f} / {s['lone']['p50']:.2f} s)")
            same = c["texts"] == s["concurrent"]["texts"]
            out.append(f"- texts of the {args.clients} concurrent requests, scheduler vs each "
                       f"decoded alone (one at a time): **{'same' if same else 'DIFFERENT'}** "
                       f"({args.dtype}; the same in every repeat: "
                       f"{c['texts_stable'] and s['concurrent']['texts_stable']})")
        if b.get("during_long", {}).get("n"):
            d = b["during_long"]
            out.append(f"- {args.seconds:g} s request during a {args.long_minutes:g} min file, "
                       f"scheduler: {d['p50']:.2f} s against lone {b['lone']['p50']:.2f} s = "
                       f"**{d['p50'] / b['lone']['p50']:.2f}x** (target <= 2; worst "
                       f"{d['max'] / b['lone']['p50']:.2f}x)")
        if "serial" in by and by["serial"].get("during_long", {}).get("n"):
            d = by["serial"]["during_long"]
            out.append(f"- the same, one at a time: {d['p50']:.2f} s = "
                       f"{d['p50'] / by['serial']['lone']['p50']:.2f}x its lone latency")
    if res.get("baseline"):
        e, base = res["engine"], res["baseline"]
        out.append(f"- engine, this checkout / {args.baseline_rev} (in turns, both loaded): lone "
                   f"**{base['ratio_lone']:.3f}** (medians {e['lone']:.2f} / {base['lone']:.2f} s)"
                   f", {args.clients}-file batch {base['ratio_batch']:.3f}; same texts: "
                   f"{base['same_texts']}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--model-dir", type=Path, default=None,
                   help="model directory (default: the full-size random checkpoint, "
                   "tools/make_random_model.cached_random_model('full', 1))")
    p.add_argument("--dtype", default="int8", help="fp32, bf16 or int8")
    p.add_argument("--modes", default="serial,batch", help="scheduler modes to compare")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each short request")
    p.add_argument("--tokens", type=int, default=64, help="tokens every sequence decodes")
    p.add_argument("--batch-size", type=int, default=8, help="the app's --batch-size")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each case")
    p.add_argument("--long-minutes", type=float, default=10.0,
                   help="length of the long file (0: skip that case)")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds after the long file's segments start before the short request")
    p.add_argument("--baseline-rev", default=None,
                   help="a git revision whose engine gives 'today's' lone latency (its files "
                   "under ~/.cache/funasr-nano/bench-trees)")
    p.add_argument("--trees-dir", type=Path,
                   default=Path.home() / ".cache" / "funasr-nano" / "bench-trees",
                   help="where --baseline-rev's files are unpacked (kept for later runs)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 clients, 2 s clips, 8 tokens, 1 repeat, 3 min long file")
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.seconds, args.tokens, args.repeats = 2, 2.0, 8, 1
        args.long_minutes, args.settle = min(args.long_minutes, 3.0), 0.0
    if args.model_dir is None:
        from tools.make_random_model import cached_random_model
        args.model_dir = cached_random_model("full", 1, ctc=False)
    started = _dt.datetime.now()
    res = {"command": "python bench/load.py " + " ".join(argv if argv is not None
                                                         else sys.argv[1:]),
           "machine": machine_info("cpu"), "loadavg_start": loadavg(),
           "started": started.isoformat(timespec="seconds"),
           "settings": {k: str(v) for k, v in vars(args).items()}, "modes": []}
    concat, files = english_concat()
    waves = windows(concat, args.clients, args.seconds)
    clips = [wav_bytes(w) for w in waves]
    long_wav = wav_bytes(long_recording(concat, files, args.long_minutes)) \
        if args.long_minutes > 0 else None
    logdir = Path(tempfile.mkdtemp(prefix="load-bench-"))
    engine = base = None
    try:
        waves_path = logdir / "waves.npy"
        # the engine gets the same samples the server decodes from the WAVs
        from engine.audio import load_audio
        np.save(waves_path, np.stack([load_audio(c, SR) for c in clips]))
        engine = EngineWorker(args, REPO, waves_path)
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            print(f"{mode}:", flush=True)
            res["modes"].append(run_mode(args, mode, clips, long_wav, logdir, engine))
        if args.baseline_rev:
            tree, res["baseline_sha"] = baseline_worktree(args.baseline_rev, args.trees_dir)
            base = EngineWorker(args, tree, waves_path)
            pairs = {"lone": [], "batch": []}
            for _ in range(args.repeats):  # in turns, both loaded
                for case in ("lone", "batch"):
                    pairs[case].append(engine.run(case) / base.run(case))
            res["baseline"] = {**base.summary(),
                               "ratio_lone": statistics.median(pairs["lone"]),
                               "ratio_batch": statistics.median(pairs["batch"]),
                               "same_texts": base.texts == engine.texts}
            print(f"baseline: batch {res['baseline']['batch']:.2f} s, "
                  f"lone {res['baseline']['lone']:.2f} s")
        res["engine"] = engine.summary()
        print(f"engine: batch {res['engine']['batch']:.2f} s, lone {res['engine']['lone']:.2f} s")
    finally:
        for w in (engine, base):
            if w is not None:
                w.close()
        shutil.rmtree(logdir, ignore_errors=True)
    res["loadavg_end"] = loadavg()
    res["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    m = res["machine"]
    text = "\n".join([
        f"# Load benchmark {started.strftime('%Y%m%d-%H%M')}", "",
        f"Command: `{res['command']}`", "",
        f"Machine: {m.get('cpu')} ({m.get('cpu_count')} logical CPUs, "
        f"{', '.join(m.get('cpu_flags', []))}), {m.get('ram_gib')} GiB RAM, {m.get('platform')}; "
        f"torch {m.get('torch')}. Load average start {res['loadavg_start']}, end "
        f"{res['loadavg_end']}.", "",
        f"Model {args.model_dir} ({args.dtype}), app --batch-size {args.batch_size}, every "
        f"sequence exactly {args.tokens} tokens (--bench-tokens), {args.clients} clients, "
        f"medians of {args.repeats} repeats (latency percentiles: the median-wall repeat).", "",
        table(res, args), "", *criteria(res, args), ""])
    print(text)
    if not args.no_save:
        write_results(args.results_dir / f"{safe_host()}-{started.strftime('%Y%m%d-%H%M')}"
                      f"-load-{args.dtype}", text, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
