"""Long audio: VAD segmentation (engine/audio/vad.py), the decoding loop with its repetition guard
(engine/longform/transcribe.py) and the subtitle writers (engine/longform/subtitles.py).

The recordings are built at test time from the real clips in shared/data/speech, joined by
silences of known lengths, so where the speech is is known exactly. The decoder is replaced by a
small fake (its behaviour depends only on the segment length), which is what the repetition guard
and the batching need; the real model is exercised by bench/longform_memory.py --model DIR, and
the segment-edge bounds run through the demo model (test_segment_edges_keep_speech)."""

import csv
import os
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.audio import vad  # noqa: E402
from engine.audio import load_audio, stream_audio  # noqa: E402
from engine.longform import transcribe_long  # noqa: E402
from engine.repetition import collapse_repeats, looks_looping  # noqa: E402
from engine.longform.subtitles import (join_texts, shape_cues, to_json, to_srt, to_tsv,  # noqa: E402
                              to_txt, to_vtt)

SR = 16000


def clip_paths(speech):
    with open(speech / "manifest.tsv", encoding="utf-8") as f:
        return [speech / row["path"] for row in csv.DictReader(f, delimiter="\t")]


def build_recording(clips, seconds, gap_range, seed=0, noise=3e-4):
    """Clips in random order joined by faint noise of random length; returns audio and the clip
    spans [(start_sample, end_sample, clip_index)]."""
    rng = np.random.default_rng(seed)
    parts, spans, t = [], [], 0
    while t < seconds * SR:
        for c in rng.permutation(len(clips)):
            g = int(rng.uniform(*gap_range) * SR)
            parts.append(rng.normal(0, noise, g).astype(np.float32))
            parts.append(clips[c])
            spans.append((t + g, t + g + len(clips[c]), int(c)))
            t += g + len(clips[c])
    parts.append(rng.normal(0, noise, SR).astype(np.float32))
    return np.concatenate(parts), spans


