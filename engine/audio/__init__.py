"""Audio in: any file, bytes or array -> 16 kHz mono float32 (decode.py), and speech regions
found by silero-vad (vad.py)."""
from .decode import (SAMPLE_RATE, AudioError, AudioTooLong, load_audio,  # noqa: F401
                     probe_duration, resample, stream_audio)
