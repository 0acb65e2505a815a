"""The objectives of a search, declared once: what each is, where a trial record keeps it,
which way is better, on which scale it is compared, and whether it is known before training.

Everything else (the store's front, the strategies, the Tune adapter, the report, the
terminal table, export) reads a run's objective list from here; the Pareto maths
(`search.pareto`) stays pure numpy over the minimised matrix `minimised` builds.

A run optimises one *metric* (the task's, `search.metric`) and any number of *costs*
(`search.objectives`, default: the metric, params, FLOPs). A metric is recorded for val
and test (`val_<name>`, `test_<name>`); the front uses the val one. Costs are compared on
log10 so that a 10x smaller model counts the same at every size.

Adding an objective is one entry in `OBJECTIVES` plus the code that measures it.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search import pareto
from spaces import ConfigError

TASKS = ("classification", "binary", "multilabel", "regression")


@dataclass(frozen=True)
class Objective:
    """One objective: `name` in configs and `tell`, `key` in a trial's metrics, `mode` max|min,
    `scale` linear|log10, `known_before` (exact before training: a strategy may compute it).

    `bound` is the hypervolume reference in the objective's own units (the worst value that
    still counts: accuracy 0, AUC 0.5, R² 0, latency 1 s); None takes the decade above the
    largest value seen (params and FLOPs: known for any spec before training).
    """

    name: str
    key: str
    mode: str
    scale: str
    unit: str
    label: str
    known_before: bool
    kind: str  # "metric" (recorded as val_/test_<name>) or "cost"
    bound: float | None = None
    note: str = ""  # how it is measured, for the report (a measured objective says so)

    def values(self, raw: Sequence[float] | np.ndarray) -> np.ndarray:
        """`raw` on this objective's comparison scale (log10 needs values > 0; NaN passes)."""
        v = np.asarray(raw, dtype=float)
        if self.scale == "log10":
            if np.any(v <= 0):
                raise ValueError(f"{self.name} must be > 0 to take log10, got {v[v <= 0][0]!r}")
            return np.log10(v)
        return v

    def reference(self, raw: Sequence[float] | np.ndarray) -> float:
        """Reference value on the comparison scale, minimised (see `bound`)."""
        if self.bound is not None:
            b = float(self.values([self.bound])[0])
            return -b if self.mode == "max" else b
        finite = np.asarray(raw, dtype=float)
        finite = finite[np.isfinite(finite)]
        if finite.size == 0 or np.any(finite <= 0):
            raise ValueError(f"{self.name}: need at least one finite value, all > 0")
        top = float(np.ceil(np.log10(finite.max()) + 1.0))  # a whole decade at least 10x the largest
        return top if self.scale == "log10" else 10.0 ** top


def _metric(name: str, mode: str, label: str, bound: float | None) -> Objective:
    return Objective(name, f"val_{name}", mode, "linear", "", label, False, "metric", bound)


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    _metric("accuracy", "max", "validation accuracy", 0.0),
    _metric("balanced_accuracy", "max", "validation balanced accuracy", 0.0),
    _metric("macro_f1", "max", "validation macro-F1", 0.0),
    _metric("auc", "max", "validation AUC", 0.5),
    _metric("r2", "max", "validation R²", 0.0),
    _metric("pearson", "max", "validation Pearson r", 0.0),
    _metric("mae", "min", "validation MAE", None),
    _metric("rmse", "min", "validation RMSE", None),
    _metric("logloss", "min", "validation log loss", None),
    _metric("acc2", "max", "validation Acc-2 (sign, non-zero targets)", 0.0),
    _metric("f1_2", "max", "validation F1-2 (sign, weighted, non-zero targets)", 0.0),
    Objective("params", "params_total", "min", "log10", "", "parameters", True, "cost"),
    Objective("flops", "flops_total", "min", "log10", "", "FLOPs per sample", True, "cost"),
    # measured by training, so no sample of the space bounds it in advance: 1 s per sample is the worst that counts
    Objective("latency", "latency_ms", "min", "log10", "ms", "latency, batch 1 (ms)", False, "cost", 1000.0,
              "Latency: the median of repeated forward passes of the candidate (the backbone blocks it runs, "
              "cells and head) at batch 1, after warm-up, on the trial's device with the trial's thread count "
              "(search.training.latency); measured, so strategies know it only after training."),
)}
COSTS = tuple(n for n, o in OBJECTIVES.items() if o.kind == "cost")

