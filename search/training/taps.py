"""The tap cache: every tap of every sample, computed once by the frozen backbones.

Candidates then train on these arrays and never run a backbone (the MFAS practice and
the search's main speed lever). A `TapCache` is plain, picklable data — float32 numpy
arrays in dicts — made read-only on purpose: the search shares it through Ray's object
store, which hands it out read-only, so nothing may write into it anyway.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from fusion_ops.backbones import Backbone
from fusion_ops.base import lengths_key
from fusion_ops.model import flat_taps
from search.datasets import Dataset
from search.datasets.common import SPLITS, split_for
from spaces.spec import make_tap, parse_tap


@dataclass(frozen=True, eq=False)
class TapCache:
    """`taps[split][tap] -> (N_split, *tap_shapes[tap])` float32, `labels[split]` as the dataset
    keeps them (int64 classes; float32 multi-label or standardised regression targets).
    `task` and `target_scale` are the dataset's (`search.training.tasks`).

    `lengths[split][tap] -> (N_split,)` int64: the real tokens of a padded token tap (padded
    sequences only; absent otherwise); `tensors(split)` hands them out as `lengths_key(tap)`.

    `holdout_rows`: the rows of the dataset's val split moved to a fourth split, `holdout`
    (`with_holdout`), which no training and no strategy reads: it only chooses the answer
    among the front (`search.baselines.best_front_point`). None: no holdout.
    """

    taps: dict[str, dict[str, np.ndarray]]
    labels: dict[str, np.ndarray]
    tap_shapes: dict[str, tuple[int, ...]]
    num_classes: int
    task: str = "classification"
    target_scale: tuple[np.ndarray, np.ndarray] | None = None
    lengths: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    holdout_rows: np.ndarray | None = None

    @classmethod
    def from_backbones(
        cls,
        dataset: Dataset,
        backbones: Mapping[str, Backbone],
        *,
        only: Iterable[str] | None = None,
        batch_size: int = 1024,
        device: torch.device | str = "cpu",
    ) -> TapCache:
        """Run each backbone once over every split (eval mode, no grad, in batches), on `device`;
        the cache holds CPU arrays whichever it was.

        `only` keeps just those taps (e.g. the depths a search space offers), to save memory.
        """
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
        taps, lengths = {}, {}
        for s in SPLITS:
            taps[s], lengths[s] = _split_taps(dataset.split(s)[0], backbones, shapes, batch_size, dataset.lengths_of(s),
                                              torch.device(device))
        task = getattr(dataset, "task", "classification")
        dtype = np.int64 if task in ("classification", "binary") else np.float32
        labels = {s: _read_only(np.asarray(dataset.split(s)[1], dtype=dtype)) for s in SPLITS}
        return cls(taps, labels, shapes, dataset.num_classes, task, getattr(dataset, "target_scale", None),
                   lengths if any(lengths.values()) else {})

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
        )

    def with_holdout(self, rows: np.ndarray) -> TapCache:
        """The cache with val rows `rows` (indices into the dataset's val split) moved to a
        `holdout` split; `rows` empty: the cache as it is."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if not len(rows):
            return self
        if self.holdout_rows is not None:
            raise ValueError("this tap cache already has a holdout split")
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

    def tensors(self, split: str) -> tuple[dict[str, Tensor], Tensor]:
        """`({tap: (N, ...)}, labels (N,))` of `split` as torch tensors (copies: the arrays stay untouched)."""
        if split not in self.taps:
            raise KeyError(f"unknown split {split!r}; known: {', '.join(self.taps)}")
        xs = {t: torch.tensor(a) for t, a in self.taps[split].items()}
        xs.update({lengths_key(t): torch.tensor(n) for t, n in self.lengths.get(split, {}).items()})
        return xs, torch.tensor(self.labels[split])


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


@torch.no_grad()
def _split_taps(
    inputs: Mapping[str, np.ndarray],
    backbones: Mapping[str, Backbone],
    shapes: Mapping[str, tuple[int, ...]],
    batch_size: int,
    lengths: Mapping[str, np.ndarray] | None = None,
    device: torch.device | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every kept tap of one split, `{tap: (N, *shape)}`, filled batch by batch, and the
    real-token counts `{tap: (N,)}` of the padded token taps."""
    out: dict[str, np.ndarray] = {}
    out_lengths: dict[str, np.ndarray] = {}
    lengths = lengths or {}
    for m, x in sorted(inputs.items()):
        backbone = backbones[m]
        was_training = backbone.training
        home = next(iter(backbone.parameters()), torch.zeros(())).device
        backbone.eval().to(device or home)
        kept = [(d, make_tap(m, d)) for d in backbone.depths if make_tap(m, d) in shapes]
        arrays = {t: np.empty((len(x), *shapes[t]), dtype=np.float32) for _, t in kept}
        n = None if m not in lengths else torch.as_tensor(lengths[m], dtype=torch.long)
        if n is not None:
            per_depth = backbone.tap_lengths(n)
            out_lengths.update({t: _read_only(per_depth[d].numpy().astype(np.int64))
                                for d, t in kept if per_depth[d] is not None})
        for i in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.array(x[i : i + batch_size], dtype=np.float32)).to(device or home)
            batch_n = None if n is None else n[i : i + batch_size].to(device or home)
            batch_taps = backbone.forward_taps(batch, batch_n)
            for d, t in kept:
                arrays[t][i : i + batch_size] = batch_taps[d].cpu().numpy()
        backbone.train(was_training).to(home)
        out.update({t: _read_only(a) for t, a in arrays.items()})
    return out, out_lengths
