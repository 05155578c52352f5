"""Compliance: watch lists, personal data, redaction (text, subtitles, JSON, audio), the audit
report; through the CLI and the HTTP API on the demo model's example clips."""
from __future__ import annotations

import json
import time
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _app_server import start_app  # noqa: E402

from compliance import Detector, WatchList, WatchListError, redact_audio, redact_row  # noqa: E402
from engine.longform.subtitles import to_srt, to_vtt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo"


# --------------------------------------------------------------------------- watch lists

@pytest.mark.parametrize("text, where", [
    ("", "holds no terms"),
    ("# only a comment\n\n", "holds no terms"),
    ("ok\ta\tb\tc\td", "line 1: 5 TAB-separated fields"),
    ("fine\nsecret\tnosuchcat", "line 2: unknown category 'nosuchcat'"),
    ("fine\nx\tconfidential\turgent", "line 2: unknown severity 'urgent'"),
    ("a\nb\n" + "x" * (1 << 20), "line 3: the line is 1048576 characters long"),
    ("a\n" + "y" * 300, "line 2: the term is 300 characters long"),
    ("a\n\t\tconfidential", "line 2: the term is empty"),
    ("!category bad name!", "line 1: '!category' needs one name"),
])
def test_bad_watch_lists_name_the_line(text, where):
    with pytest.raises(WatchListError) as e:
        WatchList.parse(text, source="terms.tsv")
    assert str(e.value).startswith("terms.tsv") and where in str(e.value)


def test_declared_category_and_defaults():
    wl = WatchList.parse("!category insider\nFalcon\tinsider\tcritical\npassword\n")
    assert [(t.term, t.category, t.severity) for t in wl.terms] == [
        ("Falcon", "insider", "critical"), ("password", "watch", "medium")]


# --------------------------------------------------------------------------- detection

def _scan(det, text, lang, segments=None):
    row = {"language": lang, "text": text,
           "segments": segments or [{"start": 0.0, "end": 1.0, "text": text}]}
    return [(h["label"], h["text"]) for h in det.scan(row)]


def test_personal_data_with_itn_on_and_off():
    det = Detector(pii=True)
    assert _scan(det, "Call 415 263 7132 or mail anna.berg@example.com.", "en") == [
        ("PHONE", "415 263 7132"), ("EMAIL", "anna.berg@example.com")]
    assert _scan(det, "Call four one five, two six three, seven one three two.", "en") == [
        ("PHONE", "four one five, two six three, seven one three two")]
    assert _scan(det, "mail anna dot berg at example dot com", "en") == [
        ("EMAIL", "anna dot berg at example dot com")]
    assert _scan(det, "Card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00.", "en") == [
        ("CARD", "4111 1111 1111 1111"), ("IBAN", "DE89 3704 0044 0532 0130 00")]
    # Chinese resident ID (check digit X) and a mobile number, digits and number words
    assert _scan(det, "身份证11010519491231002X，电话13800138000。", "zh") == [
        ("ID", "11010519491231002X"), ("PHONE", "13800138000")]
    assert _scan(det, "电话一三八零零一三八零零零。", "zh") == [("PHONE", "一三八零零一三八零零零")]
    # one digit off: no valid card, no valid ID
    assert _scan(det, "Card 4111 1111 1111 1112 and 11010519491231002Y.", "en") == []
    # amounts, times and dates are no personal data
    assert _scan(det, "The ticket costs $57.50 on 3 June 1994 at 12:45.", "en") == []


