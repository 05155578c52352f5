#!/usr/bin/env python3
"""Live compliance alerts: time from the end of an utterance to its ``compliance.alert`` event
on /v1/realtime, streaming in real time.

    python bench/compliance_live.py [--modes final,partials] [--rounds 1] [--out bench/results]

Starts ``app.py`` on the demo model, streams the 12 example clips (1.5 s apart) as pcm16 at
16 kHz paced at exactly real time (100 ms appends on a fixed schedule), with a watch list of one
word of each clip's sentence. Each mode is one session on the same server, the modes taking
turns (``--rounds``): ``final`` alerts on finals only (the default session), ``partials`` also on
stable partials (``session.compliance.partials: true``), ``speakers`` on finals with speaker
labels on (``?speakers=auto``: each final waits for its label). The latency of
an alert is its arrival minus the moment the last sample of its clip was sent; beside it, when
the end of speech (``speech_stopped``) and the final (``completed``) of its utterance arrived,
which shows where the time goes: the end-pointer's silence, then the final's decode. Writes
``bench/results/compliance_live.md``/``.json``.
"""
from __future__ import annotations

import argparse
import base64
import csv
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from websockets.sync.client import connect

from bench._common import REPO, RESULTS, AppProcess, loadavg, machine_info
from bench._live_audio import recording
from bench.compliance_bench import E2E_TERMS

LEAD, PAUSE, STEP = 0.6, 1.5, 1600          # seconds, seconds, samples per append (100 ms)
KEEP = ("compliance.alert", "input_audio_buffer.speech_stopped",
        "conversation.item.input_audio_transcription.completed")


def clips_and_ends() -> tuple[tuple[str, ...], list[float]]:
    """The example clips and the stream time at which each one's last sample is sent."""
    import soundfile as sf
    rows = list(csv.DictReader(open(REPO / "example" / "examples.tsv", encoding="utf-8"),
                               delimiter="\t"))
    clips = tuple(r["file"] for r in rows)
    ends, t = [], LEAD
    for i, c in enumerate(clips):
        t += (PAUSE if i else 0) + sf.info(str(REPO / "example" / c)).duration
        ends.append(t)
    return clips, ends


def start_server() -> AppProcess:
    server = AppProcess(["--model", str(REPO / "models" / "demo"), "--max-new-tokens", "64"],
                        Path(tempfile.mkdtemp()) / "app.log")
    server.wait_ready(120)
    import requests   # warm the model (first decode) with one clip through the API
    with open(REPO / "example" / "en.wav", "rb") as f:
        requests.post(server.url + "/v1/audio/transcriptions", files={"file": f}, timeout=120)
    return server


def stream(server: AppProcess, pcm, terms: str, partials: bool, clips: int,
           speakers: bool = False) -> list:
    """One session: the recording at real time; (seconds since the stream began, event) of the
    events in KEEP, as they arrive."""
    ws = connect(server.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
                 + ("&speakers=auto" if speakers else ""),
                 max_size=None, open_timeout=30, legacy=True)
    json.loads(ws.recv(timeout=30))
    ws.send(json.dumps({"type": "session.update", "session": {
        "type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm",
                                                                  "rate": 16000}}},
        "compliance": {"watch_list": terms, "pii": True, "partials": partials}}}))
    assert json.loads(ws.recv(timeout=30))["type"] == "session.updated"
    start = time.monotonic() + 0.2

    def feed():
        for k, i in enumerate(range(0, len(pcm), STEP)):
            delay = start + k * 0.1 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(
                pcm[i:i + STEP].astype("<i2").tobytes()).decode()}))
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    got, finals = [], 0
    deadline = start + len(pcm) / 16000 + 15
    while time.monotonic() < deadline:      # (the last alert follows the last final)
        if finals == clips:
            deadline = min(deadline, time.monotonic() + 2.0)
        try:
            e = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        except TimeoutError:
            break
        if e["type"] in KEEP:
            got.append((time.monotonic() - start, e))
            finals += e["type"].endswith(".completed")
    feeder.join()
    ws.close()
    return got


