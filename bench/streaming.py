#!/usr/bin/env python3
"""Live transcription latency: real-time-paced streams through /v1/realtime, 1, 2 and 4 at once.

    python bench/streaming.py --model full --dtype int8 --streams 1,2,4 --seconds 60
    python bench/streaming.py --model full --dtype int8 --streams 1 --seconds 600   # 10 minutes
    python bench/streaming.py --model demo --streams 1,2,4

What it does
  * Starts the real app (``python app.py``) with the model and dtype, ``--live-sessions`` as the
    most streams, and warms it up with one request to the offline API.
  * Model ``full``: the full-size random-weight checkpoint (``tools/make_random_model.py``,
    ``cached_random_model("full", 1, ctc=False)``: the official shapes and cost). Random weights
    never stop by themselves, so the app runs with ``FUNASR_NANO_BENCH_TOKENS_PER_SECOND``
    (``--tokens-per-second``, default 4): every live decode produces exactly ceil(4 x its
    seconds of audio) tokens, about what real speech needs (a benchmark-only switch, see
    serving/live.py). Model ``demo``: the bundled demo checkpoint, which stops by itself, on its
    own example clips. ``--model DIR`` takes any model directory.
  * Each stream is its own recording: the clips (``full``: the shared speech clips, real human
    speech of 1.5-11.7 s; ``demo``: example/), rotated per stream so streams do not speak in
    step, with pauses of 1.0-2.0 s between them, as pcm16 at 24 kHz. A client (the
    ``websockets`` library) sends it in ``--chunk-ms`` (40) appends on a wall-clock schedule,
    i.e. at real-time pace, and reads the events.
  * Reference times: the engine's own end-pointer (engine.live.Endpointer, the server's
    defaults) run offline on the recording's silero-vad probabilities gives each utterance's
    speech onset (first speech window) and speech end (first window of the pause that ends it).
    "Sent at" a time t is the wall time the client sent the chunk holding t.
  * Measures, per utterance: ``first partial`` = first delta event of its item - sent at its
    onset; ``final`` = its completed event - sent at its speech end; and ``lag`` = completed
    event - sent at the end of the span it covers. Medians and 90th percentiles over all
    utterances of all streams; ``missed`` counts utterances without a completed event by the
    end; a stream keeps real time when its finals' lag does not grow (last third vs first third
    of the stream, ``lag trend``).

Results: a table on stdout and bench/results/streaming-<host>-<date>.md and .json.
Run it under ``flock -x /work/locks/cpu.lock`` on shared machines.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as _dt
import json
import os
import random
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench._common import REPO, SPEECH_DIR_CANDIDATES as SPEECH_DIRS, AppProcess, loadavg, machine_info

RATE = 24000


# =============================================================================== audio

def clip_paths(kind: str) -> list[Path]:
    if kind == "demo":
        return sorted((REPO / "example").glob("*.wav"))
    for d in [Path(os.environ["SPEECH_DATA"])] if os.environ.get("SPEECH_DATA") else SPEECH_DIRS:
        manifest = d / "manifest.tsv"
        if manifest.is_file():
            rows = manifest.read_text(encoding="utf-8").splitlines()[1:]
            return [d / r.split("\t")[0] for r in rows if r.strip()]
    raise SystemExit("no speech clips: ../shared/data/speech is missing and SPEECH_DATA is unset")


def build_stream(paths, seconds: float, seed: int) -> np.ndarray:
    """int16 at 24 kHz: the clips from a rotated start, pauses of 1-2 s, at least ``seconds``."""
    from engine.audio import load_audio
    clips = [load_audio(str(p), RATE) for p in paths]
    rng = random.Random(seed)
    parts, total, i = [np.zeros(int(0.5 * RATE), np.float32)], 0.5, seed
    while total < seconds:
        clip = clips[i % len(clips)]
        pause = np.zeros(int(rng.uniform(1.0, 2.0) * RATE), np.float32)
        parts += [clip, pause]
        total += (len(clip) + len(pause)) / RATE
        i += 1
    x = np.concatenate(parts)
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def reference_utterances(pcm: np.ndarray) -> list[tuple[float, float]]:
    """(speech onset, speech end) per utterance, as the server's end-pointer decides them."""
    from engine.audio import load_audio
    from engine.audio.vad import WINDOW_S, speech_probabilities
    from engine.live import Endpointer
    probs, _ = speech_probabilities(load_audio((pcm, RATE)))
    ep = Endpointer()
    out, onset = [], None
    for b in ep.push(probs):
        if b.kind == "onset":
            onset = b.window * WINDOW_S
        elif b.kind in ("end", "cut") and onset is not None:
            out.append((onset, b.window * WINDOW_S))
            onset = b.window * WINDOW_S if b.kind == "cut" else None
    return out


