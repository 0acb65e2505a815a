"""Baselines beside every front: what they are, and whether the front beats them.

A run trains a few baselines before its search (`search.baselines_fit`) and stores
them in `baselines.json`: a list of records with the keys in `RECORD_KEYS`. This
module is the pure part: the record's shape, the panels, and `compare`, which says
whether the front earned its cost. No torch here: `search.store` imports it to add
the comparison to `pareto.json`.

Panels (`search.baselines:`): `basic` = each modality alone (its frozen backbone and a
linear head), L2 logistic regression on the concatenated raw inputs, and a late concat
of the embeddings; `classic` adds every registered operator as its paper places it
(late fusion of the embeddings, default arguments: `classic <op>`); `none` trains nothing.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

FILE = "baselines.json"
PANELS = ("basic", "classic", "none")
KINDS = ("unimodal", "linear", "late_concat", "classic")
RECORD_KEYS = ("name", "kind", "panel", "val_accuracy", "val_std", "test_accuracy", "test_std", "n_seeds",
               "params_total", "flops_total", "spec", "seconds")


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def best_basic(baselines: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The basic-panel baseline with the highest (mean) val accuracy; chosen on val, like the front's best."""
    scored = [b for b in baselines if b.get("panel") == "basic" and _num(b.get("val_accuracy")) is not None]
    return max(scored, key=lambda b: float(b["val_accuracy"])) if scored else None


def best_front_point(front: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The front member with the highest val accuracy (ties: the cheaper in params), or None."""
    members = [f for f in front.get("front") or () if _num((f.get("metrics") or {}).get("val_accuracy")) is not None]
    if not members:
        return None
    return max(members, key=lambda f: (float(f["metrics"]["val_accuracy"]),
                                       -(_num(f["metrics"].get("params_total")) or 0.0)))


def dominating_member(front: Mapping[str, Any], baseline: Mapping[str, Any]) -> str | None:
    """The trial id of a front member that weakly dominates `baseline` (val accuracy >=,
    params <=, FLOPs <=; equal values count), or None when none does."""
    acc, params, flops = (_num(baseline.get(k)) for k in ("val_accuracy", "params_total", "flops_total"))
    if acc is None or params is None or flops is None:
        return None
    for f in front.get("front") or ():
        m = f.get("metrics") or {}
        fa, fp, ff = (_num(m.get(k)) for k in ("val_accuracy", "params_total", "flops_total"))
        if fa is not None and fp is not None and ff is not None and fa >= acc and fp <= params and ff <= flops:
            return str(f.get("trial_id"))
    return None


def _delta(a: Any, b: Any) -> float | None:
    a, b = _num(a), _num(b)
    return None if a is None or b is None else a - b


def compare(front: Mapping[str, Any], baselines: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Did the search earn its cost? `front` as `store.front_from_trials` returns it.

    `best`: the front's best point (highest val accuracy) against the best basic baseline
    (highest mean val accuracy): both accuracies, the differences (front minus baseline)
    and `beats_val` / `beats_test` (strictly higher). `classic`: for each classic-panel
    baseline, the id of a front member that weakly dominates it (`dominated_by`), or None.
    """
    top, base = best_front_point(front), best_basic(baselines)
    best: dict[str, Any] | None = None
    if top is not None and base is not None:
        m = top["metrics"]
        dv, dt = _delta(m.get("val_accuracy"), base.get("val_accuracy")), \
            _delta(m.get("test_accuracy"), base.get("test_accuracy"))
        best = {"trial_id": top.get("trial_id"), "front_val": _num(m.get("val_accuracy")),
                "front_test": _num(m.get("test_accuracy")), "baseline": base["name"],
                "baseline_val": _num(base.get("val_accuracy")), "baseline_test": _num(base.get("test_accuracy")),
                "val_delta": dv, "test_delta": dt,
                "beats_val": dv is not None and dv > 0, "beats_test": dt is not None and dt > 0}
    classic = []
    for b in baselines:
        if b.get("panel") == "classic":
            by = dominating_member(front, b)
            classic.append({"name": b["name"], "dominated": by is not None, "dominated_by": by})
    return {"best": best, "classic": classic, "n_baselines": len(baselines)}


def summary_line(cmp: Mapping[str, Any]) -> str:
    """`front best 0.912 val / 0.897 test vs best baseline (logreg) 0.881 / 0.870: +3.1 / +2.7 points
    (above on val and test)`: the front's best point against the best basic baseline."""
    b = cmp.get("best")
    if not b:
        return "no comparison with the baselines: the front or the basic baselines are empty"

    def acc(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    def pts(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:+.1f}"

    def word(delta: float | None) -> str:
        return "-" if delta is None else "above" if delta > 0 else "below" if delta < 0 else "level"

    v, t = word(b["val_delta"]), word(b["test_delta"])
    verdict = f"{v} on val and test" if v == t else f"{v} on val, {t} on test"
    return (f"front best {acc(b['front_val'])} val / {acc(b['front_test'])} test vs best baseline "
            f"({b['baseline']}) {acc(b['baseline_val'])} / {acc(b['baseline_test'])}: "
            f"{pts(b['val_delta'])} / {pts(b['test_delta'])} points ({verdict})")
