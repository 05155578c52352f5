"""Inference engine for Fun-ASR-(MLT-)Nano-2512: one concern per module (see docs/LAYOUT.md)."""

SAMPLE_RATE = 16000   # the model's input rate: every path resamples to it (the one definition)

# The model is trained on utterances up to about 30 s; longer input makes it loop or stop early.
# Every path (the page, the API, the CLI, corpus runs, live finals) follows one rule: audio up
# to this length is decoded as one utterance, longer audio is cut at pauses into segments no
# longer than this (engine.longform, engine.audio.vad.MAX_SEGMENT_S).
MAX_UTTERANCE_S = 30.0


def decoded_whole(seconds: float, limit: float | None = None) -> bool:
    """Whether ``seconds`` of audio is decoded as one utterance (else engine.longform);
    ``limit``: a caller's own cap in place of MAX_UTTERANCE_S (the CLI's
    --max-segment-seconds)."""
    return seconds <= (MAX_UTTERANCE_S if limit is None else limit)