# =============================================================================== the app

def start_app(model_dir: str, dtype: str | None, sessions: int, env: dict, log: Path) -> AppProcess:
    args = ["--model", model_dir, "--live-sessions", str(sessions), "--log-level", "warning"]
    return AppProcess(args + (["--dtype", dtype] if dtype else []), log, env)


def warm_up(url: str, pcm: np.ndarray) -> float:
    """One offline request (the model loads, the first decode is paid); its seconds."""
    import io

    import soundfile as sf
    buf = io.BytesIO()
    sf.write(buf, pcm, RATE, format="WAV", subtype="PCM_16")
    body, boundary = buf.getvalue(), "benchboundary"
    data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"w.wav\"\r\nContent-Type: audio/wav\r\n\r\n").encode() + body + \
        f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "/v1/audio/transcriptions", data=data,
                                 headers={"Content-Type":
                                          f"multipart/form-data; boundary={boundary}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        r.read()
    return time.perf_counter() - t0


# =============================================================================== one stream

async def run_stream(url: str, pcm: np.ndarray, expected: int, chunk_ms: int,
                     start_at: float) -> dict:
    import websockets
    step = RATE * chunk_ms // 1000
    events: list[tuple[float, dict]] = []
    sent: list[float] = []      # wall time each chunk went out
    async with websockets.connect(url, max_size=None) as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created", created

        async def reader():
            async for message in ws:
                events.append((time.perf_counter(), json.loads(message)))

        task = asyncio.create_task(reader())
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        t0 = time.perf_counter()
        for k, i in enumerate(range(0, len(pcm), step)):
            target = t0 + (k + 1) * chunk_ms / 1000.0    # the chunk exists once recorded
            await asyncio.sleep(max(0.0, target - time.perf_counter()))
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio":
                                      base64.b64encode(pcm[i:i + step].tobytes()).decode()}))
            sent.append(time.perf_counter())
        # Wait for the last finals (at most 60 s), then leave.
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline:
            done = sum(e["type"].endswith(".completed") for _, e in events)
            if done >= expected:
                break
            await asyncio.sleep(0.2)
        task.cancel()
    errors = [e for _, e in events if e["type"] == "error"]
    return {"events": events, "sent": sent, "chunk_s": chunk_ms / 1000.0, "errors": errors}


def analyse(result: dict, utterances) -> list[dict]:
    """Per reference utterance: first partial, final and lag (seconds), or None."""
    chunk_s, sent, events = result["chunk_s"], result["sent"], result["events"]

    def sent_at(t: float) -> float:
        k = min(len(sent) - 1, max(0, int(np.ceil(t / chunk_s)) - 1))
        return sent[k]

    completed = [(w, e) for w, e in events if e["type"].endswith(".completed")]
    deltas: dict[str, float] = {}
    for w, e in events:
        if e["type"].endswith(".delta") and e.get("partial"):
            deltas.setdefault(e["item_id"], w)
    rows = []
    for onset, end in utterances:
        match = [(w, e) for w, e in completed if e["start"] < end and e["end"] > onset]
        if not match:
            rows.append({"onset": onset, "end": end, "first_partial": None, "final": None,
                         "lag": None})
            continue
        w, e = match[0]
        first = deltas.get(e["item_id"])
        rows.append({"onset": onset, "end": end,
                     "first_partial": None if first is None else first - sent_at(onset),
                     "final": w - sent_at(end), "lag": w - sent_at(e["end"])})
    return rows


