"""Fuzzing the audio input with hypothesis: real clips (the shared speech clips and example/),
encoded at test time into every supported format, then mutated (bit flips, overwritten and
inserted bytes, cut ranges, truncations, and header fields that lie about length, rate, channels
or size), through the loader in this process and through the HTTP API of the real app.

Never a crash, a hang, a 5xx or a body outside the documented shapes; the server's peak memory
stays within 300 MB of its idle memory. Budget: ``FUNASR_NANO_FUZZ_CASES`` cases per test
(default 300, a fixed seed: about 20 s for both on the 2-core VM, the app's start included);
``FUNASR_NANO_FUZZ_CASES=5000`` for the long run (a random seed; ``bench/fuzz.py`` writes it up).
``FUNASR_NANO_FUZZ_REPORT=FILE`` writes the counts (outcomes, formats, mutations, memory) as JSON.
"""
from __future__ import annotations

import collections
import faulthandler
import json
import os
import struct
import sys
import time

import numpy as np
import pytest
import requests
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _app_server import app_model_dir, start_app  # noqa: E402,F401
from _audio_variants import FORMATS, claim_seconds, encode  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from engine.audio import AudioError, load_audio, probe_duration, stream_audio  # noqa: E402

CASES = int(os.environ.get("FUNASR_NANO_FUZZ_CASES", "300"))
LONG = CASES > 1000
MAX_AUDIO_S = 60.0
HANG_S = 60.0               # one input taking longer than this is a hang
RSS_MARGIN_MB = 300.0
COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
FUZZ_SETTINGS = dict(max_examples=CASES, deadline=None, database=None, derandomize=not LONG,
                     suppress_health_check=list(HealthCheck), print_blob=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- seeds

@pytest.fixture(scope="module")
def seeds(speech_dir) -> dict[str, tuple[str, bytes]]:
    """name -> (format, file bytes): two shared clips and two example/ clips (cut to 3 s, at
    their own rates), each in every format."""
    clips = [speech_dir / "en" / "lhotse_ljspeech_LJ002-0020.wav",      # 22.05 kHz
             speech_dir / "zh" / "firered_BAC009S0764W0121.wav",        # 16 kHz
             os.path.join(ROOT, "example", "en.wav"), os.path.join(ROOT, "example", "ja.wav")]
    out = {}
    for clip in clips:
        audio, rate = sf.read(clip, dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)[:3 * rate]
        for fmt in FORMATS:
            out[f"{os.path.basename(str(clip))}.{fmt}"] = (fmt, encode(fmt, audio, rate))
    return out


# --------------------------------------------------------------------------- mutations

_INTS = st.sampled_from([0, 1, 2, 7, 255, 256, 1000, 44100, 65535, 0x7FFFFFFF, 0x80000000,
                         0xFFFFFFFF]) | st.integers(0, 0xFFFFFFFF)

MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    st.tuples(st.just("overwrite"), st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("insert"), st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("cut"), st.floats(0, 1, exclude_max=True), st.integers(1, 4096)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True), st.just(0)),
    # a header integer (the first 64 bytes: sizes, rates, channel counts, lengths) set to an
    # extreme or random value, 2 or 4 bytes, either byte order
    st.tuples(st.just("header_int"), st.integers(0, 62), st.tuples(
        st.sampled_from(["<H", ">H", "<I", ">I"]), _INTS)),
    # the container's own length field claiming a length it does not hold (0: none)
    st.tuples(st.just("length_lie"), st.sampled_from([0.0, 0.001, 0.5, 5.0, 3600.0, 1e7]),
              st.just(0)),
    # a WAV's fmt fields: channels, sample rate, byte rate, block align, bits per sample
    st.tuples(st.just("wav_fmt"), st.sampled_from([22, 24, 28, 32, 34]), _INTS),
)


