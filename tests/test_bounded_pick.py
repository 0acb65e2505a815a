"""Picks under a budget: `export --pick accuracy|knee --max-params N --max-flops N
--max-latency-ms X` takes the best confirmed candidate that meets every bound, and says in one
line which candidate came closest when none does."""
from __future__ import annotations

import json
import random

import pytest

from fusion_ops.load import ExportError
from search.bounded_pick import Bounds, pick_within
from search.cli import main
from search.objectives import OBJECTIVES
from tests.test_export import make_trained_run
from tests.test_report import record, spec_dict

OBJS = [OBJECTIVES["accuracy"], OBJECTIVES["params"], OBJECTIVES["flops"]]
SPECS = [spec_dict(stage, op, taps, width) for stage in ("late", "hybrid") for op in ("concat", "tensor")
         for taps in (("m1@1", "m2@1"), ("m1@2", "m2@2")) for width in (8, 16)]


def run_trials(rng: random.Random, n: int) -> list[dict]:
    """`n` candidates, each on 3 seeds that agree (spread 0.005), and a few on one seed only
    (not confirmed: never picked under bounds)."""
    out = []
    for i, spec in enumerate(rng.sample(SPECS, n)):
        acc, params = rng.uniform(0.5, 0.95), rng.choice([300, 800, 1500, 4000, 9000])
        flops = params * rng.choice([1, 2, 3])  # costs belong to the architecture: the same on every seed
        for seed in range(1 if i % 5 == 4 else 3):
            r = record(f"c{i}" if seed == 0 else f"c{i}-s{seed}", spec, "ok", {
                "val_accuracy": acc + rng.uniform(-0.005, 0.005), "holdout_accuracy": acc + rng.uniform(-0.05, 0.05),
                "test_accuracy": acc, "params_total": params, "flops_total": flops,
                "latency_ms": params / 1000.0})
            r["seed"] = seed
            if seed:
                r["confirm"] = True
            out.append(r)
    return out


def _mean(trials: list[dict], cid: str, key: str) -> float:
    values = [t["metrics"][key] for t in trials if t["trial_id"].split("-")[0] == cid]
    return sum(values) / len(values)


def test_the_accuracy_pick_is_the_best_holdout_within_the_bounds_or_one_line_naming_the_closest_miss():
    rng = random.Random(0)
    for _ in range(150):
        trials = run_trials(rng, rng.randint(2, 10))
        confirmed = sorted(t["trial_id"].removesuffix("-s2") for t in trials if t["trial_id"].endswith("-s2"))
        bounds = Bounds(rng.choice([None, 500, 1000, 5000]), rng.choice([None, 1000, 3000, 20000]),
                        rng.choice([None, 0.5, 2.0]))
        cost = {cid: {k: _mean(trials, cid, k) for k in ("params_total", "flops_total", "latency_ms")}
                for cid in confirmed}
        limits = {"params_total": bounds.max_params, "flops_total": bounds.max_flops, "latency_ms": bounds.max_latency_ms}
        fits = [c for c in confirmed if all(v is None or cost[c][k] <= v for k, v in limits.items())]
        if not bounds.any():
            continue
        if not fits:
            over = {c: max(cost[c][k] / v - 1 for k, v in limits.items() if v is not None) for c in confirmed}
            closest = min(confirmed, key=over.__getitem__)
            with pytest.raises(ExportError, match=f"no confirmed candidate meets the bounds; the closest is trial "
                                                  f"{closest} at .*, {over[closest]:.0%} over"):
                pick_within(trials, "accuracy", bounds, OBJS)
            continue
        best = max(fits, key=lambda c: (_mean(trials, c, "holdout_accuracy"), _mean(trials, c, "val_accuracy"),
                                        -cost[c]["params_total"]))
        chosen = pick_within(trials, "accuracy", bounds, OBJS)
        assert chosen["trial_id"] == best
        knee = pick_within(trials, "knee", bounds, OBJS)["trial_id"]
        assert knee in fits  # the knee of the candidates within the bounds: none of them dominates it
        k = (_mean(trials, knee, "val_accuracy"), cost[knee]["params_total"], cost[knee]["flops_total"])
        for c in fits:
            o = (_mean(trials, c, "val_accuracy"), cost[c]["params_total"], cost[c]["flops_total"])
            assert not (o[0] >= k[0] and o[1] <= k[1] and o[2] <= k[2] and o != k), (knee, c)


def test_bounds_need_accuracy_or_knee_and_a_measured_latency():
    trials = run_trials(random.Random(1), 4)
    with pytest.raises(ExportError, match="combine with --pick accuracy or --pick knee only"):
        pick_within(trials, "smallest", Bounds(max_params=1000), OBJS)
    for t in trials:
        t["metrics"].pop("latency_ms")
    with pytest.raises(ExportError, match="--max-latency-ms: the run measured no latency_ms .*search.objectives"):
        pick_within(trials, "accuracy", Bounds(max_latency_ms=1.0), OBJS)


def test_export_under_a_budget_writes_a_model_within_it_and_an_impossible_one_is_one_line(tmp_path, capsys):
    store = make_trained_run(tmp_path)
    ok = [t for t in store.trials() if t["status"] == "ok"]
    smallest = min(t["metrics"]["params_total"] for t in ok)
    bound = sorted({t["metrics"]["params_total"] for t in ok})[1]  # room for two sizes, not all
    out = tmp_path / "small"
    assert main(["export", str(store.run_dir), "--pick", "accuracy", "--max-params", str(bound), "--out", str(out)]) == 0
    model = json.loads((out / "metrics.json").read_text())
    fits = [t for t in ok if t["metrics"]["params_total"] <= bound]
    assert model["params_total"] <= bound and model["trial_id"] in {t["trial_id"] for t in fits}
    assert main(["export", str(store.run_dir), "--max-params", str(smallest - 1), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--max-params {smallest - 1:,}: no confirmed candidate meets the bounds" in err
    assert "the closest is trial" in err and not (tmp_path / "x").exists()
