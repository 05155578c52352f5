"""Word timings and subtitle cues against references whose times are known because we built them.

    python bench/timing.py words                 # demo model, synthetic speech, 12 languages
    python bench/timing.py cues                  # demo model, the 12 example clips + 3 s pauses
    python bench/timing.py heads                 # demo model: each head's score vs its error
    python bench/timing.py cost                  # full-size random model, with vs without words
    python bench/timing.py all

words: for each of the demo's 12 languages, held-out plain sentences of tools/demo_lang.py are
spoken by espeak-ng (through libespeak-ng, so its WORD events give each word's start in the
audio) as connected speech, after 0.3-0.7 s of lead-in, over quiet noise (-70 dBFS). Words are the
sentence's words (Chinese and Cantonese: characters, read as pinyin syllables and characters;
Japanese: the template's pieces, read as kana), joined by spaces so that espeak-ng's words are
ours. A word's reference start is its WORD event (the first sample above 1e-3 from there), its
end the last sample above 1e-3 before the next word's start. The demo model transcribes each
recording with ``words=True`` (language given, ITN off); the hypothesis words are matched to
the reference words by their characters (difflib; case and punctuation ignored) and every
matched word's |start error| and |end error| is pooled per language: median and 90th
percentile. (Words spoken one at a time with pauses between them were tried first: the demo,
trained on sentences, hears them as lists of numbers.)

cues: the 12 example clips joined by 3 s pauses, over and over (about 3 minutes, 30 clips) as
the issue describes, through ``engine.longform.transcribe_long`` and the VTT writer with the
CLI's defaults (word timings on): each clip's first cue start against its speech onset (the
first 10 ms frame within 30 dB of the clip's loudest), and whether any cue spans a pause longer
than 1 s (a cue overlapping two clips).

cost: the full-size random-weight checkpoint (tools/make_random_model.py full: the official
architecture), 4 clips of speech from ../shared/data/speech in one batch, decoding a fixed 32
tokens each (``ignore_eos``: random weights make meaningless token counts), ``transcribe`` on the
same clips with and without ``words=True``, and with words the previous way (the decode keeps
nothing, so the alignment runs prompt and tokens again), interleaved with the order
rotating, 5 rounds (``--rounds``);
the ratio of the medians, the per-round ratios, and the time spent inside the alignment itself
(timed around ``engine.alignment.align``) against a run without words, which the machine's load
disturbs less than the difference of two end-to-end times. The load average is recorded
before each run. Random weights have no heads worth choosing, so the heads are set in the
deepest layer: the upper bound, where the extra pass runs the whole decoder over prompt and
tokens.

Writes bench/results/timing-<host>-<YYYYMMDD-HHMM>.md and .json.
"""
from __future__ import annotations

import argparse
import difflib
import os
import random
import re
import time
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench._common import (REPO, RESULTS, SR, find_speech_dir, machine_info, machine_line,
                           markdown_table, safe_host, write_results)

NOISE_RMS = 3e-4
LANGS = ["zh", "en", "yue", "ja", "ko", "id", "vi", "pt", "nl", "pl", "sv", "fi"]
SPEED = {"zh": 150, "yue": 150, "ja": 160, "ko": 150}


# ----------------------------------------------------------------------------- synthetic words

def _units(lang: str, rng: random.Random):
    """(surface, say) pieces of one held-out sentence."""
    from tools import demo_lang as dl
    spec = dl.LANGS[lang]
    plain = [p for p in spec["plain"] if dl.n_combinations(p[1]) >= 100] or spec["plain"]
    template, slots = rng.choice(plain)
    if lang == "ja":
        surface_t, reading_t = dl.split_ja(template)
        values = {name: dl.split_ja(rng.choice(slots[name])) for name in slots}
        units = []
        for piece_s, piece_r in zip(re.split(r"(\{[A-Z]\})", surface_t),
                                    re.split(r"(\{[A-Z]\})", reading_t)):
            m = re.fullmatch(r"\{([A-Z])\}", piece_s)
            s, r = values[m.group(1)] if m else (piece_s, piece_r)
            s, r = s.strip("。、 "), r.strip("。、 ")
            if s:
                units.append((s, r))
        return units
    form, _ = dl._fill(lang, template, slots, rng)
    text = form.noitn
    if lang in ("zh", "yue"):
        chars = [c for c in text if unicodedata.category(c).startswith("L")]
        return [(c, dl._zh_say(c) if lang == "zh" else c) for c in chars]
    words = [w.strip(".,!?;:") for w in text.split()]
    return [(w, w) for w in words if w]


