"""Logging for the app: ``--log-format text`` (one readable line per record, as before) or
``json`` (one JSON object per line, for log collectors).

A JSON line has ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``message``,
``request_id`` (the request being handled, or null: serving.request_id), ``exception`` (the
traceback, when there is one) and the structured fields a record carries: the per-request line
of serving.metrics adds ``method``, ``route``, ``status`` and ``duration_s``, so errors and
slow requests can be found with a query instead of a regular expression.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import sys

from .request_id import peek as current_request_id

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = ("method", "route", "status", "duration_s")  # structured extras kept as fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or current_request_id(),
        }
        for name in FIELDS:
            if hasattr(record, name):
                out[name] = getattr(record, name)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(level: str = "info", fmt: str = "text", stream=None) -> None:
    """Configure the root logger (and uvicorn's, which then propagate to it)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.captureWarnings(True)  # library warnings become records too (one format per line)


def uvicorn_log_config(fmt: str):
    """What uvicorn.Config(log_config=...) gets: None (use ours) for JSON, its default else."""
    if fmt == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG
    return LOGGING_CONFIG
