"""Picking under a budget: the best candidate of a run that fits `--max-params`, `--max-flops`
and `--max-latency-ms`, the point of a front of accuracy against cost.

The pick is among the run's confirmed candidates (those trained on the most seeds: every
seed of `search.confirm`; all ok candidates of a run without confirmation), never an
unstable one (`search.runstore.store.mark_unstable`). `accuracy`: the best mean holdout
metric (val where the run has no holdout; ties: val, then fewer params), as the run's
answer is chosen. `knee`: the knee of those candidates' front. When none fits, one line
names the closest miss and by how much.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fusion_ops.load import ExportError
from search import pareto
from search.baselines import best_front_point
from search.objectives import OBJECTIVES, Objective, finite
from search.runstore.store import candidate_records, objective_points, ok_candidates, stable


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Upper bounds on a picked candidate's costs; None: no bound."""

    max_params: int | None = None
    max_flops: int | None = None
    max_latency_ms: float | None = None

    # (bound field, metrics key, the flag that sets it, how a value reads)
    FIELDS = (("max_params", "params_total", "--max-params", "{:,.0f}"),
              ("max_flops", "flops_total", "--max-flops", "{:,.0f}"),
              ("max_latency_ms", "latency_ms", "--max-latency-ms", "{:.3g} ms"))

    def any(self) -> bool:
        return any(getattr(self, f) is not None for f, *_ in self.FIELDS)

    def given(self) -> list[tuple[str, str, float, str]]:
        """`(metrics key, flag, bound, format)` of each bound set."""
        return [(key, flag, float(getattr(self, f)), fmt) for f, key, flag, fmt in self.FIELDS
                if getattr(self, f) is not None]

    def overshoot(self, metrics: Mapping[str, Any]) -> tuple[float, str]:
        """How far `metrics` is over its worst bound (value / bound - 1; <= 0 fits), and which flag."""
        worst = (-np.inf, "")
        for key, flag, bound, _ in self.given():
            value = finite(metrics.get(key))
            over = np.inf if value is None else value / bound - 1.0  # bounds are > 0 (pick_within)
            worst = max(worst, (float(over), flag))
        return worst


def confirmed(trials: Sequence[Mapping[str, Any]], objs: Sequence[Objective]) -> list[dict[str, Any]]:
    """The run's ok candidates (`ok_candidates`: metrics the mean over their seeds, `unstable`
    marked) trained on the most seeds."""
    ok = ok_candidates(candidate_records(trials), objs)
    most = max((int(c["metrics"].get("n_seeds") or 1) for c in ok), default=1)
    return [c for c in ok if int(c["metrics"].get("n_seeds") or 1) == most]


def pick_within(trials: Sequence[Mapping[str, Any]], how: str, bounds: Bounds, objs: Sequence[Objective],
                rank: str = "mean") -> dict[str, Any]:
    """The trial record `how` (accuracy | knee) picks among the confirmed candidates that meet
    every bound; ExportError (one line) when the pick or a bound cannot be honoured."""
    metric = objs[0]
    if how not in ("accuracy", "knee"):
        raise ExportError(f"--pick {how}: bounds (--max-params, --max-flops, --max-latency-ms) combine with "
                          "--pick accuracy or --pick knee only")
    pool = [c for c in confirmed(trials, objs) if stable(c)]
    if not pool:
        raise ExportError(f"--pick {how}: the run has no confirmed candidate whose seeds agree")
    for key, flag, bound, _ in bounds.given():
        if bound <= 0:
            raise ExportError(f"{flag}: expected a number > 0, got {bound:g}")
        if all(finite(c["metrics"].get(key)) is None for c in pool):
            raise ExportError(f"{flag}: the run measured no {key} (add {OBJECTIVES['latency'].name} to "
                              "search.objectives to record it)" if key == "latency_ms" else
                              f"{flag}: the run's candidates have no {key}")
    fits = [c for c in pool if bounds.overshoot(c["metrics"])[0] <= 0]
    if not fits:
        near = min(pool, key=lambda c: bounds.overshoot(c["metrics"]))
        over, flag = bounds.overshoot(near["metrics"])
        key, _, bound, fmt = next(g for g in bounds.given() if g[1] == flag)
        raise ExportError(f"{flag} {fmt.format(bound)}: no confirmed candidate meets the bounds; the closest is "
                          f"trial {near['trial_id']} at {fmt.format(near['metrics'][key])}, {over:.0%} over")
    if how == "accuracy":
        chosen = best_front_point({"front": fits}, metric, rank)
    else:
        chosen = fits[pareto.knee_point(objective_points(fits, objs))]
    if chosen is None:
        raise ExportError(f"--pick {how}: no candidate within the bounds has finite scores")
    by_id = {str(t["trial_id"]): t for t in trials}
    return dict(by_id[str(chosen["trial_id"])])
