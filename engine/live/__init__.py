"""Live transcription: a streaming session fed PCM chunks (session.py), its silero-vad
end-pointer (endpoint.py) and the stable prefix of partial text (stable.py)."""
from .endpoint import Boundary, Endpointer, VadOptions  # noqa: F401
from .session import LiveError, LiveEvent, LiveOptions, LiveSession, tokens_for  # noqa: F401
