"""``python -m engine.download``: the official model directory from a model hub into a folder.

Our own entry point on huggingface_hub's Python API (a requirement, so it exists wherever the
Quick start was followed; the hub's own CLI is ``huggingface-cli`` or ``hf`` depending on its
version), with ModelScope as a second source when the ``modelscope`` package is installed.
The README, the page's banner and the log name this one command (``engine.checkpoint.how_to_download``).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from engine.checkpoint import DEFAULT_HUB_ID, OFFICIAL_HUB_IDS, missing_files

DEFAULT_DIR = "./Fun-ASR-MLT-Nano-2512"
SOURCES = ("auto", "huggingface", "modelscope")


class DownloadError(RuntimeError):
    """One source could not deliver the model; the message says which and why."""


def modelscope_installed() -> bool:
    return importlib.util.find_spec("modelscope") is not None


def _from_huggingface(hub_id: str, local_dir: Path, revision: str | None) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
    try:
        snapshot_download(hub_id, local_dir=local_dir, revision=revision)
    except RepositoryNotFoundError as e:
        raise DownloadError(f"Hugging Face: no model {hub_id!r} (or it needs a login: "
                            "HF_TOKEN)") from e
    except LocalEntryNotFoundError as e:
        why = ("HF_HUB_OFFLINE=1 is set" if os.environ.get("HF_HUB_OFFLINE") == "1"
               else f"{os.environ.get('HF_ENDPOINT', 'https://huggingface.co')} is not reachable")
        raise DownloadError(f"Hugging Face: {why}, and {hub_id} is not in the local cache") from e
    except OSError as e:   # network and disk errors (requests' and httpx's derive from OSError)
        raise DownloadError(f"Hugging Face: {type(e).__name__}: {e}") from e


def _from_modelscope(hub_id: str, local_dir: Path, revision: str | None) -> None:
    if not modelscope_installed():
        raise DownloadError("ModelScope: the modelscope package is not installed "
                            "(pip install modelscope)")
    from modelscope import snapshot_download
    try:
        snapshot_download(hub_id, local_dir=str(local_dir), revision=revision)
    except Exception as e:  # noqa: BLE001 - modelscope raises plain Exceptions and requests' errors
        raise DownloadError(f"ModelScope: {type(e).__name__}: {e}") from e


def download(hub_id: str = DEFAULT_HUB_ID, local_dir: str | os.PathLike = DEFAULT_DIR,
             source: str = "auto", revision: str | None = None) -> Path:
    """Fetch ``hub_id`` into ``local_dir`` and check it is a complete model directory.

    ``source="auto"``: Hugging Face, then ModelScope when it is installed. Raises DownloadError
    naming every source tried and its reason."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    local_dir = Path(os.path.expanduser(str(local_dir)))
    tries = {"huggingface": [_from_huggingface], "modelscope": [_from_modelscope],
             "auto": [_from_huggingface] + ([_from_modelscope] if modelscope_installed() else [])
             }[source]
    reasons = []
    for fetch in tries:
        try:
            fetch(hub_id, local_dir, revision)
        except DownloadError as e:
            reasons.append(str(e))
            continue
        missing = missing_files(local_dir)
        if not missing:
            return local_dir
        reasons.append(f"{fetch.__name__[6:]}: the download lacks {', '.join(missing)}")
    if source == "auto" and not modelscope_installed():
        reasons.append("ModelScope: not tried (pip install modelscope to use it)")
    raise DownloadError(f"could not download {hub_id}:\n  " + "\n  ".join(reasons))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.download", allow_abbrev=False,
        description="Download the official model directory (about 2 GB) from Hugging Face, or "
                    "from ModelScope when the modelscope package is installed, then run "
                    "`python app.py --model DIR`.")
    parser.add_argument("hub_id", nargs="?", default=DEFAULT_HUB_ID,
                        help=f"the model's hub id (default {DEFAULT_HUB_ID}; "
                             f"also {', '.join(OFFICIAL_HUB_IDS[1:])})")
    parser.add_argument("--local-dir", default=DEFAULT_DIR,
                        help=f"the folder to write the model directory to (default {DEFAULT_DIR})")
    parser.add_argument("--source", choices=SOURCES, default="auto",
                        help="auto (default): Hugging Face, then ModelScope if installed")
    parser.add_argument("--revision", default=None, help="a branch, tag or commit on the hub")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = download(args.hub_id, args.local_dir, args.source, args.revision)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.hub_id} is in {path}; run:\n  python app.py --model {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
