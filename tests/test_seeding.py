"""Baselines that are candidates of the space join the search: recorded as trials before it,
told to the strategy, never trained again, not counted in `search.num_samples`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fusion_ops import fusion_args
from search import baselines as bl
from search.cli import main
from search.runstore.store import candidate_records
from spaces import ArchSpec
from spaces.space import SearchSpace
from spaces.spec import CellSpec

SPACE = SearchSpace.from_dict({"stages": ["late"], "ops": {"concat": {}}, "widths": [8, 32], "activations": ["relu"],
                               "max_cells": 1}, catalogue={"concat": fusion_args("concat")},
                              depths={"m1": [0, 2], "m2": [0, 2]})


def spec_baseline(name: str, width: int, statuses=("ok", "ok", "ok")) -> dict:
    spec = ArchSpec("late", (CellSpec(("m1@2", "m2@2"), "concat", width, "relu"),))
    runs = [{"status": s, "seed": i, "val_accuracy": 0.7 + i / 100, "test_accuracy": 0.6, "seconds": 1.0}
            for i, s in enumerate(statuses)]
    return {"name": name, "panel": "basic", "spec": spec.to_dict(), "seed_runs": runs}


def test_seed_trials_takes_the_baselines_of_the_space_with_every_seed():
    inside, outside = spec_baseline("late concat", 32), spec_baseline("too wide", 64)
    failed = spec_baseline("late failed", 8, ("ok", "failed", "ok"))
    logreg = {"name": "logreg", "panel": "basic", "spec": None, "val_accuracy": 0.8}
    out = bl.seed_trials([logreg, outside, failed, inside, {**inside, "name": "classic concat"}], SPACE)
    assert [r["trial_id"] for r in out] == ["b0s0", "b0s1", "b0s2"]  # one candidate, once, its three seeds
    assert [bool(r.get("confirm")) for r in out] == [False, True, True]
    assert {r["baseline"] for r in out} == {"late concat"} and [r["seed"] for r in out] == [0, 1, 2]
    assert out[1]["metrics"]["val_accuracy"] == 0.71 and out[0]["candidate_id"] == ArchSpec.from_dict(
        inside["spec"]).candidate_id
    assert not any(bl.counts_to_budget(r) for r in out)
    merged = candidate_records(out)
    assert len(merged) == 1 and merged[0]["metrics"]["n_seeds"] == 3
    assert merged[0]["metrics"]["val_accuracy"] == 0.71  # the mean of 0.70, 0.71, 0.72
    assert bl.seed_trials(None, SPACE) == [] and bl.seed_trials([{**inside, "seed_runs": []}], SPACE) == []


def config(tmp_path: Path) -> Path:
    cfg = {
        "name": "seeded",
        "data": {"kind": "planted", "task": "additive", "n_train": 400, "n_test": 200, "d": 8, "seed": 0},
        "backbones": {"cache_dir": str(tmp_path / "cache"), "pretrain": {"epochs": 3, "patience": 2},
                      "modalities": {"m1": {"kind": "mlp", "widths": [8]}, "m2": {"kind": "mlp", "widths": [8]}}},
        "space": {"stages": ["late"], "ops": {"concat": {}, "tensor": {"proj_dim": [4]}}, "widths": [8, 32],
                  "activations": ["relu"], "max_cells": 1},
        "train": {"max_steps": 40, "min_steps": 20},
        "search": {"strategy": "random", "num_samples": 3, "runs_dir": str(tmp_path / "runs"), "max_concurrent": 1},
    }
    path = tmp_path / "seeded.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.usefixtures("ray_local")  # the search and its resume share one embedded Ray
def test_a_run_records_the_late_concat_baseline_as_a_candidate_and_resume_keeps_it_once(tmp_path, capsys,
                                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["search", str(config(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "baselines in the space join the search as trained candidates: late concat" in out
    run_dir = Path(out.strip().splitlines()[-1].split(": ", 1)[1])
    trials = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    seeded = [t for t in trials if t.get("baseline")]
    assert [t["trial_id"] for t in seeded] == ["b0s0", "b0s1", "b0s2"]
    late_concat = seeded[0]["candidate_id"]
    assert ArchSpec.from_dict(seeded[0]["spec"]).describe() == "late: concat(m1@1,m2@1)/32"
    assert sum(bl.counts_to_budget(t) for t in trials) == 3  # num_samples: the strategy's own trials
    assert [t for t in trials if t["candidate_id"] == late_concat] == seeded  # never trained again
    stored = json.loads((run_dir / bl.FILE).read_text())
    late = next(b for b in stored if b["name"] == "late concat")
    assert [r["val_accuracy"] for r in late["seed_runs"]] == [t["metrics"]["val_accuracy"] for t in seeded]

    assert main(["search", "--resume", str(run_dir)]) == 0
    again = (run_dir / "trials.jsonl").read_text().splitlines()
    assert len(again) == len(trials)  # nothing left to run, nothing seeded twice
