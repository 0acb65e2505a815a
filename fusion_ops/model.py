"""A candidate: frozen backbones, then the fusion cells of an `ArchSpec`, then its head.

The trainable part, `FusionHead` (cells + head), reads taps by name (`"image@2"`),
so a search can train it on cached taps and never run a backbone per candidate;
`FusionModel` puts the backbones in front of it for raw inputs.

How a vector operator (concat, tensor, ...) reads a token tap `(B, T, d)`: a tap of
fixed length (not padded) with at most `FLAT_MAX` numbers per sample is flattened to
`(B, T * d)`, as a hand-made model would read a small image or an MFCC window; a padded
tap, or a larger one, is mean-pooled over its real tokens (`(B, d)`). Pooling a small
fixed-length input throws away where things are: on `av_digits` a late-fusion concat
of the raw 8x8 image rows and 12 MFCC frames scored 0.63 val pooled, 0.80 flattened
(experiments/RESULTS.md, "Search quality"). Token operators (attention, bottleneck,
memory) read tokens as tokens.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fusion_ops._registry import create_fusion, fusion_class
from fusion_ops.backbones import Backbone, seeded_init
from fusion_ops.base import LENGTHS_SUFFIX, lengths_key, masked_mean, step_masks, takes_masks
from fusion_ops.cost import count_flops, count_params
from spaces.spec import ACTIVATIONS, PREV, STAGES, ArchSpec, CellSpec, make_tap, parse_tap

ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "identity": nn.Identity,
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}
assert set(ACTIVATION_MODULES) == set(ACTIVATIONS), "activation table out of step with spaces.spec"


FLAT_MAX = 4096  # numbers per sample up to which a fixed-length token tap is read flattened


def flat_taps(tap_shapes: Mapping[str, tuple[int, ...]], padded: Collection[str] = ()) -> frozenset[str]:
    """The token taps a vector operator reads flattened: fixed length (not in `padded`, a
    collection of tap names) and at most `FLAT_MAX` numbers per sample."""
    return frozenset(t for t, s in tap_shapes.items()
                     if len(s) == 2 and t not in padded and math.prod(s) <= FLAT_MAX)


def required_taps(spec: ArchSpec) -> list[str]:
    """Every tap any cell reads, unique, sorted by (modality, depth)."""
    return sorted({t for c in spec.cells for t in c.taps}, key=parse_tap)


def check_spec(spec: ArchSpec, n_taps: Mapping[str, int]) -> None:
    """Raise ValueError unless `spec` can be built on backbones with `n_taps[m]` taps.

    The model reads exactly the taps the cells name; only `hybrid` chains its cells
    (each after the first is fed the previous one's output as `_prev`), and `early`
    and `late` are one cell. Which depths a stage may tap (early: the lowest offered,
    late: the last) is the search space's rule (`SearchSpace.validate`), not checked here.
    """
    if spec.stage not in STAGES:
        raise ValueError(f"spec.stage: unknown stage {spec.stage!r}; known: {', '.join(STAGES)}")
    if not spec.cells:
        raise ValueError("spec.cells: a spec needs at least one fusion cell")
    if spec.stage != "hybrid" and len(spec.cells) != 1:
        raise ValueError(f"spec.cells: {spec.stage} fusion is one cell, got {len(spec.cells)}")
    for i, cell in enumerate(spec.cells):
        _check_cell(cell, n_taps, f"spec.cells[{i}]")
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in spec.head):
        raise ValueError(f"spec.head: hidden widths must be positive integers, got {list(spec.head)}")


def _check_cell(cell: CellSpec, n_taps: Mapping[str, int], where: str) -> None:
    if cell.activation not in ACTIVATION_MODULES:
        known = ", ".join(sorted(ACTIVATION_MODULES))
        raise ValueError(f"{where}.activation: unknown activation {cell.activation!r}; known: {known}")
    modalities = [parse_tap(t)[0] for t in cell.taps]
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"{where}.taps: one tap per modality, got {list(cell.taps)}")
    for tap in cell.taps:
        m, depth = parse_tap(tap)
        if m not in n_taps:
            raise ValueError(f"{where}.taps: no backbone for modality {m!r}; known: {', '.join(sorted(n_taps))}")
        if depth >= n_taps[m]:
            raise ValueError(f"{where}.taps: {tap!r} is past the last tap {m}@{n_taps[m] - 1}")


def prev_widths(spec: ArchSpec) -> list[int | None]:
    """Per cell, the width of the previous cell's output it is fed (`_prev`), or None: in a
    hybrid chain every cell after the first is fed the previous one's output."""
    return [spec.cells[i - 1].width if spec.stage == "hybrid" and i > 0 else None for i in range(len(spec.cells))]


def head_mlp(in_width: int, hidden: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """The head after the cells: `Linear + ReLU` per hidden width (the trunk), then the classifier."""
    dims = (in_width, *hidden)
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], num_classes))


