"""Low-rank multimodal fusion (LMF, Liu et al. 2018): a TFN linear map of rank r."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from fusion_ops._registry import register_fusion
from fusion_ops.base import FusionOp, with_one
from spaces.args import Arg


@register_fusion("low_rank")
class LowRankFusion(FusionOp):
    """`(B, d_m)` per modality -> `Σ_i w_i Π_m (W_m^(i)ᵀ [1;h_m]) + b`, `(B, out_dim)`.

    `factors[j]` is `W_m` of shape `(r, d_m + 1, out_dim)` for the j-th modality in
    sorted order; `rank_weight` is `w` `(1, r)` and `bias` is `b` `(1, out_dim)`.
    This equals TFN's `Linear` on `[1;h_1] ⊗ ... ⊗ [1;h_M]` with a weight of CP rank r,
    without ever building the outer product.
    """

    ARGS = (Arg("rank", "int", 4, low=1, high=64, doc="rank r of the factorised fusion weight"),)

    def __init__(self, in_dims: Mapping[str, int], out_dim: int, *, rank: int = 4) -> None:
        super().__init__(in_dims, out_dim, rank=rank)
        r = self.args["rank"]
        self.rank = r
        # a ParameterList registers the factors (MultiBench's plain list never trains them)
        self.factors = nn.ParameterList(
            nn.Parameter(torch.empty(r, self.in_dims[m] + 1, out_dim)) for m in self.names
        )
        self.rank_weight = nn.Parameter(torch.empty(1, r))
        self.bias = nn.Parameter(torch.zeros(1, out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal factors and rank weights, zero bias, as the official LMF code."""
        for w in self.factors:
            nn.init.xavier_normal_(w)
        nn.init.xavier_normal_(self.rank_weight)
        nn.init.zeros_(self.bias)

    def forward(self, feats: Mapping[str, Tensor]) -> Tensor:
        fs = [self._factor(w, h) for w, h in zip(self.factors, self.vectors(feats), strict=True)]
        z = fs[0]
        for f in fs[1:]:
            z = z * f  # (B, r, o), product over modalities
        return (self.rank_weight @ z).squeeze(1) + self.bias  # (1, r) @ (B, r, o) -> (B, o)

    @staticmethod
    def _factor(w: Tensor, h: Tensor) -> Tensor:
        """`[1;h] · W`: `(B, d)` and `(r, d+1, o)` -> `(B, r, o)`, as one matmul the counter sees."""
        r, d1, o = w.shape
        flat = w.permute(1, 0, 2).reshape(d1, r * o)  # (d+1, r*o)
        return (with_one(h) @ flat).view(-1, r, o)  # (B, r, o)

    def interaction_flops(self, feats: Mapping[str, Tensor]) -> int:
        """1 per multiply of the product over modalities: `B (M-1) r o`."""
        batch = next(iter(feats.values())).shape[0]
        return batch * (len(self.names) - 1) * self.rank * self.out_dim
