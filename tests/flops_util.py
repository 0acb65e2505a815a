"""Small helpers for hand FLOP counts (convention: see `fusion_ops/cost.py`)."""
from __future__ import annotations

import math


def linear(batch: int, d_in: int, d_out: int) -> int:
    """`x @ W.T` over a batch: 2 FLOPs per multiply-add."""
    return 2 * batch * d_in * d_out


def matmul(batch: int, n: int, k: int, m: int) -> int:
    """`(n, k) @ (k, m)` for each of `batch` items."""
    return 2 * batch * n * k * m


def fft(signals: int, n: int, real: bool) -> int:
    """`5 N log2 N` per complex transform of length N, half for a real one."""
    per = 5 * n * math.log2(n) if n > 1 else 0.0
    return round(signals * per * (0.5 if real else 1.0))


def batch_of(feats) -> int:
    return next(iter(feats.values())).shape[0]
