"""The holdout: a stratified part of val that no training or strategy reads and that alone
chooses the search's answer among the front (`search.holdout`)."""
from __future__ import annotations

import numpy as np
import pytest

from search import baselines as bl
from search.config import config_from_dict
from search.datasets import load_dataset
from search.engine.run import prepare
from search.training import baselines_fit as bf
from search.training.taps import HOLDOUT_MIN, TapCache, holdout_rows
from search.training.train import TrainConfig, evaluate_candidate
from spaces import ArchSpec
from spaces.spec import CellSpec
from spaces.yaml_errors import ConfigError


def test_holdout_rows_are_a_stratified_seeded_share_and_off_when_too_small():
    y = np.repeat(np.arange(4), 100)  # 400 val labels, 4 classes
    rows = holdout_rows(y, "classification", 0.3, seed=0)
    assert len(rows) == 120 and len(set(rows.tolist())) == 120 and rows.min() >= 0 and rows.max() < 400
    assert sorted(np.bincount(y[rows]).tolist()) == [30, 30, 30, 30]  # every class in proportion
    assert np.array_equal(rows, holdout_rows(y, "classification", 0.3, seed=0))  # the same run, the same rows
    assert not np.array_equal(rows, holdout_rows(y, "classification", 0.3, seed=1))
    assert len(holdout_rows(y, "classification", 0.0, seed=0)) == 0
    small = np.repeat(np.arange(2), 150)  # 300 samples: 0.3 is 90, under HOLDOUT_MIN
    assert len(holdout_rows(small, "classification", 0.3, seed=0)) == 0 and HOLDOUT_MIN == 100
    assert len(holdout_rows(np.zeros((400, 2)), "regression", 0.25, seed=0)) == 100  # random rows for targets


def tiny_cache(n_val: int = 10) -> TapCache:
    rng = np.random.default_rng(0)
    taps = {s: {"a@0": rng.standard_normal((n, 3)).astype(np.float32)} for s, n in
            (("train", 8), ("val", n_val), ("test", 5))}
    labels = {s: (np.arange(len(x["a@0"])) % 2).astype(np.int64) for s, x in taps.items()}
    lengths = {"val": {"a@0": np.arange(n_val, dtype=np.int64)}}
    return TapCache(taps, labels, {"a@0": (3,)}, 2, lengths=lengths)


