"""A corpus run's compliance summary: every result of ``results.jsonl`` scanned, one report
(``OUT/compliance.html`` and ``OUT/compliance.json``) over the corpus."""
from __future__ import annotations

import sys
from pathlib import Path

from .report import build_report, write_report


def summarize(detector, results: list[dict], out_dir, args=None) -> list[str]:
    items = []
    for r in results:
        hits = [] if r.get("error") else detector.scan(r)
        items.append({"source": r.get("file"), "duration": r.get("duration"),
                      "language": r.get("language"), "error": r.get("error"), "hits": hits})
    settings = detector.settings()
    if args is not None:
        settings.update(itn=not getattr(args, "no_itn", False),
                        language=getattr(args, "language", None))
    paths = write_report(Path(out_dir) / "compliance", build_report(items, settings, "corpus"))
    n = sum(len(it["hits"]) for it in items)
    print(f"compliance: {n} hits in {sum(1 for it in items if it['hits'])} of {len(items)} "
          f"files; report {paths[0]}", file=sys.stderr)
    return paths
