"""Confirming the front over seeds: which (candidate, seed) trials are still to run.

A single seed's val accuracy on a few hundred samples is noisy (one point is 2-3
samples), so with `search.confirm: K` every candidate that enters the front is trained
again with seeds `seed + 1 .. seed + K`, as trials of the same run, and the front is
decided on the mean (`search.runstore.store.candidate_records`). When a confirmed candidate
falls off the front, the one that takes its place is confirmed in turn.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from search.objectives import CLASSIC, Objective, get
from search.runstore.store import front_from_trials
from spaces.spec import ArchSpec


def confirm_seeds(base_seed: int, k: int) -> list[int]:
    """The seeds a confirmed candidate is trained with, its first trial's seed first."""
    return [base_seed + i for i in range(k + 1)]


def confirmation_todo(trials: Sequence[Mapping[str, Any]], reference: Sequence[float] | None, k: int,
                      base_seed: int, in_flight: Iterable[tuple[str, int]] = (),
                      objs: Sequence[Objective] | None = None) -> list[tuple[ArchSpec, int]]:
    """`(spec, seed)` of the trials still needed so that every front candidate (over `objs`,
    default the classic three) has all `k + 1` seeds, best candidate by the metric first;
    pairs in `in_flight` (`(candidate_id, seed)`) are running already."""
    if k <= 0:
        return []
    running = set(in_flight)
    todo = []
    objs = objs or get(CLASSIC)
    sign = -1.0 if objs[0].mode == "max" else 1.0
    front = sorted(front_from_trials(trials, reference, objs)["front"], key=lambda f: sign * f["metrics"][objs[0].key])
    for entry in front:
        spec = ArchSpec.from_dict(entry["spec"])
        have = {base_seed if s is None else int(s) for s in entry["metrics"].get("seeds", [])}
        for seed in confirm_seeds(base_seed, k):
            if seed not in have and (spec.candidate_id, seed) not in running:
                todo.append((spec, seed))
    return todo
