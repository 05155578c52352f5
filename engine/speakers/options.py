"""What a user asks of diarization, checked: ``auto | N | MIN-MAX`` and known speakers.

``SpeakerError`` names the field (``param``) so the API can answer 400 with it and the CLI can
print it; the same checks run on every path.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .diarize import MAX_SPEAKERS
from ..errors import ParamError

REFERENCE_MIN_S, REFERENCE_MAX_S = 2.0, 10.0     # OpenAI's bounds for a known speaker's clip
MAX_KNOWN = 4                                    # OpenAI takes up to 4 known speakers
NAME_RE = re.compile(r"^[\w][\w .'-]{0,39}$")     # a label, not markup: letters, digits, . ' -


class SpeakerError(ParamError):
    """A speaker count or a known speaker that cannot be used."""


@dataclass
class SpeakerRequest:
    num: int | None = None
    min: int | None = None
    max: int | None = None
    known: dict = field(default_factory=dict)           # name -> unit embedding
    embedding_model: str | None = None

    def kwargs(self) -> dict:
        return dict(num_speakers=self.num, min_speakers=self.min, max_speakers=self.max,
                    known=self.known or None, embedding_model=self.embedding_model)


def parse_count(value, param: str = "speakers") -> tuple[int | None, int | None, int | None]:
    """``auto`` (or empty) -> (None, None, None); ``3`` -> (3, None, None); ``2-4`` -> (None, 2, 4)."""
    v = str(value if value is not None else "auto").strip().lower()
    if v in ("", "auto"):
        return None, None, None
    m = re.fullmatch(r"(\d{1,4})(?:\s*-\s*(\d{1,4}))?", v)
    if not m:
        raise SpeakerError(f"{param}: '{str(value)[:40]}' is not auto, a number or MIN-MAX "
                           "(e.g. 2-4)", param)
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else None
    for n in (lo, hi):
        if n is not None and not 1 <= n <= MAX_SPEAKERS:
            raise SpeakerError(f"{param}: {n} speakers is out of range; give 1 to "
                               f"{MAX_SPEAKERS}", param)
    if hi is None:
        return lo, None, None
    if hi < lo:
        raise SpeakerError(f"{param}: the range {lo}-{hi} is empty (MIN must not exceed MAX)",
                           param)
    return (lo, None, None) if lo == hi else (None, lo, hi)


def check_name(name: str, param: str = "known_speaker_names[]") -> str:
    n = str(name).strip()
    if not NAME_RE.fullmatch(n):
        raise SpeakerError(f"{param}: '{str(name)[:40]}' is not a usable name: 1-40 letters, "
                           "digits, spaces, . ' - or _, starting with a letter or digit", param)
    return n


def known_speakers(names, clips, embed, param_names="known_speaker_names[]",
                   param_refs="known_speaker_references[]") -> dict:
    """``{name: unit embedding}`` from names and 16 kHz clips (decoded by the caller).
    ``embed(audio) -> vector | None`` (engine.speakers.diarize.reference_embedding)."""
    names, clips = list(names or []), list(clips or [])
    if len(names) != len(clips):
        raise SpeakerError(f"{param_names} and {param_refs} must pair up: {len(names)} names, "
                           f"{len(clips)} references", param_refs)
    if len(names) > MAX_KNOWN:
        raise SpeakerError(f"{param_names}: at most {MAX_KNOWN} known speakers", param_names)
    out = {}
    for i, (name, clip) in enumerate(zip(names, clips)):
        name = check_name(name, param_names)
        if name in out:
            raise SpeakerError(f"{param_names}: '{name}' is given twice", param_names)
        if len(name) == 1 and name.isalpha() and name.isupper():
            raise SpeakerError(f"{param_names}: '{name}' looks like an automatic label (A, B, ...);"
                               " give a name", param_names)
        dur = len(clip) / 16000
        if not REFERENCE_MIN_S <= dur <= REFERENCE_MAX_S:
            raise SpeakerError(f"{param_refs}: the clip for '{name}' is {dur:.1f} s long; a "
                               f"reference must be {REFERENCE_MIN_S:g}-{REFERENCE_MAX_S:g} s of "
                               "that speaker alone", param_refs)
        e = embed(np.asarray(clip, np.float32))
        if e is None:
            raise SpeakerError(f"{param_refs}: the clip for '{name}' has under 1 s of speech "
                               "(silence?); give 2-10 s of that speaker talking", param_refs)
        out[name] = e
    return out
