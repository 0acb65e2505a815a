"""Attention-bottleneck fusion (MBT, Nagrani et al. 2021), as scenic's MBT runs it.

Each modality has its own transformer layers. Layers below `fusion_layer` see only
their modality's tokens; from `fusion_layer` on, modality m's layer sees
`cat(x_m, b)` for `n_tokens` shared bottleneck tokens `b`, keeps its first `T_m`
outputs as its new tokens, and `b` becomes the mean over modalities of their
bottleneck outputs. Cross-modal information therefore flows only through `b`.
`fusion_layer=0` exchanges from the first layer on; `fusion_layer=layers` never
exchanges (late fusion).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn

from fusion_ops._registry import register_fusion
from fusion_ops._transformer import Block
from fusion_ops.base import FusionOp
from spaces.args import Arg


class TokenState(NamedTuple):
    """Tokens after some number of layers: one `(B, 1 + T_m, D)` per modality
    (sorted by name, class token first) and the bottleneck `(B, n_tokens, D)`."""

    tokens: list[Tensor]
    bottleneck: Tensor


BottleneckHook = Callable[[int, Tensor], Tensor]


@register_fusion("bottleneck")
class BottleneckFusion(FusionOp):
    """`(B, T_m, d_m)` or `(B, d_m)` per modality -> `(B, out_dim)`.

    Read-out: per modality the final class token, plus the mean of the final
    bottleneck tokens, each then layer-normed, concatenated and mapped by one `Linear`.
    The bottleneck read-out keeps a single fused layer (`fusion_layer = layers - 1`)
    from being late fusion in disguise.
    """

    TOKEN_INPUTS = True
    ARGS = (
        Arg("dim", "int", 16, 4, 512, doc="model width D"),
        Arg("heads", "int", 2, 1, 16, doc="attention heads; must divide dim"),
        Arg("layers", "int", 2, 1, 12, doc="transformer layers per modality"),
        Arg("fusion_layer", "int", 1, 0, 12, doc="first layer that exchanges through the bottleneck"),
        Arg("n_tokens", "int", 4, 1, 64, doc="bottleneck tokens n_b"),
        Arg("mlp_ratio", "int", 2, 1, 8, doc="MLP hidden width / D"),
    )

    def __init__(self, in_dims: Mapping[str, int], out_dim: int, **args: Any) -> None:
        super().__init__(in_dims, out_dim, **args)
        dim, heads, layers = self.args["dim"], self.args["heads"], self.args["layers"]
        if dim % heads:
            raise ValueError(f"{self.NAME}.heads: must divide {self.NAME}.dim={dim}, got {heads}")
        if self.args["fusion_layer"] > layers:
            raise ValueError(
                f"{self.NAME}.fusion_layer: must be <= {self.NAME}.layers={layers},"
                f" got {self.args['fusion_layer']}"
            )
        n_mod = len(self.names)
        # lists indexed in sorted-name order: a ModuleDict would reject names such as "a.b"
        self.proj = nn.ModuleList(nn.Linear(self.in_dims[m], dim) for m in self.names)
        self.cls = nn.Parameter(torch.empty(n_mod, 1, dim))
        self.bottleneck = nn.Parameter(torch.empty(1, self.args["n_tokens"], dim))
        self.blocks = nn.ModuleList(
            nn.ModuleList(Block(dim, heads, self.args["mlp_ratio"]) for _ in range(layers)) for _ in self.names
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(n_mod + 1))  # last one: bottleneck
        self.head = nn.Linear((n_mod + 1) * dim, out_dim)
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.bottleneck, std=0.02)

    def forward_tokens(self, feats: Mapping[str, Tensor], bottleneck_hook: BottleneckHook | None = None,
                       masks: Mapping[str, Tensor] | None = None) -> list[TokenState]:
        """Token states after 0, 1, ..., `layers` layers (`layers + 1` entries).

        `bottleneck_hook(layer, b)`, if given, replaces the bottleneck that enters
        each fusing layer; tests use it to cut the only cross-modal path. `masks`:
        padded tokens are never attended to (their own states are left as they come).
        """
        tokens = self.tokens(feats)
        batch = tokens[0].shape[0]
        real = self.token_masks(tokens, masks)
        # key masks: the class token (and later the bottleneck) is always real
        keys = None if real is None else [torch.cat([r.new_ones(batch, 1), r], dim=1) for r in real]
        xs = [
            torch.cat([self.cls[i].expand(batch, 1, -1), proj(x)], dim=1)  # (B, 1 + T_m, D)
            for i, (proj, x) in enumerate(zip(self.proj, tokens, strict=True))
        ]
        b = self.bottleneck.expand(batch, -1, -1)  # (B, n_b, D)
        states = [TokenState(xs, b)]
        for layer in range(self.args["layers"]):
            if layer < self.args["fusion_layer"]:
                xs = [blocks[layer](x, None if keys is None else keys[i])
                      for i, (blocks, x) in enumerate(zip(self._blocks_by_modality(), xs, strict=True))]
            else:
                if bottleneck_hook is not None:
                    b = bottleneck_hook(layer, b)
                xs, b = self._fuse(layer, xs, b, keys)
            states.append(TokenState(xs, b))
        return states

    def _blocks_by_modality(self) -> list[nn.ModuleList]:
        """Each modality's blocks by layer, in sorted-name order."""
        return [cast(nn.ModuleList, blocks) for blocks in self.blocks]  # items of an nn.ModuleList are typed nn.Module

    def _fuse(self, layer: int, xs: list[Tensor], b: Tensor,
              keys: list[Tensor] | None = None) -> tuple[list[Tensor], Tensor]:
        """One fusing layer: each modality attends over `cat(x_m, b)`; `b` <- mean of updates."""
        new_xs, new_bs = [], []
        for i, (blocks, x) in enumerate(zip(self._blocks_by_modality(), xs, strict=True)):
            t = x.shape[1]
            key = None if keys is None else torch.cat([keys[i], keys[i].new_ones(b.shape[:2])], dim=1)
            out = blocks[layer](torch.cat([x, b], dim=1), key)  # (B, t + n_b, D)
            new_xs.append(out[:, :t])
            new_bs.append(out[:, t:])
        return new_xs, torch.stack(new_bs).mean(dim=0)  # (B, n_b, D)

    def forward(self, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        xs, b = self.forward_tokens(feats, masks=masks)[-1]
        pooled = [self.norms[i](x[:, 0]) for i, x in enumerate(xs)]  # class tokens, (B, D) each
        # pool before the norm: in late fusion `b` is a view of a parameter, which
        # FlopCounterMode's module tracker rejects as a module input under no_grad
        pooled.append(self.norms[-1](b.mean(dim=1)))
        return self.head(torch.cat(pooled, dim=1))  # (B, (M + 1) D) -> (B, out_dim)
