"""Which CPU kernels this process runs, and where their build stands.

States (``state()``, what /health and the page show):

* ``not_built``: nothing in the cache for this environment yet, no build started;
* ``compiling``: a build is running (``seconds`` so far);
* ``ready``: loaded; ``paths`` says which code paths this CPU takes (avx2, avx512, vnni);
* ``failed``: the build failed (``reason``; the log has the compiler's messages); the engine
  runs plain PyTorch;
* ``disabled``: not wanted here (``FUNASR_NANO_NO_KERNELS=1``, a CPU without AVX2).

Two ways to get them. ``kernels()`` returns the module, building it first in this process when
the cache has none (the CLI, tests, ``python -m engine.kernels``). ``start_background_build()``
(the server) compiles in a child process at low priority instead; meanwhile ``kernels()``
returns None, so a model loaded then takes the plain PyTorch path and nothing waits for the
compiler. Listeners hear when the build ends, so the server can switch its model over.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from . import build as _build

log = logging.getLogger("funasr_nano")

NOT_BUILT, COMPILING, READY, FAILED, DISABLED = (
    "not_built", "compiling", "ready", "failed", "disabled")
PROGRESS_EVERY_S = 15.0     # a log line while compiling
BUILD_TIMEOUT_S = 900.0     # a compiler that hangs is given up on
ROOT = Path(__file__).resolve().parents[2]

_lock = threading.Lock()
_state = {"state": NOT_BUILT, "reason": None, "detail": None, "seconds": None,
          "started": None, "background": False}
_module = None
_listeners: list = []
_thread: threading.Thread | None = None


def disabled_reason() -> str | None:
    if os.environ.get("FUNASR_NANO_NO_KERNELS") == "1":
        return "turned off (FUNASR_NANO_NO_KERNELS=1)"
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return "this CPU has no AVX2"
    return None


def paths(module=None) -> list[str]:
    """The kernel paths this CPU takes with ``module`` (default: the loaded one)."""
    module = _module if module is None else module
    if module is None:
        return []
    out = ["avx2"]
    if os.environ.get("FUNASR_NANO_NO_AVX512") != "1" and module.has_avx512():
        out.append("avx512")
        if module.has_vnni():
            out.append("vnni")
        if module.has_avx512bf16():   # bf16 mode's prefill products (gemm_bf16dot)
            out.append("bf16")
    return out


def state() -> dict:
    """{"state", "paths" ("avx2+avx512+vnni+bf16" or "none"), "reason", "seconds"}; never blocks.
    Before first use it looks for a finished build in the cache (and loads it)."""
    if _state["state"] == NOT_BUILT and _lock.acquire(blocking=False):
        try:
            if _state["state"] == NOT_BUILT:
                _from_cache()
        finally:
            _lock.release()
    s = dict(_state)
    seconds = s["seconds"]
    if s["state"] == COMPILING and s["started"] is not None:
        seconds = time.monotonic() - s["started"]
    return {"state": s["state"], "paths": "+".join(paths()) or "none", "reason": s["reason"],
            "seconds": None if seconds is None else round(seconds, 1)}


def detail() -> str | None:
    """What the compiler said when the build failed (for logs, never for HTTP answers)."""
    return _state["detail"]


def _set(name: str, **kw) -> None:
    _state.update({"reason": None, "detail": None, "seconds": None, "started": None}, **kw,
                  state=name)


def _from_cache() -> bool:
    """Resolve without compiling when possible (caller holds the lock): disabled, or a finished
    build in the cache. False when a build is needed."""
    global _module
    reason = disabled_reason()
    if reason:
        _set(DISABLED, reason=reason)
        log.info("CPU kernels %s: the engine runs plain PyTorch", reason)
        return True
    lib = _build.built_library()
    if lib is None:
        return False
    try:
        _module = _build.import_library(lib)
    except Exception as e:  # noqa: BLE001 - a broken file: say so, run without
        _set(FAILED, reason="the built kernels could not be loaded", detail=str(e))
        log.warning("CPU kernels in %s could not be loaded (%s): the engine runs plain PyTorch",
                    lib.parent, e)
        return True
    _set(READY, seconds=0.0)
    log.debug("CPU kernels loaded from %s (%s)", lib.parent, "+".join(paths()))
    return True


def _finish(module, seconds: float, error: _build.BuildError | None = None) -> None:
    global _module
    if error is None:
        _module = module
        _set(READY, seconds=round(seconds, 1))
        log.info("CPU kernels ready after %.0f s (%s), cached in %s", seconds, "+".join(paths()),
                 _build.build_dir())
    else:
        _set(FAILED, reason=error.reason, detail=error.detail, seconds=round(seconds, 1))
        log.warning("CPU kernels could not be built after %.0f s: %s%s\nThe engine runs the plain "
                    "PyTorch path (slower decoding).", seconds, error.reason,
                    f"\n{error.detail}" if error.detail else "")
    for fn in list(_listeners):
        try:
            fn(state())
        except Exception:  # noqa: BLE001 - a listener must not break the build's bookkeeping
            log.exception("kernel state listener failed")


def kernels():
    """The compiled extension, or None (disabled, failed, or being built in the background).
    Without a background build, the first call builds it here when the cache has none."""
    s = _state["state"]
    if s == READY:
        return _module
    if s in (FAILED, DISABLED) or (s == COMPILING and _state["background"]):
        return None
    with _lock:  # not built, or being built by another thread of this process: wait for it
        if _state["state"] != NOT_BUILT or _from_cache():
            return _module
        _set(COMPILING, started=time.monotonic())
        log.info("compiling CPU kernels (once) into %s: about a minute", _build.build_dir())
        t0 = time.perf_counter()
        try:
            module, _ = _build.build()
        except _build.BuildError as e:
            _finish(None, time.perf_counter() - t0, e)
        else:
            _finish(module, time.perf_counter() - t0)
    return _module


def avx512_kernels(need_vnni: bool = False, module=False, need_bf16: bool = False):
    """``module`` (default: ``kernels()``) when this CPU has AVX-512 (and VNNI, AVX512_BF16, if
    asked), else None. FUNASR_NANO_NO_AVX512=1 turns those paths off (A/B runs, tests of the
    fallbacks)."""
    k = kernels() if module is False else module
    if k is None:
        return None
    have = paths(k)
    return k if "avx512" in have and (not need_vnni or "vnni" in have) \
        and (not need_bf16 or "bf16" in have) else None


def add_listener(fn) -> None:
    """``fn(state())`` is called (from the build's thread) when a build ends, ready or failed."""
    _listeners.append(fn)


def start_background_build() -> dict:
    """Compile in a child process at low priority, unless the kernels are disabled or already
    built; returns ``state()`` at once."""
    global _thread
    with _lock:
        if _state["state"] == NOT_BUILT and not _from_cache():
            _set(COMPILING, started=time.monotonic(), background=True)
            _thread = threading.Thread(target=_build_in_child, name="kernel-build", daemon=True)
            _thread.start()
    return state()


def wait(timeout: float | None = None):
    """Wait for a background build to end; the module or None."""
    if _thread is not None:
        _thread.join(timeout)
    return kernels()


def _build_in_child() -> None:
    """``python -m engine.kernels --json`` under ``nice``: the compiler never takes the CPU
    from requests, a crash or a hang in it cannot take the server down, and the build is
    published to the cache like any other. Its last stdout line says how it went."""
    log.info("compiling CPU kernels (once) in the background, about a minute; until they are "
             "ready the model runs the plain PyTorch path")
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "engine.kernels", "--json"]
    if shutil.which("nice"):
        cmd = ["nice", "-n", "10", *cmd]
    error = None
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        except OSError as e:
            error = _build.BuildError("the kernel build could not start", str(e))
        else:
            atexit.register(_stop_child, proc)
            while True:
                try:
                    proc.wait(PROGRESS_EVERY_S)
                    break
                except subprocess.TimeoutExpired:
                    elapsed = time.perf_counter() - t0
                    if elapsed > BUILD_TIMEOUT_S:
                        _stop_child(proc)
                        error = _build.BuildError(f"the kernel build took over "
                                                  f"{BUILD_TIMEOUT_S:.0f} s and was stopped")
                        break
                    log.info("compiling CPU kernels (once): %.0f s so far", elapsed)
            if error is None:
                out.seek(0)
                err.seek(0)
                error = _child_error(proc.returncode, out.read(), err.read())
    module = None
    if error is None:
        lib = _build.built_library()
        try:
            module = _build.import_library(lib) if lib else None
            if module is None:
                error = _build.BuildError("the kernel build left no library in the cache")
        except Exception as e:  # noqa: BLE001
            error = _build.BuildError("the built kernels could not be loaded", str(e))
    with _lock:
        _finish(module, time.perf_counter() - t0, error)


def _child_error(returncode: int, stdout: str, stderr: str) -> _build.BuildError | None:
    report = {}
    for line in reversed(stdout.splitlines()):
        try:
            report = json.loads(line)
            break
        except ValueError:
            continue
    if returncode == 0 and report.get("state") == READY:
        return None
    if report.get("reason"):
        return _build.BuildError(report["reason"], report.get("detail") or "")
    tail = "\n".join(stderr.strip().splitlines()[-12:])
    return _build.BuildError(f"the kernel build exited with status {returncode}", tail)


def _stop_child(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the compiler processes too
            proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired, PermissionError):
            pass
