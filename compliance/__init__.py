"""Compliance: watch terms and personal data found in transcripts, redacted, alerted, reported.

Nothing here imports ``serving/``; the app, the CLI and corpus runs call into it:

    from compliance import WatchList, Detector
    det = Detector(watch=WatchList.load("terms.tsv"), pii=True)
    hits = det.scan(row)                       # row: a result dict with text/segments/language
    red = redact_row(row, hits)                # text and segments with [PHONE], [CARD], ...

See docs/compliance.md.
"""
from .detect import Detector, redact_text  # noqa: F401
from .pii import KINDS as PII_KINDS, LABELS  # noqa: F401
from .redact import redact_audio, redact_row  # noqa: F401
from .watchlist import WatchList, WatchListError  # noqa: F401
