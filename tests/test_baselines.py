"""Baselines beside every front: logistic regression, the recorded panel, the comparison,
what `fusion-nas search` / `show` print, and the report's marked points."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from fusion_ops import list_fusions
from fusion_ops.backbones import BackboneConfig, build_backbone
from search import baselines as bl
from search.cli import main
from search.datasets import load_dataset
from search.export import pick_trial
from search.report import data as report_data
from search.runstore.store import RunStore
from search.training import baselines_fit as bf
from search.training.taps import TapCache
from search.training.train import TrainConfig


def planted(task: str = "additive", n_train: int = 600, seed: int = 0):
    return load_dataset({"kind": "planted", "task": task, "n_train": n_train, "n_test": 300, "d": 8, "seed": seed})


def flat_splits(dataset):
    return [(bf.flat_inputs(xs), np.asarray(y)) for xs, y in (dataset.split(s) for s in ("train", "val", "test"))]


# ------------------------------------------------------------------ logistic regression
def test_logistic_regression_beats_chance_on_an_additive_task():
    ds = planted("additive")
    r = bf.linear_baseline(ds)
    chance = 1.0 / ds.num_classes
    assert r["kind"] == "linear" and r["panel"] == "basic" and r["n_seeds"] == 1
    assert r["val_accuracy"] > chance + 0.25 and r["test_accuracy"] > chance + 0.25, r
    d = sum(int(np.prod(s)) for s in ds.shapes.values())
    outputs = 1 if ds.num_classes == 2 else ds.num_classes
    assert r["params_total"] == d * outputs + outputs and r["flops_total"] == 2 * d * outputs


def test_logistic_regression_picks_the_c_with_the_best_val_accuracy():
    (xtr, ytr), (xva, yva), (xte, yte) = flat_splits(planted("additive", n_train=300, seed=3))
    grid = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    r = bf.logistic_regression((xtr, ytr), (xva, yva), (xte, yte), grid)
    scaler = StandardScaler().fit(xtr)
    slow = []  # the grid, one plain fit at a time
    for c in grid:
        model = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(xtr), ytr)
        slow.append(float((model.predict(scaler.transform(xva)) == yva).mean()))
    best = grid[slow.index(max(slow))]
    assert r["C"] == best and r["val_accuracy"] == pytest.approx(max(slow))
    assert [r["val_by_C"][c] for c in grid] == pytest.approx(slow)
    assert len(set(slow)) > 1  # the grid matters on this task, so the choice is a real one


# ------------------------------------------------------------------ the recorded panel
@pytest.fixture(scope="module")
def tiny():
    ds = planted("additive", n_train=300)
    g = torch.Generator().manual_seed(0)
    backbones = {m: build_backbone(BackboneConfig("mlp", (8,)), s, g) for m, s in ds.shapes.items()}
    return ds, backbones, TapCache.from_backbones(ds, backbones)


def test_classic_panel_is_recorded_with_one_baseline_per_operator_and_reused(tiny, tmp_path, monkeypatch):
    ds, backbones, taps = tiny
    store = RunStore.create(tmp_path, "t", {"name": "t"})
    lines: list[str] = []
    cfg = TrainConfig(epochs=3, patience=2)
    records = bf.ensure_baselines(store, ds, backbones, taps, cfg, panel="classic", n_seeds=2, say=lines.append)
    on_disk = json.loads((store.run_dir / bl.FILE).read_text())
    assert on_disk == json.loads(json.dumps(records))
    for r in on_disk:
        assert set(bl.RECORD_KEYS) <= set(r), r
        assert r["kind"] in bl.KINDS and r["panel"] in ("basic", "classic")
        assert r["n_seeds"] == (1 if r["kind"] == "linear" else 2)
        assert r["params_total"] > 0 and r["flops_total"] > 0 and 0 <= r["val_accuracy"] <= 1
        assert (r["spec"] is not None) == (r["kind"] in ("late_concat", "classic"))
    basic = [r for r in on_disk if r["panel"] == "basic"]
    assert sorted(r["kind"] for r in basic) == ["late_concat", "linear", "unimodal", "unimodal"]
    classic = [r for r in on_disk if r["panel"] == "classic"]
    assert sorted(r["spec"]["cells"][0]["op"] for r in classic) == list_fusions()
    assert all(r["spec"]["stage"] == "late" for r in classic)
    by_name = {r["name"]: r for r in on_disk}
    assert len(by_name) == len(on_disk)  # names label the plots' points: unique
    same = ("val_accuracy", "test_accuracy", "params_total", "spec")
    assert [by_name["classic concat"][k] for k in same] == [by_name["late concat"][k] for k in same]
    assert sum(line.startswith("baseline ") for line in lines) == len(on_disk)

    def no_training(*args, **kwargs):
        raise AssertionError("a stored baselines.json must not be retrained")

    monkeypatch.setattr(bf, "train_baselines", no_training)
    assert bf.ensure_baselines(store, ds, backbones, taps, cfg, panel="classic", n_seeds=2,
                               say=lines.append) == on_disk


def test_panel_none_trains_nothing(tiny, tmp_path):
    ds, backbones, taps = tiny
    store = RunStore.create(tmp_path, "t", {"name": "t"})
    assert bf.ensure_baselines(store, ds, backbones, taps, TrainConfig(epochs=1), panel="none") is None
    assert store.baselines() is None and "baselines" not in store.write_pareto()


def test_seeds_come_from_search_confirm_where_it_exists():
    class WithConfirm:
        confirm = 3

    assert bf.seeds_of(WithConfirm()) == 4 and bf.seeds_of(object()) == 1  # 1 + confirm, as a front candidate


# ------------------------------------------------------------------ compare
def member(tid, val, test, params, flops):
    return {"trial_id": tid, "metrics": {"val_accuracy": val, "test_accuracy": test,
                                         "params_total": params, "flops_total": flops}}


def baseline(name, val, test, params=100, flops=200, panel="basic", kind="linear"):
    return {"name": name, "kind": kind, "panel": panel, "val_accuracy": val, "test_accuracy": test,
            "params_total": params, "flops_total": flops}


FRONT = {"front": [member("a", 0.90, 0.85, 1000, 5000), member("b", 0.80, 0.82, 100, 400)]}


def test_compare_front_above_the_best_basic_baseline():
    cmp = bl.compare(FRONT, [baseline("logreg", 0.85, 0.80), baseline("img", 0.70, 0.95, kind="unimodal")])
    b = cmp["best"]
    assert b["trial_id"] == "a" and b["baseline"] == "logreg"  # chosen on val, never on test
    assert b["val_delta"] == pytest.approx(0.05) and b["test_delta"] == pytest.approx(0.05)
    assert b["beats_val"] and b["beats_test"]
    assert bl.summary_line(cmp) == ("front best 0.900 val / 0.850 test vs best baseline (logreg) 0.850 / 0.800: "
                                    "+5.0 / +5.0 points (above on val and test)")


def test_compare_front_below_on_test_and_equal_is_not_beating():
    cmp = bl.compare(FRONT, [baseline("late concat", 0.90, 0.88, kind="late_concat")])
    b = cmp["best"]
    assert not b["beats_val"] and not b["beats_test"]
    assert b["val_delta"] == 0 and b["test_delta"] == pytest.approx(-0.03)
    assert bl.summary_line(cmp).endswith(": +0.0 / -3.0 points (level on val, below on test)")


def test_a_lower_mae_reads_as_better_not_below():
    from search import objectives

    objs = objectives.get(("mae", "params", "flops"))
    front = {"front": [{"trial_id": "a", "metrics": {"val_mae": 0.86, "test_mae": 0.90, "params_total": 10,
                                                      "flops_total": 20}}]}
    base = {"name": "late concat", "kind": "late_concat", "panel": "basic", "val_mae": 0.96, "test_mae": 0.88,
            "params_total": 10, "flops_total": 20}
    cmp = bl.compare(front, [base], objs)
    assert cmp["best"]["beats_val"] and not cmp["best"]["beats_test"]
    assert bl.summary_line(cmp).endswith("0.960 / 0.880 (better on val, worse on test)")


def test_compare_classic_weak_dominance():
    classic = [baseline("late equal", 0.80, 0.5, 100, 400, panel="classic", kind="classic"),  # equal to b
               baseline("late cheap", 0.80, 0.5, 99, 400, panel="classic", kind="classic"),  # fewer params
               baseline("late good", 0.95, 0.5, 5000, 9000, panel="classic", kind="classic"),  # more accurate
               baseline("late mid", 0.85, 0.5, 2000, 6000, panel="classic", kind="classic")]  # a dominates
    cmp = bl.compare(FRONT, classic)
    got = {c["name"]: c["dominated_by"] for c in cmp["classic"]}
    assert got == {"late equal": "b", "late cheap": None, "late good": None, "late mid": "a"}
    assert [c["dominated"] for c in cmp["classic"]] == [True, False, False, True]
    assert cmp["best"] is None  # no basic baseline to compare with


def test_dominance_is_judged_on_the_holdout_where_the_baseline_has_one():
    """The av_digits case of issue 23: a member ahead on val (where the search chose it) but
    behind on the holdout dominates nothing; ahead on both, it does."""
    front = {"front": [{"trial_id": "lucky", "metrics": {"val_accuracy": 0.92, "holdout_accuracy": 0.88,
                                                          "params_total": 100, "flops_total": 100}},
                       {"trial_id": "solid", "metrics": {"val_accuracy": 0.90, "holdout_accuracy": 0.91,
                                                          "params_total": 500, "flops_total": 500}}]}
    late = {**baseline("late concat", 0.90, 0.88, 400, 400, panel="classic", kind="classic"), "holdout_accuracy": 0.90}
    assert bl.dominating_member(front, late) is None  # lucky: above on val, below on the holdout; solid: bigger
    assert bl.dominating_member(front, {**late, "params_total": 600, "flops_total": 600}) == "solid"
    assert bl.dominating_member(front, {**late, "holdout_accuracy": None}) == "lucky"  # no holdout: val decides
    no_holdout = {"front": [{"trial_id": "x", "metrics": {"val_accuracy": 0.99, "params_total": 1, "flops_total": 1}}]}
    assert bl.dominating_member(no_holdout, late) is None  # the baseline's holdout cannot be matched on val


def test_the_holdout_difference_is_weighed_against_its_noise_by_the_formula():
    """2 SE of the difference: seeds (std / sqrt(k)) and a proportion's sampling error on n samples."""
    front = {"front": [{"trial_id": "a", "metrics": {"val_accuracy": 0.92, "test_accuracy": 0.85,
                                                      "holdout_accuracy": 0.883, "holdout_accuracy_std": 0.01,
                                                      "n_seeds": 3, "holdout_n": 108.0, "params_total": 9000,
                                                      "flops_total": 1}}]}
    late = {**baseline("late concat", 0.903, 0.876, 140_000, 5), "holdout_accuracy": 0.880,
            "holdout_accuracy_std": 0.004, "n_seeds": 3, "holdout_n": 108.0}
    b = bl.compare(front, [late])["best"]
    want = 2 * math.sqrt(0.01**2 / 3 + 0.004**2 / 3 + 0.883 * 0.117 / 108 + 0.880 * 0.120 / 108)
    assert b["noise"] == pytest.approx(want) and b["holdout_delta"] == pytest.approx(0.003)
    assert not b["beyond_noise"] and b["cheaper"] == "front"
    line = bl.summary_line({"best": b})
    assert line.endswith("chosen on the holdout: 0.883 vs 0.880, +0.3 points, within the noise (±8.9): "
                         "no better than late concat; prefer the cheaper (the front's point))"), line
    big = bl.compare({"front": [{**front["front"][0], "metrics": {**front["front"][0]["metrics"],
                                                                  "holdout_n": 100_000.0,
                                                                  "holdout_accuracy_std": 0.0}}]},
                     [{**late, "holdout_n": 100_000.0, "holdout_accuracy_std": 0.0, "holdout_accuracy": 0.70}])["best"]
    assert big["beyond_noise"] and ", +18.3 points, beyond the noise (±0.4))" in bl.summary_line({"best": big})
    assert "noise" not in bl.compare(FRONT, [baseline("logreg", 0.8, 0.8)])["best"]  # no holdout: nothing said