def test_unbroken_runs_where_the_region_dials_without_a_national_prefix():
    """Czech numbers have no national prefix: an unbroken fixed-line-range run is as likely an
    order number and is refused; grouped, mobile, or after a phone word it is a phone."""
    det = Detector(pii=True)
    assert _scan(det, "Prosím zapište si 543961547, děkuji.", "cs") == []
    assert _scan(det, "Prosím zapište si osm čtyři osm nula jedna nula tři tři sedm.", "cs") == []
    assert _scan(det, "Prosím zapište si 543 961 547, děkuji.", "cs") == [
        ("PHONE", "543 961 547")]
    assert _scan(det, "Moje telefonní číslo je 543961547.", "cs") == [("PHONE", "543961547")]
    assert _scan(det, "Prosím zapište si 601123456, děkuji.", "cs") == [("PHONE", "601123456")]
    # numbers read two digits at a time keep their groups ("41 55 ..."), so they count as
    # grouped; a Polish mobile read in pairs is found
    assert _scan(det, "Proszę zapisać pięćdziesiąt jeden dwadzieścia trzy czterdzieści "
                 "pięć sześćdziesiąt siedem osiem.", "pl") == [
        ("PHONE", "pięćdziesiąt jeden dwadzieścia trzy czterdzieści pięć sześćdziesiąt "
                  "siedem osiem")]
    # regions with a national prefix are unchanged: 0 tells the phone number
    assert _scan(det, "Bel 0612345678 morgen.", "nl") == [("PHONE", "0612345678")]


def test_watch_terms_case_cjk_number_words_and_split_segments():
    wl = WatchList.parse("project falcon\tconfidential\thigh\n机密文件\tconfidential\n"
                         "flight 415\tcompliance\nsalasana*\tconfidential\n")
    det = Detector(watch=wl)
    assert _scan(det, "About PROJECT Falcon, again.", "en") == [("CONFIDENTIAL", "PROJECT Falcon")]
    assert _scan(det, "这是机密文件。", "zh") == [("CONFIDENTIAL", "机密文件")]
    assert _scan(det, "Flight four one five is late.", "en") == [("COMPLIANCE", "Flight four one five")]
    assert _scan(det, "Salasanan kerroin.", "fi") == [("CONFIDENTIAL", "Salasanan")]
    assert _scan(det, "Projects falconry", "en") == []          # word boundaries hold
    segs = [{"start": 0.0, "end": 2.0, "text": "We spoke about project", "speaker": "A"},
            {"start": 2.0, "end": 4.0, "text": "falcon today.", "speaker": "B"},
            {"start": 4.0, "end": 5.0, "text": "这是机密", "speaker": "B"},
            {"start": 5.0, "end": 6.0, "text": "文件", "speaker": "B"}]
    hits = det.scan({"language": "en", "text": "", "segments": segs})
    assert [(h["text"], h["start"], h["end"], h["speaker"]) for h in hits] == [
        ("project falcon", 0.0, 4.0, "A"), ("机密 文件", 4.0, 6.0, "B")]
    # word times where the segments carry them
    segs = [{"start": 0.0, "end": 3.0, "text": "my password is here", "speaker": "S1",
             "words": [{"word": "my", "start": 0.1, "end": 0.3},
                       {"word": "password", "start": 0.4, "end": 1.1},
                       {"word": "is", "start": 1.2, "end": 1.3},
                       {"word": "here", "start": 1.4, "end": 1.9}]}]
    h = Detector(watch=WatchList.parse("password")).scan({"language": "en", "segments": segs,
                                                          "text": "my password is here"})
    assert [(x["start"], x["end"], x["time_source"], x["speaker"]) for x in h] == [
        (0.4, 1.1, "words", "S1")]


# --------------------------------------------------------------------------- redaction

