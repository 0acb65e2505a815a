"""Exact parameter and FLOP counts of a module.

FLOP convention (the same everywhere in fusion-nas, and stated in every report):
forward FLOPs for the given batch, counted by `torch.utils.flop_counter`'s formulas — 2 per
multiply-add of every matrix product (linear, matmul, bmm, convolution, attention).
Elementwise work (activations, additions, normalisation, softmax, pooling) is not
counted. Three kinds of work the stock counter misses are added here:

- FFTs: a complex transform of length N costs `5 N log2 N` (the Cooley-Tukey count),
  a real one (`rfft`/`irfft`) half of that, per transformed signal;
- attention kernels the counter does not know on the CPU (the CPU flash kernel of
  `scaled_dot_product_attention`, the `nn.MultiheadAttention` inference fast path):
  counted like the matrix products they replace;
- the multiplicative interactions that define a fusion operator (the TFN outer
  product, the LMF product over modalities, the MCF spectral product): 1 per
  multiply, reported by each operator's `interaction_flops`.

Costs are those of the inference path: an operator's auxiliary loss is computed
outside `forward` (when read), and the parameters of its training-only submodules
(`FusionOp.TRAINING_ONLY`, e.g. the adversarial operator's discriminator) are not counted.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import bmm_flop, flop_registry, sdpa_flop_count, shape_wrapper

from fusion_ops.base import FusionOp

aten = torch.ops.aten


def training_only_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters of the `TRAINING_ONLY` submodules of the fusion ops in `module` (unused at inference)."""
    return [
        p
        for op in module.modules()
        if isinstance(op, FusionOp)
        for name in op.TRAINING_ONLY
        for p in getattr(op, name).parameters()
    ]


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of inference parameters (shared tensors counted once, training-only ones not at all)."""
    seen: set[int] = {id(p) for p in training_only_parameters(module)}
    total = 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def fft_flops(shape: Sequence[int], dims: Sequence[int], real: bool) -> int:
    """FLOPs of an FFT over `dims` of a tensor of `shape`: `5 N log2 N` per complex signal."""
    n = math.prod(shape[d] for d in dims)
    signals = math.prod(shape) // n
    per_signal = 5 * n * math.log2(n) if n > 1 else 0.0
    return round(signals * per_signal * (0.5 if real else 1.0))


def _fft_r2c_flop(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return fft_flops(x_shape, dim, real=True)


def _fft_c2r_flop(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return fft_flops(out_shape, dim, real=True)


def _fft_c2c_flop(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return fft_flops(x_shape, dim, real=False)


def _sdpa_cpu_flop(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q_shape, k_shape, v_shape)


def _native_mha_flop(q_shape, k_shape, v_shape, embed_dim, num_heads, *args, out_shape=None, **kwargs) -> int:
    b, lq, e = q_shape
    lk = k_shape[1]
    proj = bmm_flop((b, lq, e), (b, e, e)) + 2 * bmm_flop((b, lk, e), (b, e, e))
    hd = e // num_heads
    attn = sdpa_flop_count((b, num_heads, lq, hd), (b, num_heads, lk, hd), (b, num_heads, lk, hd))
    out = bmm_flop((b, lq, e), (b, e, e))
    return proj + attn + out


_EXTRA_FORMULAS: dict[Any, Any] = {
    aten._fft_r2c: _fft_r2c_flop,
    aten._fft_c2r: _fft_c2r_flop,
    aten._fft_c2c: _fft_c2c_flop,
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop,
    aten._native_multi_head_attention: _native_mha_flop,
}


_FORMULAS = {**flop_registry, **{op: shape_wrapper(f) for op, f in _EXTRA_FORMULAS.items()}}
# what a dispatch mode is asked about a tensor's layout: no work, never counted (as FlopCounterMode)
_QUERIES = {aten.sym_is_contiguous.default, aten.is_contiguous.default, aten.is_contiguous.memory_format,
            aten.is_strides_like_format.default, aten.is_non_overlapping_and_dense.default, aten.size.default,
            aten.sym_size.default, aten.stride.default, aten.sym_stride.default, aten.storage_offset.default,
            aten.sym_storage_offset.default, aten.numel.default, aten.sym_numel.default, aten.dim.default,
            torch.ops.prim.layout.default}


class _FlopCount(TorchDispatchMode):
    """The total of `torch.utils.flop_counter.FlopCounterMode`, by its formulas and its rule (an
    op without a formula is decomposed where it can be, and its parts counted), without its
    per-module tracking. torch wraps a dispatch mode in `torch._dynamo.disable` unless the mode
    says it may be skipped: that wrapper imports `torch._dynamo` at its first call, 1.5 CPU s in
    every process that counts (every Ray trial worker)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # counting runs eagerly, never under torch.compile: no wrapper needed

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _QUERIES:
            return NotImplemented
        if func not in _FORMULAS and func is not torch.ops.prim.device.default:
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        formula = _FORMULAS.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def count_flops(module: nn.Module, *inputs: Any, **kwargs: Any) -> int:
    """Forward FLOPs of `module(*inputs, **kwargs)` for that batch (see the module docstring)."""
    interaction = 0

    def add_interaction(op: FusionOp, args: tuple[Any, ...]) -> None:
        nonlocal interaction
        interaction += op.interaction_flops(args[0])

    hooks = [m.register_forward_pre_hook(add_interaction) for m in module.modules() if isinstance(m, FusionOp)]
    try:
        with _FlopCount() as counter:
            module(*inputs, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return int(counter.total) + interaction