def summarise(rows: list[dict], duration: float) -> dict:
    def pct(values, q):
        values = sorted(v for v in values if v is not None)
        if not values:
            return None
        return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]
    firsts = [r["first_partial"] for r in rows]
    finals = [r["final"] for r in rows]
    lags = [(r["end"], r["lag"]) for r in rows if r["lag"] is not None]
    third = duration / 3
    early = [v for t, v in lags if t < third]
    late = [v for t, v in lags if t >= 2 * third]
    return {"utterances": len(rows), "missed": sum(r["final"] is None for r in rows),
            "no_partial": sum(r["first_partial"] is None for r in rows),
            "first_partial_p50": pct(firsts, 0.5), "first_partial_p90": pct(firsts, 0.9),
            "final_p50": pct(finals, 0.5), "final_p90": pct(finals, 0.9),
            "final_max": pct(finals, 1.0),
            "lag_first_third": statistics.median(early) if early else None,
            "lag_last_third": statistics.median(late) if late else None}


async def run_case(url: str, streams: list[np.ndarray], refs, chunk_ms: int) -> list[dict]:
    start = time.perf_counter() + 1.0
    # Streams start 0.7 s apart (people do not start talking together).
    return await asyncio.gather(*[run_stream(url, pcm, len(ref), chunk_ms, start + 0.7 * i)
                                  for i, (pcm, ref) in enumerate(zip(streams, refs))])


# =============================================================================== main

