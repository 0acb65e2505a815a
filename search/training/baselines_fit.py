"""Training the baselines a run records before its search (`baselines.json`).

Apart from `search.baselines` (the pure record and comparison) because this part needs
torch and scikit-learn, and `search.runstore.store` must stay light. Every neural baseline trains
with the run's `train:` config through the same code as candidates (`fit`,
`evaluate_candidate`), once per seed, and records the mean and spread over seeds.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fusion_ops import Backbone, count_flops, count_params, list_fusions
from fusion_ops.backbones import seeded_init
from search import baselines as bl
from search.datasets import Dataset
from search.runstore.store import RunStore, to_jsonable
from search.training.taps import TapCache
from search.training.tasks import Task, get_task
from search.training.train import (
    TrainConfig,
    accuracy,
    evaluate_candidate,
    fit,
    scored_splits,
    task_metrics,
    task_of,
)
from spaces.spec import ArchSpec, CellSpec, make_tap

Say = Callable[[str], Any]
LATE_WIDTH = 32  # output width of the late-fusion baselines' cell: a hand-built default, not searched
C_GRID = tuple(float(c) for c in np.logspace(-3, 2, 6))  # logistic regression strengths tried on val


def seeds_of(settings: Any) -> int:
    """How many seeds each neural baseline trains with: as many as a confirmed front candidate
    gets (1 + `search.confirm`), so that the two compare like for like."""
    n = getattr(settings, "confirm", 0)
    return 1 + (n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else 0)


# ------------------------------------------------------------------ logistic regression
def flat_inputs(xs: Mapping[str, np.ndarray]) -> np.ndarray:
    """`{modality: (N, ...)}` -> `(N, d)`: every modality flattened, concatenated in sorted order."""
    return np.concatenate([np.asarray(xs[m], dtype=np.float64).reshape(len(xs[m]), -1) for m in sorted(xs)], axis=1)


def logistic_regression(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                        test: tuple[np.ndarray, np.ndarray], grid: Sequence[float] = C_GRID,
                        task: Task | None = None,
                        holdout: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """The task's L2-regularised linear model on standardised features, strength chosen on val
    by the task's score (first best in `grid`): logistic regression for classes (one per label
    for multi-label), ridge regression (`alpha = 1 / C`, the same squared loss candidates train
    with) for regression targets.

    Returns the val and test metrics (`val_<metric>`, `test_<metric>`), the chosen `C`, the val
    score per `C`, params (weights + biases) and FLOPs per sample (2 per multiply-add: 2 * d *
    outputs, where sklearn keeps one output for two classes and one per class otherwise; the
    standardisation is folded into the weights and not counted).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler

    task = task or get_task("classification")
    # sparse inputs (one-hot IDs beside features the dataset standardised) are used as they are
    scale = (lambda x: x) if hasattr(train[0], "tocsr") else StandardScaler().fit(train[0]).transform
    xtr, xva, xte = (scale(x) for x in (train[0], val[0], test[0]))
    fits, scores = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in grid:
            model = _LINEAR[task.name](c).fit(xtr, train[1])
            fits.append(model)
            scores.append(task.score(_outputs(model, xva, task), torch.tensor(val[1])))
    i = int(np.argmax(scores))
    model = fits[i]
    scored = [("val", (xva, val[1])), ("test", (xte, test[1]))]
    if holdout is not None:  # scored only: the holdout chooses nothing here
        scored.append(("holdout", (scale(holdout[0]), holdout[1])))
    metrics = {f"{split}_{k}": v for split, (x, y) in scored
               for k, v in task.metrics(_outputs(model, x, task), torch.tensor(y)).items()}
    if holdout is not None:
        metrics["holdout_n"] = len(holdout[1])
    coef, intercept = _weights(model)
    return {"C": float(grid[i]), "val_by_C": dict(zip(map(float, grid), scores, strict=True)), **metrics,
            "params_total": int(coef + intercept), "flops_total": int(2 * coef)}


