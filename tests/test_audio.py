"""engine/audio/decode.py on the real clips in shared/data/speech and on fixtures made from them at test
time (other formats, bit depths, rates, channel counts, damaged files). Nothing large is committed:
fixtures live in pytest's tmp dirs."""

import csv
import io
import logging
import re
import sys
from pathlib import Path

import av
import librosa
import numpy as np
import pytest
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.audio import (AudioError, load_audio, probe_duration, resample,  # noqa: E402
                          stream_audio)
from tests._app_server import pyav_encode  # noqa: E402

from tests._fixtures import require_speech  # noqa: E402

SPEECH = require_speech(module_level=True)   # every test here decodes the clips or their copies


def manifest():
    with open(SPEECH / "manifest.tsv", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


CLIPS = manifest()
REF_CLIP = SPEECH / "en/wenet_librispeech_1995-1837-0001.wav"   # 16 kHz mono, 8.73 s


def reference_load(path):
    """What funasr does without torchaudio: soundfile float32, channel mean, librosa.resample."""
    data, rate = sf.read(path, dtype="float32")
    if data.ndim > 1:
        data = data.mean(-1)
    return librosa.resample(data, orig_sr=rate, target_sr=16000) if rate != 16000 else data


@pytest.fixture(scope="module")
def ref():
    return sf.read(REF_CLIP, dtype="float32")[0]


@pytest.fixture(scope="module")
def fx(tmp_path_factory, ref):
    """Fixture files made from the reference clip: name -> (path, expected 16 kHz audio or None)."""
    d = tmp_path_factory.mktemp("audio")
    x = ref
    stereo = np.stack([x, 0.5 * x])                                   # (2, n)
    x441 = soxr.resample(stereo.T, 16000, 44100, quality="HQ").T.astype(np.float32)
    six = np.stack([x * g for g in (1.0, 0.8, 0.6, 0.4, 0.2, 0.0)])   # 6 channels
    out = {}
    for sub in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
        sf.write(d / f"{sub}.wav", x, 16000, subtype=sub)
        out[sub] = d / f"{sub}.wav"
    sf.write(d / "stereo44k.wav", x441.T, 44100, subtype="PCM_16")
    sf.write(d / "six.wav", six.T, 16000, subtype="FLOAT")
    sf.write(d / "flac24_48k.flac", soxr.resample(x, 16000, 48000), 48000, subtype="PCM_24")
    sf.write(d / "vorbis.ogg", x, 16000, format="OGG", subtype="VORBIS")
    sf.write(d / "sf_opus.ogg", x, 16000, format="OGG", subtype="OPUS")
    sf.write(d / "lame.mp3", x, 16000, format="MP3")
    for name in ("stereo44k.wav", "six.wav", "flac24_48k.flac", "vorbis.ogg", "sf_opus.ogg",
                 "lame.mp3"):
        out[name] = d / name
    out["av.opus"] = pyav_encode(d / "av.opus", stereo, 16000, "ogg", "libopus", 48000)
    out["aac.m4a"] = pyav_encode(d / "aac.m4a", stereo, 16000, "mp4", "aac", 44100)
    out["opus.webm"] = pyav_encode(d / "opus.webm", x[None], 16000, "webm", "libopus", 48000)
    return out


def best_lag_corr(a, b, max_lag=1500):
    """(normalised correlation, lag) of b against a at the best lag: lossy codecs may shift."""
    from scipy.signal import correlate
    n = min(len(a), len(b))
    a, b = a[:n].astype(np.float64), b[:n].astype(np.float64)
    full = correlate(b, a, mode="full", method="fft")          # index n-1 is lag 0
    lags = np.arange(-max_lag, max_lag + 1)
    lag = int(lags[np.argmax(full[n - 1 + lags])])
    u, v = (a[: n - lag], b[lag:]) if lag >= 0 else (a[-lag:], b[: n + lag])
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-12)), lag


# --------------------------------------------------------------------------- real clips

@pytest.mark.parametrize("clip", CLIPS, ids=[c["path"] for c in CLIPS])
def test_real_clips_match_reference_pipeline(clip):
    path = SPEECH / clip["path"]
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) / 16000 - float(clip["duration_s"])) < 0.01
    assert 0.01 < np.abs(x).max() <= 1.0
    # bit-identical to soundfile + channel mean + librosa.resample (reference w/o torchaudio)
    np.testing.assert_array_equal(x, reference_load(path))
    assert abs(probe_duration(path) - float(clip["duration_s"])) < 0.01


@pytest.mark.parametrize("clip", CLIPS, ids=[c["path"] for c in CLIPS])
def test_stream_equals_load(clip):
    path = SPEECH / clip["path"]
    blocks = list(stream_audio(path, block_seconds=1.0))
    assert all(len(b) == 16000 for b in blocks[:-1]) and 0 < len(blocks[-1]) <= 16000
    assert all(b.dtype == np.float32 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), load_audio(path))


