"""A local Ray cluster for the tests: one head node with 2 CPUs and a small object store,
started once per test session and stopped with it.

``ray start --head --block`` runs in the foreground as our child, in its own temp dir and on
free ports, so it never meets another cluster on this machine; ending that one process (SIGTERM)
stops every process of the cluster (``ray stop`` would stop everyone's clusters here).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUM_CPUS = 2
OBJECT_STORE_BYTES = 300 * 1024 * 1024
# Every Ray process on the loopback address only (Ray's single-machine mode; otherwise it picks
# the host's network address even with --node-ip-address=127.0.0.1), no usage reports, and no
# token authentication (that mode turns it on, with a token the test processes do not share;
# nothing outside this machine can reach 127.0.0.1).
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    from tests._app_server import free_port
    return free_port()


class LocalRayCluster:
    def __init__(self, num_cpus: int = NUM_CPUS, object_store_bytes: int = OBJECT_STORE_BYTES):
        # AF_UNIX socket paths are limited to ~107 bytes: a short temp dir.
        self.temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        ray_bin = str(Path(sys.executable).with_name("ray"))
        cmd = [ray_bin, "start", "--head", "--block", "--disable-usage-stats",
               "--node-ip-address=127.0.0.1", f"--port={self.port}",
               f"--num-cpus={num_cpus}", "--num-gpus=0",
               f"--object-store-memory={object_store_bytes}", "--include-dashboard=false",
               f"--temp-dir={self.temp_dir}",
               f"--ray-client-server-port={_free_port()}",
               f"--dashboard-agent-listen-port={_free_port()}",
               f"--dashboard-agent-grpc-port={_free_port()}",
               f"--runtime-env-agent-port={_free_port()}",
               f"--metrics-export-port={_free_port()}", f"--dashboard-port={_free_port()}",
               f"--node-manager-port={_free_port()}", f"--object-manager-port={_free_port()}"]
        self.log_path = Path(self.temp_dir) / "head.log"
        self._log = open(self.log_path, "wb")
        env = {k: v for k, v in self.env().items() if k != "RAY_ADDRESS"}
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self._wait_ready()

    def env(self) -> dict:
        """The environment for a subprocess that should join this cluster."""
        return {**os.environ, **LOOPBACK_ENV, "RAY_ADDRESS": self.address,
                # Workers import the repository's modules.
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                             os.environ.get("PYTHONPATH")]))}

    def _wait_ready(self, timeout: float = 90.0) -> None:
        import socket
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}:\n{self.log()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0 and "--block" in self.log():
                    return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the Ray head did not start in {timeout:g} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        # SIGTERM to `ray start --block` stops the node's processes; else the whole group.
        terminate(self.proc, kill=lambda: os.killpg(self.proc.pid, signal.SIGKILL))
        self._log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def terminate(proc: subprocess.Popen, grace_s: float = 60.0, kill=None) -> None:
    """SIGTERM, then (after ``grace_s``) ``kill()`` or SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        (kill or proc.kill)()
        proc.wait(10)


class ServeProcess:
    """``python -m serving.ray_serve ...`` joined to the test cluster; ``stop()`` (SIGTERM)
    removes its application from the cluster."""

    def __init__(self, cluster, port: int, log_path: Path, *args: str, prefix: str = "/"):
        self.url = f"http://127.0.0.1:{port}{prefix.rstrip('/')}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        env = {k: v for k, v in cluster.env().items() if not k.startswith("FUNASR_NANO_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving.ray_serve", "--host", "127.0.0.1", "--port", str(port),
             "--route-prefix", prefix, *args],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, replicas: int, timeout: float = 240.0) -> "ServeProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serving.ray_serve exited with {self.proc.returncode}:\n"
                                   f"{self.log()}")
            try:
                from tests._app_server import get_json
                health = get_json(self.url + "/health", timeout=5)
                if health.get("replicas") == replicas and health["model_loaded"]:
                    return self
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the Ray Serve app was not ready after {timeout:g} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        terminate(self.proc)       # SIGTERM: the application leaves the cluster
        self._log.close()


def serve_port_fixture(ray_cluster):
    """One Serve HTTP proxy for a test module's applications; Serve leaves the cluster after."""
    from ray import serve
    yield _free_port()
    serve.shutdown()