def test_the_answer_is_the_cheaper_late_concat_when_the_front_cannot_be_told_from_it():
    """Issue 23's av_digits case: the front's point leads the late concat by 0.3 points on a
    108-sample holdout (noise ±8.9) while the late concat, trained in the run as a candidate, is
    the cheaper: the run's answer is the late concat. Beyond the noise, or with a baseline that
    is no candidate of the run (logreg), or a dearer one, the front's point stays the answer."""
    def run(front_holdout=0.883, late_params=5000, n=108.0, trained=True, name="late concat"):
        top = {"trial_id": "a", "metrics": {"val_accuracy": 0.92, "test_accuracy": 0.85,
                                            "holdout_accuracy": front_holdout, "holdout_accuracy_std": 0.01,
                                            "n_seeds": 3, "holdout_n": n, "params_total": 9000, "flops_total": 1}}
        late = {**baseline(name, 0.903, 0.876, late_params, 5), "holdout_accuracy": 0.880,
                "holdout_accuracy_std": 0.004, "n_seeds": 3, "holdout_n": n}
        # the late concat's seeds as a run records them (search.baselines.seed_trials); a front member's trial
        trials = [{"trial_id": "a", "status": "ok"}] + ([
            {"trial_id": "b0s0", "status": "ok", "baseline": name},
            {"trial_id": "b0s1", "status": "ok", "baseline": name, "confirm": True}] if trained else [])
        return {"front": [top]}, [late], trials

    front, base, trials = run()
    assert bl.answer_trial(front, base, trials) == "b0s0"
    b = bl.compare(front, base, trials=trials)["best"]
    assert b["answer"] == "b0s0" and b["answer_is_baseline"]
    assert bl.summary_line({"best": b}).endswith(
        "no better than late concat; prefer the cheaper (late concat); the run's answer is late concat (trial b0s0))")
    assert pick_trial(trials + [{"trial_id": "x"}], {"trial_ids": ["a"], **front}, "accuracy",
                      baselines=base)["trial_id"] == "b0s0"  # what `export --pick accuracy` exports
    assert bl.answer_trial(*run(front_holdout=0.98)) == "a"  # +10 points: beyond the noise
    assert bl.answer_trial(*run(front_holdout=0.70, n=100_000.0)) == "b0s0"  # behind beyond the noise
    assert bl.answer_trial(*run(late_params=20_000)) == "a"  # within the noise, but the front's is cheaper
    assert bl.answer_trial(*run(trained=False, name="logreg")) == "a"  # not a candidate of the run
    assert bl.answer_trial(front, None, trials) == "a" and "answer" not in bl.compare(front, base)["best"]


