"""The four later operators (ptp, shared_private, memory, adversarial) in a real search:
`fusion-nas search` on the embedded Ray, then what the report page is drawn from."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from search.report import data as report_data
from search.runstore.store import RunStore, front_from_trials
from spaces import ArchSpec
from tests.cli_run import fusion_nas_here, run_dir_of

NEW_OPS = ("adversarial", "memory", "ptp", "shared_private")


def seq_config(tmp_path: Path) -> Path:
    """Planted xor as sequences (conv1d backbones keep the raw taps as tokens, so memory
    fusion reads frames); early (raw tokens) and late (embeddings) cells of each new op."""
    cfg = {
        "name": "new_ops",
        "data": {"kind": "planted", "task": "xor", "n_train": 300, "n_test": 100, "d": 4, "seq_len": 3, "seed": 0},
        "backbones": {"cache_dir": str(tmp_path / "cache"), "pretrain": {"epochs": 2, "patience": 2},
                      "modalities": {m: {"kind": "conv1d", "channels": [8]} for m in ("m1", "m2")}},
        "space": {"stages": ["early", "late"],
                  "ops": {"ptp": {"order": [3], "rank": [2]}, "shared_private": {"dim": [4]},
                          "memory": {"hidden": [4], "mem": [4]}, "adversarial": {"dim": [4]}},
                  "widths": [8], "activations": ["relu"], "max_cells": 1, "trunks": [[]]},
        "train": {"epochs": 3, "patience": 3},
        "search": {"strategy": "grid", "num_samples": 8, "runs_dir": str(tmp_path / "runs"), "confirm": 0, "max_concurrent": 1,
                   "baselines": "none"},  # this test is about the operators
    }
    path = tmp_path / "new_ops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def new_ops_run(tmp_path_factory, ray_local):
    tmp = tmp_path_factory.mktemp("new_ops")
    proc = fusion_nas_here("search", str(seq_config(tmp)), cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, run_dir_of(proc)


def test_every_trial_of_the_new_ops_is_ok(new_ops_run):
    proc, run_dir = new_ops_run
    trials = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    assert len(trials) == 8 and all(t["status"] == "ok" for t in trials), [t.get("reason") for t in trials]
    specs = [ArchSpec.from_dict(t["spec"]) for t in trials]
    assert sorted((s.stage, s.ops[0]) for s in specs) == sorted((st, op) for st in ("early", "late") for op in NEW_OPS)
    memory_early = next(s for s in specs if s.ops == ("memory",) and s.stage == "early")
    assert memory_early.cells[0].taps == ("m1@0", "m2@0")  # the raw frames: tokens (3, 5)
    for t in trials:
        m = t["metrics"]
        assert 0 <= m["val_accuracy"] <= 1 and m["params_fusion"] > 0 and m["flops_fusion"] > 0
        spec = ArchSpec.from_dict(t["spec"])  # honest costs: raw inputs run no backbone, embeddings run all of it
        assert (m["params_total"] == m["params_fusion"]) == (spec.stage == "early")
    assert "trials 8/8" in proc.stdout


def test_the_report_shows_each_new_op(new_ops_run):
    _, run_dir = new_ops_run
    assert (run_dir / "report.html").is_file()
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "Params and FLOPs count the inference path only" in page
    store = RunStore.open(run_dir)
    trials = store.trials()
    points = report_data.trial_points(trials, front_from_trials(trials, store.reference))
    bars = {r["key"]: r for r in report_data.breakdown(points, "op")}
    assert sorted(bars) == sorted(NEW_OPS)
    for op in NEW_OPS:
        assert bars[op]["trials"] == bars[op]["ok"] == 2 and bars[op]["best_val_accuracy"] is not None
        assert f'"{op}"' in page  # a bar and a legend entry of the page name it
    for cost in [o.name for o in store.objectives()[1:]]:  # the run's cost objectives: params, FLOPs
        groups = {s.group: len(s.x) for s in report_data.scatter_series(points, cost, "op")}
        assert groups == dict.fromkeys(NEW_OPS, 2)  # every trial is placed on both cost plots
