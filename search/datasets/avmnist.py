"""AV-MNIST in the MultiBench on-disk layout, for users who have it (nothing is downloaded).

Layout under `data.root` (as MultiBench's `datasets/avmnist/get_data.py` reads it)::

    image/train_data.npy  (N, 784)       image/test_data.npy
    audio/train_data.npy  (N, 112, 112)  audio/test_data.npy
    train_labels.npy      test_labels.npy

The last `n_val` (default 5,000) training rows are the validation split, as in MultiBench.
Images become `(28, 28)`. Normalisation defaults to one scalar per modality: per-pixel z-scores
would blow up the rarely lit border pixels.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from search.datasets.common import (
    DataError,
    Dataset,
    assemble,
    check_keys,
    normalize_of,
    opt_int,
    resolve_path,
    validate_labels,
)

FILES = {"image": "image/{split}_data.npy", "audio": "audio/{split}_data.npy", "y": "{split}_labels.npy"}


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)  # memmap: the audio is ~3 GB as float32
    except ValueError as err:
        raise DataError(f"{path}: not a numpy array file ({err})") from None


def _part(root: Path, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    arrays = {key: _load(root / pattern.format(split=split)) for key, pattern in FILES.items()}
    y = np.asarray(arrays.pop("y"))
    validate_labels(str(root / FILES["y"].format(split=split)), y, allow_one_class=True)
    for name, x in arrays.items():
        if len(x) != len(y):
            raise DataError(f"{root / FILES[name].format(split=split)}: array {name!r} has {len(x)} rows "
                            f"but {FILES['y'].format(split=split)} has {len(y)}")
    image = arrays["image"]
    if image.ndim == 2 and image.shape[1] == 28 * 28:
        arrays["image"] = image.reshape(len(image), 28, 28)
    return arrays, y


def load_avmnist(cfg: Mapping[str, Any], base_dir: Path | None = None) -> Dataset:
    """Read `cfg['root']`; val = the last `n_val` training rows."""
    check_keys(cfg, ("root", "n_val"), "avmnist")
    root = resolve_path(cfg, "root", base_dir)
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a folder")
    n_val = opt_int(cfg, "n_val", 5000, 1)
    (x_tr, y_tr), test = _part(root, "train"), _part(root, "test")
    cut = len(y_tr) - n_val
    if cut < 1:
        raise DataError(f"data.n_val: {n_val} validation rows leave none of the {len(y_tr)} training rows")
    parts = {
        "train": ({m: x[:cut] for m, x in x_tr.items()}, y_tr[:cut]),
        "val": ({m: x[cut:] for m, x in x_tr.items()}, y_tr[cut:]),
        "test": test,
    }
    return assemble("avmnist", str(root), parts, normalize_of(cfg, "modality"))
