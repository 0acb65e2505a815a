"""Task types: each brings its loss, the score `fit` selects weights on, and its metrics.

| task           | labels `y`                 | outputs            | loss                    | metrics                          |
|----------------|----------------------------|--------------------|-------------------------|----------------------------------|
| classification | int `(N,)`                 | C logits           | cross-entropy           | accuracy, balanced acc., macro-F1 |
| binary         | int `(N,)`, two classes    | 2 logits           | cross-entropy (= logistic) | AUC, accuracy, balanced acc., macro-F1, log loss |
| multilabel     | 0/1 `(N, L)`               | L logits           | binary cross-entropy    | mean per-label AUC (and each label's), subset accuracy, macro-F1 |
| regression     | float `(N,)` or `(N, K)`   | K values (standardised targets) | mean squared error | R², MAE, RMSE, Pearson r, Acc-2, F1-2 |

The score `fit` uses for early stopping and best-val weights: accuracy (classification, as
before), AUC (binary, multi-label), minus the mean squared error (regression: the val loss).
Regression metrics are in the targets' own units (`scale`: the train mean and std that
standardised them). Log loss is the mean negative log-likelihood of the true class (softmax of
the two logits). Acc-2 and F1-2 are the sentiment field's (CMU-MOSI) sign scores: over the
samples whose target is not 0, the accuracy of `prediction > 0` against `target > 0`, and the F1
of those two classes weighted by their support. Names match `search.objectives.TASK_METRICS`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from search.objectives import TASK_METRICS, TASKS

__all__ = ["TASKS", "Task", "auc", "get_task", "log_loss", "sign_scores"]

# a target within this share of its column's largest |target| counts as 0: unscaling in float32
# (standardised target * std + mean) leaves a true 0 a few ulp of the mean away from 0
_ZERO = 1e-5


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties half
    (the Mann-Whitney statistic, from average ranks). NaN with only one class present."""
    scores, positive = np.asarray(scores, dtype=float), np.asarray(positive).astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0 or not np.isfinite(scores).all():
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _class_metrics(pred: np.ndarray, y: np.ndarray, n: int) -> dict[str, float]:
    recalls, f1s = [], []
    for c in range(n):
        tp = float(np.sum((pred == c) & (y == c)))
        fp, fn = float(np.sum((pred == c) & (y != c))), float(np.sum((pred != c) & (y == c)))
        if tp + fn > 0:
            recalls.append(tp / (tp + fn))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0)
    return {"accuracy": float(np.mean(pred == y)), "balanced_accuracy": float(np.mean(recalls)),
            "macro_f1": float(np.mean(f1s))}


def _classification(out: np.ndarray, y: np.ndarray) -> dict[str, float]:
    bad = ~np.isfinite(out).all(axis=1)  # non-finite logits count as wrong
    pred = np.where(bad, -1, out.argmax(axis=1))
    return _class_metrics(pred, y, out.shape[1])


def log_loss(out: np.ndarray, y: np.ndarray) -> float:
    """Mean of `-log softmax(out)[i, y_i]` over the samples; NaN if a logit is not finite."""
    if not np.isfinite(out).all():
        return float("nan")
    top = out.max(axis=1)
    lse = top + np.log(np.exp(out - top[:, None]).sum(axis=1))  # log Σ exp, shifted: no overflow
    return float(np.mean(lse - out[np.arange(len(y)), y]))


def _binary(out: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"auc": auc(out[:, 1] - out[:, 0], y == 1), **_classification(out, y), "logloss": log_loss(out, y)}