class FusionCell(nn.Module):
    """`act(op({m: taps["m@d"]}))`, chained: `act(op({m: taps["m@d"], _prev: prev}))`; `(B, width)`.

    A vector operator reads the taps in `flat` flattened (`(B, T * d)`) and pools other
    token taps; a token operator reads tokens (see the module docstring).
    """

    def __init__(self, cell: CellSpec, tap_shapes: Mapping[str, tuple[int, ...]], prev_width: int | None,
                 flat: Collection[str] = frozenset()) -> None:
        super().__init__()
        self.sources: tuple[tuple[str, str], ...] = tuple((parse_tap(t)[0], t) for t in cell.taps)
        self.chained = prev_width is not None
        token_op = fusion_class(cell.op).TOKEN_INPUTS
        self.flat: frozenset[str] = frozenset() if token_op else frozenset(t for _, t in self.sources if t in flat)
        in_dims = {m: math.prod(tap_shapes[t]) if t in self.flat else tap_shapes[t][-1] for m, t in self.sources}
        if prev_width is not None:
            in_dims[PREV] = prev_width
        self.op = create_fusion(cell.op, in_dims, cell.width, **cell.op_args)
        self.act = ACTIVATION_MODULES[cell.activation]()
        self.op_takes_masks = self.op.TOKEN_INPUTS and takes_masks(self.op)

    def forward(self, taps: Mapping[str, Tensor], prev: Tensor | None = None) -> Tensor:
        feats = {m: taps[t].flatten(1) if t in self.flat else taps[t] for m, t in self.sources}
        masks = step_masks(taps, dict(self.sources))  # padded token taps only
        padded_flat = sorted(t for m, t in self.sources if t in self.flat and m in masks)
        if padded_flat:
            raise ValueError(f"tap {padded_flat[0]} comes with lengths (padded) but this model reads it flattened;"
                             " build it for padded data (a backbone with `padded = True`, or `flat` without the tap)")
        if masks and not self.op_takes_masks:  # the op would mean-pool: pool the real tokens here
            feats.update({m: masked_mean(feats[m], mask) for m, mask in masks.items()})
        if self.chained:
            assert prev is not None, "a chained cell needs the previous cell's output"
            feats[PREV] = prev
        return self.act(self.op(feats, masks=masks) if masks and self.op_takes_masks else self.op(feats))


