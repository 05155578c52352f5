#!/usr/bin/env python3
"""Time from ``python app.py`` to the first transcription answered through the API, with an
empty CPU-kernel cache (what a new user sees right after the README's install).

    python bench/first_request.py [--checkout DIR] [--audio example/en.wav] [-- app.py flags]

Starts ``DIR/app.py`` (default: this checkout) with ``FUNASR_NANO_KERNEL_CACHE`` pointing at a
new empty folder, posts the clip to ``/v1/audio/transcriptions`` as soon as the port answers,
then keeps polling ``/health`` until the kernels are built and the model runs on them, and posts
the clip again. Writes bench/results/<host>-first-<date>.md (and .json) with the timeline and
the /health snapshots.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

from bench._common import REPO, AppProcess


def transcribe(url, audio: Path) -> tuple[int, str]:
    import requests
    with open(audio, "rb") as f:
        r = requests.post(url + "/v1/audio/transcriptions", files={"file": (audio.name, f)},
                          timeout=300)
    return r.status_code, r.text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkout", default=str(REPO))
    ap.add_argument("--audio", default=None)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--results-dir", default=str(REPO / "bench" / "results"))
    args, app_args = ap.parse_known_args(argv)
    app_args = [a for a in app_args if a != "--"]
    checkout = Path(args.checkout)
    audio = Path(args.audio) if args.audio else checkout / "example" / "en.wav"
    python = checkout / ".venv" / "bin" / "python"
    python = python if python.exists() else Path(sys.executable)
    started = _dt.datetime.now()
    events, snaps = [], []
    with tempfile.TemporaryDirectory(prefix="kernel-cache-") as cache, \
            tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        t0 = time.perf_counter()
        app = AppProcess(app_args, Path(log.name), {"FUNASR_NANO_KERNEL_CACHE": cache},
                         python=python, checkout=checkout)
        url, health = app.url, app.health

        def note(what, **kw):
            events.append({"t_s": round(time.perf_counter() - t0, 2), "event": what, **kw})
            print(f"{events[-1]['t_s']:7.2f} s  {what} {kw if kw else ''}", flush=True)

        try:
            try:
                app.wait_ready(timeout=args.timeout, poll=0.1)
            except RuntimeError as e:
                raise SystemExit(str(e)) from None
            h = health()
            snaps.append({"t_s": round(time.perf_counter() - t0, 2), "health": h})
            note("port answers", kernels=h.get("kernels"))
            code, body = transcribe(url, audio)
            h = health()
            snaps.append({"t_s": round(time.perf_counter() - t0, 2), "health": h})
            note("first transcription answered", status=code, text=json.loads(body).get("text")
                 if code == 200 else body[:200], kernels=h.get("kernels"))
            first_s = events[-1]["t_s"]
            while True:
                h = health()
                k = (h or {}).get("kernels") or {}
                if k.get("in_use") or k.get("state") in ("failed", "disabled"):
                    break
                if time.perf_counter() - t0 > args.timeout:
                    break
                time.sleep(1)
            snaps.append({"t_s": round(time.perf_counter() - t0, 2), "health": h})
            note("kernels " + str(k.get("state")) + (", model on them" if k.get("in_use") else ""),
                 kernels=k)
            code2, body2 = transcribe(url, audio)
            note("transcription after the switch", status=code2,
                 text=json.loads(body2).get("text") if code2 == 200 else body2[:200])
        finally:
            app.stop()
        app_log = Path(log.name).read_text(errors="replace")
    kernel_lines = [ln for ln in app_log.splitlines()
                    if re.search(r"kernel|model ready|switched|loaded ", ln, re.I)]
    host = re.sub(r"[^A-Za-z0-9_.-]+", "_", socket.gethostname()) or "host"
    stem = Path(args.results_dir) / f"{host}-first-{started.strftime('%Y%m%d-%H%M')}"
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), "?")
    lines = [f"# First request with an empty kernel cache, {started.isoformat(timespec='seconds')}",
             "", f"`{python} app.py {' '.join(app_args)}` in `{checkout}`, "
             f"FUNASR_NANO_KERNEL_CACHE an empty folder; clip `{audio.name}`; {cpu}, "
             f"{os.cpu_count()} cores, load average {os.getloadavg()}.", "",
             f"**First transcription answered {first_s:.1f} s after start.**", "",
             "| t (s) | event |", "| ---: | --- |"]
    lines += [f"| {e['t_s']:.2f} | {e['event']}: "
              f"{json.dumps({k: v for k, v in e.items() if k not in ('t_s', 'event')})} |"
              for e in events]
    lines += ["", "Log lines about the model and the kernels:", "", "```", *kernel_lines, "```"]
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"events": events, "health": snaps,
                                                     "log": kernel_lines}, indent=1))
    print("\n".join(lines))
    print(f"written: {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
