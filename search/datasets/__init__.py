"""Dataset loaders chosen by `data.kind` (numpy only): planted, av_digits, mfeat, avmnist, npz.

`load_dataset(cfg)` returns a split, train-standardised `Dataset`; every failure is a
`DataError` naming the config key or the file and array. Kinds live in the `DATASETS`
registry: a plugin adds one with `@DATASETS.register("name")` on a
`loader(cfg, base_dir) -> Dataset` (entry point group `fusion_nas.datasets`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from search.datasets.av_digits import load_av_digits
from search.datasets.avmnist import load_avmnist
from search.datasets.common import DataError, Dataset, build_dataset
from search.datasets.mfeat import load_mfeat
from search.datasets.npz import load_npz
from search.datasets.planted import load_planted
from spaces.registry import Registry

__all__ = ["DATASETS", "LOADERS", "DataError", "Dataset", "build_dataset", "list_datasets", "load_dataset"]

Loader = Callable[[Mapping[str, Any], "Path | None"], Dataset]

DATASETS: Registry[Loader] = Registry("dataset kind", "datasets")
for _kind, _loader in (("av_digits", load_av_digits), ("planted", load_planted), ("mfeat", load_mfeat),
                       ("avmnist", load_avmnist), ("npz", load_npz)):
    DATASETS.add(_kind, _loader)
LOADERS = DATASETS  # the old name: `kind in LOADERS`, `sorted(LOADERS)` still work


def list_datasets() -> list[str]:
    """Names of all registered dataset kinds, sorted."""
    return DATASETS.names()


def load_dataset(cfg: Mapping[str, Any], base_dir: Path | None = None) -> Dataset:
    """Load the dataset the `data:` config section `cfg` describes; relative paths from `base_dir`."""
    if not isinstance(cfg, Mapping):
        raise DataError(f"data: expected a mapping with a 'kind', got {type(cfg).__name__}")
    kind = cfg.get("kind")
    if not isinstance(kind, str) or kind not in DATASETS:
        raise DataError(f"data.kind: unknown dataset kind {kind!r}; known: {', '.join(list_datasets())}")
    return DATASETS.get(kind)(cfg, base_dir)
