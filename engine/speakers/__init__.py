"""Speaker diarization: who spoke when (see docs/speakers.md)."""
