"""One model, one spec: the twins a space folds build the same model, and no two canonical specs do.

On the spaces experiments/bench_search.py trains whole (bench_xor, bench_av_digits), on
their real tap shapes: every spec the space held before the fold maps (`canonical`) onto
one `enumerate` gives, a twin builds the canonical spec's model exactly (same parameter
names and shapes, and with the same weights the same outputs), and the canonical specs'
built heads are pairwise distinct.
"""
from __future__ import annotations

import collections
import random

import pytest
import torch

from fusion_ops.cost import count_flops
from fusion_ops.model import FusionHead
from search.strategies import make_strategy
from spaces.space import SearchSpace
from spaces.spec import ArchSpec, CellSpec
from tests.real_spaces import ENUMERABLE, every_form, prepared


def head(spec: ArchSpec, name: str, seed: int = 0) -> FusionHead:
    p = prepared(name)
    torch.manual_seed(seed)
    return FusionHead(spec, p.taps.tap_shapes, p.taps.num_classes, flat=p.taps.flat_taps()).eval()


def signature(spec: ArchSpec, name: str) -> tuple:
    """What decides a built head: its modules (types, sizes, activations), parameter names and
    shapes, each operator's arguments, the taps each cell reads (flattened or not) and its FLOPs."""
    h = head(spec, name)
    params = tuple((k, tuple(v.shape)) for k, v in h.state_dict().items())
    args = tuple(tuple(sorted(m.args.items())) for m in h.modules() if hasattr(m, "args") and isinstance(m.args, dict))
    taps = tuple(tuple((t, t in cell.flat) for _, t in cell.sources) for cell in h.cells)
    return repr(h), params, args, taps, count_flops(h, h.example_taps(1))


def random_taps(name: str, batch: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {t: torch.randn(batch, *s, generator=g) for t, s in prepared(name).taps.tap_shapes.items()}


@pytest.mark.parametrize("name", ENUMERABLE)
def test_every_old_spec_maps_onto_one_enumerated_canonical_spec(name: str) -> None:
    space = prepared(name).config.space
    old, new = every_form(space), list(space.enumerate())
    assert len(set(new)) == len(new) == space.size() < len(set(old))
    assert {space.canonical(x) for x in old} == set(new)
    assert all(space.is_canonical(x) and space.canonical(x) == x for x in new)
    twins = [x for x in old if not space.is_canonical(x)]
    # exactly the twins: one-cell hybrids on the lowest and on the last taps
    assert {(x.stage, len(x.cells), x.head) for x in twins} == {("hybrid", 1, ())}
    fixed = [tuple(sorted(space.stage_depths(s).items())) for s in ("early", "late")]
    assert {tuple(sorted(x.cells[0].depths.items())) for x in twins} == set(fixed)
    assert {space.canonical(x).stage for x in twins} == {"early", "late"}
    assert len(old) - len(new) == len(twins)
    for x in twins:
        space.validate(x)  # a run recorded before the fold still holds valid specs


@pytest.mark.parametrize("name", ENUMERABLE)
def test_a_twin_builds_its_canonical_specs_model(name: str) -> None:
    space = prepared(name).config.space
    taps = random_taps(name)
    twins = [x for x in every_form(space) if not space.is_canonical(x)]
    assert twins
    for twin in twins:
        canon = space.canonical(twin)
        a, b = head(canon, name, seed=3), head(twin, name, seed=3)
        assert signature(canon, name) == signature(twin, name)
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)  # same init, same weights
        b = head(twin, name, seed=4)
        b.load_state_dict(sa)  # strict: the same parameters by name and shape
        with torch.no_grad():
            torch.testing.assert_close(a(taps), b(taps), rtol=0, atol=0)


@pytest.mark.parametrize("name", ENUMERABLE)
def test_no_two_canonical_specs_build_the_same_model(name: str) -> None:
    space = prepared(name).config.space
    seen: dict[tuple, ArchSpec] = {}
    for spec in space.enumerate():
        sig = signature(spec, name)
        assert sig not in seen, f"{spec.describe()} builds the model of {seen[sig].describe()}"
        seen[sig] = spec


