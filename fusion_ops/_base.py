"""Common base of fusion operators: argument checks and modality iteration."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from spaces.args import Arg, resolve_args


class FusionOp(nn.Module):
    """Maps one feature tensor per modality to one fused vector.

    Contract: `__init__(in_dims, out_dim, **args)`; `forward(feats) -> (B, out_dim)`,
    where `feats[m]` is `(B, in_dims[m])` or, as tokens, `(B, T, in_dims[m])`.
    Modalities are always visited in sorted order, so dict order never matters.
    Subclasses declare `ARGS`; `TOKEN_INPUTS` says whether tokens are used as such
    (True) or mean-pooled to vectors first (False).
    """

    NAME: ClassVar[str] = ""
    ARGS: ClassVar[tuple[Arg, ...]] = ()
    TOKEN_INPUTS: ClassVar[bool] = False
    # Operators with a training-only auxiliary loss (e.g. an adversarial or orthogonality
    # term) set `self.aux_loss` in `forward` and declare its default weight here.
    AUX_WEIGHT: ClassVar[float] = 0.0
    # Submodules that only the auxiliary loss uses (e.g. a discriminator): they train,
    # but are not part of the inference path, so parameter counts leave them out.
    TRAINING_ONLY: ClassVar[tuple[str, ...]] = ()

    def __init__(self, in_dims: Mapping[str, int], out_dim: int, **args: Any) -> None:
        super().__init__()
        where = self.NAME or type(self).__name__
        if not isinstance(in_dims, Mapping) or len(in_dims) < 2:
            n = len(in_dims) if isinstance(in_dims, Mapping) else in_dims
            raise ValueError(f"{where}.in_dims: fusion needs at least 2 modalities, got {n!r}")
        for m, d in in_dims.items():
            if not isinstance(m, str) or not m:
                raise ValueError(f"{where}.in_dims: modality names must be non-empty strings, got {m!r}")
            if isinstance(d, bool) or not isinstance(d, int) or d < 1:
                raise ValueError(f"{where}.in_dims[{m!r}]: width must be a positive integer, got {d!r}")
        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"{where}.out_dim: must be a positive integer, got {out_dim!r}")
        self.names: tuple[str, ...] = tuple(sorted(in_dims))
        self.in_dims: dict[str, int] = {m: in_dims[m] for m in self.names}
        self.out_dim = out_dim
        self.args: dict[str, Any] = resolve_args(self.ARGS, args, where)
        self.aux_loss: Tensor | None = None  # the last forward's auxiliary loss, if the op has one

    def extra_repr(self) -> str:
        return f"in_dims={self.in_dims}, out_dim={self.out_dim}, " + ", ".join(
            f"{k}={v}" for k, v in self.args.items()
        )

    def _checked(self, feats: Mapping[str, Tensor]) -> list[Tensor]:
        if set(feats) != set(self.names):
            raise ValueError(f"{self.NAME}: expected modalities {list(self.names)}, got {sorted(feats)}")
        out = []
        for m in self.names:
            x = feats[m]
            if x.dim() not in (2, 3) or x.shape[-1] != self.in_dims[m]:
                raise ValueError(
                    f"{self.NAME}: modality {m!r} must be (B, {self.in_dims[m]}) or (B, T, {self.in_dims[m]}),"
                    f" got {tuple(x.shape)}"
                )
            out.append(x)
        return out

    def vectors(self, feats: Mapping[str, Tensor]) -> list[Tensor]:
        """One `(B, d_m)` tensor per modality, sorted by name; tokens are mean-pooled."""
        return [x.mean(dim=1) if x.dim() == 3 else x for x in self._checked(feats)]

    def tokens(self, feats: Mapping[str, Tensor]) -> list[Tensor]:
        """One `(B, T_m, d_m)` tensor per modality, sorted by name; a vector is one token."""
        return [x.unsqueeze(1) if x.dim() == 2 else x for x in self._checked(feats)]

    def interaction_flops(self, feats: Mapping[str, Tensor]) -> int:
        """FLOPs of interaction work that `FlopCounterMode` cannot see (see `cost.py`)."""
        return 0


def auxiliary_loss(model: nn.Module, weight: float | None = None) -> Tensor | None:
    """`Σ w · op.aux_loss` over the fusion ops in `model` after a forward (None if there is none).

    `weight` overrides every op's `AUX_WEIGHT`. Inference costs never include this term.
    """
    total = None
    for m in model.modules():
        if isinstance(m, FusionOp) and m.aux_loss is not None:
            term = (m.AUX_WEIGHT if weight is None else weight) * m.aux_loss
            total = term if total is None else total + term
    return total


def with_one(h: Tensor) -> Tensor:
    """`[1; h]`: prepend a constant 1 to each row, `(B, d) -> (B, d + 1)`."""
    return torch.cat([h.new_ones(h.shape[0], 1), h], dim=1)