def frame_rms(x):
    f = x[: len(x) // 512 * 512].reshape(-1, 512)
    return np.sqrt((f.astype(np.float64) ** 2).mean(1))


@pytest.fixture(scope="module")
def clips(speech_dir):
    return [load_audio(p) for p in clip_paths(speech_dir)]


@pytest.fixture(scope="module")
def recording(tmp_path_factory, clips):
    """About 10 minutes: every clip ~10 times, silences 0.3-3 s, written to FLAC to stream from."""
    audio, spans = build_recording(clips, 600, (0.3, 3.0))
    path = tmp_path_factory.mktemp("long") / "meeting.flac"
    sf.write(path, audio, SR)
    return path, audio, spans


@pytest.fixture(scope="module")
def probs(recording):
    return vad.speech_probabilities(stream_audio(recording[0]))


def covered(t, segs):
    return any(a <= t <= b for a, b in segs)


# --------------------------------------------------------------------------- VAD

def test_probabilities_match_stock_silero_model(clips):
    """Our block-wise sequence-model run gives the per-window probabilities of silero's stock
    frame-by-frame ONNX model (run here directly, not through the silero_vad package)."""
    import onnxruntime as ort
    x = np.concatenate(clips[:3])[: 20 * SR]
    stock = ort.InferenceSession(os.path.join(os.path.dirname(vad.model_path()), "silero_vad.onnx"),
                                 providers=["CPUExecutionProvider"])
    state, context, want = np.zeros((2, 1, 128), np.float32), np.zeros((1, 64), np.float32), []
    padded = np.concatenate([x, np.zeros(-len(x) % 512, np.float32)])
    for i in range(0, len(padded), 512):
        frame = np.concatenate([context, padded[None, i:i + 512]], axis=1)
        out, state = stock.run(None, {"input": frame, "state": state, "sr": np.array(SR, np.int64)})
        want.append(float(out[0, 0]))
        context = frame[:, -64:]
    # odd block sizes: windows straddle block boundaries
    got, n = vad.speech_probabilities(x[i:i + 7777] for i in range(0, len(x), 7777))
    assert n == len(x)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("max_s", [30.0, 10.0])
def test_segments_on_ten_minute_recording(recording, probs, max_s):
    path, audio, spans = recording
    p, n = probs
    assert n == len(audio) and len(p) == -(-n // 512)
    segs = vad.segments_from_probabilities(p, n, max_segment_s=max_s)
    assert segs == sorted(segs) and all(a < b for a, b in segs)
    assert all(segs[i][1] <= segs[i + 1][0] for i in range(len(segs) - 1)), "overlap"
    assert max(b - a for a, b in segs) <= max_s + 1e-6
    # every clip is covered: each clearly voiced 32 ms window (within 15 dB of the clip's loudest)
    for s, e, c in spans:
        clip = audio[s:e]
        rms = frame_rms(clip)
        for k in np.flatnonzero(rms >= rms.max() * 10 ** (-15 / 20)):
            t = (s + k * 512 + 256) / SR
            assert covered(t, segs), f"voiced audio at {t:.2f}s (clip {c}) not in any segment"
    # edges sit at speech: at most 0.5 s (the pad plus one window) into an inserted silence
    for a, b in segs:
        for edge in (a, b):
            depth = min(max(0.0, s / SR - edge, edge - e / SR) for s, e, _ in spans)
            assert depth <= 0.5, f"segment edge {edge:.2f}s is {depth:.2f}s into a silence"
    # edges inside a clip are at quiet points (pauses or the quietest window), not mid-word
    for a, b in segs:
        for edge in (a, b):
            i = int(edge * SR)
            for s, e, _ in spans:
                if s + 800 < i < e - 800:
                    level = (np.sqrt(np.mean(audio[i - 512:i + 512] ** 2))
                             / frame_rms(audio[s:e]).max())
                    assert level < 10 ** (-15 / 20), f"cut at {edge:.2f}s is mid-word"


def test_same_segments_streamed_or_in_memory(recording, probs):
    path, audio, _ = recording
    first = audio[: 120 * SR]
    assert vad.segment_speech(first) == vad.segment_speech(iter(np.array_split(first, 37)))
    p, n = probs
    assert vad.segment_speech(stream_audio(path)) == vad.segments_from_probabilities(p, n)


def test_continuous_speech_is_cut_at_quiet_points(clips):
    """Clips back to back with 0.15 s gaps (shorter than a pause): one long region that must be
    split; the cuts must land in the quietest places, and no piece exceeds the limit."""
    audio, spans = build_recording(clips, 90, (0.15, 0.15), seed=1)
    segs = vad.segment_speech(audio, max_segment_s=30.0)
    assert max(b - a for a, b in segs) <= 30.0
    assert len(segs) >= 3
    loud = np.median(frame_rms(audio)[frame_rms(audio) > 0.01])
    for (_, b), (a2, _) in zip(segs, segs[1:]):
        cut = int(b * SR)
        level = np.sqrt(np.mean(audio[cut - 256:cut + 256] ** 2))
        assert level < 0.25 * loud, f"cut at {b:.2f}s is in loud speech"


def test_merging_and_min_segment(clips):
    """Short gaps merge up to the limit; an isolated short word joins its neighbour."""
    gap = lambda s: np.zeros(int(s * SR), np.float32)  # noqa: E731
    a, b = clips[6], clips[7]                                    # 1.5 s LJ Speech clips
    audio = np.concatenate([gap(1), a, gap(0.5), b, gap(3), a, gap(1)])
    segs = vad.segment_speech(audio, merge_gap_s=0.8)
    assert len(segs) == 2                                        # 0.5 s gap merged, 3 s gap not
    segs = vad.segment_speech(audio, merge_gap_s=0.3)
    assert len(segs) == 3
    # the merge target: the 3 s pause is merged while the segment fits it; a target shorter than
    # one clip keeps each clip whole (a region is only ever cut above max_segment_s)
    assert len(vad.segment_speech(audio, merge_gap_s=5.0, target_segment_s=20.0)) == 1
    assert len(vad.segment_speech(audio, merge_gap_s=5.0, target_segment_s=5.0)) == 2
    segs = vad.segment_speech(audio, merge_gap_s=5.0, target_segment_s=1.5)
    assert len(segs) == 3 and all(b - a >= len(clips[6]) / SR for a, b in segs)
    short = clips[6][: int(0.6 * SR)]                            # a 0.6 s fragment
    audio = np.concatenate([gap(1), short, gap(1.2), b, gap(1)])
    assert len(vad.segment_speech(audio, merge_gap_s=0.8, min_segment_s=1.0)) == 1
    assert len(vad.segment_speech(audio, merge_gap_s=0.8, min_segment_s=0.0)) == 2
    assert vad.segment_speech(gap(5)) == []


def test_segment_edges_keep_speech(speech_dir, tmp_path):
    """Issue 19's bounds, on 2 minutes of the bench's recording (bench/segments.py: every clip,
    2-4 s pauses of faint noise) transcribed from FLAC by the demo model with the default
    segmentation: at most 0.7% of the speech frames (10 ms, within 30 dB of the clip's peak)
    outside every segment, no edge more than 0.5 s into a pause, no segment over 30 s. (Issue
    19 set 0.5% when pauses under 5 s were merged; issue 30 merges only under 1.5 s, so that a 3 s
    pause between two clips, two languages, ends a segment: 0.625% here, all of it frames a
    median 55 ms before a segment's padded start, where silero's probability is under 0.03: the
    low sound before a clip's first word, bench/results/timing-*.md)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import segments as bench
    from model import FunASRNano

    audio, spans = bench.build_recording(bench.load_clips(speech_dir), 120, seed=0)
    speech = bench.speech_frame_times(audio, spans)
    path = tmp_path / "two-minutes.flac"
    sf.write(path, audio, SR)
    model = FunASRNano.from_pretrained(Path(__file__).resolve().parents[1] / "models" / "demo")
    res = transcribe_long(model, path)
    assert res["error"] is None and res["text"]
    got = bench.measure([(s["start"], s["end"]) for s in res["segments"]], spans, speech)
    assert got["speech_outside_pct"] <= 0.7, got
    assert got["edge_in_pause_s"] <= 0.5, got
    assert got["max_s"] <= 30.0, got
    # the recording is hard enough to tell: the old defaults (0.1 s pad, merging only across
    # gaps under 0.8 s) break the bound on it
    p, n = vad.speech_probabilities(stream_audio(path))
    old = vad.segments_from_probabilities(p, n, pad_s=0.1, merge_gap_s=0.8, target_segment_s=None)
    assert bench.measure(old, spans, speech)["speech_outside_pct"] > 0.7, "too easy to tell"


def test_streaming_memory_is_flat(recording):
    """Peak Python/numpy allocations while segmenting the 10-minute file from disk stay far below
    the size of its audio (41 MB as float32): only blocks and probabilities are held."""
    path, audio, _ = recording
    tracemalloc.start()
    vad.segment_speech(stream_audio(path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 15e6, f"peak {peak / 1e6:.1f} MB"
    assert audio.nbytes > 35e6


# --------------------------------------------------------------------------- decoding loop

class FakeModel:
    """Test double for FunASRNano.transcribe: the text says how long the input was; inputs longer
    than ``loop_above`` seconds loop, longer than ``length_above`` hit the token limit."""

    def __init__(self, loop_above=1e9, length_above=1e9, cut_above=1e9):
        self.loop_above, self.length_above = loop_above, length_above
        self.cut_above = cut_above   # the engine's guard stopped a loop (finish "repetition")
        self.calls = []

    def transcribe(self, inputs, language=None, itn=True, hotwords=(), batch_size=8,
                   max_new_tokens=512, keys=None):
        self.calls.append([len(a) / sr for a, sr in inputs])
        out = []
        for audio, sr in inputs:
            assert sr == SR and audio.dtype == np.float32 and audio.ndim == 1
            d = len(audio) / sr
            if d > self.cut_above:
                out.append({"text": "we will", "finish_reason": "repetition", "error": None})
            elif d > self.length_above:
                out.append({"text": "好的" * 256, "finish_reason": "length", "error": None})
            elif d > self.loop_above:
                out.append({"text": "we will " * 30, "finish_reason": "stop", "error": None})
            else:
                out.append({"text": f"<{d:.2f}>", "finish_reason": "stop", "error": None})
        return out


def test_transcribe_long_batches_progress_and_times(recording, probs):
    path, audio, _ = recording
    spans = vad.segments_from_probabilities(*probs)
    model, seen = FakeModel(), []
    res = transcribe_long(model, path, batch_size=8, progress=lambda d, t: seen.append((d, t)))
    assert res["error"] is None
    assert res["duration"] == pytest.approx(len(audio) / SR, abs=1e-3)
    assert [(s["start"], s["end"]) for s in res["segments"]] == spans
    for seg in res["segments"]:                 # each segment got exactly its own audio
        assert abs(float(seg["text"][1:-1]) - (seg["end"] - seg["start"])) <= 0.0051
    assert all(len(c) <= 8 for c in model.calls) and sum(map(len, model.calls)) == len(spans)
    assert seen[0] == (0, len(spans)) and seen[-1] == (len(spans), len(spans))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert res["text"] == " ".join(s["text"] for s in res["segments"])


def test_repetition_guard_redecodes_in_halves(clips):
    audio, _ = build_recording(clips, 60, (0.15, 0.15), seed=2)   # continuous: ~30 s segments
    model = FakeModel(loop_above=12.0, length_above=20.0)
    res = transcribe_long(model, (audio, SR), max_segment_s=30.0)
    segs = res["segments"]
    assert segs and not any(s.get("flag") for s in segs)
    assert all(s["end"] - s["start"] <= 12.0 + 1e-3 for s in segs)
    assert all(looks_looping(s["text"]) is False for s in segs)
    # the halves tile the original segments: no audio lost or repeated
    spans = vad.segment_speech(audio, max_segment_s=30.0)
    decoded = sum(s["end"] - s["start"] for s in segs)
    assert sum(b - a for a, b in spans) == pytest.approx(decoded, abs=0.01)
    assert len(model.calls) >= 2                                   # a second pass for the halves


def test_segments_the_engine_cut_for_looping_are_redecoded_in_halves(clips):
    audio, _ = build_recording(clips, 60, (0.15, 0.15), seed=2)
    model = FakeModel(cut_above=12.0)
    res = transcribe_long(model, (audio, SR), max_segment_s=30.0)
    assert res["segments"] and not any(s.get("flag") for s in res["segments"])
    assert all(s["end"] - s["start"] <= 12.0 + 1e-3 for s in res["segments"])
    assert len(model.calls) >= 2
    res = transcribe_long(FakeModel(cut_above=0.0), (audio, SR))
    assert all(s.get("flag") == "repetition" for s in res["segments"])
    # the fake's results say no language: the whole text ("we will ...") tells
    assert (res["language"], res["language_name"]) == ("en", "English")
    assert 0.5 < res["language_probability"] <= 1


def test_repetition_guard_flags_what_it_cannot_fix(clips):
    audio, _ = build_recording(clips, 40, (0.15, 0.15), seed=3)
    res = transcribe_long(FakeModel(loop_above=0.0), (audio, SR), language="English")
    flagged = [s for s in res["segments"] if s.get("flag") == "repetition"]
    assert flagged and len(flagged) == len(res["segments"])
    assert all(s["text"] == "we will" for s in flagged)            # the loop collapsed to one copy
    res = transcribe_long(FakeModel(length_above=0.0), (audio, SR), language="中文")
    assert all(s.get("flag") == "repetition" and s["text"] == "好的" for s in res["segments"])
    assert "好的 好的" not in res["text"] and "好的好的" in res["text"]   # CJK joined without spaces


def test_transcribe_long_bad_input(tmp_path):
    res = transcribe_long(FakeModel(), tmp_path / "missing.mp3")
    assert res["segments"] == [] and res["text"] == ""
    assert "missing.mp3" in res["error"] and "file not found" in res["error"]
    (tmp_path / "notes.wav").write_text("not audio\n" * 10)
    assert "not an audio file" in transcribe_long(FakeModel(), tmp_path / "notes.wav")["error"]


def test_model_errors_are_reported(clips):
    class Failing(FakeModel):
        def transcribe(self, inputs, **kw):
            return [{"text": "", "error": "seg: decoding failed: boom", "finish_reason": None}
                    for _ in inputs]
    res = transcribe_long(Failing(), (np.concatenate([np.zeros(SR, np.float32), clips[0]]), SR))
    n = len(res["segments"])
    assert n >= 1 and res["error"].startswith(f"{n} of {n} segments failed")
    assert "boom" in res["error"]
    assert all(s["error"] for s in res["segments"])


def test_loop_detector():
    assert not looks_looping("And so my fellow Americans, ask not what your country can do for you, "
                             "ask what you can do for your country.")
    assert not looks_looping("我想问我在滨海新区有房，甚至出现交易几乎停滞的情况。广州市房地产中介协会分析")
    assert not looks_looping("no no no no")                         # too short to judge
    assert looks_looping("Thank you. " * 20)
    assert looks_looping("我想问我在滨海新区有房" + "有房" * 60)
    assert looks_looping("the meeting starts now and " + "we will " * 20)
    assert collapse_repeats("the meeting starts now and we will we will we will") == \
        "the meeting starts now and we will"
    assert collapse_repeats("开始" + "我们的会议" * 50 + "结束") == "开始我们的会议结束"
    assert collapse_repeats("甚至出现交易几乎停滞的情况。" * 5) == "甚至出现交易几乎停滞的情况。"


# --------------------------------------------------------------------------- subtitles

SEGMENTS = [
    {"start": 0.5, "end": 20.0, "text": "IT WAS THE FIRST GREAT SORROW OF HIS LIFE IT WAS NOT SO MUCH "
     "THE LOSS OF THE COTTON ITSELF BUT THE FANTASY THE HOPES THE DREAMS BUILT AROUND IT. And so my "
     "fellow Americans, ask not what your country can do for you, ask what you can do for your country."},
    {"start": 21.0, "end": 39.5, "text": "我想问我在滨海新区有房，甚至出现交易几乎停滞的情况。广州市房地产中介协会分析，"
     "希望你以后能够做的比我还好呦。我想问我在滨海新区有房。"},
    {"start": 40.0, "end": 41.2, "text": "Tom & Jerry <3 --> ok"},
    {"start": 41.5, "end": 42.0, "text": "   "},
    {"start": 3600.0, "end": 3605.25, "text": "一个小时以后"},
]


def _squash(s):
    return "".join(s.split())


def test_srt_round_trip():
    import srt
    subs = list(srt.parse(to_srt(SEGMENTS)))
    cues = shape_cues(SEGMENTS)
    assert len(subs) == len(cues) > len(SEGMENTS)
    for sub, cue in zip(subs, cues):
        assert sub.start.total_seconds() == pytest.approx(cue["start"], abs=1e-3)
        assert sub.end.total_seconds() == pytest.approx(cue["end"], abs=1e-3)
    _check_cues_tile_segments(
        [(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in subs], srt_arrow=True)


def test_vtt_round_trip():
    import webvtt
    parsed = list(webvtt.from_string(to_vtt(SEGMENTS), strict=True))
    cues = shape_cues(SEGMENTS)
    assert len(parsed) == len(cues)
    for c, cue in zip(parsed, cues):
        assert _vtt_seconds(c.start) == pytest.approx(cue["start"], abs=1e-3)
        assert _vtt_seconds(c.end) == pytest.approx(cue["end"], abs=1e-3)
    # raw_text keeps the escapes; undo them to compare with the segment text
    text = [c.raw_text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
            for c in parsed]
    _check_cues_tile_segments(
        [(_vtt_seconds(c.start), _vtt_seconds(c.end), t) for c, t in zip(parsed, text)])


def _vtt_seconds(stamp):
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def _check_cues_tile_segments(cues, srt_arrow=False):
    """Cues of each segment start at its start, end at its end, follow each other without gaps,
    and together hold exactly its text."""
    i = 0
    for seg in SEGMENTS:
        want = _squash(seg["text"])
        if not want:
            continue
        got, t = "", seg["start"]
        assert cues[i][0] == pytest.approx(seg["start"], abs=1e-3)
        while _squash(got) != (want.replace("-->", "->") if srt_arrow else want):
            a, b, text = cues[i]
            assert a == pytest.approx(t, abs=1e-3) and b > a
            assert b - a <= 7.0 + 1e-3
            lines = text.split("\n")
            assert 1 <= len(lines) <= 2
            assert all(sum(2 if ord(ch) > 0x2E80 else 1 for ch in ln) <= 42 for ln in lines)
            got += text
            t = b
            i += 1
            assert len(_squash(got)) <= len(want)
        assert t == pytest.approx(seg["end"], abs=1e-3)
    assert i == len(cues)


def test_cjk_cues_break_between_characters_and_after_punctuation():
    cues = shape_cues([SEGMENTS[1]])
    assert all(len(line) <= 21 for c in cues for line in c["lines"])
    assert any(c["lines"][-1][-1] in "，。" for c in cues[:-1])


def test_txt_tsv_json():
    assert to_txt(SEGMENTS).splitlines()[0].startswith("IT WAS THE FIRST")
    assert len(to_txt(SEGMENTS).splitlines()) == 4                  # the blank segment is skipped
    rows = to_tsv(SEGMENTS).splitlines()
    assert rows[0] == "start\tend\ttext" and rows[1].startswith("0.500\t20.000\tIT WAS")
    assert rows[-1] == "3600.000\t3605.250\t一个小时以后"
    import json
    doc = json.loads(to_json(SEGMENTS, language=None, duration=3606.0))
    assert doc["duration"] == 3606.0 and len(doc["segments"]) == len(SEGMENTS)
    assert "好呦。我想问" in doc["text"] and "country. 我想问" in doc["text"]
    result = {"text": "x", "segments": SEGMENTS[:1], "duration": 20.0, "error": None}
    assert json.loads(to_json(result)) == result
    assert to_srt(result) == to_srt(SEGMENTS[:1])


def test_join_texts():
    assert join_texts(["我想问", "我在滨海新区有房。", "甚至"], "中文") == "我想问我在滨海新区有房。甚至"
    assert join_texts(["こんにちは。", "元気ですか"], "ja") == "こんにちは。元気ですか"
    assert join_texts(["Hello there.", " How are you? ", ""], "English") == \
        "Hello there. How are you?"
    # Latin next to Latin keeps its space even in Chinese text
    assert join_texts(["我用", "iPhone", "Pro 拍的"], "zh") == "我用iPhone Pro 拍的"
    assert join_texts(["Xin chào", "bạn"], "vi") == "Xin chào bạn"
    assert join_texts(["안녕하세요", "반갑습니다"], "ko") == "안녕하세요 반갑습니다"
    # unknown language: decided by script at each joint
    assert join_texts(["我想问", "我在", "OK then", "good"], None) == "我想问我在 OK then good"
    assert join_texts(["我想问", "我在"], "auto") == "我想问我在"
