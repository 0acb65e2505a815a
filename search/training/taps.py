"""The tap cache: every tap of every sample, computed once by the frozen backbones.

Candidates then train on these arrays and never run a backbone (the MFAS practice and
the search's main speed lever). A `TapCache` holds read-only numpy arrays in dicts: either
in memory (plain, picklable data the search shares through Ray's object store, which hands
it out read-only anyway), or memory-mapped files of a cache folder on disk
(`search.training.tap_files`, `TapCache.cached`): such a cache pickles as its folder's path,
and each process that unpickles it maps the files again, so the workers of a node share one
copy in the page cache. Taps are float32, or float16 to halve the size (`search.tap_dtype`);
`tensors` hands them out as float32 torch copies of just the taps asked for.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fusion_ops.backbones import Backbone
from fusion_ops.base import lengths_key
from fusion_ops.model import flat_taps
from search.datasets import Dataset
from search.datasets.common import SPLITS, split_for
from search.training import tap_files as files
from spaces.spec import make_tap, parse_tap

Say = Callable[[str], Any]
Alloc = Callable[[str, str, tuple[int, ...]], np.ndarray]  # (split, tap, shape) -> array to fill
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True, eq=False)
class TapCache:
    """`taps[split][tap] -> (N_split, *tap_shapes[tap])` float32 (or float16), `labels[split]` as
    the dataset keeps them (int64 classes; float32 multi-label or standardised regression targets).
    `task` and `target_scale` are the dataset's (`search.training.tasks`).

    `lengths[split][tap] -> (N_split,)` int64: the real tokens of a padded token tap (padded
    sequences only; absent otherwise); `tensors(split)` hands them out as `lengths_key(tap)`.

    `holdout_rows`: the rows of the dataset's val split moved to a fourth split, `holdout`
    (`with_holdout`), which no training and no strategy reads: it only chooses the answer
    among the front (`search.baselines.best_front_point`). None: no holdout.

    `directory`: the cache folder the arrays are memory-mapped from (None: in memory); a
    cache with one pickles as that path and the names of its taps (`open_tap_cache`).
    """

    taps: dict[str, dict[str, np.ndarray]]
    labels: dict[str, np.ndarray]
    tap_shapes: dict[str, tuple[int, ...]]
    num_classes: int
    task: str = "classification"
    target_scale: tuple[np.ndarray, np.ndarray] | None = None
    lengths: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    holdout_rows: np.ndarray | None = None
    directory: str | None = None

    def __reduce_ex__(self, protocol: Any) -> Any:
        if self.directory is None:
            return super().__reduce_ex__(protocol)
        # a few hundred bytes through Ray's object store; the process that unpickles maps the files
        return open_tap_cache, (self.directory, tuple(self.tap_names))

    @classmethod
    def from_backbones(
        cls,
        dataset: Dataset,
        backbones: Mapping[str, Backbone],
        *,
        only: Iterable[str] | None = None,
        batch_size: int = 1024,
        holdout: np.ndarray | None = None,
        dtype: str = "float32",
        say: Say | None = None,
        device: torch.device | str = "cpu",
    ) -> TapCache:
        """Run each backbone once over every split (eval mode, no grad, in batches) on `device`;
        the cache holds CPU arrays in memory whichever it was.

        `only` keeps just those taps (e.g. the depths a search space offers), to save memory;
        `holdout`: val rows written to a `holdout` split as they come (as `with_holdout` does);
        `dtype`: how taps are stored (float32 or float16); `say` gets progress lines.
        """
        _check_dtype(dtype)
        shapes = _kept_shapes(dataset, backbones, only)
        taps, lengths = _build(dataset, backbones, shapes, _parts(dataset, holdout), batch_size,
                               lambda _p, _t, shape: np.empty(shape, dtype=dtype), say, device=device)
        return cls(taps, _labels(dataset, holdout), shapes, dataset.num_classes, _task(dataset),
                   getattr(dataset, "target_scale", None), lengths, _rows(holdout))

    @classmethod
    def cached(
        cls,
        root: Path,
        dataset: Dataset,
        backbones: Mapping[str, Backbone],
        backbone_keys: Mapping[str, str],
        *,
        only: Iterable[str] | None = None,
        batch_size: int = 1024,
        holdout: np.ndarray | None = None,
        dtype: str = "float32",
        say: Say | None = None,
        device: torch.device | str = "cpu",
    ) -> TapCache:
        """`from_backbones`, kept on disk in folder `root/<key>` and memory-mapped: opened as it is
        when a complete one is there, else built batch by batch straight into memory-mapped files
        of a temporary folder renamed into place at the end. The key (`tap_files.cache_key`) hashes
        `backbone_keys` (the backbones' pretraining keys: `search.training.pretrain.cache_key`), the
        backbones' weights, the taps kept, the holdout rows and `dtype`."""
        _check_dtype(dtype)
        shapes = _kept_shapes(dataset, backbones, only)
        key = files.cache_key(backbone_keys, backbones, list(shapes), _rows(holdout), dtype,
                              {s: dataset.lengths_of(s) for s in SPLITS})
        directory = root / key
        manifest = files.read_manifest(directory, key)
        if manifest is not None:  # checked before it is used: a damaged cache is rebuilt, never read
            start = time.perf_counter()
            labels = _labels(dataset, holdout)
            expect = {"dtype": dtype, "num_classes": int(dataset.num_classes), "task": _task(dataset),
                      "sizes": {p: len(y) for p, y in labels.items()}, "taps": sorted(shapes, key=parse_tap),
                      "tap_shapes": {t: list(shapes[t]) for t in shapes}}
            problem = files.verify(directory, manifest, expect)
            checked = time.perf_counter() - start
            if problem:
                if say is not None:
                    say(f"tap cache: {directory} failed its check ({problem}); rebuilding it")
                files.discard(directory)
                manifest = None
            elif say is not None:
                total = sum(int(f["bytes"]) for f in manifest["files"].values())
                say(f"tap cache: reusing {directory} (checked {total / 2**20:.1f} MiB in {checked:.2f} s)")
        if manifest is None:
            start = time.perf_counter()
            names = sorted(shapes, key=parse_tap)
            with files.building(root, key) as tmp:
                written: list[np.ndarray] = []

                def alloc(part: str, tap: str, shape: tuple[int, ...]) -> np.ndarray:
                    written.append(files.new_array(tmp, files.tap_file(part, names.index(tap)), shape, dtype))
                    return written[-1]

                taps, lengths = _build(dataset, backbones, shapes, _parts(dataset, holdout), batch_size, alloc, say,
                                       release=lambda: files.release(written), device=device)
                files.release(written)
                _write_rest(tmp, key, dataset, holdout, shapes, names, lengths, dtype, time.perf_counter() - start)
                del taps, written
        return open_tap_cache(str(directory))

    @property
    def tap_names(self) -> list[str]:
        """Tap names, sorted by (modality, depth)."""
        return sorted(self.tap_shapes, key=parse_tap)

    @property
    def nbytes(self) -> int:
        """Bytes held by all arrays (taps and labels)."""
        return sum(a.nbytes for split in self.taps.values() for a in split.values()) + sum(
            y.nbytes for y in self.labels.values()
        )

    def n_taps(self) -> dict[str, int]:
        """`{modality: deepest cached depth + 1}`, for `fusion_ops.model.check_spec`."""
        out: dict[str, int] = {}
        for tap in self.tap_shapes:
            m, d = parse_tap(tap)
            out[m] = max(out.get(m, 0), d + 1)
        return out

    def flat_taps(self) -> frozenset[str]:
        """The token taps vector operators read flattened (`fusion_ops.model.flat_taps`): the
        small ones that are not padded."""
        padded = {t for split in self.lengths.values() for t in split}
        return flat_taps(self.tap_shapes, padded)

    def subset(self, tap_names: Iterable[str]) -> TapCache:
        """The same cache holding only `tap_names` (arrays shared, not copied)."""
        names = sorted(set(tap_names), key=parse_tap)
        missing = [t for t in names if t not in self.tap_shapes]
        if missing:
            raise ValueError(f"taps not in the cache: {', '.join(missing)}; cached: {', '.join(self.tap_names)}")
        return TapCache(
            {s: {t: split[t] for t in names} for s, split in self.taps.items()},
            dict(self.labels),
            {t: self.tap_shapes[t] for t in names},
            self.num_classes,
            self.task,
            self.target_scale,
            {s: {t: n for t, n in split.items() if t in names} for s, split in self.lengths.items()},
            self.holdout_rows,
            self.directory,
        )

    def with_holdout(self, rows: np.ndarray) -> TapCache:
        """The cache with val rows `rows` (indices into the dataset's val split) moved to a
        `holdout` split; `rows` empty: the cache as it is. (A disk cache takes its holdout
        when it is built: `cached(holdout=...)` copies no split.)"""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if not len(rows):
            return self
        if self.holdout_rows is not None:
            raise ValueError("this tap cache already has a holdout split")
        if self.directory is not None:
            raise ValueError(f"the tap cache in {self.directory} is on disk: give its holdout rows when it is built")
        keep = np.setdiff1d(np.arange(len(self.labels["val"])), rows)

        def cut(split: Mapping[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
            return {k: _read_only(np.ascontiguousarray(a[idx])) for k, a in split.items()}

        taps = {**self.taps, "val": cut(self.taps["val"], keep), "holdout": cut(self.taps["val"], rows)}
        labels = {**self.labels, "val": self.labels["val"][keep], "holdout": self.labels["val"][rows]}
        lengths = dict(self.lengths)
        if "val" in lengths:
            lengths.update(val=cut(lengths["val"], keep), holdout=cut(lengths["val"], rows))
        return TapCache(taps, labels, self.tap_shapes, self.num_classes, self.task, self.target_scale,
                        lengths, rows)

    def rows(self, split: str) -> tuple[dict[str, TapRows | Tensor], Tensor]:
        """`tensors(split)` with each tap as a `TapRows` (rows read as they are asked for) instead
        of a copy: what training and scoring read (`search.training.train`)."""
        if split not in self.taps:
            raise KeyError(f"unknown split {split!r}; known: {', '.join(self.taps)}")
        xs: dict[str, TapRows | Tensor] = {t: TapRows(a) for t, a in self.taps[split].items()}
        xs.update({lengths_key(t): torch.tensor(n) for t, n in self.lengths.get(split, {}).items()})
        return xs, torch.tensor(self.labels[split])

    def tensors(self, split: str) -> tuple[dict[str, Tensor], Tensor]:
        """`({tap: (N, ...)}, labels (N,))` of `split` as float32 torch tensors: copies of the
        cache's taps (float16 ones widened), which stays untouched; `subset` first to copy
        only the taps a candidate reads."""
        if split not in self.taps:
            raise KeyError(f"unknown split {split!r}; known: {', '.join(self.taps)}")
        xs = {t: torch.from_numpy(np.array(a, dtype=np.float32)) for t, a in self.taps[split].items()}
        xs.update({lengths_key(t): torch.tensor(n) for t, n in self.lengths.get(split, {}).items()})
        return xs, torch.tensor(self.labels[split])


class TapRows:
    """One split of one cached tap, read on demand: `rows[i:j]` and `rows[index tensor]` are float32
    torch copies of just those rows (float16 widened), so a candidate never copies a whole split
    and touches only the pages of the rows it reads. Shaped like the array (`len`, `shape`, `dim`)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.array.shape)

    def dim(self) -> int:
        return self.array.ndim

    def __getitem__(self, index: slice | Tensor | np.ndarray) -> Tensor:
        if isinstance(index, slice):  # a view of the (read-only, maybe mapped) array: copied here
            return torch.from_numpy(np.array(self.array[index], dtype=np.float32))
        rows = index.numpy() if isinstance(index, Tensor) else np.asarray(index)
        return torch.from_numpy(np.asarray(self.array[rows], dtype=np.float32))  # fancy indexing copies


def open_tap_cache(directory: str, taps: Iterable[str] | None = None) -> TapCache:
    """The disk cache in `directory` (all its taps, or `taps`), its arrays read-only memory maps;
    `tap_files.TapCacheMissing` with one line naming the folder and the setting when it is not there."""
    path = Path(directory)
    manifest = files.read_manifest(path)
    if manifest is None:
        if not path.is_dir():
            raise files.TapCacheMissing(files.missing_line(directory))
        raise ValueError(f"tap cache {directory} is incomplete or damaged (no readable {files.MANIFEST}); "
                         "delete the folder to rebuild it")
    names: list[str] = list(manifest["taps"])
    keep = names if taps is None else list(taps)
    unknown = sorted(set(keep) - set(names))
    if unknown:
        raise ValueError(f"taps not in the cache {directory}: {', '.join(unknown)}; cached: {', '.join(names)}")
    idx = {t: names.index(t) for t in keep}
    parts = list(manifest["sizes"])
    lengths = {p: {t: files.open_array(path, files.lengths_file(p, idx[t])) for t in keep
                   if t in manifest["lengths"].get(p, [])} for p in parts}
    scale = manifest.get("target_scale")
    rows = np.array(files.open_array(path, "holdout_rows.npy")) if "holdout" in parts else None
    return TapCache(
        {p: {t: files.open_array(path, files.tap_file(p, idx[t])) for t in keep} for p in parts},
        {p: files.open_array(path, files.labels_file(p)) for p in parts},
        {t: tuple(manifest["tap_shapes"][t]) for t in keep},
        int(manifest["num_classes"]),
        str(manifest["task"]),
        None if not scale else (np.array(files.open_array(path, "target_mean.npy")),
                                np.array(files.open_array(path, "target_std.npy"))),
        {p: n for p, n in lengths.items() if n},
        rows,
        str(path),
    )


HOLDOUT_MIN = 100  # samples: fewer cannot tell front points apart (1 SE of accuracy is ~4-5 points)


def holdout_rows(labels: np.ndarray, task: str, fraction: float, seed: int) -> np.ndarray:
    """Rows of a val split (its `labels`) to hold out of the search: `fraction` of them,
    stratified by class for class labels, drawn from `seed`; none when that is fewer than
    `HOLDOUT_MIN` samples or would leave the search fewer than that."""
    n = len(labels)
    size = int(round(fraction * n))
    if size < HOLDOUT_MIN or n - size < HOLDOUT_MIN:
        return np.zeros(0, dtype=np.int64)
    rows = split_for(task, np.asarray(labels), [size], np.random.default_rng([seed, 7919]))[0]
    return np.sort(rows).astype(np.int64)


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _kept_shapes(dataset: Dataset, backbones: Mapping[str, Backbone],
                 only: Iterable[str] | None) -> dict[str, tuple[int, ...]]:
    """`{tap: shape}` of the taps to cache: all the backbones give, or those in `only`."""
    missing = [m for m in dataset.modalities if m not in backbones]
    if missing:
        raise ValueError(f"no backbone for modality {missing[0]!r}; backbones: {', '.join(sorted(backbones))}")
    keep = None if only is None else set(only)
    shapes = {
        make_tap(m, d): tuple(s)
        for m in dataset.modalities
        for d, s in enumerate(backbones[m].tap_shapes)
        if keep is None or make_tap(m, d) in keep
    }
    unknown = sorted((keep or set()) - set(shapes))
    if unknown:
        raise ValueError(f"unknown taps {', '.join(unknown)}; the backbones give {', '.join(shapes)}")
    return shapes


def _check_dtype(dtype: str) -> None:
    if dtype not in files.DTYPES:
        raise ValueError(f"unknown tap dtype {dtype!r}; known: {', '.join(files.DTYPES)}")


def _rows(holdout: np.ndarray | None) -> np.ndarray | None:
    rows = None if holdout is None else np.unique(np.asarray(holdout, dtype=np.int64))
    return rows if rows is not None and len(rows) else None


def _parts(dataset: Dataset, holdout: np.ndarray | None) -> dict[str, dict[str, np.ndarray | None]]:
    """`{dataset split: {cache split: its sorted rows of the dataset split (None: all)}}`: val
    feeds `val` and `holdout` when there are holdout rows."""
    rows = _rows(holdout)
    out: dict[str, dict[str, np.ndarray | None]] = {s: {s: None} for s in SPLITS}
    if rows is not None:
        out["val"] = {"val": np.setdiff1d(np.arange(len(dataset.y_val)), rows), "holdout": rows}
    return out


def _task(dataset: Dataset) -> str:
    return getattr(dataset, "task", "classification")


def _labels(dataset: Dataset, holdout: np.ndarray | None) -> dict[str, np.ndarray]:
    dtype = np.int64 if _task(dataset) in ("classification", "binary") else np.float32
    out = {}
    for s, parts in _parts(dataset, holdout).items():
        y = np.asarray(dataset.split(s)[1], dtype=dtype)
        out.update({p: _read_only(y if rows is None else y[rows]) for p, rows in parts.items()})
    return _ordered(out)


def _ordered(d: dict[str, Any]) -> dict[str, Any]:
    """Splits in the order train, val, test, holdout (as `with_holdout` leaves them)."""
    return {p: d[p] for p in (*SPLITS, "holdout") if p in d}


_RELEASE_BYTES = 256 * 2**20  # a build hands written pages back to the page cache every this many bytes


def _build(dataset: Dataset, backbones: Mapping[str, Backbone], shapes: Mapping[str, tuple[int, ...]],
           parts: Mapping[str, Mapping[str, np.ndarray | None]], batch_size: int, alloc: Alloc, say: Say | None,
           release: Callable[[], None] | None = None, device: torch.device | str = "cpu",
           ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """Every kept tap of every split, in arrays from `alloc`, with a progress line now and then."""
    progress = files.Progress(say, sum(len(dataset.split(s)[1]) for s in SPLITS))
    row_bytes = sum(int(np.prod(s)) for s in shapes.values()) * np.dtype(np.float32).itemsize
    written = 0

    def advance(n: int) -> None:
        nonlocal written
        progress.advance(n)
        written += n * row_bytes
        if release is not None and written >= _RELEASE_BYTES:
            release()
            written = 0

    taps: dict[str, dict[str, np.ndarray]] = {}
    lengths: dict[str, dict[str, np.ndarray]] = {}
    for s in SPLITS:
        t, n = _split_taps(dataset.split(s)[0], backbones, shapes, batch_size, dataset.lengths_of(s),
                           parts=parts[s], alloc=alloc, advance=advance, device=torch.device(device))
        taps.update(t)
        lengths.update(n)
    return _ordered(taps), _ordered(lengths)


@torch.no_grad()
def _split_taps(
    inputs: Mapping[str, np.ndarray],
    backbones: Mapping[str, Backbone],
    shapes: Mapping[str, tuple[int, ...]],
    batch_size: int,
    lengths: Mapping[str, np.ndarray] | None = None,
    *,
    parts: Mapping[str, np.ndarray | None] | None = None,
    alloc: Alloc | None = None,
    advance: Callable[[int], None] | None = None,
    device: torch.device | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """Every kept tap of one split, `{part: {tap: (N_part, *shape)}}`, written batch by batch into
    arrays from `alloc`, and the real-token counts `{part: {tap: (N_part,)}}` of the padded token
    taps. `parts`: `{name: sorted rows of the split (None: all)}`, default `{"all": None}`. The
    backbones run on `device` (default: where they are) and go back where they were."""
    parts = parts or {"all": None}
    alloc = alloc or (lambda _p, _t, shape: np.empty(shape, dtype=np.float32))
    lengths = lengths or {}
    n = len(next(iter(inputs.values())))
    kept = {m: [(d, make_tap(m, d)) for d in backbones[m].depths if make_tap(m, d) in shapes] for m in sorted(inputs)}
    kept = {m: k for m, k in kept.items() if k}
    out = {p: {t: alloc(p, t, (n if rows is None else len(rows), *shapes[t])) for k in kept.values() for _, t in k}
           for p, rows in parts.items()}
    out_lengths: dict[str, dict[str, np.ndarray]] = {p: {} for p in parts}
    real = {m: torch.as_tensor(lengths[m], dtype=torch.long) for m in kept if m in lengths}
    for m, real_m in real.items():
        per_depth = backbones[m].tap_lengths(real_m)
        for d, t in kept[m]:
            if per_depth[d] is not None:
                full = per_depth[d].numpy().astype(np.int64)
                for p, rows in parts.items():
                    out_lengths[p][t] = _read_only(full if rows is None else full[rows])
    modes = {m: backbones[m].training for m in kept}
    homes = {m: next(iter(backbones[m].parameters()), torch.zeros(())).device for m in kept}
    try:
        for m in kept:
            backbones[m].eval().to(device or homes[m])
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)
            for m, k in kept.items():
                on = device or homes[m]
                batch = torch.from_numpy(np.array(inputs[m][i:j], dtype=np.float32)).to(on)
                batch_taps = backbones[m].forward_taps(batch, real[m][i:j].to(on) if m in real else None)
                for d, t in k:
                    _put(out, t, batch_taps[d].cpu().numpy(), parts, i, j)
            if advance is not None:
                advance(j - i)
    finally:
        for m, was_training in modes.items():
            backbones[m].train(was_training).to(homes[m])
    return ({p: {t: _read_only(a) for t, a in taps.items()} for p, taps in out.items()},
            {p: n_p for p, n_p in out_lengths.items() if n_p})


def _put(out: Mapping[str, Mapping[str, np.ndarray]], tap: str, values: np.ndarray,
         parts: Mapping[str, np.ndarray | None], i: int, j: int) -> None:
    """Rows `i:j` of the split into each part's array of `tap` (a part takes the rows it holds)."""
    for p, rows in parts.items():
        dest = out[p][tap]
        if dest.dtype == np.float16 and values.size and float(np.abs(values).max()) > FLOAT16_MAX:
            raise ValueError(f"tap {tap} has values beyond float16's range (|x| up to "
                             f"{float(np.abs(values).max()):.3g}): set search.tap_dtype: float32")
        if rows is None:
            dest[i:j] = values
        else:
            a, b = np.searchsorted(rows, (i, j))
            dest[a:b] = values[rows[a:b] - i]


def _write_rest(directory: Path, key: str, dataset: Dataset, holdout: np.ndarray | None,
                shapes: Mapping[str, tuple[int, ...]], names: list[str],
                lengths: Mapping[str, Mapping[str, np.ndarray]], dtype: str, seconds: float) -> None:
    """Labels, lengths, holdout rows, target scale, then the manifest, into a cache folder being built."""
    labels = _labels(dataset, holdout)
    for p, y in labels.items():
        files.save_array(directory, files.labels_file(p), y)
    for p, per_tap in lengths.items():
        for t, n in per_tap.items():
            files.save_array(directory, files.lengths_file(p, names.index(t)), n)
    rows = _rows(holdout)
    if rows is not None:
        files.save_array(directory, "holdout_rows.npy", rows)
    scale = getattr(dataset, "target_scale", None)
    if scale is not None:
        files.save_array(directory, "target_mean.npy", np.asarray(scale[0]))
        files.save_array(directory, "target_std.npy", np.asarray(scale[1]))
    sizes = {p: len(y) for p, y in labels.items()}
    nbytes = sum(n * int(np.prod(shapes[t])) * np.dtype(dtype).itemsize for n in sizes.values() for t in names)
    files.write_manifest(directory, {
        "key": key, "dtype": dtype, "sizes": sizes, "taps": names,
        "tap_shapes": {t: list(shapes[t]) for t in names}, "num_classes": int(dataset.num_classes),
        "task": _task(dataset), "lengths": {p: sorted(n) for p, n in lengths.items()},
        "target_scale": scale is not None, "tap_bytes": nbytes, "build_seconds": round(seconds, 3),
    })
