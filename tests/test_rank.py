"""`search.rank: lcb`: the answer ranked by mean - std/sqrt(seeds), so a candidate whose seeds
spread loses to one as good on average whose seeds agree; `mean` (the default) ranks by the mean."""
from __future__ import annotations

import math

import pytest

from search.baselines import best_front_point, compare, ranked_value
from search.cli import main
from search.config import load_config
from search.export import pick_trial
from search.objectives import OBJECTIVES
from search.runstore.store import front_from_trials
from tests.test_report import CONFIG, make_run
from tests.test_unstable import seeded_trials

# trial id -> (operator, taps, width, the val = holdout = test accuracy of each seed, params):
# W leads on the mean (0.800) with seeds that spread (std 0.03, under the unstable bar of 0.04);
# A is a little behind (0.790) with seeds that agree; both on the front (A is the cheaper)
SPREAD = {
    "W": ("tensor", ("m1@1", "m2@1"), 8, (0.83, 0.80, 0.77), 2000),
    "A": ("concat", ("m1@2", "m2@2"), 16, (0.79, 0.79, 0.79), 500),
}


def lcb(accs: tuple[float, ...]) -> float:
    mean = sum(accs) / len(accs)
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1))
    return mean - std / math.sqrt(len(accs))


def test_the_lower_confidence_bound_is_its_formula():
    acc = OBJECTIVES["accuracy"]
    m = {"val_accuracy": 0.9, "val_accuracy_std": 0.06, "n_seeds": 4}
    assert ranked_value(m, "val_accuracy", acc) == 0.9
    assert ranked_value(m, "val_accuracy", acc, "lcb") == pytest.approx(0.9 - 0.06 / 2)
    assert ranked_value({"val_accuracy": 0.9, "n_seeds": 1}, "val_accuracy", acc, "lcb") == 0.9  # one seed: the mean
    mae = {"val_mae": 0.5, "val_mae_std": 0.2, "n_seeds": 4}  # lower is better: ranked as -(mean + std/sqrt(k))
    assert ranked_value(mae, "val_mae", OBJECTIVES["mae"], "lcb") == pytest.approx(-(0.5 + 0.1))


def test_lcb_prefers_the_candidate_whose_seeds_agree_in_the_answer_the_export_and_the_comparison(tmp_path, capsys):
    assert lcb(SPREAD["W"][3]) < lcb(SPREAD["A"][3]) < 0.79 + 1e-12  # the premise, written the slow way
    trials = seeded_trials(SPREAD)
    front = front_from_trials(trials)
    assert {f["trial_id"] for f in front["front"]} == {"W", "A"} and not any(
        f["metrics"].get("unstable") for f in front["front"])
    assert best_front_point(front)["trial_id"] == "W" and best_front_point(front, rank="lcb")["trial_id"] == "A"
    base = [{"name": "late concat", "kind": "late_concat", "panel": "basic", "val_accuracy": 0.7, "val_std": 0.0,
             "holdout_accuracy": 0.7, "test_accuracy": 0.7, "test_std": 0.0, "params_total": 100, "flops_total": 200,
             "n_seeds": 3, "spec": None, "seconds": 1.0}]
    assert compare(front, base)["best"]["trial_id"] == "W"
    assert compare(front, base, rank="lcb")["best"]["trial_id"] == "A"

    for rank, want in (("mean", "W"), ("lcb", "A")):  # a run's search.rank decides its export's answer
        cfg = {**CONFIG, "search": {**CONFIG["search"], "rank": rank}}
        (tmp_path / rank).mkdir()
        store = make_run(tmp_path / rank, trials=trials, config=cfg)
        assert store.rank() == rank
        assert pick_trial(trials, front, "accuracy", rank=store.rank())["trial_id"] == want
        store.write_json("baselines.json", base)
        assert main(["show", str(store.run_dir)]) == 0  # show's comparison line names the same answer
        assert f"front best {dict(W='0.800', A='0.790')[want]} val" in capsys.readouterr().out


def test_an_unknown_rank_is_one_line_naming_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ndata: {kind: planted, task: xor}\nsearch: {rank: median}\n")
    with pytest.raises(Exception, match=r"search\.rank.*median"):
        load_config(path)
