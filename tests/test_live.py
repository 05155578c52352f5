"""engine.live: the end-pointer on silero probabilities, the stable prefix, and LiveSession fed
real recordings (example clips) with the demo model: finals equal the offline transcript of their
span, partials come while speaking, one decode at a time, partials skipped when behind."""
from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench._live_audio import DEMO_MODEL, recording, span  # noqa: E402

from engine.live import Endpointer, LiveError, LiveOptions, LiveSession, VadOptions  # noqa: E402
from engine.live.stable import StablePrefix, agreed_prefix  # noqa: E402


@pytest.fixture(scope="module")
def demo():
    from model import FunASRNano
    return FunASRNano.from_pretrained(str(DEMO_MODEL), device="cpu", dtype="fp32")


def run_session(model, pcm, rate, chunk_s=0.1, pace=0.0, decode=None, **options):
    """Feed ``pcm`` in chunks (``pace`` seconds of sleep per second of audio) and finish;
    returns the events in order as (monotonic time, event)."""
    events = []
    decode = decode or (lambda inputs, kind, **kw: model.transcribe(inputs, **kw))
    session = LiveSession(decode, LiveOptions(sample_rate=rate, **options),
                          on_event=lambda e: events.append((time.monotonic(), e)))
    step = int(chunk_s * rate)
    try:
        for i in range(0, len(pcm), step):
            session.feed(pcm[i:i + step])
            if pace:
                time.sleep(chunk_s * pace)
        assert session.finish(timeout=120)
    finally:
        session.close()
    return events


def kinds(events, kind):
    return [e for _, e in events if e.kind == kind]


# --------------------------------------------------------------------------- end-pointer

def probs(*runs):
    """Probabilities from (value, windows) runs."""
    return np.concatenate([np.full(n, v, np.float32) for v, n in runs])


def test_endpointer_onset_pause_resume_end():
    ep = Endpointer(VadOptions(silence_ms=320, suffix_ms=64, min_speech_ms=96, prefix_ms=96))
    out = ep.push(probs((0.1, 10), (0.9, 20), (0.1, 5), (0.9, 10), (0.1, 12)))
    got = [(b.kind, b.window) for b in out]
    # onset at the first speech window, confirmed 3 windows later; a pause of 5 windows
    # (under 320 ms = 10 windows) resumes; the final pause of 10 windows ends it.
    assert got == [("onset", 10), ("pause", 30), ("resume", 30), ("pause", 45), ("end", 45)]
    assert [b.at for b in out] == [12, 31, 35, 46, 54]
    assert not ep.in_speech


def test_endpointer_ignores_short_bursts_and_hysteresis():
    ep = Endpointer(VadOptions(min_speech_ms=96))
    # two windows of speech then silence: not speech; values between the two thresholds
    # neither start speech nor end it
    assert ep.push(probs((0.1, 5), (0.9, 2), (0.1, 5), (0.4, 30))) == []
    out = ep.push(probs((0.9, 5), (0.4, 40), (0.1, 3)))
    assert [b.kind for b in out] == ["onset", "pause"]   # 0.4 keeps speech going
    assert ep.in_speech and ep.speech_end == 42 + 5 + 40


def test_endpointer_cuts_long_speech_within_the_limit():
    o = VadOptions(max_utterance_s=10.0, soft_limit_s=8.0, soft_pause_ms=160, suffix_ms=64)
    ep = Endpointer(o)
    # 12 s of speech with one quieter window at ~7 s (index 219); no pause long enough
    p = probs((0.1, 5), (0.9, 375))
    p[5 + 219] = 0.45
    out = ep.push(p)
    cuts = [b for b in out if b.kind == "cut"]
    assert cuts, [b.kind for b in out]
    first = cuts[0].window
    # the quietest (3-window smoothed) point of the second half; near-ties go to the latest
    assert 5 + 218 <= first <= 5 + 220
    assert first * 0.032 + o.suffix_ms / 1000 <= o.max_utterance_s   # the span starts at 0
    # past the soft limit a 160 ms pause ends the utterance (a full 500 ms is not needed)
    ep2 = Endpointer(o)
    out2 = ep2.push(probs((0.1, 5), (0.9, 260), (0.1, 5)))
    assert [b.kind for b in out2][-1] == "end"


# --------------------------------------------------------------------------- stable prefix

def test_stable_prefix_only_grows_and_never_retracts():
    assert agreed_prefix("The ticket costs $53", "The ticket costs $57.50.") == "The ticket costs "
    assert agreed_prefix("我想问我在", "我想问我在滨海") == "我想问我"
    assert agreed_prefix("Kan du stänga dörren?", "Kan du stänga dörren?") == "Kan du stänga "
    early = StablePrefix()
    early.update("Kan du stänga dörren?", audio_s=0.6)   # too little audio to agree with
    assert early.update("Kan du stänga dörren?", audio_s=1.1) == ""
    assert early.update("The ticket costs $2.", audio_s=2.0) == ""
    s = StablePrefix()
    shown = [s.update(h) for h in ["The", "The ticket", "The ticket costs $5",
                                   "The ticket costs $57.50.", "A ticket costs"]]
    assert "".join(shown) == "The ticket costs "
    assert s.finish("The ticket costs $57.50.") == "$57.50."
    t = StablePrefix()
    t.update("one two three")
    t.update("one two four")
    assert t.stable == "one two "
    assert t.finish("uno dos") == ""              # a revised final: nothing to append


# --------------------------------------------------------------------------- sessions