def _logistic(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(C=c, max_iter=2000)


def _per_label(c: float) -> Any:
    from sklearn.multioutput import MultiOutputClassifier
    return MultiOutputClassifier(_logistic(c))


def _ridge(c: float) -> Any:
    from sklearn.linear_model import Ridge
    return Ridge(alpha=1.0 / c)


_LINEAR = {"classification": _logistic, "binary": _logistic, "multilabel": _per_label, "regression": _ridge}


def _outputs(model: Any, x: np.ndarray, task: Task) -> torch.Tensor:
    """What the task's metrics read: log-probabilities (classes), logits per label, or predictions."""
    if task.name == "regression":
        out = model.predict(x)
    elif task.name == "multilabel":
        out = np.stack([est.decision_function(x) for est in model.estimators_], axis=1)
    else:
        out = np.log(np.clip(model.predict_proba(x), 1e-300, None))
    return torch.as_tensor(np.asarray(out, dtype=np.float64).reshape(x.shape[0], -1))


def _weights(model: Any) -> tuple[int, int]:
    models = getattr(model, "estimators_", [model])
    return (sum(int(np.size(m.coef_)) for m in models), sum(int(np.size(m.intercept_)) for m in models))


def id_columns(dataset: Dataset, split: str) -> tuple[Any, int]:
    """The ID modalities of `split` as a sparse 0/1 (counts, for text) matrix: one column per
    row of each field's table (one-hot; the classic CTR input) or of the text vocabulary (a bag
    of words, padding dropped); and how many of its columns one sample reads (F or T each)."""
    from scipy import sparse

    blocks, reads = [], 0
    for m in sorted(dataset.codings):
        codes = np.asarray(dataset.split(split)[0][m], dtype=np.int64)
        rows = dataset.codings[m].rows
        cols = codes + np.cumsum([0, *rows[:-1]])[None, :]  # text: one vocabulary, one offset for every step
        keep = codes > 0 if dataset.codings[m].type == "text" else np.ones(codes.shape, bool)
        r = np.broadcast_to(np.arange(len(codes))[:, None], codes.shape)
        blocks.append(sparse.csr_matrix((np.ones(int(keep.sum())), (r[keep], cols[keep])),
                                        shape=(len(codes), int(sum(rows)))))
        reads += codes.shape[1]
    return sparse.hstack(blocks, format="csr"), reads


def design_matrix(dataset: Dataset, split: str) -> tuple[Any, int]:
    """The linear baseline's inputs: the dense modalities flattened, then `id_columns` (sparse
    when there are ID modalities), and how many numbers one sample's prediction reads."""
    xs = dataset.split(split)[0]
    dense = {m: x for m, x in xs.items() if m not in dataset.codings}
    x = flat_inputs(dense) if dense else np.zeros((len(dataset.split(split)[1]), 0))
    if not dataset.codings:
        return x, x.shape[1]
    from scipy import sparse

    ids, reads = id_columns(dataset, split)
    return sparse.hstack([sparse.csr_matrix(x), ids], format="csr"), x.shape[1] + reads


def linear_baseline(dataset: Dataset, holdout_rows: np.ndarray | None = None) -> dict[str, Any]:
    """The `logreg` record: the task's linear model on the concatenated raw inputs (ID modalities
    one-hot, `design_matrix`); the val rows `holdout_rows` (the run's holdout,
    `TapCache.holdout_rows`) are scored apart, not used to choose the strength."""
    start = time.perf_counter()
    (xtr, reads), (xva, _), (xte, _) = (design_matrix(dataset, s) for s in ("train", "val", "test"))
    ytr, yva, yte = (np.asarray(dataset.split(s)[1]) for s in ("train", "val", "test"))
    held = None
    if holdout_rows is not None and len(holdout_rows):
        keep = np.setdiff1d(np.arange(len(yva)), holdout_rows)
        held, (xva, yva) = (xva[holdout_rows], yva[holdout_rows]), (xva[keep], yva[keep])
    task = get_task(dataset.task, dataset.target_scale)
    r = logistic_regression((xtr, ytr), (xva, yva), (xte, yte), task=task, holdout=held)
    runs = [{k: v for k, v in r.items() if k.startswith(("val_", "test_", "holdout_")) and k != "val_by_C"}]
    flops = r["flops_total"]
    if dataset.codings:  # a one-hot column costs a lookup when its ID is present: count the columns a sample reads
        flops = flops // xtr.shape[1] * reads
    return _record("logreg", "linear", "basic", runs, r["params_total"],
                   flops, None, start, C=r["C"], val_by_C=r["val_by_C"])


# ------------------------------------------------------------------ neural baselines
class TapLinear(nn.Module):
    """A linear classifier on one cached tap: `{tap: (B, d) or (B, T, d)} -> (B, C)` (tokens mean-pooled)."""

    def __init__(self, tap: str, dim: int, num_classes: int) -> None:
        super().__init__()
        self.tap = tap
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, taps: Mapping[str, Tensor]) -> Tensor:
        x = taps[self.tap]
        return self.linear(x.mean(dim=1) if x.dim() == 3 else x)  # (B, d)


