"""Task types end to end: metrics against slow hand computations, each task through the CLI
(search, show, report, export, evaluate), configuration mistakes as one line, and latency."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from search import objectives
from search.cli import main
from search.training.tasks import auc, get_task, log_loss, sign_scores
from spaces import ConfigError


# ------------------------------------------------------------------ metrics, the slow way
def slow_auc(scores, positive) -> float:
    pairs = [(p, n) for p, n in itertools.product(np.flatnonzero(positive), np.flatnonzero(~positive))]
    return sum(1.0 if scores[p] > scores[n] else 0.5 if scores[p] == scores[n] else 0.0 for p, n in pairs) / len(pairs)


def test_auc_is_the_share_of_correctly_ordered_positive_negative_pairs():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 6, size=30).astype(float)  # many ties
        positive = rng.random(30) < 0.3
        positive[:2] = [True, False]
        assert auc(scores, positive) == pytest.approx(slow_auc(scores, positive))
    assert auc(np.array([3.0, 2.0, 1.0]), np.array([True, True, False])) == 1.0
    assert np.isnan(auc(np.array([1.0, 2.0]), np.array([True, True])))  # one class: undefined


def test_regression_metrics_by_their_formulas():
    rng = np.random.default_rng(1)
    y, pred = rng.normal(size=50), rng.normal(size=50)
    task = get_task("regression", (np.array([2.0]), np.array([3.0])))  # standardised -> units: x * 3 + 2
    m = task.metrics(torch.tensor(pred[:, None]), torch.tensor(y[:, None]))
    yy, pp = y * 3 + 2, pred * 3 + 2
    r = sum((a - yy.mean()) * (b - pp.mean()) for a, b in zip(yy, pp, strict=True)) / np.sqrt(
        sum((a - yy.mean()) ** 2 for a in yy) * sum((b - pp.mean()) ** 2 for b in pp))
    assert m["pearson"] == pytest.approx(r)
    assert m["mae"] == pytest.approx(np.mean(np.abs(yy - pp)))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((yy - pp) ** 2)))
    assert m["r2"] == pytest.approx(1 - np.sum((yy - pp) ** 2) / np.sum((yy - yy.mean()) ** 2))


def test_class_metrics_on_an_imbalanced_toy():
    y = torch.tensor([0] * 8 + [1] * 2)
    always_0 = torch.tensor([[1.0, 0.0]] * 10)
    m = get_task("binary").metrics(always_0, y)
    assert m["accuracy"] == 0.8 and m["balanced_accuracy"] == 0.5 and m["auc"] == 0.5
    assert m["macro_f1"] == pytest.approx((2 * 8 / (16 + 2) + 0.0) / 2)


def test_multilabel_auc_is_the_mean_of_each_labels():
    rng = np.random.default_rng(2)
    y = (rng.random((40, 3)) < 0.4).astype(np.float32)
    out = rng.normal(size=(40, 3))
    m = get_task("multilabel").metrics(torch.tensor(out), torch.tensor(y))
    per = [slow_auc(out[:, j], y[:, j] > 0) for j in range(3)]
    assert [m[f"auc_{j}"] for j in range(3)] == pytest.approx(per) and m["auc"] == pytest.approx(np.mean(per))


def slow_log_loss(out, y) -> float:
    return sum(-math.log(math.exp(row[label]) / sum(math.exp(v) for v in row)) for row, label in zip(out, y, strict=True)) / len(y)


def slow_sign_scores(pred, y) -> tuple[float, float]:
    """Acc-2 and weighted F1-2 by their definitions: the non-zero targets, classes `> 0` and `<= 0`."""
    pairs = [(p > 0, t > 0) for p, t in zip(pred, y, strict=True) if t != 0]
    acc = sum(p == t for p, t in pairs) / len(pairs)
    f1 = 0.0
    for c in (False, True):
        tp = sum(1 for p, t in pairs if p == c and t == c)
        fp = sum(1 for p, t in pairs if p == c and t != c)
        fn = sum(1 for p, t in pairs if p != c and t == c)
        f1 += sum(1 for _, t in pairs if t == c) * (2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return acc, f1 / len(pairs)


def test_log_loss_is_the_mean_negative_log_likelihood_of_the_true_class():
    rng = np.random.default_rng(4)
    out, y = rng.normal(scale=3, size=(60, 2)), rng.integers(0, 2, 60)
    m = get_task("binary").metrics(torch.tensor(out), torch.tensor(y))
    assert m["logloss"] == pytest.approx(slow_log_loss(out, y))
    assert log_loss(np.array([[1000.0, 0.0], [0.0, 0.0]]), np.array([1, 0])) == pytest.approx((1000 + math.log(2)) / 2)
    assert np.isnan(log_loss(np.array([[np.inf, 0.0]]), np.array([0])))


def mosi_like(rng, n: int) -> np.ndarray:
    return rng.integers(-9, 10, size=n) / 3  # sentiment in thirds of [-3, 3], exact zeros included


def test_acc2_and_f1_2_score_the_sign_of_the_non_zero_targets():
    rng = np.random.default_rng(5)
    mean, std = -0.41, 1.52  # float32 unscaling takes a 0 target to 3e-8
    task = get_task("regression", (np.array([mean]), np.array([std])))
    for _ in range(10):
        y, pred = mosi_like(rng, 80), rng.normal(size=80) + 0.2
        assert (y == 0).sum() > 0
        scaled = [torch.tensor(((v - mean) / std)[:, None], dtype=torch.float32) for v in (pred, y)]
        m = task.metrics(*scaled)  # zeros come back from float32 a few ulp off, and still count as 0
        acc, f1 = slow_sign_scores(pred, y)
        assert (m["acc2"], m["f1_2"]) == pytest.approx((acc, f1))
        assert sign_scores(pred, y) == pytest.approx((acc, f1))
    y = np.array([1.0, -1.0, 0.0, 2.0])
    assert sign_scores(np.array([3.0, -0.5, 5.0, 1.0]), y) == (1.0, 1.0)  # the zero target is left out
    assert sign_scores(np.array([3.0, 0.0, -5.0, -1.0]), y)[0] == pytest.approx(2 / 3)  # 0 predicts "not positive"


def test_sign_scores_of_several_targets_are_the_mean_of_their_columns():
    rng = np.random.default_rng(6)
    y, pred = np.stack([mosi_like(rng, 50), mosi_like(rng, 50)], 1), rng.normal(size=(50, 2))
    m = get_task("regression").metrics(torch.tensor(pred), torch.tensor(y))
    cols = [slow_sign_scores(pred[:, j], y[:, j]) for j in range(2)]
    assert m["acc2"] == pytest.approx(np.mean([c[0] for c in cols]))
    assert m["f1_2"] == pytest.approx(np.mean([c[1] for c in cols]))
    y[:, 1] = 0.0  # a column without a non-zero target has no sign score and does not count
    m = get_task("regression").metrics(torch.tensor(pred), torch.tensor(y))
    assert (m["acc2"], m["f1_2"]) == pytest.approx(cols[0])


@pytest.mark.parametrize(("task", "metric", "mode"), [
    ("binary", "logloss", "min"), ("regression", "acc2", "max"), ("regression", "f1_2", "max")])
def test_the_new_metrics_are_search_metrics_of_their_task_only(task, metric, mode):
    objs = objectives.resolve(task, metric)
    assert objs[0].name == metric and objs[0].key == f"val_{metric}" and objs[0].mode == mode
    other = "classification" if task == "regression" else "regression"
    with pytest.raises(ConfigError, match=f"search.metric: '{metric}' is not a metric of a {other} task"):
        objectives.resolve(other, metric)


# ------------------------------------------------------------------ through the CLI
def config(tmp: Path, data: dict, **search) -> Path:
    cfg = {
        "name": "tasks",
        "data": data,
        "backbones": {"cache_dir": str(tmp / "cache"), "pretrain": {"epochs": 3, "patience": 2},
                      "modalities": {"m1": {"kind": "mlp", "widths": [8]}, "m2": {"kind": "mlp", "widths": [8]}}},
        "space": {"stages": ["early", "late"], "ops": {"concat": {}, "tensor": {"proj_dim": [4]}}, "widths": [8],
                  "activations": ["relu"], "max_cells": 1, "trunks": [[]]},
        "train": {"epochs": 20, "max_steps": 60, "min_steps": 20},
        "search": {"strategy": "random", "num_samples": 3, "runs_dir": str(tmp / "runs"), "confirm": 0, "max_concurrent": 1,  # one trial actor: ~3.5 CPU s of imports each
                   "baselines": "none", **search},
    }
    path = tmp / "tasks.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def multilabel_npz(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
    y = np.stack([a[:, 0] > 0, a[:, 1] * b[:, 1] > 0], axis=1).astype(np.int64)
    np.savez(tmp / "ml.npz", m1=a, m2=b, y=y)
    return tmp / "ml.npz"


PLANTED = {"kind": "planted", "n_train": 300, "n_test": 150, "d": 4, "seed": 0}
CASES = {  # task -> (data, its default metric, search keys)
    "classification": ({**PLANTED, "task": "additive"}, "accuracy", {}),
    "binary": ({**PLANTED, "task": "imbalanced", "positive": 0.2}, "auc", {}),
    "regression": ({**PLANTED, "task": "regression"}, "r2", {"baselines": "basic"}),
    "multilabel": (None, "auc", {}),
}


@pytest.mark.usefixtures("ray_local")  # the module's searches share one embedded Ray
@pytest.mark.parametrize("task", list(CASES))
def test_each_task_end_to_end_through_the_cli(task, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, metric, search = CASES[task]
    if data is None:
        data = {"kind": "npz", "path": str(multilabel_npz(tmp_path))}
    path = config(tmp_path, data, **search)
    assert main(["search", str(path)]) == 0
    out = capsys.readouterr().out
    run_dir = Path(out.strip().splitlines()[-1].split(": ", 1)[1])
    stored = json.loads((run_dir / objectives.FILE).read_text())
    assert stored == {"task": task, "objectives": [metric, "params", "flops"]}
    pareto = json.loads((run_dir / "pareto.json").read_text())
    assert pareto["metric"] == metric and pareto["objectives"]["names"][0] == f"val_{metric}"
    records = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["status"] == "ok" for r in records), [r["reason"] for r in records]
    for r in records:  # every metric of the task is recorded for val and test
        assert {f"{s}_{m}" for s in ("val", "test") for m in objectives.TASK_METRICS[task]} <= set(r["metrics"])
        assert "latency_ms" not in r["metrics"]  # not an objective here: no candidate pays for timing it
    if task != "classification":
        assert f"val, test: {metric}" in out
    if task == "regression":  # the baselines use the same loss and metric
        baselines = json.loads((run_dir / "baselines.json").read_text())
        assert all(b["val_r2"] is not None and b["val_accuracy"] is None for b in baselines)
        assert "front best r2" in out
    if task == "binary":  # the front is made of AUC, accuracy only recorded
        assert all(0 <= f["metrics"]["val_auc"] <= 1 and f["objectives"][0] == -f["metrics"]["val_auc"]
                   for f in pareto["front"])

    assert main(["show", str(run_dir)]) == 0
    assert "knee of the front" in capsys.readouterr().out
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    assert objectives.OBJECTIVES[metric].label in page
    capsys.readouterr()
    export = tmp_path / "export"
    assert main(["export", str(run_dir), "--pick", "accuracy", "--out", str(export)]) == 0
    assert f"test {metric} " in capsys.readouterr().out
    metrics = json.loads((export / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["metric"] == metric and metrics["reproduced"] is True
    assert main(["evaluate", str(export), "--config", str(path)]) == 0
    assert f"test {metric} {metrics['test_metric']:.4f} (equal to" in capsys.readouterr().out


@pytest.mark.parametrize(("data", "search", "message"), [
    ({"kind": "npz", "task": "ranking"}, {}, "data.task: unknown task 'ranking'; known: classification, binary"),
    ({}, {"metric": "bleu"}, "search.metric: unknown metric 'bleu'; known: accuracy"),
    ({}, {"metric": "r2"}, "search.metric: 'r2' is not a metric of a classification task; known: accuracy"),
    ({}, {"objectives": ["params", "speed"]}, "search.objectives[1]: unknown objective 'speed'; known: accuracy"),
    ({}, {"objectives": ["auc"]}, "search.objectives: name at least one cost"),
])
def test_a_bad_task_metric_or_objective_is_one_line_and_exit_2(tmp_path, capsys, data, search, message):
    base = {**PLANTED, "task": "additive"}
    if data.get("kind") == "npz":
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "d.npz", m1=rng.normal(size=(30, 2)), m2=rng.normal(size=(30, 2)), y=np.arange(30) % 2)
        base = {**data, "path": str(tmp_path / "d.npz")}
    assert main(["search", str(config(tmp_path, base, **search))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


@pytest.mark.usefixtures("ray_local")
def test_latency_is_a_fourth_objective(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = config(tmp_path, {**PLANTED, "task": "additive"}, objectives=["params", "flops", "latency"],
                  baselines="basic")
    raw = yaml.safe_load(path.read_text())
    raw["space"]["widths"] = [8, 32]  # 32: the late concat baseline's width, so it joins as a candidate
    path.write_text(yaml.safe_dump(raw))
    assert main(["search", str(path)]) == 0
    out = capsys.readouterr().out
    run_dir = Path(out.strip().splitlines()[-1].split(": ", 1)[1])
    pareto = json.loads((run_dir / "pareto.json").read_text())
    assert pareto["objectives"]["objectives"] == ["accuracy", "params", "flops", "latency"]
    assert all(len(f["objectives"]) == 4 and f["metrics"]["latency_ms"] > 0 for f in pareto["front"])
    trials = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    assert any(t.get("baseline") for t in trials)  # late concat joined as a candidate: measured like the rest
    assert all(t["metrics"]["latency_ms"] > 0 for t in trials if t["status"] == "ok"), trials
    assert "latency ms" in out
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    assert 'id="fig-latency-stage"' in page and 'id="fig-parallel"' in page and "median of repeated forward" in page
