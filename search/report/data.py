"""The data behind every part of `report.html`, computed apart from the drawing.

Tests check these functions; `search.report.page` only turns their output into
Plotly traces. The y value is the run's metric on validation throughout (what the search
optimised and the front is made of: accuracy unless `search.metric` says otherwise); the
test value is shown, never used to choose. The cost axes are the run's cost objectives.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search import objectives as _objectives
from search import pareto
from search.objectives import Objective, finite
from search.runstore.store import STATUSES, objective_points, on_front_candidate
from spaces import ArchSpec

COSTS = _objectives.COSTS
GROUPINGS = ("stage", "op")
Costs = Mapping[str, tuple[float, float]]  # arch_id -> (params_total, flops_total)
Objs = Sequence[Objective] | None  # a run's objectives; None: the classic accuracy, params, FLOPs


def _objs(objs: Objs) -> tuple[Objective, ...]:
    return tuple(objs or _objectives.get(_objectives.CLASSIC))


@dataclass(frozen=True)
class Point:
    """One trial as the report shows it. `accuracy` (the run's val metric, whatever its name)
    is None when the trial has none (drawn at 0); a cost is None when unknown (the trial
    cannot be placed in that cost's plane)."""

    trial_id: str
    order: int  # position in trials.jsonl (the order trials finished)
    status: str
    reason: str
    stage: str
    op: str  # colour group: the operator of the last cell (the one feeding the head)
    ops: tuple[str, ...]
    arch: str  # ArchSpec.describe()
    hover: str
    accuracy: float | None
    test_accuracy: float | None
    params: float | None
    flops: float | None
    on_front: bool
    knee: bool
    extra: Mapping[str, float | None] | None = None  # other cost objectives (latency) by name
    std: float | None = None  # the val metric's std over a confirmed candidate's seeds (its error bar)
    unstable: str | None = None  # why its seeds disagree (`search.runstore.store.mark_unstable`), if they do

    def cost(self, name: str) -> float | None:
        if name == "params":
            return self.params
        if name == "flops":
            return self.flops
        return (self.extra or {}).get(name)

    @property
    def y(self) -> float:
        """Plotted accuracy: a trial without one sits at 0."""
        return 0.0 if self.accuracy is None else self.accuracy


@dataclass(frozen=True)
class Series:
    """Points drawn alike: one group (stage or operator) in one status."""

    name: str
    group: str
    status: str
    trial_ids: list[str]
    x: list[float]
    y: list[float]
    hover: list[str]
    std: list[float] | None = None  # error bars (the val metric's std over seeds), where drawn



def human(n: float) -> str:
    """`12345 -> '12.3k'`."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def op_label(ops: Sequence[str]) -> str:
    return ops[0] if len(set(ops)) == 1 else "→".join(ops)


def hover_text(trial: Mapping[str, Any], p: Mapping[str, Any], metric: str = "val accuracy") -> str:
    """What hovering a point shows: trial, status, stage, each cell (operator, taps, args,
    width, activation), head, accuracies and costs. `<br>` separates lines (Plotly)."""
    spec = ArchSpec.from_dict(trial["spec"])
    lines = [f"<b>trial {trial['trial_id']}</b> ({p['status']}{', knee' if p['knee'] else ''}"
             f"{', on the front' if p['on_front'] else ''})", f"stage: {spec.stage}"]
    for i, c in enumerate(spec.cells, 1):
        args = "".join(f", {k}={v}" for k, v in c.args)
        lines.append(f"cell {i}: {c.op}({', '.join(c.taps)}{args}) → {c.width}, {c.activation}")
    if spec.head:
        lines.append(f"head: {list(spec.head)}")
    acc = "-" if p["accuracy"] is None else f"{p['accuracy']:.4f}"
    test = "-" if p["test_accuracy"] is None else f"{p['test_accuracy']:.4f}"
    m = trial.get("metrics") or {}
    if int(m.get("n_seeds") or 1) > 1 and p["accuracy"] is not None:  # a confirmed candidate: mean ± std
        acc += f" ± {m.get('val_std') or 0:.4f}"
        test += f" ± {m.get('test_std') or 0:.4f}" if p["test_accuracy"] is not None else ""
        lines.append(f"{metric} {acc} · test {test} (mean ± std of {m['n_seeds']} seeds)")
    else:
        lines.append(f"{metric} {acc} · test {test}")
    costs = [f"{k} {human(p[k.lower()])}" for k in ("params", "FLOPs") if p[k.lower()] is not None]
    costs += [f"{k} {v:.3g} {_objectives.OBJECTIVES[k].unit}".strip() for k, v in (p.get("extra") or {}).items()
              if v is not None]
    lines.append(" · ".join(costs) if costs else "params and FLOPs unknown")
    if p["status"] != "ok" and p["reason"]:
        lines.append(f"reason: {p['reason'][:120]}")
    if p.get("unstable"):
        lines.append(f"<b>unstable</b>: {p['unstable']}; never the knee nor the answer")
    return "<br>".join(lines)


def test_key(metric: Objective) -> str:
    """Where a record keeps a metric's test value: `val_auc` -> `test_auc`."""
    return "test_" + metric.key.removeprefix("val_")


def trial_points(trials: Sequence[Mapping[str, Any]], front: Mapping[str, Any],
                 costs: Costs | None = None, objs: Objs = None) -> list[Point]:
    """Every trial as a `Point` of the run's objectives `objs`; `costs` fills params/FLOPs a
    trial record lacks (errored, early-stopped trials), keyed by arch id."""
    objs = _objs(objs)
    metric = objs[0]
    members, knee = set(front.get("trial_ids") or ()), front.get("knee")
    marked = {str(f["trial_id"]): (f.get("metrics") or {}).get("unstable") for f in front.get("front") or ()}
    out = []
    for i, t in enumerate(trials):
        m = t.get("metrics") or {}
        spec = ArchSpec.from_dict(t["spec"])
        params, flops = finite(m.get("params_total")), finite(m.get("flops_total"))
        if (params is None or flops is None) and costs and spec.arch_id in costs:
            params, flops = (float(c) for c in costs[spec.arch_id])
        tid = str(t["trial_id"])
        extra = {o.name: finite(m.get(o.key)) for o in objs[1:] if o.name not in ("params", "flops")}
        p = {"status": str(t.get("status")), "reason": str(t.get("reason") or ""),
             "accuracy": finite(m.get(metric.key)), "test_accuracy": finite(m.get(test_key(metric))),
             "params": params, "flops": flops, "on_front": tid in members, "knee": tid == knee,
             "extra": extra or None, "unstable": marked.get(tid),
             "std": finite(m.get(f"{metric.key}_std")) if int(m.get("n_seeds") or 1) > 1 else None}
        out.append(Point(trial_id=tid, order=i, stage=spec.stage, op=spec.ops[-1], ops=spec.ops,
                         arch=spec.describe(), hover=hover_text(t, p, f"val {metric.name}"), **p))
    return out


def scatter_series(points: Sequence[Point], cost: str, by: str) -> list[Series]:
    """The placeable trials (cost known) split by group (`stage` or `op`) and status,
    groups sorted by name, statuses in `STATUSES` order."""
    if cost not in COSTS or by not in GROUPINGS:
        raise ValueError(f"cost must be one of {COSTS} and by one of {GROUPINGS}, got {cost!r}, {by!r}")
    placed = [p for p in points if p.cost(cost) is not None]
    out = []
    for group in sorted({getattr(p, by) for p in placed}):
        for status in STATUSES + tuple(sorted({p.status for p in placed} - set(STATUSES))):
            chosen = [p for p in placed if getattr(p, by) == group and p.status == status]
            if chosen:
                name = group if status == "ok" else f"{group} ({status.replace('_', '-')})"
                out.append(Series(name, group, status, [p.trial_id for p in chosen],
                                  [p.cost(cost) for p in chosen], [p.y for p in chosen], [p.hover for p in chosen]))
    return out


def front_points(points: Sequence[Point], cost: str, knee_only: bool = False, unstable: bool = False) -> Series:
    """The Pareto front's trials (of all three objectives: `pareto.json`), or just its knee, or
    (`unstable`) its members whose seeds disagree."""
    chosen = [p for p in points if (p.knee if knee_only else p.on_front and (not unstable or p.unstable))
              and p.cost(cost) is not None]
    name = "knee" if knee_only else "unstable: seeds disagree" if unstable else "Pareto front"
    return Series(name, "", "ok", [p.trial_id for p in chosen],
                  [p.cost(cost) for p in chosen], [p.y for p in chosen], [p.hover for p in chosen],
                  [p.std or 0.0 for p in chosen])


def staircase(points: Sequence[Point], cost: str) -> tuple[list[float], list[float]]:
    """The front as a step line in one plane: best accuracy among front trials costing at
    most x, from the cheapest front trial to the costliest placed trial (draw with `hv`)."""
    # cheapest first, and at equal cost the most accurate first (the others add no step)
    front = sorted(((c, p.y) for p in points if p.on_front and (c := p.cost(cost)) is not None),
                   key=lambda xy: (xy[0], -xy[1]))
    xs: list[float] = []
    ys: list[float] = []
    for x, y in front:
        if not ys or y > ys[-1]:
            xs.append(x)
            ys.append(y)
    if xs:
        right = max(c for p in points if (c := p.cost(cost)) is not None)
        if right > xs[-1]:
            xs.append(right)
            ys.append(ys[-1])
    return xs, ys


def history(trials: Sequence[Mapping[str, Any]], reference: Sequence[float] | None = None,
            objs: Objs = None) -> dict[str, list]:
    """Hypervolume and best val metric (key `best_val_accuracy`, whatever the metric) after
    each finished trial, in the order they finished.

    `reference` is the run's fixed point (`reference.json`); without one, the default
    reference of all the run's ok trials, so the last value equals `pareto.json`'s.
    """
    objs = _objs(objs)
    metric = objs[0]
    sign = 1.0 if metric.mode == "max" else -1.0
    ok = [t for t in trials if on_front_candidate(t, objs)]
    out: dict[str, list] = {"n": [], "trial_id": [], "hypervolume": [], "best_val_accuracy": []}
    if reference is None and ok:
        reference = _objectives.reference({o.name: [float(t["metrics"][o.key]) for t in ok] for o in objs}, objs)
    front = np.empty((0, len(objs)))
    best = None
    for i, t in enumerate(trials, 1):
        if on_front_candidate(t, objs):
            front = np.vstack([front, objective_points([t], objs)])
            front = front[pareto.pareto_mask(front)]  # the hypervolume of the front is that of all points
            acc = float(t["metrics"][metric.key])
            best = acc if best is None else (max if sign > 0 else min)(best, acc)
        out["n"].append(i)
        out["trial_id"].append(str(t["trial_id"]))
        out["hypervolume"].append(pareto.hypervolume(front, reference) if len(front) else 0.0)
        out["best_val_accuracy"].append(best)
    return out


def breakdown(points: Sequence[Point], by: str, higher: bool = True) -> list[dict[str, Any]]:
    """Per stage or per operator (a trial counts once for each operator it uses): trials,
    ok trials, trials on the front, best val metric (`higher`: is higher better); sorted by name."""
    keys = (lambda p: {p.stage}) if by == "stage" else (lambda p: set(p.ops))
    rows: dict[str, dict[str, Any]] = {}
    for p in points:
        for k in keys(p):
            r = rows.setdefault(k, {"key": k, "trials": 0, "ok": 0, "on_front": 0, "best_val_accuracy": None})
            r["trials"] += 1
            r["ok"] += p.status == "ok"
            r["on_front"] += p.on_front
            if p.status == "ok" and p.accuracy is not None:
                r["best_val_accuracy"] = p.accuracy if r["best_val_accuracy"] is None else \
                    (max if higher else min)(p.accuracy, r["best_val_accuracy"])
    return [rows[k] for k in sorted(rows)]


def front_table(points: Sequence[Point]) -> list[dict[str, Any]]:
    """The front's trials, most accurate (val) first, as table rows."""
    rows = [{"trial": p.trial_id, "knee": p.knee, "stage": p.stage, "op": op_label(p.ops), "val": p.accuracy,
             "test": p.test_accuracy, "params": p.params, "flops": p.flops, "arch": p.arch, "unstable": p.unstable}
            for p in points if p.on_front]
    return sorted(rows, key=lambda r: (-(r["val"] or 0.0), r["params"] or 0.0))


def summary(points: Sequence[Point], front: Mapping[str, Any]) -> dict[str, Any]:
    """Counts by status, front size, hypervolume, best val accuracy, knee, unplaced trials."""
    return {
        "n_trials": len(points),
        "status_counts": {s: n for s in STATUSES if (n := sum(p.status == s for p in points))},
        "front_size": len(front.get("trial_ids") or ()),
        "hypervolume": front.get("hypervolume", 0.0),
        "best_val_accuracy": front.get("best_val", front.get("best_val_accuracy")),
        "metric": front.get("metric", "accuracy"),
        "knee": front.get("knee"),
        "unplaced": [p.trial_id for p in points if p.params is None or p.flops is None],
        "objectives": (front.get("objectives") or {}).get("objectives", list(_objectives.CLASSIC)),
    }


# ------------------------------------------------------------------ baselines
@dataclass(frozen=True)
class BaselinePoint:
    """One baseline of `baselines.json` as the report draws it (a marked point, labelled by
    name). `accuracy` is the mean val accuracy over its seeds; None when every seed failed."""

    name: str
    kind: str
    panel: str
    accuracy: float | None
    test_accuracy: float | None
    params: float | None
    flops: float | None
    dominated_by: str | None  # classic panel: a front trial weakly dominating it
    hover: str

    def cost(self, name: str) -> float | None:
        return self.params if name == "params" else self.flops if name == "flops" else None


def baseline_points(baselines: Sequence[Mapping[str, Any]],
                    comparison: Mapping[str, Any] | None = None, objs: Objs = None) -> list[BaselinePoint]:
    """Every baseline record as a `BaselinePoint` at the run's metric; `comparison`
    (`search.baselines.compare`) adds which front trial dominates each classic one."""
    metric = _objs(objs)[0]
    dominated = {c["name"]: c["dominated_by"] for c in (comparison or {}).get("classic", ())}
    out = []
    for b in baselines:
        acc, test = finite(b.get(metric.key)), finite(b.get(test_key(metric)))
        params, flops = finite(b.get("params_total")), finite(b.get("flops_total"))
        std = finite(b.get(f"{metric.key}_std", b.get("val_std") if metric.name == "accuracy" else None))
        lines = [f"<b>baseline: {b['name']}</b> ({b['kind']}, {b['panel']} panel)",
                 f"val {metric.name} {'-' if acc is None else f'{acc:.4f}'}{'' if std is None else f' ± {std:.4f}'}"
                 f" · test {'-' if test is None else f'{test:.4f}'} · {b.get('n_seeds', 0)} seed(s)",
                 " · ".join(f"{k} {human(v)}" for k, v in (("params", params), ("FLOPs", flops)) if v is not None)]
        if b["panel"] == "classic" and b["name"] in dominated:
            by = dominated[b["name"]]
            lines.append(f"dominated by front trial {by}" if by else "not dominated by the front")
        if b.get("spec"):
            lines.append(ArchSpec.from_dict(b["spec"]).describe())
        out.append(BaselinePoint(b["name"], str(b["kind"]), str(b["panel"]), acc, test, params, flops,
                                 dominated.get(b["name"]), "<br>".join(lines)))
    return out


def baseline_series(points: Sequence[BaselinePoint], cost: str) -> Series:
    """The placeable baselines (cost known) in one plane: `trial_ids` holds their names
    (drawn as labels); a baseline without an accuracy sits at 0, like a trial."""
    chosen = [p for p in points if p.cost(cost) is not None]
    return Series("baselines", "baseline", "baseline", [p.name for p in chosen], [p.cost(cost) for p in chosen],
                  [0.0 if p.accuracy is None else p.accuracy for p in chosen], [p.hover for p in chosen])


def baseline_table(points: Sequence[BaselinePoint]) -> list[dict[str, Any]]:
    """The baselines as table rows, most accurate (val) first."""
    rows = [{"name": p.name, "kind": p.kind, "panel": p.panel, "val": p.accuracy, "test": p.test_accuracy,
             "params": p.params, "flops": p.flops,
             "front": "" if p.panel != "classic" else ("dominated by " + p.dominated_by if p.dominated_by
                                                       else "not dominated")}
            for p in points]
    return sorted(rows, key=lambda r: -(r["val"] or 0.0))
