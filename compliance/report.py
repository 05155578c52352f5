"""The audit report: what was found, when, by whom, with context, and the settings used.

``build_report(items, settings)`` -> a JSON-able dict; ``render_html(report)`` -> one HTML page
that prints well (no scripts, no external resources, a print stylesheet). ``items`` are
``{"source": file name or session id, "duration": s, "language": code, "hits": [...]}``: one per
file, one for a live session, or one per file of a corpus run (the report then sums up over it).
"""
from __future__ import annotations

import datetime as _dt
import html
import json
from collections import Counter
from pathlib import Path


def build_report(items: list[dict], settings: dict, kind: str = "file") -> dict:
    hits = [h for it in items for h in it.get("hits", [])]
    by_category = Counter(h["label"] for h in hits)
    by_severity = Counter(h.get("severity") or "" for h in hits)
    by_speaker = Counter(h.get("speaker") or "unknown" for h in hits)
    return {"report": "compliance audit", "kind": kind,
            "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "settings": settings,
            "summary": {"sources": len(items),
                        "sources_with_hits": sum(1 for it in items if it.get("hits")),
                        "hits": len(hits), "by_label": dict(by_category.most_common()),
                        "by_severity": dict(by_severity.most_common()),
                        "by_speaker": dict(by_speaker.most_common()),
                        "audio_seconds": round(sum(float(it.get("duration") or 0)
                                                   for it in items), 3)},
            "items": [{"source": it.get("source"), "duration": it.get("duration"),
                       "language": it.get("language"), "error": it.get("error"),
                       "hits": [{k: h.get(k) for k in ("label", "kind", "category", "term",
                                                       "severity", "text", "start", "end",
                                                       "time_source", "speaker", "context")}
                                for h in it.get("hits", [])]} for it in items]}


def _ts(seconds) -> str:
    s = float(seconds or 0)
    return f"{int(s // 3600):02d}:{int(s % 3600 // 60):02d}:{s % 60:06.3f}"


_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#111}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.5em;border-bottom:1px solid #999}
table{border-collapse:collapse;width:100%;margin:.5em 0}th,td{border:1px solid #bbb;
padding:3px 6px;text-align:left;vertical-align:top}th{background:#eee}
.sev-critical,.sev-high{font-weight:bold}mark{background:#ffe08a}
.meta td:first-child{width:14em;color:#444}
@media print{body{margin:0;font-size:11px}h2{page-break-after:avoid}
tr{page-break-inside:avoid}th{background:#ddd!important;-webkit-print-color-adjust:exact}}"""


def render_html(report: dict) -> str:
    e = html.escape
    s = report["summary"]
    out = ["<!doctype html><html><head><meta charset='utf-8'>",
           f"<title>Compliance audit ({e(report['kind'])})</title><style>{_CSS}</style>",
           "</head><body>", f"<h1>Compliance audit: {e(report['kind'])}</h1>",
           "<table class='meta'>",
           f"<tr><td>Generated</td><td>{e(report['generated'])}</td></tr>",
           f"<tr><td>Sources</td><td>{s['sources']} ({s['sources_with_hits']} with hits, "
           f"{s['audio_seconds']:.1f} s of audio)</td></tr>",
           f"<tr><td>Hits</td><td>{s['hits']}</td></tr>"]
    for name, counts in (("By label", s["by_label"]), ("By severity", s["by_severity"]),
                         ("By speaker", s["by_speaker"])):
        text = ", ".join(f"{e(str(k))}: {v}" for k, v in counts.items()) or "none"
        out.append(f"<tr><td>{name}</td><td>{text}</td></tr>")
    out.append("</table><h2>Settings</h2><table class='meta'>")
    for k, v in report["settings"].items():
        shown = ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
        out.append(f"<tr><td>{e(str(k))}</td><td>{e(shown)}</td></tr>")
    out.append("</table>")
    for it in report["items"]:
        out.append(f"<h2>{e(str(it['source']))}</h2>")
        if it.get("error"):
            out.append(f"<p>Not transcribed: {e(str(it['error']))}</p>")
            continue
        if not it["hits"]:
            out.append("<p>Nothing found.</p>")
            continue
        out.append("<table><tr><th>When</th><th>Speaker</th><th>Label</th><th>Severity</th>"
                   "<th>Found</th><th>Context</th></tr>")
        for h in it["hits"]:
            ctx = e(h.get("context") or "")
            found = e(h.get("text") or "")
            if found and found in ctx:
                ctx = ctx.replace(found, f"<mark>{found}</mark>", 1)
            term = f" ({e(h['term'])})" if h.get("term") else ""
            out.append(f"<tr><td>{_ts(h['start'])}–{_ts(h['end'])}</td>"
                       f"<td>{e(str(h.get('speaker') or ''))}</td><td>{e(h['label'])}{term}</td>"
                       f"<td class='sev-{e(str(h.get('severity')))}'>{e(str(h.get('severity')))}"
                       f"</td><td>{found}</td><td>{ctx}</td></tr>")
        out.append("</table>")
    out.append("</body></html>\n")
    return "".join(out)


def write_report(path, report: dict) -> list[str]:
    """``path``.html and ``path``.json (``path`` with or without a suffix); returns both paths."""
    p = Path(path)
    base = p.with_suffix("") if p.suffix.lower() in (".html", ".json", ".htm") else p
    base.parent.mkdir(parents=True, exist_ok=True)
    html_path, json_path = base.with_suffix(".html"), base.with_suffix(".json")
    html_path.write_text(render_html(report), encoding="utf-8")
    json_path.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n",
                         encoding="utf-8")
    return [str(html_path), str(json_path)]
