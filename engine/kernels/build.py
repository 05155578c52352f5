"""Build and load the CPU kernels (csrc/*.cpp) once per environment.

The extension is compiled with torch's cpp_extension into a directory whose name is a key over
everything the binary depends on: the sources, the compiler flags, the torch version and the
Python interpreter (and its environment). Two virtual environments or two torch versions
therefore never rebuild each other's copy, and a second process finds the first one's build
ready. The build machine's CPU is deliberately not in the key: the flags are fixed (-mavx2
-mfma) and the AVX-512 functions carry their own target attributes behind a run-time check, so
the binary is the same on every CPU that can run it. A container image built on one CPU thus
finds its read-only cache on another, and machines sharing a home directory share one build.

Where it lives: ``$FUNASR_NANO_KERNEL_CACHE``, else ``$FUNASR_NANO_CACHE/kernels``, else
``~/.cache/funasr-nano/kernels``. ``FUNASR_NANO_NO_KERNELS=1`` turns the kernels off (plain
PyTorch everywhere), ``FUNASR_NANO_NO_AVX512=1`` only their AVX-512 paths.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path

import torch

log = logging.getLogger("funasr_nano")

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = ("avx2.cpp", "avx512.cpp", "bindings.cpp")
HEADERS = ("common.h", "kernels.h")
CFLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp")
LDFLAGS = ("-fopenmp",)
NAME = "funasr_nano_kernels"

_module = None
_tried = False


def cache_root() -> Path:
    if os.environ.get("FUNASR_NANO_KERNEL_CACHE"):
        return Path(os.environ["FUNASR_NANO_KERNEL_CACHE"])
    base = os.environ.get("FUNASR_NANO_CACHE") or Path.home() / ".cache" / "funasr-nano"
    return Path(base) / "kernels"


def build_key() -> str:
    """A short hash of the sources, flags, torch and the Python environment."""
    h = hashlib.sha256()
    for name in (*SOURCES, *HEADERS):
        h.update(name.encode() + b"\0" + (CSRC / name).read_bytes())
    for part in (CFLAGS, LDFLAGS, torch.__version__, sys.version, sys.prefix):
        h.update(repr(part).encode() + b"\0")
    return h.hexdigest()[:16]


def build_dir() -> Path:
    return cache_root() / f"{NAME}-{build_key()}"


def _import(path: Path):
    """Import a built extension from its file: no lock, no write, so a read-only cache (a
    container's) works."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.ExtensionFileLoader(NAME, str(path))
    spec = importlib.util.spec_from_file_location(NAME, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def build(directory: Path | None = None):
    """Compile into a scratch directory next to ``directory`` and rename it into place once the
    library is complete, so that another process never imports a half-written file."""
    from torch.utils.cpp_extension import load

    directory = directory or build_dir()
    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = directory.with_name(f"{directory.name}.tmp{os.getpid()}")
    scratch.mkdir(exist_ok=True)
    module = load(name=NAME, sources=[str(CSRC / s) for s in SOURCES],
                  extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS),
                  extra_include_paths=[str(CSRC)], build_directory=str(scratch), verbose=False)
    try:
        scratch.rename(directory)
    except OSError:  # another process published the same build first
        import shutil
        shutil.rmtree(scratch, ignore_errors=True)
    return module


def kernels():
    """The compiled extension, or None where it cannot be built (no AVX2, no compiler)."""
    global _module, _tried
    if _tried:
        return _module
    _tried = True
    if os.environ.get("FUNASR_NANO_NO_KERNELS") == "1":
        return None
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        log.info("CPU lacks AVX2: decoding with plain PyTorch matmuls")
        return None
    try:
        built = build_dir() / f"{NAME}.so"
        _module = _import(built) if built.is_file() else build()
    except Exception as e:  # noqa: BLE001 - any build failure means "use the fallback"
        log.warning("could not build the CPU decoding kernel (%s); using PyTorch matmuls",
                    str(e).splitlines()[0] if str(e) else type(e).__name__)
    return _module


def avx512_kernels(need_vnni: bool = False):
    """The compiled kernels when this CPU has AVX-512 (and VNNI, if asked), else None.
    FUNASR_NANO_NO_AVX512=1 turns those paths off (A/B runs, tests of the fallbacks)."""
    if os.environ.get("FUNASR_NANO_NO_AVX512") == "1":
        return None
    k = kernels()
    if k is None or not k.has_avx512() or (need_vnni and not k.has_vnni()):
        return None
    return k

