"""Adversarial fusion: modality-invariant projections, learnt against a modality discriminator.

In the spirit of the adversarial multimodal fusion of Li et al. (WWW 2020) and of
domain-adversarial training (Ganin & Lempitsky 2015). Each modality is projected to a
common space, `z_m = tanh(E_m h_m)`; a discriminator `D` (`dim -> dim -> M`, ReLU)
guesses which modality a projection came from. It reads the projections through a
gradient-reversal layer (identity forward, `-λ ·` gradient backward), so one backward
pass trains `D` to tell the modalities apart and the encoders `E_m` to confuse it:
the projections become modality-invariant. The fused vector weights them by attention,
`s_m = vᵀ tanh(W z_m)`, `α = softmax_m(s)`, and returns `Linear(Σ_m α_m z_m)`.

The discriminator is training-only. The auxiliary loss is its cross-entropy over the
`B M` projections of the last training-mode forward (label = the modality's index in
sorted order), computed lazily when `aux_loss` is read (the training loop reads it
after the forward), so `forward` does only inference work and `count_flops` never sees
the discriminator; in eval mode no projections are kept and `aux_loss` is None.
`TRAINING_ONLY` names it, so that parameter counts leave it out.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusion_ops._registry import register_fusion
from fusion_ops.base import FusionOp
from spaces.args import Arg

DEFAULT_DIM = 16
DEFAULT_REVERSAL = 1.0


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the incoming gradient times `-scale` backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: Tensor, scale: float) -> Tensor:
    """Gradient-reversal layer: `x` unchanged, its gradient multiplied by `-scale`."""
    return _ReverseGradient.apply(x, scale)


@register_fusion("adversarial")
class AdversarialFusion(FusionOp):
    """Modality-invariant attention fusion: `(B, d_m)` per modality -> `(B, out_dim)` (tokens mean-pooled).

    Parameters: `encoders[m]` (`E_m`, `d_m -> dim`, lists in sorted-name order), `w`
    (`W`, `dim x dim`), `v` (`v`, `dim`), `out` (`dim -> out_dim`), and the
    training-only `discriminator` (`dim -> dim -> M`).
    """

    ARGS = (
        Arg("dim", "int", DEFAULT_DIM, low=1, high=512, doc="width of the common space"),
        Arg("reversal", "float", DEFAULT_REVERSAL, low=0.0, high=10.0, doc="gradient-reversal scale λ"),
    )
    AUX_WEIGHT = 0.1
    TRAINING_ONLY: ClassVar[tuple[str, ...]] = ("discriminator",)
    _z: Tensor | None  # projections (B, M, dim) of the last training forward
    _loss: Tensor | None  # the discriminator's loss on them, once read

    def __init__(
        self,
        in_dims: Mapping[str, int],
        out_dim: int,
        *,
        dim: int = DEFAULT_DIM,
        reversal: float = DEFAULT_REVERSAL,
    ) -> None:
        # `FusionOp.__init__` sets `self.aux_loss = None`, which sets up `_z` and `_loss`
        super().__init__(in_dims, out_dim, dim=dim, reversal=reversal)
        d = self.args["dim"]
        # a list in sorted-name order: modality names need not be valid ModuleDict keys
        self.encoders = nn.ModuleList(nn.Linear(self.in_dims[m], d) for m in self.names)
        self.w = nn.Linear(d, d, bias=False)  # W in s = vᵀ tanh(W z)
        self.v = nn.Linear(d, 1, bias=False)  # v in s = vᵀ tanh(W z)
        self.out = nn.Linear(d, out_dim)
        self.discriminator = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, len(self.names)))

    def project(self, feats: Mapping[str, Tensor]) -> Tensor:
        """The projections `z_m = tanh(E_m h_m)`, stacked in sorted-name order: `(B, M, dim)`."""
        zs = [torch.tanh(enc(h)) for enc, h in zip(self.encoders, self.vectors(feats), strict=True)]
        return torch.stack(zs, dim=1)

    def weights(self, z: Tensor) -> Tensor:
        """Attention weights `α` `(B, M)` over the projections `z` `(B, M, dim)`."""
        return torch.softmax(self.v(torch.tanh(self.w(z))).squeeze(-1), dim=1)

    def discriminator_loss(self, z: Tensor) -> Tensor:
        """Mean cross-entropy of `D` guessing each projection's modality, read through the reversal layer."""
        batch, n_mod, d = z.shape
        logits = self.discriminator(reverse_gradient(z, self.args["reversal"]).reshape(batch * n_mod, d))
        labels = torch.arange(n_mod, device=z.device).repeat(batch)  # row b M + m is modality m
        return F.cross_entropy(logits, labels)

    def forward(self, feats: Mapping[str, Tensor]) -> Tensor:
        z = self.project(feats)  # (B, M, d)
        # a batched matrix product, so the weighted sum is counted as 2 M d FLOPs
        fused = torch.bmm(self.weights(z).unsqueeze(1), z).squeeze(1)  # (B, 1, M) @ (B, M, d) -> (B, d)
        self._z, self._loss = (z if self.training else None), None
        return self.out(fused)

    @property
    def aux_loss(self) -> Tensor | None:
        """The discriminator's loss on the last training-mode forward's projections (None otherwise)."""
        if self._z is not None and self._loss is None:
            self._loss = self.discriminator_loss(self._z)
        return self._loss

    @aux_loss.setter
    def aux_loss(self, value: Tensor | None) -> None:
        # `FusionOp.__init__` resets `aux_loss` to None; that is the only value accepted
        if value is not None:
            raise ValueError("adversarial.aux_loss: computed from the projections, can only be reset to None")
        self._z, self._loss = None, None