# task -> its metrics, the default (the one the search optimises unless `search.metric` says) first.
# binary and multi-label default to AUC: threshold-free and blind to class balance, where accuracy
# rewards always answering the majority class; regression to R²: scale-free, 0 = predicting the mean.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "balanced_accuracy", "macro_f1"),
    "binary": ("auc", "accuracy", "balanced_accuracy", "macro_f1", "logloss"),
    "multilabel": ("auc", "accuracy", "macro_f1"),
    "regression": ("r2", "mae", "rmse", "pearson", "acc2", "f1_2"),
}
DEFAULT_COSTS = ("params", "flops")
CLASSIC = ("accuracy", "params", "flops")  # what a run written before objectives were configurable used
FILE = "objectives.json"  # a run's resolved objectives and task, written before its first trial


def get(names: Iterable[str]) -> tuple[Objective, ...]:
    """The objectives named, in order."""
    return tuple(OBJECTIVES[n] for n in names)


def check_names(metric: Any, objectives: Any, where: str = "search") -> None:
    """Config-time check (the task is not known yet): known names, one metric at most, no repeats."""
    metrics = [n for n, o in OBJECTIVES.items() if o.kind == "metric"]
    if metric != "" and metric not in metrics:
        raise ConfigError(f"{where}.metric: unknown metric {metric!r}; known: {', '.join(metrics)}")
    if not isinstance(objectives, list | tuple):
        raise ConfigError(f"{where}.objectives: expected a list of objective names, got {objectives!r}")
    for i, n in enumerate(objectives):
        if n not in OBJECTIVES:
            raise ConfigError(f"{where}.objectives[{i}]: unknown objective {n!r}; known: {', '.join(OBJECTIVES)}")
    if len(set(objectives)) != len(objectives):
        raise ConfigError(f"{where}.objectives: an objective is listed twice: {list(objectives)}")
    named = [n for n in objectives if OBJECTIVES[n].kind == "metric"]
    if len(named) > 1 or (named and metric != "" and named[0] != metric):
        raise ConfigError(f"{where}.objectives: one metric at most, the same as search.metric; got {list(objectives)}")
    if objectives and not [n for n in objectives if OBJECTIVES[n].kind == "cost"]:
        raise ConfigError(f"{where}.objectives: name at least one cost ({', '.join(COSTS)})")


def resolve(task: str, metric: str = "", objectives: Sequence[str] = ()) -> tuple[Objective, ...]:
    """A run's objectives, the metric first: `objectives` (with the metric put in front if it is
    not listed), or the metric plus params and FLOPs. A metric the task does not have raises."""
    if task not in TASK_METRICS:
        raise ConfigError(f"data.task: unknown task {task!r}; known: {', '.join(TASKS)}")
    named = [n for n in objectives if OBJECTIVES[n].kind == "metric"]
    metric = metric or (named[0] if named else TASK_METRICS[task][0])
    if metric not in TASK_METRICS[task]:
        raise ConfigError(f"search.metric: {metric!r} is not a metric of a {task} task; "
                          f"known: {', '.join(TASK_METRICS[task])}")
    costs = [n for n in objectives if OBJECTIVES[n].kind == "cost"] or list(DEFAULT_COSTS)
    return get([metric, *costs])


def from_stored(data: Mapping[str, Any] | None) -> tuple[Objective, ...]:
    """The objectives of `objectives.json` (`{"objectives": [names], "task": ...}`); None (a run
    from before that file) gives the classic accuracy, params, FLOPs."""
    return get((data or {}).get("objectives") or CLASSIC)