def test_redacted_text_subtitles_and_json_hold_no_matched_string(tmp_path):
    det = Detector(watch=WatchList.parse("project falcon\tconfidential"), pii=True)
    row = {"language": "en", "duration": 6.0, "text": "",
           "segments": [{"start": 0.0, "end": 3.0, "text": "Call 415 263 7132 about project"},
                        {"start": 3.0, "end": 6.0,
                         "text": "falcon, card 4111 1111 1111 1111, mail a.b@example.com"}]}
    row["text"] = " ".join(s["text"] for s in row["segments"])
    hits = det.scan(row)
    assert sorted(h["label"] for h in hits) == ["CARD", "CONFIDENTIAL", "EMAIL", "PHONE"]
    red = redact_row(row, hits, det)
    outputs = [red["text"], to_srt(red["segments"]), to_vtt(red["segments"]),
               json.dumps(red, ensure_ascii=False)]
    for h in hits:
        for part in h["text"].split():
            if len(part) > 3:
                assert all(part not in o for o in outputs), part
    assert red["text"] == ("Call [PHONE] about [CONFIDENTIAL] [CONFIDENTIAL], card [CARD], "
                           "mail [EMAIL]")

    # audio: silent / bleeped exactly over the hit spans, sample-identical elsewhere
    sr = 16000
    rng = np.random.default_rng(0)
    wave = (0.3 * rng.standard_normal(sr * 6)).astype(np.float32)
    src = tmp_path / "call.wav"
    sf.write(src, wave, sr, subtype="FLOAT")
    for mode in ("silence", "bleep"):
        dst = tmp_path / f"red_{mode}.wav"
        spans = redact_audio(src, dst, hits, mode=mode)
        out, sr2 = sf.read(dst, dtype="float32")
        assert sr2 == sr and len(out) == len(wave)
        assert spans == [(0, 6 * sr)]       # segment times: both segments hold hits
        mask = np.zeros(len(wave), bool)
        for a, b in spans:
            mask[a:b] = True
        assert np.array_equal(out[~mask], wave[~mask])
        if mode == "silence":
            assert not out[mask].any()
        else:
            assert not np.array_equal(out[mask], wave[mask]) and np.abs(out[mask]).max() <= 0.21
    # word-timed hits: only those samples change
    hits2 = [{**hits[0], "start": 1.25, "end": 2.5}]
    spans = redact_audio(src, tmp_path / "w.wav", hits2)
    out, _ = sf.read(tmp_path / "w.wav", dtype="float32")
    assert spans == [(20000, 40000)]
    assert not out[20000:40000].any()
    assert np.array_equal(out[:20000], wave[:20000]) and np.array_equal(out[40000:], wave[40000:])


# --------------------------------------------------------------------------- CLI and API

