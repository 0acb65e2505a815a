"""Task types: each brings its loss, the score `fit` selects weights on, and its metrics.

| task           | labels `y`                 | outputs            | loss                    | metrics                          |
|----------------|----------------------------|--------------------|-------------------------|----------------------------------|
| classification | int `(N,)`                 | C logits           | cross-entropy           | accuracy, balanced acc., macro-F1 |
| binary         | int `(N,)`, two classes    | 2 logits           | cross-entropy (= logistic) | AUC, accuracy, balanced acc., macro-F1 |
| multilabel     | 0/1 `(N, L)`               | L logits           | binary cross-entropy    | mean per-label AUC (and each label's), subset accuracy, macro-F1 |
| regression     | float `(N,)` or `(N, K)`   | K values (standardised targets) | mean squared error | R², MAE, RMSE, Pearson r |

The score `fit` uses for early stopping and best-val weights: accuracy (classification, as
before), AUC (binary, multi-label), minus the mean squared error (regression: the val loss).
Regression metrics are in the targets' own units (`scale`: the train mean and std that
standardised them). Names match `search.objectives.TASK_METRICS`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from search.objectives import TASK_METRICS, TASKS

__all__ = ["TASKS", "Task", "auc", "get_task"]


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


def _binary(out: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"auc": auc(out[:, 1] - out[:, 0], y == 1), **_classification(out, y)}


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


def _regression(out: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Columns averaged: R² per target (1 - SSE/SST), MAE, RMSE, Pearson r."""
    out, y = out.reshape(len(out), -1), y.reshape(len(y), -1)
    err = out - y
    sst = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    r2 = 1.0 - (err ** 2).sum(axis=0) / np.where(sst > 0, sst, np.nan)
    return {"r2": float(np.nanmean(r2)), "mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "pearson": float(np.nanmean([pearson(out[:, j], y[:, j]) for j in range(y.shape[1])]))}


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