def measures_latency(objs: Sequence[Objective]) -> bool:
    """Whether a run on `objs` must measure each candidate's latency (~20 timed forward passes
    per candidate, so only a run that searches on it pays for them)."""
    return any(o.key == OBJECTIVES["latency"].key for o in objs)


def metric_of(objs: Sequence[Objective]) -> Objective:
    """The run's metric (always first)."""
    return objs[0]


def finite(value: Any) -> float | None:
    """A recorded value as a float; None when it is missing, not a number, NaN or infinite."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def usable(metrics: Mapping[str, Any], objs: Sequence[Objective]) -> bool:
    """Every objective present and finite (costs on a log scale > 0)."""
    for o in objs:
        v = finite(metrics.get(o.key))
        if v is None or (o.scale == "log10" and v <= 0):
            return False
    return True


def minimised(columns: Mapping[str, Sequence[float] | np.ndarray], objs: Sequence[Objective]) -> np.ndarray:
    """`(n, k)` minimisation matrix from raw values by objective name (NaN rows pass through)."""
    cols = [objs_col.values(columns[objs_col.name]) for objs_col in objs]
    if len({c.shape for c in cols}) != 1 or cols[0].ndim != 1:
        raise ValueError("objective columns must be 1-D and of equal length")
    return pareto.to_minimise(np.stack(cols, axis=1), [o.mode for o in objs])


def points(records: Sequence[Mapping[str, Any]], objs: Sequence[Objective]) -> np.ndarray:
    """`(n, k)` minimisation matrix of trial records (all `usable`), read from their metrics."""
    cols = {o.name: [float(r["metrics"][o.key]) for r in records] for o in objs}
    return minimised(cols, objs).reshape(len(records), len(objs))


def reference(columns: Mapping[str, Sequence[float] | np.ndarray], objs: Sequence[Objective]) -> np.ndarray:
    """Hypervolume reference of raw values by name (see `Objective.reference`)."""
    return np.array([o.reference(columns.get(o.name, ())) for o in objs])


def told(metrics: Mapping[str, Any] | None, objs: Sequence[Objective]) -> dict[str, float] | None:
    """What a strategy is told of an ok trial: `{objective name: raw value}`; None otherwise."""
    if not metrics or metrics.get("status", "ok") != "ok":
        return None
    if any(metrics.get(o.key) is None for o in objs):
        return None
    return {o.name: float(metrics[o.key]) for o in objs}


def costs_of(raw: Mapping[str, float] | Sequence[float]) -> dict[str, float]:
    """A cost function's answer by name; a `(params, flops)` pair is the classic form."""
    pairs = raw.items() if isinstance(raw, Mapping) else zip(("params", "flops"), raw, strict=True)
    return {k: float(v) for k, v in pairs}


def describe(objs: Sequence[Objective]) -> dict[str, Any]:
    """The `objectives` block of `pareto.json`."""
    return {"names": [o.key for o in objs], "objectives": [o.name for o in objs], "modes": [o.mode for o in objs],
            "scale": [o.scale for o in objs],
            "minimised": "[" + ", ".join(("-" if o.mode == "max" else "") + (f"log10({o.key})" if o.scale == "log10"
                                                                            else o.key) for o in objs) + "]"}


# ---- the classic three (accuracy, params, FLOPs) as plain columns: benchmarks and tests ----
def objective_matrix(accuracies: Sequence[float] | np.ndarray, params: Sequence[float] | np.ndarray,
                     flops: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """`[-accuracy, log10(params)(, log10(flops))]`: `minimised` of the classic objectives."""
    cols = {"accuracy": accuracies, "params": params, **({} if flops is None else {"flops": flops})}
    return minimised(cols, get(cols))


def default_reference(params: Sequence[float] | np.ndarray,
                      flops: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """`[0, decade above params(, decade above FLOPs)]`: `reference` of the classic objectives."""
    cols = {"accuracy": (), "params": params, **({} if flops is None else {"flops": flops})}
    return reference(cols, get(cols))
