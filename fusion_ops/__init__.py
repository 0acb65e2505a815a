"""How a candidate is built: fusion operators, backbones, candidate models, costs.

Public API::

    list_fusions() -> list[str]
    create_fusion(name, in_dims, out_dim, **args) -> nn.Module
    fusion_args(name) -> tuple[Arg, ...]
    count_params(module) -> int;  count_flops(module, *inputs) -> int
"""
from __future__ import annotations

# Importing an operator's module registers it.
from fusion_ops import attention, circulant, concat, low_rank, tensor  # noqa: F401
from fusion_ops._base import FusionOp
from fusion_ops._registry import create_fusion, fusion_args, fusion_class, list_fusions, register_fusion
from fusion_ops.cost import count_flops, count_params

__all__ = [
    "FusionOp",
    "count_flops",
    "count_params",
    "create_fusion",
    "fusion_args",
    "fusion_class",
    "list_fusions",
    "register_fusion",
]