class _Espeak:
    """libespeak-ng through ctypes: connected speech and the start of every word (its WORD
    events: character position in the text, audio position in ms)."""

    def __init__(self):
        import ctypes as C

        class Event(C.Structure):
            _fields_ = [("type", C.c_int), ("unique_identifier", C.c_uint),
                        ("text_position", C.c_int), ("length", C.c_int),
                        ("audio_position", C.c_int), ("sample", C.c_int),
                        ("user_data", C.c_void_p), ("id", C.c_char * 8)]

        self.C, self.lib = C, C.CDLL("libespeak-ng.so.1")
        self.rate = self.lib.espeak_Initialize(2, 0, None, 0)  # AUDIO_OUTPUT_SYNCHRONOUS
        self.proto = C.CFUNCTYPE(C.c_int, C.POINTER(C.c_short), C.c_int, C.POINTER(Event))
        self.samples, self.events = [], []

        def cb(wav, n, ev):
            if wav and n > 0:
                self.samples.append(np.ctypeslib.as_array(wav, (n,)).copy())
            i = 0
            while ev[i].type != 0:
                if ev[i].type == 1:  # espeakEVENT_WORD
                    self.events.append((ev[i].text_position, ev[i].length,
                                        ev[i].audio_position / 1000.0))
                i += 1
            return 0

        self._cb = self.proto(cb)
        self.lib.espeak_SetSynthCallback(self._cb)

    def say(self, text: str, voice: str, rate: int):
        self.samples, self.events = [], []
        self.lib.espeak_SetVoiceByName(voice.encode())
        self.lib.espeak_SetParameter(1, rate, 0)  # espeakRATE
        raw = text.encode("utf-8")
        self.lib.espeak_Synth(raw, len(raw) + 1, 0, 1, 0, 1, None, None)  # POS_CHARACTER, UTF8
        self.lib.espeak_Synchronize()
        pcm = (np.concatenate(self.samples) if self.samples else np.zeros(0, np.int16))
        pcm = pcm.astype(np.float32) / 32768.0
        import soxr
        return soxr.resample(pcm, self.rate, SR).astype(np.float32), list(self.events)


_ESPEAK = None


def synth_recording(lang: str, seed: int):
    """(audio, [(surface, start_s, end_s)]) of one sentence in connected speech: the words are
    the units of ``_units`` joined by spaces, their starts espeak-ng's word events, their ends the
    last sample above 1e-3 before the next word starts."""
    global _ESPEAK
    from tools import demo_lang as dl
    if _ESPEAK is None:
        _ESPEAK = _Espeak()
    rng = random.Random(f"{lang}-{seed}")
    units = _units(lang, rng)
    voice = dl.LANGS[lang]["voices"][0]
    say, where = "", []
    for surface, spoken in units:
        if say:
            say += " "
        where.append((len(say), len(say) + len(spoken)))
        say += spoken
    pcm, events = _ESPEAK.say(say, voice, SPEED.get(lang, 165))
    lead = rng.uniform(0.3, 0.7)
    # character positions (1-based, counted in characters) -> the unit that holds them
    starts = {}
    for pos, _, t in events:
        for k, (a, b) in enumerate(where):
            if a <= pos - 1 < b and k not in starts:
                starts[k] = t
    loud = np.abs(pcm) > 1e-3
    ref = []
    ks = sorted(starts)
    for j, k in enumerate(ks):
        t0 = starts[k]
        t1 = starts[ks[j + 1]] if j + 1 < len(ks) else len(pcm) / SR
        a, b = int(t0 * SR), int(t1 * SR)
        idx = np.flatnonzero(loud[a:b])
        if not len(idx):
            continue
        ref.append((units[k][0], lead + (a + idx[0]) / SR, lead + (a + idx[-1] + 1) / SR))
    audio = np.concatenate([np.zeros(int(lead * SR), np.float32), pcm,
                            np.zeros(int(0.4 * SR), np.float32)])
    audio = audio + np.random.default_rng(seed).normal(0, NOISE_RMS, len(audio)).astype(np.float32)
    return audio.astype(np.float32), ref


