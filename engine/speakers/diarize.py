"""Who spoke when: a recording -> speaker turns, overlaps included.

pyannote 3.x's recipe, on the packaged models (engine.speakers.models):

1. 10 s windows every ``step_s`` seconds, streamed from the file (memory: one block of audio and
   a few numbers per window, so flat for hour-long files). Segmentation gives each window's
   three local speakers and where two overlap (the powerset pair classes).
2. One embedding per local speaker and window, from the frames where that speaker is alone
   (all its frames when it is never alone), volume-normalised as GE2E was trained. A local
   speaker whose speech falls in parts apart (pauses of 0.6 s or more, each part with 1 s alone)
   gets one embedding per part: the segmentation sometimes gives two voices taking turns the
   same local speaker, and the parts then find their own clusters.
3. Clustering of those embeddings: agglomerative, Ward linkage (scipy), cut at the number
   of speakers given or at a distance threshold clipped to min/max; clusters too small to be a
   speaker join the nearest large one. Each part goes to the nearest cluster, but two local
   speakers heard at once in a window are two people (the less similar one moves).
4. Reconstruction: each window's local activities are moved onto the global clusters and summed
   over windows (Hann-weighted, so window edges count less); how many people speak in each frame
   is the windows' average count of active local speakers (the outer 10% of each window left
   out: it hears half a context); the frame goes to that many clusters, the most active first.
   So two speakers at once give two overlapping turns.

Deterministic: no random numbers, one thread for the ONNX model, stable sorting everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..audio import stream_audio
from . import models
from .models import (
    FRAME_STEP,
    LOCAL_SPEAKERS,
    N_FRAMES,
    POWERSET,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
)

STEP_S = 2.5                 # window step: 4 looks at each moment (pyannote uses 1 s; see docs)
BATCH = 8                    # windows per segmentation call
MIN_EMBED_FRAMES = 20        # local speakers active fewer frames (~0.34 s) get no embedding
MIN_CLEAN_FRAMES = 60        # below this many frames alone, all the speaker's frames are used
THRESHOLD = 1.65             # Ward-linkage distance (unit vectors) that separates speakers
MIN_CLUSTER_FRACTION = 0.04  # smaller clusters are not speakers of their own (estimated count)
TARGET_RMS = 10 ** (-30 / 20)   # GE2E's training volume (-30 dBFS), raised to, never lowered
MAX_SPEAKERS = 32
LINKAGE = "ward"             # best of centroid/average/complete/ward on the bench (docs/speakers.md)
REF_EMBEDDINGS = 24          # about as many (window, speaker) embeddings as a 30 s file gives
COUNT_BIAS = 0.5             # frame's speaker count: windows' mean count rounded half up
WARM_UP = 0.1                # each window's first and last 10% do not count speakers (edges)
SPLIT_PAUSE_S = 0.6          # a local speaker's speech is cut at pauses this long ...
SPLIT_MIN_S = 1.0            # ... into pieces holding this much speech alone, embedded apart
SAME_PIECE = 0.62            # neighbouring pieces this similar (cosine) are one voice again


@dataclass
class Turn:
    start: float
    end: float
    speaker: str

    def as_dict(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "speaker": self.speaker}


@dataclass
class Diarization:
    turns: list[Turn]
    speakers: list[str]                  # labels in order of first speech
    duration: float
    centroids: dict = field(default_factory=dict)    # label -> unit embedding
    seconds: float = 0.0                 # processing time

    @property
    def num_speakers(self) -> int:
        return len(self.speakers)

    def speaker_at(self, start: float, end: float) -> str | None:
        """The speaker talking most within [start, end] (nearest turn when nobody does)."""
        best, best_overlap = None, 0.0
        for t in self.turns:
            o = min(end, t.end) - max(start, t.start)
            if o > best_overlap:
                best, best_overlap = t.speaker, o
        if best is None and self.turns:
            mid = (start + end) / 2
            best = min(self.turns, key=lambda t: (max(t.start - mid, mid - t.end, 0.0), t.start)).speaker
        return best


def letters(i: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA ..."""
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s


# --------------------------------------------------------------------------- windows

