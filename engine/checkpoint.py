"""Finding and reading a model directory in the official layout.

A directory holds ``config.yaml``, ``model.pt`` (bf16 tensors, flat or under ``state_dict``),
``configuration.json`` (ModelScope path metadata), ``multilingual.tiktoken`` (CTC tokenizer) and
the LLM folder named by ``llm_conf.init_param_path`` (``Qwen3-0.6B/``: config + tokenizer, no
weights). A hub id resolves to a local snapshot through huggingface_hub or modelscope.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import zipfile
from pathlib import Path

import torch
import yaml

log = logging.getLogger("funasr_nano")

OFFICIAL_HUB_IDS = ("FunAudioLLM/Fun-ASR-MLT-Nano-2512", "FunAudioLLM/Fun-ASR-Nano-2512")
DEFAULT_HUB_ID = OFFICIAL_HUB_IDS[0]


class ModelNotFoundError(FileNotFoundError):
    pass


class CheckpointError(ValueError):
    pass


def how_to_download(hub_id: str = DEFAULT_HUB_ID) -> str:
    """The instructions the log, the page's banner and errors give (the README says the same;
    tests/test_cli.py runs each command named here)."""
    hub = "" if hub_id == DEFAULT_HUB_ID else f"{hub_id} "
    return ("Get the official weights on a machine that can reach Hugging Face (or ModelScope,\n"
            "when the modelscope package is installed) with\n"
            f"  python -m engine.download {hub}--local-dir ./Fun-ASR-MLT-Nano-2512\n"
            "and run\n  python app.py --model ./Fun-ASR-MLT-Nano-2512\n"
            "(or copy model.pt and Qwen3-0.6B/ next to app.py).")


def read_config(model_dir: Path) -> dict:
    with open(model_dir / "config.yaml", encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    metas = {}
    meta_file = model_dir / "configuration.json"
    if meta_file.is_file():
        metas = json.loads(meta_file.read_text(encoding="utf-8")).get("file_path_metas", {})
    cfg["_file_path_metas"] = metas
    return cfg


def _meta_path(metas: dict, *keys):
    for key in keys:
        metas = metas.get(key, {}) if isinstance(metas, dict) else {}
    return metas if isinstance(metas, str) else None


def model_files(model_dir: Path, cfg: dict) -> dict[str, Path]:
    """The files this directory's config points at (relative paths resolve against the dir,
    as funasr's configuration.json handling does)."""
    metas = cfg.get("_file_path_metas", {})

    def resolve(p):
        p = Path(os.path.expanduser(str(p)))
        return p if p.is_absolute() else model_dir / p

    llm = (_meta_path(metas, "llm_conf", "init_param_path")
           or (cfg.get("llm_conf") or {}).get("init_param_path") or "Qwen3-0.6B")
    ctc_vocab = (_meta_path(metas, "dataset_conf", "ctc_tokenizer_conf", "vocab_path")
                 or ((cfg.get("dataset_conf") or {}).get("ctc_tokenizer_conf") or {}).get("vocab_path")
                 or "multilingual.tiktoken")
    return {"weights": resolve(_meta_path(metas, "init_param") or "model.pt"),
            "llm_dir": resolve(llm), "ctc_vocab": resolve(ctc_vocab)}


def missing_files(model_dir: Path) -> list[str]:
    if not (model_dir / "config.yaml").is_file():
        return ["config.yaml"]
    files = model_files(model_dir, read_config(model_dir))
    need = [files["weights"], files["llm_dir"] / "config.json", files["llm_dir"] / "tokenizer.json"]
    return [str(p.relative_to(model_dir)) if p.is_relative_to(model_dir) else str(p)
            for p in need if not p.is_file()]


