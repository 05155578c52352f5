"""The container image (Dockerfile), built by scripts/image/build.sh and run with buildah as a user
of the image would run it: its configuration, the app as uid 1000, every example format through
the HTTP API, the kernels loaded from the image's read-only cache, the image's HEALTHCHECK
command, the API key, and a model directory mounted read-only at /models in place of the demo.

CI builds the image first and names it in $FUNASR_NANO_TEST_IMAGE (see .ci/run).
"""
from __future__ import annotations

import csv
import os
import re
import sys
from pathlib import Path

import pytest
import requests
import soundfile as sf
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _app_server import (MAX_NEW_TOKENS, app_model_dir, engine, expected_text,  # noqa: E402,F401
                         free_port, get_json, pyav_encode)
from _image import Container, image_config, image_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from eval_demo import cer_counts  # noqa: E402

KEY = "image-test-key"
# tests/test_demo_examples.py's per-file bound for the demo on its clips (one wrong number costs
# 5-20% of these short sentences); the lossy formats here are encoded at their codecs' defaults.
MAX_CER = 0.30
# One example clip per format the README promises, made from example/*.wav at test time.
FORMATS = {"wav": "en.wav", "mp3": "zh.wav", "m4a": "ja.wav", "flac": "ko.wav",
           "ogg": "pt.wav", "webm": "nl.wav"}


@pytest.fixture(scope="module")
def image() -> str:
    return image_name()


@pytest.fixture(scope="module")
def demo(image, tmp_path_factory):
    """The image as shipped, no model mounted: it serves the bundled demo checkpoint."""
    c = Container(image, tmp_path_factory.mktemp("image") / "demo.log")
    try:
        yield c.start()
    finally:
        c.stop()


def compose_service(name: str, variables: dict[str, str]) -> dict:
    """A service of docker-compose.yml with its ${VAR} / ${VAR:-default} filled in (compose's
    rules: the default when the variable is unset or empty)."""
    def fill(v):
        if isinstance(v, str):
            return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}",
                          lambda m: variables.get(m[1]) or (m[2] or ""), v)
        if isinstance(v, list):
            return [fill(x) for x in v]
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        return v
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return fill(compose["services"][name])


