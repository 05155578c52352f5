"""Inference engine for Fun-ASR-(MLT-)Nano-2512: one concern per module (see docs/LAYOUT.md)."""