def _windows(blocks, step: int):
    """(start sample, 10 s window) pairs from a stream of blocks, the last padded with zeros,
    then the total number of samples (as the last item, an int)."""
    buf, buf_start, nxt, total = np.zeros(0, np.float32), 0, 0, 0
    for block in blocks:
        buf = np.concatenate([buf, block.astype(np.float32, copy=False)])
        total += len(block)
        while nxt + WINDOW_SAMPLES <= buf_start + len(buf):
            yield nxt, buf[nxt - buf_start:nxt - buf_start + WINDOW_SAMPLES]
            nxt += step
        # keep the last window's worth (and a frame): the file's final window, aligned on its
        # end, starts before the next step's (dropping it all gave that window wrong audio)
        drop = max(0, min(nxt - buf_start, len(buf) - WINDOW_SAMPLES - FRAME_STEP))
        buf, buf_start = buf[drop:], buf_start + drop
    last_full_end = nxt - step + WINDOW_SAMPLES if nxt else 0
    if total and (nxt == 0 or last_full_end < total):
        start = max(0, total - WINDOW_SAMPLES) if nxt else 0
        # align on the frame grid so its frames land on the same global frames
        start = (start // FRAME_STEP) * FRAME_STEP if nxt else 0
        w = buf[start - buf_start:start - buf_start + WINDOW_SAMPLES]
        yield start, np.pad(w, (0, WINDOW_SAMPLES - len(w)))
    yield total


def _frame_of(samples) -> np.ndarray:
    """Segmentation frame index within a window for a sample offset (frame centres)."""
    return np.clip(np.round((np.asarray(samples) - FRAME_FIELD_HALF) / FRAME_STEP), 0,
                   N_FRAMES - 1).astype(np.int64)


FRAME_FIELD_HALF = models.FRAME_FIELD / 2


class _Collector:
    """Runs the models on batches of windows and keeps what clustering needs, per window."""

    def __init__(self, embedder):
        self.seg, self.emb = models.get_segmentation(), embedder
        self.starts, self.hard, self.embs = [], [], []
        self.tracks = []    # (window, local speaker, first frame, end frame) per embedding
        self._pending = []

    def add(self, start: int, window: np.ndarray):
        self._pending.append((start, window))
        if len(self._pending) >= BATCH:
            self.flush()

    def flush(self):
        if not self._pending:
            return
        starts = [s for s, _ in self._pending]
        wins = np.stack([w for _, w in self._pending])
        self._pending = []
        probs = self.seg(wins)                                  # (n, 589, 7)
        hard = POWERSET[probs.argmax(-1)]                       # (n, 589, 3) who speaks
        selections, owners = [], []
        for w in range(len(wins)):
            feats = self.emb.features(wins[w])
            centres = np.arange(len(feats)) * 160 + getattr(self.emb, "frame_offset", 0)
            fidx = _frame_of(centres)
            alone = hard[w].sum(1) == 1
            for s in range(LOCAL_SPEAKERS):
                active = hard[w][:, s] > 0
                if active.sum() < MIN_EMBED_FRAMES:
                    continue
                for lo, hi in _pieces(active, alone):
                    piece = active.copy()
                    piece[:lo] = piece[hi:] = False
                    sel = self._selection(wins[w], feats, fidx, piece, alone)
                    if sel is not None:
                        selections.append(sel)
                        owners.append((len(self.starts) + w, s, lo, hi))
        e, owners = _join_alike(self.emb.embed_many(selections), owners)
        self.embs.append(e)
        self.tracks += owners
        self.starts += starts
        self.hard.append(hard.astype(np.uint8))

    def _selection(self, win, feats, fidx, piece, alone):
        """The embedding model's input frames for one piece of a local speaker: where it speaks
        alone (all its frames when that is under half of them and under MIN_CLEAN_FRAMES)."""
        clean = piece & alone
        mask = clean if clean.sum() >= min(MIN_CLEAN_FRAMES, 0.5 * piece.sum()) else piece
        sel = feats[mask[fidx]]
        if len(sel) == 0:
            return None
        if self.emb.name == "ge2e":
            # volume normalisation on the speaker's own samples (power mels: gain^2)
            smask = np.repeat(mask, FRAME_STEP)[:WINDOW_SAMPLES]
            x = win[:len(smask)][smask]
            rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0
            if 0 < rms < TARGET_RMS:
                sel = sel * (TARGET_RMS / rms) ** 2
        return sel

    def arrays(self):
        self.flush()
        if not self.starts:
            return None
        embs = [e for e in self.embs if len(e)]
        X = np.concatenate(embs) if embs else np.zeros((0, 1), np.float32)
        T = np.array(self.tracks, np.int64).reshape(-1, 4)
        return np.array(self.starts), np.concatenate(self.hard), T, X


def _join_alike(e: np.ndarray, owners: list) -> tuple[np.ndarray, list]:
    """Neighbouring pieces of one local speaker whose embeddings are alike (SAME_PIECE) join
    again: one voice's parts can differ (JFK's clip splits into two clusters once its parts
    are embedded apart), and two voices given one local speaker are less alike. On the tuning
    mixtures, pieces of different voices were at most 0.60 alike, of one voice 0.51-0.88."""
    out_e, out_o = [], []
    for v, o in zip(e, owners):
        if out_o and out_o[-1][:2] == o[:2] and out_o[-1][3] == o[2] and \
                float(_unit(out_e[-1]) @ v) >= SAME_PIECE:
            out_o[-1] = (o[0], o[1], out_o[-1][2], o[3])
            out_e[-1] = out_e[-1] + v
            continue
        out_e.append(v.copy())
        out_o.append(o)
    return (_unit(np.stack(out_e)) if out_e else e), out_o


def _pieces(active: np.ndarray, alone: np.ndarray) -> list[tuple[int, int]]:
    """Frame ranges cutting one local speaker of a window into the parts embedded apart.

    segmentation-3.0 sometimes gives two voices that take turns within a window the same local
    speaker (in the turn-taking bench, 46 of 91 windows): so a local speaker's speech
    is cut at pauses of SPLIT_PAUSE_S or more into pieces that each hold SPLIT_MIN_S of speech
    alone, and each piece gets its own embedding (and cluster). Short runs join the nearest
    piece; one range (the whole window) when there are fewer than two such pieces."""
    gap = int(SPLIT_PAUSE_S * SAMPLE_RATE / FRAME_STEP)
    need = SPLIT_MIN_S * SAMPLE_RATE / FRAME_STEP
    edges = np.flatnonzero(np.diff(np.concatenate([[0], active.astype(np.int8), [0]])))
    runs: list[list[int]] = []
    for a, b in zip(edges[::2], edges[1::2]):
        if runs and a - runs[-1][1] < gap:
            runs[-1][1] = b
        else:
            runs.append([int(a), int(b)])
    longs = [(a, b) for a, b in runs if (active[a:b] & alone[a:b]).sum() >= need]
    if len(longs) < 2:
        return [(0, N_FRAMES)]
    mids = [0] + [(longs[i][1] + longs[i + 1][0]) // 2 for i in range(len(longs) - 1)]
    return list(zip(mids, mids[1:] + [N_FRAMES]))


# --------------------------------------------------------------------------- clustering

def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)


def cluster(X: np.ndarray, num: int | None = None, min_n: int = 1, max_n: int = MAX_SPEAKERS,
            threshold: float = THRESHOLD) -> np.ndarray:
    """Cluster ids 0..k-1 for unit vectors ``X`` (ids in order of first appearance)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    n = len(X)
    if n == 0:
        return np.zeros(0, np.int64)
    if n == 1:
        return np.zeros(1, np.int64)
    Z = linkage(X.astype(np.float64), method=LINKAGE, metric="euclidean")
    if num is not None:
        labels = fcluster(Z, t=min(num, n), criterion="maxclust")
    else:
        # Ward's merge distance grows as the square root of the clusters' sizes, so a fixed
        # cut splits long recordings into more speakers (20 repeats of a 2-voice clip gave 10):
        # the threshold, set on 30 s files (about REF_EMBEDDINGS embeddings), grows alike, and
        # shrinks alike for fewer (with a floor at 1, three repeats of a 2-voice clip gave 3).
        scale = np.sqrt(n / REF_EMBEDDINGS) if LINKAGE == "ward" else 1.0
        labels = fcluster(Z, t=threshold * scale, criterion="distance")
        labels = _absorb_small(X, labels, max(2, int(np.ceil(MIN_CLUSTER_FRACTION * n))))
        k = len(set(labels))
        if k > max_n or k < min_n:
            labels = fcluster(Z, t=min(max(k, min_n), max_n, n), criterion="maxclust")
    _, first = np.unique(labels, return_index=True)
    order = {lab: i for i, lab in enumerate(labels[np.sort(first)])}
    return np.array([order[lab] for lab in labels], np.int64)


def _absorb_small(X, labels, min_size):
    ids, counts = np.unique(labels, return_counts=True)
    large = ids[counts >= min_size]
    if len(large) == 0 or len(large) == len(ids):
        return labels
    cents = _unit(np.stack([X[labels == i].mean(0) for i in large]))
    out = labels.copy()
    for i in ids[counts < min_size]:
        m = labels == i
        out[m] = large[np.argmax(_unit(X[m].mean(0)) @ cents.T)]
    return out


def _assign(sim: np.ndarray, tracks: np.ndarray, hard: np.ndarray) -> np.ndarray:
    """Each track's cluster: the nearest centroid, except that two local speakers of one window
    heard at the same time are two people: the less similar of them takes its next cluster."""
    assign = np.argmax(sim, axis=1)
    if sim.shape[1] < 2:
        return assign

    def frames(t):
        w, s, a, b = tracks[t]
        m = np.zeros(N_FRAMES, bool)
        m[a:b] = hard[w][a:b, s] > 0
        return m

    for w in np.unique(tracks[:, 0]):
        idx = np.flatnonzero(tracks[:, 0] == w)
        if len(set(tracks[idx, 1].tolist())) < 2:
            continue
        masks = {t: frames(t) for t in idx}
        for i in idx:
            for j in idx:
                if (i < j and tracks[i, 1] != tracks[j, 1] and assign[i] == assign[j]
                        and (masks[i] & masks[j]).any()):
                    weak = i if sim[i, assign[i]] < sim[j, assign[j]] else j
                    assign[weak] = int(np.argsort(-sim[weak], kind="stable")[1])
    return assign


# --------------------------------------------------------------------------- pipeline

def diarize(src, *, num_speakers: int | None = None, min_speakers: int | None = None,
            max_speakers: int | None = None, embedding_model: str | None = None,
            known: dict | None = None, step_s: float = STEP_S, name: str | None = None,
            max_seconds: float | None = None, threshold: float = THRESHOLD) -> Diarization:
    """Diarize ``src`` (a path, bytes, file object, ``(array, sr)`` or 16 kHz array).

    ``num_speakers`` fixes the count; else it is estimated within ``min_speakers`` ..
    ``max_speakers``. ``known``: ``{name: unit embedding}`` (``reference_embedding``): a cluster
    that matches a known voice takes its name, the others get letters. Raises
    ``engine.audio.AudioError`` for unreadable audio.
    """
    import time
    t0 = time.perf_counter()
    embedder = models.get_embedding(embedding_model)
    step = max(FRAME_STEP, int(round(step_s * SAMPLE_RATE / FRAME_STEP)) * FRAME_STEP)
    col = _Collector(embedder)
    total = 0
    for item in _windows(stream_audio(src, block_seconds=30.0, name=name,
                                      max_seconds=max_seconds), step):
        if isinstance(item, int):
            total = item
            break
        col.add(*item)
    return finish(col.arrays(), total, num_speakers=num_speakers, min_speakers=min_speakers,
                  max_speakers=max_speakers, known=known, threshold=threshold, t0=t0)


def finish(arrays, total, *, num_speakers=None, min_speakers=None, max_speakers=None,
           known=None, threshold=THRESHOLD, t0=None) -> Diarization:
    """Clustering and reconstruction of what ``_Collector`` kept (``arrays``) for ``total``
    samples."""
    import time
    t0 = time.perf_counter() if t0 is None else t0
    duration = total / SAMPLE_RATE
    if arrays is None:
        return Diarization([], [], duration, seconds=time.perf_counter() - t0)
    starts, hard, tracks, X = arrays
    n_win = len(starts)

    # --- clustering of the tracks' embeddings (a local speaker in a window, or a piece of one)
    if len(X) == 0:
        return Diarization([], [], duration, seconds=time.perf_counter() - t0)
    lo = min_speakers or 1
    hi = max_speakers or MAX_SPEAKERS
    ids = cluster(X, num_speakers, lo, hi, threshold)
    k = int(ids.max()) + 1
    cents = _unit(np.stack([X[ids == i].mean(0) for i in range(k)]))
    assign = _assign(X @ cents.T, tracks, hard)

    # --- reconstruction on the global frame grid
    offs = starts // FRAME_STEP
    n_glob = int(max(offs.max() + N_FRAMES, -(-total // FRAME_STEP)))
    act = np.zeros((n_glob, k), np.float32)
    cnt = np.zeros(n_glob, np.float32)
    cover = np.zeros(n_glob, np.float32)
    hann = np.hanning(N_FRAMES + 2)[1:-1].astype(np.float32)
    warm = int(round(WARM_UP * N_FRAMES))
    for w in range(n_win):
        # a window's edges see half a context: other windows count the speakers there, except
        # at the file's own start and end, which no other window covers
        weight = np.ones(N_FRAMES, np.float32)
        if warm and w > 0:
            weight[:warm] = 0
        if warm and w < n_win - 1:
            weight[-warm:] = 0
        sl = slice(offs[w], offs[w] + N_FRAMES)
        cnt[sl] += hard[w].sum(1) * weight
        cover[sl] += weight
    for (w, s, a, b), c in zip(tracks, assign):
        o = offs[w]
        act[o + a:o + b, c] += hann[a:b] * hard[w][a:b, s]
    count = np.floor(cnt / np.maximum(cover, 1e-9) + COUNT_BIAS).astype(np.int64)
    count = np.minimum(count, k)
    order = np.argsort(-act, axis=1, kind="stable")
    binary = np.zeros_like(act, dtype=bool)
    rank = np.arange(k)[None, :]
    chosen = rank < count[:, None]
    np.put_along_axis(binary, order, chosen, axis=1)
    binary &= act > 0
    n_valid = -(-total // FRAME_STEP)
    binary[n_valid:] = False

    # --- turns, labels in order of first speech
    raw = []
    for c in range(k):
        on = np.flatnonzero(np.diff(np.concatenate([[0], binary[:, c].astype(np.int8), [0]])))
        for a, b in zip(on[::2], on[1::2]):
            s = (a * FRAME_STEP + FRAME_FIELD_HALF - FRAME_STEP / 2) / SAMPLE_RATE
            e = ((b - 1) * FRAME_STEP + FRAME_FIELD_HALF + FRAME_STEP / 2) / SAMPLE_RATE
            raw.append((max(0.0, s), min(duration, e), c))
    raw.sort(key=lambda t: (t[0], t[1], t[2]))
    first = []
    for _, _, c in raw:
        if c not in first:
            first.append(c)
    names = _name_clusters(cents, first, known)
    turns = [Turn(s, e, names[c]) for s, e, c in raw if e > s]
    speakers = [names[c] for c in first]
    centroids = {names[c]: cents[c] for c in first}
    return Diarization(turns, speakers, duration, centroids, time.perf_counter() - t0)


KNOWN_THRESHOLD = 0.75       # cosine similarity a cluster needs to take a known voice's name


def _name_clusters(cents, first, known):
    names, n = {}, 0
    matched = {}
    if known:
        from scipy.optimize import linear_sum_assignment
        kn = list(known)
        ref = _unit(np.stack([known[x] for x in kn]))
        if ref.shape[1] == cents.shape[1] and first:
            sim = cents[first] @ ref.T
            rows, cols = linear_sum_assignment(-sim)
            for r, c in zip(rows, cols):
                if sim[r, c] >= KNOWN_THRESHOLD:
                    matched[first[r]] = kn[c]
    for c in first:
        if c in matched:
            names[c] = matched[c]
        else:
            names[c] = letters(n)
            n += 1
    return names


def reference_embedding(audio: np.ndarray, embedding_model: str | None = None) -> np.ndarray | None:
    """A unit embedding of one voice from a short clip (16 kHz), from the frames segmentation
    hears speech in; None when it hears under 1 s of speech."""
    emb = models.get_embedding(embedding_model)
    seg = models.get_segmentation()
    a = np.asarray(audio, np.float32)[:WINDOW_SAMPLES]
    win = np.pad(a, (0, WINDOW_SAMPLES - len(a)))
    hard = POWERSET[seg(win[None])[0].argmax(-1)]
    n_real = max(1, (len(a) - models.FRAME_FIELD) // FRAME_STEP + 1)
    speech = hard.sum(1) > 0
    speech[n_real:] = False
    if speech.sum() * FRAME_STEP < SAMPLE_RATE:
        return None
    feats = emb.features(win)
    fidx = _frame_of(np.arange(len(feats)) * 160 + getattr(emb, "frame_offset", 0))
    sel = feats[speech[fidx]]
    if emb.name == "ge2e":
        m = np.repeat(speech, FRAME_STEP)[:WINDOW_SAMPLES]
        x = win[:len(m)][m]
        rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
        if 0 < rms < TARGET_RMS:
            sel = sel * (TARGET_RMS / rms) ** 2
    return emb.embed_many([sel])[0]
