"""Speech segmentation with silero-vad, streaming, for audio of any length.

The model is the ONNX "sequence" export that ships inside the ``silero-vad`` wheel
(``silero_vad/data/silero_vad_16k_sequence.onnx``): no download, CPU only, run with onnxruntime.
It gives the same per-window probabilities as the stock frame-by-frame model (silero's own tests
say bit-exact; checked here too) but takes a whole block of 32 ms windows per call, about 3-4x
faster on CPU. The ``silero_vad`` Python package is deliberately not imported: its ``__init__``
imports torch and calls ``torch.set_num_threads(1)``, which would slow the ASR engine down.

Memory stays flat for long files: audio goes through in blocks and only one float per 32 ms
window is kept (60 min = 112,500 floats = 450 kB). Segmentation then works on those
probabilities alone.
"""

from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np

from engine import MAX_UTTERANCE_S, SAMPLE_RATE
WINDOW = 512                       # samples per silero window at 16 kHz
WINDOW_S = WINDOW / SAMPLE_RATE    # 32 ms
_CONTEXT = 64                      # silero prepends the previous window's last 64 samples
_MAX_WINDOWS_PER_CALL = 512        # ~16 s of audio per ONNX call

THRESHOLD = 0.5                    # silero defaults: speech starts at >= 0.5 ...
NEG_THRESHOLD = THRESHOLD - 0.15   # ... and only counts as silence below 0.35 (hysteresis)
MIN_SPEECH_S = 0.1                 # shorter bursts are clicks or breaths, not words
SHORT_JOIN_MAX_GAP_S = 2.0         # a too-short segment is joined to a neighbour at most this far

# Segmentation defaults, chosen by bench/segments.py (README "Long audio"). On 10 minutes of real
# clips joined by 2-4 s pauses, the old 0.1 s pad and 0.8 s merge gap left 2.2-2.6% of the speech
# frames outside every segment: silero-vad starts late on soft onsets and ends early on trailing
# consonants, and the AISHELL clips open with ~0.5 s of low sound (-20 dB) before the first word. These keep all but
# 0.19-0.26% (three seeds), with every edge at most 0.46 s into a pause.
MAX_SEGMENT_S = MAX_UTTERANCE_S   # no segment longer than the model's utterances (engine)
MIN_SILENCE_S = 0.25     # a speech region ends after this much silence
PAD_S = 0.45             # context on each side. An edge then lies at most the pad plus one 32 ms
                         # window inside a pause, while the speech kept varies with the recording,
                         # so the pad is as large as a 0.5 s bound on edges allows (faster-whisper
                         # pads 0.4 s)
MERGE_GAP_S = 1.5        # neighbours closer than this are merged (was 5 s: a 3 s pause between
                         # two speakers or languages then fell inside one segment, whose text the
                         # model mixes up; bench/results/segments-vm-20261203-1514.md: 1.5 s keeps
                         # all but 0.47% of the speech frames, 5 s 0.26%) ...
TARGET_SEGMENT_S = 20.0  # ... while the merged segment stays within this: fewer edges to lose
                         # speech at, and more context for the decoder. 30 s keeps slightly more,
                         # and cues are timed by word times (engine.alignment) inside them
MIN_SEGMENT_S = 1.0      # shorter segments join a neighbour (very short inputs decode poorly)

_session = None
_session_lock = threading.Lock()


