"""How well the long-audio segments keep speech, on a recording where the speech is known.

    python bench/segments.py                        # VAD grid only (~1 min of CPU)
    python bench/segments.py --decode models/demo   # + decode time, today's vs the chosen setting
    python bench/segments.py --decode models/demo --prefill-random full

The recording: every clip of ../shared/data/speech (all languages; decoded, mixed to mono and
resampled to 16 kHz by engine.audio.load_audio) in seeded random order, over and over until it
lasts 10 minutes, joined by 2-4 s pauses of low-level Gaussian noise (-70 dBFS RMS: digital
silence would make the VAD's job unrealistically easy). Each clip's span is known, so:

- speech frames: 10 ms frames of a clip within 30 dB of that clip's loudest 10 ms frame;
- "speech outside": the share of speech frames whose centre lies in no segment;
- "edge in pause": for a segment edge outside every clip, how far it lies from the nearest clip
  boundary; the table gives the largest over all edges.

For each setting of a small grid (pad, merge gap, merge target; plus today's defaults and the
chosen ones) the table gives the segment count, median / longest segment, speech outside and the
largest edge-in-pause. Decode time (``engine.longform.transcribe_long`` on the whole recording,
batch 8) is measured only for "before" and "chosen", since it costs CPU minutes, with the demo
model (``--decode``): a small trained model, so its time is mostly per-segment overhead. The
full-size model's extra cost from merging is in encoding the pauses inside merged segments and
the padding: ``--prefill-random full`` times the encoder and prompt prefill of every segment
with the full-size random-weight checkpoint (one new token each; random weights generate
meaningless token counts, so whole decodes are not timed with them).

Writes bench/results/segments-<host>-<YYYYMMDD-HHMM>.md and .json with the machine.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench._common import REPO as ROOT, SPEECH_DIR_CANDIDATES, machine_info

from engine.audio import SAMPLE_RATE as SR, load_audio, vad

SPEECH = SPEECH_DIR_CANDIDATES[0]
FRAME = 160                 # 10 ms at 16 kHz
SPEECH_DB = 30.0            # a speech frame is within this many dB of its clip's peak frame
NOISE_RMS = 3e-4            # about -70 dBFS: the pauses are quiet room noise, not digital zeros

# Today's defaults (before this benchmark chose new ones), kept to print the "before" row.
BEFORE = {"pad_s": 0.1, "merge_gap_s": 0.8, "target_segment_s": None}
GRID = {"pad_s": [0.1, 0.2, 0.3, 0.4, 0.45],
        "merge_gap_s": [0.8, 1.5, 3.0, 5.0],
        "target_segment_s": [10.0, 20.0, 30.0]}
OTHER_SEEDS = (1, 2)        # "before" and "chosen" again on recordings with other seeds


def load_clips(speech_dir: Path = SPEECH) -> list[np.ndarray]:
    with open(speech_dir / "manifest.tsv", encoding="utf-8") as f:
        return [load_audio(speech_dir / row["path"]) for row in csv.DictReader(f, delimiter="\t")]


def build_recording(clips, seconds=600.0, pause_range=(2.0, 4.0), seed=0):
    """(audio, spans): the clips in seeded random order, repeated, each after a pause of random
    length, until ``seconds``; a last pause at the end. ``spans`` is [(start, end)] in samples."""
    rng = np.random.default_rng(seed)
    parts, spans, t = [], [], 0
    while t < seconds * SR:
        for c in rng.permutation(len(clips)):
            if t >= seconds * SR:
                break
            g = int(rng.uniform(*pause_range) * SR)
            parts += [rng.normal(0, NOISE_RMS, g).astype(np.float32), clips[c]]
            spans.append((t + g, t + g + len(clips[c])))
            t += g + len(clips[c])
    g = int(rng.uniform(*pause_range) * SR)
    parts.append(rng.normal(0, NOISE_RMS, g).astype(np.float32))
    return np.concatenate(parts), spans


def speech_frame_times(audio, spans) -> np.ndarray:
    """Centres (s) of the 10 ms frames within SPEECH_DB of their clip's loudest frame."""
    times = []
    for s, e in spans:
        clip = audio[s:e]
        n = len(clip) // FRAME
        energy = (clip[:n * FRAME].astype(np.float64).reshape(n, FRAME) ** 2).mean(1)
        keep = np.flatnonzero(energy >= energy.max() * 10 ** (-SPEECH_DB / 10))
        times.append((s + keep * FRAME + FRAME / 2) / SR)
    return np.concatenate(times)