def test_cli_watch_pii_redact_report_on_the_demo_model(tmp_path):
    terms = tmp_path / "terms.tsv"
    terms.write_text("ticket\tcompliance\thigh\nböcker\tproduct\n", encoding="utf-8")
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "transcribe.py", "--model", str(DEMO), "--quiet", "--watch", str(terms),
         "--pii", "--redact", "--redact-audio", "silence", "--format", "srt", "--output-dir",
         str(out), "--report", str(tmp_path / "audit"), "example/en.wav", "example/sv.wav",
         "example/fi.wav"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "audit.json").read_text(encoding="utf-8"))
    assert [[(h["label"], h["text"]) for h in it["hits"]] for it in report["items"]] == [
        [("COMPLIANCE", "ticket")], [("PRODUCT", "böcker")], []]
    assert report["settings"]["watch_list"] == "terms.tsv" and report["settings"]["redact"]
    assert "<mark>ticket</mark>" in (tmp_path / "audit.html").read_text(encoding="utf-8")
    srt = (out / "en.srt").read_text(encoding="utf-8")
    assert "The [COMPLIANCE] costs $57.50." in srt and "ticket" not in srt
    assert "böcker" not in (out / "sv.srt").read_text(encoding="utf-8")
    # the redacted audio: silent over the hit (srt has word times: the word's span), the same
    # samples elsewhere, and no copy for a file without hits
    red, sr = sf.read(out / "en.redacted.wav", dtype="int16")
    orig, sr0 = sf.read(ROOT / "example" / "en.wav", dtype="int16")
    hit = report["items"][0]["hits"][0]
    assert hit["time_source"] == "words", hit
    a, b = int(round(hit["start"] * sr)), int(round(hit["end"] * sr))
    assert sr == sr0 and len(red) == len(orig) and 0 <= a < b <= len(orig)
    assert not red[a:b].any() and orig[a:b].any()
    assert np.array_equal(red[:a], orig[:a]) and np.array_equal(red[b:], orig[b:])
    assert not (out / "fi.redacted.wav").exists()
    bad = tmp_path / "bad.tsv"
    bad.write_text("fine\nsecret\tnosuchcat\n", encoding="utf-8")
    run = subprocess.run([sys.executable, "transcribe.py", "--model", str(DEMO), "--quiet",
                          "--watch", str(bad), "example/en.wav"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "bad.tsv, line 2: unknown category 'nosuchcat'" in run.stderr


@pytest.fixture(scope="module")
def receiver():
    r = _Receiver(fail=2)
    yield r
    r.close()


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory, receiver):
    """The app on the demo model, its live alerts POSTed to ``receiver`` (which refuses the
    first two)."""
    server = start_app(str(DEMO), tmp_path_factory.mktemp("compliance_app"),
                       "--max-new-tokens", "64", "--alert-webhook", receiver.url,
                       "--alert-webhook-secret", "s3cret")
    yield server
    server.stop()


def test_api_fields_and_verbose_json(demo_app):
    def post(**data):
        with open(ROOT / "example" / "en.wav", "rb") as f:
            return requests.post(demo_app.url + "/v1/audio/transcriptions",
                                 files={"file": ("en.wav", f)}, data=data, timeout=120)

    r = post(response_format="verbose_json", watch_list="ticket\tcompliance\thigh", pii="true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == "The ticket costs $57.50."
    assert [(h["label"], h["text"], h["start"], h["end"]) for h in body["compliance"]["hits"]] \
        == [("COMPLIANCE", "ticket", 0.0, body["duration"])]
    r = post(response_format="vtt", watch_list="ticket\tcompliance", redact="true")
    assert r.status_code == 200 and "[COMPLIANCE]" in r.text and "ticket" not in r.text
    r = post(response_format="json", watch_list="ok\nsecret\tnosuchcat")
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "watch_list" and "line 2: unknown category" in err["message"]
    r = post(watch_list="x" * (300 * 1024))
    assert r.status_code == 400 and "watch_list is" in r.json()["error"]["message"]
    r = post(redact="true")
    assert r.status_code == 400 and r.json()["error"]["param"] == "redact"


# --------------------------------------------------------------------------- live alerts, webhook

class _Receiver:
    """A loopback webhook receiver: answers 500 to the first ``fail`` POSTs, 200 after; with
    ``hang``, never answers in time."""

    def __init__(self, fail: int = 0, hang: float = 0.0):
        import http.server
        import threading
        self.fail, self.hang = fail, hang
        self.posts: list[tuple[dict, bytes, int]] = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.hang:
                    time.sleep(outer.hang)
                status = 500 if len(outer.posts) < outer.fail else 200
                outer.posts.append((dict(self.headers), body, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self):
        return [(h, b) for h, b, status in self.posts if status == 200]

    def close(self):
        self.server.shutdown()


def test_webhook_never_blocks_and_gives_up_in_bounded_time():
    from compliance.alerts import WebhookSender
    hanging = _Receiver(hang=3.0)
    try:
        for url in (hanging.url, "http://127.0.0.1:9/refused"):
            s = WebhookSender(url, "k", timeout=0.3, max_attempts=2, backoff=0.05, max_queue=3)
            t0 = time.monotonic()
            results = [s.submit({"id": f"a{i}"}) for i in range(5)]
            assert time.monotonic() - t0 < 0.1          # never waits for the receiver
            assert results.count(True) >= 3 and s.dropped == results.count(False)
            deadline = time.monotonic() + 10
            while s.failed + s.dropped < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert s.failed + s.dropped == 5 and s.sent == 0
            s.close()
    finally:
        hanging.close()


def test_live_alerts_over_realtime_and_a_signed_webhook_after_two_failures(demo_app, receiver):
    import base64
    import threading
    import time as _t

    from websockets.sync.client import connect

    from bench._live_audio import recording
    from compliance.alerts import verify

    server = demo_app
    pcm = recording(("en.wav", "sv.wav"), rate=16000)
    ws = connect(server.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription",
                 max_size=None, open_timeout=30, legacy=True)
    assert json.loads(ws.recv(timeout=30))["type"] == "session.created"
    ws.send(json.dumps({"type": "session.update", "session": {
        "type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm",
                                                                "rate": 16000}}},
        "compliance": {"watch_list": "ticket\tcompliance\thigh\nböcker\tproduct",
                       "pii": True}}}))
    updated = json.loads(ws.recv(timeout=30))
    assert updated["type"] == "session.updated", updated
    assert updated["session"]["compliance"]["watch_terms"] == 2

    def feed():
        step = 1600
        for i in range(0, len(pcm), step):
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(
                pcm[i:i + step].astype("<i2").tobytes()).decode()}))
            _t.sleep(0.05)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    events = []
    while sum(e["type"] == "compliance.alert" for e in events) < 2:
        events.append(json.loads(ws.recv(timeout=120)))
        assert events[-1]["type"] != "error", events[-1]
    completed = [e for e in events if e["type"].endswith(".completed")]
    alerts = [e for e in events if e["type"] == "compliance.alert"]
    assert [(a["hit"]["label"], a["hit"]["text"], a["stage"]) for a in alerts] == [
        ("COMPLIANCE", "ticket", "final"), ("PRODUCT", "böcker", "final")]
    for a, c in zip(alerts, completed):
        assert a["item_id"] == c["item_id"] and a["transcript"] == c["transcript"]
        h = a["hit"]
        assert a["transcript"][h["char_start"]:h["char_end"]] == h["text"]
        # the hit's time is its word's, from the final's word times
        word = [w for w in c["words"] if w["word"].strip(" .,!?").casefold()
                == h["text"].casefold()]
        assert h["time_source"] == "words" and len(word) == 1, (h, c["words"])
        assert (h["start"], h["end"]) == (word[0]["start"], word[0]["end"])
        assert set(h) >= {"label", "category", "term", "severity", "text", "start", "end",
                          "speaker", "context"}
        # the alert comes right after its final
        assert events.index(a) > events.index(c)
    feeder.join()
    ws.send(json.dumps({"type": "compliance.report", "html": True}))
    rep = json.loads(ws.recv(timeout=30))
    assert rep["type"] == "compliance.report" and rep["report"]["summary"]["hits"] == 2
    assert "<mark>ticket</mark>" in rep["html"]
    ws.close()
    # the webhook: two failures, then each alert accepted once with a valid signature
    deadline = _t.monotonic() + 20
    while len(receiver.accepted()) < 2 and _t.monotonic() < deadline:
        _t.sleep(0.1)
    got = receiver.accepted()
    assert [s for _, _, s in receiver.posts][:2] == [500, 500]
    assert sorted(json.loads(b)["id"] for _, b in got) == sorted(a["id"] for a in alerts)
    for h, b in got:
        assert verify("s3cret", b, h["X-Compliance-Timestamp"], h["X-Compliance-Signature"])
        assert not verify("other", b, h["X-Compliance-Timestamp"],
                          h["X-Compliance-Signature"])


