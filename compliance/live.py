"""Compliance in a live session: each final (and, if asked, each stable partial) scanned as it
comes, an alert per new hit, the session's hits kept for its audit report.

``LiveMonitor(detector, emit, session_id, partials=False, webhook=None)``; the live path calls
``on_partial(item, stable_text, start, end, language)`` and ``on_final(item, text, start, end,
language)``; ``emit(alert)`` gets each alert once (the /v1/realtime ``compliance.alert`` event);
the webhook (compliance.alerts.WebhookSender) gets the same dict. The alert::

    {"type": "compliance.alert", "id": "alert_...", "session_id": ..., "item_id": ...,
     "stage": "final"|"partial", "transcript": the text scanned (the final, or the stable
     text of the partial), "hit": {label, kind, category, term, severity, text, start, end,
     time_source, speaker, context, char_start, char_end}}

Times are seconds of session audio (word times when the final has them, else the utterance's
start/end); ``char_start``/``char_end`` place ``hit.text`` in ``transcript``.
"""
from __future__ import annotations

import logging
import secrets

from .report import build_report

log = logging.getLogger("funasr_nano.compliance")
MAX_SESSION_HITS = 10_000


class LiveMonitor:
    def __init__(self, detector, emit, session_id: str, partials: bool = False, webhook=None):
        self.detector, self.emit, self.session_id = detector, emit, session_id
        self.partials, self.webhook = partials, webhook
        self.hits: list[dict] = []
        self.seconds = 0.0
        self.language = None
        self._alerted: dict[str, set] = {}
        self._hypothesis_keys: dict[str, set] = {}   # the hits of an item's last partial
        self._hotwords_key, self._hotwords = None, []

    def _hits(self, text: str, start: float, end: float, language, words=None,
              speaker=None) -> list[tuple[tuple, dict]]:
        """(key, hit) of each hit in ``text``; the key is the n-th hit of a term (or kind) in
        the utterance: the same hit in a partial and in its final, even where ITN, case or
        punctuation moved it."""
        if not text:
            return []
        seg = {"start": start, "end": end, "text": text}
        if words:
            seg["words"] = words
        if speaker is not None:
            seg["speaker"] = speaker
        try:
            hits = self.detector.scan({"language": language, "text": text, "segments": [seg]})
        except Exception:  # noqa: BLE001 - alerts are optional; the transcript goes on
            log.exception("live compliance scan failed")
            return []
        out, nth = [], {}
        for h in hits:
            what = (h["label"], h["term"] or h["category"])
            nth[what] = nth.get(what, 0) + 1
            out.append(((*what, nth[what]), h))
        return out

    def _alert(self, item: str, key: tuple, h: dict, stage: str, transcript: str) -> None:
        """One alert per hit of an utterance (``key``), sent at once."""
        seen = self._alerted.setdefault(item, set())
        if key in seen:
            return
        seen.add(key)
        public = {k: h[k] for k in ("label", "kind", "category", "term", "severity", "text",
                                    "start", "end", "time_source", "speaker", "context",
                                    "char_start", "char_end")}
        alert = {"type": "compliance.alert", "id": "alert_" + secrets.token_hex(8),
                 "session_id": self.session_id, "item_id": item, "stage": stage,
                 "transcript": transcript, "hit": public}
        if len(self.hits) < MAX_SESSION_HITS:
            self.hits.append({k: v for k, v in public.items()
                              if k not in ("char_start", "char_end")})
        try:
            self.emit(alert)
        except Exception:  # noqa: BLE001
            log.exception("live compliance: emitting an alert failed")
        if self.webhook is not None:
            self.webhook.submit(alert)

    def hotwords(self, given, model) -> list[str]:
        """The session's hotwords for a decode: ``given`` (the session's own) plus the most
        severe watch terms as far as ``model``'s caps allow (none where it was trained without
        hotword prompts). Worked out once per list and model."""
        key = (tuple(given or ()), id(model))
        if key != self._hotwords_key:
            extra = self.detector.watch.hotwords() if self.detector.watch is not None else []
            merge = getattr(model, "hotwords_with", None)
            self._hotwords = merge(list(given or ()), extra) if merge and extra else list(
                given or ())
            self._hotwords_key = key
        return list(self._hotwords)

    def on_partial(self, item: str, stable_text: str, start: float, end: float, language=None,
                   hypothesis: str | None = None):
        """With ``partials``: a hit in the stable text, or in two partial hypotheses in a row
        (the hit is stable where the words around it still change), is alerted at once."""
        if not self.partials:
            return
        for key, h in self._hits(stable_text, start, end, language):
            self._alert(item, key, h, "partial", stable_text)
        if hypothesis is None:
            return
        now = self._hits(hypothesis, start, end, language)
        before = self._hypothesis_keys.get(item, set())
        for key, h in now:
            if key in before:
                self._alert(item, key, h, "partial", hypothesis)
        self._hypothesis_keys[item] = {key for key, _ in now}

    def on_final(self, item: str, text: str, start: float, end: float, language=None,
                 words=None, speaker=None):
        self.seconds = max(self.seconds, float(end or 0))
        self.language = language or self.language
        for key, h in self._hits(text, start, end, language, words, speaker):
            self._alert(item, key, h, "final", text)
        self._alerted.pop(item, None)
        self._hypothesis_keys.pop(item, None)

    def report(self) -> dict:
        settings = {**self.detector.settings(), "partials": self.partials,
                    "webhook": self.webhook is not None}
        return build_report([{"source": self.session_id, "duration": round(self.seconds, 3),
                              "language": self.language, "hits": self.hits}], settings, "live")
