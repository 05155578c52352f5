"""Recordings for the live tests and bench/compliance_live.py: example clips (the demo model's
languages, so its texts mean something) joined with pauses, as pcm16 at any rate, and the
offline text of a span."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "models" / "demo"


def recording(clips=("en.wav", "fi.wav"), rate: int = 24000, lead_s: float = 0.6,
              pause_s: float = 1.5, tail_s: float = 1.5) -> np.ndarray:
    """int16 mono at ``rate``: ``lead_s`` of silence, then the clips with ``pause_s`` between
    them, then ``tail_s`` of silence (long enough for the server's end of speech)."""
    from engine.audio import load_audio
    parts = [np.zeros(int(lead_s * 16000), np.float32)]
    for i, name in enumerate(clips):
        if i:
            parts.append(np.zeros(int(pause_s * 16000), np.float32))
        parts.append(load_audio(str(ROOT / "example" / name)))
    parts.append(np.zeros(int(tail_s * 16000), np.float32))
    x = load_audio((np.concatenate(parts), 16000), rate)
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def span(pcm: np.ndarray, rate: int, start: float, end: float) -> np.ndarray:
    """The samples of [start, end) seconds (the times a completed event carries)."""
    return pcm[int(round(start * rate)):int(round(end * rate))]


def wav_bytes(pcm: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, pcm, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()
