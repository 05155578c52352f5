"""Inference engine for Fun-ASR-(MLT-)Nano-2512: one concern per module (see docs/LAYOUT.md)."""

SAMPLE_RATE = 16000   # the model's input rate: every path resamples to it (the one definition)
