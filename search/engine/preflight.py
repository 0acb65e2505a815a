"""Checks a search makes before it writes or allocates anything: the cluster address, the
folders it will write to, the data, the backbones against the data, the CPUs and GPUs, and the size of the largest
architecture of the space (built on torch's meta device: counted, never allocated).

Every failure is a one-line `ConfigError` naming the config file and key.
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from fusion_ops import Backbone, count_flops, count_params
from fusion_ops.backbones import build_backbone
from fusion_ops.model import FusionCell, flat_taps
from search import objectives
from search.config import Config
from search.datasets import DataError, Dataset, load_dataset
from search.training.pretrain import mark_padded, resolve_backbone
from spaces import ConfigError, OpChoice
from spaces.spec import CellSpec, make_tap
from spaces.yaml_errors import in_file, one_line

MAX_SETTINGS = 8  # an operator with more argument settings is sized at each argument's largest value


@dataclass(frozen=True)
class Largest:
    """The size of the largest architecture of a space, and what makes it large."""

    params: int
    flops: int
    what: str  # what makes the parameters large
    what_flops: str  # what makes the FLOPs large


def preflight(config: Config, *, writes: bool = True, cluster: bool = True) -> Dataset:
    """The checked dataset of `config`, after every check above (`writes`: also the folders;
    `cluster`: also the address)."""
    with in_file(config.path):
        if cluster:
            check_address(config)
        if writes:
            check_folders(config)
        check_cpus(config)
        check_gpus(config)
        dataset = _load(config)
        backbones = meta_backbones(config, dataset)
        check_size(config, dataset, backbones)
    return dataset


def check_folders(config: Config) -> None:
    """`search.runs_dir`, `backbones.cache_dir` and `search.tap_dir` are folders (or do not exist
    yet) that this process can write in."""
    base = Path.cwd()
    for key, value in (("search.runs_dir", config.search.runs_dir), ("backbones.cache_dir", config.backbones.cache_dir),
                       ("search.tap_dir", config.search.tap_dir or None)):
        if value is None:
            continue
        path = base / Path(value).expanduser()
        for p in (path, *path.parents):
            if p.exists():
                if not p.is_dir():
                    raise ConfigError(f"{key}: {p} exists and is not a directory")
                _check_writable(key, path, p)
                break


def _check_writable(key: str, path: Path, folder: Path) -> None:
    """A file can be made in `folder` (the nearest existing one on `path`'s way): tried, since
    permissions do not tell (root passes them; a read-only mount, /proc and /sys do not)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".fusion-nas-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(f"{key}: {path} cannot be written ({folder}: {err.strerror or err})") from None


def check_address(config: Config) -> None:
    """A cluster address answers within seconds (a ConnectionError, one line, otherwise): before
    the data, the backbones and the run directory."""
    if config.search.address:
        # Ray is imported only for a cluster: `space` and the other checks go without it
        from search.engine.ray_cluster import probe_address

        probe_address(config.search.address)


def check_cpus(config: Config) -> None:
    """An embedded Ray has this machine's CPUs: a trial asking for more would wait forever."""
    have = os.cpu_count() or 1
    if not config.search.address and config.search.cpus_per_trial > have:
        raise ConfigError(f"search.cpus_per_trial: {config.search.cpus_per_trial} CPUs per trial, "
                          f"but this machine has {have}")


def check_gpus(config: Config) -> None:
    """An embedded Ray has the GPUs torch sees here: a trial asking for more would wait forever."""
    want = config.search.gpus_per_trial
    have = torch.cuda.device_count() if want and torch.cuda.is_available() else 0
    if not config.search.address and want > have:
        raise ConfigError(f"search.gpus_per_trial: {want:g} GPUs per trial, but torch sees {have} CUDA devices "
                          "on this machine")


def _load(config: Config) -> Dataset:
    try:
        dataset = load_dataset(config.data, config.path.parent)
    except DataError as err:
        raise ConfigError(one_line(str(err))) from None
    except MemoryError:
        raise ConfigError("data: the data does not fit in this machine's memory") from None
    if len(dataset.modalities) < 2:
        raise ConfigError(f"data: fusion needs at least 2 modalities; the data has {len(dataset.modalities)}"
                          f" ({', '.join(dataset.modalities)})")
    missing = sorted(set(dataset.modalities) - set(config.space.modalities))
    if missing:
        raise ConfigError(f"backbones.modalities: the data has modality {missing[0]!r} with no backbone; "
                          f"it has {', '.join(dataset.modalities)}")
    objectives.resolve(getattr(dataset, "task", "classification"), config.search.metric, config.search.objectives)
    return dataset


def meta_backbones(config: Config, dataset: Dataset) -> dict[str, Backbone]:
    """Every modality's backbone built on the meta device (shapes and counts, no memory)."""
    out = {}
    for m in dataset.modalities:
        bcfg = resolve_backbone(config.backbones, dataset, m)  # its ConfigError names the key already
        try:
            # user code (a factory) may load weights from a file: it is built for real, once
            with contextlib.nullcontext() if bcfg.kind == "python" else torch.device("meta"):
                out[m] = build_backbone(bcfg, dataset.shapes[m])
            if m in dataset.lengths_of("train") and not type(out[m]).SEQUENCE:
                raise ValueError(f"{bcfg.kind} backbone cannot read padded sequences ({m!r} comes with "
                                 "lengths); use a sequence backbone: conv1d or gru")
        except (ValueError, RuntimeError) as err:
            raise ConfigError(one_line(f"backbones.modalities.{m}: {err}")) from None
    mark_padded(out, dataset)
    return out


def check_size(config: Config, dataset: Dataset, backbones: Mapping[str, Backbone]) -> Largest:
    """Refuse a space whose largest architecture exceeds `search.max_params` or `search.max_flops`."""
    big = largest(config, dataset.num_classes, backbones)
    for key, value, what, why in (("max_params", big.params, "parameters", big.what),
                                  ("max_flops", big.flops, "FLOPs per sample", big.what_flops)):
        limit = getattr(config.search, key)
        if value > limit:
            raise ConfigError(f"space: the largest architecture ({why}) has {value:,} {what}, more than "
                              f"search.{key} = {limit:,}; narrow the space or raise search.{key}")
    return big


def largest(config: Config, num_classes: int, backbones: Mapping[str, Backbone]) -> Largest:
    """An upper estimate of the largest architecture: every backbone, the widest taps, the
    widest cell of each operator (chained `max_cells` times when hybrid), the biggest trunk."""
    space = config.space
    taps = {}
    for m, depths in space.depth_map.items():
        shapes = {make_tap(m, d): backbones[m].tap_shapes[d] for d in depths}
        taps[m] = max(shapes, key=lambda t: (math.prod(shapes[t]), t))
        taps[m] = (taps[m], shapes[taps[m]])
    width = max(space.widths)
    chained = "hybrid" in space.stages and space.max_cells > 1
    with torch.device("meta"):
        base_p = sum(count_params(b) for b in backbones.values())
        base_f = sum(_flops(b, torch.zeros(1, *b.input_shape)) for b in backbones.values())
        trunk_p, trunk_f = max(_head_cost(t, width, num_classes) for t in space.trunks)
        feats = {t: torch.zeros(1, *s) for t, s in taps.values()}
        flat = flat_taps({t: s for t, s in taps.values()},
                         {t for m, (t, _) in taps.items() if backbones[m].padded})
        best_p, best_f = (0, ""), (0, "")  # the operators largest in parameters and in FLOPs
        for op in space.ops:
            for setting in _settings(op):
                cell = CellSpec(taps=tuple(t for t, _ in taps.values()), op=op.name, width=width, args=setting)
                p, f = _cell_cost(cell, feats, None, flat)
                if chained:
                    cp, cf = _cell_cost(cell, feats, width, flat)
                    p, f = p + (space.max_cells - 1) * cp, f + (space.max_cells - 1) * cf
                shown = ", ".join(f"{k}={v}" for k, v in setting)
                desc = (f"{op.name}{f' ({shown})' if shown else ''} at width {width}"
                        f"{f' x {space.max_cells} cells' if chained else ''}")
                best_p, best_f = max(best_p, (p, desc)), max(best_f, (f, desc))
    return Largest(base_p + best_p[0] + trunk_p, base_f + best_f[0] + trunk_f,
                   f"backbones {base_p:,} parameters; fusion {best_p[1]}: {best_p[0]:,}",
                   f"backbones {base_f:,} FLOPs; fusion {best_f[1]}: {best_f[0]:,}")


def _settings(op: OpChoice) -> list[tuple[tuple[str, object], ...]]:
    if op.size <= MAX_SETTINGS:
        return list(op.settings())
    return [tuple((a.name, max(values) if a.kind in ("int", "float") else values[-1]) for a, values in op.args)]


def _cell_cost(cell: CellSpec, feats: Mapping[str, torch.Tensor], prev: int | None,
               flat: frozenset[str]) -> tuple[int, int]:
    try:
        module = FusionCell(cell, {t: tuple(x.shape[1:]) for t, x in feats.items()}, prev, flat)
    except ValueError as err:  # an operator's own guard (e.g. the tensor op's outer-product size)
        text = str(err)
        label = f"space.ops.{text}" if text.startswith(f"{cell.op}.") else f"space.ops.{cell.op}: {text}"
        inputs = f" (with {len(cell.taps) + (prev is not None)} inputs)" if prev is not None else ""
        raise ConfigError(one_line(label + inputs)) from None
    extra = () if prev is None else (torch.zeros(1, prev),)
    return count_params(module), _flops(module, dict(feats), *extra)


def _head_cost(trunk: tuple[int, ...], width: int, num_classes: int) -> tuple[int, int]:
    dims = (width, *trunk, num_classes)
    params = sum(a * b + b for a, b in zip(dims[:-1], dims[1:], strict=True))
    return params, 2 * sum(a * b for a, b in zip(dims[:-1], dims[1:], strict=True))


def _flops(module: torch.nn.Module, *inputs: object) -> int:
    """FLOPs on meta tensors; 0 where an operator cannot run on the meta device (params still guard)."""
    try:
        return count_flops(module, *inputs)
    except (NotImplementedError, RuntimeError, TypeError):
        return 0