@pytest.fixture(scope="module")
def mounted(image, app_model_dir, tmp_path_factory):
    """docker-compose.yml's cpu service, run as compose would run it: the model directory it
    mounts read-only at /models (the tiny random model here), its API key, environment and
    command (flags after the image name). Its named cache volume is left to buildah, which
    gives each container a fresh volume for the image's VOLUME /cache, filled from the image as
    Docker fills a new named volume (buildah 1.28 also drops a bind mount given next to a
    second one over an image VOLUME). The tiny random model never stops by itself, so the
    token limit is lowered through the environment."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    svc = compose_service("asr-cpu", {"FUNASR_NANO_MODEL_DIR": app_model_dir,
                                      "FUNASR_NANO_API_KEY": KEY})
    volumes = tuple(v for v in svc["volumes"] if v.split(":")[0] not in compose["volumes"])
    c = Container(image, tmp_path_factory.mktemp("image") / "mounted.log",
                  env={**svc["environment"], "FUNASR_NANO_MAX_NEW_TOKENS": str(MAX_NEW_TOKENS)},
                  volumes=volumes)
    c.compose = svc
    try:
        yield c.start(svc["command"])
    finally:
        c.stop()


def examples() -> dict[str, dict]:
    with open(ROOT / "example" / "examples.tsv", encoding="utf-8", newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


def encode(wav: Path, fmt: str, out_dir: Path) -> Path:
    x, rate = sf.read(wav, dtype="float32")
    out = out_dir / f"{wav.stem}.{fmt}"
    if fmt == "wav":
        return wav
    if fmt in ("flac", "mp3"):
        sf.write(out, x, rate, format=fmt.upper())
    elif fmt == "ogg":
        sf.write(out, x, rate, format="OGG", subtype="VORBIS")
    elif fmt == "m4a":
        pyav_encode(out, x[None], rate, "mp4", "aac", 44100)
    elif fmt == "webm":
        pyav_encode(out, x[None], rate, "webm", "libopus", 48000)
    return out


def transcribe(c: Container, path: Path, headers: dict | None = None, **data):
    with open(path, "rb") as f:
        return requests.post(c.url + "/v1/audio/transcriptions", headers=headers or {},
                             files={"file": (path.name, f)}, data=data, timeout=120)


def mapped_kernels(pid: int) -> set[str]:
    """The kernel libraries the process has loaded, as paths inside its container (the host
    sees them under the container's root, which chroot isolation makes the process's root)."""
    root = os.readlink(f"/proc/{pid}/root").rstrip("/")
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {line.split()[-1].removeprefix(root) for line in maps.splitlines()
            if "funasr_nano_kernels" in line}


# ----------------------------------------------------------------------------------------------

def test_configuration(image):
    cfg = image_config(image)
    assert cfg["User"].split(":")[0] == "1000"
    assert "7860/tcp" in cfg["ExposedPorts"]
    assert set(cfg["Volumes"]) == {"/models", "/cache"}
    assert cfg["Entrypoint"] == ["/app/scripts/docker-entrypoint.sh"]
    hc = cfg.get("Healthcheck")     # kept only by a Docker-format build (buildah --format docker)
    assert hc and hc["Test"][0] == "CMD" and "/health" in " ".join(hc["Test"])
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["GRADIO_SERVER_NAME"] == "0.0.0.0" and env["GRADIO_SERVER_PORT"] == "7860"
    assert env["FUNASR_NANO_KERNEL_CACHE"] == "/opt/kernels"


def test_every_format_through_the_api(demo, tmp_path):
    health = get_json(demo.url + "/health")
    assert health["status"] == "ok" and health["demo"] is True, health
    rows = examples()
    for fmt, clip in FORMATS.items():
        path = encode(ROOT / "example" / clip, fmt, tmp_path)
        r = transcribe(demo, path, language=rows[clip]["language"])
        assert r.status_code == 200, (fmt, r.text)
        text = r.json()["text"]
        errors, n = cer_counts(rows[clip]["text_itn"], text, rows[clip]["language"])
        assert errors / n <= MAX_CER, (fmt, rows[clip]["text_itn"], text)
    health = get_json(demo.url + "/health")
    assert health["model_loaded"] is True and health["load_error"] is None, health


def test_runs_as_uid_1000(demo):
    pid = demo.app_pid()
    assert pid, demo.log()
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == ["1000"] * 4, uids        # real, effective, saved, filesystem
    assert demo.run("id", "-u").stdout.strip() == "1000"


def test_kernels_load_from_the_read_only_cache(demo, tmp_path):
    # The app, after a transcription, has the kernel library from the image's cache mapped.
    r = transcribe(demo, ROOT / "example" / "en.wav", language="en")
    assert r.status_code == 200, r.text
    libs = mapped_kernels(demo.app_pid())
    assert libs and all(p.startswith("/opt/kernels/") for p in libs), (libs, demo.log())
    kernels = get_json(demo.url + "/health")["kernels"]
    assert kernels["state"] == "ready" and kernels["in_use"] is True, kernels
    assert "avx2" in kernels["paths"], kernels
    # The app's user cannot write there, and nothing was built at run time: the library is the
    # one the image build made (build.py imports a built cache without a write or a lock).
    assert demo.run("sh", "-c", "test -w /opt/kernels").returncode != 0
    out = demo.run("python", "-m", "engine.kernels")
    assert out.returncode == 0 and "ready" in out.stdout and "/opt/kernels/" in out.stdout, out
    listing = demo.run("sh", "-c", "ls /opt/kernels/*/").stdout.split()
    assert listing == ["funasr_nano_kernels.so"], listing


def test_healthcheck_command(demo):
    ok = demo.healthcheck()
    assert ok.returncode == 0, ok.stderr
    # The same command against a port nobody serves fails, as Docker's "unhealthy" needs.
    down = demo.run(*demo.config["Healthcheck"]["Test"][1:],
                    env={"GRADIO_SERVER_PORT": str(free_port())}, timeout=30)
    assert down.returncode != 0


def test_mounted_model_and_api_key(mounted, engine):
    health = requests.get(mounted.url + "/health", timeout=10).json()   # open without the key
    assert health["model"] == "/models" and health["demo"] is False, health
    wav = ROOT / "example" / "en.wav"
    assert transcribe(mounted, wav).status_code == 401
    assert transcribe(mounted, wav, {"Authorization": "Bearer wrong"}).status_code == 401
    assert requests.get(mounted.url + "/v1/models", timeout=10).status_code == 401
    r = transcribe(mounted, wav, {"Authorization": f"Bearer {KEY}"}, language="en")
    assert r.status_code == 200, r.text
    # the mounted random-weight model, not the demo: the same text as the engine here gives
    assert r.json()["text"] == expected_text(engine, wav, "en")
    health = get_json(mounted.url + "/health")
    assert health["model_loaded"] is True and health["load_error"] is None, health
    # /models is a read-only mount; /cache is writable by the app's user
    mounts = mounted.run("cat", "/proc/self/mountinfo").stdout.splitlines()
    [models] = [m.split() for m in mounts if m.split()[4] == "/models"]
    assert "ro" in models[5].split(","), models
    assert mounted.run("sh", "-c", "test -w /cache").returncode == 0


def test_compose_file_matches_the_image(image, mounted):
    cfg = image_config(image)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    cpu, gpu = compose["services"]["asr-cpu"], compose["services"]["asr-gpu"]
    assert cpu["build"]["args"]["TORCH"] == "cpu" and gpu["build"]["args"]["TORCH"] == "cu130"
    for svc in (cpu, gpu):
        assert svc["restart"] == "unless-stopped"
        assert svc["healthcheck"]["test"] == cfg["Healthcheck"]["Test"]
        assert any(v.endswith(":/models:ro") for v in svc["volumes"])
        assert any(v.split(":")[0] in compose["volumes"] and v.split(":")[1] == "/cache"
                   for v in svc["volumes"])
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    # the cpu service's healthcheck, run in its container, passes
    ok = mounted.run(*mounted.compose["healthcheck"]["test"][1:], timeout=30)
    assert ok.returncode == 0, ok.stderr