def last_taps(backbones: Mapping[str, Backbone]) -> dict[str, str]:
    """`{modality: its backbone's last tap}` (the embedding late fusion reads)."""
    return {m: make_tap(m, len(b.tap_shapes) - 1) for m, b in sorted(backbones.items())}


def late_spec(op: str, taps: Sequence[str], width: int = LATE_WIDTH) -> ArchSpec:
    """One `op` cell at its default arguments on the embeddings, then the linear classifier."""
    return ArchSpec("late", (CellSpec(tuple(taps), op, width),))


def unimodal_baseline(modality: str, backbone: Backbone, taps: TapCache, cfg: TrainConfig,
                      n_seeds: int) -> dict[str, Any]:
    """`<modality> alone`: the frozen backbone and a linear head on its last tap, trained by `fit`."""
    start = time.perf_counter()
    tap = last_taps({modality: backbone})[modality]
    sub = taps.subset([tap])
    train, val, test = (sub.tensors(s) for s in ("train", "val", "test"))
    runs = []
    task = task_of(taps)
    scored = scored_splits(sub)
    for seed in range(n_seeds):
        with seeded_init(torch.Generator().manual_seed(seed)):
            model = TapLinear(tap, taps.tap_shapes[tap][-1], taps.num_classes)
        result = fit(model, train, val, dataclasses.replace(cfg, seed=seed), task=task)
        run = task_metrics(task, model, scored) if result.status == "ok" else {}
        if result.status == "ok" and task.name == "classification":  # as candidates record it
            run.update(val_accuracy=result.val_accuracy, test_accuracy=accuracy(model, test))
        runs.append(run)
    with torch.enable_grad():  # count_flops needs grad on (see fusion_ops.cost)
        params = count_params(backbone) + count_params(model)
        flops = (count_flops(backbone, torch.zeros(1, *backbone.input_shape))
                 + count_flops(model, {tap: torch.zeros(1, *taps.tap_shapes[tap])}))
    return _record(f"{modality} alone", "unimodal", "basic", runs, params, flops, None, start)


def spec_baseline(name: str, kind: str, panel: str, spec: ArchSpec, taps: TapCache, cfg: TrainConfig,
                  backbones: Mapping[str, Backbone], n_seeds: int,
                  trained: dict[str, dict[str, Any]] | None = None, latency: bool = False) -> dict[str, Any]:
    """A baseline that is an ArchSpec, trained and costed exactly like a candidate, once per seed
    (`cfg.seed`, `+ 1`, ...: a confirmed candidate's seeds); `seed_runs` keeps each seed's metrics, as a
    trial records them (`search.baselines.seed_trials`). A spec already in `trained` (by arch
    id) is not trained again (training is deterministic). `latency`: measure it too, as the run's trials do."""
    if trained is not None and spec.arch_id in trained:
        return {**trained[spec.arch_id], "name": name, "kind": kind, "panel": panel}
    start = time.perf_counter()
    runs = [evaluate_candidate(spec, taps, dataclasses.replace(cfg, seed=cfg.seed + s), backbones=backbones,
                               latency=latency) for s in range(n_seeds)]
    costed = [r for r in runs if "params_total" in r]
    reasons = sorted({r["reason"] for r in runs if r["status"] != "ok"})
    scored = [{k: v for k, v in r.items() if k.startswith(("val_", "test_", "holdout_"))} for r in runs]
    record = _record(name, kind, panel, scored,
                   costed[0]["params_total"] if costed else None, costed[0]["flops_total"] if costed else None,
                   spec.to_dict(), start, seed_runs=[to_jsonable(r) for r in runs],
                   **({"reason": "; ".join(reasons)} if reasons else {}))
    if trained is not None:
        trained[spec.arch_id] = record
    return record


def _stats(values: Sequence[float]) -> tuple[float | None, float | None, int]:
    """Mean and sample std (None for fewer than two) of the finite values, and their count."""
    ok = [v for v in values if v is not None and math.isfinite(v)]
    if not ok:
        return None, None, 0
    return float(np.mean(ok)), (float(np.std(ok, ddof=1)) if len(ok) > 1 else None), len(ok)


