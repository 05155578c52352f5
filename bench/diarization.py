"""Diarization error rate of engine.speakers on real recordings, and its speed.

Two kinds of input:

* ``--rttm REF.rttm --audio DIR [--uem REF.uem]``: real multi-speaker recordings with reference
  turns (e.g. the AMI meeting excerpts that diarization projects keep as test fixtures; the
  audio of file id X is ``DIR/X.wav``). Not shipped here: give their paths.
* ``--mixtures N``: turn-taking conversations built from the real clips in
  ``../shared/data/speech`` (one speaker per clip, the two LJSpeech clips being one speaker):
  3-4 speakers, each speaking 2-3 times (a clip cut at its pauses), pauses of 0.3-1.4 s, no overlap;
  the reference turns are where silero VAD hears speech in each piece.

DER with pyannote.metrics (missed speech, false alarm, confusion; overlap scored) without collar
and with a 0.25 s collar, pooled over files; the speaker count found against the true one; and
seconds of processing per minute of audio. Writes bench/results/diarization_<tag>.md and .json.

    python bench/diarization.py --rttm /tmp/ami/all.rttm --uem /tmp/ami/all.uem \
        --audio /tmp/ami --mixtures 6 --tag ami
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench._common import RESULTS, machine_info, markdown_table, speech_dir
from engine.audio import load_audio
from engine.speakers.diarize import diarize


def read_rttm(path):
    from pyannote.core import Annotation, Segment
    out = {}
    for line in Path(path).read_text().splitlines():
        f = line.split()
        if len(f) < 8 or f[0] != "SPEAKER":
            continue
        a = out.setdefault(f[1], Annotation(uri=f[1]))
        s, d = float(f[3]), float(f[4])
        a[Segment(s, s + d), len(a)] = f[7]
    return out


def read_uem(path):
    from pyannote.core import Segment, Timeline
    out = {}
    if not path:
        return out
    for line in Path(path).read_text().splitlines():
        f = line.split()
        if len(f) >= 4:
            out.setdefault(f[0], Timeline(uri=f[0])).add(Segment(float(f[2]), float(f[3])))
    return out


def hypothesis(d, uri):
    from pyannote.core import Annotation, Segment
    a = Annotation(uri=uri)
    for i, t in enumerate(d.turns):
        a[Segment(t.start, t.end), i] = t.speaker
    return a


def _speakers():
    """{speaker id: [16 kHz arrays]} from the shared clips' manifest."""
    import csv
    speech = speech_dir("manifest.tsv")
    rows = list(csv.DictReader(open(speech / "manifest.tsv"), delimiter="\t"))
    spk = {}
    for r in rows:
        p = r["path"]
        sid = "ljspeech" if "ljspeech" in p else p   # LJSpeech: one reader
        spk.setdefault(sid, []).append(load_audio(str(speech / p)))
    return spk


def _pieces(audio, n):
    """Cut a clip into n pieces at its quietest 50 ms points near the equal-length cuts."""
    if n <= 1:
        return [audio]
    hop = 800
    e = np.array([np.mean(audio[i:i + hop] ** 2) for i in range(0, len(audio) - hop, hop)])
    cuts = []
    for j in range(1, n):
        c = int(j * len(e) / n)
        lo, hi = max(1, c - 12), min(len(e) - 1, c + 12)
        cuts.append((lo + int(np.argmin(e[lo:hi]))) * hop)
    bounds = [0] + cuts + [len(audio)]
    return [audio[a:b] for a, b in zip(bounds, bounds[1:]) if b - a > 8000]


def _speech(audio):
    """Speech regions of a clip (silero VAD, pauses under 0.25 s bridged), in seconds."""
    from engine.audio import vad
    probs, n = vad.speech_probabilities(audio)
    on = probs >= vad.THRESHOLD
    w = vad.WINDOW_S
    out = []
    for i in np.flatnonzero(on):
        a, b = i * w, min((i + 1) * w, n / 16000)
        if out and a - out[-1][1] < 0.25:
            out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out if b - a >= 0.1]


