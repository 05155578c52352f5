"""Compliance: watch terms and personal data found in transcripts, redacted, alerted, reported.

Nothing here imports ``serving/``; the app, the CLI and corpus runs call into it:

    from compliance import WatchList, Detector, redact_row
    det = Detector(watch=WatchList.load("terms.tsv"), pii=True)
    hits = det.scan(row)                       # row: a result dict with text/segments/language
    red = redact_row(row, hits, det)           # text and segments with [PHONE], [CARD], ...

See docs/compliance.md. The names below are imported on first use (PEP 562), so importing one
submodule (``compliance.cli`` for the CLI's flags) does not load the detectors' libraries.
"""
from __future__ import annotations

import importlib

_EXPORTS = {"Detector": "detect", "redact_text": "detect", "PII_KINDS": ("pii", "KINDS"),
            "LABELS": "pii", "redact_audio": "redact", "redact_row": "redact",
            "WatchList": "watchlist", "WatchListError": "watchlist"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module 'compliance' has no attribute {name!r}")
    module, attr = where if isinstance(where, tuple) else (where, name)
    return getattr(importlib.import_module(f".{module}", __name__), attr)
