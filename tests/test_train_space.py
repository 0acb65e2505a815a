"""Training settings in the search space (`space.train`): parsing and its errors as a user
sees them, sampling, the grid, validation, mutation, encoding, and specs that carry them."""
from __future__ import annotations

import collections
import itertools
import json
import math
import random
import re
import statistics
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from search.cli import main
from search.training.train import TrainConfig, candidate_config
from spaces.args import Arg
from spaces.space import SearchSpace
from spaces.spec import ArchSpec, CellSpec
from spaces.train_space import GRID_POINTS, SETTINGS, TrainChoice

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
CATALOGUE = {"concat": (), "tensor": (Arg("proj_dim", "int", 8, low=1, high=64),)}
DEPTHS = {"image": [0, 1, 2], "audio": [0, 1]}
ARCH = {"ops": {"concat": {}, "tensor": {"proj_dim": [4, 8]}}, "widths": [16], "activations": ["relu"],
        "max_cells": 2, "trunks": [[], [8]]}
TRAIN = {
    "lr": {"low": 1.0e-4, "high": 1.0e-1, "log": True},
    "batch_size": [128, 32],
    "weight_decay": [0, 1.0e-3],
    "dropout": {"low": 0.0, "high": 0.5},
}


def space(train: dict | None = TRAIN) -> SearchSpace:
    config = dict(ARCH, train=train) if train is not None else ARCH
    return SearchSpace.from_dict(config, catalogue=CATALOGUE, depths=DEPTHS)


S, BARE = space(), space(None)
CELL = CellSpec(("image@1", "audio@0"), "tensor", 16, "relu", (("proj_dim", 4),))
SETTINGS_OK = {"batch_size": 32, "dropout": 0.25, "lr": 0.001, "weight_decay": 0.0}
SPEC = ArchSpec("hybrid", (CELL,), (), tuple(SETTINGS_OK.items()))


# ---- the table and parsing -----------------------------------------------------------
def test_the_table_declares_the_settings_the_issue_asks_for() -> None:
    assert {"lr", "weight_decay", "dropout", "batch_size"} <= set(SETTINGS)
    assert [s.kind for s in (SETTINGS["batch_size"], SETTINGS["lr"])] == ["int", "float"]


def test_parsed_choices_are_canonical_and_round_trip() -> None:
    by_name = {c.name: c for c in S.train}
    assert [c.name for c in S.train] == ["batch_size", "dropout", "lr", "weight_decay"]
    assert by_name["batch_size"].choices == (32, 128)
    assert by_name["weight_decay"].choices == (0.0, 0.001) and type(by_name["weight_decay"].choices[0]) is float
    assert by_name["dropout"] == TrainChoice("dropout", (), 0.0, 0.5, False)  # log defaults to false
    d = S.to_dict()
    assert d["train"]["lr"] == {"low": 0.0001, "high": 0.1, "log": True}
    assert yaml.safe_load(yaml.safe_dump(d)) == d
    assert SearchSpace.from_dict(d, catalogue=CATALOGUE, depths=DEPTHS) == S
    assert space(dict(reversed(list(TRAIN.items())))) == S


def test_a_space_without_train_is_as_before() -> None:
    assert BARE.train == () and "train" not in BARE.to_dict() and BARE.train_size() == 1
    rng = random.Random(0)
    assert all(BARE.sample(rng).train == () for _ in range(20))
    assert all(s.train == () and s.arch_id == s.candidate_id for s in BARE.enumerate())
    assert not any(n.startswith("train.") for n in BARE.feature_names)


BAD = [  # (space.train as YAML, the one line the user reads after "<file>: ")
    ("{lr: {low: -1, high: 0.1}}", "space.train.lr.low: must be > 0, got -1"),
    ("{momentum: [0.9]}", "space.train.momentum: unknown training setting 'momentum'; known: batch_size, dropout, lr,"),
    ("{lr: {low: 0.1, high: 0.01}}", "space.train.lr.high: must be > low (0.1), got 0.01"),
    ("{weight_decay: {low: 0.0, high: 0.1, log: true}}",
     "space.train.weight_decay.low: must be > 0 for a log range, got 0.0"),
    ("{lr: []}", "space.train.lr: expected a non-empty list of choices"),
    ("{lr: [0.01, 1.0e-2]}", "space.train.lr[1]: duplicate choice 0.01"),
    ("{lr: [fast]}", "space.train.lr[0]: expected a number, got 'fast'"),
    ("{lr: ['1e-3']}", "space.train.lr[0]: expected a number, got '1e-3' (YAML reads 1e-3 as text: write 1.0e-3)"),
    ("{weight_decay: [true]}", "space.train.weight_decay[0]: expected a number, got True"),
    ("{dropout: [0.0, 1.0]}", "space.train.dropout[1]: must be < 1, got 1.0"),
    ("{dropout: {low: -0.1, high: 0.5}}", "space.train.dropout.low: must be >= 0, got -0.1"),
    ("{batch_size: [0, 32]}", "space.train.batch_size[0]: must be >= 1, got 0"),
    ("{batch_size: [32.5]}", "space.train.batch_size[0]: expected an integer, got 32.5"),
    ("{batch_size: {low: 16, high: 64, step: 8}}", "space.train.batch_size.step: unknown key; known: high, log, low"),
    ("{lr: {low: 1.0e-4}}", "space.train.lr.high: missing (a range needs low and high)"),
    ("{lr: {low: 1.0e-4, high: 0.1, log: 1}}", "space.train.lr.log: expected true or false, got 1"),
    ("[lr]", "space.train: expected a mapping of training setting -> list of choices or {low, high, log}"),
]


