"""The one-shot strategy's second phase: search next to the real front, the supernet as surrogate.

Once part of the budget has been spent on the predicted fronts, the stand-alone results say
where the good specs really are. Each later ask looks at the one-choice neighbours
(`SearchSpace.mutate`) of every spec on the told (real) front, estimates each neighbour's
metric as its parent's real value plus the supernet's predicted change from parent to
neighbour (the supernet's errors are shared by specs with the same cells, so a difference of
two predictions is better than either prediction), and asks the neighbour that would add the
most hypervolume to the real front with that estimate and its exact costs. A neighbour of
several front specs takes the mean of their estimates.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from search.pareto import non_dominated_sort, pareto_mask
from search.strategies._sampling import hypervolume_gains
from spaces.space import SearchSpace
from spaces.spec import ArchSpec

Predict = Callable[[ArchSpec], float]  # inherited-weight metric, raw
Points = Callable[[Sequence[ArchSpec], Sequence[float]], np.ndarray]  # (specs, metric values) -> minimised rows


def neighbours(space: SearchSpace, parents: Sequence[ArchSpec], rng: random.Random, tries: int,
               skip: set[str]) -> dict[str, tuple[ArchSpec, list[int]]]:
    """Distinct one-choice neighbours of `parents` (architectures, ids not in `skip`), each
    with the indices of the parents it neighbours; `tries` mutations per parent."""
    out: dict[str, tuple[ArchSpec, list[int]]] = {}
    for i, parent in enumerate(parents):
        for _ in range(tries):
            child = space.mutate(parent, rng).architecture
            if child.arch_id in skip:
                continue
            entry = out.setdefault(child.arch_id, (child, []))
            if i not in entry[1]:
                entry[1].append(i)
    return out


def next_local(space: SearchSpace, told: Sequence[tuple[ArchSpec, float]], predict: Predict, points: Points,
               rng: random.Random, *, tries: int, skip: set[str]) -> ArchSpec | None:
    """The architecture next to the real front of `told` ((spec, real metric) pairs, each spec
    valid in `space`) to ask next, as the module docstring says; None when the front has no
    neighbour left to ask."""
    if not told:
        return None
    specs, real = [s for s, _ in told], [v for _, v in told]
    mine = points(specs, real)
    front = [i for i in np.flatnonzero(pareto_mask(np.nan_to_num(mine, nan=np.inf)))]
    parents = [specs[i] for i in front]
    near = neighbours(space, parents, rng, tries, skip)
    if not near:
        return None
    cands = list(near.values())
    delta: Mapping[str, float] = {p.arch_id: real[i] - predict(p) for p, i in zip(parents, front, strict=True)}
    estimate = [predict(c) + float(np.mean([delta[parents[j].arch_id] for j in js])) for c, js in cands]
    theirs = points([c for c, _ in cands], estimate)
    both = np.vstack([mine, theirs])
    finite = both[np.isfinite(both).all(1)]
    ref = finite.max(0) + 1.0 if len(finite) else np.zeros(both.shape[1])
    gains = hypervolume_gains(mine[np.isfinite(mine).all(1)], theirs, ref)
    if gains.max() > 0:
        best = int(np.argmax(gains))
    else:  # nothing is predicted to improve the real front: the predicted best of the neighbours
        ranks = non_dominated_sort(np.nan_to_num(theirs, nan=1e300, posinf=1e300))
        best = min(range(len(cands)), key=lambda k: (ranks[k], theirs[k, 0], cands[k][0].arch_id))
    return cands[best][0]