def test_with_holdout_moves_the_rows_out_of_val_and_keeps_the_rest():
    cache = tiny_cache()
    out = cache.with_holdout(np.array([7, 2, 5]))
    assert np.array_equal(out.holdout_rows, [2, 5, 7])
    kept = [0, 1, 3, 4, 6, 8, 9]
    assert np.array_equal(out.taps["val"]["a@0"], cache.taps["val"]["a@0"][kept])
    assert np.array_equal(out.taps["holdout"]["a@0"], cache.taps["val"]["a@0"][[2, 5, 7]])
    assert np.array_equal(out.labels["holdout"], cache.labels["val"][[2, 5, 7]])
    assert np.array_equal(out.lengths["holdout"]["a@0"], [2, 5, 7]) and np.array_equal(out.lengths["val"]["a@0"], kept)
    assert out.taps["train"] is cache.taps["train"] and out.tensors("holdout")[1].tolist() == [0, 1, 1]
    assert cache.with_holdout(np.zeros(0, dtype=np.int64)) is cache
    assert out.subset(["a@0"]).holdout_rows is out.holdout_rows
    with pytest.raises(ValueError, match="already has a holdout"):
        out.with_holdout(np.array([0]))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A planted run with 400 val samples: prepare carves a 120-sample holdout out of val."""
    tmp = tmp_path_factory.mktemp("holdout")
    cfg = config_from_dict({"name": "held", "data": {"kind": "planted", "task": "additive", "n_train": 2000,
                                                     "n_test": 200, "d": 6, "seed": 0},
                            "backbones": {"cache_dir": None, "pretrain": {"epochs": 2}},
                            "space": {"ops": {"concat": {}}, "widths": [8], "max_cells": 1}},
                           tmp / "held.yaml")
    lines: list[str] = []
    return prepare(cfg, say=lines.append), lines


def test_prepare_carves_the_holdout_and_says_so(prepared):
    p, lines = prepared
    n_val = len(p.dataset.y_val)
    assert n_val == 400 and len(p.taps.labels["holdout"]) == 120 and len(p.taps.labels["val"]) == 280
    assert np.array_equal(p.taps.holdout_rows, holdout_rows(p.dataset.y_val, p.dataset.task, 0.3, 0))
    assert any(line.startswith("holdout: 120 of the 400 val samples are kept out of the search") for line in lines)


def test_candidates_and_baselines_are_scored_on_the_holdout_they_never_trained_on(prepared):
    p, _ = prepared
    spec = ArchSpec("late", (CellSpec(("m1@2", "m2@2"), "concat", 8, "relu"),))
    m = evaluate_candidate(spec, p.taps, TrainConfig(max_steps=40, min_steps=20))
    head_acc = m["holdout_accuracy"]
    assert 0.0 <= head_acc <= 1.0 and m["val_accuracy"] is not None and m["test_accuracy"] is not None
    logreg = bf.linear_baseline(p.dataset, p.taps.holdout_rows)
    (xtr, ytr), (xva, yva), _ = ((bf.flat_inputs(xs), np.asarray(y)) for xs, y in
                                 (p.dataset.split(s) for s in ("train", "val", "test")))
    keep = np.setdiff1d(np.arange(len(yva)), p.taps.holdout_rows)
    slow = bf.logistic_regression((xtr, ytr), (xva[keep], yva[keep]), (xva[keep], yva[keep]))  # C chosen on val - holdout
    assert logreg["C"] == slow["C"] and logreg["val_accuracy"] == pytest.approx(slow["val_accuracy"])
    assert "holdout_accuracy" in logreg


def member(tid, val, test, params, holdout=None):
    m = {"val_accuracy": val, "test_accuracy": test, "params_total": params, "flops_total": params}
    if holdout is not None:
        m["holdout_accuracy"] = holdout
    return {"trial_id": tid, "metrics": m}


def test_the_answer_is_the_best_on_the_holdout_not_the_luckiest_on_val():
    front = {"front": [member("lucky", 0.92, 0.88, 900, holdout=0.86), member("steady", 0.90, 0.91, 500, holdout=0.90),
                       member("cheap", 0.70, 0.70, 10, holdout=0.69)]}
    assert bl.best_front_point(front)["trial_id"] == "steady"
    no_holdout = {"front": [{**f, "metrics": {k: v for k, v in f["metrics"].items() if k != "holdout_accuracy"}}
                            for f in front["front"]]}
    assert bl.best_front_point(no_holdout)["trial_id"] == "lucky"  # without one: the best val
    tie = {"front": [member("x", 0.90, 0.8, 900, holdout=0.9), member("y", 0.91, 0.8, 900, holdout=0.9)]}
    assert bl.best_front_point(tie)["trial_id"] == "y"  # a holdout tie goes to the better val
    basics = [{"name": "logreg", "panel": "basic", "val_accuracy": 0.95, "holdout_accuracy": 0.80},
              {"name": "late concat", "panel": "basic", "val_accuracy": 0.90, "holdout_accuracy": 0.85}]
    assert bl.best_basic(basics)["name"] == "late concat"
    cmp = bl.compare(front, [{**b, "test_accuracy": 0.8} for b in basics])
    assert cmp["best"]["trial_id"] == "steady" and cmp["best"]["front_holdout"] == 0.90
    assert cmp["best"]["baseline"] == "late concat" and cmp["best"]["baseline_holdout"] == 0.85
    assert bl.summary_line(cmp) == ("front best 0.900 val / 0.910 test vs best baseline (late concat) 0.900 / 0.800: "
                                    "+0.0 / +11.0 points (level on val, above on test; chosen on the holdout: "
                                    "0.900 vs 0.850)")


@pytest.mark.parametrize("value", [-0.1, 0.6, "a third", True, None])
def test_a_bad_holdout_is_one_line_naming_the_key(tmp_path, value):
    with pytest.raises(ConfigError, match=r"search\.holdout: expected a fraction of the val split in \[0, 0\.5\]"):
        config_from_dict({"name": "x", "data": {"kind": "planted", "task": "xor"}, "search": {"holdout": value}},
                         tmp_path / "x.yaml")


def test_a_planted_run_with_a_small_val_split_has_no_holdout():
    ds = load_dataset({"kind": "planted", "task": "xor", "n_train": 1000, "n_test": 100, "d": 4, "seed": 0})
    assert len(ds.y_val) == 200 and len(holdout_rows(ds.y_val, ds.task, 0.3, 0)) == 0
