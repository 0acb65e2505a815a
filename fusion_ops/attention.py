"""Modal attention fusion: a softmax-weighted sum of projected modalities (or tokens)."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from fusion_ops._registry import register_fusion
from fusion_ops.base import FusionOp
from spaces.args import Arg

DEFAULT_DIM = 16


@register_fusion("attention")
class AttentionFusion(FusionOp):
    """Attention over modalities: `(B, d_m)` or `(B, T_m, d_m)` per modality -> `(B, out_dim)`.

    Each modality is projected to `dim` (`p = Linear_m(x)`), each candidate scored
    `s = vᵀ tanh(W p)` with `W` (dim x dim) and `v` (dim) shared, `α = softmax(s)`
    over the candidates, and `Linear(Σ α p)` is returned. A vector is one
    candidate; with tokens, every token of every modality is one candidate.
    """

    ARGS = (Arg("dim", "int", DEFAULT_DIM, low=1, high=512, doc="attention width d"),)
    TOKEN_INPUTS = True

    def __init__(self, in_dims: Mapping[str, int], out_dim: int, *, dim: int = DEFAULT_DIM) -> None:
        super().__init__(in_dims, out_dim, dim=dim)
        d = self.args["dim"]
        # a list in sorted-name order: modality names need not be valid ModuleDict keys
        self.proj = nn.ModuleList(nn.Linear(self.in_dims[m], d) for m in self.names)
        self.w = nn.Linear(d, d, bias=False)  # W in s = vᵀ tanh(W p)
        self.v = nn.Linear(d, 1, bias=False)  # v in s = vᵀ tanh(W p)
        self.out = nn.Linear(d, out_dim)

    def _attend(self, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Weights `α` `(B, N)` and projected candidates `p` `(B, N, dim)`, N = Σ_m T_m."""
        tokens = self.tokens(feats)
        p = torch.cat([lin(x) for lin, x in zip(self.proj, tokens, strict=True)], dim=1)  # (B, N, d)
        scores = self.v(torch.tanh(self.w(p))).squeeze(-1)  # (B, N)
        real = self.token_masks(tokens, masks)
        if real is not None:  # padding gets weight exactly 0
            scores = scores.masked_fill(~torch.cat(real, dim=1), float("-inf"))
        return torch.softmax(scores, dim=1), p

    def weights(self, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        """Attention weights `(B, N)` over the candidates, modalities in sorted order, tokens in order."""
        return self._attend(feats, masks)[0]

    def forward(self, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        alpha, p = self._attend(feats, masks)
        if masks:
            p = p.masked_fill(alpha.unsqueeze(-1) == 0, 0.0)  # a padded token's value never enters (0 * inf)
        # a batched matrix product, so the weighted sum is counted as 2 N d FLOPs
        fused = torch.bmm(alpha.unsqueeze(1), p).squeeze(1)  # (B, 1, N) @ (B, N, d) -> (B, d)
        return self.out(fused)