def model_path() -> str:
    """Path of the ONNX model inside the installed silero-vad wheel (found without importing it)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.origin:
        raise RuntimeError("silero-vad is not installed (pip install silero-vad)")
    path = os.path.join(os.path.dirname(spec.origin), "data", "silero_vad_16k_sequence.onnx")
    if not os.path.exists(path):
        raise RuntimeError(f"silero-vad model missing: {path} (silero-vad >= 6.2.2 ships it)")
    return path


def _get_session():
    global _session
    with _session_lock:
        if _session is None:
            import onnxruntime as ort
            opts = ort.SessionOptions()
            # One thread: the VAD is cheap, and the cores belong to the ASR model.
            opts.intra_op_num_threads = opts.inter_op_num_threads = 1
            _session = ort.InferenceSession(model_path(), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        return _session   # InferenceSession.run is thread-safe


class SpeechProbabilities:
    """Streaming silero-vad: ``push`` 16 kHz float32 audio in blocks of any size and get one speech
    probability per complete 32 ms window; ``finish`` zero-pads the last partial window."""

    def __init__(self):
        self._session = _get_session()
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(_CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)
        self.n_samples = 0

    def push(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        self.n_samples += len(block)
        buf = np.concatenate([self._pending, block]) if len(self._pending) else block
        n_full = len(buf) // WINDOW * WINDOW
        self._pending = buf[n_full:].copy()
        return self._run(buf[:n_full])

    def finish(self) -> np.ndarray:
        if not len(self._pending):
            return np.zeros(0, np.float32)
        last = np.zeros(WINDOW, np.float32)
        last[:len(self._pending)] = self._pending
        self._pending = np.zeros(0, np.float32)
        return self._run(last)

    def _run(self, audio: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(audio), _MAX_WINDOWS_PER_CALL * WINDOW):
            frames = audio[i:i + _MAX_WINDOWS_PER_CALL * WINDOW].reshape(-1, WINDOW)
            contexts = np.empty((len(frames), _CONTEXT), np.float32)
            contexts[0] = self._context
            contexts[1:] = frames[:-1, -_CONTEXT:]
            self._context = frames[-1, -_CONTEXT:].copy()
            probs, self._h, self._c = self._session.run(
                ["speech_probs", "hn", "cn"],
                {"input": np.concatenate([contexts, frames], axis=1), "h": self._h, "c": self._c})
            out.append(probs.reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, np.float32)


def speech_probabilities(audio, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """(one probability per 32 ms window, number of samples) for a 1-D array, an iterable of 1-D
    16 kHz blocks (e.g. ``engine.audio.stream_audio(path)``), or a path / bytes."""
    if isinstance(audio, (str, os.PathLike, bytes, bytearray)):
        from .decode import stream_audio
        audio = stream_audio(audio)
    elif isinstance(audio, np.ndarray) or hasattr(audio, "detach"):
        from .decode import load_audio
        audio = [load_audio((audio, sr) if sr != SAMPLE_RATE else audio)]
    elif sr != SAMPLE_RATE:
        raise ValueError("blocks must be at 16 kHz; resample them (engine.audio.stream_audio does)")
    vad = SpeechProbabilities()
    probs = [vad.push(block) for block in audio]
    probs.append(vad.finish())
    return np.concatenate(probs), vad.n_samples


def segment_speech(audio_blocks_or_array, sr: int = SAMPLE_RATE,
                   max_segment_s: float = MAX_SEGMENT_S, min_silence_s: float = MIN_SILENCE_S,
                   merge_gap_s: float = MERGE_GAP_S, min_segment_s: float = MIN_SEGMENT_S,
                   threshold: float = THRESHOLD, pad_s: float = PAD_S,
                   target_segment_s: float | None = TARGET_SEGMENT_S) -> list[tuple[float, float]]:
    """Speech segments ``[(start_s, end_s), ...]`` of at most ``max_segment_s`` seconds.

    Input: a 1-D array at ``sr``, an iterable of 16 kHz blocks (streamed, memory stays flat), or a
    path. See ``segments_from_probabilities`` for the parameters.
    """
    probs, n = speech_probabilities(audio_blocks_or_array, sr)
    return segments_from_probabilities(probs, n, max_segment_s=max_segment_s,
                                       min_silence_s=min_silence_s, merge_gap_s=merge_gap_s,
                                       min_segment_s=min_segment_s, threshold=threshold,
                                       pad_s=pad_s, target_segment_s=target_segment_s)


def segments_from_probabilities(probs: np.ndarray, n_samples: int,
                                max_segment_s: float = MAX_SEGMENT_S,
                                min_silence_s: float = MIN_SILENCE_S,
                                merge_gap_s: float = MERGE_GAP_S,
                                min_segment_s: float = MIN_SEGMENT_S,
                                threshold: float = THRESHOLD, pad_s: float = PAD_S,
                                target_segment_s: float | None = TARGET_SEGMENT_S,
                                ) -> list[tuple[float, float]]:
    """Turn per-window probabilities into segments.

    1. Speech regions: start at ``prob >= threshold``, end after ``min_silence_s`` below
       ``threshold - 0.15`` (silero's hysteresis). Regions under 0.1 s are dropped.
    2. Regions closer than ``merge_gap_s`` are joined while the result fits
       ``target_segment_s`` (``None``: ``max_segment_s``, never more). When a group would get too
       long, it is cut at its longest pause, preferring pauses in the later part so pieces stay
       long. A single region longer than ``max_segment_s`` is cut at the quietest window (lowest
       smoothed probability) in the second half of the allowed span, so not mid-word; a single
       region between the target and the maximum stays whole.
    3. Segments shorter than ``min_segment_s`` join their nearer neighbour when that fits and the
       gap is under 2 s (very short inputs decode poorly; a longer gap would blur subtitle times).
    4. ``pad_s`` of context is added on each side, never past the midpoint to a neighbour.
    """
    if max_segment_s <= 2 * pad_s + WINDOW_S:
        raise ValueError("max_segment_s is too small")
    probs = np.asarray(probs, dtype=np.float32)
    limit = int((max_segment_s - 2 * pad_s) / WINDOW_S)    # in windows, leaving room for padding
    target = limit if target_segment_s is None else min(
        limit, max(1, int((target_segment_s - 2 * pad_s) / WINDOW_S)))
    regions = _speech_regions(probs, threshold, max(1, round(min_silence_s / WINDOW_S)))
    regions = [r for piece in regions for r in _split_long(probs, *piece, limit)]
    groups = _group(regions, round(merge_gap_s / WINDOW_S), target)
    groups = _join_short(groups, round(min_segment_s / WINDOW_S),
                         round(SHORT_JOIN_MAX_GAP_S / WINDOW_S), limit)
    return _pad(groups, n_samples / SAMPLE_RATE, pad_s)


def _speech_regions(probs, threshold, min_silence):
    neg = max(threshold - 0.15, 0.01)
    regions, start, silence_from = [], None, None
    for i, p in enumerate(probs.tolist()):
        if start is None:
            if p >= threshold:
                start, silence_from = i, None
        elif p >= threshold:
            silence_from = None
        elif p < neg:
            if silence_from is None:
                silence_from = i
            if i - silence_from + 1 >= min_silence:
                regions.append((start, silence_from))
                start = None
    if start is not None:
        regions.append((start, silence_from if silence_from is not None else len(probs)))
    min_len = max(1, round(MIN_SPEECH_S / WINDOW_S))
    return [(s, e) for s, e in regions if e - s >= min_len]


def _smoothed(probs, start, end):
    seg = probs[start:end]
    if len(seg) < 3:
        return seg
    return np.convolve(np.pad(seg, 1, mode="edge"), np.ones(3, np.float32) / 3, mode="valid")


def quietest_point(probs: np.ndarray, start: int, end: int) -> int:
    """Window index in [start, end) with the lowest (3-window smoothed) speech probability; among
    near-ties the latest, so cuts land as close to the limit as possible."""
    sm = _smoothed(probs, start, end)
    if len(sm) == 0:
        return start
    return start + int(np.flatnonzero(sm <= sm.min() + 0.02)[-1])


def _split_long(probs, start, end, limit):
    """Cut a region longer than ``limit`` windows at its quietest points."""
    pieces = []
    while end - start > limit:
        cut = quietest_point(probs, start + limit // 2, start + limit)
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


def _group(regions, merge_gap, limit):
    """Join regions separated by gaps under ``merge_gap``, a group never exceeding ``limit`` (unless
    it is one region); cut at the best pause."""
    groups, cur = [], []
    for r in regions:
        if not cur:
            cur = [r]
            continue
        if r[0] - cur[-1][1] >= merge_gap:
            groups.append((cur[0][0], cur[-1][1]))
            cur = [r]
            continue
        cur.append(r)
        while len(cur) > 1 and cur[-1][1] - cur[0][0] > limit:
            k = _best_cut(cur, limit)
            groups.append((cur[0][0], cur[k][1]))
            cur = cur[k + 1:]
    if cur:
        groups.append((cur[0][0], cur[-1][1]))
    return groups


def _best_cut(cur, limit):
    """Index k: cut after cur[k]. The right part must fit; prefer the longest pause whose left
    part is at least a third of the limit (avoids slivers), else the longest feasible pause."""
    # the last region alone may be over the limit (a merge target shorter than the maximum
    # segment): then it can only start a group of its own
    feasible = ([k for k in range(len(cur) - 1) if cur[-1][1] - cur[k + 1][0] <= limit]
                or [len(cur) - 2])
    gap = lambda k: (cur[k + 1][0] - cur[k][1], k)   # noqa: E731 - later wins ties
    long_left = [k for k in feasible if cur[k][1] - cur[0][0] >= limit // 3]
    return max(long_left or feasible, key=gap)


def _join_short(groups, min_len, max_gap, limit):
    out = list(groups)
    i = 0
    while i < len(out):
        s, e = out[i]
        if e - s >= min_len or len(out) == 1:
            i += 1
            continue
        options = []
        if i > 0 and s - out[i - 1][1] <= max_gap and e - out[i - 1][0] <= limit:
            options.append((s - out[i - 1][1], i - 1))
        if i + 1 < len(out) and out[i + 1][0] - e <= max_gap and out[i + 1][1] - s <= limit:
            options.append((out[i + 1][0] - e, i + 1))
        if not options:
            i += 1
            continue
        j = min(options)[1]
        a, b = min(i, j), max(i, j)
        out[a:b + 1] = [(out[a][0], out[b][1])]
        i = a   # the joined segment may still be short
    return out


def _pad(groups, duration, pad_s):
    segs = []
    for i, (s, e) in enumerate(groups):
        start, end = s * WINDOW_S, min(e * WINDOW_S, duration)
        lo = 0.0 if i == 0 else (groups[i - 1][1] * WINDOW_S + start) / 2
        hi = duration if i + 1 == len(groups) else (end + groups[i + 1][0] * WINDOW_S) / 2
        segs.append((round(max(lo, start - pad_s), 3), round(min(hi, end + pad_s), 3)))
    return segs


def speech_regions(probs: np.ndarray, n_samples: int | None = None, threshold: float = THRESHOLD,
                   min_silence_s: float = MIN_SILENCE_S) -> list[tuple[float, float]]:
    """The speech regions ``[(start_s, end_s), ...]`` of step 1 of
    ``segments_from_probabilities`` (no merging, no padding): where words can be
    (engine.alignment moves word edges that fall in a pause onto them)."""
    probs = np.asarray(probs, dtype=np.float32)
    end_s = (n_samples / SAMPLE_RATE) if n_samples is not None else len(probs) * WINDOW_S
    regions = _speech_regions(probs, threshold, max(1, round(min_silence_s / WINDOW_S)))
    return [(s * WINDOW_S, min(e * WINDOW_S, end_s)) for s, e in regions]
