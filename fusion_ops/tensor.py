"""Tensor fusion (TFN, Zadeh et al. 2017): `Linear(flatten([1;p_1] ⊗ ... ⊗ [1;p_M]))`."""
from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from fusion_ops._registry import register_fusion
from fusion_ops.base import FusionOp, with_one
from spaces.args import Arg

# Π(k+1) features per sample: 3 modalities at proj_dim 40 already give 68921, and
# the final Linear holds out_dim times that many weights.
MAX_TENSOR_SIZE = 65536


@register_fusion("tensor")
class TensorFusion(FusionOp):
    """`(B, d_m)` per modality -> `(B, out_dim)` through the full outer product.

    Each modality is projected to `proj_dim` = k (`projections[i]`, sorted names),
    a constant 1 is prepended, and the outer product of the M vectors `(B, (k+1)^M)`
    is fed to `linear`. The product keeps every unimodal, bimodal, ..., M-modal term.
    """

    ARGS = (Arg("proj_dim", "int", 8, low=1, high=64, doc="width k each modality is projected to"),)
    MAX_SIZE = MAX_TENSOR_SIZE

    def __init__(self, in_dims: Mapping[str, int], out_dim: int, *, proj_dim: int = 8) -> None:
        super().__init__(in_dims, out_dim, proj_dim=proj_dim)
        k = self.args["proj_dim"]
        size = (k + 1) ** len(self.names)
        if size > self.MAX_SIZE:
            raise ValueError(
                f"tensor.proj_dim: outer product of {len(self.names)} modalities at proj_dim {k} has"
                f" {size} features, more than the limit {self.MAX_SIZE}; lower proj_dim"
            )
        self.proj_dim = k
        self.size = size
        self.projections = nn.ModuleList(nn.Linear(self.in_dims[m], k) for m in self.names)
        self.linear = nn.Linear(size, out_dim)

    def project(self, feats: Mapping[str, Tensor]) -> list[Tensor]:
        """The projected features `p_m`, one `(B, k)` per modality in sorted order."""
        return [proj(h) for proj, h in zip(self.projections, self.vectors(feats), strict=True)]

    def outer(self, feats: Mapping[str, Tensor]) -> Tensor:
        """`flatten([1;p_1] ⊗ ... ⊗ [1;p_M])`, `(B, (k+1)^M)`, first modality slowest."""
        ps = [with_one(p) for p in self.project(feats)]
        z = ps[0]
        for q in ps[1:]:
            z = (z.unsqueeze(2) * q.unsqueeze(1)).flatten(1)  # (B, n, 1)*(B, 1, k+1) -> (B, n*(k+1))
        return z

    def forward(self, feats: Mapping[str, Tensor]) -> Tensor:
        return self.linear(self.outer(feats))

    def interaction_flops(self, feats: Mapping[str, Tensor]) -> int:
        """1 per multiply of the successive outer products: `B Σ_{j=2..M} (k+1)^j`."""
        batch = next(iter(feats.values())).shape[0]
        k1 = self.proj_dim + 1
        return batch * sum(k1**j for j in range(2, len(self.names) + 1))
