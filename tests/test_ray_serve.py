"""The HTTP API on Ray Serve (serving/ray_serve.py), run for real: ``python -m serving.ray_serve``
joins a local 2-CPU Ray cluster (conftest's ``ray_cluster``) with the tiny random-weight model.

The API contract is test_app.py's own tests (``test_app.API_CONTRACT``), collected here a second
time with this module's ``app`` and ``keyed_app`` fixtures: the same assertions against the Ray
Serve application as against app.py.
"""
from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_app  # noqa: E402
from _app_server import (MAX_NEW_TOKENS, app_model_dir, audio_files, engine,  # noqa: E402,F401
                         expected_text, get_json)
from test_app import post  # noqa: E402
from tests._ray_cluster import ServeProcess, serve_port_fixture  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

for _name in test_app.API_CONTRACT:   # the contract tests, against this module's fixtures
    globals()[_name] = getattr(test_app, _name)


serve_port = pytest.fixture(scope="module")(serve_port_fixture)


@pytest.fixture(scope="module")
def app(ray_cluster, serve_port, app_model_dir, tmp_path_factory):
    server = ServeProcess(ray_cluster, serve_port, tmp_path_factory.mktemp("serve") / "serve.log",
                          "--model", app_model_dir, "--replicas", "2", "--num-cpus", "0.5",
                          "--max-upload-mb", str(test_app.UPLOAD_MB),
                          # 20 clients post at once below; with the default cap of 16 bodies in
                          # flight a slow moment answers some of them 503 (seen once here). The
                          # cap itself is test_security.py's.
                          "--max-uploads", "32", "--max-uploads-per-client", "32",
                          "--max-new-tokens", str(MAX_NEW_TOKENS))
    try:
        yield server.wait_ready(replicas=2)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def keyed_app(ray_cluster, serve_port, app_model_dir, tmp_path_factory):
    server = ServeProcess(ray_cluster, serve_port, tmp_path_factory.mktemp("keyed") / "k.log",
                          "--model", app_model_dir, "--replicas", "1", "--num-cpus", "0.5",
                          "--name", "keyed", "--api-key", "s3cret", "--auth", "ann:pw",
                          "--max-new-tokens", str(MAX_NEW_TOKENS),
                          prefix="/keyed")
    try:
        yield server.wait_ready(replicas=1)
    finally:
        server.stop()


def test_health_says_ray_serve_and_its_replicas(app, app_model_dir):
    health = get_json(app.url + "/health")
    assert health["status"] == "ok" and health["backend"] == "ray-serve"
    assert health["replicas"] == 2 and health["model_loaded"] is True
    assert health["device"] == "cpu" and health["dtype"] == "fp32"
    assert health["model"] == Path(app_model_dir).name and health["demo"] is False
    assert "model_dir" not in health                       # no server path for anyone


def test_two_replicas_answer_20_concurrent_requests_with_the_single_process_texts(
        app, engine, audio_files):
    files = [audio_files[n] for n in ("tone.wav", "chirp.wav", "noise.wav", "tone44k.flac")]
    langs = [None, "en", "zh"]
    jobs = [(files[i % 4], langs[i % 3]) for i in range(20)]
    want = {(p.name, lang): expected_text(engine, p, lang) for p, lang in set(jobs)}

    def one(job):
        path, lang = job
        return job, post(app, path, timeout=120, **({"language": lang} if lang else {}))

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, jobs))
    for (path, lang), r in results:
        assert r.status_code == 200, r.text
        assert r.json()["text"] == want[(path.name, lang)]


def _transcriber_replicas(app_name: str) -> list[str]:
    import ray
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == "serve" and f"{app_name}#Transcriber#" in a["name"])


def test_a_replica_killed_under_load_loses_no_request(app, engine, audio_files):
    """Requests keep coming while one of the two replicas is killed: each one is answered with
    the right text (its call sent again to the other replica) or with 503 and Retry-After,
    within the client's timeout; Serve then brings the replica back."""
    import ray

    wav = audio_files["chirp.wav"]
    want = expected_text(engine, wav)
    [victim, _] = _transcriber_replicas("funasr-nano")
    answers, done = [], threading.Event()
    lock = threading.Lock()

    def client():
        while not done.is_set():
            t0 = time.monotonic()
            try:
                r = post(app, wav, timeout=90)
            except requests.RequestException as e:   # a hang or a dropped connection
                r = e
            with lock:
                answers.append((r, time.monotonic() - t0))
                if len(answers) >= 40:
                    done.set()

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    while len(answers) < 6 and not done.is_set():
        time.sleep(0.05)
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads), "a request hung"
    statuses = []
    for r, _elapsed in answers:
        assert isinstance(r, requests.Response), f"no HTTP answer: {r!r}"
        statuses.append(r.status_code)
        if r.status_code == 200:
            assert r.json()["text"] == want
        else:
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) > 0
            assert r.json()["error"]["code"] == "model_unavailable"
    assert statuses.count(200) >= len(statuses) - 2, statuses
    # Serve replaces the dead replica
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        names = _transcriber_replicas("funasr-nano")
        if len(names) == 2 and victim not in names and get_json(app.url + "/health")[
                "replicas"] == 2:
            break
        time.sleep(1)
    else:
        pytest.fail(f"the killed replica was not replaced: {_transcriber_replicas('funasr-nano')}")
    assert post(app, wav).json()["text"] == want


def test_serve_config_and_rayservice_manifest(app_model_dir):
    """deploy/serve.yaml is a valid Serve config whose application builds from its import path;
    the KubeRay RayService carries the same application."""
    from ray.serve.schema import ServeDeploySchema

    from serving import ray_serve

    config = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    [application] = schema.applications
    assert application.import_path == "serving.ray_serve:build_app"
    deployments = {d.name: d for d in application.deployments}
    assert set(deployments) == {"Api", "Transcriber"}
    assert deployments["Transcriber"].ray_actor_options.num_cpus >= 1
    built = ray_serve.build_app({**application.args, "model": app_model_dir})
    assert type(built).__name__ == "Application"

    manifest = yaml.safe_load((ROOT / "deploy" / "rayservice.yaml").read_text())
    assert manifest["kind"] == "RayService" and manifest["apiVersion"].startswith("ray.io/")
    inner = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(inner)
    [k8s_app] = inner["applications"]
    assert k8s_app["import_path"] == application.import_path
    assert {d["name"] for d in k8s_app["deployments"]} == {"Api", "Transcriber"}