def _record(name: str, kind: str, panel: str, runs: Sequence[Mapping[str, float]], params: Any,
            flops: Any, spec: dict[str, Any] | None, start: float, **extra: Any) -> dict[str, Any]:
    """A baseline record: each `val_*`/`test_*` metric of `runs` (one per seed) as its mean and
    `<key>_std`; `val_std`/`test_std` and `n_seeds` are accuracy's (any metric's when the task
    has no accuracy), as records have always had them."""
    keys = sorted({k for r in runs for k in r})
    out: dict[str, Any] = {"name": name, "kind": kind, "panel": panel}
    n = 0
    for key in keys:
        mean, std, count = _stats([r.get(key, math.nan) for r in runs])
        out[key], out[f"{key}_std"] = mean, std
        n = max(n, count)
    for split in ("val", "test"):
        out.setdefault(f"{split}_accuracy", None)
        out[f"{split}_std"] = out.get(f"{split}_accuracy_std")
    return {**out, "n_seeds": n, "params_total": None if params is None else int(params),
            "flops_total": None if flops is None else int(flops), "spec": spec,
            "seconds": time.perf_counter() - start, **extra}


# ------------------------------------------------------------------ a run's baselines
def train_baselines(dataset: Dataset, backbones: Mapping[str, Backbone], taps: TapCache, cfg: TrainConfig, *,
                    panel: str = "basic", n_seeds: int = 1, latency: bool = False,
                    say: Say = print) -> list[dict[str, Any]]:
    """Every baseline of `panel` (`basic`, or `classic` = basic + one late cell per registered
    operator), each reported by `say` as it finishes; `latency`: the spec baselines measure it."""
    if panel not in bl.PANELS:
        raise ValueError(f"unknown baselines panel {panel!r}; known: {', '.join(bl.PANELS)}")
    if panel == "none":
        return []
    needed = list(last_taps(backbones).values())
    if not set(needed) <= set(taps.tap_shapes):  # the space may not offer the last depth
        rows = taps.holdout_rows
        taps = TapCache.from_backbones(dataset, backbones, only=needed)
        taps = taps if rows is None else taps.with_holdout(rows)
    taps = taps.subset(needed)
    trained: dict[str, dict[str, Any]] = {}  # arch_id -> record: `classic concat` is `late concat` again
    jobs: list[Callable[[], dict[str, Any]]] = [
        *(lambda m=m: unimodal_baseline(m, backbones[m], taps, cfg, n_seeds) for m in sorted(backbones)),
        lambda: linear_baseline(dataset, taps.holdout_rows),
        lambda: spec_baseline("late concat", "late_concat", "basic", late_spec("concat", needed), taps, cfg,
                              backbones, n_seeds, trained, latency),
    ]
    if panel == "classic":
        jobs += [lambda op=op: spec_baseline(f"classic {op}", "classic", "classic", late_spec(op, needed), taps,
                                             cfg, backbones, n_seeds, trained, latency) for op in list_fusions()]
    say(f"baselines ({panel} panel, {n_seeds} seed{'s' if n_seeds > 1 else ''} each): {len(jobs)} to train")
    out = []
    for job in jobs:
        record = job()
        say(describe(record))
        out.append(record)
    return out


def describe(record: Mapping[str, Any]) -> str:
    """`baseline logreg: val 0.881 test 0.870 (1 seed, 2.1 s)` — the progress line of one baseline."""
    def acc(v: Any, s: Any) -> str:
        return "-" if v is None else f"{v:.3f}" + ("" if s is None else f"±{s:.3f}")

    extra = f", C={record['C']:g}" if "C" in record else ""
    reason = f"; failed: {record['reason']}" if record.get("reason") else ""
    metric = next((m for m in ("accuracy", "r2", "auc") if record.get(f"val_{m}") is not None), "accuracy")
    name = "" if metric == "accuracy" else f"{metric} "
    return (f"baseline {record['name']}: {name}val {acc(record[f'val_{metric}'], record.get(f'val_{metric}_std'))} "
            f"test {acc(record[f'test_{metric}'], record.get(f'test_{metric}_std'))} ({record['n_seeds']} seed"
            f"{'s' if record['n_seeds'] != 1 else ''}{extra}, {record['seconds']:.1f} s){reason}")


def ensure_baselines(store: RunStore, dataset: Dataset, backbones: Mapping[str, Backbone], taps: TapCache,
                     cfg: TrainConfig, *, panel: str = "basic", n_seeds: int = 1, latency: bool = False,
                     say: Say = print) -> list[dict[str, Any]] | None:
    """The run's baselines: those stored in `baselines.json` (a resumed run never retrains
    them), else trained now and written there. None when `panel` is `none`."""
    stored = store.baselines()
    if stored is not None:
        say(f"baselines: {len(stored)} from {bl.FILE}")
        return stored
    if panel == "none":
        return None
    records = train_baselines(dataset, backbones, taps, cfg, panel=panel, n_seeds=n_seeds, latency=latency, say=say)
    store.write_json(bl.FILE, records)
    return records
