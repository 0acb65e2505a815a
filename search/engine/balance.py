"""Balancing the end of a budget: predicted candidate seconds, and the longest started early.

Candidates differ in length by 60x (on av_digits 0.4-24 s; a one-cell attention bottleneck
of 64k FLOPs trains 7.8 s, a concat of 82k FLOPs 1.3 s). When a long one is asked last, one
worker trains it alone while the others have nothing left (experiments/RESULTS.md,
"Throughput": a 23 s candidate asked 61st of 64 held one of two slots alone for 7 s). So the searcher asks ahead the candidates a
strategy has fixed already (`fixed_asks`: asking them now or later gives the same specs), and
before each pack it starts the longest of them early, once what is left beside it would no longer
balance it (`promote`): longest-first at the tail, ask order everywhere else.

`Durations` predicts a candidate's seconds from those finished so far: a least-squares fit of
seconds on how many cells of each operator the spec has and its training settings' values. It only
orders and groups candidates: a poor fit costs balance, never correctness.
No Ray, no torch: the searcher and the tests use it alike.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from spaces.spec import ArchSpec

PLAN = 256  # asked ahead at most (a strategy whose asks never depend on results could give the whole budget)
KAPPA = 3.0  # start the longest once the rest predicted is under KAPPA x slots x its seconds
MIN_FIT = 3  # finished candidates before anything is predicted


def fixed_asks(strategy: Any) -> int:
    """How many of `strategy`'s next asks are fixed now (`fixed_asks`, 0 for a strategy that has none)."""
    n = getattr(strategy, "fixed_asks", 0)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0


def features(spec: ArchSpec) -> dict[str, float]:
    """What a spec's seconds are fitted on: how many cells have each operator (`op:<name>`), and
    each training setting's value (`train:<name>`: a batch size or a step count moves the
    seconds; a setting that does not gets no weight)."""
    out: dict[str, float] = {}
    for cell in spec.cells:
        out[f"op:{cell.op}"] = out.get(f"op:{cell.op}", 0.0) + 1.0
    for name, value in spec.train_settings.items():
        out[f"train:{name}"] = float(value)
    return out


class Durations:
    """Seconds of candidates, learnt from those finished: `add(spec, seconds)`, `predict(spec)`."""

    def __init__(self) -> None:
        self._rows: list[dict[str, float]] = []
        self._seconds: list[float] = []
        self._fit: tuple[dict[str, int], np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._seconds)

    def add(self, spec: ArchSpec, seconds: Any) -> None:
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and math.isfinite(seconds) \
                and seconds >= 0:
            self._rows.append(features(spec))
            self._seconds.append(float(seconds))
            self._fit = None

    def predict(self, spec: ArchSpec) -> float | None:
        """Predicted seconds (> 0), or None before `MIN_FIT` candidates have finished. A spec with
        an operator never seen gets the largest seconds seen: better early than last. A setting
        never seen counts for nothing."""
        if len(self) < MIN_FIT:
            return None
        index, weights = self._fitted()
        row = features(spec)
        if any(n.startswith("op:") and n not in index for n in row):
            return max(self._seconds)
        return max(float(self._vector(row, index) @ weights), 1e-3)

    @staticmethod
    def _vector(row: dict[str, float], index: dict[str, int]) -> np.ndarray:
        x = np.zeros(len(index) + 1)
        x[-1] = 1.0
        for n, v in row.items():
            if n in index:
                x[index[n]] = v
        return x

    def _fitted(self) -> tuple[dict[str, int], np.ndarray]:
        if self._fit is None:
            index = {n: i for i, n in enumerate(sorted({n for row in self._rows for n in row}))}
            a = np.stack([self._vector(row, index) for row in self._rows])
            b = np.asarray(self._seconds)
            # least squares (the least-norm fit where features move together, e.g. one cell
            # each), then no negative seconds per operator: a cell never saves time
            w = np.linalg.lstsq(a, b, rcond=None)[0]
            ops = [i for n, i in index.items() if n.startswith("op:")]
            w[ops] = np.maximum(w[ops], 0.0)
            self._fit = index, w
        return self._fit


def promote(predicted: Sequence[float | None], slots: int, kappa: float = KAPPA) -> int | None:
    """The index of the candidate to start next out of order, or None (go in ask order).

    The longest predicted one, once the rest predicted is less than `kappa * slots` times its
    seconds: started later, it could finish alone (with `kappa` >= 1 the others still have about
    its length of work each while it runs). Nothing is promoted while any prediction is unknown,
    nor with one slot (nobody to wait for).
    """
    if slots <= 1 or not predicted or any(p is None for p in predicted):
        return None
    values = [float(p) for p in predicted if p is not None]
    longest = max(range(len(values)), key=values.__getitem__)
    rest = sum(values) - values[longest]
    return longest if rest < kappa * slots * values[longest] else None

