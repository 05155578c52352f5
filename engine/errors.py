"""The one shape of a request value the user got wrong.

``param`` names the value (OpenAI's error object has the same field), so that every path can say
which one: the HTTP API in its 400 body, the realtime API in its error event, the CLI in its
message. Each area subclasses it to say where the value was checked."""
from __future__ import annotations


class ParamError(ValueError):
    """``str()`` is the reason; ``param`` the request field it is about (None: the request)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param
