"""The data behind report.html, on a hand-made run directory whose answers are known.

`make_run` is shared with test_report_browser.py and test_export.py: eight ok trials
(front: A, B, C, E, H; knee B; most accurate A, tied with F on accuracy; smallest C,
tied with G and H on parameters), and one failed, one errored, one early-stopped trial.
"""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from plotly.offline import get_plotlyjs

from search import objectives
from search.config import load_config
from search.report import data as rd
from search.runstore.store import RunStore, front_from_trials

CONFIG = {
    "name": "handmade",
    "data": {"kind": "planted", "task": "xor", "n_train": 300, "n_test": 200, "d": 6, "seed": 0},
    "backbones": {"pretrain": {"epochs": 3, "patience": 2},
                  "modalities": {"m1": {"kind": "mlp", "widths": [12, 8]}, "m2": {"kind": "mlp", "widths": [12, 8]}}},
    "space": {"stages": ["late", "hybrid"], "ops": {"concat": {}, "tensor": {"proj_dim": [4]}, "low_rank": {"rank": [2]}},
              "widths": [8, 16], "activations": ["relu"], "max_cells": 2},
    "train": {"epochs": 6, "patience": 3},
    "search": {"strategy": "random", "num_samples": 12},
}

# trial id -> (stage, op, taps, width, val, test, params, flops)
OK = {
    "A": ("hybrid", "tensor", ("m1@1", "m2@2"), 16, 0.90, 0.88, 5000, 9000),
    "B": ("hybrid", "concat", ("m1@1", "m2@1"), 16, 0.85, 0.84, 2000, 4000),
    "C": ("late", "concat", ("m1@2", "m2@2"), 8, 0.52, 0.50, 500, 1000),
    "D": ("hybrid", "low_rank", ("m1@0", "m2@1"), 8, 0.80, 0.79, 6000, 12000),
    "E": ("hybrid", "tensor", ("m1@0", "m2@0"), 8, 0.82, 0.81, 2600, 3100),
    "F": ("hybrid", "tensor", ("m1@2", "m2@1"), 8, 0.90, 0.91, 7000, 9500),
    "G": ("late", "low_rank", ("m1@2", "m2@2"), 8, 0.50, 0.49, 500, 1200),
    "H": ("late", "tensor", ("m1@2", "m2@2"), 16, 0.50, 0.52, 500, 800),
}
FRONT, KNEE = {"A", "B", "C", "E", "H"}, "B"


def spec_dict(stage: str, op: str, taps: tuple[str, ...], width: int) -> dict:
    args = {"tensor": {"proj_dim": 4}, "low_rank": {"rank": 2}}.get(op, {})
    return {"stage": stage, "cells": [{"taps": list(taps), "op": op, "args": args, "width": width,
                                       "activation": "relu"}], "head": []}


def record(tid: str, spec: dict, status: str, metrics: dict, reason: str = "") -> dict:
    from spaces import ArchSpec

    return {"trial_id": tid, "spec": spec, "arch_id": ArchSpec.from_dict(spec).arch_id, "metrics": metrics,
            "status": status, "reason": reason, "seconds": 1.0, "finished_at": "2025-01-01T00:00:00+00:00"}