def measure(events: list, clips, ends: list[float], mode: str) -> dict:
    """Per alert: its latency, and when its utterance's end of speech and final arrived."""
    at = {}   # item -> {"stopped": t, "final": t}
    for t, e in events:
        if e["type"] != "compliance.alert":
            key = "final" if e["type"].endswith(".completed") else "stopped"
            at.setdefault(e["item_id"], {})[key] = t
    detail = []
    for t, a in ((t, e) for t, e in events if e["type"] == "compliance.alert"):
        mid = (a["hit"]["start"] + a["hit"]["end"]) / 2
        k = min(range(len(ends)), key=lambda j: abs(ends[j] - a["hit"]["end"])
                if ends[j] >= mid else 1e9)
        item = at.get(a["item_id"], {})
        rel = {name: round(v - ends[k], 3) for name, v in item.items()}
        detail.append({"mode": mode, "clip": clips[k], "stage": a["stage"],
                       "term": a["hit"]["term"], "text": a["hit"]["text"],
                       "latency_s": round(t - ends[k], 3),
                       "stopped_latency_s": rel.get("stopped"),
                       "final_latency_s": rel.get("final")})
    finals = [e for _, e in events if e["type"].endswith(".completed")]
    return {"mode": mode, "alerts": len(detail), "finals": len(finals), "detail": detail,
            "transcripts": [f["transcript"] for f in finals], "load_average_1min":
            round((loadavg() or [float("nan")])[0], 1)}


def _median(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


def summarize(run: dict) -> dict:
    d = run["detail"]
    return {"mode": run["mode"], "alerts": run["alerts"], "finals": run["finals"],
            "median_latency_s": _median([x["latency_s"] for x in d]),
            "max_latency_s": max((x["latency_s"] for x in d), default=None),
            "median_stopped_latency_s": _median([x["stopped_latency_s"] for x in d]),
            "median_final_latency_s": _median([x["final_latency_s"] for x in d]),
            "alerts_before_final": sum(1 for x in d if x["final_latency_s"] is not None
                                       and x["latency_s"] < x["final_latency_s"]),
            "load_average_1min": run["load_average_1min"]}


def write(runs: list[dict], out: Path, argv_text: str) -> list[str]:
    m = machine_info("cpu")
    sums = [summarize(r) for r in runs]
    doc = {"machine": m["host"], "cpus": m["cpu_count"], "summary": sums, "runs": runs}
    out.mkdir(parents=True, exist_ok=True)
    (out / "compliance_live.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1)
                                              + "\n", encoding="utf-8")
    lines = [f"# Live compliance alerts ({m['host']}, {m['cpu_count']} CPUs)", "",
             f"`python bench/compliance_live.py {argv_text}` (demo model, 12 example clips "
             "streamed at real time, 16 kHz, default server VAD: 500 ms of silence ends an "
             "utterance). Times are from the end of the clip's audio.", "",
             "| mode | alerts / finals | alert median (max) s | end of speech median s | "
             "final median s | alerts before the final | load avg (1 min) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in sums:
        lines.append(f"| {s['mode']} | {s['alerts']} / {s['finals']} | {s['median_latency_s']} "
                     f"({s['max_latency_s']}) | {s['median_stopped_latency_s']} | "
                     f"{s['median_final_latency_s']} | {s['alerts_before_final']} | "
                     f"{s['load_average_1min']} |")
    lines += ["", "| mode | clip | stage | term | transcribed | alert s | end of speech s | "
              "final s |", "| --- | --- | --- | --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {d['mode']} | {d['clip']} | {d['stage']} | {d['term']} | {d['text']} | "
              f"{d['latency_s']:.2f} | {d['stopped_latency_s']} | {d['final_latency_s']} |"
              for r in runs for d in r["detail"]]
    (out / "compliance_live.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--modes", default="final,partials",
                    help="comma-separated: final (alerts on finals), partials (also on stable "
                    "partials), speakers (finals, with ?speakers=auto: labels before the final)")
    ap.add_argument("--rounds", type=int, default=1, help="sessions per mode, taking turns")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("final", "partials", "speakers") for m in modes):
        ap.error("--modes: final, partials and/or speakers")
    clips, ends = clips_and_ends()
    pcm = recording(clips, rate=16000, lead_s=LEAD, pause_s=PAUSE)
    terms = "\n".join(f"{w}\tcompliance" for ws in E2E_TERMS.values() for w in ws)
    server = start_server()
    runs = []
    try:   # a first session's first final is slow (lazy loads): one clip, not measured
        stream(server, recording(clips[:1], rate=16000, lead_s=LEAD), terms, True, 1)
        for _ in range(args.rounds):
            for mode in modes:
                events = stream(server, pcm, terms, mode == "partials", len(clips),
                                mode == "speakers")
                runs.append(measure(events, clips, ends, mode))
    finally:
        server.stop()
    print("\n".join(write(runs, Path(args.out), " ".join(argv if argv is not None
                                                          else sys.argv[1:]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
