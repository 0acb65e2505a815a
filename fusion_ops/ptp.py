"""Polynomial tensor pooling (PTP, Hou et al. 2019): order-P interactions through a CP factorisation."""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from fusion_ops._registry import register_fusion
from fusion_ops.base import FusionOp, with_one
from spaces.args import Arg


@register_fusion("ptp")
class PolynomialTensorPooling(FusionOp):
    """`(B, d_m)` per modality -> `z_o = Σ_r Π_{p=1..P} (W_{r,p}ᵀ x)_o`, `(B, out_dim)`.

    `x = [1; h_1; ...; h_M]` (sorted names) has `D = 1 + Σ d_m` entries. The map is
    `z_o = <T_o, x ⊗ ... ⊗ x>` (P factors) for the weight tensor
    `T_o = Σ_r W_{r,1}[:, o] ∘ ... ∘ W_{r,P}[:, o]` of CP rank r; the constant 1 makes
    it a full polynomial of degree <= P in the features (every lower-order term,
    the constant included), spanning all modalities at once. `factors[p, r]` is
    `W_{r,p}`, `(D, out_dim)`: `P r D out_dim` parameters, linear in P where the
    explicit tensor has `D^P` per output. The factors emit `out_dim` directly, as in
    the paper (no output Linear, no separate bias: the 1 provides it). Inputs are
    not projected first: the parameter count is already linear in `Σ d_m`, like
    `concat` and `low_rank`, and the polynomial stays one in the raw features.
    """

    ARGS = (
        Arg("order", "int", 2, low=2, high=5, doc="polynomial order P"),
        Arg("rank", "int", 4, low=1, high=64, doc="CP rank r of the order-P weight tensor"),
    )

    def __init__(self, in_dims: Mapping[str, int], out_dim: int, *, order: int = 2, rank: int = 4) -> None:
        super().__init__(in_dims, out_dim, order=order, rank=rank)
        self.order: int = self.args["order"]
        self.rank: int = self.args["rank"]
        self.width = 1 + sum(self.in_dims.values())  # D
        self.factors = nn.Parameter(torch.empty(self.order, self.rank, self.width, out_dim))  # (P, r, D, o)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal factors scaled so that, for unit-variance `x`, each `z_o` starts with variance ~1.

        A factor `W_{r,p}ᵀ x` has variance `σ² D`; a product of P of them `(σ² D)^P`;
        the sum over r multiplies by r. Hence `σ² = r^(-1/P) / D`.
        """
        std = math.sqrt(self.rank ** (-1.0 / self.order) / self.width)
        nn.init.normal_(self.factors, std=std)

    def features(self, feats: Mapping[str, Tensor]) -> Tensor:
        """`x = [1; h_1; ...; h_M]`, `(B, D)`, modalities in sorted order."""
        return with_one(torch.cat(self.vectors(feats), dim=1))

    def forward(self, feats: Mapping[str, Tensor]) -> Tensor:
        x = self.features(feats)  # (B, D)
        p, r, d, o = self.factors.shape
        flat = self.factors.permute(2, 0, 1, 3).reshape(d, p * r * o)  # (D, P*r*o)
        f = (x @ flat).view(-1, p, r, o)  # every W_{r,p}ᵀ x in one matmul the counter sees
        z = f[:, 0]
        for q in range(1, p):
            z = z * f[:, q]  # (B, r, o), product over the P factors
        return z.sum(dim=1)  # (B, o): sum over the rank

    def interaction_flops(self, feats: Mapping[str, Tensor]) -> int:
        """1 per multiply of the product over the P factors: `B (P-1) r o`."""
        batch = next(iter(feats.values())).shape[0]
        return batch * (self.order - 1) * self.rank * self.out_dim
