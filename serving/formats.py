"""Result rows -> response bodies (API), download files (page) and the CLI's files.

``file_text`` is the one renderer of a transcript as a subtitle or turns file (SRT, VTT, TSV,
RTTM) for all three; the writers are engine.longform.subtitles' and engine.speakers'. A row's
``segments`` are the long-form segments or one segment 0..duration (see serving.pipeline).
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import zlib
from pathlib import Path

from engine.language_id import language_fields, openai_languages
from engine.languages import describe_language  # noqa: F401 (kept for importers)
from engine.longform.subtitles import to_srt, to_tsv, to_txt, to_vtt

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json",
               "diarized_json": "application/json",
               "text": "text/plain; charset=utf-8", "srt": "application/x-subrip; charset=utf-8",
               "vtt": "text/vtt; charset=utf-8"}


def verbose_json(row: dict, model: str | None = None) -> dict:
    """OpenAI's verbose_json shape (segments carry the fields OpenAI clients read), plus ours."""
    segments = []
    for i, s in enumerate(row["segments"]):
        segments.append({"id": i, "seek": 0, "start": float(s["start"]), "end": float(s["end"]),
                         "text": s.get("text", ""), "tokens": [], "temperature": 0.0,
                         # real or absent: avg_logprob and no_speech_prob (never placeholders)
                         "compression_ratio": compression_ratio(s.get("text", "")),
                         **({"flag": s["flag"]} if s.get("flag") else {}),
                         **{k: s[k] for k in ("language", "language_probability", "speaker")
                            if k in s}})
    # timestamp_granularities[]=word: OpenAI's top-level words (ours may add "estimated")
    words = {"words": list(row["words"])} if row.get("words") is not None else {}
    return {"task": "transcribe",
            **_language(row),
            "duration": row["duration"], "text": row["text"], "segments": segments, **words,
            "model": model, "processing_time": row["processing_time"],
            "finish_reason": row.get("finish_reason"), **speakers_fields(row),
            **({"compliance": row["compliance"]} if row.get("compliance") else {})}


def speakers_fields(row: dict) -> dict:
    """Our extension fields where speakers were asked for: the labels, and why there are none."""
    if "speakers" not in row:
        return {}
    return {"speakers": row["speakers"], "speakers_error": row.get("speakers_error")}


def diarized_json(row: dict, model: str | None = None) -> dict:
    """OpenAI's diarized_json (TranscriptionDiarized): segments of type
    ``transcript.text.segment`` with id, start, end, text and speaker; plus our fields."""
    segments = [{"type": "transcript.text.segment", "id": f"seg_{i}",
                 "start": float(s["start"]), "end": float(s["end"]),
                 "text": s.get("text", ""), "speaker": s.get("speaker") or ""}
                for i, s in enumerate(row["segments"])]
    return {"task": "transcribe", "duration": row["duration"], "text": row["text"],
            "segments": segments,
            "usage": {"type": "duration", "seconds": float(row["duration"])},
            **describe_language(row.get("language")), "model": model,
            "processing_time": row["processing_time"], **speakers_fields(row)}


def compression_ratio(text: str) -> float:
    """As Whisper computes it: UTF-8 bytes over their zlib-compressed size (a looping text
    compresses well: Whisper's decoder distrusts a segment above 2.4). 0.0 for no text."""
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 3) if data else 0.0


def _language(row: dict) -> dict:
    """language, language_name; detected: language_probability and OpenAI's languages."""
    langs = openai_languages(row)
    return {**language_fields(row), **({"languages": langs} if langs else {})}


FILE_FORMATS = ("srt", "vtt", "tsv", "rttm")


def file_text(row: dict, fmt: str, stem: str | None = None) -> str:
    """A row as a file of ``fmt`` (FILE_FORMATS): subtitle cues or TSV rows from its segments
    (speakers shown where it has them), or its speaker turns, overlaps included, as RTTM with
    ``stem`` as the file id (default: its file name's stem)."""
    if fmt == "rttm":
        from engine.speakers.transcript import to_rttm
        return to_rttm(row.get("turns") or [], stem or Path(str(row.get("file") or "audio")).stem)
    writer = {"srt": to_srt, "vtt": to_vtt, "tsv": to_tsv}.get(fmt)
    if writer is None:
        raise ValueError(f"format must be one of {', '.join(FILE_FORMATS)}")
    return writer(row.get("segments") or [])