# ---- the fold on small spaces: counting, sampling, mutation, strategies ------------------
CATALOGUE = {"concat": (), "tensor": ()}
FOLDS = {  # name: (config, depths, specs by stage after the fold)
    "all stages": ({"ops": ["concat", "tensor"], "widths": [8], "activations": ["relu"], "max_cells": 2,
                    "trunks": [[], [4]]}, {"a": [0, 1, 2], "b": [0, 2]}, {"early": 4, "late": 2, "hybrid": 8 + 144}),
    "no empty trunk": ({"ops": ["concat"], "widths": [8], "activations": ["relu"], "max_cells": 1,
                        "trunks": [[4]]}, {"a": [0, 1], "b": [0, 2]}, {"early": 1, "late": 1, "hybrid": 3}),
    "no late": ({"stages": ["early", "hybrid"], "ops": ["concat"], "widths": [8], "activations": ["relu"],
                 "max_cells": 1, "trunks": [[]]}, {"a": [0, 1], "b": [0, 2]}, {"early": 1, "late": 0, "hybrid": 3}),
    "one depth each": ({"ops": ["concat"], "widths": [8], "activations": ["relu"], "max_cells": 2,
                        "trunks": [[], [4]]}, {"a": [1], "b": [2]}, {"early": 1, "late": 1, "hybrid": 1}),
    "only the empty trunk": ({"stages": ["early", "late"], "ops": ["concat"], "widths": [8],
                              "activations": ["relu"], "trunks": [[]]}, {"a": [1], "b": [2]},
                             {"early": 0, "late": 1, "hybrid": 0}),
    "hybrid only": ({"stages": ["hybrid"], "ops": ["concat"], "widths": [8], "activations": ["relu"],
                     "max_cells": 1}, {"a": [0, 1], "b": [0, 2]}, {"early": 0, "late": 0, "hybrid": 4}),
}


def fold_space(name: str) -> SearchSpace:
    config, depths, _ = FOLDS[name]
    return SearchSpace.from_dict(config, catalogue=CATALOGUE, depths=depths)


@pytest.mark.parametrize("name", sorted(FOLDS))
def test_counting_enumeration_and_sampling_give_canonical_specs_only(name: str) -> None:
    space, want = fold_space(name), FOLDS[name][2]
    specs = list(space.enumerate())
    assert {s: space.stage_size(s) for s in ("early", "late", "hybrid")} == want
    assert len(specs) == len(set(specs)) == space.size() == sum(want.values())
    assert {space.canonical(x) for x in every_form(space)} == set(specs)
    rng = random.Random(0)
    drawn = [space.sample(rng) for _ in range(300)] + [space.sample_uniform(rng) for _ in range(300)]
    assert all(space.is_canonical(x) for x in drawn)
    assert {x.stage for x in drawn} == {s for s, n in want.items() if n}
    for x in specs:
        for _ in range(3):
            if space.size() > 1:
                y = space.mutate(x, rng)
                assert y in specs and y != x


def test_canonical_prefers_late_then_early_and_keeps_training_settings() -> None:
    space = fold_space("one depth each")
    cell = CellSpec(("a@1", "b@2"), "concat", 8, "relu")
    late = ArchSpec("late", (cell,), (), (("lr", 0.01),))
    for twin in (ArchSpec("hybrid", (cell,), (), (("lr", 0.01),)), ArchSpec("early", (cell,), (), (("lr", 0.01),))):
        assert space.canonical(twin) == late and twin.arch_id != late.arch_id
    assert space.canonical(ArchSpec("early", (cell,), (4,))) == ArchSpec("early", (cell,), (4,))  # a trunk: no twin
    assert space.canonical(ArchSpec("hybrid", (cell, cell))).stage == "hybrid"


def test_a_mutated_one_cell_spec_grows_as_a_chain() -> None:
    """A late spec is the one-cell chain on the last taps: its neighbours include its
    cell moved to other depths and chains that start with it."""
    space, rng = fold_space("all stages"), random.Random(1)
    late = next(x for x in space.enumerate() if x.stage == "late")
    kinds = collections.Counter()
    for _ in range(300):
        y = space.mutate(late, rng)
        kinds[(y.stage, len(y.cells))] += 1
        assert y != late and space.is_canonical(y)
    assert kinds[("hybrid", 2)] and kinds[("hybrid", 1)] and kinds[("early", 1)]


@pytest.mark.parametrize("strategy", ["random", "grid", "mfas", "nsga2"])
def test_strategies_ask_each_model_once(strategy: str) -> None:
    """Asked to exhaust a small space, a strategy asks every canonical spec once, never a twin."""
    space = fold_space("all stages")
    s = make_strategy(strategy, space, seed=0, budget=space.size(), cost_fn=lambda x: (len(x.cells), 1 + len(x.head)),
                      **({"batch_size": 8, "surrogate_steps": 20} if strategy == "mfas" else {}))
    asked = []
    for i in range(space.size()):
        spec = s.ask()
        asked.append(spec)
        s.tell(spec, {"accuracy": (i % 7) / 7, "params": len(spec.cells), "flops": 1 + len(spec.head)})
    assert set(asked) == set(space.enumerate()) and all(space.is_canonical(x) for x in asked)


def test_a_recorded_twin_is_told_as_its_canonical_spec() -> None:
    """A run recorded before the fold replays a one-cell hybrid on the last taps: the strategy
    counts the late spec as asked and never proposes it."""
    space = fold_space("one depth each")
    late = next(x for x in space.enumerate() if x.stage == "late")
    twin = ArchSpec("hybrid", late.cells)
    s = make_strategy("random", space, seed=0, budget=space.size())
    s.adopt(twin)
    s.tell(twin, {"accuracy": 0.5, "params": 1, "flops": 1})
    asked = [s.ask() for _ in range(space.size() - 1)]
    assert late not in asked and twin not in asked and set(asked) | {late} == set(space.enumerate())