def _norm(s: str) -> str:
    return "".join(c.lower() for c in s if unicodedata.category(c)[0] in "LN")


def match_errors(ref, words) -> list[tuple[float, float]]:
    """(|start error|, |end error|) of every reference word whose characters all match the
    hypothesis and start and end hypothesis words."""
    rs, r_owner = "", []
    for k, (s, _, _) in enumerate(ref):
        n = _norm(s)
        rs += n
        r_owner += [k] * len(n)
    hs, h_owner = "", []
    for k, w in enumerate(words):
        n = _norm(w["word"])
        hs += n
        h_owner += [k] * len(n)
    mapping = {}
    for a, b, size in difflib.SequenceMatcher(None, rs, hs, autojunk=False).get_matching_blocks():
        for d in range(size):
            mapping[a + d] = b + d
    errs = []
    pos = 0
    for k, (s, t0, t1) in enumerate(ref):
        n = len(_norm(s))
        first, last = pos, pos + n - 1
        pos += n
        if n == 0 or first not in mapping or last not in mapping:
            continue
        h0, h1 = mapping[first], mapping[last]
        w0, w1 = h_owner[h0], h_owner[h1]
        if (h0 > 0 and h_owner[h0 - 1] == w0) or (h1 + 1 < len(hs) and h_owner[h1 + 1] == w1):
            continue  # the hypothesis word is longer than the reference word: no clean match
        errs.append((abs(words[w0]["start"] - t0), abs(words[w1]["end"] - t1)))
    return errs


def bench_words(model, per_lang: int = 10) -> dict:
    out = {}
    for lang in LANGS:
        recs = [synth_recording(lang, s) for s in range(per_lang)]
        res = model.transcribe([a for a, _ in recs], language=lang, itn=False, words=True)
        starts, ends, n_ref, estimated = [], [], 0, 0
        for (audio, ref), r in zip(recs, res):
            n_ref += len(ref)
            estimated += sum(1 for w in r.get("words") or [] if w.get("estimated"))
            for e0, e1 in match_errors(ref, r.get("words") or []):
                starts.append(e0)
                ends.append(e1)
        both = np.array(starts + ends)
        out[lang] = {"recordings": per_lang, "ref_words": n_ref, "matched": len(starts),
                     "estimated_words": estimated,
                     "start_median": float(np.median(starts)) if starts else None,
                     "end_median": float(np.median(ends)) if ends else None,
                     "median": float(np.median(both)) if len(both) else None,
                     "p90": float(np.percentile(both, 90)) if len(both) else None}
        print(lang, out[lang], flush=True)
    return out


