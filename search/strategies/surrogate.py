"""Accuracy surrogate for model-based search: a bootstrap ensemble of small MLPs.

MFAS fits an LSTM over its fusion layers; here every spec already has a fixed-length
encoding (`SearchSpace.encode`, one slot per cell), so an MLP over it does the same job.
Several members, each fitted on a bootstrap resample, give a spread (`std`) that a
search can use to explore where the surrogate is unsure. Seeded, full-batch training:
the same data and seed give the same predictions.
"""
from __future__ import annotations

import numpy as np
import torch

from search.training.adam import Adam


class Surrogate:
    """Predicts accuracy from encoded specs: `fit(x, y)`, then `predict(x) -> (mean, std)`."""

    def __init__(
        self,
        n_features: int,
        *,
        seed: int,
        members: int = 4,
        hidden: int = 64,
        steps: int = 200,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
    ) -> None:
        self.n_features, self.seed, self.members, self.hidden = n_features, seed, members, hidden
        self.steps, self.lr, self.weight_decay = steps, lr, weight_decay
        self._params: list[torch.Tensor] | None = None
        self._y_mean, self._y_std = 0.0, 1.0
        self._fits = 0

    def _init(self, gen: torch.Generator) -> list[torch.Tensor]:
        """Per member: (d -> h -> h -> 1) weights and biases, uniform(+-1/sqrt(fan_in)) like nn.Linear."""
        m, h = self.members, self.hidden
        params = []
        for fan_in, fan_out in ((self.n_features, h), (h, h), (h, 1)):
            bound = 1.0 / max(fan_in, 1) ** 0.5
            params.append((torch.rand(m, fan_in, fan_out, generator=gen) * 2 - 1) * bound)  # (M, in, out)
            params.append((torch.rand(m, 1, fan_out, generator=gen) * 2 - 1) * bound)  # (M, 1, out)
        return [p.requires_grad_() for p in params]

    @staticmethod
    def _forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (M, N): every member's standardised prediction."""
        w1, b1, w2, b2, w3, b3 = params
        hid = torch.relu(x.unsqueeze(0) @ w1 + b1)  # (M, N, h)
        hid = torch.relu(hid @ w2 + b2)  # (M, N, h)
        return (hid @ w3 + b3).squeeze(-1)  # (M, N)

    def fit(self, x: np.ndarray, y: np.ndarray) -> list[float]:
        """Refit from scratch on `x` (N, d) and accuracies `y` (N,); returns the training MSE
        (standardised units, mean over members) at every step."""
        x_t = torch.as_tensor(np.asarray(x, dtype=np.float32))
        y = np.asarray(y, dtype=np.float64)
        if x_t.ndim != 2 or x_t.shape != (len(y), self.n_features) or len(y) < 1:
            raise ValueError(f"fit: expected x of shape (N, {self.n_features}) and y of shape (N,), got "
                             f"{tuple(x_t.shape)} and {y.shape}")
        self._y_mean, self._y_std = float(y.mean()), float(max(y.std(), 1e-6))
        y_t = torch.as_tensor((y - self._y_mean) / self._y_std, dtype=torch.float32)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self._fits)
        self._fits += 1
        params = self._init(gen)
        n = len(y)
        # bootstrap: member i weights each point by how often its resample drew it
        draws = torch.randint(n, (self.members, n), generator=gen)
        weights = torch.zeros(self.members, n).scatter_add_(1, draws, torch.ones(self.members, n))  # (M, N)
        if self.members == 1:
            weights = torch.ones(1, n)
        opt = Adam(params, lr=self.lr, weight_decay=self.weight_decay, fused=False)  # torch.optim.Adam's default on the CPU
        losses = []
        for _ in range(self.steps):
            err = (self._forward(params, x_t) - y_t) ** 2  # (M, N)
            loss = ((err * weights).sum(1) / weights.sum(1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        self._params = [p.detach() for p in params]
        return losses

    @property
    def fitted(self) -> bool:
        return self._params is not None

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread (std over members) of the predicted accuracy of each row of `x`."""
        if self._params is None:
            raise RuntimeError("predict: the surrogate has not been fitted yet")
        with torch.no_grad():
            out = self._forward(self._params, torch.as_tensor(np.asarray(x, dtype=np.float32)))
        out = out.double().numpy() * self._y_std + self._y_mean  # (M, N)
        return out.mean(0), out.std(0)