def test_page_highlight_of_results():
    from compliance.service import highlight
    rows = [{"file": "a.wav", "language": "en", "text": "The ticket costs $57.50."},
            {"file": "b.wav", "language": "en", "text": "Call 415 263 7132 now."}]
    spans, note = highlight(rows, True, "ticket\tcompliance")
    assert [(t, lab) for t, lab in spans if lab] == [("ticket", "COMPLIANCE"),
                                                    ("415 263 7132", "PHONE")]
    assert "".join(t for t, _ in spans) == ("[a.wav]\nThe ticket costs $57.50.\n\n[b.wav]\n"
                                            "Call 415 263 7132 now.")
    assert note == "Compliance: 2 hit(s)."
    assert highlight(rows, False, "x\tnosuchcat")[1].startswith(
        "Compliance: watch_list, line 1: unknown category")


def test_corpus_summary_report(tmp_path):
    """What a corpus run (transcribe.py --ray) writes: one report over its results.jsonl rows."""
    from compliance.corpus import summarize
    det = Detector(watch=WatchList.parse("ticket\tcompliance\thigh"), pii=True)
    rows = [{"file": "a.wav", "language": "en", "duration": 3.0, "text": "The ticket, 415 263 7132.",
             "segments": [{"start": 0.0, "end": 3.0, "text": "The ticket, 415 263 7132.",
                           "speaker": "SPEAKER_00"}]},
            {"file": "b.wav", "language": "en", "duration": 2.0, "text": "Nothing here.",
             "segments": [{"start": 0.0, "end": 2.0, "text": "Nothing here."}]},
            {"file": "c.wav", "error": "c.wav: not an audio file"}]
    html_path, json_path = summarize(det, rows, tmp_path)
    rep = json.loads(Path(json_path).read_text(encoding="utf-8"))
    assert rep["kind"] == "corpus" and rep["summary"]["sources"] == 3
    assert rep["summary"]["sources_with_hits"] == 1 and rep["summary"]["hits"] == 2
    assert rep["summary"]["by_label"] == {"COMPLIANCE": 1, "PHONE": 1}
    assert rep["summary"]["by_speaker"] == {"SPEAKER_00": 2}
    html = Path(html_path).read_text(encoding="utf-8")
    assert "@media print" in html and "Not transcribed: c.wav: not an audio file" in html
    assert "<mark>415 263 7132</mark>" in html and "Nothing found." in html