def handmade_trials() -> list[dict]:
    out = []
    for tid, (stage, op, taps, width, val, test, params, flops) in OK.items():
        out.append(record(tid, spec_dict(stage, op, taps, width), "ok", {
            "val_accuracy": val, "test_accuracy": test, "params_total": params, "flops_total": flops,
            "params_fusion": params // 2, "flops_fusion": flops // 2, "epochs": 5, "best_epoch": 3}))
    out.insert(3, record("X-failed", spec_dict("hybrid", "concat", ("m1@0", "m2@2"), 8), "failed",
                         {"val_accuracy": None, "test_accuracy": None, "params_total": 3000, "flops_total": 5000},
                         "loss became nan in epoch 2 (lr 0.003)"))
    out.insert(6, record("X-errored", spec_dict("hybrid", "concat", ("m1@2", "m2@0"), 16), "errored", {},
                         "RayActorError: the worker died"))
    out.append(record("X-early", spec_dict("late", "low_rank", ("m1@2", "m2@2"), 16), "early_stopped",
                      {"val_accuracy": 0.7, "epochs": 2}, "stopped by the scheduler after 2 epoch(s)"))
    return out


def make_run(tmp: Path, trials: list[dict] | None = None, config: dict | None = None) -> RunStore:
    """A run directory as a search leaves it: config.yaml (resolved), trials.jsonl, pareto.json."""
    cfg_path = tmp / "handmade.yaml"
    config = CONFIG if config is None else config
    cfg = {**config, "backbones": {**config["backbones"], "cache_dir": str(tmp / "cache")}}
    cfg_path.write_text(yaml.safe_dump(cfg))
    resolved = load_config(cfg_path)
    store = RunStore.create(tmp / "runs", resolved.name, {**resolved.to_dict(), "source": str(cfg_path)})
    for t in handmade_trials() if trials is None else trials:
        store.append_trial(t)
    store.write_pareto()
    return store


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path)


def _points(store: RunStore, costs=None):
    trials = store.trials()
    return trials, rd.trial_points(trials, store.read_json("pareto.json"), costs)


# ------------------------------------------------------------------ the hand-made answers hold
def test_the_handmade_front_and_knee_are_what_the_module_docstring_says(run):
    front = run.read_json("pareto.json")
    assert set(front["trial_ids"]) == FRONT
    assert front["knee"] == KNEE


# ------------------------------------------------------------------ points and series
def test_every_trial_is_a_point_with_its_status_and_front_membership(run):
    trials, points = _points(run)
    assert [p.trial_id for p in points] == [t["trial_id"] for t in trials]
    by = {p.trial_id: p for p in points}
    assert {p.trial_id for p in points if p.on_front} == FRONT
    assert [p.trial_id for p in points if p.knee] == [KNEE]
    assert by["X-errored"].status == "errored" and by["X-errored"].accuracy is None and by["X-errored"].y == 0.0
    assert by["X-early"].accuracy == 0.7 and by["X-early"].params is None  # no cost in its record
    assert by["X-failed"].params == 3000 and by["X-failed"].accuracy is None


def test_costs_fill_trials_whose_record_has_none(run):
    trials, _ = _points(run)
    costs = {t["arch_id"]: (111.0, 222.0) for t in trials if t["trial_id"] in ("X-errored", "X-early")}
    _, points = _points(run, costs)
    by = {p.trial_id: p for p in points}
    assert (by["X-errored"].params, by["X-errored"].flops) == (111.0, 222.0)
    assert by["A"].params == 5000  # a record's own costs win


def test_hover_shows_the_architecture_scores_and_costs(run):
    _, points = _points(run)
    a = next(p for p in points if p.trial_id == "A").hover
    for text in ("trial A", "stage: hybrid", "cell 1: tensor(m1@1, m2@2, proj_dim=4) → 16, relu",
                 "val accuracy 0.9000", "test 0.8800", "params 5k", "FLOPs 9k", "on the front"):
        assert text in a
    errored = next(p for p in points if p.trial_id == "X-errored").hover
    assert "errored" in errored and "RayActorError" in errored and "params and FLOPs unknown" in errored


@pytest.mark.parametrize("by", ["stage", "op"])
@pytest.mark.parametrize("cost", ["params", "flops"])
def test_scatter_series_hold_every_placed_trial_once_grouped_and_by_status(run, cost, by):
    _, points = _points(run)
    series = rd.scatter_series(points, cost, by)
    ids = [i for s in series for i in s.trial_ids]
    placed = [p.trial_id for p in points if p.cost(cost) is not None]
    assert sorted(ids) == sorted(placed) and len(ids) == len(set(ids))
    by_id = {p.trial_id: p for p in points}
    for s in series:
        assert all(getattr(by_id[i], by) == s.group and by_id[i].status == s.status for i in s.trial_ids)
        assert s.x == [by_id[i].cost(cost) for i in s.trial_ids] and s.y == [by_id[i].y for i in s.trial_ids]
    assert {s.name for s in series if s.status == "failed"} == {"hybrid (failed)" if by == "stage" else "concat (failed)"}


def test_front_points_and_knee_are_pareto_json(run):
    _, points = _points(run)
    front = run.read_json("pareto.json")
    assert sorted(rd.front_points(points, "params").trial_ids) == sorted(front["trial_ids"])
    assert rd.front_points(points, "flops", knee_only=True).trial_ids == [front["knee"]]


def test_staircase_is_the_best_front_accuracy_at_each_cost(run):
    _, points = _points(run)
    xs, ys = rd.staircase(points, "params")
    # front by params: C/H 500 (0.52, 0.50) -> B 2000 (0.85) -> E 2600 (0.82, no gain) -> A 5000 (0.90); ends at F's 7000
    assert xs == [500, 2000, 5000, 7000] and ys == [0.52, 0.85, 0.90, 0.90]
    xs, ys = rd.staircase(points, "flops")
    assert xs == [800, 1000, 3100, 4000, 9000, 12000] and ys == [0.50, 0.52, 0.82, 0.85, 0.90, 0.90]


def test_a_run_with_no_ok_trial_has_an_empty_front_and_staircase(tmp_path):
    store = make_run(tmp_path, [t for t in handmade_trials() if t["status"] != "ok"])
    _, points = _points(store)
    assert rd.staircase(points, "params") == ([], [])
    assert rd.front_points(points, "params").trial_ids == []
    assert rd.history(store.trials())["hypervolume"] == [0.0, 0.0, 0.0]


# ------------------------------------------------------------------ history
def test_history_ends_at_pareto_json_and_never_decreases(run):
    trials = run.trials()
    hist = rd.history(trials, run.reference)
    front = run.read_json("pareto.json")
    assert hist["n"] == list(range(1, len(trials) + 1))
    assert hist["hypervolume"][-1] == pytest.approx(front["hypervolume"], rel=1e-12)
    assert np.all(np.diff(hist["hypervolume"]) >= -1e-12)
    assert hist["best_val_accuracy"][-1] == front["best_val_accuracy"] == 0.90
    # each step equals the front of the trials so far, computed from scratch with the same reference
    ref = objectives.default_reference([t["metrics"]["params_total"] for t in trials if t["status"] == "ok"],
                                   [t["metrics"]["flops_total"] for t in trials if t["status"] == "ok"])
    for i in (1, 4, 7):
        assert hist["hypervolume"][i - 1] == pytest.approx(front_from_trials(trials[:i], ref)["hypervolume"])


def test_history_uses_the_runs_fixed_reference(tmp_path):
    store = make_run(tmp_path)
    store.write_json("reference.json", {"reference": [0.0, 6.0, 6.0]})
    store.write_pareto()
    hist = rd.history(store.trials(), store.reference)
    assert hist["hypervolume"][-1] == pytest.approx(store.read_json("pareto.json")["hypervolume"])
    assert hist["hypervolume"][0] == pytest.approx(0.90 * (6 - math.log10(5000)) * (6 - math.log10(9000)))


# ------------------------------------------------------------------ breakdown, table, summary
def test_breakdown_counts_trials_front_members_and_best_accuracy(run):
    _, points = _points(run)
    stages = {r["key"]: r for r in rd.breakdown(points, "stage")}
    assert stages["late"] == {"key": "late", "trials": 4, "ok": 3, "on_front": 2, "best_val_accuracy": 0.52}
    assert stages["hybrid"] == {"key": "hybrid", "trials": 7, "ok": 5, "on_front": 3, "best_val_accuracy": 0.90}
    ops = {r["key"]: r for r in rd.breakdown(points, "op")}
    assert (ops["tensor"]["trials"], ops["tensor"]["on_front"], ops["tensor"]["best_val_accuracy"]) == (4, 3, 0.90)
    assert (ops["concat"]["trials"], ops["concat"]["ok"], ops["concat"]["on_front"]) == (4, 2, 2)


def test_front_table_is_the_front_most_accurate_first(run):
    _, points = _points(run)
    rows = rd.front_table(points)
    assert [r["trial"] for r in rows] == ["A", "B", "E", "C", "H"]
    assert [r["knee"] for r in rows] == [False, True, False, False, False]


def test_summary_counts_statuses_and_lists_unplaced_trials(run):
    _, points = _points(run)
    s = rd.summary(points, run.read_json("pareto.json"))
    assert s["status_counts"] == {"ok": 8, "failed": 1, "errored": 1, "early_stopped": 1}
    assert (s["n_trials"], s["front_size"], s["knee"]) == (11, 5, "B")
    assert s["unplaced"] == ["X-errored", "X-early"]


# ------------------------------------------------------------------ the page and the command
def _parse(argv):
    from search.cli.common import COMMANDS
    from search.cli.results import add_parsers

    parser = argparse.ArgumentParser(prog="fusion-nas")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return COMMANDS[args.command](args)


def test_report_command_writes_a_self_contained_page_drawing_every_trial(run, capsys):
    assert _parse(["report", str(run.run_dir)]) == 0
    assert f"report: {run.run_dir / 'report.html'}" in capsys.readouterr().out
    page = (run.run_dir / "report.html").read_text()
    plotly_js = get_plotlyjs()
    assert page.count(plotly_js) == 1  # offline: plotly.js inline, once
    rest = page.replace(plotly_js, "")
    assert not re.search(r"<script[^>]*\bsrc=|<link[^>]*\bhref=|https?://", rest)  # and nothing fetched
    assert rest.count("Plotly.newPlot") == 6
    assert "X-errored" in page and "X-early" in page
    assert "not drawn" not in page  # costs of errored/early-stopped trials came from the config
    assert "kind: planted" in page  # the run's config


def test_missing_costs_are_the_exact_costs_of_the_spec(run):
    from fusion_ops import build_backbone, candidate_cost
    from search.datasets import load_dataset
    from search.export import read_config
    from search.report.write import missing_costs
    from spaces import ArchSpec

    costs = missing_costs(run, run.trials())
    trials = {t["trial_id"]: t for t in run.trials()}
    assert set(costs) == {trials["X-errored"]["arch_id"], trials["X-early"]["arch_id"]}
    config = read_config(run.run_dir)
    data = load_dataset(config.data, config.path.parent)
    backbones = {m: build_backbone(config.backbones.modalities[m], s) for m, s in data.shapes.items()}
    want = candidate_cost(ArchSpec.from_dict(trials["X-early"]["spec"]), backbones, data.num_classes)
    assert costs[trials["X-early"]["arch_id"]] == (want["params_total"], want["flops_total"])


def test_a_run_whose_data_is_gone_still_gets_a_report_naming_the_undrawn_trials(tmp_path, capsys):
    store = make_run(tmp_path)
    cfg = store.config()
    cfg["data"] = {"kind": "npz", "path": str(tmp_path / "gone.npz")}
    store.config_path.write_text(yaml.safe_dump(cfg))
    from search.report.write import write_report

    page = write_report(store.run_dir, say=print).read_text()
    assert "costs of 2 trial(s) are unknown" in capsys.readouterr().out
    assert "2 trial(s) with unknown params/FLOPs are not drawn: X-errored, X-early" in page


def test_report_on_a_folder_that_is_not_a_run_is_a_usage_error(tmp_path):
    from search.cli.common import UsageError

    with pytest.raises(UsageError, match="not a fusion-nas run directory"):
        _parse(["report", str(tmp_path)])


def test_unknown_image_format_is_refused_by_the_parser(run):
    with pytest.raises(SystemExit):
        _parse(["report", str(run.run_dir), "--format", "gif"])


def test_colour_by_operator_is_the_last_cells_operator_and_the_chain_is_in_the_hover(run):
    trials, points = _points(run)
    series = rd.scatter_series(points, "params", "op")
    ops_used = {op for p in points for op in p.ops}
    assert {s.group for s in series} <= ops_used  # no "a→b" chain names in the legend
    for p, t in zip(points, trials, strict=True):
        assert p.op == t["spec"]["cells"][-1]["op"]
        assert all(f"{c['op']}(" in p.hover for c in t["spec"]["cells"])


def test_a_run_of_four_objectives_gets_a_panel_per_cost_and_a_parallel_view(run):
    from search.objectives import get
    from search.report import page as report_html

    trials, points = _points(run)
    objs = get(["accuracy", "params", "flops", "latency"])
    figs = report_html.figures(points, rd.history(trials, None), (), objs)
    assert {"params-stage", "flops-stage", "latency-op", "parallel"} <= set(figs)
    assert "parallel" not in report_html.figures(points, rd.history(trials, None))
    assert figs["params-op"].layout.yaxis.title.text == "validation accuracy"