def mutate(fmt: str, data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for kind, where, what in mutations:
        n = len(out)
        if n == 0:
            break
        pos = int(where * n) if isinstance(where, float) else where
        if kind == "flip":
            out[pos] ^= 1 << what
        elif kind == "overwrite":
            out[pos:pos + len(what)] = what
        elif kind == "insert":
            out[pos:pos] = what
        elif kind == "cut":
            del out[pos:pos + what]
        elif kind == "truncate":
            del out[max(1, pos):]
        elif kind == "header_int":
            code, value = what
            size = struct.calcsize(code)
            if pos + size <= n:
                out[pos:pos + size] = struct.pack(code, value & ((1 << (8 * size)) - 1))
        elif kind == "length_lie":
            try:
                out = bytearray(claim_seconds(fmt, bytes(out), where, 16000))
            except (ValueError, IndexError, AssertionError, struct.error):
                pass   # the header is already too damaged to find the field
        elif kind == "wav_fmt" and fmt == "wav" and n >= 36:
            size = 2 if where in (22, 32, 34) else 4
            out[where:where + size] = (what & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    return bytes(out)


def _mutated(fmt: str, data: bytes, mutations) -> bytes:
    """``mutate`` under the same hang guard as the decoders: the harness must not hang either."""
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    try:
        return mutate(fmt, data, mutations)
    finally:
        faulthandler.cancel_dump_traceback_later()


CASE = st.tuples(st.integers(0, 10_000), st.lists(MUTATION, min_size=1, max_size=3))


def _pick(seeds, index):
    names = sorted(seeds)
    name = names[index % len(names)]
    return name, *seeds[name]


# --------------------------------------------------------------------------- the loader

def test_loader_never_crashes_hangs_or_overruns(seeds):
    """Through load_audio, stream_audio and probe_duration in this process: audio (1-D float32,
    finite, within the budget) or an AudioError; anything else is a bug."""
    started = time.monotonic()

    @settings(**FUZZ_SETTINGS)
    @given(CASE)
    def run(case):
        index, mutations = case
        name, fmt, data = _pick(seeds, index)
        data = _mutated(fmt, data, mutations)
        COUNTS["loader_format"][fmt] += 1
        for kind, *_ in mutations:
            COUNTS["loader_mutation"][kind] += 1
        faulthandler.dump_traceback_later(HANG_S, exit=True)   # a hang ends the run, loudly
        t0 = time.monotonic()
        try:
            try:
                wave = load_audio(data, name=name, max_seconds=MAX_AUDIO_S)
            except AudioError as e:
                assert str(e).startswith(name + ": "), str(e)
                COUNTS["loader_outcome"]["AudioError"] += 1
            else:
                assert wave.dtype == np.float32 and wave.ndim == 1 and len(wave) > 0
                assert np.isfinite(wave).all()
                assert len(wave) <= MAX_AUDIO_S * 16000
                COUNTS["loader_outcome"]["audio"] += 1
            try:
                n = sum(len(b) for b in stream_audio(data, name=name, max_seconds=MAX_AUDIO_S))
                assert n <= MAX_AUDIO_S * 16000 + 16000
            except AudioError:
                pass
            try:
                assert probe_duration(data, name=name, max_seconds=MAX_AUDIO_S) >= 0
            except AudioError:
                pass
        finally:
            faulthandler.cancel_dump_traceback_later()
            _progress("loader", time.monotonic() - t0, name, mutations)

    run()
    COUNTS["loader"]["cases"] = sum(COUNTS["loader_outcome"].values())
    COUNTS["loader"]["seconds"] = round(time.monotonic() - started)
    assert COUNTS["loader"]["cases"] >= min(CASES, 100)
    _report()


# --------------------------------------------------------------------------- the HTTP API

def _rss_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


@pytest.fixture(scope="module")
def fuzz_app(app_model_dir, tmp_path_factory):
    server = start_app(app_model_dir, tmp_path_factory.mktemp("fuzz_app"),
                       "--max-upload-mb", "2", "--max-audio-minutes", str(MAX_AUDIO_S / 60),
                       "--body-timeout", "10", "--max-new-tokens", "4")
    yield server
    server.stop()


ERROR_KEYS = {"message", "type", "param", "code"}


def test_http_api_never_fails_the_error_shape(fuzz_app, seeds):
    """Through POST /v1/audio/transcriptions of the real app: 200 with a transcript or a 4xx in
    OpenAI's error shape, never a 5xx, a hang or a dead server; peak RSS within 300 MB of idle."""
    url = fuzz_app.url + "/v1/audio/transcriptions"
    for name, (fmt, data) in list(seeds.items())[:: len(FORMATS) + 1]:
        requests.post(url, files={"file": (name, data)}, timeout=HANG_S)   # warm: model loaded
    idle = _rss_mb(fuzz_app.proc.pid, "VmRSS")
    started = time.monotonic()

    @settings(**FUZZ_SETTINGS)
    @given(CASE, st.sampled_from(["json", "verbose_json", "text", "srt"]))
    def run(case, response_format):
        index, mutations = case
        name, fmt, data = _pick(seeds, index)
        data = _mutated(fmt, data, mutations)
        COUNTS["http_format"][fmt] += 1
        for kind, *_ in mutations:
            COUNTS["http_mutation"][kind] += 1
        t0 = time.monotonic()
        r = requests.post(url, files={"file": (name, data)},
                          data={"response_format": response_format}, timeout=HANG_S)
        _progress("http", time.monotonic() - t0, name, mutations)
        assert r.status_code < 500, (r.status_code, r.text[:500])
        assert r.headers.get("x-request-id")
        if r.status_code == 200:
            if response_format in ("json", "verbose_json"):
                assert isinstance(r.json()["text"], str)
            COUNTS["http_outcome"]["200"] += 1
        else:
            body = r.json()
            assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
            assert body["error"]["message"].startswith(name), body
            assert "internal error" not in body["error"]["message"], body   # a bug, not bad input
            COUNTS["http_outcome"][f"{r.status_code} {body['error']['code']}"] += 1
        assert fuzz_app.proc.poll() is None, "the server died"

    run()
    peak = _rss_mb(fuzz_app.proc.pid, "VmHWM")
    COUNTS["http"].update(cases=sum(COUNTS["http_outcome"].values()),
                          seconds=round(time.monotonic() - started))
    COUNTS["http_memory_mb"].update(idle_rss=round(idle), peak_rss=round(peak),
                                    peak_over_idle=round(peak - idle))
    assert requests.get(fuzz_app.url + "/health", timeout=10).json()["status"] == "ok"
    assert COUNTS["http"]["cases"] >= min(CASES, 100)
    _report()
    assert peak - idle <= RSS_MARGIN_MB, f"peak RSS {peak:.0f} MB, idle {idle:.0f} MB"


def _progress(test: str, seconds: float, name: str, mutations) -> None:
    """The slowest case so far (in the report), and a line every 500 cases in long runs."""
    c = COUNTS[test + "_progress"]
    c["done"] += 1
    if seconds > c.get("slowest_ms", 0) / 1000:
        c["slowest_ms"] = round(seconds * 1000)
        COUNTS[test + "_slowest"] = collections.Counter({f"{name} {mutations}"[:300]: 1})
    if LONG and c["done"] % 500 == 0:
        print(f"{test}: {c['done']} cases, slowest {c['slowest_ms']} ms", file=sys.stderr,
              flush=True)


def _report():
    path = os.environ.get("FUNASR_NANO_FUZZ_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({k: dict(v) for k, v in COUNTS.items()}, f, indent=1, sort_keys=True)
