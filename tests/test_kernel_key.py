"""The kernel cache's key (engine/kernels/build.py) is the same on another CPU, so that an image
whose kernels were built on one machine finds them on another (the image's cache is read-only
to the app: a key that moved would mean a rebuild that cannot happen), while it still moves
with what the binary is made of."""
from __future__ import annotations

import builtins
import io
import pathlib

import torch

from engine.kernels import build

# An AVX2-only CPU (no AVX-512), as /proc/cpuinfo would describe it.
OTHER_CPU = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B12\n"
             "flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi1 bmi2\n")


def test_key_is_the_same_on_another_cpu(monkeypatch):
    here = build.build_key()
    real_open = builtins.open
    real_read_text, real_read_bytes = pathlib.Path.read_text, pathlib.Path.read_bytes

    def is_cpuinfo(p) -> bool:
        return str(p) == "/proc/cpuinfo"

    def fake_open(file, mode="r", *args, **kwargs):
        if not is_cpuinfo(file):
            return real_open(file, mode, *args, **kwargs)
        return io.BytesIO(OTHER_CPU.encode()) if "b" in mode else io.StringIO(OTHER_CPU)

    # Whichever way the key might read the CPU's description, it gets the other CPU's.
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self, *a, **k: (
        OTHER_CPU if is_cpuinfo(self) else real_read_text(self, *a, **k)))
    monkeypatch.setattr(pathlib.Path, "read_bytes", lambda self: (
        OTHER_CPU.encode() if is_cpuinfo(self) else real_read_bytes(self)))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert build.build_key() == here


def test_key_moves_with_the_sources_flags_and_torch(monkeypatch):
    here = build.build_key()
    monkeypatch.setattr(build, "CFLAGS", (*build.CFLAGS, "-DCHANGED"))
    flags = build.build_key()
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", torch.__version__ + ".changed")
    version = build.build_key()
    monkeypatch.undo()
    real_read_bytes = pathlib.Path.read_bytes
    monkeypatch.setattr(pathlib.Path, "read_bytes", lambda self: (
        real_read_bytes(self) + b"// edited" if self.name == "avx2.cpp" else real_read_bytes(self)))
    source = build.build_key()
    assert len({here, flags, version, source}) == 4