def test_live_monitor_partials_alert_once_and_survive_a_failing_sink():
    from compliance.live import LiveMonitor
    got = []
    det = Detector(watch=WatchList.parse("project falcon\tconfidential"), pii=True)
    mon = LiveMonitor(det, got.append, "sess_1", partials=True)
    mon.on_partial("item_1", "we talk about project", 0.0, 1.0, "en")
    assert got == []
    mon.on_partial("item_1", "we talk about project falcon and", 0.0, 2.0, "en")
    mon.on_final("item_1", "We talk about Project Falcon and 415 263 7132.", 0.0, 3.0, "en")
    assert [(a["stage"], a["hit"]["label"]) for a in got] == [("partial", "CONFIDENTIAL"),
                                                              ("final", "PHONE")]
    assert mon.report()["summary"]["hits"] == 2

    def broken(alert):
        raise RuntimeError("client gone")
    mon = LiveMonitor(det, broken, "sess_2")
    mon.on_final("item_1", "project falcon", 0.0, 1.0, "en")     # no exception escapes
    assert len(mon.hits) == 1


def test_live_monitor_alerts_a_hit_held_by_two_partial_hypotheses_in_a_row():
    """With partials on, a hit is stable once two partial hypotheses in a row hold it, though
    the words around it still change (the stable prefix lags); one hypothesis is not enough,
    and the final does not alert it again."""
    from compliance.live import LiveMonitor
    got = []
    det = Detector(watch=WatchList.parse("ticket\tcompliance\thigh"), pii=True)
    mon = LiveMonitor(det, got.append, "sess_1", partials=True)
    mon.on_partial("item_1", "", 0.0, 1.0, "en", "The ticket cost")
    assert got == []
    mon.on_partial("item_1", "", 0.0, 1.5, "en", "A ticket costs fifty")
    assert [(a["stage"], a["hit"]["text"], a["transcript"]) for a in got] == [
        ("partial", "ticket", "A ticket costs fifty")]
    mon.on_final("item_1", "The ticket costs $57.50.", 0.0, 2.0, "en")
    assert len(got) == 1
    # a hit seen once, then gone: no alert; without partials, nothing from partials
    mon.on_partial("item_2", "", 3.0, 4.0, "en", "the ticket")
    mon.on_partial("item_2", "", 3.0, 4.5, "en", "the picket line")
    off = LiveMonitor(det, got.append, "sess_2")
    off.on_partial("item_1", "ticket", 0.0, 1.0, "en", "ticket")
    off.on_partial("item_1", "ticket", 0.0, 1.0, "en", "ticket")
    assert len(got) == 1
