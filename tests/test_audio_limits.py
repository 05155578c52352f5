"""The decoder's limits (issue 16): a running length budget that holds whatever the container's
header claims, for every supported format; NaN/inf samples and impossible sample rates refused.
Files are made at test time from a real clip (tests/_audio_variants.py)."""
from __future__ import annotations

import os
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _audio_variants import FORMATS, claim_seconds, encode, flac_total_samples  # noqa: E402

from engine.audio import (AudioError, AudioTooLong, load_audio, probe_duration,  # noqa: E402
                          stream_audio)

BUDGET_S = 20.0


@pytest.fixture(scope="module")
def speech(speech_dir):
    """A real recording tiled to ~44 s (16 kHz), longer than the budget."""
    clip, rate = sf.read(speech_dir / "en" / "wenet_librispeech_1995-1837-0001.wav",
                         dtype="float32")
    return np.tile(clip, 5), rate


def _variants(fmt, data, rate):
    """The file as written, its header claiming 5 s, and (where the format allows) claiming
    nothing."""
    out = {"honest": data, "claims 5 s": claim_seconds(fmt, data, 5.0, rate)}
    if fmt in ("wav", "flac"):
        out["claims nothing"] = claim_seconds(fmt, data, 0, rate)
    return out


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_budget_holds_whatever_the_header_claims(fmt, speech):
    """Hole 2: decoding stops at the budget for every format, whether the header tells the truth,
    lies, or says nothing; what the decoder would give without a budget decides the outcome."""
    audio, rate = speech
    data = encode(fmt, audio, rate)
    raised = 0
    for what, variant in _variants(fmt, data, rate).items():
        full = len(load_audio(variant)) / 16000           # what decoding everything gives
        tracemalloc.start()
        try:
            wave = load_audio(variant, max_seconds=BUDGET_S)
        except AudioTooLong as e:
            assert full > BUDGET_S, f"{fmt} {what}: refused {full:.1f} s"
            assert e.limit_seconds == BUDGET_S and "20 s" in str(e)
            raised += 1
        else:
            assert full <= BUDGET_S and len(wave) / 16000 == pytest.approx(full), (fmt, what)
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        # the budget, one decode block (30 s at the codec's rate) and the resampled copy
        assert peak < 40e6, f"{fmt} {what}: {peak / 1e6:.0f} MB while decoding"
        got = 0
        with pytest.raises(AudioTooLong) if full > BUDGET_S else _nothing():
            for block in stream_audio(variant, block_seconds=5.0, max_seconds=BUDGET_S):
                got += len(block)
        assert got / 16000 <= BUDGET_S + 5.0
    assert raised >= 1, f"{fmt}: no variant reached the budget"


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_probe_without_a_length_stops_at_the_budget(speech):
    """A FLAC that leaves its length unset is measured by decoding; that stops past the budget."""
    audio, rate = speech
    unknown = flac_total_samples(encode("flac", audio, rate), 0)
    assert probe_duration(unknown) == pytest.approx(len(audio) / rate, abs=0.01)
    measured = probe_duration(unknown, max_seconds=BUDGET_S)
    assert BUDGET_S < measured < len(audio) / rate


def test_nan_and_inf_samples_are_invalid_audio(tmp_path):
    """Fault: a float WAV with NaN/inf samples decoded 'fine' and failed in the model (HTTP 500)."""
    for bad in (np.nan, np.inf, -np.inf):
        x = np.zeros(16000, np.float32)
        x[1234] = bad
        path = tmp_path / "bad.wav"
        sf.write(path, x, 16000, subtype="FLOAT")
        with pytest.raises(AudioError, match="NaN or infinite"):
            load_audio(path)
        with pytest.raises(AudioError, match="NaN or infinite"):
            list(stream_audio(path))


def test_impossible_sample_rates_are_refused(tmp_path):
    path = tmp_path / "rate.wav"
    sf.write(path, np.zeros(1600, np.float32), 16000)
    data = bytearray(path.read_bytes())
    for rate in (1, 999, 2_000_000, 0x7FFFFFFF):
        data[24:28] = rate.to_bytes(4, "little")
        with pytest.raises(AudioError, match="sample rate|not an audio|corrupt"):
            load_audio(bytes(data), name="rate.wav")
