"""What every benchmark needs, in one place: the machine it ran on, the app as a process on a free
port, the shared speech data, and the character error rate.

Standard library only at import time (bench/gpu_check.py runs on a bare GPU machine); torch and
the project's modules are imported where they are used. The bench scripts import it, and the
project's modules, as packages (``from bench._common import ...``), which works once the checkout
is installed (``pip install -e .``, pyproject.toml) or is on PYTHONPATH (bench/gpu_check.sh).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

# ------------------------------------------------------------------------------ the machine
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "avx_vnni")


def machine_info(device: str = "cpu") -> dict:
    """Host, CPU (name and the flags our kernels care about), cores, RAM, Python, torch, the GPU
    on a CUDA device, and the reference's versions where installed."""
    info = {"host": socket.gethostname(), "platform": platform.platform(),
            "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")]
        flags = next((ln for ln in cpuinfo if ln.startswith("flags")), "")
        info["cpu"] = names[0] if names else platform.processor()
        info["cpu_flags"] = [f for f in CPU_FLAGS if f" {f}" in flags]
    except OSError:
        info["cpu"] = platform.processor()
    try:
        mem = next(ln for ln in open("/proc/meminfo") if ln.startswith("MemTotal"))
        info["ram_gib"] = round(int(mem.split()[1]) / 1024 ** 2, 1)
    except (OSError, StopIteration):
        pass
    try:
        import torch
        info["torch"] = torch.__version__
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a machine without torch still gets its table
        pass
    from importlib.metadata import PackageNotFoundError, version
    for pkg in ("funasr", "transformers"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return info


def machine_line(m: dict) -> str:
    """A report's machine sentence from ``machine_info``'s answer: host, CPU, cores, RAM,
    platform (what is known)."""
    parts = [f"{m.get('cpu', '?')}", f"{m.get('cpu_count')} cores"]
    if m.get("ram_gib"):
        parts.append(f"{m['ram_gib']} GiB")
    if m.get("platform"):
        parts.append(m["platform"])
    return f"Machine: {m.get('host', '?')}: " + ", ".join(parts)


def markdown_table(header: list[str], rows: list[list], align: str = "") -> list[str]:
    """A Markdown table's lines: ``header``, then ``rows`` (cells as given, str()'d);
    ``align``: one letter a column, ``l`` or ``r`` (default: the first left, the rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(line) + " |" for line in
            [header, rule, *([str(c) for c in row] for row in rows)]]


def safe_host() -> str:
    """This machine's name as a results file name takes it."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", socket.gethostname()) or "host"


def write_results(stem: Path, text: str, data: dict) -> Path:
    """A run's results: ``STEM.md`` (the report, ``text``) and ``STEM.json`` (``data``), the
    folder made where missing; says where they went. ``stem`` comes back."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.md").write_text(text.rstrip("\n") + "\n")
    Path(f"{stem}.json").write_text(json.dumps(data, indent=1, ensure_ascii=False, default=str)
                                    + "\n")
    print(f"wrote {stem}.md and .json", flush=True)
    return stem


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ------------------------------------------------------------------------------ speech data
from engine import SAMPLE_RATE as SR  # noqa: E402  (engine/__init__.py: no dependency)
FIRST_CLIP = "lhotse_librispeech_2412-153948-0000.flac"   # 36.9 s; the benchmarks' first window
SPEECH_DIR_CANDIDATES = (REPO.parent / "shared/data/speech", Path("/work/shared/data/speech"))


def find_speech_dir(need: str = f"en/{FIRST_CLIP}") -> Path | None:
    """The shared speech clips (``$SPEECH_DATA``, else ../shared/data/speech) holding ``need``;
    None when there are none."""
    env = os.environ.get("SPEECH_DATA")
    for cand in ([Path(env)] if env else []) + list(SPEECH_DIR_CANDIDATES):
        if (cand / need).is_file():
            return cand
    return None


def speech_dir(need: str = f"en/{FIRST_CLIP}") -> Path:
    """As ``find_speech_dir``, or exit saying what is missing."""
    found = find_speech_dir(need)
    if found is None:
        raise SystemExit(f"speech data not found: need {need} under ../shared/data/speech "
                         "or $SPEECH_DATA")
    return found


def parse_case(case: str) -> tuple[int, float]:
    """``"8x10s"`` -> (8, 10.0): N windows of S seconds."""
    m = re.fullmatch(r"(\d+)x(\d+(?:\.\d+)?)s", case.strip())
    if not m or int(m.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"bad case {case!r}: expected NxSs, e.g. 8x10s")
    return int(m.group(1)), float(m.group(2))


def build_inputs(cases: list[str]) -> tuple[dict, dict]:
    """{case: [float32 arrays]} and a description, from the English clips concatenated
    (``FIRST_CLIP`` first): ``NxSs`` is N windows of S seconds spread evenly over them."""
    import numpy as np

    from engine.audio import load_audio

    en = speech_dir() / "en"
    files = [en / FIRST_CLIP] + sorted(p for p in en.iterdir()
                                       if p.is_file() and p.name != FIRST_CLIP
                                       and p.suffix.lower() in (".wav", ".flac", ".mp3", ".ogg"))
    concat = np.concatenate([load_audio(str(p), SR) for p in files]).astype(np.float32)
    total = len(concat)
    out, desc = {}, {"source": [p.name for p in files], "concat_seconds": round(total / SR, 2)}
    for case in cases:
        n, seconds = parse_case(case)
        length = int(round(seconds * SR))
        if length > total:
            raise SystemExit(f"case {case}: the English clips only have {total / SR:.1f} s")
        starts = [0] if n == 1 else [round(i * (total - length) / (n - 1)) for i in range(n)]
        out[case] = [concat[s:s + length].copy() for s in starts]
        desc[case] = {"clips": n, "seconds": seconds, "offsets_s": [round(s / SR, 2)
                                                                   for s in starts]}
    return out, desc


# ------------------------------------------------------------------------------ numbers and text
def median(xs):
    """The median of the numbers given, None and NaN left out; None when none is left."""
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else None


def edit_distance(a: str, b: str) -> int:
    """Character edit distance (Levenshtein), in pure Python (no dependency on a GPU machine)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def cer(refs: list[str], hyps: list[str]) -> float:
    """Character error rate of ``hyps`` against ``refs``: edits over reference characters."""
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / max(1, sum(map(len, refs)))


# ------------------------------------------------------------------------------ audio files
def pyav_encode(path, audio, rate: int, fmt: str | None, codec: str, codec_rate: int | None = None):
    """Encodes float audio with PyAV's bundled FFmpeg (no ffmpeg CLI) and returns ``path``.
    ``audio``: a (channels, samples) array, or an iterable of them (a long recording written
    block by block, never whole in memory); ``fmt`` None: the container from the file name;
    ``codec_rate``: the codec's own rate where it differs (Opus: 48 kHz)."""
    import av
    import numpy as np

    blocks = [audio] if hasattr(audio, "shape") else audio
    with av.open(str(path), "w", format=fmt) as out:
        stream = None
        for block in blocks:
            block = np.ascontiguousarray(block, np.float32)
            layout = "mono" if block.shape[0] == 1 else "stereo"
            if stream is None:
                stream = out.add_stream(codec, rate=codec_rate or rate, layout=layout)
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate = rate
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode(None):
            out.mux(pkt)
    return path


# ------------------------------------------------------------------------------ the app
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class AppProcess:
    """``python app.py ARGS`` on a free port of 127.0.0.1, its output in ``log_path``.

    The flags given decide: ``FUNASR_NANO_*`` and ``GRADIO_SERVER_*`` from the caller's
    environment do not leak in; ``env`` adds variables. ``python`` and ``checkout`` run another
    interpreter or checkout (bench/first_request.py)."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None,
                 python: str | os.PathLike = sys.executable, checkout: Path = REPO):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("FUNASR_NANO_", "GRADIO_SERVER_"))}
        full_env.update({"GRADIO_ANALYTICS_ENABLED": "False", "FUNASR_NANO_OFFLINE": "1",
                         **(env or {})})
        self._log = open(self.log_path, "wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([str(python), str(Path(checkout) / "app.py"), "--host",
                                      "127.0.0.1", "--port", str(self.port), *args],
                                     cwd=checkout, env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.load_seconds = None

    def health(self, timeout: float = 10.0) -> dict | None:
        """/health, or None while the port does not answer."""
        try:
            return get_json(self.url + "/health", timeout)
        except (urllib.error.URLError, ConnectionError, OSError):
            return None

    def _exited(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {self.proc.returncode}:\n{self.log()}")

    def wait_ready(self, timeout: float = 300.0, poll: float = 0.2) -> dict:
        """Until /health answers; its answer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._exited()
            h = self.health(2)
            if h is not None:
                return h
            time.sleep(poll)
        raise RuntimeError(f"app.py not ready after {timeout} s:\n{self.log()}")

    def wait_loaded(self, timeout: float = 900.0, on_kernels: bool = True) -> dict:
        """Until /health says the model is loaded (and, with ``on_kernels``, moved onto the CPU
        kernels unless they failed or are off: not the plain path while they compile)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._exited()
            h = self.health(2)
            if h is not None:
                if h.get("load_error"):
                    raise RuntimeError(h["load_error"])
                k = h.get("kernels") or {}
                ready = (not on_kernels or k.get("in_use") is not False
                         or k.get("state") in ("failed", "disabled"))
                if h.get("model_loaded") and ready:
                    self.load_seconds = h.get("load_seconds")
                    return h
            time.sleep(0.5)
        raise RuntimeError(f"model not loaded after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, graceful: bool = True) -> None:
        """SIGTERM and a wait (``graceful``), else SIGKILL at once (a long file may still be
        decoding and is not waited for)."""
        if self.proc.poll() is None:
            if graceful:
                self.proc.terminate()
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            else:
                self.proc.kill()
            self.proc.wait(30)
        self._log.close()
