#!/usr/bin/env python3
"""The image against this checkout, side by side: the same 10 s clip through the HTTP API of the
app running in the container (buildah, the image built by scripts/image/build.sh) and of the
app running here (this virtualenv), on the same machine, in one run.

    scripts/image/build.sh cpu && set -a && . /tmp/funasr-nano-image/image.env && set +a
    python bench/container_speed.py [--modes fp32,int8] [--repeats 7] [--tokens 64]

What it does
  * Model: the full-size random-weight directory (tools/make_random_model.py, official shapes
    and files, 2 GB), mounted read-only at /models in the container and given with --model here.
  * Input: bench/benchmark.py's ``1x10s`` (the first 10 s of the shared English clips), written
    once to a 16-bit wav that both apps decode.
  * Per mode, both apps are started with the same flags (--dtype MODE --bench-tokens T
    --preload), warmed up with one request, then driven in turns, ABBA (inside, outside,
    outside, inside, ...), so machine noise hits both alike. --bench-tokens makes every request
    decode exactly T tokens, end tokens ignored: a random-weight model may end at once (the int8
    one does, after 2 tokens), which would leave the decode steps out of the comparison. Both
    apps must answer the same text.
  * Timed: the client's wall time of each POST /v1/audio/transcriptions (upload, decoding the
    wav, features, encoder, prefill, T decode steps, response); medians and minimums. Also:
    load time (/health load_seconds), peak and final RSS of each app process, and which kernel
    library each one has mapped (the container's must be the image's /opt/kernels build).

Results: a table on stdout and bench/results/container-<host>-<date>.md and .json.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import requests
import soundfile as sf

from bench._common import (REPO, SR, AppProcess, build_inputs, get_json, loadavg, machine_info,
                           markdown_table)
from bench._image import Container  # the image as a container, as the image tests run it


def proc_memory(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    kib = {line.split(":")[0]: int(line.split()[1]) for line in status
           if line.startswith(("VmRSS", "VmHWM"))}
    return {"rss_mib": round(kib["VmRSS"] / 1024), "peak_rss_mib": round(kib["VmHWM"] / 1024)}


def mapped_kernels(pid: int) -> list[str]:
    root = os.readlink(f"/proc/{pid}/root").rstrip("/")
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({ln.split()[-1].removeprefix(root) for ln in maps if "funasr_nano_kernels" in ln})


def post(url: str, wav: Path) -> tuple[float, str]:
    with open(wav, "rb") as f:
        data = f.read()
    t0 = time.perf_counter()
    r = requests.post(url + "/v1/audio/transcriptions", files={"file": (wav.name, data)},
                      data={"language": "en"}, timeout=600)
    dt = time.perf_counter() - t0
    r.raise_for_status()
    return dt, r.json()["text"]


def wait_loaded(url: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = get_json(url + "/health")
        if h.get("model_loaded") or h.get("load_error"):
            return h
        time.sleep(0.5)
    raise RuntimeError(f"{url}: the model did not load in {timeout} s")


def run_mode(mode: str, args, model_dir: Path, wav: Path, logdir: Path) -> dict:
    flags = ["--dtype", mode, "--bench-tokens", str(args.tokens), "--preload"]
    inside = Container(args.image, logdir / f"inside-{mode}.log",
                       volumes=(f"{model_dir}:/models:ro",))
    outside = AppProcess(["--model", str(model_dir), *flags], logdir / f"outside-{mode}.log")
    try:
        inside.start(flags)
        outside.wait_ready()
        sides = {"inside": (inside.url, inside.app_pid()), "outside": (outside.url, outside.proc.pid)}
        out = {}
        for name, (url, pid) in sides.items():
            h = wait_loaded(url)
            if h.get("load_error"):
                raise RuntimeError(f"{name}: {h['load_error']}")
            out[name] = {"load_s": h.get("load_seconds"), "times_s": [], "texts": set()}
            _, text = post(url, wav)                       # warm-up
            out[name]["texts"].add(text)
        order = []
        for i in range(args.repeats):
            order += ["inside", "outside"] if i % 2 == 0 else ["outside", "inside"]
        for name in order:
            url, _ = sides[name]
            dt, text = post(url, wav)
            out[name]["times_s"].append(round(dt, 4))
            out[name]["texts"].add(text)
        for name, (_, pid) in sides.items():
            out[name].update(proc_memory(pid), kernels=mapped_kernels(pid),
                             median_s=round(statistics.median(out[name]["times_s"]), 3),
                             min_s=round(min(out[name]["times_s"]), 3))
        texts = out["inside"]["texts"] | out["outside"]["texts"]
        for name in sides:
            out[name]["texts"] = sorted(out[name]["texts"])
        return {"mode": mode, **out, "same_text": len(texts) == 1,
                "ratio_median": round(out["inside"]["median_s"] / out["outside"]["median_s"], 3),
                "ratio_min": round(out["inside"]["min_s"] / out["outside"]["min_s"], 3)}
    finally:
        inside.stop()
        outside.stop()


def markdown(rows: list[dict], meta: dict) -> str:
    m = meta["machine"]
    lines = [f"# The image against this checkout, same machine ({meta['date']})", "",
             f"Machine: {m.get('cpu')} ({', '.join(m.get('cpu_flags', []))}), "
             f"{m.get('cpu_count')} cores, {m.get('ram_gib')} GiB, {m.get('platform')}. "
             f"Outside: Python {m.get('python')}, torch {m.get('torch')} (this virtualenv). "
             f"Inside: image `{meta['image']}` ({meta['inside_python']}). Load average "
             f"{meta['loadavg_before']} before, {meta['loadavg_after']} after.", "",
             f"Model: full-size random weights ({meta['model']}), the same directory for both "
             f"(read-only at /models inside). Input: bench/benchmark.py's 1x10s clip as a 16-bit "
             f"wav; {meta['tokens']} tokens decoded per request (--bench-tokens); {meta['repeats']} requests per side "
             "and mode after a warm-up, ABBA order; client wall time of POST "
             "/v1/audio/transcriptions.", ""]
    lines += markdown_table(
        ["mode", "inside median", "outside median", "inside / outside (median)",
         "inside / outside (min)", "load s in / out", "peak RSS MiB in / out", "same text",
         "kernels mapped in / out"],
        [[r["mode"], f"{r['inside']['median_s']:.3f} s", f"{r['outside']['median_s']:.3f} s",
          f"**{r['ratio_median']:.3f}**", f"{r['ratio_min']:.3f}",
          f"{r['inside']['load_s']} / {r['outside']['load_s']}",
          f"{r['inside']['peak_rss_mib']} / {r['outside']['peak_rss_mib']}",
          "yes" if r["same_text"] else "NO",
          f"{', '.join(r['inside']['kernels']) or 'none'} / "
          f"{', '.join(r['outside']['kernels']) or 'none'}"] for r in rows],
        "lrrrrrrll")
    lines += ["", "Per-request times (s):", ""]
    for r in rows:
        lines.append(f"- {r['mode']}: inside {r['inside']['times_s']}, "
                     f"outside {r['outside']['times_s']}")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default=os.environ.get("FUNASR_NANO_TEST_IMAGE"))
    p.add_argument("--model-dir", type=Path, default=None,
                   help="default: the cached full-size random-weight model")
    p.add_argument("--modes", default="fp32,int8")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--results-dir", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args()
    if not args.image:
        raise SystemExit("no image: pass --image or set FUNASR_NANO_TEST_IMAGE "
                         "(scripts/image/build.sh writes it to its image.env)")
    if args.model_dir is None:
        from tools.make_random_model import cached_random_model
        args.model_dir = cached_random_model("full", 1, ctc=False)

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M")
    logdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"container-speed-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    inputs, _ = build_inputs(["1x10s"])
    [clip] = inputs["1x10s"]
    wav = logdir / "clip-10s.wav"
    sf.write(wav, clip, SR, subtype="PCM_16")

    probe = Container(args.image, logdir / "probe.log")
    try:
        inside_python = probe.run("python", "-c", "import platform, torch; print("
                                  "f'Python {platform.python_version()}, torch {torch.__version__}')"
                                  ).stdout.strip()
    finally:
        probe.stop()
    meta = {"date": stamp, "image": args.image, "inside_python": inside_python,
            "model": str(args.model_dir), "tokens": args.tokens, "repeats": args.repeats,
            "machine": machine_info("cpu"), "loadavg_before": loadavg()}
    rows = []
    for mode in args.modes.split(","):
        rows.append(run_mode(mode, args, args.model_dir, wav, logdir))
        print(f"{mode}: inside/outside {rows[-1]['ratio_median']} (median), "
              f"{rows[-1]['ratio_min']} (min)", flush=True)
    meta["loadavg_after"] = loadavg()
    md = markdown(rows, meta)
    print(md)
    if not args.no_save:
        args.results_dir.mkdir(parents=True, exist_ok=True)
        base = args.results_dir / f"container-{meta['machine']['host']}-{stamp}"
        base.with_suffix(".md").write_text(md)
        base.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        print(f"written: {base}.md, .json")
    return 0 if all(r["same_text"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
