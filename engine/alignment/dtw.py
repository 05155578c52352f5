"""A monotonic path through a token x time cost matrix (dynamic time warping), as openai/whisper's
``timing.py`` finds one over its cross-attention. Plain numpy: a segment's matrix is at most a
few hundred tokens by a few hundred audio positions, one row at a time is vectorised except for
the left neighbour."""
from __future__ import annotations

import numpy as np


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path from (0, 0) to (N-1, M-1) with steps down, right or diagonal.
    Returns (row indices, column indices) along it, in order."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    move = np.zeros((n + 1, m + 1), np.int8)  # 0 diagonal, 1 down (row+1), 2 right (col+1)
    for i in range(1, n + 1):
        prev = acc[i - 1]
        diag, up = prev[:-1], prev[1:]
        best = np.minimum(diag, up)
        choice = np.where(diag <= up, 0, 1).astype(np.int8)
        row, mv, c = acc[i], move[i], cost[i - 1]
        left = np.inf
        for j in range(1, m + 1):  # the left neighbour is this row's own previous cell
            b, k = best[j - 1], choice[j - 1]
            if left < b:
                b, k = left, 2
            left = row[j] = c[j - 1] + b
            mv[j] = k
    i, j = n, m
    rows, cols = [], []
    while i > 0 and j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        k = move[i, j]
        if k == 0:
            i, j = i - 1, j - 1
        elif k == 1:
            i -= 1
        else:
            j -= 1
    return np.array(rows[::-1]), np.array(cols[::-1])


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median over ``width`` neighbours along the last axis (edges reflected), as whisper smooths
    its attention before the path."""
    if width <= 1 or x.shape[-1] < width:
        return x
    pad = width // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.median(windows, axis=-1)