def test_compare_an_empty_front():
    cmp = bl.compare({"front": []}, [baseline("logreg", 0.8, 0.8),
                                     baseline("late x", 0.5, 0.5, panel="classic", kind="classic")])
    assert cmp["best"] is None and cmp["classic"] == [{"name": "late x", "dominated": False, "dominated_by": None}]


# ------------------------------------------------------------------ the report's data
def test_report_data_marks_baseline_points():
    stored = [baseline("logreg", 0.85, 0.80, 50, 100),
              baseline("late tensor", 0.7, 0.6, 300, 900, panel="classic", kind="classic"),
              baseline("late broken", None, None, None, None, panel="classic", kind="classic")]
    points = report_data.baseline_points(stored, bl.compare(FRONT, stored))
    assert [p.name for p in points] == ["logreg", "late tensor", "late broken"]
    assert points[1].dominated_by == "b" and "dominated by front trial b" in points[1].hover
    assert "baseline: logreg" in points[0].hover
    for cost, xs in (("params", [50, 300]), ("flops", [100, 900])):
        s = report_data.baseline_series(points, cost)
        assert s.status == "baseline" and s.name == "baselines"
        assert s.trial_ids == ["logreg", "late tensor"] and s.x == xs and s.y == [0.85, 0.7]
    rows = report_data.baseline_table(points)
    assert rows[0]["name"] == "logreg" and rows[1]["front"] == "dominated by b" and rows[0]["front"] == ""


