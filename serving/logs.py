"""Logging for the app: ``--log-format text`` (one readable line per record, as before) or
``json`` (one JSON object per line, for log collectors).

A JSON line has ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``message``,
``request_id`` (the request being handled, or null: serving.request_id), ``exception`` (the
traceback, when there is one) and the structured fields a record carries: the per-request line
of serving.metrics adds ``method``, ``route``, ``status`` and ``duration_s``, so errors and
slow requests can be found with a query instead of a regular expression.

Neither format lets a client forge a line: in text, the values a record quotes (its arguments)
and the message of a logged exception have their control characters escaped (``\n``,
``\x1b``; serving.limits.escape_control); JSON escapes them anyway. Libraries that print a
traceback straight to stderr (Gradio's ``traceback.print_exc()`` after a request failed, with
the request's text in the exception) are routed here too, as an error record of the library's
logger, as are exceptions no thread caught.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
import threading
import traceback

from .limits import escape_control
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


def _escaped(value):
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return escape_control(str(value))


class TextFormatter(logging.Formatter):
    """The text format, one record per line start: a record's arguments and the messages of its
    exception (and the exceptions chained to it) have their control characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        if record.args:
            args = record.args
            record = logging.makeLogRecord(record.__dict__)
            record.args = (tuple(_escaped(a) for a in args) if isinstance(args, tuple)
                           else {k: _escaped(v) for k, v in args.items()}
                           if isinstance(args, dict) else args)
        return super().format(record)

    def formatException(self, ei) -> str:
        te = traceback.TracebackException(*ei, compact=True)
        seen, todo = set(), [te]
        while todo:
            t = todo.pop()
            if t is None or id(t) in seen:
                continue
            seen.add(id(t))
            if getattr(t, "_str", None):
                t._str = escape_control(t._str)
            todo += [t.__cause__, t.__context__, *(getattr(t, "exceptions", None) or [])]
        return "".join(te.format()).rstrip("\n")


_print_exc = traceback.print_exc


def _print_exc_to_log(limit=None, file=None, chain=True):
    """traceback.print_exc as a log record of the caller's logger (when it prints to stderr)."""
    if file is not None and file is not sys.stderr:
        return _print_exc(limit, file, chain)
    caller = sys._getframe(1).f_globals.get("__name__", "traceback")
    logging.getLogger(caller).error("unhandled error", exc_info=sys.exc_info())


def _thread_excepthook(args) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("threading").error(
        "unhandled error in thread %s", getattr(args.thread, "name", "?"),
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def setup_logging(level: str = "info", fmt: str = "text", stream=None) -> None:
    """Configure the root logger (and uvicorn's, which then propagate to it)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT))
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
    traceback.print_exc = _print_exc_to_log   # and the tracebacks libraries print
    threading.excepthook = _thread_excepthook


def uvicorn_log_config(fmt: str):
    """What uvicorn.Config(log_config=...) gets: None, so that uvicorn's records (its access
    lines, "Exception in ASGI application" with a traceback) go through our formatters in both
    formats: uvicorn's own would print a client's text in a traceback unescaped."""
    return None
