"""Costing candidates fast stays exact: `cost_function` (per-cell counts, `HeadCosts`) against
the whole built `FusionHead` plus the backbones, and against `candidate_cost` itself."""
from __future__ import annotations

import random

import pytest
import torch

from fusion_ops import candidate_cost
from fusion_ops.cost import count_flops, count_params
from fusion_ops.head_cost import HeadCosts
from fusion_ops.model import FusionHead, deepest_taps
from search.engine.run import Prepared, cost_function
from spaces.spec import ArchSpec, CellSpec
from tests.real_spaces import ENUMERABLE, every_form, prepared


def slow_cost(p: Prepared):
    """The obvious way: build the whole head, count it, add each backbone cut at the deepest tap read."""
    lean = {}

    def backbone(m: str, d: int) -> tuple[int, int]:
        if (m, d) not in lean:
            b = p.backbones[m].lean(d)
            lean[m, d] = count_params(b), count_flops(b, torch.zeros(1, *b.input_shape))
        return lean[m, d]

    def cost(spec: ArchSpec) -> tuple[int, int]:
        head = FusionHead(spec, p.taps.tap_shapes, p.taps.num_classes, flat=p.taps.flat_taps())
        runs = [backbone(m, d) for m, d in deepest_taps(spec).items()]
        return (count_params(head) + sum(r[0] for r in runs),
                count_flops(head, head.example_taps(1)) + sum(r[1] for r in runs))

    return cost


def sampled(name: str, n: int, seed: int = 0) -> list[ArchSpec]:
    space, rng = prepared(name).config.space, random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


@pytest.mark.parametrize("name", ENUMERABLE)
def test_fast_cost_equals_the_built_head_on_every_spec_of_an_enumerable_space(name: str) -> None:
    p = prepared(name)
    fast, slow = cost_function(p), slow_cost(p)
    specs = every_form(p.config.space)  # the canonical specs and their twins
    assert len(specs) > p.config.space.size()
    wrong = [s.describe() for s in specs if fast(s) != slow(s)]
    assert not wrong, wrong[:3]


def test_fast_cost_equals_the_built_head_on_sampled_specs_of_the_default_space() -> None:
    p = prepared("av_digits.yaml")
    fast, slow = cost_function(p), slow_cost(p)
    specs = sampled("av_digits.yaml", 300)
    assert {s.stage for s in specs} == {"early", "late", "hybrid"} and max(len(s.cells) for s in specs) == 2
    assert {c.op for s in specs for c in s.cells} == {o.name for o in p.config.space.ops}
    wrong = [s.describe() for s in specs if fast(s) != slow(s)]
    assert not wrong, wrong[:3]


@pytest.mark.parametrize("name", ["av_digits.yaml", "bench_xor.yaml"])
def test_fast_cost_equals_candidate_cost(name: str) -> None:
    p = prepared(name)
    fast = cost_function(p)
    for spec in sampled(name, 40, seed=1):
        want = candidate_cost(spec, p.backbones, p.taps.num_classes)
        assert fast(spec) == (want["params_total"], want["flops_total"]), spec.describe()


def test_each_distinct_cell_and_head_is_counted_once() -> None:
    p = prepared("av_digits.yaml")
    costs = HeadCosts(p.taps.tap_shapes, p.taps.num_classes, flat=p.taps.flat_taps())
    specs = sampled("av_digits.yaml", 200, seed=2)
    first = [costs(s) for s in specs]
    n = costs.counted
    assert n < 2 * len(specs)  # cells recur across specs
    assert [costs(s) for s in specs] == first and costs.counted == n  # nothing built again
    cell = specs[0].cells[0]
    chained = ArchSpec("hybrid", (cell, cell))
    assert costs.cell(cell, None) != costs.cell(cell, cell.width)  # fed `_prev`: another cell
    assert costs(chained)[0] == (costs.cell(cell, None)[0] + costs.cell(cell, cell.width)[0]
                                 + costs.head(cell.width, ())[0])


def test_a_spec_the_head_refuses_is_refused_alike() -> None:
    p = prepared("av_digits.yaml")
    costs = HeadCosts(p.taps.tap_shapes, p.taps.num_classes, flat=p.taps.flat_taps())
    unknown = ArchSpec("late", (CellSpec(("image@7", "audio@2"), "concat", 16),))
    too_big = ArchSpec("late", (CellSpec(("image@2", "audio@2"), "tensor", 16, "relu", (("proj_dim", 300),)),))
    for spec in (unknown, too_big):
        with pytest.raises(ValueError) as head_error:
            FusionHead(spec, p.taps.tap_shapes, p.taps.num_classes)
        with pytest.raises(ValueError) as fast_error:
            costs(spec)
        assert str(fast_error.value) == str(head_error.value)
