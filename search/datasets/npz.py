"""Any user data in one `.npz`: one array per modality (named by its key), `y`, optional `split`.

`y` is integer class labels `(N,)`, a 0/1 multi-label matrix `(N, L)` or float regression
targets `(N,)`/`(N, K)`; the task is inferred from it (`search.datasets._common.infer_task`)
unless `data.task` names it (`binary` for a two-class `y` judged by AUC, say).
`split` holds 0/1/2 or the strings train/val/test per row; without it the rows are split
by `data.seed` in `data.fractions` (default 0.6/0.2/0.2), stratified for class labels.
"""
from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from search.datasets._common import (
    SPLITS,
    DataError,
    Dataset,
    build_dataset,
    check_keys,
    check_task,
    normalize_of,
    opt_fractions,
    resolve_path,
    seed_of,
    split_for,
    split_sizes,
)

RESERVED = ("y", "split")


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


def _split_indices(source: str, split: np.ndarray, n: int) -> list[np.ndarray]:
    """Row indices of train/val/test from a `split` array of 0/1/2 or names."""
    if split.ndim != 1 or len(split) != n:
        raise DataError(f"{source}: array 'split' has shape {split.shape} but 'y' has {n} rows")
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
        if len(idx) == 0:
            raise DataError(f"{source}: array 'split' has no {name!r} rows")
    return parts


def load_npz(cfg: Mapping[str, Any], base_dir: Path | None = None) -> Dataset:
    """Read the `.npz` at `cfg['path']` (relative to `base_dir`)."""
    check_keys(cfg, ("path", "fractions", "task"), "npz")
    path = resolve_path(cfg, "path", base_dir)
    arrays = read_npz(path)
    source = str(path)
    if "y" not in arrays:
        raise DataError(f"{source}: no array 'y' (the class labels); found {', '.join(sorted(arrays)) or 'none'}")
    y, split = arrays.pop("y"), arrays.pop("split", None)
    if not arrays:
        raise DataError(f"{source}: needs one array per modality besides {' and '.join(RESERVED)}")
    task = check_task(source, y, cfg.get("task"))
    if split is not None:
        splits = _split_indices(source, split, len(y))
    else:
        rng = np.random.default_rng(seed_of(cfg))
        splits = split_for(task, y, split_sizes(len(y), opt_fractions(cfg)), rng)
    return build_dataset(path.stem, source, arrays, y, splits, normalize_of(cfg),
                         meta={"given_split": split is not None}, task=task)
