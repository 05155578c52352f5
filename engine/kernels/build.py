"""Build the CPU kernels (csrc/*.cpp) once per environment, and find a finished build.

The extension is compiled with torch's cpp_extension into a directory whose name is a key over
everything the binary depends on: the sources, the compiler flags, the torch version and the
Python interpreter (and its environment, symlinks resolved). Two virtual environments or two
torch versions therefore never rebuild each other's copy, and a second process finds the first
one's build ready. The build machine's CPU is deliberately not in the key: the flags are fixed
(-mavx2 -mfma) and the AVX-512 functions carry their own target attributes behind a run-time
check, so the binary is the same on every CPU that can run it. A container image built on one
CPU thus finds its read-only cache on another, and machines sharing a home directory share one
build.

Where it lives: ``$FUNASR_NANO_KERNEL_CACHE``, else ``$FUNASR_NANO_CACHE/kernels``, else
``~/.cache/funasr-nano/kernels``. Which process builds, and when, is engine.kernels.loader's
business; this module only compiles and imports.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = ("avx2.cpp", "avx512.cpp", "prefill_attention.cpp", "bindings.cpp")
HEADERS = ("bf16_outer.h", "common.h", "kernels.h")
CFLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp")
LDFLAGS = ("-fopenmp",)
NAME = "funasr_nano_kernels"
LIBRARY = f"{NAME}.so"


class BuildError(RuntimeError):
    """``reason``: one short sentence for users and /health (no paths, no compiler output);
    ``detail``: what the compiler or the file system said, for the log."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def cache_root() -> Path:
    if os.environ.get("FUNASR_NANO_KERNEL_CACHE"):
        return Path(os.environ["FUNASR_NANO_KERNEL_CACHE"])
    base = os.environ.get("FUNASR_NANO_CACHE") or Path.home() / ".cache" / "funasr-nano"
    return Path(base) / "kernels"


def build_key() -> str:
    """A short hash of the sources, flags, torch and the Python environment. The environment is
    sys.prefix with symlinks resolved: worktrees that link one virtualenv share one build."""
    h = hashlib.sha256()
    for name in (*SOURCES, *HEADERS):
        h.update(name.encode() + b"\0" + (CSRC / name).read_bytes())
    prefix = os.path.realpath(sys.prefix)
    for part in (CFLAGS, LDFLAGS, torch.__version__, sys.version, prefix):
        h.update(repr(part).encode() + b"\0")
    return h.hexdigest()[:16]


def build_dir() -> Path:
    return cache_root() / f"{NAME}-{build_key()}"


def built_library() -> Path | None:
    """The finished library of this environment's key, if some process has published it."""
    path = build_dir() / LIBRARY
    return path if path.is_file() else None


def import_library(path: Path):
    """Import a built extension from its file: no lock, no write, so a read-only cache (a
    container's) works."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.ExtensionFileLoader(NAME, str(path))
    spec = importlib.util.spec_from_file_location(NAME, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _find_tools() -> None:
    """cpp_extension runs ``ninja`` and ``$CXX`` (default c++) from PATH. The ninja wheel
    (requirements.txt) puts its binary next to the interpreter, which is not on PATH when the
    virtualenv is not activated (``.venv/bin/python app.py``, the service script)."""
    path = os.environ.get("PATH", "")
    extra = [os.path.dirname(sys.executable)]
    try:
        import ninja
        extra.insert(0, ninja.BIN_DIR)
    except (ImportError, AttributeError):
        pass
    missing = [d for d in extra if d not in path.split(os.pathsep)]
    if missing:
        os.environ["PATH"] = os.pathsep.join([*missing, path] if path else missing)
    if shutil.which("ninja") is None:
        raise BuildError("ninja is missing (pip install ninja)")
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx.split()[0]) is None:
        raise BuildError("no C++ compiler (install g++, or set CXX)", f"{cxx} not found")
    # cpp_extension asks the compiler its version first and reports a failure there without
    # the compiler's own words: ask it here, keeping them
    import subprocess
    try:
        probe = subprocess.run([*cxx.split(), "--version"], capture_output=True, text=True,
                               timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BuildError("the C++ compiler failed (the log has its messages)", str(e)) from e
    if probe.returncode != 0:
        raise BuildError("the C++ compiler failed (the log has its messages)",
                         f"{cxx} --version: exit status {probe.returncode}\n"
                         + (probe.stderr or probe.stdout).strip())


def _remove_stale_scratch(root: Path) -> None:
    """Scratch directories of builds whose process died (killed mid-build)."""
    for d in root.glob(f"{NAME}-*.tmp*"):
        try:
            pid = int(d.name.rsplit(".tmp", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            pass


def _compiler_detail(text: str) -> str:
    """The lines of cpp_extension's message that say why (compiler errors), not the command
    lines."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() and not ln.startswith(("[", "FAILED"))]
    return "\n".join((errors or lines)[-12:])


def build(directory: Path | None = None) -> tuple[object, float]:
    """Compile into a scratch directory next to ``directory`` and rename it into place once the
    library is complete, so that another process never imports a half-written file. Returns
    (module, seconds); raises BuildError."""
    from torch.utils.cpp_extension import load

    t0 = time.perf_counter()
    directory = directory or build_dir()
    _find_tools()
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_scratch(directory.parent)
        scratch = directory.with_name(f"{directory.name}.tmp{os.getpid()}")
        scratch.mkdir(exist_ok=True)
    except OSError as e:
        raise BuildError("the kernel cache directory is not writable (set "
                         "FUNASR_NANO_KERNEL_CACHE)", str(e)) from e
    try:
        module = load(name=NAME, sources=[str(CSRC / s) for s in SOURCES],
                      extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS),
                      extra_include_paths=[str(CSRC)], build_directory=str(scratch),
                      verbose=False)
    except Exception as e:  # noqa: BLE001 - compiler, linker or import failure
        shutil.rmtree(scratch, ignore_errors=True)
        raise BuildError("the C++ compiler failed (the log has its messages)",
                         _compiler_detail(str(e)) or type(e).__name__) from e
    try:
        scratch.rename(directory)
    except OSError:  # another process published the same build first
        shutil.rmtree(scratch, ignore_errors=True)
    return module, time.perf_counter() - t0
