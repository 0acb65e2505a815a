"""Bring your own: an encoder from a factory, an operator and a strategy from a plugin module,
entry points, and the one-line errors for each way they can be wrong."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from fusion_ops import BACKBONE_KINDS, OPERATORS, list_fusions
from search.cli import main
from search.datasets import DATASETS
from search.strategies import STRATEGIES, list_strategies
from spaces import ArchSpec
from spaces.registry import PluginError, Registry

ENCODER = '''
from torch import nn


class Encoder(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.block1 = nn.Sequential(nn.Linear(d, 12), nn.ReLU())
        self.block2 = nn.Sequential(nn.Linear(12, 6), nn.ReLU())
        self.head = nn.Linear(6, 3)   # never tapped: the factory's own output

    def forward(self, x):
        return self.head(self.block2(self.block1(x)))


def make(input_shape, scale=1):
    return Encoder(input_shape[0] * scale)
'''

PLUGIN = '''
import torch
from torch import nn

from fusion_ops import FusionOp, register_fusion
from search.strategies import STRATEGIES, RandomStrategy
from spaces import Arg


@register_fusion("plugin_sum")
class PluginSum(FusionOp):
    """Sum of per-modality projections (a user's own operator)."""

    ARGS = (Arg("gain", "float", 1.0, 0.1, 10.0, doc="output scale"),)

    def __init__(self, in_dims, out_dim, **args):
        super().__init__(in_dims, out_dim, **args)
        self.proj = nn.ModuleList(nn.Linear(self.in_dims[m], out_dim) for m in self.names)

    def forward(self, feats):
        return self.args["gain"] * sum(p(x) for p, x in zip(self.proj, self.vectors(feats)))


@STRATEGIES.register("plugin_first")
class FirstOp(RandomStrategy):
    """Random search that records the option it was given (a user's own strategy)."""

    name = "plugin_first"

    def __init__(self, space, *, seed, budget=None, cost_fn=None, tag="none"):
        super().__init__(space, seed=seed, budget=budget, cost_fn=cost_fn)
        self.tag = tag
        with open(TAG_FILE, "a") as f:
            f.write(tag + "\\n")
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder with `user_encoders.py` and `user_plugin.py`; what they register is removed afterwards."""
    (tmp_path / "user_encoders.py").write_text(ENCODER)
    (tmp_path / "user_plugin.py").write_text(f"TAG_FILE = {str(tmp_path / 'tags.txt')!r}\n" + PLUGIN)
    yield tmp_path
    for reg, name in ((OPERATORS, "plugin_sum"), (STRATEGIES, "plugin_first")):
        reg.unregister(name)
    for mod in ("user_encoders", "user_plugin"):
        sys.modules.pop(mod, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def config(tmp: Path, **changes) -> Path:
    """Planted xor, `m1` read by the factory encoder at its two blocks, a plugin op and strategy."""
    cfg = {
        "name": "plugins",
        "plugins": ["user_plugin"],
        "data": {"kind": "planted", "task": "additive", "n_train": 160, "n_test": 60, "d": 4, "seed": 0},
        "backbones": {"cache_dir": str(tmp / "cache"), "pretrain": {"epochs": 2, "patience": 2},
                      "modalities": {"m1": {"kind": "python", "factory": "user_encoders:make",
                                            "taps": ["block1", "block2"], "args": {"scale": 1}},
                                     "m2": {"kind": "mlp", "widths": [8]}}},
        # 4 candidates (2 ops x 2 taps of m1): any 3 distinct ones read both m1@1 and m1@2
        "space": {"stages": ["hybrid"], "ops": {"plugin_sum": {"gain": [1.0]}, "concat": {}},
                  "widths": [8], "activations": ["relu"], "max_cells": 1, "depths": {"m1": [1, 2], "m2": [1]}},
        "train": {"max_steps": 20, "min_steps": 0, "eval_every": 10},
        "search": {"strategy": "plugin_first", "options": {"tag": "from-config"}, "num_samples": 3,
                   "runs_dir": str(tmp / "runs"), "confirm": 0, "baselines": "none", "max_concurrent": 1},
    }
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if sub:
            cfg[section] = {**cfg[section], sub: value}
        else:
            cfg[section] = value
    path = tmp / "plugins.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_factory_encoder_plugin_op_and_strategy_search_end_to_end(plugin_dir, capsys):
    """One CLI search: `m1` is the user's encoder tapped at block1 and block2 (taps m1@1, m1@2),
    the plugin's operator is in the space and the plugin's strategy proposes, with its option;
    then, with --trust-code, its export and a resume."""
    assert main(["search", str(config(plugin_dir))]) == 0
    out = capsys.readouterr().out
    run_dir = Path(out.strip().splitlines()[-1].split(": ", 1)[1])
    trials = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    assert len(trials) == 3 and all(t["status"] == "ok" for t in trials), [t.get("reason") for t in trials]
    specs = [ArchSpec.from_dict(t["spec"]) for t in trials]
    assert {tap for s in specs for c in s.cells for tap in c.taps} == {"m1@1", "m1@2", "m2@1"}
    assert "plugin_sum" in {op for s in specs for op in s.ops}
    assert "plugin_first search: 3 candidates" in out
    assert (plugin_dir / "tags.txt").read_text().split() == ["from-config"]  # search.options reached it
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert stored["plugins"] == ["user_plugin"] and stored["backbones"]["modalities"]["m1"]["taps"] == ["block1", "block2"]
    assert "plugin_sum" in list_fusions() and "plugin_first" in list_strategies()

    # the run names code: export and resume ask for consent, and with it both work
    out = plugin_dir / "export"
    assert "--trust-code" in one_line_error(capsys, ["export", str(run_dir), "--out", str(out)])
    assert main(["export", str(run_dir), "--out", str(out), "--trust-code"]) == 0 and (out / "model.json").is_file()
    kept = (run_dir / "trials.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "trials.jsonl").write_text("".join(kept[:2]))  # as if stopped after two trials
    assert "--trust-code" in one_line_error(capsys, ["search", "--resume", str(run_dir)])
    assert main(["search", "--resume", str(run_dir), "--trust-code"]) == 0
    resumed = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    assert len(resumed) == 3 and resumed[:2] == trials[:2] and resumed[2]["status"] == "ok"


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(("m1", "expected"), [
    ({"factory": "no_such_module:make"}, "backbones.modalities.m1: factory: cannot import module 'no_such_module'"),
    ({"factory": "user_encoders:nothing"}, "backbones.modalities.m1: factory: module 'user_encoders' has no 'nothing'"),
    ({"factory": "user_encoders.make"}, "backbones.modalities.m1.factory: expected 'module:function'"),
    ({"taps": ["block1", "block9"]}, "backbones.modalities.m1: taps: the module has no submodule 'block9'"),
    *[({"factory": f, "args": {"command": "touch pwned"}},
       f"backbones.modalities.m1.factory: '{f}' is in Python's standard library, not a model factory")
      for f in ("os:system", "subprocess:run", "builtins:eval")],  # refused before anything is imported
])
def test_bad_factory_or_tap_is_one_line_naming_the_key(plugin_dir, capsys, m1, expected):
    entry = {"kind": "python", "factory": "user_encoders:make", "taps": ["block1", "block2"], **m1}
    path = config(plugin_dir, backbones__modalities={"m1": entry, "m2": {"kind": "mlp", "widths": [8]}})
    assert expected in one_line_error(capsys, ["search", str(path)])
    assert not (plugin_dir / "runs").exists()  # refused before a run directory exists
    assert not (plugin_dir / "pwned").exists() and not (Path.cwd() / "pwned").exists()


def test_a_plugin_that_fails_to_import_is_one_line_naming_it(plugin_dir, capsys):
    (plugin_dir / "broken_plugin.py").write_text("import torch\nraise RuntimeError('boom in the plugin')\n")
    err = one_line_error(capsys, ["space", str(config(plugin_dir, plugins=["user_plugin", "broken_plugin"]))])
    assert "plugins[1]: cannot import plugin module 'broken_plugin': RuntimeError: boom in the plugin" in err
    err = one_line_error(capsys, ["space", str(config(plugin_dir, plugins=["no_such_plugin"]))])
    assert "plugins[0]: cannot import plugin module 'no_such_plugin'" in err
    sys.modules.pop("broken_plugin", None)


def test_unknown_strategy_option_is_one_line(plugin_dir, capsys):
    err = one_line_error(capsys, ["space", str(config(plugin_dir, search__options={"colour": 1}))])
    assert "search.options: the plugin_first strategy does not take these options" in err


# ---------------------------------------------------------------- the registry itself
def test_every_extension_point_is_one_registry_style():
    for reg, builtin in ((OPERATORS, "concat"), (BACKBONE_KINDS, "gru"), (DATASETS, "npz"), (STRATEGIES, "mfas")):
        assert isinstance(reg, Registry) and builtin in reg.names()
        with pytest.raises(ValueError, match="already registered"):
            reg.add(builtin, object())
        with pytest.raises(ValueError, match=f"unknown {reg.kind} 'nope'; known: .*{builtin}"):
            reg.get("nope")


def test_entry_points_register_installed_plugins(tmp_path, monkeypatch):
    """An installed distribution's `fusion_nas.datasets` entry point is found by name, and
    one that fails to import is a PluginError naming the entry point."""
    (tmp_path / "ep_plugin.py").write_text("def load(cfg, base_dir=None):\n    return 'loaded'\n")
    dist = tmp_path / "ep_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[fusion_nas.datasets]\nmy_data = ep_plugin:load\n"
                                           "[fusion_nas.ops]\nbad_op = ep_missing_module:Op\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    datasets = Registry("dataset kind", "datasets")
    assert datasets.names() == ["my_data"] and datasets.get("my_data")({}) == "loaded"
    with pytest.raises(PluginError, match=r"entry point fusion_nas.ops:bad_op \(ep_missing_module:Op\) failed"):
        Registry("fusion operator", "ops").names()


def _table_names(text: str, heading: str) -> list[str]:
    """The first-column names of the markdown table under `heading`."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_0-9]+)` \|", section, re.M)


def test_the_readme_tables_list_exactly_the_registered_names():
    """The README's operator and data tables, and its backbone line, follow the registries."""
    from fusion_ops import list_backbones
    from search.datasets import list_datasets

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    builtin_ops = [n for n in list_fusions() if n != "plugin_sum"]
    assert sorted(_table_names(text, "## Fusion operators")) == builtin_ops
    assert sorted(_table_names(text, "## Data\n")) == list_datasets()
    line = next(ln for ln in text.splitlines() if "mlp: widths" in ln)
    assert all(f"{kind}:" in line or f"{kind}/" in line or f"/{kind}" in line for kind in list_backbones()), line


def test_fusion_nas_ops_lists_every_registry(capsys):
    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    assert "backbones: cnn2d, conv1d, embedding, gru, mlp, python, text" in out and "datasets: av_digits" in out
    assert "strategies: grid, mfas, nsga2, oneshot, random" in out
