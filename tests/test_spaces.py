"""SearchSpace: loading and its errors, counting, sampling, enumeration, mutation, encoding, validation."""
from __future__ import annotations

import collections
import random
from dataclasses import replace

import numpy as np
import pytest
import yaml

from spaces import ConfigError
from spaces.args import Arg
from spaces.space import SearchSpace
from spaces.spec import ArchSpec, CellSpec

CATALOGUE = {
    "attention": (Arg("dim", "int", 64, low=1, high=512),),
    "bottleneck": (
        Arg("n_tokens", "int", 4, low=1, high=16),
        Arg("pool", "choice", "mean", choices=("mean", "cls")),
        Arg("share", "bool", False),
    ),
    "circulant": (Arg("dim", "int", 64, low=2, high=1024),),
    "concat": (),
    "low_rank": (Arg("rank", "int", 4, low=1, high=64),),
    "tensor": (Arg("proj_dim", "int", 8, low=1, high=64),),
    "gated": (Arg("temperature", "float", 1.0, low=0.0),),
}
DEPTHS2 = {"image": [0, 1, 2, 3], "audio": [0, 1, 2]}
DEPTHS3 = {"a": [0, 1, 2, 3], "b": [0, 1, 2], "c": [0, 1, 2, 3, 4]}
CONFIG2 = {
    "ops": {
        "concat": {},
        "tensor": {"proj_dim": [8, 4]},
        "low_rank": {"rank": [2, 4, 8]},
        "bottleneck": {"pool": ["cls", "mean"], "share": [True, False]},
        "gated": {"temperature": [0.5, 2]},
    },
    "widths": [32, 16],
    "activations": ["tanh", "relu"],
    "trunks": [[64, 32], [], [64]],
}


def space(config: dict | None = None, depths: dict = DEPTHS2) -> SearchSpace:
    return SearchSpace.from_dict(config, catalogue=CATALOGUE, depths=depths)


SPACES = {"two": lambda: space(CONFIG2), "three": lambda: space({}, DEPTHS3)}


@pytest.fixture(params=sorted(SPACES))
def big(request: pytest.FixtureRequest) -> SearchSpace:
    return SPACES[request.param]()


# ---- loading ----------------------------------------------------------------------
def test_defaults_fill_every_key_and_ops_default_to_the_catalogue() -> None:
    s = space({}, DEPTHS3)
    assert [o.name for o in s.ops] == sorted(CATALOGUE)
    assert s.op_map["tensor"].values() == {"proj_dim": (8,)}
    assert s.stages == ("early", "late", "hybrid") and s.max_cells == 3
    assert s.depth_map == {"a": (0, 1, 2, 3), "b": (0, 1, 2), "c": (0, 1, 2, 3, 4)}


def test_values_are_canonical_whatever_the_config_order() -> None:
    s = space(CONFIG2)
    assert s.widths == (16, 32) and s.activations == ("relu", "tanh")
    assert s.trunks == ((), (64,), (64, 32))
    assert s.op_map["bottleneck"].values() == {"n_tokens": (4,), "pool": ("mean", "cls"), "share": (False, True)}
    assert [type(v) for v in s.op_map["gated"].values()["temperature"]] == [float, float]  # 2 -> 2.0
    assert s == space({**CONFIG2, "widths": [16, 32], "stages": ["hybrid", "late", "early"]})


def test_to_dict_round_trips(big: SearchSpace) -> None:
    d = big.to_dict()
    assert SearchSpace.from_dict(d, catalogue=CATALOGUE, depths=dict(big.depths)) == big
    assert yaml.safe_load(yaml.safe_dump(d)) == d  # the resolved config can be written out


def test_from_yaml_reads_the_space_section_or_the_whole_file(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"name": "planted"}, "space": CONFIG2}))
    assert SearchSpace.from_yaml(path, catalogue=CATALOGUE, depths=DEPTHS2) == space(CONFIG2)
    path.write_text(yaml.safe_dump(CONFIG2))
    assert SearchSpace.from_yaml(path, catalogue=CATALOGUE, depths=DEPTHS2, key=None) == space(CONFIG2)
    path.write_text("data: {name: planted}\n")  # no space section: every default
    assert SearchSpace.from_yaml(path, catalogue=CATALOGUE, depths=DEPTHS2) == space({})


