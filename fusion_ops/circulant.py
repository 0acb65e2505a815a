"""Multimodal circulant fusion (MCF, Wu & Han 2018): circulant-matrix interactions by FFT."""
from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from fusion_ops._registry import register_fusion
from fusion_ops.base import FusionOp
from spaces.args import Arg

DEFAULT_DIM = 16


def ordered_pairs(n: int) -> tuple[list[int], list[int]]:
    """Indices `(a, b)` of every ordered pair `a != b` of `n` items, in lexicographic order."""
    pairs = list(itertools.permutations(range(n), 2))
    return [a for a, _ in pairs], [b for _, b in pairs]


def circulant_products(p: Tensor) -> Tensor:
    """`circ(p_a) · p_b` for every ordered pair `(a, b)`, `(B, M, d) -> (B, M(M-1), d)`.

    `circ(x)` has row i = `roll(x, i)`, so `(circ(x) · t)_i = Σ_k x_k t_{(k+i) mod d}`:
    the circular cross-correlation, `irfft(conj(rfft(x)) · rfft(t))`. Each vector's
    rfft is computed once and reused by every pair it appears in.
    """
    d = p.shape[-1]
    a, b = ordered_pairs(p.shape[1])
    if torch.onnx.is_in_onnx_export():  # ONNX has no real FFT: the same sums, written out
        return cross_correlation(p[:, a], p[:, b])
    spec = torch.fft.rfft(p, dim=-1)  # (B, M, d//2+1)
    return torch.fft.irfft(spec[:, a].conj() * spec[:, b], n=d, dim=-1)  # (B, M(M-1), d)


def cross_correlation(x: Tensor, t: Tensor) -> Tensor:
    """`out[..., k] = sum_j x[..., j] t[..., (j + k) mod d]`, the circular cross-correlation by its
    definition (`d²` multiplies: the form an ONNX export holds, `fusion_ops.formats`)."""
    d = x.shape[-1]
    steps = torch.arange(d, device=x.device)
    shifted = t[..., (steps[:, None] + steps[None, :]) % d]  # [..., k, j] = t[..., (j + k) mod d]
    return (x.unsqueeze(-2) * shifted).sum(-1)


@register_fusion("circulant")
class CirculantFusion(FusionOp):
    """`(B, d_m)` per modality -> `Linear(cat(p_1..p_M, circ(p_a)·p_b for a != b))`, `(B, out_dim)`.

    `p_m = Linear_m(h_m)` has width `dim`; the pairs are ordered (both `(a, b)` and
    `(b, a)`), in lexicographic order of the sorted modality names. Token inputs
    are mean-pooled.
    """

    ARGS = (Arg("dim", "int", DEFAULT_DIM, low=2, high=1024, doc="projection width d"),)

    def __init__(self, in_dims: Mapping[str, int], out_dim: int, *, dim: int = DEFAULT_DIM) -> None:
        super().__init__(in_dims, out_dim, dim=dim)
        d, m = self.args["dim"], len(self.names)
        # a list in sorted-name order: modality names need not be valid ModuleDict keys
        self.proj = nn.ModuleList(nn.Linear(self.in_dims[n], d) for n in self.names)
        self.out = nn.Linear(m * m * d, out_dim)  # M projections + M(M-1) interactions

    def forward(self, feats: Mapping[str, Tensor]) -> Tensor:
        p = torch.stack([lin(h) for lin, h in zip(self.proj, self.vectors(feats), strict=True)], dim=1)  # (B, M, d)
        inter = circulant_products(p)  # (B, M(M-1), d)
        return self.out(torch.cat([p.flatten(1), inter.flatten(1)], dim=1))  # (B, M*M*d) -> (B, out_dim)

    def interaction_flops(self, feats: Mapping[str, Tensor]) -> int:
        """The spectral product, 1 FLOP per real multiply.

        A complex multiply is 4 real multiplies, over `d//2 + 1` rfft bins, for each
        of the `M(M-1)` ordered pairs of each sample. The FFTs are counted by `cost.py`.
        """
        batch = next(iter(feats.values())).shape[0]
        m, d = len(self.names), self.args["dim"]
        return batch * m * (m - 1) * 4 * (d // 2 + 1)
