"""MFAS's temperature-controlled sampling of K candidates, and the hypervolume scores we feed it.

MFAS (Pérez-Rúa et al., CVPR 2019, `search/tools.py`) turns scores into probabilities
`p = s / sum(s)`, sharpens them as `p^(1/T)` renormalised, and draws K without
replacement, with a temperature `T = (T0 - Tf) exp(-(it+1)^2 / sigma^2) + Tf` that cools
from near-uniform exploration to near-greedy exploitation.
"""
from __future__ import annotations

import math

import numpy as np

from search.pareto import hypervolume, pareto_mask

T0, TF, SIGMA = 10.0, 0.2, 4.0


def temperature(it: int, t0: float = T0, tf: float = TF, sigma: float = SIGMA) -> float:
    """MFAS's temperature at sampling step `it` (0-based)."""
    return (t0 - tf) * math.exp(-((it + 1.0) ** 2) / sigma**2) + tf


def sampling_probabilities(scores: np.ndarray, temp: float) -> np.ndarray:
    """`p = s / sum(s)`, then `p^(1/T)` renormalised; all-zero scores give uniform odds.

    Computed in log space, so a low temperature sharpens without underflowing to NaN.
    """
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1 or len(s) == 0 or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"scores must be a non-empty 1-D array of finite values >= 0, got {s!r}")
    if temp <= 0:
        raise ValueError(f"temperature must be > 0, got {temp}")
    if not s.any():
        return np.full(len(s), 1.0 / len(s))
    with np.errstate(divide="ignore"):
        logits = np.log(s / s.sum()) / temp
    powered = np.exp(logits - logits.max())
    return powered / powered.sum()


def sample_k(scores: np.ndarray, k: int, temp: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of `k` draws without replacement (fewer if fewer scores have non-zero odds)."""
    p = sampling_probabilities(scores, temp)
    k = min(k, int(np.count_nonzero(p)))
    return rng.choice(len(p), size=k, replace=False, p=p)


def hypervolume_gains(front: np.ndarray, candidates: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Hypervolume each candidate row (minimisation) would add to `front` on its own.

    Same value as `pareto.hypervolume_gain`, with the front's own volume computed once and
    candidates the front already (weakly) dominates skipped: most of them, late in a search.
    """
    front = np.asarray(front, dtype=float).reshape(-1, len(ref))
    front = front[pareto_mask(front)] if len(front) else front
    base = hypervolume(front, ref) if len(front) else 0.0
    gains = np.zeros(len(candidates))
    for i, c in enumerate(np.asarray(candidates, dtype=float)):
        if np.isnan(c).any() or not np.all(c < ref):
            continue
        if len(front) and np.all(front <= c, axis=1).any():
            continue
        gains[i] = max(hypervolume(np.vstack([front, c]), ref) - base, 0.0)
    return gains