def test_config_depths_restrict_the_offered_taps() -> None:
    s = space({"depths": {"image": [3, 1]}})
    assert s.depth_map == {"audio": (0, 1, 2), "image": (1, 3)}
    assert s.stage_depths("early") == {"audio": 0, "image": 1}
    assert s.stage_depths("late") == {"audio": 2, "image": 3}


BAD = [  # (yaml text of the space section, key path, fragment of the message)
    ("ops: {low_rank: {rank: [2, -2]}}", "space.ops.low_rank.rank", "must be >= 1, got -2"),
    ("ops: {tensr: {}}", "space.ops.tensr", "unknown operator 'tensr'; known: attention, bottleneck, circulant"),
    ("ops: [concat, tensr]", "space.ops[1]", "unknown operator 'tensr'"),
    ("ops: {tensor: {proj_dim: [4, 100]}}", "space.ops.tensor.proj_dim", "must be <= 64, got 100"),
    ("ops: {tensor: {proj: [4]}}", "space.ops.tensor.proj", "unknown argument 'proj' of tensor; known: proj_dim"),
    ("ops: {tensor: 8}", "space.ops.tensor", "expected a mapping of argument"),
    ("ops: {low_rank: {rank: []}}", "space.ops.low_rank.rank", "expected a non-empty list of values, got []"),
    ("ops: {low_rank: {rank: [2, 2]}}", "space.ops.low_rank.rank[1]", "duplicate value 2"),
    ("ops: {bottleneck: {pool: [max]}}", "space.ops.bottleneck.pool", "expected one of mean, cls, got 'max'"),
    ("ops: {}", "space.ops", "expected at least one operator"),
    ("stages: [early, middle]", "space.stages[1]", "unknown stage 'middle'; known: early, late, hybrid"),
    ("widths: []", "space.widths", "expected a non-empty list of positive integers, got []"),
    ("widths: [16, 0]", "space.widths[1]", "expected a positive integer, got 0"),
    ("widths: [16, true]", "space.widths[1]", "expected a positive integer, got True"),
    ("activations: [relu, relu6]", "space.activations[1]", "unknown activation 'relu6'; known: relu, tanh"),
    ("max_cells: 0", "space.max_cells", "must be between 1 and 8, got 0"),
    ("max_cells: two", "space.max_cells", "expected an integer, got 'two'"),
    ("trunks: [[], 64]", "space.trunks[1]", "expected a list of hidden widths"),
    ("trunks: [[64, -1]]", "space.trunks[0][1]", "expected a positive integer, got -1"),
    ("depths: {video: [0]}", "space.depths.video", "unknown modality 'video'; known: audio, image"),
    ("depths: {image: [1, 7]}", "space.depths.image[1]", "tap depth 7 is not offered by image; offered: 0, 1, 2, 3"),
    ("opz: {}", "space.opz", "unknown key; known: activations, depths, max_cells, ops, stages, train, trunks, widths"),
    ("[early, late]", "space", "expected a mapping, got ['early', 'late']"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_config_gives_one_line_naming_file_and_key(tmp_path, text: str, key: str, fragment: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("seed: 1\nspace:\n" + "".join(f"  {line}\n" for line in text.splitlines()))
    with pytest.raises(ConfigError) as info:
        SearchSpace.from_yaml(path, catalogue=CATALOGUE, depths=DEPTHS2)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert fragment in message and "\n" not in message


def test_yaml_syntax_error_and_missing_file_name_the_file(tmp_path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("space:\n  widths: [16, 32\n  stages: [late]\n")
    with pytest.raises(ConfigError, match=rf"^{path}:\d+:\d+: invalid YAML: ") as info:
        SearchSpace.from_yaml(path, catalogue=CATALOGUE, depths=DEPTHS2)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'nope.yaml'}: no such file$"):
        SearchSpace.from_yaml(tmp_path / "nope.yaml", catalogue=CATALOGUE, depths=DEPTHS2)


def test_from_dict_errors_carry_the_where_label() -> None:
    with pytest.raises(ConfigError, match=r"^search\.space\.widths\[0\]: "):
        SearchSpace.from_dict({"widths": [-1]}, catalogue=CATALOGUE, depths=DEPTHS2, where="search.space")


# ---- counting and enumeration -----------------------------------------------------
SMALL = {
    "early": {"stages": ["early"], "ops": {"concat": {}, "tensor": {"proj_dim": [2, 4]}}, "trunks": [[], [8]]},
    "late": {"stages": ["late"], "ops": {"bottleneck": {"pool": ["mean", "cls"], "share": [True, False]}}},
    "hybrid2": {"stages": ["hybrid"], "ops": ["concat"], "widths": [8], "activations": ["relu"], "max_cells": 2},
    "hybrid1": {"stages": ["hybrid"], "ops": {"low_rank": {"rank": [1, 2]}}, "widths": [8], "max_cells": 1},
    "all": {"ops": ["concat"], "widths": [8], "activations": ["relu"], "max_cells": 2, "depths": {"image": [0, 3]}},
}
# by hand: cells = settings * widths * activations * tap choices; in "all" the one-cell
# hybrids on the lowest and on the last taps are the early (trunk []) and late specs
SMALL_SIZES = {
    "early": (1 + 2) * 3 * 2 * 1 * 2,
    "late": 4 * 3 * 2,
    "hybrid2": 12 + 12**2,
    "hybrid1": 2 * 1 * 2 * 12,
    "all": 2 + 1 + (6 - 2) + 6**2,
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_enumerate_lists_size_distinct_valid_specs(name: str) -> None:
    s = space(SMALL[name])
    specs = list(s.enumerate())
    assert s.size() == SMALL_SIZES[name] == len(specs)
    assert len(set(specs)) == len(specs) == len({x.arch_id for x in specs})
    for x in specs:
        s.validate(x)


def test_enumerate_refuses_a_space_over_the_limit(big: SearchSpace) -> None:
    with pytest.raises(ValueError, match=rf"size\(\) = {big.size()}.*limit=1000"):
        big.enumerate(limit=1000)


# ---- sampling ---------------------------------------------------------------------
def test_samples_are_valid_round_trip_and_have_stable_ids(big: SearchSpace) -> None:
    rng = random.Random(0)
    for _ in range(300):
        x = big.sample(rng)
        big.validate(x)
        again = ArchSpec.from_dict(x.to_dict())
        assert again == x and again.arch_id == x.arch_id == x.arch_id
        assert ArchSpec.from_yaml(x.to_yaml()).arch_id == x.arch_id
        reordered = replace(x, cells=tuple(replace(c, taps=c.taps[::-1], args=c.args[::-1]) for c in x.cells))
        assert reordered.arch_id == x.arch_id


def test_every_declared_argument_is_written_into_the_spec(big: SearchSpace) -> None:
    rng = random.Random(1)
    for _ in range(100):
        for cell in big.sample(rng).cells:
            assert set(cell.op_args) == set(big.op_map[cell.op].values())


def test_sample_reaches_every_stage_operator_and_value() -> None:
    s, rng = space(CONFIG2), random.Random(2)
    draws = [s.sample(rng) for _ in range(1500)]
    assert {x.stage for x in draws} == set(s.stages)
    cells = [c for x in draws for c in x.cells]
    assert {c.op for c in cells} == set(s.op_map)
    assert {dict(c.args)["rank"] for c in cells if c.op == "low_rank"} == {2, 4, 8}
    assert {len(x.cells) for x in draws if x.stage == "hybrid"} == {1, 2, 3}
    assert {x.head for x in draws if x.stage == "early"} == set(s.trunks)


def test_sample_uniform_follows_stage_sizes() -> None:
    s, rng = space(SMALL["all"]), random.Random(3)  # stage sizes 2, 1, 40 of 43
    counts = collections.Counter(s.sample_uniform(rng).stage for _ in range(4300))
    assert abs(counts["hybrid"] - 4000) < 80 and abs(counts["early"] - 200) < 60
    specs = collections.Counter(s.sample_uniform(rng) for _ in range(4300))
    assert len(specs) == 43 and max(specs.values()) < 3 * min(specs.values())


# ---- mutation ---------------------------------------------------------------------
def test_mutate_gives_a_valid_different_neighbour(big: SearchSpace) -> None:
    rng = random.Random(4)
    for _ in range(300):
        x = big.sample(rng)
        y = big.mutate(x, rng)
        assert y != x
        big.validate(y)


TINY = {
    "activation only": {"stages": ["late"], "ops": ["concat"], "widths": [8], "activations": ["relu", "tanh"]},
    "chain length only": {"stages": ["hybrid"], "ops": ["concat"], "widths": [8], "activations": ["relu"],
                          "max_cells": 2, "depths": {"image": [1], "audio": [2]}},
    "trunk only": {"stages": ["early"], "ops": ["concat"], "widths": [8], "activations": ["relu"],
                   "trunks": [[], [4]]},
    "stage only": {"stages": ["early", "late"], "ops": ["concat"], "widths": [8], "activations": ["relu"],
                   "trunks": [[]]},
    "one arg": {"stages": ["late"], "ops": {"tensor": {"proj_dim": [2, 3]}}, "widths": [8], "activations": ["relu"]},
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_mutate_works_in_tiny_spaces(name: str) -> None:
    s, rng = space(TINY[name]), random.Random(5)
    specs = list(s.enumerate())
    assert len(specs) == s.size() >= 2
    for x in specs:
        for _ in range(5):
            y = s.mutate(x, rng)
            assert y != x and y in specs


def test_mutate_refuses_a_one_spec_space() -> None:
    s = space({"stages": ["late"], "ops": ["concat"], "widths": [8], "activations": ["relu"]})
    (only,) = s.enumerate()
    with pytest.raises(ValueError, match="only one spec"):
        s.mutate(only, random.Random(0))


def _changes(x: ArchSpec, y: ArchSpec) -> set[str]:
    if x.stage != y.stage:
        return {"stage"}
    if len(x.cells) != len(y.cells):
        return {"cells"}
    diff = {f for a, b in zip(x.cells, y.cells, strict=True) for f in ("taps", "op", "args", "width", "activation")
            if getattr(a, f) != getattr(b, f)}
    return diff | ({"head"} if x.head != y.head else set())


def test_mutate_changes_one_thing_and_reaches_every_kind_of_change() -> None:
    s, rng = space(CONFIG2), random.Random(6)
    seen = collections.Counter()
    for _ in range(600):
        x = s.sample(rng)
        kinds = _changes(x, s.mutate(x, rng))
        assert len(kinds) == 1 or kinds == {"op", "args"}, kinds
        seen.update(kinds)
    assert set(seen) == {"stage", "cells", "taps", "op", "args", "width", "activation", "head"}


# ---- encoding ---------------------------------------------------------------------
def test_encode_has_one_length_finite_values_in_unit_range(big: SearchSpace) -> None:
    rng = random.Random(7)
    assert big.encode_length == len(big.feature_names)
    specs = {big.sample(rng) for _ in range(300)}
    codes = np.stack([big.encode(x) for x in specs])
    assert codes.shape == (len(specs), big.encode_length) and codes.dtype == np.float64
    assert np.isfinite(codes).all() and codes.min() >= 0 and codes.max() <= 1
    assert len({c.tobytes() for c in codes}) == len(specs)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_encode_tells_every_spec_of_a_small_space_apart(name: str) -> None:
    s = space(SMALL[name])
    assert len({s.encode(x).tobytes() for x in s.enumerate()}) == s.size()


def test_encode_layout() -> None:
    s = space(CONFIG2)
    cell = CellSpec(("image@3", "audio@2"), "low_rank", 32, "tanh", (("rank", 4),))
    code = dict(zip(s.feature_names, s.encode(ArchSpec("late", (cell,))), strict=True))
    assert code["stage=late"] == 1 and code["stage=early"] == 0
    assert code["c0.present"] == 1 and code["c0.depth.image"] == code["c0.depth.audio"] == 1
    assert code["c0.op=low_rank"] == 1 and code["c0.low_rank.rank"] == pytest.approx(0.5)  # log 4 between 2 and 8
    assert code["c0.tensor.proj_dim"] == 0 and code["c0.width"] == 1 and code["c0.act=tanh"] == 1
    assert all(v == 0 for k, v in code.items() if k.startswith(("c1.", "c2.", "trunk")))
    early = ArchSpec("early", (replace(cell, taps=("image@0", "audio@0")),), (64, 32))
    code = dict(zip(s.feature_names, s.encode(early), strict=True))
    assert code["c0.depth.image"] == 0 and code["trunk=[64, 32]"] == 1 and code["trunk.layers"] == 1


# ---- validation -------------------------------------------------------------------
S = space(CONFIG2)
CELL = CellSpec(("image@1", "audio@2"), "low_rank", 16, "relu", (("rank", 4),))
HYBRID = ArchSpec("hybrid", (CELL, replace(CELL, op="concat", args=())))
EARLY = ArchSpec("early", (replace(CELL, taps=("image@0", "audio@0")),), (64,))
LATE = ArchSpec("late", (replace(CELL, taps=("image@3", "audio@2")),))
INVALID = [
    (replace(HYBRID, stage="middle"), "stage: 'middle' is not in this space"),
    (ArchSpec("hybrid", (CELL,) * 4), "cells: a hybrid spec here has 1..3 cells, got 4"),
    (ArchSpec("hybrid", ()), "cells: a hybrid spec here has 1..3 cells, got 0"),
    (replace(LATE, cells=LATE.cells * 2), "cells: a late spec here has exactly 1 cells, got 2"),
    (replace(EARLY, head=(128,)), "head: [128] is not a trunk of this space"),
    (replace(LATE, head=(64,)), "head: a late spec has no trunk"),
    (ArchSpec("hybrid", (replace(CELL, taps=("image@9", "audio@2")),)), "cells[0].taps: depth 9 of image is not"),
    (ArchSpec("hybrid", (replace(CELL, taps=("image@1",)),)), "cells[0].taps: expected one tap per modality"),
    (ArchSpec("hybrid", (replace(CELL, taps=("image@1", "audio@1", "video@0")),)), "expected one tap per modality"),
    (ArchSpec("hybrid", (replace(CELL, taps=("image@1", "image@2")),)), "expected one tap per modality"),
    (replace(EARLY, cells=(CELL,)), "cells[0].taps: a early cell taps the lowest depth"),
    (replace(LATE, cells=(CELL,)), "cells[0].taps: a late cell taps the last depth"),
    (replace(HYBRID, cells=(replace(CELL, op="attention", args=(("dim", 64),)),)), "cells[0].op: 'attention' is not"),
    (replace(HYBRID, cells=(CELL, replace(CELL, args=(("rank", 3),)))), "cells[1].args.rank: 3 is not searched"),
    (replace(HYBRID, cells=(replace(CELL, args=(("rank", "4"),)),)), "cells[0].args.rank: expected an integer"),
    (replace(HYBRID, cells=(replace(CELL, args=()),)), "cells[0].args.rank: missing"),
    (replace(HYBRID, cells=(replace(CELL, op="gated", args=(("temperature", 2),)),)),
     "cells[0].args.temperature: write 2.0, not 2"),
    (replace(HYBRID, cells=(replace(CELL, args=(("rank", 4), ("k", 1))),)), "cells[0].args.k: unknown argument"),
    (replace(HYBRID, cells=(replace(CELL, width=24),)), "cells[0].width: 24 is not offered; widths: 16, 32"),
    (replace(HYBRID, cells=(replace(CELL, activation="gelu"),)), "cells[0].activation: 'gelu' is not offered"),
]


@pytest.mark.parametrize("spec", [HYBRID, EARLY, LATE])
def test_validate_accepts_the_base_specs(spec: ArchSpec) -> None:
    S.validate(spec)
    assert S.contains(spec)


@pytest.mark.parametrize(("spec", "message"), INVALID, ids=[m[:40] for _, m in INVALID])
def test_validate_rejects_what_the_space_cannot_produce(spec: ArchSpec, message: str) -> None:
    with pytest.raises(ValueError) as info:
        S.validate(spec)
    assert message in str(info.value)
    assert not S.contains(spec)


# ---- the real operator catalogue --------------------------------------------------
def test_space_over_the_registered_operators() -> None:
    from fusion_ops import fusion_args, list_fusions

    catalogue = {n: fusion_args(n) for n in list_fusions()}
    s = SearchSpace.from_dict({}, catalogue=catalogue, depths=DEPTHS2)
    rng = random.Random(8)
    assert [o.name for o in s.ops] == list_fusions()
    for _ in range(50):
        x = s.sample(rng)
        s.validate(s.mutate(x, rng))
        assert s.encode(x).shape == (s.encode_length,)
