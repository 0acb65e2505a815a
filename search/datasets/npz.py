"""Any user data in one `.npz`: one array per modality (named by its key), `y`, optional `split`.

`y` is integer class labels `(N,)`, a 0/1 multi-label matrix `(N, L)` or float regression
targets `(N,)`/`(N, K)`; the task is inferred from it (`search.datasets.common.infer_task`)
unless `data.task` names it (`binary` for a two-class `y` judged by AUC, say).
`split` holds 0/1/2 or the strings train/val/test per row; without it the rows are split
stratified by `data.seed` in `data.fractions` (default 0.6/0.2/0.2). A `split` with train
and test only (the names, or 0/1) gets a validation part carved from train, stratified,
of `data.val_fraction` (default 0.2). Padded sequences: a `(N, T, F)` modality `m` may
come with `m_lengths` `(N,)` (valid steps) or a boolean `m_mask` `(N, T)` (True on the
valid, leading steps); padding then never changes a prediction. Integer arrays are
categorical fields `(N, F)`, or token sequences `(N, T)` when they come with lengths or a
mask (`search.datasets.inputs`; `data.modalities` overrides it).
"""
from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from search.datasets.common import (
    SPLITS,
    DataError,
    Dataset,
    build_dataset,
    check_keys,
    check_task,
    infer_task,
    normalize_of,
    opt_float,
    opt_fractions,
    resolve_path,
    seed_of,
    split_for,
    split_sizes,
)

RESERVED = ("y", "split")
LENGTHS, MASK = "_lengths", "_mask"