def measure(segs, spans, speech_times) -> dict:
    """The numbers of one segmentation against the known clip spans."""
    starts = np.array([a for a, _ in segs])
    ends = np.array([b for _, b in segs])
    k = np.searchsorted(starts, speech_times, side="right") - 1   # last segment starting before
    inside = (k >= 0) & (speech_times <= ends[np.maximum(k, 0)])
    clip_s = np.array([s / SR for s, _ in spans])
    clip_e = np.array([e / SR for _, e in spans])
    depth = 0.0
    for edge in np.concatenate([starts, ends]):
        if np.any((clip_s <= edge) & (edge <= clip_e)):
            continue                                              # inside a clip: not a pause
        depth = max(depth, float(np.min(np.minimum(np.abs(clip_s - edge), np.abs(clip_e - edge)))))
    lengths = ends - starts
    return {"segments": len(segs), "audio_s": round(float(lengths.sum()), 1),
            "median_s": round(float(np.median(lengths)), 2),
            "max_s": round(float(lengths.max()), 2),
            "speech_outside_pct": round(100 * float(1 - inside.mean()), 3),
            "edge_in_pause_s": round(depth, 3)}


def decode_time(model, audio, setting, batch_size=8, repeats=3) -> dict:
    """Median wall time of transcribe_long (VAD pass included) over ``repeats`` runs."""
    from engine.longform import transcribe_long
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = transcribe_long(model, (audio, SR), batch_size=batch_size, vad_options=setting)
        times.append(time.perf_counter() - t0)
    seconds = float(np.median(times))
    return {"decode_s": round(seconds, 2), "rtf": round(seconds / (len(audio) / SR), 4),
            "runs_s": [round(t, 2) for t in times],
            "decoded_segments": len(res["segments"]), "error": res["error"]}


def prefill_time(model, audio, segs, batch_size=8) -> dict:
    """Wall time of encoding and prefilling every segment, batch 8, one new token each."""
    pieces = [(audio[int(a * SR):int(b * SR)], SR) for a, b in segs]
    t0 = time.perf_counter()
    model.transcribe(pieces, batch_size=batch_size, max_new_tokens=1, ignore_eos=True,
                     repetition_guard=False)
    seconds = time.perf_counter() - t0
    return {"decode_s": round(seconds, 2), "rtf": round(seconds / (len(audio) / SR), 4)}


