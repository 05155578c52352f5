"""Speakers in a live session: each finished utterance gets a label as it completes.

Offline clustering needs the whole recording; live, each utterance's embedding is compared with
the voices heard so far in the session (a running mean per voice). The nearest one at cosine
similarity ``threshold`` or more gives its label (and absorbs the utterance); otherwise the
utterance starts a new voice, ``A``, ``B``, ... in order of first speech. Labels never change
once sent, so they stay consistent through the session.

The session's audio is kept for ``keep_s`` seconds (16 kHz), so memory is bounded however long
the session runs.
"""
from __future__ import annotations

import threading

import numpy as np

from . import models
from .diarize import TARGET_RMS, letters

THRESHOLD = 0.65      # GE2E cosine similarity: same-voice utterances mostly above, others below
MIN_S = 0.6           # shorter utterances take the label of the voice they are nearest to
KEEP_S = 120.0


class OnlineSpeakers:
    def __init__(self, rate: int = 16000, embedding_model: str | None = None,
                 threshold: float = THRESHOLD, max_speakers: int = 32, keep_s: float = KEEP_S):
        import soxr
        self.emb = models.get_embedding(embedding_model)
        self.threshold, self.max_speakers = threshold, max_speakers
        self.rate = rate
        self._resampler = soxr.ResampleStream(rate, 16000, 1, dtype="float32") if rate != 16000 \
            else None
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0                 # 16 kHz sample index of _buf[0]
        self._keep = int(keep_s * 16000)
        self._lock = threading.Lock()
        self.centroids: list[np.ndarray] = []
        self.counts: list[int] = []
        self.labels: list[str] = []

    def feed(self, samples: np.ndarray) -> None:
        """Session audio, int16 or float, at ``rate``, in order."""
        x = np.asarray(samples)
        x = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        with self._lock:
            self._buf = np.concatenate([self._buf, x])
            extra = len(self._buf) - self._keep
            if extra > 0:
                self._buf, self._buf_start = self._buf[extra:], self._buf_start + extra

    def label(self, start_s: float, end_s: float) -> str | None:
        """The speaker of session audio ``start_s``..``end_s`` (None: nothing kept of it)."""
        with self._lock:
            a = max(0, int(start_s * 16000) - self._buf_start)
            b = max(0, int(end_s * 16000) - self._buf_start)
            audio = self._buf[a:b].copy()
        if len(audio) < 0.2 * 16000:
            return None
        feats = self.emb.features(audio)
        if self.emb.name == "ge2e":
            rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
            if 0 < rms < TARGET_RMS:
                feats = feats * (TARGET_RMS / rms) ** 2
        e = self.emb.embed_many([feats])[0]
        return self.assign(e, len(audio) / 16000 < MIN_S)

    def assign(self, e: np.ndarray, short: bool = False) -> str:
        sims = [float(c @ e) / max(float(np.linalg.norm(c)), 1e-9) for c in self.centroids]
        best = int(np.argmax(sims)) if sims else -1
        if best >= 0 and (sims[best] >= self.threshold or short
                          or len(self.centroids) >= self.max_speakers):
            if not short:   # a short utterance's embedding is too noisy to move the voice
                self.centroids[best] = self.centroids[best] + e
                self.counts[best] += 1
            return self.labels[best]
        self.centroids.append(e.copy())
        self.counts.append(1)
        self.labels.append(letters(len(self.labels)))
        return self.labels[-1]
