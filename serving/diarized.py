"""A file's transcript with speakers: diarize first, transcribe the speaker turns, label.

Called by serving.pipeline for a row whose request asked for speakers. The transcript never
depends on diarization: when it fails (or hears nobody), the file is transcribed as without
speakers and the row says why in ``speakers_error``.
"""
from __future__ import annotations

import logging

from engine.audio import AudioError, AudioTooLong
from engine.speakers.diarize import Diarization, Turn, diarize
from engine.speakers.options import SpeakerError, SpeakerRequest
from engine.speakers.transcript import label_segments, speaker_spans

from . import request_id

log = logging.getLogger("funasr_nano.app")


def transcribe_with_speakers(src, name: str, request, run_long, max_seconds=None) -> dict:
    """``run_long(spans or None) -> engine.longform result``. Returns that result with
    ``segments`` labelled, plus ``speakers`` (labels in order of first speech), ``turns``
    (the diarization, overlaps included) and ``speakers_error`` (None or why there are none)."""
    d, why = None, None
    try:
        d = diarize(src, name=name, max_seconds=max_seconds, **request.kwargs())
    except AudioTooLong:
        raise
    except AudioError:   # the transcription reports the unreadable file in its own words
        return {**run_long(None), "speakers": [], "turns": [], "speakers_error": None,
                "diarization": None}
    except Exception as e:  # noqa: BLE001 - an optional stage must not cost the transcript
        why = "speaker diarization failed: " + request_id.internal_error(
            log, f"diarization of {name}", e)
    if d is not None and not d.turns:
        why, d = "no speech was found to attribute to speakers", None
    if d is None:
        res = run_long(None)
        return {**res, "speakers": [], "turns": [], "speakers_error": why, "diarization": None}
    spans = speaker_spans(d)
    res = run_long([(s, e) for s, e, _ in spans])
    floor = Diarization([Turn(s, e, spk) for s, e, spk in spans], d.speakers, d.duration)
    segments = label_segments(list(res.get("segments") or []), d, floor)
    log.info("speakers: %s: %d speakers in %.2f s", name, d.num_speakers, d.seconds)
    return {**res, "segments": segments, "speakers": d.speakers,
            "turns": [t.as_dict() for t in d.turns], "speakers_error": None, "diarization": d}


# --------------------------------------------------------------------------- requests

MAX_REFERENCE_BYTES = 4 * 1024 * 1024     # a 10 s clip as a data URL, with room for wav


def _data_url_bytes(value: str, param: str) -> bytes:
    """The audio in a ``data:audio/...;base64,...`` URL (OpenAI's known_speaker_references[])."""
    import base64
    import binascii
    v = str(value or "").strip()
    if len(v) > MAX_REFERENCE_BYTES * 4 // 3 + 100:
        raise SpeakerError(f"{param}: a reference is over {MAX_REFERENCE_BYTES // 2**20} MB", param)
    if not v.startswith("data:") or ";base64," not in v[:100]:
        raise SpeakerError(f"{param}: give each reference as a data URL "
                           "(data:audio/wav;base64,...)", param)
    try:
        return base64.b64decode(v.split(";base64,", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise SpeakerError(f"{param}: the data URL is not valid base64", param) from None


def speaker_request(fields: dict, response_format: str, embedding_model: str | None = None):
    """A SpeakerRequest from an API form (``speakers``: auto | N | MIN-MAX, our extension;
    ``known_speaker_names[]`` / ``known_speaker_references[]`` as OpenAI sends them), or None
    when the request does not ask for speakers. Raises SpeakerError naming the field."""
    from engine.audio import load_audio
    from engine.speakers.diarize import reference_embedding
    from engine.speakers.options import REFERENCE_MAX_S, known_speakers, parse_count

    def getlist(key):
        return [str(x) for x in (fields.get(key) or fields.get(key + "[]") or []) if str(x)]

    count = fields.get("speakers")
    names, refs = getlist("known_speaker_names"), getlist("known_speaker_references")
    if response_format != "diarized_json" and count in (None, "") and not names and not refs:
        return None
    if str(count or "").strip().lower() in ("none", "off"):
        return None
    num, lo, hi = parse_count(count)
    clips = []
    for i, r in enumerate(refs):
        data = _data_url_bytes(r, "known_speaker_references[]")
        try:
            clips.append(load_audio(data, name=f"known_speaker_references[{i}]",
                                    max_seconds=REFERENCE_MAX_S + 0.5))
        except AudioError as e:
            raise SpeakerError(f"known_speaker_references[]: {e}", "known_speaker_references[]"
                               ) from None
    known = known_speakers(names, clips, lambda a: reference_embedding(a, embedding_model))
    return SpeakerRequest(num, lo, hi, known, embedding_model)


def settings_speaker_model(settings) -> str | None:
    """The operator's embedding model file (``--speaker-model``), if any."""
    return getattr(settings, "speaker_model", None)
