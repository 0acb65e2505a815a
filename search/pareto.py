"""Multi-objective maths over a `(n_points, n_objectives)` array of values to MINIMISE, any number of columns.

Which objectives a run has, and how each becomes a column, is `search.objectives`.

Pure numpy. `to_minimise` is the one place that flips maximised objectives; every
other function here assumes smaller is better in every column.

Conventions shared by all functions:
- A row with any NaN (a failed or unfinished trial) is never on the front and
  adds no hypervolume.
- `+inf` is an ordinary, worst-possible value: it takes part in dominance and adds
  no hypervolume. `-inf` takes part in dominance, but `hypervolume` raises on a
  contributing point with `-inf`: its volume would be infinite and incomparable.
- Equal rows do not dominate each other: duplicates share a rank.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MODES = ("min", "max")


def to_minimise(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Return a float copy of `values` (n, k) or (k,) with every "max" objective negated."""
    values = np.asarray(values, dtype=float)
    if values.ndim not in (1, 2) or len(modes) != values.shape[-1]:
        raise ValueError(f"{len(modes)} modes for values of shape {values.shape}")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown mode {bad[0]!r}; expected one of {', '.join(MODES)}")
    sign = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    return values * sign


def _as_points(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=float)
    if points.ndim != 2:
        raise ValueError(f"points must be (n_points, n_objectives), got shape {points.shape}")
    return points


def _dominance_matrix(points: np.ndarray) -> np.ndarray:
    """`d[i, j]` is True when row i dominates row j. O(n^2 k) memory: fine for NAS sizes."""
    a, b = points[:, None, :], points[None, :, :]
    return np.all(a <= b, axis=-1) & np.any(a < b, axis=-1)


def non_dominated_sort(points: np.ndarray) -> np.ndarray:
    """Front rank of every row: 0 = Pareto front, 1 = front once 0 is removed, ...

    NaN rows get one rank past the last front (at least 1), so sorting by rank puts
    them last and rank 0 always means "on the front".
    """
    points = _as_points(points)
    valid = ~np.isnan(points).any(axis=1)
    idx = np.flatnonzero(valid)
    dom = _dominance_matrix(points[idx])
    n_dominators = dom.sum(axis=0)
    ranks = np.empty(len(points), dtype=np.intp)
    rank, done = 0, np.zeros(len(idx), dtype=bool)
    while not done.all():
        front = (n_dominators == 0) & ~done
        ranks[idx[front]] = rank
        done |= front
        n_dominators -= dom[front].sum(axis=0)
        rank += 1
    ranks[~valid] = max(rank, 1)
    return ranks


def pareto_mask(points: np.ndarray, by: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the rows no other row dominates (NaN rows excluded); with `by` (a boolean
    mask), only the rows it marks may dominate (the others are judged, never judges)."""
    points = _as_points(points)
    valid = ~np.isnan(points).any(axis=1)
    dom = _dominance_matrix(points[valid])
    if by is not None:
        dom = dom & np.asarray(by, dtype=bool)[valid][:, None]
    mask = np.zeros(len(points), dtype=bool)
    mask[valid] = ~dom.any(axis=0)
    return mask


def pareto_front(points: np.ndarray) -> np.ndarray:
    """The rows of `points` on the Pareto front, in input order (duplicates kept)."""
    points = _as_points(points)
    return points[pareto_mask(points)]


def hypervolume(points: np.ndarray, ref: Sequence[float] | np.ndarray) -> float:
    """Exact volume dominated by `points` and bounded by `ref`, any number of objectives.

    Only points strictly better than `ref` in every objective contribute; NaN rows
    are ignored. Raises on a non-finite `ref` or on a contributing `-inf`.
    Cost: O(n log n) for 2 objectives, O(n^2 log n) for 3 (slices along the last one).
    """
    points = _as_points(points)
    ref = np.asarray(ref, dtype=float)
    if ref.shape != (points.shape[1],):
        raise ValueError(f"ref has shape {ref.shape}, expected ({points.shape[1]},)")
    if not np.all(np.isfinite(ref)):
        raise ValueError(f"ref must be finite, got {ref.tolist()}")
    points = points[~np.isnan(points).any(axis=1)]
    points = points[np.all(points < ref, axis=1)]
    if np.isneginf(points).any():
        raise ValueError("a point with -inf below ref has infinite hypervolume")
    if len(points) == 0:
        return 0.0
    return float(_hv(np.unique(points, axis=0), ref))


def _hv(points: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of points all strictly inside ref: slice along the last objective."""
    k = points.shape[1]
    if k == 1:
        return float(ref[0] - points[:, 0].min())
    if k == 2:
        return _hv_2d(points, ref)
    points = points[np.argsort(points[:, -1], kind="stable")]
    depth = np.append(points[1:, -1], ref[-1]) - points[:, -1]
    return float(sum(
        d * _hv(points[: i + 1, :-1], ref[:-1]) for i, d in enumerate(depth) if d > 0
    ))


def _hv_2d(points: np.ndarray, ref: np.ndarray) -> float:
    """Sweep in x: each point adds the strip between it and the best y seen so far."""
    points = points[np.lexsort((points[:, 1], points[:, 0]))]
    best_y = np.minimum.accumulate(points[:, 1])
    y_above = np.append(ref[1], best_y[:-1])
    return float(np.sum((ref[0] - points[:, 0]) * np.maximum(y_above - points[:, 1], 0.0)))


def hypervolume_gain(
    front: np.ndarray, candidate: Sequence[float] | np.ndarray, ref: Sequence[float] | np.ndarray
) -> float:
    """Volume `candidate` adds to `front`: HV(front + candidate) - HV(front), >= 0."""
    front = _as_points(front)
    both = np.vstack([front, np.asarray(candidate, dtype=float)[None, :]])
    return max(hypervolume(both, ref) - hypervolume(front, ref), 0.0)


def hypervolume_contributions(points: np.ndarray, ref: Sequence[float] | np.ndarray) -> np.ndarray:
    """Exclusive contribution of each row: HV(all) - HV(all but that row).

    A duplicated row contributes 0 (its twin covers the same volume).
    """
    points = _as_points(points)
    total = hypervolume(points, ref)
    keep = np.ones(len(points), dtype=bool)
    out = np.empty(len(points))
    for i in range(len(points)):
        keep[i] = False
        out[i] = max(total - hypervolume(points[keep], ref), 0.0)
        keep[i] = True
    return out


def knee_point(points: np.ndarray) -> int:
    """Index (into `points`) of the front point closest to the ideal point.

    Definition (compromise solution): normalise each objective over the Pareto
    front to [0, 1] (a constant objective maps to 0), then take the front point
    with the smallest Euclidean distance to the origin. Works for fronts of any
    size and dimension: one point is its own knee. Ties go to the lexicographically
    smallest point (best first objective), then the lowest index, so the answer does
    not depend on row order. Front points with an infinite value cannot be scaled
    and are skipped; raises when no finite front point is left.
    """
    points = _as_points(points)
    idx = np.flatnonzero(pareto_mask(points) & np.isfinite(points).all(axis=1))
    if idx.size == 0:
        raise ValueError("no finite point on the Pareto front to choose a knee from")
    front = points[idx]
    low, span = front.min(axis=0), np.ptp(front, axis=0)
    scaled = np.divide(front - low, span, out=np.zeros_like(front), where=span > 0)
    dist = np.linalg.norm(scaled, axis=1)
    # lexsort: last key is primary -> distance, then objectives in order, then index.
    order = np.lexsort((idx, *front.T[::-1], dist))
    return int(idx[order[0]])
