"""Fuzzing the live and page paths with hypothesis (issue 33), against the real app:

* ``/v1/realtime``: sequences of 1-8 client events (every event type and made-up ones, session
  updates of every shape with values of every JSON type and size, audio that is valid, odd,
  not base64 or huge, JSON that is broken or nested hundreds deep, binary frames, bursts of up
  to 300 events), each on its own session;
* the page's Gradio routes: ``/gradio_api/call/*`` and the queue (``queue/join`` +
  ``queue/data``) with argument lists of every type and FileData paths that are relative,
  absolute, ``..``, URLs or carry newlines and null bytes; uploads; unknown sessions and events.

The pass rules are those of the HTTP fuzzing (tests/test_fuzz.py): no crash, no hang (60 s a
case), no 5xx, nothing outside the error shapes, no internal text (a server path, a traceback,
an exception's name, "internal error"), and the server's peak RSS within 300 MB of idle (idle:
after one pass over every path, see ``_warm``). For the
realtime sessions also: every server event is a JSON object with ``type`` and ``event_id``;
error events have OpenAI's keys and at most 2,000 characters; and the session is never closed
(a ``clear`` after the sequence is answered ``cleared``). The server's log gets no "Exception in
ASGI application". Budget: ``FUNASR_NANO_FUZZ_CASES`` cases per test (here 100 unless set: about
20 s for both in CI, with a fixed seed); ``bench/fuzz.py --cases 5000`` runs the long one.
"""
from __future__ import annotations

import base64
import json
import os
import re
import sys
import time
import uuid

import numpy as np
import pytest
import requests
from websockets.sync.client import connect

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _app_server import app_model_dir, start_app  # noqa: E402,F401
from test_fuzz import COUNTS, _progress, _report, _rss_mb  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

CASES = int(os.environ.get("FUNASR_NANO_FUZZ_CASES", "100"))
LONG = CASES > 1000
HANG_S = 60.0
RSS_MARGIN_MB = 300.0
FUZZ_SETTINGS = dict(max_examples=CASES, deadline=None, database=None, derandomize=not LONG,
                     suppress_health_check=list(HealthCheck), print_blob=True)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ERROR_KEYS = {"type", "code", "message", "param", "event_id"}
# what no answer may hold: server paths, tracebacks, exception names
INTERNAL = ("Traceback", "Exception", "Original error", "IndexError", "KeyError", "TypeError",
            "AttributeError", "RecursionError", "object at 0x", "internal error",
            "/work/", "/root/", "/tmp/", "/home/", "site-packages", ROOT)


@pytest.fixture(scope="module")
def live_app(app_model_dir, tmp_path_factory):
    # --preload: the model is in memory before the idle RSS is taken
    server = start_app(app_model_dir, tmp_path_factory.mktemp("fuzz_live"),
                       "--max-new-tokens", "4", "--live-sessions", "4", "--preload",
                       "--live-max-message-mb", "1", "--live-idle-seconds", "30")
    deadline = time.monotonic() + 120
    while not requests.get(server.url + "/health", timeout=10).json().get("model_loaded"):
        assert time.monotonic() < deadline, "the model did not load"
        time.sleep(0.5)
    _warm(server)
    yield server
    server.stop()


