"""engine.live.LiveSession loses no sample a client sent: fed real speech (example clips with
pauses, cut into uneven chunks) through the real end-pointer, every received sample is in a
committed utterance, in the silence before or between them, or in the open utterance at the end;
the committed spans are exactly the spans the finals decoded; without turn detection the same
holds through commits and clears, and a chunk cut at the full buffer is counted as dropped."""
from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench._live_audio import recording  # noqa: E402

from engine.live import LiveError, LiveOptions, LiveSession  # noqa: E402


class Recorder:
    """A decode that remembers the spans it was given (the model's text is not the point here:
    test_live.py checks it) and the session's events."""

    def __init__(self):
        self.decoded = []          # (kind, samples) in call order
        self.events = []
        self.lock = threading.Lock()

    def decode(self, inputs, kind, **options):
        with self.lock:
            self.decoded.append((kind, len(inputs[0][0])))
        return [{"text": f"utterance of {len(inputs[0][0])} samples", "error": None}]

    def on_event(self, e):
        with self.lock:
            self.events.append(e)


def ledger_holds(session) -> dict:
    a = session.accounting()
    assert a["received"] == (a["in_utterances"] + a["silence"] + a["open"] + a["cleared"]
                             + a["dropped"]), a
    assert min(a.values()) >= 0, a
    return a


def uneven_chunks(n, seed):
    rng = np.random.default_rng(seed)
    at = 0
    while at < n:
        step = int(rng.integers(1, 4000))
        yield at, min(n, at + step)
        at += step


@pytest.mark.parametrize("rate", [24000, 16000])
def test_every_sample_is_in_an_utterance_the_silence_or_the_open_end(rate):
    pcm = recording(("en.wav", "ko.wav", "zh.wav"), rate=rate, lead_s=0.4, pause_s=1.2,
                    tail_s=0.0)
    pcm = np.concatenate([pcm, recording(("fi.wav",), rate=rate, lead_s=0.8, tail_s=0.0)])
    rec = Recorder()
    session = LiveSession(rec.decode, LiveOptions(sample_rate=rate), on_event=rec.on_event)
    try:
        for a, b in uneven_chunks(len(pcm), seed=rate):
            session.feed(pcm[a:b])
            ledger_holds(session)
        before_end = ledger_holds(session)
        # the recording ends mid-speech (fi.wav has no tail): an utterance is open
        assert before_end["open"] > 0 and before_end["in_utterances"] > 0
        assert session.finish(timeout=60)
        final = ledger_holds(session)
    finally:
        session.close()
    assert final["received"] == len(pcm) and final["dropped"] == 0 and final["cleared"] == 0
    committed = [(round(e.start * rate), round(e.end * rate)) for e in rec.events
                 if e.kind == "committed"]
    finals = [e for e in rec.events if e.kind == "final"]
    assert len(committed) == len(finals) == 4, [(e.kind, e.start, e.end) for e in rec.events]
    # the spans are in order and do not overlap; what lies between them is the silence
    edges = [0] + [x for span in committed for x in span] + [len(pcm)]
    assert edges == sorted(edges), committed
    inside = sum(b - a for a, b in committed)
    assert final["in_utterances"] == inside
    assert final["silence"] + final["open"] == len(pcm) - inside
    # every final decoded exactly its committed span (the stub's text says how much)
    spans = [(round(f.start * rate), round(f.end * rate)) for f in finals]
    assert spans == committed
    assert [f.text for f in finals] == [f"utterance of {b - a} samples" for a, b in committed]


def test_without_turn_detection_commits_clears_and_the_full_buffer():
    rate = 16000
    rec = Recorder()
    session = LiveSession(rec.decode, LiveOptions(sample_rate=rate, vad=None, max_buffer_s=2.0),
                          on_event=rec.on_event)
    noise = (np.random.default_rng(0).standard_normal(rate) * 1000).astype(np.int16)
    try:
        session.feed(noise[:12000])
        assert ledger_holds(session)["open"] == 12000
        session.commit()
        session.feed(noise[:5000])
        session.clear()
        a = ledger_holds(session)
        assert (a["in_utterances"], a["cleared"], a["open"]) == (12000, 5000, 0)
        session.feed(noise)                              # 1 s
        with pytest.raises(LiveError) as full:
            session.feed(np.concatenate([noise, noise]))  # 2 s more into a 2 s buffer
        assert full.value.code == "input_audio_buffer_full"
        a = ledger_holds(session)
        assert a["dropped"] == rate and a["open"] == 2 * rate
        session.commit()
        assert session.finish(timeout=30)
        a = ledger_holds(session)
    finally:
        session.close()
    assert a == {"received": 12000 + 5000 + 3 * rate, "in_utterances": 12000 + 2 * rate,
                 "silence": 0, "open": 0, "cleared": 5000, "dropped": rate, "sample_rate": rate}
