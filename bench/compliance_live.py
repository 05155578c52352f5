#!/usr/bin/env python3
"""Live compliance alerts: time from the end of an utterance to its ``compliance.alert`` event
on /v1/realtime, streaming in real time.

    python bench/compliance_live.py [--port 7871] [--out bench/results]

Starts ``app.py`` on the demo model, streams the 12 example clips (1.5 s apart) as pcm16 at
16 kHz paced at exactly real time (100 ms appends on a fixed schedule), with a watch list of one
word of each clip's sentence. The latency of an alert is its arrival minus the moment the last
sample of its clip was sent. Writes ``bench/results/compliance_live.md``/``.json``.
"""
from __future__ import annotations

import argparse
import base64
import csv
import json
import statistics
import sys
import threading
import time
from pathlib import Path

from websockets.sync.client import connect

from bench._common import REPO, RESULTS, AppProcess, loadavg, machine_info
from bench._live_audio import recording
from bench.compliance_bench import E2E_TERMS

LEAD, PAUSE = 0.6, 1.5


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    rows = list(csv.DictReader(open(REPO / "example" / "examples.tsv", encoding="utf-8"),
                               delimiter="\t"))
    clips = tuple(r["file"] for r in rows)
    import soundfile as sf
    ends, t = [], LEAD
    for i, c in enumerate(clips):
        t += (PAUSE if i else 0) + sf.info(str(REPO / "example" / c)).duration
        ends.append(t)
    pcm = recording(clips, rate=16000, lead_s=LEAD, pause_s=PAUSE)
    terms = "\n".join(f"{w}\tcompliance" for ws in E2E_TERMS.values() for w in ws)
    import tempfile
    server = AppProcess(["--model", str(REPO / "models" / "demo"), "--max-new-tokens", "64"],
                        Path(tempfile.mkdtemp()) / "app.log")
    try:
        server.wait_ready(120)
        # warm the model (first decode) with one clip through the API
        import requests
        with open(REPO / "example" / "en.wav", "rb") as f:
            requests.post(server.url + "/v1/audio/transcriptions", files={"file": f}, timeout=120)
        ws = connect(server.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription",
                     max_size=None, open_timeout=30, legacy=True)
        json.loads(ws.recv(timeout=30))
        ws.send(json.dumps({"type": "session.update", "session": {
            "type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
            "compliance": {"watch_list": terms, "pii": True}}}))
        assert json.loads(ws.recv(timeout=30))["type"] == "session.updated"
        step = 1600
        start = time.monotonic() + 0.2

        def feed():
            for k, i in enumerate(range(0, len(pcm), step)):
                delay = start + k * 0.1 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(
                    pcm[i:i + step].astype("<i2").tobytes()).decode()}))
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        alerts, finals = [], []
        deadline = start + len(pcm) / 16000 + 15
        while time.monotonic() < deadline:      # (the last alert follows the last final)
            if len(finals) == len(clips):
                deadline = min(deadline, time.monotonic() + 2.0)
            try:
                e = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            except TimeoutError:
                break
            now = time.monotonic() - start
            if e["type"] == "compliance.alert":
                alerts.append((now, e))
            elif e["type"].endswith(".completed"):
                finals.append((now, e))
        feeder.join()
        ws.close()
    finally:
        server.stop()
    lat = []
    detail = []
    final_at = {f["item_id"]: t for t, f in finals}
    for now, a in alerts:
        mid = (a["hit"]["start"] + a["hit"]["end"]) / 2
        k = min(range(len(ends)), key=lambda j: abs(ends[j] - a["hit"]["end"])
                if ends[j] >= mid else 1e9)
        lat.append(now - ends[k])
        detail.append({"clip": clips[k], "term": a["hit"]["term"], "text": a["hit"]["text"],
                       "latency_s": round(now - ends[k], 3),
                       "final_latency_s": round(final_at[a["item_id"]] - ends[k], 3),
                       "after_final_ms": round((now - final_at[a["item_id"]]) * 1000, 1)})
    med = statistics.median(lat) if lat else None
    m = machine_info("cpu")
    host, cpus = m["host"], m["cpu_count"]
    load = (loadavg() or [float("nan")])[0]
    after = [d["after_final_ms"] for d in detail]
    fin = statistics.median([d["final_latency_s"] for d in detail]) if detail else None
    doc = {"machine": host, "load_average_1min": round(load, 1), "cpus": cpus,
           "median_final_latency_s": fin and round(fin, 3),
           "max_alert_after_final_ms": max(after) if after else None, "clips": len(clips), "alerts": len(alerts),
           "median_latency_s": med and round(med, 3),
           "max_latency_s": round(max(lat), 3) if lat else None, "detail": detail,
           "finals": [f["transcript"] for _, f in finals]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compliance_live.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n",
                                              encoding="utf-8")
    lines = [f"# Live compliance alerts ({host})", "",
             "`python bench/compliance_live.py` (demo model, 12 example clips streamed at real "
             "time, 16 kHz, default server VAD)", "",
             f"{len(alerts)} alerts for {len(finals)} finals of {len(clips)} clips; latency from "
             f"the end of the clip to its alert: median {med:.2f} s, max {max(lat):.2f} s; to its "
             f"final (the completed event): median {fin:.2f} s; the alert follows its final by at "
             f"most {max(after):.1f} ms. Load average at the end: {load:.1f} on "
             f"{cpus} CPUs." if lat else "no alerts", "",
             "| clip | term | transcribed | alert latency (s) | final latency (s) | alert after final (ms) |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {d['clip']} | {d['term']} | {d['text']} | {d['latency_s']:.2f} | "
              f"{d['final_latency_s']:.2f} | {d['after_final_ms']:.1f} |" for d in detail]
    (out / "compliance_live.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
