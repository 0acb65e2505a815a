"""CTR (categorical fields) and sentiment (text) end to end: a search through the CLI, an export,
and `load_model` reproducing the export's test metric from the IDs as the data holds them."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from fusion_ops import formats
from fusion_ops.load import load_model
from search.datasets import load_dataset
from search.engine.run import data_bounds
from search.export_formats import read_graph
from search.objectives import get
from search.training.tasks import get_task
from tests.cli_run import fusion_nas_here, run_dir_of

CASES = {
    "ctr": ({"kind": "planted", "task": "ctr", "n_train": 3000, "n_test": 800, "seed": 1}, "auc",
            {"fields": {"kind": "embedding", "widths": [16], "dim": 8}, "item": {"kind": "mlp", "widths": [8]}}),
    "sentiment": ({"kind": "planted", "task": "sentiment", "n_train": 400, "n_test": 150, "seed": 1}, "mae",
                  {"text": {"kind": "text", "encoder": "gru", "dim": 8, "widths": [8]},
                   "audio": {"kind": "conv1d", "channels": [4]}, "visual": {"kind": "conv1d", "channels": [4]}}),
}


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("task", sorted(CASES))
def test_a_search_of_ids_exports_a_model_that_reproduces_its_test_metric_from_the_ids(task, tmp_path):
    data, metric, backbones = CASES[task]
    cfg = {"name": task, "data": data,
           "backbones": {"cache_dir": str(tmp_path / "cache"), "pretrain": {"epochs": 2, "patience": 2},
                         "modalities": backbones},
           "space": {"stages": ["early", "late"], "ops": {"concat": {}, "attention": {"dim": [4]}}, "widths": [8],
                     "activations": ["relu"], "max_cells": 1, "trunks": [[]]},
           "train": {"max_steps": 40, "min_steps": 20},
           "search": {"strategy": "random", "num_samples": 3, "confirm": 0, "metric": metric, "max_concurrent": 1,
                      "runs_dir": str(tmp_path / "runs")}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = fusion_nas_here("search", "c.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = run_dir_of(proc)
    records = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]
    assert all(r["status"] == "ok" for r in records), [r.get("reason") for r in records]
    assert f"front best {metric}" in proc.stdout
    baselines = {b["name"] for b in json.loads((run / "baselines.json").read_text())}
    assert {"logreg", "late concat"} <= baselines and {f"{m} alone" for m in backbones} <= baselines
    proc = fusion_nas_here("export", str(run), "--pick", "accuracy", "--out", "export", "--format", "onnx",
                           "--format", "torchscript", cwd=tmp_path)
    assert proc.returncode == 0 and "reproduces the trial's" in proc.stdout, proc.stdout + proc.stderr
    exported = json.loads((tmp_path / "export" / "metrics.json").read_text())

    model = load_model(tmp_path / "export")
    raw = load_dataset(data)  # the IDs as the generator made them: int64, not the codes
    ids = {m: raw.raw_ids["test"][m] for m in raw.codings}
    assert all(a.dtype == np.int64 for a in ids.values())
    inputs = {**{m: raw.test[m] * raw.std[m] + raw.mean[m] for m in raw.modalities if m not in ids}, **ids}
    inputs.update({f"{m}:lengths": n for m, n in raw.lengths_of("test").items() if m not in raw.codings})
    if task == "sentiment":
        inputs["text:lengths"] = raw.lengths_of("test")["text"]  # the text came with lengths: so must they
    with torch.no_grad():
        out = model(inputs)
    y = torch.as_tensor(raw.y_test)
    if raw.target_scale is not None:
        y = y * torch.as_tensor(raw.target_scale[1]) + torch.as_tensor(raw.target_scale[0])
    ours = get_task(raw.task).metrics(out, y)[metric]
    assert ours == pytest.approx(exported["test_metric"], abs=1e-5)
    # the ONNX graph from the same raw IDs, lengths under their npz names: the same metric, no torch involved
    session = formats.onnx_session(read_graph(tmp_path / "export", "onnx"))
    graph = formats.run_onnx(session, {k.replace(":lengths", "_lengths"): np.asarray(v) for k, v in inputs.items()})
    assert np.abs(graph - out.numpy()).max() <= 1e-4
    assert get_task(raw.task).metrics(torch.from_numpy(graph), y)[metric] == pytest.approx(ours, abs=1e-4)
    info = json.loads((tmp_path / "export" / "model.json").read_text())["formats"]
    assert {"onnx", "torchscript"} <= set(info) and info["onnx"][f"test_{metric}"] == pytest.approx(ours, abs=1e-4)


def test_mae_and_log_loss_are_bounded_by_what_the_constant_answer_scores():
    ds = load_dataset({"kind": "planted", "task": "regression", "n_train": 200, "n_test": 50, "d": 4})
    mae, = data_bounds(get(("mae",)), ds)
    y = ds.y_val * ds.target_std + ds.target_mean  # the targets' units
    assert mae.bound == pytest.approx(float(np.abs(y - ds.target_mean).mean()), rel=1e-5)
    ds = load_dataset({"kind": "planted", "task": "imbalanced", "n_train": 400, "n_test": 50, "d": 4})
    loss, auc = data_bounds(get(("logloss", "auc")), ds)
    p = np.bincount(ds.y_train, minlength=2) + 1.0
    p /= p.sum()
    assert loss.bound == pytest.approx(float(-np.log(p[ds.y_val]).mean()), rel=1e-6) and auc.bound == 0.5