class FusionHead(nn.Module):
    """The trainable part of a candidate: cells, then the head MLP (ReLU) and the classifier.

    `forward(taps)` takes a dict of tap tensors by name, each `(B, d)` or `(B, T, d)`
    (extra taps are ignored) and returns logits `(B, num_classes)`. `dropout` drops each
    cell's output (after its activation) in training mode only: no parameters, no FLOPs,
    and eval-mode outputs are the same whatever its value. `flat`: the token taps vector
    operators read flattened (default `flat_taps(tap_shapes)`: every small one, none padded).
    """

    def __init__(self, spec: ArchSpec, tap_shapes: Mapping[str, tuple[int, ...]], num_classes: int,
                 dropout: float = 0.0, flat: Collection[str] | None = None) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {dropout!r}")
        missing = [t for t in required_taps(spec) if t not in tap_shapes]
        if missing:
            raise ValueError(f"spec reads taps with no known shape: {', '.join(missing)}")
        self.tap_shapes: dict[str, tuple[int, ...]] = {t: tuple(tap_shapes[t]) for t in required_taps(spec)}
        flat = flat_taps(self.tap_shapes) if flat is None else flat
        self.flat: frozenset[str] = frozenset(t for t in self.tap_shapes if t in flat)
        self.cells = nn.ModuleList(FusionCell(cell, self.tap_shapes, prev, self.flat)
                                   for cell, prev in zip(spec.cells, prev_widths(spec), strict=True))
        self.head = head_mlp(spec.cells[-1].width, spec.head, num_classes)
        self.num_classes = num_classes
        self.drop = nn.Dropout(dropout)
        self.arch_id = spec.arch_id

    def example_taps(self, batch: int = 1) -> dict[str, Tensor]:
        """Zero taps of the expected shapes, `{tap: (batch, *shape)}` (for costs and checks)."""
        return {t: torch.zeros(batch, *s) for t, s in self.tap_shapes.items()}

    def forward(self, taps: Mapping[str, Tensor]) -> Tensor:
        missing = [t for t in self.tap_shapes if t not in taps]
        if missing:
            raise ValueError(f"fusion {self.arch_id}: missing taps {', '.join(missing)}")
        h: Tensor | None = None
        for cell in self.cells:
            h = self.drop(cell(taps, h))
        return self.head(h)


def deepest_taps(spec: ArchSpec) -> dict[str, int]:
    """`{modality: the deepest tap depth the spec reads}`: how much of each backbone runs."""
    out: dict[str, int] = {}
    for tap in required_taps(spec):
        m, d = parse_tap(tap)
        out[m] = max(out.get(m, 0), d)
    return out