@pytest.mark.parametrize("rate", [24000, 16000])
def test_finals_equal_the_offline_transcript_of_their_span(demo, rate):
    pcm = recording(rate=rate)
    events = run_session(demo, pcm, rate, pace=0.5, language="en")
    finals = kinds(events, "final")
    assert len(finals) == 2, [(e.kind, e.start, e.end) for _, e in events]
    for f in finals:
        [offline] = demo.transcribe([(span(pcm, rate, f.start, f.end), rate)], language="en")
        assert f.text == offline["text"].strip() and f.text
        assert f.result["finish_reason"] == "stop"
    assert finals[0].end <= finals[1].start
    # speech started / stopped / committed once per utterance, in order, before its final
    # (the next utterance may start before a final is out), finals in order
    for item in (0, 1):
        assert [e.kind for _, e in events if e.item == item and e.kind != "partial"] == [
            "speech_started", "speech_stopped", "committed", "final"]
    assert [f.item for f in finals] == [0, 1]
    for item in (0, 1):
        stopped = next(t for t, e in events if e.kind == "speech_stopped" and e.item == item)
        early = [e for t, e in events if e.kind == "partial" and e.item == item and t < stopped]
        assert early, f"no partial before utterance {item} ended"


def test_one_decode_at_a_time_and_partials_skipped_when_behind(demo):
    """A slow model: never two decodes of the session at once, far fewer partials than the
    audio would ask for, and every final still comes."""
    running, peak, calls = [0], [0], {"partial": 0, "final": 0}
    lock = threading.Lock()

    def slow(inputs, kind, **kw):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            calls[kind] += 1
        try:
            time.sleep(0.6)
            return demo.transcribe(inputs, **kw)
        finally:
            with lock:
                running[0] -= 1

    pcm = recording(("en.wav", "fi.wav", "pt.wav"), rate=16000)
    events = run_session(demo, pcm, 16000, pace=0.25, decode=slow)
    assert peak[0] == 1
    assert len(kinds(events, "final")) == 3
    due = len(pcm) / 16000 / LiveOptions().partial_interval_s
    assert calls["partial"] < due / 2, calls


def test_session_audio_stays_bounded_on_a_long_stream(demo):
    """Ten minutes of speech and pauses fed fast: the session keeps no more than the open
    utterance, and every utterance gets its final. The real VAD and end-pointer run; the
    decode function answers at once (a stand-in for the model, so that ten minutes of audio
    take seconds: bench/streaming.py runs the real model for ten minutes)."""
    one = recording(("sv.wav", "ja.wav"), rate=16000, lead_s=0.2, tail_s=1.0)
    reps = int(600 * 16000 / len(one)) + 1
    kept = []
    events = []
    session = LiveSession(lambda inputs, kind, **kw: [{"text": "x", "finish_reason": "stop"}
                                                      for _ in inputs],
                          LiveOptions(sample_rate=16000),
                          on_event=lambda e: events.append(e))
    try:
        for _ in range(reps):
            for i in range(0, len(one), 8000):
                session.feed(one[i:i + 8000])
                kept.append(session._audio.n - session._audio.base)
        assert session.finish(60)
    finally:
        session.close()
    assert session.seconds >= 600
    assert max(kept) / 16000 < 10.0              # seconds kept at any time
    assert len([e for e in events if e.kind == "final"]) == 2 * reps


def test_manual_commit_clear_and_errors(demo):
    pcm = recording(("en.wav",), rate=24000, lead_s=0.2, tail_s=0.2)
    events = []
    session = LiveSession(lambda inputs, kind, **kw: demo.transcribe(inputs, **kw),
                          LiveOptions(sample_rate=24000, vad=None, max_buffer_s=2.0),
                          on_event=lambda e: events.append(e))
    try:
        with pytest.raises(LiveError) as err:
            session.commit()
        assert err.value.code == "input_audio_buffer_commit_empty"
        session.feed(pcm[:24000])
        session.clear()
        with pytest.raises(LiveError) as full:
            session.feed(pcm)                   # longer than max_buffer_s
        assert full.value.code == "input_audio_buffer_full"
        session.clear()
        session.feed(pcm[:48000])
        item = session.commit()
        assert session.finish(60)
    finally:
        session.close()
    final = next(e for e in events if e.kind == "final")
    assert final.item == item
    # 1 s cleared, 2 s refused as over the limit and cleared, then 2 s committed
    assert (final.start, final.end) == (3.0, 5.0)
    [offline] = demo.transcribe([(pcm[:48000], 24000)])
    assert final.text == offline["text"].strip()
    assert [e.kind for e in events if e.kind == "cleared"] == ["cleared", "cleared"]


def test_bad_audio_is_refused(demo):
    session = LiveSession(lambda inputs, kind, **kw: demo.transcribe(inputs, **kw))
    try:
        with pytest.raises(LiveError):
            session.feed(np.array([0.0, np.nan], np.float32))
        with pytest.raises(LiveError):
            session.feed(np.zeros((2, 10), np.int16))
        session.feed(np.zeros(1600, np.int16))    # still fine afterwards
    finally:
        session.close()


def test_declined_partials_are_retried_later_and_finals_still_come(demo):
    """A decode function may decline partials (the server does while other sessions' finals
    wait): no partial then, no error, the partial is asked for again later."""
    from engine.live import SkipPartial
    asked = {"partial": 0, "final": 0}

    def busy(inputs, kind, **kw):
        asked[kind] += 1
        if kind == "partial" and asked["partial"] <= 3:
            raise SkipPartial()
        return demo.transcribe(inputs, **kw)

    pcm = recording(("en.wav",), rate=16000)
    events = run_session(demo, pcm, 16000, pace=1.0, decode=busy)
    assert asked["partial"] > 3                      # asked again after declining
    assert len(kinds(events, "final")) == 1 and not kinds(events, "failed")
    assert kinds(events, "partial")                  # the later ones ran
