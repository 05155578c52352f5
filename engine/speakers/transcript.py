"""Speakers on a transcript: the spans to transcribe, labels on segments and words, RTTM.

The transcript is cut where the speaker changes by transcribing speaker turns instead of VAD
segments (``speaker_spans``): each span is one voice, so its text needs no splitting and the
transcription costs what it costs without speakers. Where the recognizer gives word times,
each word gets the speaker heard most during it.
"""
from __future__ import annotations

from .diarize import Diarization

MAX_SPAN_S = 25.0        # under the recognizer's 30 s
MERGE_GAP_S = 1.0        # one voice's turns closer than this are transcribed together
PAD_S = 0.2
MIN_SPAN_S = 0.25


def speaker_spans(d: Diarization, max_span_s: float = MAX_SPAN_S) -> list[tuple[float, float, str]]:
    """Non-overlapping ``(start, end, speaker)`` spans covering the turns, in time order.

    Where two people speak at once, the one already speaking keeps the floor until the other
    takes over (a short interjection inside someone's turn goes into that turn's span: its
    words cannot be separated from the main voice's anyway)."""
    turns = sorted(d.turns, key=lambda t: (t.start, -t.end))
    flat: list[list] = []
    for t in turns:
        if flat and t.end <= flat[-1][1]:        # inside the current span: an interjection
            continue
        s = max(t.start, flat[-1][1]) if flat else t.start
        if flat and t.start < flat[-1][1] and t.speaker != flat[-1][2]:
            # overlap: the new voice starts where the old one's turn ends
            s = flat[-1][1]
        if flat and flat[-1][2] == t.speaker and s - flat[-1][1] < MERGE_GAP_S:
            flat[-1][1] = max(flat[-1][1], t.end)
            continue
        if t.end - s >= MIN_SPAN_S:
            flat.append([s, t.end, t.speaker])
    out = []
    for i, (s, e, spk) in enumerate(flat):
        lo = max(0.0, s - PAD_S, (flat[i - 1][1] + s) / 2 if i else 0.0)
        hi = min(d.duration or e + PAD_S, e + PAD_S, (e + flat[i + 1][0]) / 2
                 if i + 1 < len(flat) else e + PAD_S)
        n = max(1, int(-(-(hi - lo) // max_span_s)))
        step = (hi - lo) / n
        out += [(round(lo + k * step, 3), round(lo + (k + 1) * step, 3), spk) for k in range(n)]
    return out


def label_segments(segments: list[dict], d: Diarization, floor: Diarization | None = None
                   ) -> list[dict]:
    """Each segment (and each of its ``words``) gets ``speaker``; a segment whose words change
    speaker is cut there. ``floor``: the spans that were transcribed (``speaker_spans``), whose
    speaker a segment without words takes (default: the turns ``d``)."""
    out = []
    for seg in segments:
        words = seg.get("words")
        if words:
            for w in words:
                w["speaker"] = d.speaker_at(float(w["start"]), float(w["end"]))
            groups = [[words[0]]]
            for w in words[1:]:
                if w["speaker"] == groups[-1][-1]["speaker"]:
                    groups[-1].append(w)
                else:
                    groups.append([w])
            if len(groups) > 1:
                for g in groups:
                    out.append({**seg, "start": float(g[0]["start"]), "end": float(g[-1]["end"]),
                                "text": _join_words(g, seg.get("text", "")), "words": g,
                                "speaker": g[0]["speaker"]})
                continue
            seg["speaker"] = groups[0][0]["speaker"]
        else:
            seg["speaker"] = (floor or d).speaker_at(float(seg["start"]), float(seg["end"]))
        out.append(seg)
    return out


def _join_words(words, text):
    parts = [str(w.get("word", "")) for w in words]
    if any(p[:1].isspace() for p in parts):       # Whisper-style words carry their own spaces
        return "".join(parts).strip()
    spaced = " " in text
    return (" " if spaced else "").join(p.strip() for p in parts)


def to_rttm(turns, uri: str = "audio") -> str:
    """NIST RTTM: one ``SPEAKER`` line per turn, overlapping turns as they are. ``turns``: a
    Diarization, its Turns, or their dicts (``Turn.as_dict``)."""
    uri = "".join(c if c.isalnum() or c in "._-" else "_" for c in uri) or "audio"
    if isinstance(turns, Diarization):
        turns = turns.turns
    rows = [t.as_dict() if hasattr(t, "as_dict") else t for t in turns]
    return "".join(f"SPEAKER {uri} 1 {float(t['start']):.3f} "
                   f"{float(t['end']) - float(t['start']):.3f} <NA> <NA> "
                   f"{str(t['speaker']).replace(' ', '_')} <NA> <NA>\n" for t in rows)


def by_speaker(segments: list[dict]) -> str:
    """The transcript as a conversation: ``A: text`` paragraphs, one per change of speaker."""
    blocks = []
    for s in segments:
        text = " ".join(str(s.get("text", "")).split())
        if not text:
            continue
        spk = s.get("speaker") or "?"
        if blocks and blocks[-1][0] == spk:
            blocks[-1][1].append(text)
        else:
            blocks.append((spk, [text]))
    return "\n\n".join(f"{spk}: {' '.join(texts)}" for spk, texts in blocks)