def _warm(server) -> None:
    """Every path the fuzzing reaches, once, before idle is taken: what the server loads on
    first use is the server's, not a case's. The first live session loads onnxruntime and the
    VAD and starts the live machinery (about 110 MB), the first commit over 30 s the long-audio
    path (about 55 MB), and the model's load peaked about 60 MB above the settled idle: the
    peak-over-idle of a cold server counted all three (a 2,500-case run read 338 MB)."""
    url = server.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    noise = np.random.default_rng(0).standard_normal(24000 * 40) * 3000
    audio = base64.b64encode(noise.astype("<i2").tobytes()).decode()
    with connect(url, open_timeout=HANG_S, max_size=None) as ws:
        ws.recv(timeout=HANG_S)
        ws.send(json.dumps({"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {"turn_detection": None}}}}))
        step = len(audio) // 8 // 4 * 4
        for i in range(0, len(audio), step):
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio[i:i + step]}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        while not json.loads(ws.recv(timeout=120))["type"].endswith((".completed", ".failed")):
            pass
    requests.post(server.url + "/gradio_api/call/model_status", json={"data": []}, timeout=60)
    time.sleep(2)


def _reset_peak(pid: int) -> float:
    """The idle RSS now, with the kernel's peak (VmHWM) reset to it: the peak read at the end
    is the run's own (Linux: 5 to /proc/PID/clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    return _rss_mb(pid, "VmRSS")


# Gradio's upload cache: its paths are the page protocol's file references (an upload's
# answer, a result's files), not a leak
_CACHE_PATH = re.compile(r'/tmp/gradio/[0-9a-f]{64}/[^"\\]*')


def _no_internal_text(text: str, where) -> None:
    text = _CACHE_PATH.sub("CACHED", text)
    for bad in INTERNAL:
        assert bad not in text, (bad, where, text[:500])


# --------------------------------------------------------------------------- values

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64),
                     st.floats(allow_nan=False), st.text(max_size=40),
                     st.sampled_from(["", "auto", "en", "zh", "pcm16", "audio/pcm", "server_vad",
                                      "semantic_vad", "g711_ulaw", "x" * 5000,
                                      "a\nb\x00c\x1b[31m", "../../etc/passwd"]))
_values = st.recursive(_scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=12), kids, max_size=4)),
    max_leaves=12)
_rates = st.one_of(st.sampled_from([24000, 16000, 8000, 0, -1, 48000, "24000", None, True]),
                   _values)
_format = st.one_of(_values, st.sampled_from(["pcm16", "audio/pcm", "g711_alaw"]),
                    st.fixed_dictionaries({"type": st.sampled_from(["audio/pcm", "pcm16", "x"]),
                                           "rate": _rates}))
_transcription = st.one_of(_values, st.fixed_dictionaries({}, optional={
    "language": st.one_of(_values, st.sampled_from(["en", "zh", "de", "auto", "xx" * 500])),
    "prompt": st.one_of(_values, st.text(max_size=300), st.just("w," * 2000)),
    "itn": _values, "model": _values}))
_turn = st.one_of(st.none(), _values, st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["server_vad", "semantic_vad", "none"]),
    "threshold": st.one_of(st.floats(-1, 2), _values),
    "silence_duration_ms": st.one_of(st.integers(-10, 20000), _values),
    "prefix_padding_ms": st.one_of(st.integers(-10, 20000), _values)}))
_session_ga = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["transcription", "realtime", 3]),
    "audio": st.one_of(_values, st.fixed_dictionaries({"input": st.one_of(
        _values, st.fixed_dictionaries({}, optional={
            "format": _format, "transcription": _transcription, "turn_detection": _turn,
            "noise_reduction": _values}))}))})
_session_legacy = st.fixed_dictionaries({}, optional={
    "input_audio_format": _format, "input_audio_transcription": _transcription,
    "turn_detection": _turn, "modalities": _values})
_pcm = st.one_of(st.binary(max_size=2000), st.integers(1, 48000).map(lambda n: bytes(2 * n)),
                 st.integers(0, 9).map(lambda n: bytes(n * 2 + 1)))
_audio = st.one_of(_pcm.map(lambda b: base64.b64encode(b).decode()), st.text(max_size=50),
                   _values, st.just("!!!not base64"), st.just("QUJD" * 200_000))
_event_id = st.one_of(st.none(), st.text(max_size=20), st.just("e" * 50_000), _values)


def _ev(kind, **fields):
    return st.fixed_dictionaries({"type": st.just(kind), **fields},
                                 optional={"event_id": _event_id})


_event = st.one_of(
    _ev("session.update", session=st.one_of(_session_ga, _session_legacy, _values)),
    _ev("transcription_session.update", session=st.one_of(_session_legacy, _values)),
    _ev("input_audio_buffer.append", audio=_audio),
    _ev("input_audio_buffer.commit"), _ev("input_audio_buffer.clear"),
    _ev("response.create"), _ev("conversation.item.create", item=_values),
    st.fixed_dictionaries({"type": _values}), _values)
# a message: an event as JSON, or something that is not one
_message = st.one_of(
    _event.map(lambda e: ("text", json.dumps(e))),
    st.text(max_size=200).map(lambda t: ("text", t)),
    st.integers(2, 600).map(lambda n: ("text", "[" * n + "]" * n)),
    st.integers(2, 600).map(lambda n: ("text", '{"a":' * n + "1" + "}" * n)),
    st.binary(max_size=200).map(lambda b: ("bytes", b)),
    st.tuples(_event, st.integers(2, 300)).map(lambda t: ("burst", json.dumps(t[0]), t[1])))
SEQUENCE = st.lists(_message, min_size=1, max_size=8)


# --------------------------------------------------------------------------- /v1/realtime

def _check_event(raw, seq) -> dict:
    assert isinstance(raw, str), "a binary server event"
    event = json.loads(raw)
    assert isinstance(event, dict) and isinstance(event.get("type"), str), event
    assert isinstance(event.get("event_id"), str), event
    if event["type"] == "error":
        assert set(event["error"]) == ERROR_KEYS, event
        assert len(raw) <= 2000, ("error event too long", len(raw))
        COUNTS["realtime_outcome"][f"error {event['error']['code']}"] += 1
    else:
        COUNTS["realtime_outcome"][event["type"]] += 1
    _no_internal_text(raw, seq)
    return event


def _session(url):
    """A new session (its session.created read). The previous sequences' sessions end as their
    clients leave, but on a loaded machine one may still be ending (feeding a long append to
    the end-pointer): a 1013 at the start (all --live-sessions taken) is retried for up to 60 s;
    a session closed later is a failure."""
    deadline = time.monotonic() + HANG_S
    while True:
        ws = connect(url, open_timeout=HANG_S, max_size=None, close_timeout=5, legacy=True)
        first = json.loads(ws.recv(timeout=HANG_S))
        if first.get("type") == "session.created":
            _check_event(json.dumps(first), "session.created")
            return ws
        ws.close()
        assert first.get("error", {}).get("code") == "session_limit", first
        assert time.monotonic() < deadline, "no live session free for 60 s"
        COUNTS["realtime_retries"]["session_limit at the start"] += 1
        time.sleep(0.5)


# Audio a case may send: the server reads a session's first 60 s at once, then at 2x real time
# (serving.limits); past that a case would take minutes (300 appends of 12 s: 30 min), so the
# appends beyond it are not sent (counted). The throttling itself: tests/test_abuse.py.
AUDIO_PER_CASE_S = 55.0


def _audio_seconds(kind: str, payload) -> float:
    """Seconds of audio an append carries at the lowest rate (16 kHz); 0 for anything else."""
    if kind == "bytes" or '"input_audio_buffer.append"' not in payload:
        return 0.0
    try:
        audio = json.loads(payload).get("audio")
        if not isinstance(audio, str):
            return 0.0
        return len(base64.b64decode(audio, validate=True)) / 2 / 16000
    except (ValueError, AttributeError):
        return 0.0


def test_realtime_sessions_survive_any_event_sequence(live_app):
    url = live_app.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    idle = _reset_peak(live_app.proc.pid)
    started = time.monotonic()

    @settings(**FUZZ_SETTINGS)
    @given(SEQUENCE)
    def run(seq):
        t0 = time.monotonic()
        for kind, *_ in seq:
            COUNTS["realtime_message"][kind] += 1
        audio = 0.0
        with _session(url) as ws:
            for kind, payload, *n in seq:
                seconds = _audio_seconds(kind, payload)
                for _ in range(n[0] if kind == "burst" else 1):
                    if seconds and audio + seconds > AUDIO_PER_CASE_S:
                        COUNTS["realtime_message"]["append over the case's audio"] += 1
                        break                      # read at 2x real time past the burst
                    audio += seconds
                    ws.send(payload)
            ws.send(json.dumps({"type": "input_audio_buffer.clear", "event_id": "fuzz-end"}))
            deadline = time.monotonic() + HANG_S
            while True:          # the session lives and answers: its events until "cleared"
                left = deadline - time.monotonic()
                assert left > 0, "no answer to the final clear: a hang"
                event = _check_event(ws.recv(timeout=left), seq)
                if event["type"] == "input_audio_buffer.cleared":
                    break
                if event["type"] == "error" and event["error"]["event_id"] == "fuzz-end":
                    break        # a clear refused (e.g. while a final is pending) is an answer
        _progress("realtime", time.monotonic() - t0, "sequence", [m[0] for m in seq])
        assert live_app.proc.poll() is None, "the server died"

    run()
    _finish("realtime", live_app, idle, started)


def _finish(section: str, server, idle: float, started: float) -> None:
    """After a fuzz run: its counts and memory in the report, then the server's health, its
    peak RSS within the margin over idle, and no ASGI traceback in its log."""
    peak = _rss_mb(server.proc.pid, "VmHWM")
    COUNTS[section].update(cases=COUNTS[f"{section}_progress"]["done"],
                           seconds=round(time.monotonic() - started))
    COUNTS[f"{section}_memory_mb"].update(idle_rss=round(idle), peak_rss=round(peak),
                                          peak_over_idle=round(peak - idle))
    _report()
    assert requests.get(server.url + "/health", timeout=10).json()["status"] == "ok"
    assert peak - idle <= RSS_MARGIN_MB, f"peak RSS {peak:.0f} MB, idle {idle:.0f} MB"
    assert "Exception in ASGI application" not in server.log_path.read_text(errors="replace")


# --------------------------------------------------------------------------- the page

_paths = st.one_of(st.sampled_from([
    "clip.wav", "some/dir/clip.wav", "/etc/passwd", "../../../../etc/passwd", "a\x00b.wav",
    "x\n{\"level\": \"info\"}\n.wav", "http://127.0.0.1:1/x.wav", "file:///etc/passwd", "",
    "https://huggingface.co/x.wav", "http://example.com/a.wav",
    "/", ".", "~/.ssh/id_rsa", "C:\\windows\\win.ini", "é" * 300, "%2e%2e/%2e%2e/etc"]),
    st.text(max_size=60))
_file_data = st.fixed_dictionaries({"path": _paths}, optional={
    "orig_name": st.one_of(_paths, _values), "url": st.one_of(_paths, _values),
    "size": _values, "mime_type": _values, "is_stream": _values,
    "meta": st.one_of(st.just({"_type": "gradio.FileData"}), _values)})
_arg = st.one_of(_values, _file_data, st.lists(_file_data, max_size=3))
_page_request = st.one_of(
    st.tuples(st.just("call"), st.sampled_from(["transcribe", "load_model", "model_status",
                                                 "load_example", "nope", "../config"]),
              st.lists(_arg, max_size=7)),
    st.tuples(st.just("join"), st.one_of(st.integers(-3, 40), _values), st.lists(_arg,
                                                                                 max_size=7)),
    st.tuples(st.just("data"), st.one_of(st.text(max_size=40), st.just("x" * 5000))),
    st.tuples(st.just("result"), st.text(max_size=40)),
    st.tuples(st.just("upload"), st.binary(max_size=3000), _paths))


def _page_answer(r, where) -> str:
    assert r.status_code < 500, (r.status_code, r.text[:500], where)
    text = r.text
    COUNTS["page_outcome"][f"{where[0]} {r.status_code}"] += 1
    return text


def _sse(app, url, where) -> None:
    with requests.get(url, stream=True, timeout=HANG_S) as s:
        _page_answer(s, where)
        t_end = time.monotonic() + HANG_S
        for line in s.iter_lines(decode_unicode=True):
            assert time.monotonic() < t_end, ("stream hangs", where)
            if line.startswith("data:"):
                _no_internal_text(line, where)
                if '"msg": "process_completed"' in line or '"msg":"process_completed"' in line:
                    break


def test_page_routes_answer_any_request_cleanly(live_app):
    app = live_app
    config = requests.get(app.url + "/config", timeout=30).json()
    idle = _reset_peak(app.proc.pid)
    started = time.monotonic()

    @settings(**FUZZ_SETTINGS)
    @given(_page_request)
    def run(req):
        t0 = time.monotonic()
        kind = req[0]
        COUNTS["page_request"][kind] += 1
        try:
            body = json.dumps({"data": req[2]} if kind == "call" else {})
        except (TypeError, ValueError):
            return
        if kind == "call":
            r = requests.post(app.url + f"/gradio_api/call/{req[1]}", data=body, timeout=HANG_S,
                              headers={"Content-Type": "application/json"})
            text = _page_answer(r, req)
            _no_internal_text(text, req)
            if r.status_code == 200 and "event_id" in text:
                _sse(app, app.url + f"/gradio_api/call/{req[1]}/{r.json()['event_id']}", req)
        elif kind == "join":
            session = uuid.uuid4().hex
            payload = {"data": req[2], "fn_index": req[1], "session_hash": session,
                       "event_data": None, "trigger_id": None}
            r = requests.post(app.url + "/gradio_api/queue/join", data=json.dumps(payload),
                              headers={"Content-Type": "application/json"}, timeout=HANG_S)
            text = _page_answer(r, req)
            _no_internal_text(text, req)
            if r.status_code == 200:
                _sse(app, app.url + f"/gradio_api/queue/data?session_hash={session}", req)
        elif kind == "data":
            r = requests.get(app.url + "/gradio_api/queue/data", params={"session_hash": req[1]},
                             timeout=HANG_S)
            _no_internal_text(_page_answer(r, req), req)
        elif kind == "result":
            r = requests.get(app.url + f"/gradio_api/call/transcribe/{req[1]}", timeout=HANG_S)
            _no_internal_text(_page_answer(r, req), req)
        else:
            name = req[2] if isinstance(req[2], str) else "x"
            r = requests.post(app.url + "/gradio_api/upload", timeout=HANG_S,
                              files={"files": (name or "x", req[1])})
            _no_internal_text(_page_answer(r, req), req)
        _progress("page", time.monotonic() - t0, kind, [kind])
        assert app.proc.poll() is None, "the server died"

    assert config.get("dependencies")
    run()
    _finish("page", app, idle, started)