class FusionModel(nn.Module):
    """Lean backbones (one per modality the spec reads) in front of a `FusionHead`.

    `forward(inputs)` takes raw inputs `{m: (B, *input_shape_m)}`;
    `forward_taps(taps)` takes precomputed taps `{"m@d": (B, ...)}`; both give
    logits `(B, num_classes)`, identical for the same batch. Each backbone is cut after
    the deepest block the spec reads (`Backbone.lean`): a spec on raw inputs runs no block,
    and the model holds, runs and is charged for exactly the blocks it needs. Frozen
    backbones run in eval mode under `no_grad`. `flat` as for `FusionHead`; by default
    from the backbones (the token taps of a backbone marked `padded` are pooled).
    """

    def __init__(self, spec: ArchSpec, backbones: Mapping[str, Backbone], num_classes: int, frozen: bool,
                 dropout: float = 0.0, flat: Collection[str] | None = None) -> None:
        super().__init__()
        self._spec = spec
        depth = deepest_taps(spec)
        self.modalities: tuple[str, ...] = tuple(sorted(depth))
        # a list in sorted-name order: modality names need not be valid ModuleDict keys
        self.backbones = nn.ModuleList(backbones[m].lean(depth[m]) for m in self.modalities)
        self.frozen = frozen
        shapes = {
            make_tap(m, d): s
            for m, b in self.named_backbones()
            for d, s in enumerate(b.tap_shapes)
        }
        if flat is None:
            padded = {make_tap(m, d) for m, b in self.named_backbones() if b.padded for d in b.depths}
            flat = flat_taps(shapes, padded)
        self.fusion = FusionHead(spec, shapes, num_classes, dropout, flat)
        self.train()

    def named_backbones(self) -> list[tuple[str, Backbone]]:
        """`(modality, backbone)` in sorted-name order, typed: an `nn.ModuleList` hands out
        plain `nn.Module`s."""
        pairs = []
        for m, b in zip(self.modalities, self.backbones, strict=True):
            assert isinstance(b, Backbone)  # built from Backbones in __init__
            pairs.append((m, b))
        return pairs

    @property
    def spec(self) -> ArchSpec:
        """The (frozen) architecture this model was built from."""
        return self._spec

    @property
    def arch_id(self) -> str:
        return self._spec.arch_id

    def train(self, mode: bool = True) -> FusionModel:
        super().train(mode)
        if self.frozen:
            self.backbones.eval()
        return self

    def compute_taps(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The taps the fusion reads, `{"m@d": (B, ...)}`, from raw inputs."""
        taps: dict[str, Tensor] = {}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            for m, backbone in self.named_backbones():
                lengths = inputs.get(lengths_key(m))  # padded sequences: (B,) valid steps
                for d, tap in enumerate(backbone.forward_taps(inputs[m], lengths)):
                    taps[make_tap(m, d)] = tap
                for d, n in enumerate(backbone.tap_lengths(lengths)):
                    if n is not None:
                        taps[lengths_key(make_tap(m, d))] = n
        return {t: v for t, v in taps.items() if t.removesuffix(LENGTHS_SUFFIX) in self.fusion.tap_shapes}

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.fusion(self.compute_taps(inputs))

    def forward_taps(self, taps: Mapping[str, Tensor]) -> Tensor:
        return self.fusion(taps)


def build_model(
    spec: ArchSpec,
    backbones: Mapping[str, Backbone],
    num_classes: int,
    freeze_backbones: bool = True,
    generator: torch.Generator | None = None,
    dropout: float = 0.0,
    flat: Collection[str] | None = None,
) -> FusionModel:
    """The candidate `spec` over `backbones` with a `num_classes`-way classifier.

    Frozen backbones are shared with the caller (their parameters set to not
    require grad); unfrozen ones are copied, so fine-tuning one candidate never
    changes another's. Fusion weights are drawn from `generator` when given. `flat`:
    see `FusionModel`.
    """
    check_spec(spec, {m: len(b.tap_shapes) for m, b in backbones.items()})
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: must be a positive integer, got {num_classes!r}")
    chosen: dict[str, Backbone] = {}
    for m in sorted({parse_tap(t)[0] for t in required_taps(spec)}):
        chosen[m] = backbones[m] if freeze_backbones else copy.deepcopy(backbones[m])
        chosen[m].requires_grad_(not freeze_backbones)
    with seeded_init(generator):
        return FusionModel(spec, chosen, num_classes, frozen=freeze_backbones, dropout=dropout, flat=flat)


def model_cost(model: FusionModel) -> dict[str, int]:
    """Parameters and forward FLOPs of one sample (batch of 1), see `candidate_cost`."""
    flops_fusion = count_flops(model.fusion, model.fusion.example_taps(1))
    flops_backbones = sum(count_flops(b, torch.zeros(1, *b.input_shape)) for _, b in model.named_backbones())
    return {
        "params_total": count_params(model),
        "params_fusion": count_params(model.fusion),
        "flops_total": flops_backbones + flops_fusion,
        "flops_fusion": flops_fusion,
    }


def candidate_cost(spec: ArchSpec, backbones: Mapping[str, Backbone], num_classes: int) -> dict[str, Any]:
    """`params_total`, `params_fusion`, `flops_total`, `flops_fusion` of one sample, untrained.

    `*_fusion` is the part that trains: cells + head on cached taps. `*_total` adds
    the part of every backbone the spec reads that runs,
    as the model runs it on raw inputs: only its blocks up to the deepest tap read (none for
    a spec on raw inputs). FLOPs follow `fusion_ops.cost`.
    """
    check_spec(spec, {m: len(b.tap_shapes) for m, b in backbones.items()})
    # built directly, not by build_model: costing must not freeze the caller's backbones
    return model_cost(FusionModel(spec, backbones, num_classes, frozen=True))
