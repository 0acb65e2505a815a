"""The run store: run ids, config, append-only trials with torn-line tolerance, atomic JSON, the front."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from search import pareto
from search.runstore.store import RunStore, front_from_trials, to_jsonable


def record(tid: str, acc: float | None, params: float = 100, flops: float = 1000, status: str = "ok") -> dict:
    return {
        "trial_id": tid, "spec": {"stage": "late", "cells": [], "head": []}, "arch_id": f"a{tid}",
        "metrics": {"val_accuracy": acc, "params_total": params, "flops_total": flops},
        "status": status, "reason": None, "seconds": 0.1, "finished_at": "now",
    }


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore.create(tmp_path, "demo", {"search": {"budget": 3}, "seed": 0})


def test_create_makes_a_unique_run_dir_with_the_config(tmp_path, store: RunStore) -> None:
    assert store.run_dir.parent == tmp_path.resolve() / "demo"
    assert store.config() == {"search": {"budget": 3}, "seed": 0}
    ids = {RunStore.create(tmp_path, "demo", {}).run_id for _ in range(20)}
    assert len(ids) == 20 and store.run_id not in ids
    assert all(i[:8].isdigit() and i[8] == "T" for i in ids)
    assert store.ray_dir.is_absolute() and store.ray_dir.parent == store.run_dir


def test_open_reopens_a_run_and_refuses_other_dirs(tmp_path, store: RunStore) -> None:
    store.append_trial(record("t1", 0.5))
    again = RunStore.open(str(store.run_dir))
    assert again == store and again.trials() == store.trials()
    with pytest.raises(FileNotFoundError, match="not a fusion-nas run directory"):
        RunStore.open(tmp_path)


def test_trials_round_trip_one_line_each(store: RunStore) -> None:
    recs = [record(f"t{i}", 0.1 * i) for i in range(5)]
    for r in recs:
        store.append_trial(r)
    assert store.trials_path.read_text().count("\n") == 5
    assert store.trials() == recs
    with pytest.raises(ValueError, match="trial_id"):
        store.append_trial({"status": "ok"})


def test_a_torn_last_line_is_ignored_and_the_next_append_survives(store: RunStore) -> None:
    store.append_trial(record("t1", 0.5))
    full = json.dumps(record("t2", 0.6))
    with open(store.trials_path, "a") as f:  # a crash after half a write
        f.write(full[: len(full) // 2])
    assert [r["trial_id"] for r in store.trials()] == ["t1"]
    assert store.torn_lines() == [2]
    store.append_trial(record("t3", 0.7))
    warned: list[str] = []
    assert [r["trial_id"] for r in store.trials(warn=warned.append)] == ["t1", "t3"]
    assert warned == [f"{store.trials_path}: skipped 1 torn or unparsable line(s) (line 2)"]
    with open(store.trials_path, "a") as f:
        f.write('[1, 2]\n{"no": "trial_id"}\n')  # JSON, but not a trial record
    assert store.torn_lines() == [2, 4, 5]


def test_duplicate_trial_ids_keep_first_position_and_last_record(store: RunStore) -> None:
    store.append_trial(record("t1", None, status="errored"))
    store.append_trial(record("t2", 0.4))
    store.append_trial(record("t1", 0.9))  # rerun after a resume
    trials = store.trials()
    assert [t["trial_id"] for t in trials] == ["t1", "t2"]
    assert trials[0]["status"] == "ok" and trials[0]["metrics"]["val_accuracy"] == 0.9


def test_non_finite_and_numpy_values_become_plain_json(store: RunStore) -> None:
    store.append_trial(record("t1", math.nan) | {"seconds": np.float32(1.5), "extra": np.arange(2)})
    line = store.trials_path.read_text()
    assert "NaN" not in line
    assert store.trials()[0]["metrics"]["val_accuracy"] is None
    assert store.trials()[0]["seconds"] == 1.5 and store.trials()[0]["extra"] == [0, 1]
    assert to_jsonable({"x": (float("inf"), np.int64(3))}) == {"x": [None, 3]}


def test_write_json_is_atomic_temp_plus_replace(store: RunStore, monkeypatch) -> None:
    store.write_json("pareto.json", {"v": 1})
    seen: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((str(src), str(dst)))
        assert json.loads((store.run_dir / "pareto.json").read_text()) == {"v": 1}  # old file intact until now
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    store.write_json("pareto.json", {"v": 2})
    assert len(seen) == 1 and os.path.dirname(seen[0][0]) == str(store.run_dir)
    assert store.read_json("pareto.json") == {"v": 2}

    def crash(src, dst):
        raise OSError("disk died")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.write_json("pareto.json", {"v": 3})
    assert store.read_json("pareto.json") == {"v": 2}
    assert sorted(p.name for p in store.run_dir.iterdir()) == ["config.yaml", "pareto.json"]  # no temp left


def test_front_uses_ok_trials_only_on_log_costs() -> None:
    trials = [
        record("small", 0.70, params=1e2, flops=1e3),
        record("big", 0.90, params=1e4, flops=1e5),
        record("dominated", 0.60, params=1e3, flops=1e4),
        record("fail", 0.99, params=1e1, flops=1e2, status="failed"),
        record("stop", 0.99, params=1e1, flops=1e2, status="early_stopped"),
        record("err", None, status="errored"),
    ]
    front = front_from_trials(trials)
    assert front["trial_ids"] == ["small", "big"]
    assert front["n_trials"] == 6 and front["n_ok"] == 3
    assert front["best_val_accuracy"] == 0.90
    assert front["reference"] == [0.0, 5.0, 6.0]  # a decade above the largest ok costs
    pts = np.array([[-0.7, 2, 3], [-0.9, 4, 5], [-0.6, 3, 4]])
    assert front["hypervolume"] == pytest.approx(pareto.hypervolume(pts, [0, 5, 6]))
    assert front["knee"] == "small"  # normalised: small (1,0,0) is nearer the ideal than big (0,1,1)
    assert front["front"][0]["objectives"] == pytest.approx([-0.7, 2, 3])
    assert front["objectives"]["modes"] == ["max", "min", "min"]


def test_front_of_nothing_usable_is_empty() -> None:
    front = front_from_trials([record("e", None, status="errored"), record("z", 0.5, params=0)])
    assert front["front"] == [] and front["hypervolume"] == 0.0 and front["knee"] is None
    assert front["n_ok"] == 0


def test_write_pareto_defaults_to_the_stored_trials(store: RunStore) -> None:
    for r in (record("a", 0.5, 1e2, 1e3), record("b", 0.8, 1e3, 1e4), record("c", 0.9, 1e1, 1e2, "failed")):
        store.append_trial(r)
    written = store.write_pareto()
    assert store.read_json("pareto.json") == json.loads(json.dumps(written))
    assert written == front_from_trials(store.trials())
    assert written["trial_ids"] == ["a", "b"]
