"""transcribe.py's compliance flags: --watch, --pii, --redact, --redact-audio, --report.

The detectors (phonenumbers, stdnum, pyahocorasick) are imported only when a flag asks for them,
so a plain CLI run starts as fast as before."""
from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(parser) -> None:
    g = parser.add_argument_group("compliance (docs/compliance.md)")
    g.add_argument("--watch", default=None, metavar="FILE",
                   help="watch list (TSV: term, category, severity): hits go into the JSON "
                   "output ('compliance'); the most severe terms are also hotwords")
    g.add_argument("--pii", action="store_true",
                   help="find personal data: phone numbers, e-mail, payment cards, IBANs, "
                   "national ID numbers")
    g.add_argument("--redact", action="store_true",
                   help="replace every hit in the text, subtitles and JSON by its label "
                   "([PHONE], [CARD], ...)")
    g.add_argument("--redact-audio", default=None, choices=["silence", "bleep"],
                   help="with --output-dir: also write FILE.redacted.wav with the hit spans "
                   "silenced or bleeped")
    g.add_argument("--report", default=None, metavar="PATH",
                   help="write the audit report to PATH.html and PATH.json")


def make_detector(args):
    """The detector the flags ask for (None without --watch/--pii); exits 2 on a bad list."""
    if not (args.watch or args.pii):
        for flag in ("redact", "redact_audio", "report"):
            if getattr(args, flag, None):
                print(f"error: --{flag.replace('_', '-')} needs --watch or --pii",
                      file=sys.stderr)
                raise SystemExit(2)
        return None
    from .detect import Detector
    from .watchlist import WatchList, WatchListError
    watch = None
    if args.watch:
        try:
            watch = WatchList.load(args.watch)
        except WatchListError as e:
            print(f"error: --watch: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    if args.redact_audio and not args.output_dir:
        print("error: --redact-audio needs --output-dir", file=sys.stderr)
        raise SystemExit(2)
    return Detector(watch=watch, pii=bool(args.pii))


def hotwords(detector, given: list[str], model=None) -> list[str]:
    """``given`` plus the most severe watch terms, as many as the hotword caps still allow
    (``model``: the loaded model, whose ``hotwords_with`` counts its tokens and leaves the
    terms out where the checkpoint was trained without hotword prompts)."""
    if detector is None or detector.watch is None:
        return given
    extra = detector.watch.hotwords()
    if model is not None and hasattr(model, "hotwords_with"):
        return model.hotwords_with(given, extra)
    from engine.prompt import merge_hotwords
    return merge_hotwords(given, extra)


def apply(detector, results: list[dict], files: list[str], args) -> list[dict]:
    """Hits into each result (``compliance``), redaction and the report, as the flags say."""
    if detector is None:
        return results
    from .redact import redact_audio, redact_row
    from .report import build_report, write_report
    out, items = [], []
    for f, r in zip(files, results):
        hits = [] if r.get("error") else detector.scan(r)
        items.append({"source": f, "duration": r.get("duration"), "language": r.get("language"),
                      "error": r.get("error"), "hits": hits})
        if args.redact and hits:
            r = redact_row(r, hits, detector)
            for k in ("text_tn", "ctc_text", "timestamps"):
                r.pop(k, None)      # unredacted copies of the text
        r = {**r, "compliance": {"hits": _public(hits, args.redact), "redacted": args.redact}}
        if args.redact_audio and hits and not r.get("error"):
            dst = Path(args.output_dir) / f"{Path(f).stem}.redacted.wav"
            dst.parent.mkdir(parents=True, exist_ok=True)
            redact_audio(f, dst, hits, mode=args.redact_audio)
            r["compliance"]["redacted_audio"] = str(dst)
        out.append(r)
    if args.report:
        settings = {**detector.settings(), "redact": args.redact, "itn": not args.no_itn,
                    "language": args.language}
        for p in write_report(args.report, build_report(items, settings, "files")):
            print(f"report: {p}", file=sys.stderr)
    return out


def _public(hits: list[dict], redacted: bool) -> list[dict]:
    """Hits as results carry them; with redaction, without the matched text and context."""
    if not redacted:
        return hits
    return [{k: v for k, v in h.items() if k not in ("text", "context")} for h in hits]