def bench_heads(model, per_lang: int = 4) -> dict:
    """Every decoder head alone, and the chosen heads together, on the synthetic speech: the
    head criterion's score (engine.alignment.heads.head_scores, averaged over the recordings)
    against the word-start error of the words read from that head's attention alone (the same
    path as engine.alignment, trust bar aside)."""
    from engine.alignment import MEDIAN_FILTER
    from engine.alignment.attention import audio_attention
    from engine.alignment.dtw import dtw, median_filter
    from engine.alignment.heads import choose_for_model, head_scores
    from engine.alignment.words import token_pieces, words_from_token_times
    cfg = model.llm_config
    heads = [(l, h) for l in range(cfg.num_hidden_layers) for h in range(cfg.num_attention_heads)]
    chosen = choose_for_model(model)
    sets = {str(list(h)): [heads.index(h)] for h in heads}
    sets["chosen"] = [heads.index(h) for h in chosen]
    errs = {k: [] for k in sets}
    scores, n = np.zeros(len(heads)), 0
    for lang in LANGS:
        recs = [synth_recording(lang, s) for s in range(per_lang)]
        prepared = model.prepare([a for a, _ in recs], model.prompt_ids(lang, False, ()))
        gens = model._generate([p.embeds for p in prepared], 96, False, True)
        ws = audio_attention(model.llm, [p.embeds for p in prepared],
                             [p.audio_span for p in prepared], [g.tokens for g in gens], heads)
        for (_, ref), p, g, w in zip(recs, prepared, gens, ws):
            scores, n = scores + head_scores(w), n + 1
            pieces = token_pieces(model.tokenizer.decode, g.tokens)
            for k, idx in sets.items():
                x = w[idx].numpy().astype(np.float64)
                x = (x - x.mean(-2, keepdims=True)) / (x.std(-2, keepdims=True) + 1e-9)
                rows, cols = dtw(-median_filter(x, MEDIAN_FILTER).mean(0))
                t = cols[np.concatenate([[True], np.diff(rows) > 0])] * p.seconds / w.shape[-1]
                words = words_from_token_times(pieces, t[:-1], t[1:])
                errs[k] += [e0 for e0, _ in match_errors(ref, words)]
    scores /= max(n, 1)
    out = {k: {"score": round(float(np.mean(scores[idx])), 3),
               "start_median": round(float(np.median(errs[k])), 3),
               "start_p90": round(float(np.percentile(errs[k], 90)), 3)} for k, idx in sets.items()}
    out["chosen"]["heads"] = [list(h) for h in chosen]
    print("heads", out, flush=True)
    return out


# ----------------------------------------------------------------------------- cues, long audio