@pytest.mark.parametrize("orig_sr", [8000, 22050, 24000, 44100, 48000])
def test_resample_matches_librosa_exactly(orig_sr):
    y = load_audio(SPEECH / "en/whisper_jfk.flac")[: 16000 * 3]
    y = librosa.resample(y, orig_sr=16000, target_sr=orig_sr)          # some real audio at orig_sr
    np.testing.assert_array_equal(resample(y, orig_sr, 16000),
                                  librosa.resample(y, orig_sr=orig_sr, target_sr=16000))
    np.testing.assert_array_equal(load_audio((y, orig_sr)),
                                  librosa.resample(y, orig_sr=orig_sr, target_sr=16000))


# --------------------------------------------------------------------------- made formats

@pytest.mark.parametrize("sub,tol", [("PCM_U8", 1 / 128), ("PCM_16", 1 / 32768), ("PCM_24", 1e-6),
                                     ("PCM_32", 1e-7), ("FLOAT", 0), ("DOUBLE", 0)])
def test_wav_bit_depths(fx, ref, sub, tol):
    x = load_audio(fx[sub])
    assert x.dtype == np.float32 and len(x) == len(ref)
    assert np.abs(x - ref).max() <= tol + 1e-7


def test_channels_are_averaged(fx, ref):
    six = load_audio(fx["six.wav"])
    np.testing.assert_allclose(six, ref * 0.5, atol=1e-6)               # mean of gains 1..0 = 0.5
    st = load_audio(fx["stereo44k.wav"])
    assert abs(len(st) - len(ref)) <= 1
    c, lag = best_lag_corr(ref, st, 50)
    assert c > 0.999 and lag == 0
    assert np.abs(st).max() == pytest.approx(0.75 * np.abs(ref).max(), rel=0.05)


@pytest.mark.parametrize("name", ["flac24_48k.flac", "vorbis.ogg", "sf_opus.ogg", "lame.mp3",
                                  "av.opus", "aac.m4a", "opus.webm"])
def test_compressed_formats(fx, ref, name):
    x = load_audio(fx[name])
    assert x.dtype == np.float32 and x.ndim == 1 and np.abs(x).max() <= 1.0
    # AAC keeps its 1024-sample encoder priming here: PyAV's mp4 muxer writes no edit list for it.
    assert abs(len(x) - len(ref)) <= (2100 if name == "aac.m4a" else 200)
    c, lag = best_lag_corr(ref, x)
    assert c > 0.95, (name, c)
    assert abs(lag) <= (1100 if name == "aac.m4a" else 10), (name, lag)
    gain = 0.75 if name in ("av.opus", "aac.m4a") else 1.0     # stereo (x, x/2) averages to 0.75 x
    assert np.abs(x).max() == pytest.approx(gain * np.abs(ref).max(), rel=0.15)
    blocks = list(stream_audio(fx[name], block_seconds=2.5))
    np.testing.assert_array_equal(np.concatenate(blocks), x)
    assert abs(probe_duration(fx[name]) - len(ref) / 16000) < 0.1


# --------------------------------------------------------------------------- input kinds

def test_input_kinds(fx, ref):
    path = fx["PCM_16"]
    data = path.read_bytes()
    want = load_audio(path)
    np.testing.assert_array_equal(load_audio(str(path)), want)
    np.testing.assert_array_equal(load_audio(data), want)
    np.testing.assert_array_equal(load_audio(bytearray(data)), want)
    np.testing.assert_array_equal(load_audio(io.BytesIO(data)), want)
    with open(path, "rb") as f:
        f.read(100)                       # read from the start whatever the position
        np.testing.assert_array_equal(load_audio(f), want)
    # arrays: int16 scaled like libsndfile, (N, C) and (C, N), torch tensors, (array, sr)
    pcm = (np.clip(ref, -1, 1 - 2**-15) * 32768).astype(np.int16)
    np.testing.assert_array_equal(load_audio(pcm), want)
    np.testing.assert_array_equal(load_audio((pcm, 16000)), want)
    np.testing.assert_allclose(load_audio(np.stack([ref, ref], 1)), ref)
    np.testing.assert_allclose(load_audio(np.stack([ref, ref], 0)), ref)
    import torch
    np.testing.assert_allclose(load_audio(torch.from_numpy(np.stack([ref, 0 * ref]))), ref / 2)
    np.testing.assert_allclose(load_audio(torch.from_numpy(ref).to(torch.bfloat16)), ref, atol=4e-3)
    x441 = load_audio((soxr.resample(ref, 16000, 44100), 44100.0))
    assert len(x441) == len(ref)
    assert np.array_equal(np.concatenate(list(stream_audio(data, 1.0))), want)


