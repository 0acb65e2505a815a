"""Common base of fusion operators: argument checks, modality iteration and padding masks (public: plugins subclass it)."""
from __future__ import annotations

import inspect
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
    (True) or mean-pooled to vectors first (False). Padded token inputs come with
    `masks[m]` `(B, T_m)` (True = a real token): a token operator whose `forward` takes
    `masks=` must ignore padding; for the others `FusionCell` pools the real tokens first.
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

    def vectors(self, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> list[Tensor]:
        """One `(B, d_m)` tensor per modality, sorted by name; tokens are mean-pooled (real tokens only)."""
        masks = masks or {}
        return [masked_mean(x, masks.get(m)) if x.dim() == 3 else x
                for m, x in zip(self.names, self._checked(feats), strict=True)]

    def tokens(self, feats: Mapping[str, Tensor]) -> list[Tensor]:
        """One `(B, T_m, d_m)` tensor per modality, sorted by name; a vector is one token."""
        return [x.unsqueeze(1) if x.dim() == 2 else x for x in self._checked(feats)]

    def token_masks(self, tokens: list[Tensor], masks: Mapping[str, Tensor] | None) -> list[Tensor] | None:
        """`(B, T_m)` bool per modality (sorted, matching `tokens(feats)`), or None when nothing is padded."""
        if not masks:
            return None
        out = []
        for m, x in zip(self.names, tokens, strict=True):
            mask = masks.get(m)
            if mask is None or mask.shape != x.shape[:2]:
                mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
            out.append(mask.bool())
        return out

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


LENGTHS_SUFFIX = ":lengths"


def lengths_key(name: str) -> str:
    """Where a batch dict keeps the valid lengths `(B,)` of tap or input `name` (padded sequences)."""
    return name + LENGTHS_SUFFIX


def step_masks(batch: Mapping[str, Tensor], sources: Mapping[str, str]) -> dict[str, Tensor]:
    """`{modality: (B, T) bool}` for the sources `{modality: tap}` whose lengths `batch` carries."""
    out = {}
    for m, t in sources.items():
        lengths = batch.get(lengths_key(t))
        x = batch.get(t)
        if lengths is not None and x is not None and x.dim() == 3:
            out[m] = torch.arange(x.shape[1], device=x.device) < lengths.reshape(-1, 1)
    return out


def takes_masks(op: nn.Module) -> bool:
    """Whether `op.forward` accepts `masks=` (padded tokens)."""
    return "masks" in inspect.signature(op.forward).parameters


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """`(B, T, d)` -> `(B, d)`: the mean over the real tokens (`mask` `(B, T)`, None: all real)."""
    if mask is None:
        return x.mean(dim=1)
    w = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)


def with_one(h: Tensor) -> Tensor:
    """`[1; h]`: prepend a constant 1 to each row, `(B, d) -> (B, d + 1)`."""
    return torch.cat([h.new_ones(h.shape[0], 1), h], dim=1)