def example_recording(pause_s: float = 3.0, seconds: float = 180.0):
    """The example clips in order, repeated, joined by ``pause_s`` of quiet noise: (audio,
    [(name, onset_s, end_s)]) with each clip's speech onset and speech end."""
    from engine.audio import load_audio
    clips = [(p.stem, load_audio(str(p))) for p in sorted((REPO / "example").glob("*.wav"))]
    parts, spans, t = [], [], 0.0
    pause = np.zeros(int(pause_s * SR), np.float32)
    parts.append(pause)
    t = len(pause) / SR
    while t < seconds:
        for name, a in clips:
            frames = a[: len(a) // 160 * 160].reshape(-1, 160)
            db = 10 * np.log10((frames ** 2).mean(1) + 1e-12)
            loud = np.flatnonzero(db >= db.max() - 30)
            spans.append((name, t + loud[0] * 0.01, t + (loud[-1] + 1) * 0.01))
            parts += [a, pause]
            t += (len(a) + len(pause)) / SR
            if t >= seconds:
                break
    audio = np.concatenate(parts)
    audio = audio + np.random.default_rng(0).normal(0, NOISE_RMS, len(audio)).astype(np.float32)
    return audio.astype(np.float32), spans


def cue_report(cues, spans, max_pause: float = 1.0) -> dict:
    """First-cue start error per clip, and cues that span a pause longer than ``max_pause``."""
    errs, missing = [], []
    for name, on, off in spans:
        inside = [c for c in cues if c["end"] > on - 1.5 and c["start"] < off]
        if not inside:
            missing.append(name)
            continue
        errs.append(min(inside, key=lambda c: c["start"])["start"] - on)
    spanning = []
    gaps = [(spans[i][2], spans[i + 1][1]) for i in range(len(spans) - 1)]
    for c in cues:
        for a, b in gaps:
            if b - a > max_pause and c["start"] < a and c["end"] > b:
                spanning.append(c)
    e = np.abs(np.array(errs)) if errs else np.array([np.inf])
    return {"clips": len(spans), "with_cue": len(errs), "missing": missing,
            "median_abs": float(np.median(e)), "max_abs": float(e.max()),
            "within_0.3": int((e <= 0.3).sum()), "signed": [round(x, 3) for x in errs],
            "cues_spanning_pause": len(spanning)}


def bench_cues(model) -> dict:
    from engine.longform import transcribe_long
    from engine.longform.subtitles import shape_cues
    from engine.alignment import prepare
    audio, spans = example_recording()
    # as the server does at load: the heads are chosen (12 short decodes, or the disk cache)
    # before the first request, and the VAD model is loaded, so decode_s times the requests
    prepare(model)
    transcribe_long(model, audio[: 5 * SR], words=True)
    out = {}
    for words in (True, False):
        t0 = time.perf_counter()
        res = transcribe_long(model, audio, words=words)
        took = time.perf_counter() - t0
        rep = cue_report(shape_cues(res), spans)
        rep.update(seconds=round(len(audio) / SR, 1), segments=len(res["segments"]),
                   decode_s=round(took, 2))
        out["words" if words else "no_words"] = rep
        print("words" if words else "no words", {k: v for k, v in rep.items() if k != "signed"},
              flush=True)
    return out


# ----------------------------------------------------------------------------- cost

def _random_full_dir() -> Path:
    """The full-size random-weight checkpoint, built once per machine (tools/make_random_model.py)."""
    from tools.make_random_model import cached_random_model
    return cached_random_model("full", 1, ctc=False)


ARMS = ("without", "with", "with_rerun")  # no words; words; words with the prompt run again


def bench_cost_run(rounds: int = 5, tokens: int = 32, n_clips: int = 4) -> dict:
    import model as model_module
    from engine.audio import load_audio
    from model import FunASRNano
    speech = find_speech_dir()
    clips = [load_audio(str(p)) for p in sorted(speech.glob("*/*.*") if speech else [])
             if p.suffix in (".wav", ".flac", ".mp3")][:n_clips]
    if len(clips) < n_clips:  # without the shared clips: the example clips
        clips = [load_audio(str(p)) for p in sorted((REPO / "example").glob("*.wav"))][:n_clips]
    m = FunASRNano.from_pretrained(str(_random_full_dir()), device="cpu")
    # Random weights have no heads worth choosing: the bound is heads in the deepest layer,
    # where the extra pass runs the whole decoder (the real choice can only be cheaper), and a
    # passing score so that the attention pass runs (the fallback alone costs a VAD pass)
    m._alignment_heads = [(m.llm_config.num_hidden_layers - 1, h) for h in range(6)]
    m._alignment_score = 1.0
    align_s = {a: [] for a in ARMS}
    align_cpu = {a: [] for a in ARMS}
    real_align, real_layers = model_module.align_words, model_module.align_layers
    arm = [None]

    def timed_align(*a, **k):  # the alignment's own share of a run with words
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return real_align(*a, **k)
        finally:
            align_s[arm[0]].append(time.perf_counter() - t0)
            align_cpu[arm[0]].append(time.process_time() - c0)

    model_module.align_words = timed_align
    kw = dict(max_new_tokens=tokens, ignore_eos=True, batch_size=n_clips)
    times = {a: [] for a in ARMS}
    cpu = {a: [] for a in ARMS}  # CPU seconds of this process: less swayed by other processes
    loads = []
    words_seen = {a: [] for a in ARMS[1:]}
    try:
        m.transcribe(clips[:1], **kw)  # warm-up
        for r in range(rounds):
            # interleaved, the order rotating so that a drift in the machine's load favours
            # no arm; "with_rerun" is the previous way: the decode keeps nothing for the
            # alignment, which runs prompt and tokens again
            for a in ARMS[r % 3:] + ARMS[:r % 3]:
                arm[0] = a
                model_module.align_layers = real_layers if a == "with" else (lambda _m: ())
                loads.append(os.getloadavg()[0])
                t0, c0 = time.perf_counter(), time.process_time()
                res = m.transcribe(clips, words=a != "without", **kw)
                times[a].append(time.perf_counter() - t0)
                cpu[a].append(time.process_time() - c0)
                if a != "without":
                    words_seen[a].append([r_.get("words") for r_ in res])
    finally:
        model_module.align_words, model_module.align_layers = real_align, real_layers
    med = {a: float(np.median(times[a])) for a in ARMS}
    cmed = {a: float(np.median(cpu[a])) for a in ARMS}
    seen = words_seen["with"]
    out = {"clips": len(clips), "audio_s": round(sum(len(c) for c in clips) / SR, 1),
           "tokens_each": tokens, "rounds": rounds,
           **{f"{a}_s": [round(x, 2) for x in times[a]] for a in ARMS},
           **{f"{a}_cpu_s": [round(x, 2) for x in cpu[a]] for a in ARMS},
           **{f"align_{a}_s": [round(x, 2) for x in align_s[a]] for a in ARMS[1:]},
           **{f"align_{a}_cpu_s": [round(x, 2) for x in align_cpu[a]] for a in ARMS[1:]},
           **{f"ratio_{a}": round(med[a] / med["without"], 3) for a in ARMS[1:]},
           **{f"cpu_ratio_{a}": round(cmed[a] / cmed["without"], 3) for a in ARMS[1:]},
           **{f"align_share_{a}": round(float(np.median(align_s[a])) / med["without"], 3)
              for a in ARMS[1:]},
           **{f"align_cpu_share_{a}": round(float(np.median(align_cpu[a])) / cmed["without"], 3)
              for a in ARMS[1:]},
           "same_words_every_round": all(w == seen[0] for w in seen + words_seen["with_rerun"]),
           "estimated_words": sum(1 for w in seen[0] for x in (w or []) if x.get("estimated")),
           "kernels": m.describe()["kernels"], "heads": [list(h) for h in m._alignment_heads],
           "load_average": [round(x, 2) for x in loads]}
    print("cost", out, flush=True)
    return out


# ----------------------------------------------------------------------------- report

def write_report(results: dict) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M")
    m = machine_info("cpu")
    try:
        m["cores"] = len(os.sched_getaffinity(0))
    except Exception:  # noqa: BLE001
        pass
    results = {"machine": m, **results}
    lines = [f"# bench/timing.py, {stamp} UTC", "", machine_line(m), ""]
    if "words" in results:
        how = ("the attention alignment forced on (--force-attention)"
               if results.get("forced_attention") else "defaults")
        lines += [f"## Word boundaries: demo model, synthetic speech (espeak-ng), {how}", ""]
        f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
        lines += markdown_table(
            ["language", "ref words", "matched", "estimated", "median abs error (s)", "p90 (s)",
             "start median", "end median"],
            [[lang, r["ref_words"], r["matched"], r["estimated_words"], f(r["median"]),
              f(r["p90"]), f(r["start_median"]), f(r["end_median"])]
             for lang, r in results["words"].items()])
        if "heads" in results:
            h = results["heads"]
            lines.append(f"The checkpoint's alignment heads (layer, head) {h['heads']} score "
                         f"{h['score']} on the example clips (engine.alignment.heads; the trust "
                         f"bar is {h['bar']}).")
        lines.append("")
    if "heads" in results and "per_head" in results:
        lines += ["## Each decoder head alone: criterion score vs word-start error", "",
                  f"{results['per_head_recordings']} recordings per language, 12 languages; the "
                  f"trust bar is {results['heads']['bar']}.", ""]
        lines += markdown_table(
            ["head (layer, head)", "score", "word-start median abs error (s)", "p90 (s)"],
            [[f"chosen {r['heads']}" if k == "chosen" else k, f"{r['score']:.3f}",
              f"{r['start_median']:.3f}", f"{r['start_p90']:.3f}"]
             for k, r in results["per_head"].items()])
        lines.append("")
    if "cues" in results:
        lines += ["## Cue starts: the 12 example clips joined by 3 s pauses (VTT, CLI defaults)",
                  ""]
        lines += markdown_table(
            ["word timings", "clips", "median abs (s)", "max abs (s)", "within 0.3 s",
             "cues spanning a pause > 1 s", "segments"],
            [[k, r["clips"], f"{r['median_abs']:.3f}", f"{r['max_abs']:.3f}", r["within_0.3"],
              r["cues_spanning_pause"], r["segments"]] for k, r in results["cues"].items()])
        lines.append("")
    if "cost" in results:
        lines += cost_section(results["cost"])
    return write_results(RESULTS / f"timing-{safe_host()}-{stamp}", "\n".join(lines), results)


def cost_section(r: dict) -> list[str]:
    """The report's lines on what word timings cost (``cost``'s answer): the arms' seconds,
    then with words over without and the alignment's share, wall and CPU."""
    names = {"without": "without words", "with": "with words (what the decode computed kept)",
             "with_rerun": "with words, the prompt run again (the previous way)"}
    med = lambda xs: f"{np.median(xs):.2f}"  # noqa: E731
    runs = [[names[a], r[a + "_s"], med(r[a + "_s"]), r[a + "_cpu_s"], med(r[a + "_cpu_s"])]
            for a in ARMS]
    runs += [[f"the alignment alone, {names[a]}", r[f"align_{a}_s"], med(r[f"align_{a}_s"]),
              r[f"align_{a}_cpu_s"], med(r[f"align_{a}_cpu_s"])] for a in ARMS[1:]]
    ratios = [[names[a], r[f"ratio_{a}"], f"**{r[f'cpu_ratio_{a}']}**", r[f"align_share_{a}"],
               f"**{r[f'align_cpu_share_{a}']}**"] for a in ARMS[1:]]
    return ["## Cost: full-size random-weight model, CPU", "",
            f"{r['clips']} clips ({r['audio_s']} s) in one batch, {r['tokens_each']} tokens "
            f"each, heads {r['heads']}, kernels {r['kernels']}, {r['rounds']} rounds "
            "interleaved (order rotating)", "",
            *markdown_table(["", "seconds per run", "median", "CPU seconds per run", "median"],
                            runs), "",
            *markdown_table(["", "with words / without, wall", "CPU seconds",
                             "the alignment / a run without words, wall", "CPU seconds"],
                            ratios), "",
            "CPU seconds are this process's own (what the other processes on a shared machine "
            "sway least). Same words every round and both ways: "
            f"{r['same_words_every_round']}; estimated words: {r['estimated_words']}. "
            f"Load average (1 min) before each run: {r['load_average']}.", ""]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("what", choices=["words", "heads", "cues", "cost", "all"])
    ap.add_argument("--model", default=str(REPO / "models" / "demo"))
    ap.add_argument("--per-lang", type=int, default=10)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--rounds", type=int, default=5, help="cost: rounds of (without, with, with the prompt run again)")
    ap.add_argument("--force-attention", action="store_true",
                    help="words: take the attention alignment even where the trust criterion "
                    "rejects it (engine.alignment.MIN_SCORE = 0), to compare with the fallback")
    args = ap.parse_args(argv)
    results = {}
    import engine.alignment as alignment
    bar = alignment.MIN_SCORE
    if args.force_attention:
        alignment.MIN_SCORE = 0.0
        results["forced_attention"] = True
    if args.what in ("words", "heads", "cues", "all"):
        from model import FunASRNano
        model = FunASRNano.from_pretrained(args.model, device="cpu")
        if args.what in ("words", "all"):
            from engine.alignment.heads import choose_for_model
            results["words"] = bench_words(model, args.per_lang)
            results["heads"] = {"heads": [list(h) for h in choose_for_model(model)],
                                "score": round(model._alignment_score, 3),
                                "bar": bar}
        if args.what == "heads":
            from engine.alignment.heads import choose_for_model
            results["per_head"] = bench_heads(model)
            results["per_head_recordings"] = 4
            results["heads"] = {"heads": [list(h) for h in choose_for_model(model)],
                                "score": round(model._alignment_score, 3), "bar": bar}
        if args.what in ("cues", "all"):
            results["cues"] = bench_cues(model)
    if args.what in ("cost", "all"):
        results["cost"] = bench_cost_run(rounds=args.rounds)
    if not args.no_write:
        write_report(results)


if __name__ == "__main__":
    main()
