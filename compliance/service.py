"""What the HTTP API asks of compliance: request fields -> a detector, and a result row ->
its hits (and its redacted copy). Kept here so serving/api.py only makes two calls."""
from __future__ import annotations

from engine.errors import ParamError

# The detectors' libraries load on the first request that asks for them, not at app start.

MAX_WATCH_BYTES = 256 * 1024      # the ``watch_list`` form field (a TSV watch list)
MAX_WATCH_TERMS = 5000


class ComplianceRequestError(ParamError):
    """A watch list or PII option of a request that cannot be used."""


def detector_from_request(watch_list: str | None, pii: bool | str | None):
    """``watch_list``: a watch list in the file format (TSV lines), at most MAX_WATCH_BYTES;
    ``pii``: true for every kind, or a comma-separated list of kinds."""
    watch = None
    if not watch_list and not pii:
        return None
    from .detect import Detector
    from .watchlist import WatchList, WatchListError
    if watch_list:
        size = len(watch_list.encode("utf-8", "replace"))
        if size > MAX_WATCH_BYTES:
            raise ComplianceRequestError(f"watch_list is {size} bytes; at most "
                                         f"{MAX_WATCH_BYTES} are accepted", "watch_list")
        try:
            watch = WatchList.parse(watch_list, source="watch_list")
        except WatchListError as e:
            raise ComplianceRequestError(str(e), "watch_list") from None
        if len(watch) > MAX_WATCH_TERMS:
            raise ComplianceRequestError(f"watch_list holds {len(watch)} terms; at most "
                                         f"{MAX_WATCH_TERMS} per request", "watch_list")
    kinds: tuple | bool = ()
    if isinstance(pii, str):
        v = pii.strip().lower()
        if v in ("1", "true", "yes", "on", "all"):
            kinds = True
        elif v in ("", "0", "false", "no", "off"):
            kinds = ()
        else:
            kinds = tuple(k.strip() for k in v.split(",") if k.strip())
    elif pii:
        kinds = True
    if watch is None and not kinds:
        return None
    try:
        return Detector(watch=watch, pii=kinds)
    except ValueError as e:
        raise ComplianceRequestError(str(e), "pii") from None


def watch_hotwords(detector) -> list[str]:
    """The most severe watch terms, offered to the decoder as hotwords (``Options
    .watch_hotwords``): the model adds them after the request's own hotwords as far as its caps
    allow, and not at all where it was trained without hotword prompts (the demo checkpoint)."""
    if detector is None or detector.watch is None:
        return []
    return detector.watch.hotwords()


def apply(row: dict, detector, redact: bool) -> dict:
    """The row with ``compliance: {hits, redacted}`` and, on request, redacted text/segments.
    A failure here never costs the transcript: the row comes back with an error note."""
    if detector is None:
        return row
    from .redact import redact_row
    try:
        hits = detector.scan(row)
        if redact and hits:
            row = redact_row(row, hits, detector)
        public = [{k: v for k, v in h.items() if not (redact and k in ("text", "context"))}
                  for h in hits]
        return {**row, "compliance": {"hits": public, "redacted": bool(redact)}}
    except Exception:  # noqa: BLE001 - an optional stage must not lose the transcript
        import logging
        logging.getLogger("funasr_nano.compliance").exception("compliance scan failed")
        return {**row, "compliance": {"hits": [], "error": "the compliance scan failed"}}


def highlight(rows: list[dict] | None, pii: bool, watch_list: str | None):
    """The page's highlighted transcript: ``[(text, label or None), ...]`` over the results'
    texts (one block per file), and a line saying what was found or what is wrong."""
    if not rows or not (pii or (watch_list or "").strip()):
        return [], ""
    try:
        det = detector_from_request(watch_list if (watch_list or "").strip() else None, pii)
    except ComplianceRequestError as e:
        return [], f"Compliance: {e}"
    from .pii import LABELS
    out, n = [], 0
    for k, r in enumerate(rows):
        if r.get("error") or not r.get("text"):
            continue
        if len(rows) > 1:
            out.append((("\n\n" if k else "") + f"[{r.get('file')}]\n", None))
        text = r["text"]
        spans = det.find_text(text, r.get("language"))
        pos = 0
        for s, e, kind, category, _ in spans:
            out.append((text[pos:s], None))
            label = category.upper() if kind == "watch" else LABELS[category]
            out.append((text[s:e], label))
            pos = e
            n += 1
        out.append((text[pos:], None))
    return [(t, lab) for t, lab in out if t], f"Compliance: {n} hit(s)."