# --------------------------------------------------------------------------- bad inputs

def error_of(src, **kw):
    with pytest.raises(AudioError) as e:
        load_audio(src, **kw)
    assert isinstance(e.value, ValueError)
    return str(e.value)


def test_missing_dir_empty(tmp_path):
    msg = error_of(tmp_path / "nope.wav")
    assert "nope.wav" in msg and "file not found" in msg
    msg = error_of(tmp_path)
    assert str(tmp_path) in msg and "directory" in msg
    (tmp_path / "empty.wav").write_bytes(b"")
    msg = error_of(tmp_path / "empty.wav")
    assert "empty.wav" in msg and "empty file (0 bytes)" in msg
    assert "empty" in error_of(b"", name="upload-1")
    assert "upload-1" in error_of(b"", name="upload-1")
    for fn in (probe_duration, lambda p: list(stream_audio(p))):
        with pytest.raises(AudioError, match="file not found"):
            fn(tmp_path / "nope.wav")


def test_text_renamed_wav(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("Meeting notes: this is not audio.\n" * 20)
    msg = error_of(p)
    assert "notes.wav" in msg and "not an audio file" in msg


def test_random_bytes_and_no_samples(tmp_path):
    rng = np.random.default_rng(0)
    blob = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    assert "not an audio file" in error_of(blob, name="blob")
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    assert "no audio samples" in error_of(tmp_path / "zero.wav")
    assert "no audio samples" in error_of(np.zeros(0, np.float32))
    assert "NaN" in error_of(np.array([0.0, np.nan], np.float32))
    assert "sample rate" in error_of((np.zeros(10, np.float32), 0))


def test_video_without_audio(tmp_path):
    p = tmp_path / "video.mp4"
    with av.open(str(p), "w") as out:
        st = out.add_stream("mpeg4", rate=10)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            black = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for pkt in st.encode(black):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    assert "no audio stream" in error_of(p)


def test_truncated_mp3_is_an_error_unless_allowed(fx, caplog):
    """Policy: a truncated file is an AudioError by default; with allow_damaged it gives the
    audio before the cut (with a warning): libsndfile stops there and FFmpeg continues only
    over what is left. Nothing decodable -> AudioError either way."""
    full = fx["lame.mp3"].read_bytes()
    ref = load_audio(fx["lame.mp3"])
    half = full[: len(full) // 2]
    assert "truncated MP3" in error_of(half, name="half.mp3")
    assert "truncated" in error_of(full[:300], name="cut.mp3")
    with caplog.at_level(logging.WARNING, logger="engine.audio"):
        x = load_audio(half, name="half.mp3", allow_damaged=True)
    assert "half.mp3" in caplog.text
    assert abs(len(x) / len(ref) - 0.5) < 0.05
    c, lag = best_lag_corr(ref[: len(x)], x, 20)
    assert c > 0.99 and lag == 0                      # the decoded part is the start, in place
    np.testing.assert_array_equal(
        np.concatenate(list(stream_audio(half, 1.0, allow_damaged=True))), x)
    msg = error_of(full[:50], name="cut.mp3")
    assert "cut.mp3" in msg and "truncated or corrupt" in msg


def test_corrupt_mp3_middle_is_skipped(fx):
    """libsndfile stops at a damaged mp3 frame; FFmpeg skips the bad packet and continues."""
    data = bytearray(fx["lame.mp3"].read_bytes())
    ref = load_audio(fx["lame.mp3"])
    i = len(data) // 3
    data[i:i + 2000] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    assert "corrupt" in error_of(bytes(data), name="corrupt.mp3")
    x = load_audio(bytes(data), name="corrupt.mp3", allow_damaged=True)
    assert len(x) > 0.8 * len(ref)


@pytest.mark.parametrize("name,frac,outcome", [
    ("flac24_48k.flac", 0.5, "damaged"),   # libsndfile gives up ("lost sync"); PyAV decodes
    ("PCM_16", 0.5, "partial"),            # libsndfile sizes a cut wav by the file: no signal
    ("vorbis.ogg", 0.5, "partial"),        # likewise for ogg pages
    ("opus.webm", 0.5, "damaged"),
    ("aac.m4a", 0.5, "error"),             # mp4 index (moov) at the end: nothing to decode
    ("vorbis.ogg", 0.02, "error"),
])
def test_truncated_other_formats(fx, name, frac, outcome):
    data = fx[name].read_bytes()
    cut = data[: int(len(data) * frac)]
    if outcome == "error":
        assert "truncated or corrupt" in error_of(cut, name="cut")
    else:
        if outcome == "damaged":
            assert re.search("truncated|corrupt", error_of(cut, name="cut"))
        x = load_audio(cut, name="cut", allow_damaged=True)
        assert 0.2 < len(x) / len(load_audio(fx[name])) < 0.7