def mixtures(n_mix, seed=0):
    """Turn-taking conversations: [(uri, audio, reference Annotation, n speakers)]."""
    from pyannote.core import Annotation, Segment
    rng = np.random.default_rng(seed)
    spk = _speakers()
    # speakers with >= 4 s of speech, so each can take 2-3 turns of >= 1.3 s
    pool = {k: np.concatenate(v) for k, v in spk.items() if sum(map(len, v)) >= 4 * 16000}
    ids = sorted(pool)
    out = []
    for m in range(n_mix):
        k = int(rng.integers(3, 5))
        chosen = [ids[i] for i in rng.choice(len(ids), size=min(k, len(ids)), replace=False)]
        turns = []
        for s in chosen:
            n_turns = int(rng.integers(2, 4))
            turns += [(s, p) for p in _pieces(pool[s], n_turns)]
        # interleave: no speaker twice in a row where it can be avoided
        rng.shuffle(turns)
        for i in range(1, len(turns)):
            if turns[i][0] == turns[i - 1][0]:
                for j in range(i + 1, len(turns)):
                    if turns[j][0] != turns[i - 1][0]:
                        turns[i], turns[j] = turns[j], turns[i]
                        break
        audio, ref, t = [], Annotation(uri=f"mix{m}"), 0.0
        for i, (s, p) in enumerate(turns):
            pause = float(rng.uniform(0.3, 1.4)) if i else 0.5
            audio.append(np.zeros(int(pause * 16000), np.float32))
            t += pause
            for a, b in _speech(p):    # the reference is where the clip has speech
                ref[Segment(t + a, t + b), (i, a)] = s
            audio.append(p.astype(np.float32))
            t += len(p) / 16000
        audio.append(np.zeros(8000, np.float32))
        out.append((f"mix{m}", np.concatenate(audio), ref, len(chosen)))
    return out


def score(items, collar):
    from pyannote.metrics.diarization import DiarizationErrorRate
    metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
    for ref, hyp, uem in items:
        metric(ref, hyp, uem=uem)
    tot = abs(metric)
    comp = {k: metric[k] for k in ("missed detection", "false alarm", "confusion", "total")}
    return {"DER": 100 * tot, "missed": 100 * comp["missed detection"] / comp["total"],
            "false_alarm": 100 * comp["false alarm"] / comp["total"],
            "confusion": 100 * comp["confusion"] / comp["total"]}


def run_set(name, entries, opts, held_out=()):
    """entries: (uri, audio source, reference, uem, true count). ``held_out``: file ids also
    scored apart (and the others as the tuning half), from the same runs."""
    items, counts, secs, dur = [], [], 0.0, 0.0
    for uri, src, ref, uem, n_true in entries:
        t0 = time.perf_counter()
        d = oracle_diarize(src, ref) if opts.get("oracle_assign") else diarize(src, **{
            k: v for k, v in opts.items() if k != "oracle_assign"})
        secs += time.perf_counter() - t0
        dur += d.duration
        items.append((ref, hypothesis(d, uri), uem))
        counts.append((uri, n_true, d.num_speakers))
        print(f"  {name} {uri}: {n_true} speakers, found {d.num_speakers}, "
              f"{d.seconds:.2f} s for {d.duration:.1f} s", flush=True)
    out = {"set": name, "files": len(entries), "minutes": dur / 60,
           "no_collar": score(items, 0.0), "collar_0.25": score(items, 0.25 * 2),
           "count_right": sum(a == b for _, a, b in counts), "counts": counts,
           "seconds_per_minute": 60 * secs / max(dur, 1e-9)}
    held = [i for i, (u, *_) in enumerate(counts) if u in held_out]
    if held:
        out["halves"] = {}
        for half, sel in (("tuning", [i for i in range(len(items)) if i not in held]),
                          ("held-out", held)):
            sub = [items[i] for i in sel]
            out["halves"][half] = {"files": len(sel), "no_collar": score(sub, 0.0),
                                   "collar_0.25": score(sub, 0.5),
                                   "count_right": sum(counts[i][1] == counts[i][2] for i in sel)}
    return out


