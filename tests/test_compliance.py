"""Compliance: watch lists, personal data, redaction (text, subtitles, JSON, audio), the audit
report; through the CLI and the HTTP API on the demo model's example clips."""
from __future__ import annotations

import json
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
    run = subprocess.run(
        [sys.executable, "transcribe.py", "--model", str(DEMO), "--quiet", "--watch", str(terms),
         "--pii", "--report", str(tmp_path / "audit"), "example/en.wav", "example/sv.wav"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(x) for x in run.stdout.splitlines()]
    assert [[(h["label"], h["text"]) for h in r["compliance"]["hits"]] for r in lines] == [
        [("COMPLIANCE", "ticket")], [("PRODUCT", "böcker")]]
    report = json.loads((tmp_path / "audit.json").read_text(encoding="utf-8"))
    assert report["summary"]["hits"] == 2 and report["settings"]["watch_list"] == "terms.tsv"
    assert "<mark>ticket</mark>" in (tmp_path / "audit.html").read_text(encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "transcribe.py", "--model", str(DEMO), "--quiet", "--watch", str(terms),
         "--redact", "--format", "srt", "example/en.wav"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "The [COMPLIANCE] costs $57.50." in run.stdout and "ticket" not in run.stdout
    bad = tmp_path / "bad.tsv"
    bad.write_text("fine\nsecret\tnosuchcat\n", encoding="utf-8")
    run = subprocess.run([sys.executable, "transcribe.py", "--model", str(DEMO), "--quiet",
                          "--watch", str(bad), "example/en.wav"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "bad.tsv, line 2: unknown category 'nosuchcat'" in run.stderr


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory):
    server = start_app(str(DEMO), tmp_path_factory.mktemp("compliance_app"),
                       "--max-new-tokens", "64")
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
