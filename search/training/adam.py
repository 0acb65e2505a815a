"""Adam and AdamW for the training loops, without `torch.optim`.

`torch.optim`'s optimisers import `torch._dynamo` at their first use (their methods are
wrapped to keep `torch.compile` out): 1.6-1.7 CPU s in every process that trains, every
Ray trial worker and every CLI command included, for nothing fusion-nas uses.

`Adam` is the same update:
- `fused=True`: the kernel `torch.optim.Adam(fused=True)` runs (`torch._fused_adam_`, or
  `torch._fused_adamw_` for decoupled weight decay), fed the same state, so the weights come
  out bit for bit the same (tested);
- otherwise, or where that kernel is missing: the defining update one tensor at a time, as
  `torch.optim.Adam(foreach=False)` computes it (Kingma & Ba 2015, Algorithm 1; the bias
  corrections folded into the step size). With `weight_decay` λ, coupled (L2, `Adam`) adds
  `λ w` to the gradient before the moments; decoupled (`AdamW`, Loshchilov & Hutter 2019)
  multiplies the weights by `1 - lr λ` first.

One parameter group; `lr` may change between steps (the schedule sets it). Parameters whose
gradient is None are skipped and get no state, as in `torch.optim`.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor


class Adam:
    """`Adam(params, lr, weight_decay, decoupled=False)`; `zero_grad()` then `step()` as with `torch.optim`."""

    def __init__(self, params: Iterable[Tensor], lr: float, weight_decay: float = 0.0, decoupled: bool = False,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, fused: bool = True) -> None:
        self.params = list(params)
        self.lr, self.weight_decay, self.decoupled = float(lr), float(weight_decay), decoupled
        self.betas, self.eps = betas, eps
        kernel = "_fused_adamw_" if decoupled else "_fused_adam_"
        self._kernel = getattr(torch, kernel, None) if fused else None
        self.state: dict[int, tuple[Tensor, Tensor, Tensor]] = {}  # index -> (step, exp_avg, exp_avg_sq)

    def zero_grad(self) -> None:
        """Gradients to None (torch.optim's default): a parameter the next backward pass skips gets no step."""
        for p in self.params:
            p.grad = None

    def _state(self, i: int, p: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if i not in self.state:
            step = torch.zeros((), dtype=torch.float32, device=p.device if self._kernel else "cpu")
            self.state[i] = (step, torch.zeros_like(p, memory_format=torch.preserve_format),
                             torch.zeros_like(p, memory_format=torch.preserve_format))
        return self.state[i]

    @torch.no_grad()
    def step(self) -> None:
        live = [(i, p) for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        if self._kernel is not None and all(p.device.type in ("cpu", "cuda") for _, p in live):
            self._fused(live)
        else:
            for i, p in live:
                self._one(p, *self._state(i, p))

    def _fused(self, live: list[tuple[int, Tensor]]) -> None:
        groups: dict[tuple[torch.device, torch.dtype], list[tuple[Tensor, ...]]] = {}
        for i, p in live:
            assert p.grad is not None
            groups.setdefault((p.device, p.dtype), []).append((p, p.grad, *self._state(i, p)))
        beta1, beta2 = self.betas
        for rows in groups.values():
            params, grads, steps, exp_avgs, exp_avg_sqs = (list(col) for col in zip(*rows, strict=True))
            torch._foreach_add_(steps, 1)
            assert self._kernel is not None
            self._kernel(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=self.lr, beta1=beta1,
                         beta2=beta2, weight_decay=self.weight_decay, eps=self.eps, maximize=False,
                         grad_scale=None, found_inf=None)

    def _one(self, p: Tensor, step_t: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor) -> None:
        assert p.grad is not None
        beta1, beta2 = self.betas
        grad, lr, wd = p.grad, self.lr, self.weight_decay
        step_t += 1
        if wd != 0:
            if self.decoupled:
                p.mul_(1 - lr * wd)
            else:
                grad = grad.add(p, alpha=wd)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = step_t.item()
        step_size = lr / (1 - beta1**step)
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(self.eps)
        p.addcdiv_(exp_avg, denom, value=-step_size)
