"""A candidate whose seeds disagree (one seed learns, two stall at chance) is marked unstable:
in `show`, in pareto.json and in the report; it is never the knee nor the run's answer."""
from __future__ import annotations

import json
import statistics

import pytest

from search.cli import main
from search.export import ExportError, pick_trial
from search.objectives import OBJECTIVES
from search.runstore.store import (
    UNSTABLE_ALWAYS,
    UNSTABLE_SHARE,
    UNSTABLE_TIMES_NOISE,
    front_from_trials,
    mark_unstable,
)
from tests.test_report import make_run, record, spec_dict

# trial id -> (operator, taps, width, the val = holdout = test accuracy of each seed, params)
CANDIDATES = {
    "U": ("tensor", ("m1@1", "m2@1"), 8, (0.95, 0.50, 0.50), 1000),  # mean 0.65: best and cheap, but a coin flip
    "S1": ("concat", ("m1@2", "m2@2"), 16, (0.62, 0.61, 0.63), 2000),
    "S2": ("concat", ("m1@2", "m2@2"), 8, (0.60, 0.60, 0.61), 500),
}


def seeded_trials(candidates=CANDIDATES) -> list[dict]:
    out = []
    for tid, (op, taps, width, accs, params) in candidates.items():
        spec = spec_dict("hybrid", op, taps, width)
        for seed, acc in enumerate(accs):
            r = record(tid if seed == 0 else f"{tid}-s{seed}", spec, "ok", {
                "val_accuracy": acc, "holdout_accuracy": acc, "test_accuracy": acc, "params_total": params,
                "flops_total": 2 * params, "seed": seed})
            r["seed"] = seed
            if seed:
                r["confirm"] = True
            out.append(r)
    return out


def test_seeds_that_disagree_are_never_the_knee_nor_the_answer_and_show_marks_them(tmp_path, capsys):
    trials = seeded_trials()
    front = front_from_trials(trials)
    by_id = {f["trial_id"]: f for f in front["front"]}
    assert "U" in by_id and by_id["U"]["metrics"]["unstable"].startswith("its seeds disagree")  # on it, marked
    assert not by_id["S2"]["metrics"].get("unstable")
    assert front["knee"] != "U"
    for how in ("knee", "accuracy"):
        assert pick_trial(trials, front, how)["trial_id"] != "U", how
    assert pick_trial(trials, front, "accuracy")["trial_id"] == "S1"  # the best of those whose seeds agree

    # on its lucky first seed alone, U would be the answer: its other seeds and the mark keep it out
    first = [t for t in trials if not t.get("confirm")]
    assert pick_trial(first, front_from_trials(first), "accuracy")["trial_id"] == "U"

    store = make_run(tmp_path, trials=trials)
    assert json.loads(store.pareto_path.read_text())["front"][0]["metrics"].get("unstable") is not None
    assert main(["show", str(store.run_dir)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if " U " in f" {line} " and "tensor" in line)
    assert row.startswith("!"), out
    assert "! unstable: its seeds disagree" in out and "never the knee nor the answer" in out

    assert main(["report", str(store.run_dir)]) == 0
    page = (store.run_dir / "report.html").read_text()
    assert "unstable: seeds disagree" in page and "never the knee nor the answer" in page
    assert '"error_y"' in page  # the front's points carry their spread


def test_the_unstable_rule_is_its_formula(tmp_path):
    """Against the rule written out: std over seeds above both 3 x the median std of the other
    multi-seed candidates and 5 % of the mean, or above 15 % of the mean."""
    import random

    rng = random.Random(0)
    metric = OBJECTIVES["accuracy"]
    for _ in range(200):
        groups = [[rng.uniform(0.4, 1.0) if rng.random() < 0.2 else rng.gauss(0.8, 0.01) for _ in range(3)]
                  for _ in range(rng.randint(1, 6))]
        cands = [{"metrics": {"val_accuracy": statistics.mean(g), "val_accuracy_std": statistics.stdev(g),
                              "n_seeds": 3}} for g in groups]
        mark_unstable(cands, metric)
        for i, g in enumerate(groups):
            others = [statistics.stdev(h) for j, h in enumerate(groups) if j != i]
            noise = statistics.median(others) if others else 0.0
            std, mean = statistics.stdev(g), statistics.mean(g)
            want = (std > UNSTABLE_TIMES_NOISE * noise and std > UNSTABLE_SHARE * mean) or std > UNSTABLE_ALWAYS * mean
            assert bool(cands[i]["metrics"].get("unstable")) == want, (groups, i)


def test_one_seed_is_never_unstable_and_a_front_of_only_unstable_ones_has_no_knee(tmp_path, capsys):
    single = [t for t in seeded_trials() if not t.get("confirm")]
    assert not any(f["metrics"].get("unstable") for f in front_from_trials(single)["front"])
    wild = {"U": CANDIDATES["U"], "V": ("concat", ("m1@2", "m2@2"), 8, (0.30, 0.90, 0.31), 400)}
    trials = seeded_trials(wild)
    front = front_from_trials(trials)
    assert front["knee"] is None and front["trial_ids"]
    for how in ("knee", "accuracy"):
        with pytest.raises(ExportError, match=f"--pick {how}: every candidate it could pick is unstable"):
            pick_trial(trials, front, how)
    store = make_run(tmp_path, trials=trials)
    assert main(["export", str(store.run_dir), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is unstable (its seeds disagree)" in err, err


def test_pareto_mask_with_judges_is_its_definition():
    """`pareto_mask(points, by)`: row i is kept unless some row j marked in `by` dominates it
    (j <= i everywhere and < somewhere), written the slow way."""
    import numpy as np

    from search.pareto import pareto_mask

    rng = np.random.default_rng(0)
    for _ in range(200):
        points = rng.integers(0, 4, size=(rng.integers(1, 9), 3)).astype(float)
        by = rng.random(len(points)) < 0.6
        want = [not any(by[j] and all(points[j] <= points[i]) and any(points[j] < points[i])
                        for j in range(len(points))) for i in range(len(points))]
        assert pareto_mask(points, by=by).tolist() == want
