"""Observability of the running app (``python app.py --log-format json``): /metrics parsed by
Prometheus' own parser with counters that match the requests sent, request ids in headers and in
JSON log lines, and a Grafana dashboard whose every query names a metric the app exports."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _app_server import app_model_dir, audio_files, start_app  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "funasr-nano.json"


@pytest.fixture(scope="module")
def obs_app(app_model_dir, tmp_path_factory):
    server = start_app(app_model_dir, tmp_path_factory.mktemp("obs"), "--log-format", "json",
                       "--api-key", "k3y")
    yield server
    server.stop()


AUTH = {"Authorization": "Bearer k3y"}


def scrape(app) -> dict[tuple[str, tuple], float]:
    r = requests.get(app.url + "/metrics", headers=AUTH, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples, name, **labels) -> float:
    """Sum over the series of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


def post(app, path, headers=None, **data):
    with open(path, "rb") as f:
        return requests.post(app.url + "/v1/audio/transcriptions", files={"file": (path.name, f)},
                             data=data, headers={**AUTH, **(headers or {})}, timeout=120)


def test_metrics_count_what_was_sent(obs_app, audio_files, tmp_path):
    assert requests.get(obs_app.url + "/metrics", timeout=10).status_code == 401  # key needed
    before = scrape(obs_app)
    assert value(before, "funasr_nano_model_state", state="not_loaded") == 1.0
    assert value(before, "funasr_nano_model_state", state="loaded") == 0.0

    good = [audio_files[n] for n in ("tone.wav", "chirp.wav", "noise.wav")]
    for p in good:   # a language given: no second decode for language ID (engine.language_id)
        assert post(obs_app, p, language="en").status_code == 200
    notes = tmp_path / "notes.wav"
    notes.write_text("not audio\n" * 20)
    assert post(obs_app, notes).status_code == 400
    assert post(obs_app, good[0], language="Klingon").status_code == 400
    assert requests.get(obs_app.url + "/v1/models", headers=AUTH, timeout=10).status_code == 200
    after = scrape(obs_app)

    route = "/v1/audio/transcriptions"
    assert value(after, "funasr_nano_requests_total", route=route, status="200") == 3
    assert value(after, "funasr_nano_requests_total", route=route, status="400") == 2
    assert value(after, "funasr_nano_requests_total", route="/v1/models", status="200") == 1
    # the scrape before, and the refused one, counted when they were answered
    assert value(after, "funasr_nano_requests_total", route="/metrics", status="200") == 1
    assert value(after, "funasr_nano_requests_total", route="/metrics", status="401") == 1
    assert value(after, "funasr_nano_request_duration_seconds_count", route=route) == 5
    # only the three good files reached the scheduler
    assert total(after, "funasr_nano_sequences_total", priority="interactive") == 3
    assert value(after, "funasr_nano_processing_seconds_count", priority="interactive") == 3
    assert value(after, "funasr_nano_real_time_factor_count", priority="interactive") == 3
    assert value(after, "funasr_nano_audio_seconds_total", priority="interactive") == \
        pytest.approx(1.5 + 1.5 + 1.0, abs=0.01)
    assert value(after, "funasr_nano_prefill_batch_size_sum") == 3
    steps = value(after, "funasr_nano_decode_steps_total")
    assert steps > 0 and value(after, "funasr_nano_generated_tokens_total") >= steps
    assert value(after, "funasr_nano_model_state", state="loaded") == 1.0
    assert value(after, "funasr_nano_model_load_seconds") > 0
    assert total(after, "funasr_nano_queue_length") == 0
    assert total(after, "funasr_nano_running_sequences") == 0
    assert total(after, "funasr_nano_model_info", dtype="fp32", device="cpu") == 1
    # a hostile path does not become a label
    requests.get(obs_app.url + "/v1/" + "x" * 300, headers=AUTH, timeout=10)
    labels = {dict(ls).get("route") for (n, ls) in scrape(obs_app)
              if n == "funasr_nano_requests_total"}
    assert "/v1/other" in labels and not any(len(x or "") > 40 for x in labels)


def test_request_ids_in_headers_and_json_logs(obs_app, audio_files):
    r = post(obs_app, audio_files["tone.wav"], headers={"X-Request-ID": "client-id.42"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "client-id.42"
    hostile = post(obs_app, audio_files["tone.wav"],
                   headers={"X-Request-ID": 'a b"}{ <script>' * 5})
    rid = hostile.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", rid)  # replaced by one of ours
    health = requests.get(obs_app.url + "/health", timeout=10)
    assert re.fullmatch(r"[0-9a-f]{16}", health.headers["x-request-id"])
    assert health.json()["scheduler"]["mode"] == "batch"

    lines = [ln for ln in obs_app.log_path.read_text().splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message", "request_id"} <= set(x) for x in records)
    mine = [x for x in records if x["request_id"] == "client-id.42"]
    done = [x for x in mine if x.get("route") == "/v1/audio/transcriptions"]
    assert len(done) == 1 and done[0]["status"] == 200 and done[0]["duration_s"] > 0
    assert any(x["request_id"] == rid and x.get("status") == 200 for x in records)


def test_the_dashboard_queries_only_metrics_that_exist(obs_app, audio_files):
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 15
    names = {n for e in exprs for n in re.findall(r"\bfunasr_nano_[a-z_]+", e)}
    post(obs_app, audio_files["chirp.wav"])  # every labelled series has a sample by now
    exported = {n for n, _ in scrape(obs_app)}
    missing = sorted(names - exported)
    assert not missing, missing
    assert "funasr_nano_live_sessions" in names  # the gauge live sessions set
