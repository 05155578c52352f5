"""Bounds on what a client can make the server hold, echo or repeat, in one place (docs/security.md
lists each with its reason), and the small helpers that apply them where a value enters:

* ``shown(value)``: a client's value as it may appear in an answer or a log line: at most
  ``ECHO_CHARS`` characters of its repr, control characters escaped. A 1 MB ``language`` comes
  back as 60 characters and a count, never whole.
* ``escape_control(text)``: control characters (newlines, ESC, ...) as ``\\n``, ``\\x1b``: a
  client's text cannot start a log line of its own (serving.logs applies it to every record).
* ``RateLimit``: a token bucket that *waits* instead of refusing: a connection over its rate is
  simply read more slowly (its own sends block on TCP), and nobody else notices.
* ``json_depth(value)``: the nesting depth of a parsed JSON value, iteratively.
"""
from __future__ import annotations

import asyncio
import re
import time

# ------------------------------------------------------------------ echoes
ECHO_CHARS = 60                 # a client's value quoted in an error message or a log line
EVENT_ID_CHARS = 64             # a realtime client's event_id echoed in an error event

# ------------------------------------------------------------------ /v1/realtime, per connection
REALTIME_MAX_DEPTH = 16         # JSON nesting of one event (OpenAI's events need 5)
REALTIME_EVENT_RATE = 200.0     # events read per second, sustained ...
REALTIME_EVENT_BURST = 400      # ... after a burst of this many
REALTIME_AUDIO_SPEED = 2.0      # seconds of audio read per second, sustained (2x real time) ...
REALTIME_AUDIO_BURST_S = 60.0   # ... after a burst of this much audio
REALTIME_BYTE_RATE = 1 << 20    # bytes of messages read per second, sustained (8x what audio
REALTIME_BYTE_BURST = 8 << 20   # at 2x real time takes) ... after a burst of this many
REALTIME_PONG_BEHIND_BYTES = 16 << 20   # a throttled client's pong may be this far behind
REALTIME_OUTBOX_EVENTS = 256    # server events a client may leave unread ...
REALTIME_OUTBOX_BYTES = 1 << 20  # ... or bytes of them; beyond either it is closed (1008)
WS_PING_INTERVAL_S = 10.0       # the server pings every WebSocket this often; a client that
WS_PING_TIMEOUT_S = 10.0        # has not answered (read) within this long is closed
REALTIME_PENDING_FINALS = 1     # finals waiting for the model; more: the socket is not read
REALTIME_FINALS_WAIT_S = 60.0   # (at most this long per message; then one more is read)
REALTIME_LIVE_FINAL_S = 30.0    # a final over this (a long commit) is long audio: decoded
                                # at "bulk" priority, after others' clips, as offline

# ------------------------------------------------------------------ HTTP, per connection
HEADER_TIMEOUT_S = 10.0         # a request's headers must be complete within this long

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_control(text: str) -> str:
    """``text`` with every control character written as a Python escape (one line, readable)."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def shown(value, limit: int = ECHO_CHARS) -> str:
    """A client's value for an error message: its repr, cut to ``limit`` characters (with the
    full length said), control characters escaped (repr does that for str)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    text = repr(value)
    if len(text) > limit:
        return text[:limit] + f"... ({len(text):,} characters)"
    return escape_control(text)


def json_depth(value) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``{}`` and ``[]`` are 1)."""
    depth, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            depth = max(depth, d)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            depth = max(depth, d)
            stack.extend((x, d + 1) for x in v)
    return depth


class RateLimit:
    """A token bucket: ``await take(n)`` returns at once while the bucket holds ``n``, else
    sleeps until it does (``rate`` per second refill, ``burst`` at most)."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = float(rate), float(burst)
        self.tokens, self.t = float(burst), time.monotonic()
        self.waited = 0.0       # seconds spent waiting, in all (for logs and tests)

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now

    def take_later(self, n: float = 1.0) -> float:
        """Take ``n`` now; the seconds to wait before going on (0 within the rate)."""
        n = min(float(n), self.burst)   # one big message waits for a full bucket, not forever
        self._refill()
        self.tokens -= n
        wait = max(0.0, -self.tokens / self.rate)
        self.waited += wait
        return wait

    async def take(self, n: float = 1.0) -> None:
        wait = self.take_later(n)
        if wait:
            await asyncio.sleep(wait)