def _cpu_total() -> tuple[float, float]:
    """CPU seconds used by the whole machine, all cores: (user + system, nice). Niced programs
    only get the cores when nothing else wants them."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[0]) + int(fields[2])) / tick, int(fields[1]) / tick


def _cpu_of(pid: int) -> float:
    """CPU seconds of a process and its waited-for children (utime + stime + cutime + cstime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--model", default="full", help="full, demo or a model directory")
    p.add_argument("--dtype", default=None, help="fp32, bf16 or int8 (default: the app's)")
    p.add_argument("--streams", default="1,2,4")
    p.add_argument("--seconds", type=float, default=60.0, help="audio per stream")
    p.add_argument("--chunk-ms", type=int, default=40)
    p.add_argument("--tokens-per-second", type=float, default=4.0,
                   help="forced tokens per second of audio (random-weight models only)")
    p.add_argument("--results-dir", default=str(REPO / "bench" / "results"))
    p.add_argument("--tag", default="", help="added to the results file name")
    args = p.parse_args(argv)

    env = {}
    if args.model == "full":
        from tools.make_random_model import cached_random_model
        model_dir, clips = str(cached_random_model("full", 1, ctc=False)), clip_paths("full")
        env["FUNASR_NANO_BENCH_TOKENS_PER_SECOND"] = str(args.tokens_per_second)
    elif args.model == "demo":
        model_dir, clips = str(REPO / "models" / "demo"), clip_paths("demo")
    else:
        model_dir, clips = args.model, clip_paths("full")
    counts = [int(x) for x in args.streams.split(",")]
    info = {**machine_info(), "load_avg": loadavg()}
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M")
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"streaming-{info['host']}-{stamp}{('-' + args.tag) if args.tag else ''}"
    app = start_app(model_dir, args.dtype, max(counts), env, out_dir / f"{name}.log")
    results = []
    try:
        health = app.wait_ready()
        warm = warm_up(app.url, build_stream(clips[:1], 1.0, 0)[:RATE * 5])
        health = app.health()
        print(f"# {args.model} ({health['dtype']}), warm-up {warm:.2f} s; {info['cpu']}, "
              f"{info['cpu_count']} cores, load {info['load_avg'][0]:.2f}", flush=True)
        for n in counts:
            streams = [build_stream(clips, args.seconds, seed) for seed in range(n)]
            refs = [reference_utterances(s) for s in streams]
            t0 = time.perf_counter()
            cpu0, app0, me0 = _cpu_total(), _cpu_of(app.proc.pid), _cpu_of(os.getpid())
            outs = asyncio.run(run_case(app.url.replace("http", "ws") +
                                        "/v1/realtime?intent=transcription", streams,
                                        refs, args.chunk_ms))
            wall = time.perf_counter() - t0
            app_cpu = _cpu_of(app.proc.pid) - app0
            # What other programs on the machine used meanwhile (these machines are shared).
            cpu1 = _cpu_total()
            others = (cpu1[0] - cpu0[0]) - app_cpu - (_cpu_of(os.getpid()) - me0)
            niced = cpu1[1] - cpu0[1]
            rows = [row for out, r in zip(outs, refs) for row in analyse(out, r)]
            summary = summarise(rows, args.seconds)
            summary.update(streams=n, seconds=args.seconds, wall_s=round(wall, 1),
                           server_cores=round(app_cpu / wall, 2),
                           other_cores=round(max(0.0, others) / wall, 2),
                           niced_cores=round(niced / wall, 2),
                           errors=sum(len(o["errors"]) for o in outs),
                           partials_per_utterance=round(sum(
                               sum(e["type"].endswith(".delta") and bool(e.get("partial"))
                                   for _, e in o["events"]) for o in outs) / max(1, len(rows)),
                               1))
            results.append({"summary": summary, "rows": rows})
            print(json.dumps(summary), flush=True)
    finally:
        app.stop()

    label = f"{args.model} {health['dtype']}"
    lines = [f"# Live transcription latency: {label}", "",
             f"`python bench/streaming.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
             f" on {info['host']} ({info['cpu']}, {info['cpu_count']} cores, AVX-512 VNNI "
             f"{'yes' if 'avx512_vnni' in info.get('cpu_flags', []) else 'no'}), load average before "
             f"{info['load_avg'][0]:.2f}; {stamp}.", "",
             f"Streams of {args.seconds:g} s each at real-time pace, {args.chunk_ms} ms appends,"
             " pcm16 24 kHz; " + ("forced " + f"{args.tokens_per_second:g} tokens per second of "
                                  "audio (random weights); " if env else "") +
             "times in seconds (p50 / p90 over all utterances of all streams).", "",
             "| model | streams | utterances | first partial after onset | final after speech "
             "end | final max | partials / utt. | missed | lag first -> last third | server "
             "cores used | other programs' cores (niced) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        s = r["summary"]
        lines.append(f"| {label} | {s['streams']} | {s['utterances']} | "
                     f"{fmt(s['first_partial_p50'])} / {fmt(s['first_partial_p90'])} | "
                     f"{fmt(s['final_p50'])} / {fmt(s['final_p90'])} | {fmt(s['final_max'])} | "
                     f"{s['partials_per_utterance']} | {s['missed']} | "
                     f"{fmt(s['lag_first_third'])} -> {fmt(s['lag_last_third'])} | "
                     f"{s['server_cores']} | {s['other_cores']} ({s.get('niced_cores', '-')}) |")
    table = "\n".join(lines) + "\n"
    print(table)
    (out_dir / f"{name}.md").write_text(table, encoding="utf-8")
    (out_dir / f"{name}.json").write_text(json.dumps({"machine": info, "args": vars(args),
                                                      "model": label, "results": results},
                                                     indent=1), encoding="utf-8")
    print(f"wrote {out_dir / name}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
