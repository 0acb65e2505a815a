"""The `Dataset` container, seeded stratified splits, array validation and config-key helpers.

Every loader ends in `build_dataset`, so every kind gets the same checks (lengths, NaN, integer
labels, two classes at least) and the same train-only standardisation.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusion_ops.ids import IdCoding
from search.datasets.errors import DataError
from search.datasets.inputs import code_modality, input_types

SPLITS = ("train", "val", "test")
NORMALIZE = ("feature", "modality", "none")
_CHUNK = 4096  # rows per pass: moments and NaN checks never allocate a full float64 copy
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Split, standardised multimodal data: `train/val/test[modality]` is float32 `(N, *shape)`.

    `mean`/`std` (per-sample shape) were fitted on train and already applied to every split.
    Labels by `task`: classification and binary, int64 in `0..num_classes-1` (`classes[i]` is
    the original label of class `i`); multilabel, float32 0/1 `(N, L)`; regression, float32
    `(N, K)` standardised by `target_mean`/`target_std`. `num_classes` is the number of model
    outputs (classes, labels or targets). Treat the arrays as read-only.
    """

    name: str
    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    y_train: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray
    num_classes: int
    shapes: dict[str, tuple[int, ...]]
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    classes: tuple[Any, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"  # classification | binary | multilabel | regression (search.training.tasks)
    target_mean: np.ndarray | None = None  # regression: the train mean and std that standardised y
    target_std: np.ndarray | None = None
    # padded sequences: lengths[split][modality] -> (N_split,) int64 valid steps (absent: not padded)
    lengths: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # ID modalities (categorical fields, text tokens): how their raw IDs became the codes the arrays hold
    codings: dict[str, IdCoding] = field(default_factory=dict)
    raw_ids: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # [split][m]: their IDs as given (int64)

    def input_type(self, modality: str) -> str:
        """`dense`, `categorical` or `text` (`search.datasets.inputs`)."""
        return self.codings[modality].type if modality in self.codings else "dense"

    @property
    def target_scale(self) -> tuple[np.ndarray, np.ndarray] | None:
        """`(mean, std)` of regression targets (labels are standardised with it), else None."""
        return None if self.target_mean is None else (self.target_mean, self.target_std)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names, sorted (the order all code iterates in)."""
        return tuple(sorted(self.shapes))

    def lengths_of(self, name: str) -> dict[str, np.ndarray]:
        """`{modality: (N,) valid steps}` of split `name` for the padded modalities (often none)."""
        return dict(self.lengths.get(name, {}))

    def split(self, name: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """`(inputs, labels)` of split `name` (train, val or test)."""
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; known: {', '.join(SPLITS)}")
        return getattr(self, name), getattr(self, f"y_{name}")


# ---------------------------------------------------------------- config keys
def check_keys(cfg: Mapping[str, Any], allowed: Sequence[str], kind: str) -> None:
    """Raise on a key that kind `kind` does not read (a typo would otherwise be silently ignored)."""
    known = {"kind", "seed", "normalize", *allowed}
    for key in cfg:
        if key not in known:
            raise DataError(f"data.{key}: unknown key for kind {kind!r}; known: {', '.join(sorted(known))}")


def opt_int(cfg: Mapping[str, Any], key: str, default: int | None, minimum: int = 0) -> int | None:
    """Integer `cfg[key]` (>= minimum) or `default`."""
    value = cfg.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"data.{key}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def opt_float(cfg: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    """Float `cfg[key]` in `[lo, hi]` or `default`."""
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise DataError(f"data.{key}: expected a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def opt_fractions(cfg: Mapping[str, Any], default: Sequence[float] = (0.6, 0.2, 0.2)) -> tuple[float, ...]:
    """`cfg['fractions']`: three positive (train, val, test) fractions summing to 1."""
    value = cfg.get("fractions", default)
    ok = isinstance(value, (list, tuple)) and len(value) == 3
    ok = ok and all(isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0 for f in value)
    if not ok or abs(sum(value) - 1.0) > 1e-6:
        raise DataError(f"data.fractions: expected three positive fractions (train, val, test) summing to 1, got {value!r}")
    return tuple(float(f) for f in value)


def seed_of(cfg: Mapping[str, Any]) -> int:
    """`cfg['seed']`, default 0."""
    return opt_int(cfg, "seed", 0)  # type: ignore[return-value]


def normalize_of(cfg: Mapping[str, Any], default: str = "feature") -> str:
    """`cfg['normalize']`: feature (per-feature z-score), modality (one scalar per modality) or none."""
    value = cfg.get("normalize", default)
    value = {True: "feature", False: "none"}.get(value, value) if isinstance(value, bool) else value
    if value not in NORMALIZE:
        raise DataError(f"data.normalize: unknown mode {value!r}; known: {', '.join(NORMALIZE)}")
    return value


def resolve_path(cfg: Mapping[str, Any], key: str, base_dir: Path | None) -> Path:
    """Required path `cfg[key]`, relative paths taken from `base_dir` (the config's folder)."""
    value = cfg.get(key)
    if not isinstance(value, (str, Path)) or not str(value):
        raise DataError(f"data.{key}: required path missing")
    path = Path(value).expanduser()
    return path if path.is_absolute() or base_dir is None else Path(base_dir) / path


# ---------------------------------------------------------------- splits
def split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Counts per split, summing to `n` (cuts at rounded cumulative fractions)."""
    cuts = np.rint(np.cumsum(fractions) / np.sum(fractions) * n).astype(int)
    return np.diff(np.concatenate([[0], cuts])).tolist()


def stratified_split(y: np.ndarray, sizes: Sequence[int], rng: np.random.Generator) -> list[np.ndarray]:
    """Disjoint index sets of exactly `sizes`, each holding every class in proportion (±1 per class).

    Each class's samples are spread evenly over [0, 1) in random order; sorting by that key
    interleaves the classes, so any contiguous cut is stratified.
    """
    if sum(sizes) > len(y):
        raise ValueError(f"split sizes {list(sizes)} exceed {len(y)} samples")
    key = np.empty(len(y))
    perm = rng.permutation(len(y))
    for c in np.unique(y):
        members = perm[y[perm] == c]
        key[members] = (np.arange(len(members)) + rng.random()) / len(members)
    order = np.argsort(key, kind="stable")
    bounds = np.cumsum([0, *sizes])
    return [rng.permutation(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


# ---------------------------------------------------------------- validation and assembly
def validate_labels(source: str, y: np.ndarray, allow_one_class: bool = False) -> None:
    """Integer class labels in a 1-d array, at least two classes (unless `allow_one_class`)."""
    if y.ndim != 1:
        raise DataError(f"{source}: 'y' must be a 1-d array of integer class labels, got shape {y.shape}")
    if np.issubdtype(y.dtype, np.floating):  # integral floats (as CSVs store labels) are accepted
        bad = y[~np.isfinite(y) | (y != np.round(y))]
        if len(bad):
            raise DataError(f"{source}: 'y' must be integer class labels, found {bad[0].item()!r}")
    elif not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
        raise DataError(f"{source}: 'y' must be integer class labels, got dtype {y.dtype}")
    if not allow_one_class and len(np.unique(y)) < 2:
        raise DataError(f"{source}: 'y' has only one class")


TASK_TYPES = ("classification", "binary", "multilabel", "regression")


def infer_task(y: np.ndarray) -> str:
    """classification for integer labels (integral floats too), multilabel for a 2-D 0/1 `y`,
    regression for other float labels (one or more targets)."""
    y = np.asarray(y)
    if y.ndim == 2:
        return "multilabel" if y.size and np.isin(y, (0, 1)).all() else "regression"
    if np.issubdtype(y.dtype, np.floating) and not (np.isfinite(y) & (y == np.round(y))).all():
        return "regression"
    return "classification"


def check_task(source: str, y: np.ndarray, task: Any) -> str:
    """`task` (None: inferred from `y`) if `y` fits it; DataError naming what does not."""
    if task is None:
        task = infer_task(y)
    if task not in TASK_TYPES:
        raise DataError(f"data.task: unknown task {task!r}; known: {', '.join(TASK_TYPES)}")
    if task in ("classification", "binary"):
        validate_labels(source, y)
        if task == "binary" and len(np.unique(y)) != 2:
            raise DataError(f"{source}: a binary task needs exactly 2 classes in 'y', found {len(np.unique(y))}")
    elif not (np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.bool_)) or y.ndim not in (1, 2):
        raise DataError(f"{source}: 'y' of a {task} task must be a numeric 1-d or 2-d array, got {y.dtype} {y.shape}")
    elif not np.isfinite(y.astype(float)).all():
        raise DataError(f"{source}: 'y' contains NaN or inf")
    elif task == "multilabel" and (y.ndim != 2 or not np.isin(y, (0, 1)).all()):
        raise DataError(f"{source}: 'y' of a multilabel task must be a 2-d array of 0/1, got shape {y.shape}")
    return task


def random_split(n: int, sizes: Sequence[int], rng: np.random.Generator) -> list[np.ndarray]:
    """Disjoint random index sets of exactly `sizes` (for labels that cannot be stratified)."""
    perm = rng.permutation(n)
    bounds = np.cumsum([0, *sizes])
    return [perm[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def split_for(task: str, y: np.ndarray, sizes: Sequence[int], rng: np.random.Generator) -> list[np.ndarray]:
    """Stratified for classes, random for multi-label and regression targets."""
    return stratified_split(y, sizes, rng) if task in ("classification", "binary") else random_split(len(y), sizes, rng)


def validate_modalities(source: str, xs: Mapping[str, np.ndarray], y: np.ndarray) -> None:
    """Names usable as modality names, numeric arrays, as many rows as `y`."""
    if not xs:
        raise DataError(f"{source}: no modality arrays")
    for name, x in xs.items():
        if not _NAME.match(name):
            raise DataError(f"{source}: array {name!r} cannot be a modality name (letters, digits, _ only)")
        if not (np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.bool_)) or x.ndim == 0:
            raise DataError(f"{source}: array {name!r} must be a numeric array, got dtype {x.dtype}")
        if np.issubdtype(x.dtype, np.complexfloating):  # casting would silently drop the imaginary part
            raise DataError(f"{source}: array {name!r} holds complex numbers; give real features "
                            "(e.g. the real and imaginary parts as separate features)")
        if x.ndim > 1 and 0 in x.shape[1:]:
            raise DataError(f"{source}: array {name!r} has no features (samples of shape {x.shape[1:]})")
        if len(x) != len(y):
            raise DataError(f"{source}: array {name!r} has {len(x)} rows but 'y' has {len(y)}")


def _check_finite(source: str, name: str, x: np.ndarray) -> None:
    for i in range(0, len(x), _CHUNK):
        block = x[i : i + _CHUNK]
        if np.isnan(block).any():
            raise DataError(f"{source}: array {name!r} contains NaN")
        if not np.isfinite(block).all():
            raise DataError(f"{source}: array {name!r} contains inf")


def _moments(x: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Train mean and std (float64, two chunked passes); per feature or one scalar per modality."""
    axes = 0 if mode == "feature" else tuple(range(x.ndim))
    count = len(x) if mode == "feature" else x.size
    mean = sum(x[i : i + _CHUNK].sum(axis=axes, dtype=np.float64) for i in range(0, len(x), _CHUNK)) / count
    var = sum(
        np.square(x[i : i + _CHUNK] - mean, dtype=np.float64).sum(axis=axes) for i in range(0, len(x), _CHUNK)
    ) / count
    std = np.sqrt(var)
    return np.asarray(mean), np.where(std < 1e-6, 1.0, std)  # constant features stay finite (become 0)


def build_dataset(
    name: str,
    source: str,
    xs: Mapping[str, np.ndarray],
    y: np.ndarray,
    splits: Sequence[np.ndarray],
    normalize: str = "feature",
    meta: Mapping[str, Any] | None = None,
    task: str | None = None,
    lengths: Mapping[str, np.ndarray] | None = None,
    inputs: Any = None,
) -> Dataset:
    """Validate whole arrays `xs`/`y`, cut them by the three index arrays `splits`, then `assemble`.
    `task` (None: inferred from `y`, see `infer_task`) says what the labels are;
    `lengths[m]` `(N,)`: the valid steps of a padded `(N, T, F)` modality `m` (or `(N, T)` text);
    `inputs`: the `data.modalities` section (each modality's type, `search.datasets.inputs`)."""
    y = np.asarray(y)
    validate_modalities(source, xs, y)
    task = check_task(source, y, task)
    types = input_types(source, xs, lengths or {}, inputs)
    lengths = {m: validate_lengths(source, m, xs[m], n, types[m][0] == "text") for m, n in (lengths or {}).items()}
    parts = {s: ({m: x[idx] for m, x in xs.items()}, y[idx]) for s, idx in zip(SPLITS, splits, strict=True)}
    cut = {s: {m: n[idx] for m, n in lengths.items()} for s, idx in zip(SPLITS, splits, strict=True)}
    return assemble(name, source, parts, normalize, meta, task, cut if lengths else None, types)


def validate_lengths(source: str, modality: str, x: np.ndarray, lengths: np.ndarray, text: bool = False) -> np.ndarray:
    """`lengths` as int64 `(N,)` in `1..T` for the padded `(N, T, F)` array `x` (`(N, T)` tokens for `text`)."""
    n = np.asarray(lengths)
    if x.ndim != (2 if text else 3):
        raise DataError(f"{source}: array {modality + '_lengths'!r} needs {modality!r} padded as (N, T, F) "
                        f"(or integer token IDs (N, T)), got shape {x.shape}" + (f" of {x.dtype}" if x.ndim == 2 else ""))
    if n.shape != (len(x),) or not np.issubdtype(n.dtype, np.integer):
        raise DataError(f"{source}: array {modality + '_lengths'!r} must hold one integer per row of {modality!r}, "
                        f"got shape {n.shape} of {n.dtype}")
    if len(n) and (n.min() < 1 or n.max() > x.shape[1]):
        raise DataError(f"{source}: array {modality + '_lengths'!r} must lie in 1..{x.shape[1]} (the padded length), "
                        f"found {int(n.min())}..{int(n.max())}")
    return n.astype(np.int64)


def assemble(
    name: str,
    source: str,
    parts: Mapping[str, tuple[Mapping[str, np.ndarray], np.ndarray]],
    normalize: str = "feature",
    meta: Mapping[str, Any] | None = None,
    task: str | None = None,
    lengths: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    types: Mapping[str, tuple[str, int]] | None = None,
) -> Dataset:
    """Dataset from already split `parts[split] = (xs, y)`: float32 copies, checked, standardised on train.

    `lengths[split][m]`: valid steps of a padded modality; its moments come from the valid
    steps only (one per feature), and its padding is 0 after standardisation. `types[m] =
    (type, buckets)` (`search.datasets.inputs`; default dense): ID modalities are coded from train."""
    lengths = {s: dict((lengths or {}).get(s, {})) for s in SPLITS}
    ys = [np.asarray(parts[s][1]) for s in SPLITS]
    task = check_task(source, np.concatenate(ys), task)
    for split, y in zip(SPLITS, ys, strict=True):
        if task in ("classification", "binary"):
            validate_labels(source, y, allow_one_class=True)
        validate_modalities(source, parts[split][0], y)
        if len(y) == 0:
            raise DataError(f"{source}: the {split} split is empty")
        if set(parts[split][0]) != set(parts["train"][0]):
            raise DataError(f"{source}: the {split} split has modalities {sorted(parts[split][0])}, "
                            f"train has {sorted(parts['train'][0])}")
    bounds = np.cumsum([0, *map(len, ys)])
    labels, classes, outputs, scale = _labels(task, ys)
    out: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    mean, std, codings = {}, {}, {}
    raw_ids: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    for mod in sorted(parts["train"][0]):
        kind, buckets = (types or {}).get(mod, ("dense", 0))
        if kind != "dense":
            for split in SPLITS:  # (N, F) or (N, T) int64, as the file holds them
                raw_ids[split][mod] = np.asarray(parts[split][0][mod]).astype(np.int64).reshape(len(parts[split][1]), -1)
            given = {s: lengths[s][mod] for s in SPLITS if mod in lengths[s]}
            codings[mod], codes, steps = code_modality(source, mod, kind, buckets, {s: raw_ids[s][mod] for s in SPLITS},
                                                       given)
            for split in SPLITS:
                out[split][mod] = codes[split]
                if steps:
                    lengths[split][mod] = steps[split]
            mean[mod], std[mod] = np.zeros((), np.float32), np.ones((), np.float32)
            continue
        for split in SPLITS:
            arr = np.array(parts[split][0][mod], dtype=np.float32)  # always a copy: memmaps stay untouched
            arr = arr.reshape(len(arr), 1) if arr.ndim == 1 else arr
            _check_finite(source, mod, arr)
            if split != "train" and arr.shape[1:] != out["train"][mod].shape[1:]:
                raise DataError(f"{source}: array {mod!r} has samples of shape {arr.shape[1:]} in {split} "
                                f"but {out['train'][mod].shape[1:]} in train")
            out[split][mod] = arr
        padded = mod in lengths["train"]
        train = _valid_steps(out["train"][mod], lengths["train"][mod]) if padded else out["train"][mod]
        mu, sd = _moments(train, normalize) if normalize != "none" else (np.zeros(()), np.ones(()))
        mean[mod], std[mod] = mu.astype(np.float32), sd.astype(np.float32)
        for split in SPLITS:
            out[split][mod] -= mean[mod]
            out[split][mod] /= std[mod]
            if padded:
                steps = np.arange(out[split][mod].shape[1])
                out[split][mod][steps[None, :] >= lengths[split][mod][:, None]] = 0.0
    labels = [labels[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return Dataset(
        name=name,
        **out,
        y_train=labels[0],
        y_val=labels[1],
        y_test=labels[2],
        num_classes=outputs,
        shapes={m: tuple(out["train"][m].shape[1:]) for m in sorted(out["train"])},
        mean=mean,
        std=std,
        classes=tuple(c.item() if hasattr(c, "item") else c for c in classes),
        meta=dict(meta or {}, source=source),
        task=task,
        target_mean=None if scale is None else scale[0],
        target_std=None if scale is None else scale[1],
        lengths={s: {m: np.asarray(n, dtype=np.int64) for m, n in lengths[s].items()} for s in SPLITS}
        if any(lengths.values()) else {},
        codings=codings,
        raw_ids=raw_ids if codings else {},
    )


def _valid_steps(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The valid frames of a padded `(N, T, F)` array, `(sum(lengths), F)`: moments per feature."""
    return x[np.arange(x.shape[1])[None, :] < lengths[:, None]]


def _labels(task: str, ys: Sequence[np.ndarray]) -> tuple[np.ndarray, Sequence[Any], int, Any]:
    """All splits' labels as the model trains on them, the classes, the number of outputs, and
    regression's target scale (train mean and std)."""
    y_all = np.concatenate(ys)
    if task in ("classification", "binary"):
        y_all = y_all.astype(np.int64) if y_all.dtype.kind in "fb" else y_all  # integral floats, as CSVs store them
        classes, codes = np.unique(y_all, return_inverse=True)
        return codes.astype(np.int64), classes, len(classes), None
    y_all = y_all.astype(np.float32).reshape(len(y_all), -1)
    if task == "multilabel":
        return y_all, tuple(range(y_all.shape[1])), y_all.shape[1], None
    train = y_all[: len(ys[0])].astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std < 1e-12, 1.0, std)
    return ((y_all - mean) / std).astype(np.float32), (), y_all.shape[1], (mean.astype(np.float32), std.astype(np.float32))
