"""Long audio: VAD segments decoded in batches and joined (transcribe.py), and the text,
subtitle and JSON writers for the segments (subtitles.py)."""
from .transcribe import transcribe_long  # noqa: F401
