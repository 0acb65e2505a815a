"""The shipped configs load, and each kind of mistake gives one clear line."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from search.config import load_config
from spaces import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
SHIPPED = ["planted.yaml", "av_digits.yaml", "mfeat.yaml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.space.size() > 10
    assert set(cfg.space.modalities) == set(cfg.backbones.modalities)
    # the resolved config is itself a valid config
    again = load_config_from_text(yaml.safe_dump(cfg.to_dict()), CONFIGS / name)
    assert again.to_dict() == cfg.to_dict()


def load_config_from_text(text, like: Path, tmp=None):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / like.name
        path.write_text(text)
        return load_config(path)


def test_command_line_overrides_search_keys():
    cfg = load_config(CONFIGS / "planted.yaml", overrides={"strategy": "random", "num_samples": 5})
    assert (cfg.search.strategy, cfg.search.num_samples) == ("random", 5)


BASE = (CONFIGS / "planted.yaml").read_text()

# (edit of the planted config, the key path the one-line error must name)
MISTAKES = [
    ({"nmae": "x"}, "nmae: unknown key"),
    ({"data": {"kind": "planted", "task": "xr"}}, None),  # checked when data loads, not here
    ({"data": {"kind": "csv"}}, "data.kind: unknown dataset kind 'csv'"),
    ({"search": {"strategy": "evolution"}}, "search.strategy: unknown value 'evolution'"),
    ({"search": {"num_samples": 0}}, "search.num_samples: expected an integer >= 1"),
    ({"search": {"cpus": 2}}, "search.cpus: unknown key"),
    ({"search": {"scheduler": "hyperband"}}, "search.scheduler: unknown value 'hyperband'"),
    ({"space": {"ops": {"tensr": {}}}}, "space.ops.tensr: unknown operator 'tensr'"),
    ({"space": {"ops": {"low_rank": {"rank": [-2]}}}}, "space.ops.low_rank.rank: must be >= 1, got -2"),
    ({"space": {"stages": ["middle"]}}, "space.stages[0]: unknown stage 'middle'"),
    ({"space": {"widths": []}}, "space.widths:"),
    ({"space": {"max_cells": 0}}, "space.max_cells:"),
    ({"backbones": {"modalities": {"m1": {"kind": "cnn"}, "m2": {"kind": "mlp"}}}}, "backbones.modalities.m1.kind:"),
    ({"train": {"lr": -1}}, "train.lr:"),
    ({"train": {"epochs": "many"}}, "train.epochs:"),
    ({"name": ""}, "name: bad run name ''"),
    ({"name": ".."}, "name: bad run name '..'"),
    ({"name": "a\nb"}, "name: bad run name 'a\\nb'"),
    ({"name": "a\0b"}, "name: bad run name 'a\\x00b'"),
    ({"name": "x" * 300}, "name: bad run name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... (300 characters)"),
    ({"search": {"address": "::::"}}, "search.address: cannot read '::::' as a Ray address"),
    ({"search": {"max_params": 0}}, "search.max_params: expected an integer >= 1"),
]


@pytest.mark.parametrize("edit,message", [m for m in MISTAKES if m[1]], ids=lambda v: str(v)[:40])
def test_bad_config_gives_one_line_naming_file_and_key(tmp_path, edit, message):
    raw = yaml.safe_load(BASE)
    for section, value in edit.items():
        if isinstance(value, dict) and isinstance(raw.get(section), dict) and section != "backbones":
            raw[section] = {**raw[section], **value}
        elif section == "backbones":
            raw[section] = {**raw[section], **value}
        else:
            raw[section] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: {message}"), text


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nspace: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{path}:\d+:\d+: invalid YAML"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_backbones_default_from_the_data_shapes(tmp_path):
    path = tmp_path / "minimal.yaml"
    path.write_text("data: {kind: planted, task: xor, n_train: 200, n_test: 100}\n")
    cfg = load_config(path)
    assert cfg.name == "minimal"
    assert sorted(cfg.backbones.modalities) == ["m1", "m2"]
    assert all(b.kind == "mlp" for b in cfg.backbones.modalities.values())
    assert set(cfg.space.modalities) == {"m1", "m2"}
    assert cfg.search.strategy == "mfas" and cfg.space.size() > 100


def test_bad_data_found_at_load_names_the_key(tmp_path):
    path = tmp_path / "bad_data.yaml"
    path.write_text("data: {kind: planted, task: xr}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: data.task: unknown planted task 'xr'"):
        load_config(path)
