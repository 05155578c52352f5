"""A WebSocket client that never reads (for bench/abuse.py and tests/test_abuse.py: every library
client reads its socket in the background). A hand-made handshake and masked text frames
(RFC 6455) over a plain socket with a small receive buffer, so the server's events back up on
the server."""
from __future__ import annotations

import base64
import os
import socket
import struct
import threading


def open_raw(host: str, port: int, path: str, headers: dict | None = None,
             rcvbuf: int = 4096, source: str | None = None) -> socket.socket:
    """Connect and upgrade; returns the socket after the 101 (what follows it stays unread)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source:
        s.bind((source, 0))
    s.settimeout(30)
    s.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if b" 101 " not in head.split(b"\r\n")[0]:
        raise ConnectionError(head.decode("latin-1"))
    return s


def drain_in_background(sock: socket.socket) -> threading.Thread:
    """Read and drop what the server sends, in a daemon thread, until the socket closes (a client
    that does read its events, as fast as it can)."""
    def drain():
        try:
            while sock.recv(1 << 16):
                pass
        except OSError:
            pass
    t = threading.Thread(target=drain, daemon=True)
    t.start()
    return t


def frame(text: str | bytes, opcode: int = 1) -> bytes:
    """One masked client frame (FIN set)."""
    data = text.encode() if isinstance(text, str) else text
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(data)) if n < 4096 else _mask(data, mask)
    return head + mask + body


def _mask(data: bytes, mask: bytes) -> bytes:
    import numpy as np
    arr = np.frombuffer(data, dtype=np.uint8)
    m = np.resize(np.frombuffer(mask, dtype=np.uint8), len(arr))
    return (arr ^ m).tobytes()
