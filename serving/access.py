"""Who may use /v1/*: nobody needs credentials without --api-key and --auth; with them, a
matching 'Authorization: Bearer KEY' or (with --auth) HTTP Basic user:pass."""
from __future__ import annotations

import base64
import binascii
import hmac

from .errors import error_response


def credentials_ok(authorization: str | None, settings) -> bool:
    """Whether this Authorization header value carries the configured key or login. False when
    none is configured (there is nothing to prove)."""
    scheme, _, value = (authorization or "").partition(" ")
    value = value.strip()
    if settings.api_key and scheme.lower() == "bearer" and hmac.compare_digest(
            value.encode(), settings.api_key.encode()):
        return True
    if settings.auth and scheme.lower() == "basic":
        try:
            given = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(given.encode(), settings.auth.encode())
    return False


def access_required(settings) -> bool:
    return bool(settings.api_key or settings.auth)


def denied_response(settings):
    """The 401 for a request without valid credentials."""
    what = "an API key: 'Authorization: Bearer KEY'" if settings.api_key else "HTTP Basic auth"
    return error_response(401, f"this server requires {what}", None, "invalid_api_key",
                          headers={"WWW-Authenticate": "Bearer" if settings.api_key else "Basic",
                                   "Connection": "close"})


def check_access(request, settings):
    """None when ``request`` (HTTP or WebSocket) may use /v1/*, else the 401 response."""
    if not access_required(settings) or credentials_ok(request.headers.get("authorization"),
                                                       settings):
        return None
    return denied_response(settings)