def _multilabel(out: np.ndarray, y: np.ndarray) -> dict[str, float]:
    per = [auc(out[:, j], y[:, j]) for j in range(y.shape[1])]
    pred = out > 0
    f1 = [_class_metrics(pred[:, j].astype(int), y[:, j].astype(int), 2)["macro_f1"] for j in range(y.shape[1])]
    return {"auc": float(np.nanmean(per)) if not np.isnan(per).all() else float("nan"),
            "accuracy": float(np.mean((pred == (y > 0.5)).all(axis=1))), "macro_f1": float(np.mean(f1)),
            **{f"auc_{j}": v for j, v in enumerate(per)}}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def sign_scores(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Acc-2 and weighted F1-2 of one target column (see the module doc); NaN if no target is
    non-zero or a prediction is not finite."""
    keep = np.abs(y) > _ZERO * np.abs(y).max() if len(y) else np.zeros(0, bool)
    if not keep.any() or not np.isfinite(pred).all():
        return float("nan"), float("nan")
    p, t = pred[keep] > 0, y[keep] > 0
    f1 = 0.0
    for c in (False, True):
        tp, fp, fn = np.sum((p == c) & (t == c)), np.sum((p == c) & (t != c)), np.sum((p != c) & (t == c))
        f1 += np.sum(t == c) * (2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(p == t)), float(f1 / len(t))


def _regression(out: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Columns averaged: R² per target (1 - SSE/SST), MAE, RMSE, Pearson r, Acc-2, F1-2."""
    out, y = out.reshape(len(out), -1), y.reshape(len(y), -1)
    err = out - y
    sst = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    r2 = 1.0 - (err ** 2).sum(axis=0) / np.where(sst > 0, sst, np.nan)
    signs = np.array([sign_scores(out[:, j], y[:, j]) for j in range(y.shape[1])])  # (K, 2): Acc-2, F1-2
    return {"r2": float(np.nanmean(r2)), "mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "pearson": float(np.nanmean([pearson(out[:, j], y[:, j]) for j in range(y.shape[1])])),
            "acc2": _finite_mean(signs[:, 0]), "f1_2": _finite_mean(signs[:, 1])}


def _finite_mean(v: np.ndarray) -> float:
    """The mean of the finite values (NaN if none is)."""
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


@dataclass(frozen=True)
class Task:
    """A task type; `scale = (mean, std)` of regression targets (outputs are standardised)."""

    name: str
    loss: Callable[[Tensor, Tensor], Tensor]
    _metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]]
    selection: str  # the metric `fit` keeps the best weights of ("" for regression: minus the val MSE)
    scale: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def metric_names(self) -> tuple[str, ...]:
        return TASK_METRICS[self.name]

    def metrics(self, out: Tensor, y: Tensor) -> dict[str, float]:
        """Every metric of the task for outputs `out` (N, outputs) against labels `y`."""
        out, y = out.detach().cpu(), y.detach().cpu()
        if self.scale is not None:  # back to the targets' units, in float32 as an export computes it
            mean, std = (torch.as_tensor(v, dtype=torch.float32) for v in self.scale)
            out, y = out.float() * std + mean, y.reshape(len(y), -1).float() * std + mean
        return self._metrics(out.double().numpy(), y.numpy())

    def score(self, out: Tensor, y: Tensor) -> float:
        """What `fit` maximises on val: the selection metric, or minus the val MSE."""
        if self.name == "classification":  # exactly the accuracy fit has always used
            right = (out.argmax(1) == y) & torch.isfinite(out).all(1)
            return float(right.float().mean())
        if not self.selection:
            return -float(F.mse_loss(out.reshape(y.shape[0], -1), y.reshape(y.shape[0], -1)))
        return self.metrics(out, y)[self.selection]


def _bce(out: Tensor, y: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(out, y.to(out.dtype))


def _mse(out: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(out.reshape(y.shape[0], -1), y.reshape(y.shape[0], -1).to(out.dtype))


_TASKS: dict[str, Task] = {
    "classification": Task("classification", F.cross_entropy, _classification, "accuracy"),
    "binary": Task("binary", F.cross_entropy, _binary, "auc"),
    "multilabel": Task("multilabel", _bce, _multilabel, "auc"),
    "regression": Task("regression", _mse, _regression, ""),
}
assert set(_TASKS) == set(TASKS), "task table out of step with search.objectives"


def get_task(name: str, scale: tuple[np.ndarray, np.ndarray] | None = None) -> Task:
    """The task type `name` (regression with the targets' train `scale`)."""
    task = _TASKS[name]
    return task if scale is None else Task(task.name, task.loss, task._metrics, task.selection,
                                           (np.asarray(scale[0], dtype=float), np.asarray(scale[1], dtype=float)))