def label(setting: dict) -> str:
    t = setting["target_segment_s"]
    return (f"pad {setting['pad_s']:.2g} s, merge < {setting['merge_gap_s']:.2g} s, "
            f"target {'none (30 s max)' if t is None else f'{t:.0f} s'}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600.0, help="length of the recording")
    ap.add_argument("--seed", type=int, default=0, help="seed of the clip order and pauses")
    ap.add_argument("--decode", metavar="MODEL_DIR", default=None,
                    help="also time transcribe_long with this model (e.g. models/demo)")
    ap.add_argument("--prefill-random", choices=["tiny", "full"], default=None,
                    help="also time the encoder and prompt prefill of every segment (one new "
                    "token each) with a random-weight model of this size: the part of a "
                    "full-size model's cost that grows with the audio in segments (random "
                    "weights generate meaningless token counts, so whole decodes are not timed)")
    ap.add_argument("--no-write", action="store_true", help="print only, write no result files")
    args = ap.parse_args(argv)

    audio, spans = build_recording(load_clips(), args.seconds, seed=args.seed)
    speech_times = speech_frame_times(audio, spans)
    t0 = time.perf_counter()
    probs, n = vad.speech_probabilities(audio)
    vad_s = time.perf_counter() - t0

    chosen = {"pad_s": vad.PAD_S, "merge_gap_s": vad.MERGE_GAP_S,
              "target_segment_s": vad.TARGET_SEGMENT_S}
    settings = [("before", BEFORE), ("chosen (new defaults)", chosen)]
    settings += [("", dict(zip(GRID, v))) for v in itertools.product(*GRID.values())]
    rows = []
    for name, setting in settings:
        segs = vad.segments_from_probabilities(probs, n, **setting)
        rows.append({"name": name, "setting": setting, **measure(segs, spans, speech_times)})

    for seed in OTHER_SEEDS:
        other, other_spans = build_recording(load_clips(), args.seconds, seed=seed)
        other_times = speech_frame_times(other, other_spans)
        p2, n2 = vad.speech_probabilities(other)
        for name, setting in settings[:2]:
            segs = vad.segments_from_probabilities(p2, n2, **setting)
            rows.append({"name": f"{name.split()[0]}, seed {seed}", "setting": setting,
                         **measure(segs, other_spans, other_times)})

    models = []
    if args.decode:
        from model import FunASRNano
        models.append((f"demo ({args.decode})", FunASRNano.from_pretrained(args.decode)))
    for row in rows[:2]:
        for mname, model in models:
            row.setdefault("decode", {})[mname] = decode_time(model, audio, row["setting"])
    if args.prefill_random:
        from model import FunASRNano
        from tools.make_random_model import cached_random_model
        size = args.prefill_random
        path = cached_random_model(size, 1 if size == "full" else 0)
        mname = f"encoder+prefill, random {size}"
        model = FunASRNano.from_pretrained(str(path))
        models.append((mname, model))
        for row in rows[:2]:
            segs = vad.segments_from_probabilities(probs, n, **row["setting"])
            row.setdefault("decode", {})[mname] = prefill_time(model, audio, segs)

    info = {"machine": machine_info("cpu"),
            "recording": {"seconds": round(len(audio) / SR, 1), "clips": len(spans),
                          "pauses": "2-4 s of Gaussian noise, RMS 3e-4 (-70 dBFS)",
                          "seed": args.seed, "speech_frames": int(len(speech_times)),
                          "vad_pass_s": round(vad_s, 1)},
            "rows": rows}
    lines = [f"# Segments on a {len(audio) / SR / 60:.1f}-minute recording "
             f"({len(spans)} real clips, 2-4 s noise pauses, seed {args.seed})", "",
             f"Machine: {info['machine'].get('cpu')} ({info['machine'].get('cpu_count')} cores), "
             f"host {info['machine']['host']}. VAD pass {vad_s:.1f} s. Speech frames: "
             f"{len(speech_times)} (10 ms, within {SPEECH_DB:.0f} dB of the clip's peak).", "",
             "| setting | segments | audio in segments s | median s | longest s "
             "| speech outside % | edge in pause s |"
             + "".join(f" decode s: {m} |" for m, _ in models),
             "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(models)]
    for row in rows:
        name = f"**{row['name']}**: " if row["name"] else ""
        dec = "".join(f" {row['decode'][m]['decode_s']} |" if "decode" in row else " |"
                      for m, _ in models)
        lines.append(f"| {name}{label(row['setting'])} | {row['segments']} | {row['audio_s']} | "
                     f"{row['median_s']} | "
                     f"{row['max_s']} | {row['speech_outside_pct']} | {row['edge_in_pause_s']} |"
                     + dec)
    for mname, _ in models:
        b, c = rows[0]["decode"][mname]["decode_s"], rows[1]["decode"][mname]["decode_s"]
        what = ("encoder and prefill of every segment (batch 8, one new token), one run"
                if mname.startswith("encoder") else
                "transcribe_long, VAD pass included, batch 8, median of 3")
        lines += ["", f"Time, {mname} ({what}): before {b} s, chosen {c} s "
                  f"(chosen / before = {c / b:.2f})."]
    lines += ["", "Audio in segments: the seconds the encoder sees (merged segments include the "
              "pauses between their speech regions; padding adds context), a proxy for the "
              "encoder's share of a full-size model's cost."]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M")
        out = ROOT / "bench" / "results" / f"segments-{socket.gethostname()}-{stamp}"
        out.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {out}.md / .json")


if __name__ == "__main__":
    main()
