"""The image as a container: the built image's configuration and containers of it run with
buildah, the way the image's own configuration says to run them (tests/test_image.py and
bench/container_speed.py).

buildah's chroot isolation shares the host's network, so a container's port is set through
GRADIO_SERVER_PORT (as `docker run -p` would map it) and bound to 127.0.0.1 only.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import uuid
from pathlib import Path

from bench._common import free_port, get_json


def buildah(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["buildah", *args], capture_output=True, text=True, check=check,
                          timeout=timeout)


def image_config(image: str) -> dict:
    """The image's Docker-format configuration (User, Env, Healthcheck, Entrypoint, ...)."""
    out = buildah("inspect", "--type", "image", image).stdout
    return json.loads(out)["Docker"]["config"]


class Container:
    """One container of the image: ``start()`` runs its ENTRYPOINT + CMD (or the given
    arguments in CMD's place) with a free port; ``run()`` runs another command in it, as
    ``docker exec`` would; ``stop()`` ends the app and removes the container."""

    def __init__(self, image: str, log_path: Path, env: dict | None = None,
                 volumes: tuple[str, ...] = ()):
        self.image, self.log_path = image, log_path
        self.name = f"funasr-test-{uuid.uuid4().hex[:12]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"GRADIO_SERVER_PORT": str(self.port), "GRADIO_SERVER_NAME": "127.0.0.1",
                    "FUNASR_NANO_OFFLINE": "1",
                    # marks the app's process, found by it in /proc (see app_pid)
                    "FUNASR_NANO_TEST_CONTAINER": self.name, **(env or {})}
        self.volumes = volumes
        self.config = image_config(image)
        self.proc = None
        buildah("from", "--pull=never", "--name", self.name, image)

    def _opts(self, env: dict) -> list[str]:
        opts = []
        for k, v in env.items():
            opts += ["--env", f"{k}={v}"]
        for v in self.volumes:
            opts += ["-v", v]
        return opts

    def start(self, args: list[str] | None = None, timeout: float = 180) -> "Container":
        cmd = [*self.config["Entrypoint"],
               *((self.config.get("Cmd") or []) if args is None else args)]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["buildah", "run", *self._opts(self.env), self.name, "--",
                                      *cmd], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the container exited with {self.proc.returncode}:\n{self.log()}")
            try:
                get_json(self.url + "/health", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        raise RuntimeError(f"the container did not answer /health in {timeout} s:\n{self.log()}")

    def run(self, *cmd: str, env: dict | None = None, timeout: float = 120):
        """Another process in this container (its user, working directory and environment)."""
        return subprocess.run(["buildah", "run", *self._opts({**self.env, **(env or {})}),
                               self.name, "--", *cmd], capture_output=True, text=True,
                              timeout=timeout)

    def healthcheck(self) -> subprocess.CompletedProcess:
        """The image's own HEALTHCHECK command, run in the container as Docker would."""
        test = self.config["Healthcheck"]["Test"]
        assert test[0] == "CMD", test
        return self.run(*test[1:], timeout=30)

    def app_pid(self) -> int | None:
        """The app's process on this machine (chroot isolation: no PID namespace)."""
        marker = f"FUNASR_NANO_TEST_CONTAINER={self.name}".encode()
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if (marker in (d / "environ").read_bytes().split(b"\0")
                        and b"app.py" in (d / "cmdline").read_bytes()):
                    return int(d.name)
            except OSError:
                continue
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc is not None:
            pid = self.app_pid()
            if pid:
                os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pid = self.app_pid()
                if pid:
                    os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait(10)
            self._log.close()
            self.proc = None
        buildah("rm", self.name, check=False)
