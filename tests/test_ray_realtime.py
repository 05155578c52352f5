"""/v1/realtime on Ray Serve: test_realtime.py's transcription tests, collected here a second
time with an ``app`` that is ``python -m serving.ray_serve`` (the demo model, whose texts mean
something, on the local Ray cluster): the WebSocket goes through Serve's proxy to the ingress,
and each live decode goes to a Transcriber replica."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_realtime  # noqa: E402
from test_realtime import AUTH, KEY, offline_text  # noqa: E402
from bench._live_audio import DEMO_MODEL, recording  # noqa: E402

from tests._ray_cluster import ServeProcess, serve_port_fixture  # noqa: E402

REALTIME_CONTRACT = ("test_two_utterances_at_24khz_equal_the_offline_api",
                     "test_openai_realtime_client_transcribes",
                     "test_manual_commit_at_16khz_with_the_older_session_event",
                     "test_auth_is_required_like_the_rest_of_v1")
for _name in REALTIME_CONTRACT:
    globals()[_name] = getattr(test_realtime, _name)

serve_port = pytest.fixture(scope="module")(serve_port_fixture)


@pytest.fixture(scope="module")
def app(ray_cluster, serve_port, tmp_path_factory):
    server = ServeProcess(ray_cluster, serve_port, tmp_path_factory.mktemp("live") / "live.log",
                          "--model", str(DEMO_MODEL), "--replicas", "1", "--num-cpus", "1",
                          "--max-new-tokens", "64", "--live-sessions", "2",
                          "--api-key", KEY, "--auth", AUTH)
    try:
        server.wait_ready(replicas=1)
        offline_text(server, recording(("sv.wav",), rate=16000), 16000)   # warm, as there
        yield server
    finally:
        server.stop()
