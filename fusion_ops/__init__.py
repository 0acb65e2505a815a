"""How a candidate is built: fusion operators, backbones, candidate models, costs.

Public API::

    list_fusions() -> list[str]
    create_fusion(name, in_dims, out_dim, **args) -> nn.Module
    fusion_args(name) -> tuple[Arg, ...]
    count_params(module) -> int;  count_flops(module, *inputs) -> int
    build_backbone(cfg, input_shape) -> Backbone      (per-modality encoders with taps)
    register_fusion(name) / register_backbone(name, kind): extension points (see spaces.registry)
    build_model(spec, backbones, num_classes) -> FusionModel
    candidate_cost(spec, backbones, num_classes) -> params/FLOPs, total and fusion-only
"""
from __future__ import annotations

# Importing an operator's module registers it.
from fusion_ops import (  # noqa: F401
    adversarial,
    attention,
    bottleneck,
    circulant,
    concat,
    id_backbones,
    low_rank,
    memory,
    ptp,
    python_backbone,
    shared_private,
    tensor,
)
from fusion_ops._registry import (
    OPERATORS,
    create_fusion,
    fusion_args,
    fusion_class,
    list_fusions,
    register_fusion,
)
from fusion_ops.backbones import (
    BACKBONE_KINDS,
    Backbone,
    BackboneConfig,
    BackboneKind,
    UnimodalClassifier,
    build_backbone,
    list_backbones,
    register_backbone,
)
from fusion_ops.base import FusionOp, auxiliary_loss, lengths_key, masked_mean
from fusion_ops.cost import count_flops, count_params
from fusion_ops.load import load_model
from fusion_ops.model import (
    FusionHead,
    FusionModel,
    build_model,
    candidate_cost,
    deepest_taps,
    model_cost,
    required_taps,
)

__all__ = [
    "BACKBONE_KINDS",
    "OPERATORS",
    "Backbone",
    "BackboneKind",
    "auxiliary_loss",
    "lengths_key",
    "list_backbones",
    "masked_mean",
    "register_backbone",
    "BackboneConfig",
    "FusionHead",
    "FusionModel",
    "UnimodalClassifier",
    "build_backbone",
    "build_model",
    "candidate_cost",
    "model_cost",
    "required_taps",
    "deepest_taps",
    "FusionOp",
    "count_flops",
    "load_model",
    "count_params",
    "create_fusion",
    "fusion_args",
    "fusion_class",
    "list_fusions",
    "register_fusion",
]
