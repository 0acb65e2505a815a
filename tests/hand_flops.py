"""Hand counts of each operator's forward FLOPs, written from its definition.

One function per registered operator: `(op, feats) -> int`, following the
convention in `fusion_ops/cost.py` (2 per multiply-add of a matrix product,
FFT `5 N log2 N` complex / half for real, 1 per interaction multiply, elementwise
work not counted). The registry-wide test fails for an operator missing here.
"""
from __future__ import annotations

import math


def linear(batch: int, d_in: int, d_out: int) -> int:
    """`x @ W.T` for a batch: 2 FLOPs per multiply-add."""
    return 2 * batch * d_in * d_out


def batch_of(feats) -> int:
    return next(iter(feats.values())).shape[0]


def rfft(batch: int, n: int) -> int:
    return round(batch * 2.5 * n * math.log2(n)) if n > 1 else 0


def concat(op, feats) -> int:
    return linear(batch_of(feats), sum(op.in_dims.values()), op.out_dim)


HAND_FLOPS = {
    "concat": concat,
}
