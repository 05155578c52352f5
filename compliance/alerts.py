"""Alerts to a webhook: each alert POSTed as JSON with an HMAC signature, retried with backoff,
from one background thread, so a slow, hanging or refusing receiver never slows transcription.

Headers of every POST (the same for each retry of one alert)::

    Content-Type: application/json
    X-Compliance-Event-Id: alert_...            (receivers drop an id they already have)
    X-Compliance-Timestamp: 1765000000          (seconds; receivers refuse old ones)
    X-Compliance-Signature: sha256=HEX          HMAC-SHA256(secret, timestamp + "." + body)

``verify(secret, body, timestamp, signature)`` is the receiver's check. Bounds: ``max_queue``
alerts waiting (more are dropped and counted, never blocking the caller), ``timeout`` seconds per
POST, ``max_attempts`` tries per alert with backoff 0.5, 1, 2, 4 ... s, and an alert older than
``max_age`` seconds is given up (logged). Only 2xx counts as delivered.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

log = logging.getLogger("funasr_nano.compliance")


def sign(secret: str, body: bytes, timestamp: str) -> str:
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body,
                   hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, body: bytes, timestamp: str, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, body, timestamp), signature or "")


class WebhookSender:
    def __init__(self, url: str, secret: str | None = None, *, timeout: float = 2.0,
                 max_queue: int = 1000, max_attempts: int = 6, max_age: float = 60.0,
                 backoff: float = 0.5):
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"the alert webhook must be an http(s) URL, not {url[:80]!r}")
        self.url, self.secret = url, secret or ""
        self.timeout, self.max_attempts, self.max_age = timeout, max_attempts, max_age
        self.backoff = backoff
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.sent = self.dropped = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="compliance-webhook", daemon=True)
        self._thread.start()

    def submit(self, alert: dict) -> bool:
        """Queue one alert (a dict with an ``id``); False (and counted) when the queue is full."""
        try:
            self.queue.put_nowait((time.monotonic(), alert))
            return True
        except queue.Full:
            self.dropped += 1
            log.warning("alert webhook: queue full, alert %s dropped", alert.get("id"))
            return False

    def close(self, wait: float = 0.0) -> None:
        """Stop after the queue is empty (waiting at most ``wait`` seconds)."""
        deadline = time.monotonic() + wait
        while wait and not self.queue.empty() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()

    def _post(self, body: bytes, alert_id: str) -> bool:
        ts = str(int(time.time()))
        req = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "X-Compliance-Event-Id": alert_id,
            "X-Compliance-Timestamp": ts,
            "X-Compliance-Signature": sign(self.secret, body, ts),
            "User-Agent": "funasr-nano-compliance/1"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:  # noqa: S310 (http(s) only)
                return 200 <= r.status < 300
        except (urllib.error.URLError, OSError, ValueError) as e:
            log.info("alert webhook: %s not delivered (%s)", alert_id, type(e).__name__)
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                queued_at, alert = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            body = json.dumps(alert, ensure_ascii=False).encode("utf-8")
            alert_id = str(alert.get("id"))
            for attempt in range(self.max_attempts):
                if self._post(body, alert_id):
                    self.sent += 1
                    break
                wait = self.backoff * (2 ** attempt)
                if (attempt + 1 == self.max_attempts
                        or time.monotonic() + wait - queued_at > self.max_age
                        or self._stop.wait(wait)):
                    self.failed += 1
                    log.warning("alert webhook: %s given up after %d attempts", alert_id,
                                attempt + 1)
                    break