def test_report_draws_baselines_as_labelled_crosses():
    from search.report import page as report_html

    stored = [baseline("logreg", 0.85, 0.80, 50, 100)]
    points = report_data.baseline_points(stored)
    fig = report_html.scatter_figure([], "params", "stage", points)
    trace = next(t for t in fig.data if t.meta == "baselines")
    assert trace.marker.symbol == "x-thin-open" and list(trace.text) == ["logreg"]
    page = report_html.render_html("t", [], {"n": [], "trial_id": [], "hypervolume": [], "best_val_accuracy": []},
                                   report_data.summary([], {}), "", baselines=points, comparison_line="front best")
    assert 'id="baselines-table"' in page and "front best" in page


# ------------------------------------------------------------------ through the CLI
def planted_config(tmp_path: Path, **search) -> Path:
    cfg = {
        "name": "bl",
        "data": {"kind": "planted", "task": "additive", "n_train": 400, "n_test": 200, "d": 8, "seed": 0},
        "backbones": {"cache_dir": str(tmp_path / "cache"), "pretrain": {"epochs": 3, "patience": 2},
                      "modalities": {"m1": {"kind": "mlp", "widths": [8]}, "m2": {"kind": "mlp", "widths": [8]}}},
        "space": {"stages": ["late"], "ops": {"concat": {}, "tensor": {"proj_dim": [4]}}, "widths": [8],
                  "activations": ["relu"], "max_cells": 1},
        "train": {"epochs": 5, "patience": 3},
        "search": {"strategy": "random", "num_samples": 3, "runs_dir": str(tmp_path / "runs"), "max_concurrent": 1,
                   **search},
    }
    path = tmp_path / "bl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.usefixtures("ray_local")
