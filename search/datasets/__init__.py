"""Dataset loaders chosen by `data.kind` (numpy only): planted, av_digits, mfeat, avmnist, npz.

`load_dataset(cfg)` returns a split, train-standardised `Dataset`; every failure is a
`DataError` naming the config key or the file and array.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from search.datasets._common import DataError, Dataset
from search.datasets.av_digits import load_av_digits
from search.datasets.avmnist import load_avmnist
from search.datasets.mfeat import load_mfeat
from search.datasets.npz import load_npz
from search.datasets.planted import load_planted

__all__ = ["LOADERS", "DataError", "Dataset", "load_dataset"]

Loader = Callable[[Mapping[str, Any], "Path | None"], Dataset]

# kind -> loader(cfg, base_dir)
LOADERS: dict[str, Loader] = {
    "av_digits": load_av_digits,
    "planted": load_planted,
    "mfeat": load_mfeat,
    "avmnist": load_avmnist,
    "npz": load_npz,
}


def load_dataset(cfg: Mapping[str, Any], base_dir: Path | None = None) -> Dataset:
    """Load the dataset the `data:` config section `cfg` describes; relative paths from `base_dir`."""
    if not isinstance(cfg, Mapping):
        raise DataError(f"data: expected a mapping with a 'kind', got {type(cfg).__name__}")
    kind = cfg.get("kind")
    if not isinstance(kind, str) or kind not in LOADERS:
        raise DataError(f"data.kind: unknown dataset kind {kind!r}; known: {', '.join(sorted(LOADERS))}")
    return LOADERS[kind](cfg, base_dir)
