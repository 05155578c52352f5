"""int8 weights prepared once per checkpoint, cached next to the kernels and memory-mapped.

``--dtype int8`` quantises every Linear of the encoder, adaptor and decoder (0.8 B weights at full
size: the row scales, the rounding, the VNNI kernels' row sums), which took most of an int8 load.
The result depends only on the checkpoint and this code, so it is written once to
``<kernel cache>/prepared/`` (``$FUNASR_NANO_KERNEL_CACHE``, see engine.kernels.build; or
``$FUNASR_NANO_PREPARED_CACHE``, ``off`` for none) and later
loads map it from disk: nothing is computed, and the int8 tensors the decode kernels read are
file-backed pages shared by every process on the machine.

Key: the checkpoint's resolved path, size and mtime, the mode, the sources of the code that
computes the tensors, and the torch version. A changed checkpoint gets a new file and its old one
is removed. A cache that cannot be written (a read-only image) only costs the time to compute.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from . import int8 as _int8
from . import packed as _packed
from .build import cache_root

log = logging.getLogger("funasr_nano")

# the Linears the int8 mode quantises (model.py: encoder, adaptor, decoder incl. lm_head)
PREFIXES = ("audio_encoder.", "audio_adaptor.", "llm.")
FORMAT = 2  # 2: row sums and q8_gemm's panels for every Linear


def cache_dir() -> Path | None:
    """``$FUNASR_NANO_PREPARED_CACHE`` ("off": no cache), else ``<kernel cache>/prepared``."""
    env = os.environ.get("FUNASR_NANO_PREPARED_CACHE")
    if env == "off":
        return None
    return Path(env) if env else cache_root() / "prepared"


def code_version() -> str:
    h = hashlib.sha256(f"{FORMAT} {torch.__version__}".encode())
    for mod in (_int8, _packed):
        h.update(Path(mod.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:12]


def cache_file(checkpoint: Path, mode: str) -> Path | None:
    root = cache_dir()
    if root is None:
        return None
    real = os.path.realpath(checkpoint)
    st = os.stat(real)
    source = hashlib.sha256(real.encode()).hexdigest()[:12]
    key = hashlib.sha256(f"{st.st_size} {st.st_mtime_ns} {mode} {code_version()}".encode())
    return root / f"{source}-{mode}-{key.hexdigest()[:16]}.pt"


def compute_int8(model: nn.Module) -> dict[str, torch.Tensor]:
    """name.w8 / name.scale / name.sum / name.wp for every Linear the int8 mode replaces: the
    int8 weight, its row scales, its row sums and its panel layout (q8_pack), what the VNNI
    kernels take. Pages of a mapped file that a CPU without VNNI never reads (the sums and
    panels) cost it disk only."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and name.startswith(PREFIXES):
            w8, scale = _int8.quantize_weight(mod.weight)
            out[name + ".w8"], out[name + ".scale"] = w8, scale
            out[name + ".sum"] = w8.sum(1, dtype=torch.int32)
            out[name + ".wp"] = _int8.q8_pack(w8)
    return out


def int8_weights(model: nn.Module, checkpoint: Path | None) -> dict[str, torch.Tensor]:
    """The prepared int8 tensors of ``model`` (loaded from ``checkpoint``): memory-mapped from
    the cache, or computed now (and cached, then mapped, when the cache is writable)."""
    t0 = time.perf_counter()
    path = None
    if checkpoint is not None:
        try:
            path = cache_file(Path(checkpoint), "int8")
        except OSError:
            path = None
    if path is not None and path.is_file():
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            log.info("int8 weights mapped from the cache (%s) in %.1f s", path.name,
                     time.perf_counter() - t0)
            return state
        except Exception as e:  # noqa: BLE001 - a damaged file is recomputed
            log.warning("int8 cache %s unreadable (%s): preparing the weights again", path, e)
    state = compute_int8(model)
    log.info("int8 weights prepared in %.1f s", time.perf_counter() - t0)
    if path is None:
        return state
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        torch.save(state, tmp)
        tmp.rename(path)
    except OSError as e:
        log.info("int8 weights not cached (%s): the next load prepares them again", e)
        return state
    source = path.name.split("-", 1)[0]
    for old in path.parent.glob(f"{source}-int8-*.pt"):  # this checkpoint's stale versions
        if old != path:
            old.unlink(missing_ok=True)
    del state
    log.info("int8 weights cached in %s", path)
    return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
