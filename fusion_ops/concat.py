"""Concatenation fusion: `Linear(cat_m h_m)`."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from fusion_ops._registry import register_fusion
from fusion_ops.base import FusionOp


@register_fusion("concat")
class ConcatFusion(FusionOp):
    """`(B, d_m)` per modality -> `Linear(cat_m h_m)` of shape `(B, out_dim)`."""

    def __init__(self, in_dims: Mapping[str, int], out_dim: int) -> None:
        super().__init__(in_dims, out_dim)
        self.linear = nn.Linear(sum(self.in_dims.values()), out_dim)

    def forward(self, feats: Mapping[str, Tensor]) -> Tensor:
        return self.linear(torch.cat(self.vectors(feats), dim=1))