def oracle_diarize(src, ref):
    """The pipeline with perfect clustering: each track (a local speaker of a window, or a part
    of one) goes to the reference speaker it overlaps most in its window. What is left is what
    segmentation and reconstruction cost (missed overlap, boundaries): the floor the clustering
    cannot go under."""
    from engine.audio import stream_audio
    from engine.speakers import diarize as D
    from engine.speakers import models as M
    col = D._Collector(M.get_embedding())
    total = 0
    step = int(round(D.STEP_S * M.SAMPLE_RATE / M.FRAME_STEP)) * M.FRAME_STEP   # as diarize()
    for item in D._windows(stream_audio(src, block_seconds=30.0), step):
        if isinstance(item, int):
            total = item
            break
        col.add(*item)
    arrays = col.arrays()
    starts, hard, tracks, _ = arrays
    labels = sorted(ref.labels())
    half = M.FRAME_FIELD / 2
    n_glob = int(starts.max() // M.FRAME_STEP + M.N_FRAMES)
    centres = (np.arange(n_glob) * M.FRAME_STEP + half) / M.SAMPLE_RATE
    R = np.zeros((n_glob, len(labels)), bool)
    for seg, _, lab in ref.itertracks(yield_label=True):
        R[(centres >= seg.start) & (centres < seg.end), labels.index(lab)] = True
    overlap = np.zeros((len(tracks), len(labels)))
    for t, (w, s, a, b) in enumerate(tracks):
        o = starts[w] // M.FRAME_STEP
        overlap[t] = (hard[w][a:b, s][:, None] * R[o + a:o + b]).sum(0)
    # the pipeline's own rule with overlap for similarity: two local speakers heard at once
    # are two people
    assign = D._assign(overlap, tracks, hard)
    saved = D._assign
    D._assign = lambda sim, tr, hd: np.minimum(assign, sim.shape[1] - 1)
    try:
        return D.finish(arrays, total, num_speakers=len(labels))
    finally:
        D._assign = saved


def speed(model_dir, files, dtype="int8", max_new_tokens=48, repeats=2):
    """Side by side on each file: the transcription alone (VAD segments), diarization alone,
    and the transcription with speakers (diarize, then transcribe the speaker turns)."""
    from engine.longform import transcribe_long
    from engine.speakers.options import SpeakerRequest
    from model import FunASRNano
    from serving.diarized import transcribe_with_speakers
    t0 = time.perf_counter()
    asr = FunASRNano.from_pretrained(model_dir, device="cpu", dtype=dtype)
    print(f"model loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    for f in files:
        def run(spans=None, f=f):
            return transcribe_long(asr, f, max_new_tokens=max_new_tokens, spans=spans)
        run()                                    # warm-up
        t = {"asr": [], "diarize": [], "asr+speakers": []}
        for _ in range(repeats):                 # interleaved, so load changes hit all three
            t0 = time.perf_counter()
            res = run()
            t["asr"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            diarize(f)
            t["diarize"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            transcribe_with_speakers(f, f, SpeakerRequest(), run)
            t["asr+speakers"].append(time.perf_counter() - t0)
        m = {k: min(v) for k, v in t.items()}
        rows.append({"file": Path(f).name, "duration": res["duration"], **m,
                     "diarize_rtf": m["diarize"] / res["duration"],
                     "diarize_over_asr": m["diarize"] / m["asr"],
                     "with_speakers_over_asr": m["asr+speakers"] / m["asr"] - 1})
        print(rows[-1], flush=True)
    return {"model": str(model_dir), "dtype": dtype, "max_new_tokens": max_new_tokens,
            "rows": rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--rttm", help="reference RTTM of real recordings")
    ap.add_argument("--uem", help="scored regions (UEM) for --rttm")
    ap.add_argument("--audio", help="folder holding <file id>.wav for --rttm")
    ap.add_argument("--mixtures", type=int, default=0, help="turn-taking mixtures to build")
    ap.add_argument("--seed", type=int, default=0, help="which mixtures (0: the tuning set)")
    ap.add_argument("--held-out", default="", help="comma-separated file ids of --rttm scored "
                    "apart as the held-out half (the others: the half the settings were tuned on)")
    ap.add_argument("--oracle-count", action="store_true", help="give the true speaker count")
    ap.add_argument("--oracle-assign", action="store_true", help="perfect clustering (each "
                    "track to the reference speaker it overlaps most): the segmentation's floor")
    ap.add_argument("--step", type=float, default=None, help="window step in seconds")
    ap.add_argument("--speed-model", help="model directory: also time transcription with and "
                    "without speakers on --speed-files (int8)")
    ap.add_argument("--speed-files", nargs="*", default=[])
    ap.add_argument("--max-new-tokens", type=int, default=48,
                    help="per segment in the speed runs (a random model never stops early)")
    ap.add_argument("--speed-repeats", type=int, default=2)
    ap.add_argument("--tag", default="run")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    a.load_start = os.getloadavg()[0]
    opts = {}
    if a.step:
        opts["step_s"] = a.step
    if a.oracle_assign:
        opts["oracle_assign"] = True
    results = []
    if a.rttm:
        refs, uems = read_rttm(a.rttm), read_uem(a.uem)
        entries = []
        for uri in sorted(refs):
            wav = Path(a.audio) / f"{uri}.wav"
            if wav.exists():
                entries.append((uri, str(wav), refs[uri], uems.get(uri), len(refs[uri].labels())))
        print(f"real recordings: {len(entries)}", flush=True)
        held = set(filter(None, a.held_out.split(",")))
        name = "real (perfect clustering)" if a.oracle_assign else "real"
        results.append(run_set(name, entries, opts, held) if not a.oracle_count
                       else _pooled_oracle(run_set, "real", entries, opts))
    if a.mixtures:
        entries = [(u, x, r, None, n) for u, x, r, n in mixtures(a.mixtures, a.seed)]
        name = "turn-taking" + (f" (seed {a.seed})" if a.seed else "") + (
            " (perfect clustering)" if a.oracle_assign else "")
        results.append(_with_count(run_set, name, entries, opts, a.oracle_count))
    sp = speed(a.speed_model, a.speed_files, max_new_tokens=a.max_new_tokens,
                                repeats=a.speed_repeats) \
        if a.speed_model else None
    write(results, a, sp)


def _with_count(fn, name, entries, opts, oracle):
    if not oracle:
        return fn(name, entries, opts)
    # one call per file with its own count
    res = None
    for e in entries:
        r = fn(name, [e], {**opts, "num_speakers": e[4]})
        res = r if res is None else res   # pooled scores below
    return fn(name, entries, opts) if res is None else _pooled_oracle(fn, name, entries, opts)


def _pooled_oracle(fn, name, entries, opts):
    from pyannote.metrics.diarization import DiarizationErrorRate  # noqa: F401
    items, counts, secs, dur = [], [], 0.0, 0.0
    for uri, src, ref, uem, n_true in entries:
        t0 = time.perf_counter()
        d = diarize(src, num_speakers=n_true, **opts)
        secs += time.perf_counter() - t0
        dur += d.duration
        items.append((ref, hypothesis(d, uri), uem))
        counts.append((uri, n_true, d.num_speakers))
    return {"set": name + " (true count given)", "files": len(entries), "minutes": dur / 60,
            "no_collar": score(items, 0.0), "collar_0.25": score(items, 0.5),
            "count_right": sum(a == b for _, a, b in counts), "counts": counts,
            "seconds_per_minute": 60 * secs / max(dur, 1e-9)}


def _parts(d: dict) -> str:
    return f"{d['missed']:.1f} / {d['false_alarm']:.1f} / {d['confusion']:.1f}"


def write(results, a, sp=None):
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    m = machine_info("cpu")
    machine = f"{m.get('cpu')}, {m.get('cpu_count')} CPUs"
    load = f"{getattr(a, 'load_start', float('nan')):.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    lines = [f"# Diarization ({a.tag})", "", f"Machine: {machine}, shared (load average {load}). "
             f"Command: `python bench/diarization.py {' '.join(sys.argv[1:])}`", ""]
    rows = []
    for r in results:
        rows.append([r["set"], r["files"], f"{r['minutes']:.1f}", f"{r['no_collar']['DER']:.1f}%",
                     _parts(r["no_collar"]), f"{r['collar_0.25']['DER']:.1f}%",
                     _parts(r["collar_0.25"]), f"{r['count_right']}/{r['files']}",
                     f"{r['seconds_per_minute']:.2f}"])
        for half, h in r.get("halves", {}).items():
            rows.append([f"{r['set']}: {half} half", h["files"], "", f"{h['no_collar']['DER']:.1f}%",
                         _parts(h["no_collar"]), f"{h['collar_0.25']['DER']:.1f}%",
                         _parts(h["collar_0.25"]), f"{h['count_right']}/{h['files']}", ""])
    lines += markdown_table(
        ["set", "files", "min", "DER no collar", "miss / FA / conf", "DER 0.25 s collar",
         "miss / FA / conf", "count right", "s per min of audio"], rows, "lrrrlrlrr")
    lines += ["", "Speaker counts (file, true, found):", ""]
    for r in results:
        lines.append(f"- {r['set']}: " + ", ".join(f"{u} {t}/{f}" for u, t, f in r["counts"]))
    if sp:
        lines += ["", f"Speed, {sp['dtype']} transcription with {Path(sp['model']).name} "
                  f"(max {sp['max_new_tokens']} new tokens per segment), best of the "
                  "interleaved runs, seconds:", ""]
        lines += markdown_table(
            ["file", "audio s", "transcription", "diarization", "transcription with speakers",
             "diarization x real time", "diarization / transcription", "with speakers: extra"],
            [[r["file"], f"{r['duration']:.1f}", f"{r['asr']:.2f}", f"{r['diarize']:.2f}",
              f"{r['asr+speakers']:.2f}", f"{r['diarize_rtf']:.3f}",
              f"{100 * r['diarize_over_asr']:.0f}%", f"{100 * r['with_speakers_over_asr']:+.0f}%"]
             for r in sp["rows"]])
    text = "\n".join(lines) + "\n"
    (out / f"diarization_{a.tag}.md").write_text(text)
    (out / f"diarization_{a.tag}.json").write_text(json.dumps(
        {"machine": machine, "load_average": load, "results": results, "speed": sp}, indent=2,
        default=str) + "\n")
    print(text)


if __name__ == "__main__":
    main()
