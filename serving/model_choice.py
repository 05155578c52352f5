"""Which model to load when the user names none: the official one if it is here, else the demo."""
from __future__ import annotations

import os
from pathlib import Path

from engine.checkpoint import DEFAULT_HUB_ID, how_to_download, missing_files, resolve_model_dir

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "models" / "demo"


def demo_note() -> str:
    return ("Using the bundled DEMO model: a small model trained by this project on synthetic "
            "(espeak-ng) speech. It will not understand real human speech well.\n"
            + how_to_download())


def choose_model(explicit: str | None = None) -> tuple[str, str | None]:
    """(model path or hub id, a note to show the user or None).

    Order: --model / FUNASR_NANO_MODEL, then the official files next to app.py (this folder is
    laid out as the official model directory), then the official model in the local hub cache,
    then the demo checkpoint.
    """
    chosen = explicit or os.environ.get("FUNASR_NANO_MODEL")
    if chosen:
        return chosen, None
    if not missing_files(ROOT):
        return str(ROOT), None
    try:
        return str(resolve_model_dir(DEFAULT_HUB_ID, local_only=True)), None
    except FileNotFoundError:
        return str(DEMO_DIR), demo_note()
