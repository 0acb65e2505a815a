"""Shared-private fusion (in the spirit of FP-Net / MISA): a shared and a private code per modality."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from fusion_ops._registry import register_fusion
from fusion_ops.base import FusionOp
from spaces.args import Arg

DEFAULT_DIM = 16


def orthogonality_penalty(shared: Sequence[Tensor], private: Sequence[Tensor]) -> Tensor:
    """`(1/M) Σ_m ‖S_mᵀ P_m‖²_F / B²` for codes `S_m`, `P_m` of shape `(B, d)` (MISA's difference loss).

    Zero exactly when every shared feature column is orthogonal over the batch to
    every private one (`S_mᵀ P_m = 0`). Dividing by `B²` makes each entry of
    `S_mᵀ P_m / B` a batch mean, so the term does not grow with the batch size.
    """
    terms = [(s.T @ p).pow(2).sum() for s, p in zip(shared, private, strict=True)]
    batch = shared[0].shape[0]
    return torch.stack(terms).mean() / batch**2


@register_fusion("shared_private")
class SharedPrivateFusion(FusionOp):
    """`(B, d_m)` per modality -> `Linear(cat(mean_m s_m, p_1, ..., p_M))`, `(B, out_dim)`.

    Shared code `s_m = S(A_m h_m)`: `align[i]` is `A_m` (`d_m -> dim`, i-th sorted
    modality) and `shared` is the one `S` (`dim -> dim`) all modalities go through.
    Private code `p_m = P_m h_m` (`private[i]`, `d_m -> dim`). `out` maps the
    `(M+1) dim` concatenation to `out_dim`.

    Auxiliary loss: `orthogonality_penalty` of the codes of the last forward in
    training mode, pushing private codes orthogonal to shared ones. It is computed
    lazily when `aux_loss` is read (the training loop reads it after the forward),
    so `forward` does only inference work and `count_flops` never sees the penalty's
    matrix products; in eval mode no codes are kept and `aux_loss` is None.
    """

    ARGS = (Arg("dim", "int", DEFAULT_DIM, low=4, high=256, doc="width d of the shared and private codes"),)
    AUX_WEIGHT = 0.1
    _codes: tuple[list[Tensor], list[Tensor]] | None  # (shared, private) of the last training forward
    _penalty: Tensor | None  # the penalty computed from them, once read

    def __init__(self, in_dims: Mapping[str, int], out_dim: int, *, dim: int = DEFAULT_DIM) -> None:
        super().__init__(in_dims, out_dim, dim=dim)  # its `self.aux_loss = None` sets up the two below
        d = self.args["dim"]
        self.dim = d
        # lists in sorted-name order: modality names need not be valid ModuleDict keys
        self.align = nn.ModuleList(nn.Linear(self.in_dims[m], d) for m in self.names)
        self.shared = nn.Linear(d, d)
        self.private = nn.ModuleList(nn.Linear(self.in_dims[m], d) for m in self.names)
        self.out = nn.Linear((len(self.names) + 1) * d, out_dim)

    def codes(self, feats: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Shared and private codes, each `(M, B, dim)` with modalities in sorted order."""
        hs = self.vectors(feats)
        s = self.shared(torch.stack([a(h) for a, h in zip(self.align, hs, strict=True)]))  # (M, B, d)
        p = torch.stack([lin(h) for lin, h in zip(self.private, hs, strict=True)])  # (M, B, d)
        return s, p

    def forward(self, feats: Mapping[str, Tensor]) -> Tensor:
        s, p = self.codes(feats)
        self._codes = (list(s.unbind(0)), list(p.unbind(0))) if self.training else None
        self._penalty = None
        fused = torch.cat([s.mean(dim=0), *p.unbind(0)], dim=1)  # (B, (M+1) d)
        return self.out(fused)

    @property
    def aux_loss(self) -> Tensor | None:
        """The orthogonality penalty of the last training-mode forward (None otherwise)."""
        if self._codes is not None and self._penalty is None:
            self._penalty = orthogonality_penalty(*self._codes)
        return self._penalty

    @aux_loss.setter
    def aux_loss(self, value: Tensor | None) -> None:
        # `FusionOp.__init__` resets `aux_loss` to None; that is the only value accepted
        if value is not None:
            raise ValueError("shared_private.aux_loss: computed from the codes, can only be reset to None")
        self._codes, self._penalty = None, None
