"""Audio in: any file, bytes or array -> 16 kHz mono float32 (decode.py), and speech regions
found by silero-vad (vad.py)."""
from .decode import (SAMPLE_RATE, AudioError, load_audio, probe_duration, resample,  # noqa: F401
                     stream_audio)