def memory_bytes() -> int:
    """This machine's physical memory, in bytes (what no single data file may exceed)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**40


def check_npz_headers(path: Path, limit: int | None = None) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """`{array: (shape, dtype)}` from the `.npy` headers inside `path`, read without loading
    any array: object arrays (pickles) and arrays larger than `limit` bytes (default: the
    machine's memory, all arrays together) are refused before a byte of data is read."""
    limit = memory_bytes() if limit is None else limit
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = {(1, 0): np.lib.format.read_array_header_1_0,
                            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read is None:
                        raise ValueError(f"array {name!r}: unsupported .npy version {version}")
                    shape, _fortran, dtype = read(f)
                out[name] = (tuple(shape), dtype)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as err:
        raise DataError(" ".join(f"{path}: cannot read as .npz ({err})".split())) from None
    total = 0
    for name, (shape, dtype) in out.items():
        if dtype.hasobject:
            raise DataError(f"{path}: array {name!r} holds Python objects (dtype {dtype}); "
                            "only numeric arrays are read (a data file must not run code)")
        size = math.prod(shape) * dtype.itemsize
        total += size
        if total > limit:
            raise DataError(f"{path}: array {name!r} claims shape {shape} of {dtype} ({size:,} bytes); "
                            f"the arrays exceed this machine's memory ({limit:,} bytes)")
    return out


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of `path`, loaded eagerly (no pickles: a data file must not run code)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    check_npz_headers(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, MemoryError) as err:
        raise DataError(" ".join(f"{path}: cannot read as .npz ({err})".split())) from None


def split_indices(source: str, split: np.ndarray, n: int, y: np.ndarray | None = None,
                  val_fraction: float = 0.2, seed: int = 0) -> list[np.ndarray]:
    """Row indices of train/val/test from a `split` array of 0/1/2 or names.

    Given `y`, a split of train and test only (names, or 0/1) gets `val_fraction` of its
    train rows as val, stratified (seeded by `seed`); `meta`-worthy news is the caller's.
    """
    if split.ndim != 1 or len(split) != n:
        raise DataError(f"{source}: array 'split' has shape {split.shape} but 'y' has {n} rows")
    if y is not None and train_test_only(split):
        return carve_val(split, y, val_fraction, seed)
    if split.dtype.kind in "US":
        codes = {name: i for i, name in enumerate(SPLITS)}
        bad = sorted(set(split.astype(str).tolist()) - set(codes))
        split = np.array([codes.get(s, -1) for s in split.astype(str).tolist()])
    else:
        bad = [] if np.issubdtype(split.dtype, np.integer) else [f"dtype {split.dtype}"]
        bad = bad or sorted(set(split.tolist()) - {0, 1, 2})
    if bad:
        raise DataError(f"{source}: array 'split' must hold 0/1/2 or train/val/test; found {bad[:5]}")
    parts = [np.flatnonzero(split == i) for i in range(3)]
    for name, idx in zip(SPLITS, parts, strict=True):
        if name == "val" and len(idx) == 0 and len(parts[2]):
            raise DataError(f"{source}: array 'split' has no 'val' rows (with train and test only, "
                            "a validation part is carved from train: give 0/1 or train/test)")
        if len(idx) == 0:
            raise DataError(f"{source}: array 'split' has no {name!r} rows")
    return parts


def train_test_only(split: np.ndarray) -> bool:
    """Whether `split` names train and test rows only (as names, or as 0 = train / 1 = test)."""
    if split.dtype.kind in "US":
        return set(split.astype(str).tolist()) == {"train", "test"}
    return np.issubdtype(split.dtype, np.integer) and set(split.tolist()) == {0, 1}


def carve_val(split: np.ndarray, y: np.ndarray, val_fraction: float, seed: int) -> list[np.ndarray]:
    """train/val/test rows of a train/test `split`: val is `val_fraction` of train, stratified."""
    is_test = split.astype(str) == "test" if split.dtype.kind in "US" else split == 1
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    n_val = min(max(1, round(val_fraction * len(train))), len(train) - 1)
    task = infer_task(y[train])  # stratified for class labels, random for targets
    tr, va = split_for(task, y[train], [len(train) - n_val, n_val], np.random.default_rng(seed))
    return [train[np.sort(tr)], train[np.sort(va)], test]


def sequence_lengths(source: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pop `<m>_lengths` / `<m>_mask` arrays out of `arrays`: `{m: (N,) valid steps}`."""
    out: dict[str, np.ndarray] = {}
    for key in sorted(arrays):
        for suffix in (LENGTHS, MASK):
            m = key[: -len(suffix)]
            if not key.endswith(suffix) or m not in arrays or m.endswith((LENGTHS, MASK)):
                continue
            if m in out:
                raise DataError(f"{source}: give {m + LENGTHS!r} or {m + MASK!r}, not both")
            value = arrays.pop(key)
            out[m] = value if suffix == LENGTHS else _mask_lengths(source, key, value, arrays[m])
    return out


def _mask_lengths(source: str, key: str, mask: np.ndarray, x: np.ndarray) -> np.ndarray:
    if mask.dtype != np.bool_ or mask.shape != x.shape[:2]:
        raise DataError(f"{source}: array {key!r} must be boolean of shape {x.shape[:2]} (rows, steps), "
                        f"got {mask.shape} of {mask.dtype}")
    lengths = mask.sum(axis=1)
    prefix = np.arange(mask.shape[1])[None, :] < lengths[:, None]
    if not np.array_equal(prefix, mask):
        row = int(np.flatnonzero((prefix != mask).any(axis=1))[0])
        raise DataError(f"{source}: array {key!r} row {row}: the valid steps must come first (padding at the end)")
    return lengths


def load_npz(cfg: Mapping[str, Any], base_dir: Path | None = None) -> Dataset:
    """Read the `.npz` at `cfg['path']` (relative to `base_dir`)."""
    check_keys(cfg, ("path", "fractions", "val_fraction", "task", "modalities"), "npz")
    path = resolve_path(cfg, "path", base_dir)
    arrays = read_npz(path)
    source = str(path)
    if "y" not in arrays:
        raise DataError(f"{source}: no array 'y' (the class labels); found {', '.join(sorted(arrays)) or 'none'}")
    y, split = arrays.pop("y"), arrays.pop("split", None)
    lengths = sequence_lengths(source, arrays)
    if not arrays:
        raise DataError(f"{source}: needs one array per modality besides {' and '.join(RESERVED)}")
    task = check_task(source, y, cfg.get("task"))
    meta: dict[str, Any] = {"given_split": split is not None}
    if split is not None:
        val_fraction = opt_float(cfg, "val_fraction", 0.2, 0.01, 0.9)
        splits = split_indices(source, split, len(y), y, val_fraction, seed_of(cfg))
        if train_test_only(split):
            meta["notice"] = (f"{path.name}: 'split' holds train and test only; validation is "
                              f"{len(splits[1])} train rows ({val_fraction:g}, stratified, data.val_fraction)")
    else:
        rng = np.random.default_rng(seed_of(cfg))
        splits = split_for(task, y, split_sizes(len(y), opt_fractions(cfg)), rng)
    return build_dataset(path.stem, source, arrays, y, splits, normalize_of(cfg), meta=meta, task=task,
                         lengths=lengths, inputs=cfg.get("modalities"))