def test_search_and_show_print_the_baselines_and_the_comparison(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["search", str(planted_config(tmp_path)), "--num-samples", "3"]) == 0
    out = capsys.readouterr().out
    run_dir = Path(out.strip().splitlines()[-1].split(": ", 1)[1])
    for line in ("baseline m1 alone:", "baseline m2 alone:", "baseline logreg:", "baseline late concat:"):
        assert line in out  # progress, one line per baseline, before the search
    assert out.index("baseline logreg:") < out.index("trials 3/3")
    assert "baselines (trained before the search" in out and "front best " in out and "vs best baseline (" in out
    pareto = json.loads((run_dir / "pareto.json").read_text())
    stored = json.loads((run_dir / bl.FILE).read_text())
    assert [b["name"] for b in stored] == ["m1 alone", "m2 alone", "logreg", "late concat"]
    assert pareto["baselines"]["best"]["baseline"] == bl.best_basic(stored)["name"]
    assert bl.summary_line(pareto["baselines"]) in out
    assert 'id="baselines-table"' in (run_dir / "report.html").read_text()

    assert main(["show", str(run_dir)]) == 0
    shown = capsys.readouterr().out
    assert "logreg" in shown and bl.summary_line(pareto["baselines"]) in shown


def test_a_bad_baselines_value_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["search", str(planted_config(tmp_path, baselines="fancy"))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "search.baselines: unknown value 'fancy'; known: basic, classic, none" in err