@pytest.mark.parametrize(("train", "message"), BAD, ids=[b[1][:45] for b in BAD])
def test_bad_train_settings_exit_2_with_one_line(tmp_path, capsys, train: str, message: str) -> None:
    raw = yaml.safe_load((CONFIGS / "planted.yaml").read_text())
    path = tmp_path / "bad.yaml"
    text = yaml.safe_dump({k: v for k, v in raw.items() if k != "space"}) + "space:\n"
    text += "".join(f"  {k}: {json.dumps(v)}\n" for k, v in raw["space"].items()) + f"  train: {train}\n"
    path.write_text(text)
    assert main(["space", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"fusion-nas: error: {path}: {message}"), captured.err


def test_the_space_command_shows_the_settings_and_the_size(tmp_path, capsys) -> None:
    raw = yaml.safe_load((CONFIGS / "planted.yaml").read_text())
    raw["space"]["train"] = {"lr": {"low": 1.0e-3, "high": 1.0e-1, "log": True}, "batch_size": [64, 128]}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(raw))
    plain = raw | {"space": {k: v for k, v in raw["space"].items() if k != "train"}}
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(plain))
    assert main(["space", str(tmp_path / "plain.yaml"), "--samples", "0"]) == 0
    archs = int(capsys.readouterr().out.split(": ")[1].split()[0].replace(",", ""))
    assert main(["space", str(path), "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert f"{archs * 6:,} candidates = {archs:,} architectures over modalities m1, m2 x 6 training settings" in out
    assert "  train.batch_size: 64, 128\n" in out
    assert "  train.lr: 0.001..0.1 (log; grid 0.001, 0.01, 0.1)\n" in out
    assert out.count(" | batch_size=") == 2  # every sample shows its settings


# ---- sampling, the grid, validation ---------------------------------------------------
def test_samples_are_valid_rounded_and_spread_over_the_ranges() -> None:
    rng = random.Random(1)
    specs = [S.sample(rng) for _ in range(400)] + [S.sample_uniform(rng) for _ in range(100)]
    for spec in specs:
        S.validate(spec)
    lrs = [s.train_settings["lr"] for s in specs]
    assert all(float(f"{v:.3g}") == v and 1e-4 <= v <= 0.1 for v in lrs)
    assert 10**-2.8 < statistics.median(lrs) < 10**-2.2  # log-uniform: median near 10^-2.5, not near 0.05
    assert {type(s.train_settings["batch_size"]) for s in specs} == {int}
    assert collections.Counter(s.train_settings["batch_size"] for s in specs).keys() == {32, 128}
    assert max(s.train_settings["dropout"] for s in specs) > 0.4 > 0.1 > min(s.train_settings["dropout"] for s in specs)


def test_a_range_counts_as_its_grid_points() -> None:
    by_name = {c.name: c for c in S.train}
    assert GRID_POINTS == 3
    assert by_name["lr"].grid == (0.0001, 0.00316, 0.1)
    assert by_name["dropout"].grid == (0.0, 0.25, 0.5)
    assert TrainChoice("batch_size", (), 16, 256, True).grid == (16, 64, 256)
    assert TrainChoice("batch_size", (), 1, 2).grid == (1, 2)  # a narrow int range has fewer points
    assert S.train_size() == 2 * 3 * 3 * 2
    assert S.size() == BARE.size() * S.train_size()
    assert sum(S.stage_size(st) for st in S.stages) == S.size()


def test_enumerate_is_the_product_of_architectures_and_the_settings_grid() -> None:
    specs = list(S.enumerate())
    assert len(specs) == S.size() == len({s.candidate_id for s in specs})
    archs = {s.arch_id for s in BARE.enumerate()}
    grid = list(itertools.product(*(c.grid for c in S.train)))
    got = {(s.arch_id, tuple(v for _, v in s.train)) for s in specs}
    assert got == set(itertools.product(archs, grid))
    for spec in specs[::50]:
        S.validate(spec)


INVALID = [
    ({k: v for k, v in SETTINGS_OK.items() if k != "lr"}, "train.lr: missing"),
    (SETTINGS_OK | {"momentum": 0.9}, "train.momentum: not searched by this space; searched: batch_size, dropout, lr"),
    (SETTINGS_OK | {"lr": 0.5}, "train.lr: 0.5 is outside the searched range [0.0001, 0.1]"),
    (SETTINGS_OK | {"batch_size": 64}, "train.batch_size: 64 is not searched; choices: 32, 128"),
    (SETTINGS_OK | {"batch_size": 32.0}, "train.batch_size: expected an integer, got 32.0"),
    (SETTINGS_OK | {"weight_decay": 0}, "train.weight_decay: expected a float, got 0"),
]


@pytest.mark.parametrize(("settings", "message"), INVALID, ids=[m for _, m in INVALID])
def test_validate_checks_the_settings(settings: dict, message: str) -> None:
    S.validate(SPEC)
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        S.validate(SPEC.with_train(settings))


def test_a_space_without_train_refuses_settings() -> None:
    BARE.validate(SPEC.architecture)
    with pytest.raises(ValueError, match="^train.batch_size: not searched by this space; searched: none"):
        BARE.validate(SPEC)


# ---- mutation and encoding -----------------------------------------------------------------
def test_mutate_changes_the_settings_sometimes_and_stays_valid() -> None:
    rng = random.Random(3)
    spec, kinds = SPEC, collections.Counter()
    for _ in range(300):
        new = S.mutate(spec, rng)
        S.validate(new)
        assert new != spec
        if new.arch_id == spec.arch_id:
            changed = [k for k, v in new.train if spec.train_settings[k] != v]
            assert len(changed) == 1  # one setting at a time
            kinds["train." + changed[0]] += 1
        else:
            assert new.train == spec.train  # an architecture move keeps the settings
            kinds["arch"] += 1
        spec = new
    assert set(kinds) == {"arch", "train.batch_size", "train.dropout", "train.lr", "train.weight_decay"}
    assert kinds["arch"] > sum(kinds.values()) / 2


def test_mutate_train_steps_within_the_range_in_log_space() -> None:
    rng = random.Random(0)
    lr = {c.name: c for c in S.train}["lr"]
    steps = [math.log10(lr.neighbour(0.001, rng) / 0.001) for _ in range(300)]
    assert all(-3 <= s <= 2 for s in steps) and 0.3 < statistics.pstdev(steps) < 1.0
    assert BARE.mutate_train(SPEC.architecture, rng) == SPEC.architecture


def test_encode_adds_one_scaled_feature_per_searched_setting() -> None:
    names = S.feature_names
    assert names[: len(BARE.feature_names)] == BARE.feature_names
    assert names[len(BARE.feature_names) :] == ("train.batch_size", "train.dropout", "train.lr", "train.weight_decay")
    x = S.encode(SPEC)
    assert len(x) == S.encode_length == len(BARE.feature_names) + 4
    assert list(x[-4:]) == pytest.approx([0.0, 0.5, 1 / 3, 0.0])  # lr 1e-3 is 1 of 3 decades up, on a log scale
    fixed = space({"lr": [0.001], "batch_size": [32, 64]})
    assert fixed.feature_names[-1] == "train.batch_size"  # a setting with one value is not a feature


# ---- specs that carry settings --------------------------------------------------------------
def test_a_spec_with_settings_round_trips_and_keeps_its_arch_id() -> None:
    assert ArchSpec.from_yaml(SPEC.to_yaml()) == SPEC == ArchSpec.from_dict(json.loads(SPEC.to_json()))
    assert {k: type(v) for k, v in ArchSpec.from_yaml(SPEC.to_yaml()).train} == {
        "batch_size": int, "dropout": float, "lr": float, "weight_decay": float}
    assert SPEC.arch_id == SPEC.architecture.arch_id == SPEC.architecture.candidate_id
    assert SPEC.candidate_id != SPEC.arch_id
    assert SPEC.with_train(SETTINGS_OK | {"lr": 0.01}).candidate_id != SPEC.candidate_id


def test_candidate_config_gets_values_of_the_training_config_types() -> None:
    rng = random.Random(0)
    searched = {"lr": {"low": 1.0e-4, "high": 1.0e-1, "log": True}, "batch_size": {"low": 16, "high": 256, "log": True},
                "weight_decay": [0, 1.0e-3]}
    known = {f.name for f in fields(TrainConfig)}
    s = space({k: v for k, v in searched.items() if k in known})
    for _ in range(20):
        cfg = candidate_config(TrainConfig(), s.sample(rng))
        assert type(cfg.lr) is float and type(cfg.batch_size) is int and type(cfg.weight_decay) is float
