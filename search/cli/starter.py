"""`fusion-nas init [--data FILE]`: a commented starter config, read from the data when given.

Without `--data` the starter searches the built-in `av_digits`; with an `.npz` it names the
file, one backbone per modality chosen by sample shape (sequence backbones for `(T, F)`
samples and for padded sequences), and a space of the operators that suit the taps.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from search.datasets import Dataset, load_dataset
from search.training.pretrain import default_backbone
from spaces.yaml_errors import ConfigError

VECTOR_OPS = {"concat": {}, "tensor": {"proj_dim": [4, 8]}, "low_rank": {"rank": [2, 8]}}
TOKEN_OPS = {"attention": {"dim": [16]}}


def starter_config(data_path: str | Path | None = None, where: Path | None = None) -> str:
    """The text of a starter config (YAML with comments) for `data_path` (None: av_digits)."""
    if data_path is None:
        data: dict[str, Any] = {"kind": "av_digits"}
        dataset = load_dataset(data)
        name = "av_digits"
        # its images are (8, 8): by shape alone they would read as sequences
        return _render(name, data, dataset, {"audio": {"kind": "conv1d", "channels": [32, 32]},
                                             "image": {"kind": "cnn2d", "channels": [16, 32]}})
    else:
        path = Path(data_path)
        rel = os.path.relpath(path.resolve(), (where or Path.cwd()).resolve())
        data = {"kind": "npz", "path": rel}
        dataset = load_dataset({"kind": "npz", "path": str(path)})
        name = path.stem
        if len(dataset.modalities) < 2:  # fusion needs two: `space` and `search` would refuse the config
            raise ConfigError(f"--data: {path}: {len(dataset.modalities)} modality "
                              f"({', '.join(dataset.modalities) or 'none'}) besides the labels; fusion needs at least 2 "
                              "arrays of inputs (plus y)")
    return _render(name, data, dataset)


def _backbones(dataset: Dataset) -> dict[str, Any]:
    return {m: default_backbone(dataset.shapes[m], dataset.input_type(m)).to_dict() for m in dataset.modalities}


_WHY = {
    "categorical": "integer columns: categorical fields, one embedding table each (kind: embedding)",
    "text": "integer steps with lengths or a mask: token IDs (kind: text)",
}


def _input_lines(dataset: Dataset) -> str:
    """Comment lines saying why each ID modality is read as it is, and how to say otherwise."""
    lines = [f"#   {m}: {_WHY[dataset.input_type(m)]}" for m in dataset.modalities if m in dataset.codings]
    if not lines:
        return ""
    return ("# Inputs read as IDs, not numbers (to change: data: {modalities: {NAME: {type: dense | categorical | "
            "text}}}):\n" + "\n".join(lines) + "\n")


def _render(name: str, data: Mapping[str, Any], dataset: Dataset,
            backbones: Mapping[str, Any] | None = None) -> str:
    tokens = any(len(s) == 2 for s in dataset.shapes.values()) or bool(dataset.codings)  # ID taps are tokens
    ops = {**VECTOR_OPS, **(TOKEN_OPS if tokens else {})}
    shapes = ", ".join(f"{m} {tuple(dataset.shapes[m])}" + (" padded" if m in dataset.lengths_of("train") else "")
                       for m in dataset.modalities)
    dump = lambda obj: yaml.safe_dump(obj, default_flow_style=None, sort_keys=False).strip()  # noqa: E731
    n = len(dataset.y_train), len(dataset.y_val), len(dataset.y_test)
    return f"""# fusion-nas starter config (written by `fusion-nas init`); edit, then:
#   fusion-nas space <this file>     how big the space is, a few samples
#   fusion-nas search <this file>    run the search
# Data: {dataset.num_classes} classes, {n[0]} train / {n[1]} val / {n[2]} test; modalities {shapes}
{_input_lines(dataset)}name: {name}
data: {dump(dict(data))}
backbones:                       # one per modality, pretrained once and cached; kinds: fusion-nas ops
  pretrain: {{epochs: 20, patience: 5}}
  modalities:
{_indent(dump(dict(backbones or _backbones(dataset))), 4)}
space:
  stages: [early, late, hybrid]  # where to fuse: raw inputs, embeddings, or a chain across depths
  ops:                           # how to fuse (fusion-nas ops lists them and their arguments)
{_indent(dump(ops), 4)}
  widths: [16, 32]
  activations: [relu]
  max_cells: 2
search:
  strategy: mfas                 # mfas | nsga2 | random | grid (and any a plugin registers)
  num_samples: 16                # candidates to train
  confirm: 2                     # more seeds for every front candidate (0: off)
  baselines: basic               # basic | classic | none
"""


def _indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


def write_starter(out: str | Path, data_path: str | Path | None = None, force: bool = False) -> Path:
    """Write the starter config to `out` (refusing to overwrite unless `force`); returns its path."""
    out = Path(out)
    if out.exists() and not force:
        raise ConfigError(f"{out}: already exists; pass --force to overwrite it")
    if out.is_dir():
        raise ConfigError(f"{out}: is a directory; --out names the config file to write")
    if data_path is not None and not Path(data_path).is_file():
        raise ConfigError(f"--data: {data_path}: file not found")
    text = starter_config(data_path, out.parent)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as err:  # a full disk, a read-only folder, a path through a file
        raise ConfigError(f"{out}: cannot write it ({err.strerror or err})") from None
    return out