def _hub_snapshot(hub_id: str, local_only: bool) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(hub_id, local_files_only=local_only))
    except Exception as e:  # noqa: BLE001 - any hub failure means "not here"
        log.debug("huggingface_hub: %s: %s", hub_id, e)
    cache = Path(os.environ.get("MODELSCOPE_CACHE", Path.home() / ".cache" / "modelscope"))
    for base in (cache / "hub" / "models", cache / "hub", cache / "models"):
        if (base / hub_id / "config.yaml").is_file():
            return base / hub_id
    if not local_only:
        try:
            from modelscope import snapshot_download as ms_download
            return Path(ms_download(hub_id))
        except Exception as e:  # noqa: BLE001
            log.debug("modelscope: %s: %s", hub_id, e)
    return None


def resolve_model_dir(name_or_path: str | os.PathLike, local_only: bool = False) -> Path:
    """A local directory as is; a hub id through the local caches, then the hubs when online
    (never with ``local_only``)."""
    path = Path(os.path.expanduser(str(name_or_path)))
    if path.is_dir():
        bad = missing_files(path)
        if bad:
            raise ModelNotFoundError(f"model directory {path} is incomplete: missing "
                                     f"{', '.join(bad)}.\n{how_to_download()}")
        return path
    if path.exists():
        raise ModelNotFoundError(f"{path} is a file; --model takes a model directory or a hub id")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(name_or_path)):
        raise ModelNotFoundError(f"no model directory at {path}.\n{how_to_download()}")
    offline = (local_only or os.environ.get("HF_HUB_OFFLINE") == "1"
               or os.environ.get("FUNASR_NANO_OFFLINE") == "1")
    found = _hub_snapshot(str(name_or_path), local_only=True)
    if found is None and not offline:
        found = _hub_snapshot(str(name_or_path), local_only=False)
    if found is None or missing_files(found):
        missing = missing_files(found) if found else ["config.yaml", "model.pt",
                                                      "Qwen3-0.6B/config.json",
                                                      "Qwen3-0.6B/tokenizer.json"]
        raise ModelNotFoundError(
            f"{name_or_path} is not in the local Hugging Face or ModelScope cache and could not be "
            f"downloaded{' (offline)' if offline else ''}; missing: {', '.join(missing)}.\n"
            + how_to_download(str(name_or_path)))
    return found


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """model.pt as a flat dict, memory-mapped (no copy until a tensor is converted).

    Only torch's zip format (the default since torch 1.6, and the official checkpoint's) can be
    memory-mapped; a file in the older format, which funasr reads too, is read into memory."""
    mmap = zipfile.is_zipfile(path)
    if not mmap and Path(path).is_file():
        log.info("%s is not in torch's zip format: reading it into memory (no mmap)", path)
    try:
        state = torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot read {path}: {e}") from e
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}


def check_state_dict(expected: dict[str, torch.Size], state: dict[str, torch.Tensor],
                     optional_prefixes=(), optional_keys=()) -> list[str]:
    """Raise naming every missing or mis-shaped tensor; return the optional keys that are absent."""
    missing, absent_optional, wrong = [], [], []
    for name, shape in expected.items():
        if name not in state:
            if name in optional_keys or name.startswith(tuple(optional_prefixes)):
                absent_optional.append(name)
            else:
                missing.append(name)
        elif tuple(state[name].shape) != tuple(shape):
            wrong.append(f"{name}: checkpoint {tuple(state[name].shape)}, model {tuple(shape)}")
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensors: " + ", ".join(missing[:20])
                         + (" ..." if len(missing) > 20 else ""))
        if wrong:
            parts.append(f"{len(wrong)} mis-shaped tensors: " + "; ".join(wrong[:20])
                         + (" ..." if len(wrong) > 20 else ""))
        raise CheckpointError("checkpoint does not fit config.yaml: " + " | ".join(parts))
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        log.warning("ignoring %d unexpected tensors in the checkpoint: %s", len(unexpected),
                    ", ".join(unexpected[:5]))
    return absent_optional


def release_freed_memory() -> None:
    """Give the heap pages freed while loading back to the OS. glibc keeps them otherwise:
    converting and quantising the weights leaves ~1 GB of freed-but-resident memory after an
    int8 load (measured: resident 4.44 -> 3.49 GB at full size). A no-op off glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