def render(row: dict, response_format: str, model: str | None = None) -> tuple[str, str]:
    """(body, media type) for one transcribed file."""
    if response_format == "json":
        # OpenAI's json is {"text"}; the language, spelled as everywhere here, comes along
        body = json.dumps({"text": row["text"], **_language(row)}, ensure_ascii=False)
    elif response_format == "verbose_json":
        body = json.dumps(verbose_json(row, model), ensure_ascii=False)
    elif response_format == "diarized_json":
        body = json.dumps(diarized_json(row, model), ensure_ascii=False)
    elif response_format == "text":
        body = row["text"] + "\n"
    elif response_format in ("srt", "vtt"):
        body = file_text(row, response_format)
    else:
        raise ValueError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}")
    return body, MEDIA_TYPES[response_format]


def combined_transcript(rows: list[dict]) -> str:
    """The page's transcript box: the text alone for one file, a titled block per file else."""
    if len(rows) == 1:
        r = rows[0]
        return _body(r) if not r["error"] else f"[error] {r['error']}"
    blocks = []
    for r in rows:
        body = _body(r) if not r["error"] else f"[error] {r['error']}"
        blocks.append(f"[{r['file']}]\n{body}")
    return "\n\n".join(blocks)


def _body(row: dict) -> str:
    """A row's text; grouped by speaker ("A: ..." paragraphs) where speakers were found."""
    if row.get("speakers"):
        from engine.speakers.transcript import by_speaker
        return by_speaker(row["segments"])
    if row.get("speakers_error"):
        return f"{row['text']}\n\n[no speakers: {row['speakers_error']}]"
    return row["text"]


def _safe_stem(name: str) -> str:
    stem = Path(name).stem or "audio"
    return re.sub(r"[^\w.-]+", "_", stem)[:80] or "audio"


DOWNLOADS_ROOT = Path(tempfile.gettempdir()) / "funasr_nano_downloads"
KEEP_DOWNLOADS_S = 2 * 3600


def _fresh_download_dir() -> Path:
    """A new folder per request; folders older than KEEP_DOWNLOADS_S are removed on the way
    (Gradio serves copies from its own cache, which it prunes itself)."""
    DOWNLOADS_ROOT.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in DOWNLOADS_ROOT.iterdir():
        try:
            if now - old.stat().st_mtime > KEEP_DOWNLOADS_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(dir=DOWNLOADS_ROOT))


def write_downloads(rows: list[dict], model: str | None = None,
                    directory: str | None = None) -> list[str]:
    """transcript.txt and transcript.json for the batch, and an .srt and a .vtt per file."""
    out = Path(directory) if directory else _fresh_download_dir()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    ok = [r for r in rows if not r["error"]]
    if len(rows) == 1:
        txt = to_txt(rows[0]["segments"]) if ok else ""
    else:
        txt = "".join(f"[{r['file']}]\n{to_txt(r['segments'])}\n" for r in ok)
    (out / "transcript.txt").write_text(txt, encoding="utf-8")
    paths.append(str(out / "transcript.txt"))
    doc = [{"file": r["file"], "duration": r["duration"], **language_fields(r),
            "processing_time": r["processing_time"], "text": r["text"], "error": r["error"],
            "segments": r["segments"], **speakers_fields(r),
            **({"words": r["words"]} if "words" in r else {})} for r in rows]
    (out / "transcript.json").write_text(
        json.dumps({"model": model, "files": doc}, ensure_ascii=False, indent=2) + "\n",
        encoding="utf-8")
    paths.append(str(out / "transcript.json"))
    used = set()
    for r in ok:
        stem = _safe_stem(r["file"])
        base, n = stem, 1
        while stem in used:
            n += 1
            stem = f"{base}_{n}"
        used.add(stem)
        # and the speaker turns, overlaps included, as diarization tools read them
        for ext in ("srt", "vtt") + (("rttm",) if r.get("turns") else ()):
            p = out / f"{stem}.{ext}"
            p.write_text(file_text(r, ext, stem), encoding="utf-8")
            paths.append(str(p))
    return paths
