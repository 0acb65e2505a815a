"""Candidate models: specs build and run, taps route by name, stages chain, costs add up."""
from __future__ import annotations

import itertools
import random

import pytest
import torch

import fusion_ops as F
from fusion_ops.backbones import BackboneConfig, build_backbone
from fusion_ops.cost import training_only_parameters
from fusion_ops.model import (
    ACTIVATION_MODULES,
    build_model,
    candidate_cost,
    check_spec,
    required_taps,
)
from spaces.space import SearchSpace
from spaces.spec import ACTIVATIONS, PREV, ArchSpec, CellSpec, make_tap

NUM_CLASSES = 3
SHAPES = {"vec": (7,), "image": (8, 8), "audio": (20, 13)}
AUDIO = {"conv1d": BackboneConfig("conv1d", (3, 4)), "gru": BackboneConfig("gru", (5, 4))}


def make_backbones(audio="conv1d", seed=0):
    """Three tiny backbones, 3 taps each: vec (mlp), image 8x8 (cnn2d), audio (T=20, F=13)."""
    g = torch.Generator().manual_seed(seed)
    cfgs = {"vec": BackboneConfig("mlp", (6, 5)), "image": BackboneConfig("cnn2d", (3, 4)), "audio": AUDIO[audio]}
    return {m: build_backbone(cfgs[m], SHAPES[m], g) for m in sorted(cfgs)}


@pytest.fixture(scope="module")
def backbone_sets():
    return {kind: make_backbones(kind) for kind in AUDIO}


def make_inputs(batch, modalities=SHAPES, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, *SHAPES[m], generator=g) for m in sorted(modalities)}


def all_taps(backbones, inputs):
    """Every tap of every modality, computed straight from the backbones."""
    with torch.no_grad():
        return {
            make_tap(m, d): t for m, x in inputs.items() for d, t in enumerate(backbones[m].forward_taps(x))
        }


def cell(taps, op="concat", width=4, activation="identity", **args):
    return CellSpec(taps=tuple(taps), op=op, width=width, activation=activation, args=tuple(args.items()))


def tiny_space(backbones, modalities):
    return SearchSpace.from_dict(
        {"widths": [2, 3, 4], "activations": list(ACTIVATIONS), "trunks": [[], [3]], "max_cells": 3},
        catalogue={name: F.fusion_args(name) for name in F.list_fusions()},
        depths={m: backbones[m].depths for m in modalities},
    )


def test_200_sampled_specs_build_and_taps_match_inputs(backbone_sets):
    """Specs from `SearchSpace.sample` over 2 and 3 modalities and both audio backbones."""
    rng = random.Random(0)
    subsets = [s for n in (2, 3) for s in itertools.combinations(sorted(SHAPES), n)]
    spaces = [(kind, mods, tiny_space(backbone_sets[kind], mods)) for kind in AUDIO for mods in subsets]
    seen = set()
    for i in range(200):
        kind, mods, space = spaces[i % len(spaces)]
        backbones = backbone_sets[kind]
        spec = space.sample(rng)
        model = build_model(spec, backbones, NUM_CLASSES)
        inputs = make_inputs(batch=3, modalities=mods, seed=i)
        out = model(inputs)
        assert out.shape == (3, NUM_CLASSES), spec.describe()
        assert torch.isfinite(out).all(), spec.describe()
        # the same tensors from precomputed taps: a search never needs the backbones
        assert torch.equal(model.forward_taps(all_taps(backbones, inputs)), out), spec.describe()
        seen |= {(spec.stage, len(mods), kind)} | {("op", op) for op in spec.ops}
    assert {("op", op) for op in F.list_fusions()} <= seen
    assert {(s, n, k) for s in ("early", "late", "hybrid") for n in (2, 3) for k in AUDIO} <= seen


def stage_specs(op):
    return {
        "late": ArchSpec("late", (cell(["audio@2", "image@2", "vec@2"], op),)),
        "early": ArchSpec("early", (cell(["audio@0", "image@0", "vec@0"], op),), head=(4,)),
        "hybrid": ArchSpec(
            "hybrid", (cell(["image@1", "vec@0"], op), cell(["audio@1", "image@2", "vec@1"], op, width=3))
        ),
    }


@pytest.mark.parametrize("stage", ["late", "early", "hybrid"])
@pytest.mark.parametrize("op", F.list_fusions())
def test_a_model_reads_exactly_its_taps(backbone_sets, op, stage):
    """Perturbing a tap changes the output if and only if the spec reads it."""
    backbones = backbone_sets["conv1d"]
    spec = stage_specs(op)[stage]
    expected = {"late": ["audio@2", "image@2", "vec@2"], "early": ["audio@0", "image@0", "vec@0"]}
    reads = set(required_taps(spec))
    assert sorted(reads) == expected.get(stage, ["audio@1", "image@1", "image@2", "vec@0", "vec@1"])
    torch.manual_seed(0)
    model = build_model(spec, backbones, NUM_CLASSES).eval()
    taps = all_taps(backbones, make_inputs(batch=3))
    base = model.forward_taps(taps)
    for name, tap in taps.items():
        noise = torch.randn(tap.shape, generator=torch.Generator().manual_seed(7))
        out = model.forward_taps({**taps, name: tap + 3 * noise})
        assert torch.equal(out, base) == (name not in reads), f"{spec.describe()}: tap {name}"


def test_hybrid_chain_feeds_each_cell_the_previous_activated_output(backbone_sets):
    backbones = backbone_sets["gru"]
    spec = ArchSpec(
        "hybrid",
        (
            cell(["audio@0", "image@1"], "concat", width=4, activation="tanh"),
            cell(["audio@1", "vec@1"], F.list_fusions()[-1], width=3, activation="sigmoid"),
            cell(["image@2", "vec@2"], F.list_fusions()[0], width=2, activation="relu"),
        ),
    )
    model = build_model(spec, backbones, NUM_CLASSES)
    taps = all_taps(backbones, make_inputs(batch=5))
    fed, op_out, cell_out = {}, {}, {}
    for i, c in enumerate(model.fusion.cells):
        c.op.register_forward_pre_hook(lambda mod, args, i=i: fed.__setitem__(i, dict(args[0])))
        c.op.register_forward_hook(lambda mod, args, out, i=i: op_out.__setitem__(i, out))
        c.register_forward_hook(lambda mod, args, out, i=i: cell_out.__setitem__(i, out))
    model.forward_taps(taps)

    assert set(fed[0]) == {"audio", "image"}, "the first cell has no previous cell"
    for i, c in enumerate(spec.cells):
        for tap in c.taps:
            got = fed[i][tap.split("@")[0]]
            if tap in model.fusion.cells[i].flat:  # a small fixed-length token tap, read flattened by a vector op
                assert taps[tap].dim() == 3 and torch.equal(got, taps[tap].flatten(1)), f"cell {i} must read {tap}"
            else:
                assert got is taps[tap], f"cell {i} must read {tap}"
        act = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}[c.activation]
        assert torch.equal(cell_out[i], act(op_out[i]))
        if i > 0:
            assert set(fed[i]) == {*c.depths, PREV}
            assert fed[i][PREV] is cell_out[i - 1]
            assert model.fusion.cells[i].op.in_dims[PREV] == spec.cells[i - 1].width


def test_only_hybrid_chains(backbone_sets):
    backbones = backbone_sets["conv1d"]
    for spec in stage_specs("concat").values():
        model = build_model(spec, backbones, NUM_CLASSES)
        chained = [PREV in c.op.in_dims for c in model.fusion.cells]
        assert chained == [spec.stage == "hybrid" and i > 0 for i in range(len(spec.cells))]


def test_frozen_backbones_stay_frozen_and_in_eval():
    backbones = make_backbones()
    spec = stage_specs("concat")["hybrid"]
    model = build_model(spec, backbones, NUM_CLASSES)
    # the blocks that run are the caller's own (shared, not copied)
    assert all(all(a is b for a, b in zip(model.backbones[i].blocks, backbones[m].blocks, strict=False))
               for i, m in enumerate(model.modalities))
    model.train()
    assert model.training and model.fusion.training
    assert not any(b.training for b in model.backbones)
    model(make_inputs(batch=4)).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.backbones.parameters())
    assert all(p.grad is not None for p in model.fusion.parameters())


def test_unfrozen_backbones_are_copies_that_train():
    backbones = make_backbones()
    before = {m: [p.detach().clone() for p in b.parameters()] for m, b in backbones.items()}
    model = build_model(stage_specs("concat")["late"], backbones, NUM_CLASSES, freeze_backbones=False)
    assert not any(a is b for i, m in enumerate(model.modalities)
                   for a, b in zip(model.backbones[i].blocks, backbones[m].blocks, strict=False))
    model.train()
    assert all(b.training for b in model.backbones)
    model(make_inputs(batch=4)).sum().backward()
    assert all(p.grad is not None for p in model.backbones.parameters())
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    for m, b in backbones.items():  # the caller's backbones are untouched
        assert all(torch.equal(p, q) for p, q in zip(b.parameters(), before[m], strict=True))


def test_build_is_seeded_and_spec_is_read_only(backbone_sets):
    spec = stage_specs("concat")["hybrid"]
    state = torch.random.get_rng_state()
    a = build_model(spec, backbone_sets["gru"], NUM_CLASSES, generator=torch.Generator().manual_seed(5))
    b = build_model(spec, backbone_sets["gru"], NUM_CLASSES, generator=torch.Generator().manual_seed(5))
    c = build_model(spec, backbone_sets["gru"], NUM_CLASSES, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, p), q, r in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
        assert name.startswith("backbones") or not torch.equal(p, r), name
    assert a.spec == spec and a.arch_id == spec.arch_id == a.fusion.arch_id
    with pytest.raises(AttributeError):
        a.spec = stage_specs("concat")["late"]


def test_required_taps_are_unique_and_sorted_by_depth():
    spec = ArchSpec("hybrid", (cell(["a@10", "b@0"]), cell(["a@2", "b@0"]), cell(["a@10", "b@1"])))
    assert required_taps(spec) == ["a@2", "a@10", "b@0", "b@1"]


def test_activation_table_matches_spec():
    assert set(ACTIVATION_MODULES) == set(ACTIVATIONS)
    x = torch.linspace(-3, 3, 13)
    expected = {
        "relu": torch.relu(x),
        "tanh": torch.tanh(x),
        "sigmoid": torch.sigmoid(x),
        "gelu": torch.nn.functional.gelu(x),
        "identity": x,
    }
    for name, y in expected.items():
        torch.testing.assert_close(ACTIVATION_MODULES[name]()(x), y)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ArchSpec("middle", (cell(["vec@0", "image@0"]),)), "spec.stage: unknown stage 'middle'"),
        (ArchSpec("hybrid", ()), "spec.cells: a spec needs at least one fusion cell"),
        (ArchSpec("late", (cell(["vec@2", "image@2"]),) * 2), "spec.cells: late fusion is one cell, got 2"),
        (ArchSpec("late", (cell(["vec@2", "text@2"]),)), "spec.cells[0].taps: no backbone for modality 'text'"),
        (
            ArchSpec("hybrid", (cell(["vec@2", "image@2"]), cell(["vec@1", "image@3"]))),
            "spec.cells[1].taps: 'image@3' is past the last tap image@2",
        ),
        (ArchSpec("hybrid", (cell(["vec@2", "vec@1"]),)), "spec.cells[0].taps: one tap per modality"),
        (
            ArchSpec("late", (cell(["vec@2", "image@2"], activation="swish"),)),
            "spec.cells[0].activation: unknown activation 'swish'; known: gelu, identity, relu, sigmoid, tanh",
        ),
        (ArchSpec("early", (cell(["vec@0", "image@0"]),), head=(4, 0)), "spec.head: hidden widths"),
        (ArchSpec("late", (cell(["vec@2", "image@2"], op="sum"),)), "unknown fusion operator 'sum'; known: "),
        (ArchSpec("late", (cell(["vec@2", "image@2"], nope=1),)), "concat: unknown argument 'nope'"),
    ],
)
def test_bad_specs_raise_naming_the_part(backbone_sets, spec, message):
    with pytest.raises(ValueError) as err:
        build_model(spec, backbone_sets["conv1d"], NUM_CLASSES)
    assert message in str(err.value)


def test_bad_calls_raise(backbone_sets):
    backbones = backbone_sets["conv1d"]
    spec = stage_specs("concat")["late"]
    check_spec(spec, {m: 3 for m in SHAPES})
    with pytest.raises(ValueError, match="num_classes"):
        build_model(spec, backbones, 0)
    model = build_model(spec, backbones, NUM_CLASSES)
    taps = all_taps(backbones, make_inputs(batch=2))
    with pytest.raises(ValueError, match="missing taps image@2"):
        model.forward_taps({t: v for t, v in taps.items() if t != "image@2"})


def test_cost_matches_a_hand_count():
    """vec (7 -> 6 -> 5 mlp) and b (4 -> 3 mlp), late concat to 3, head [2], 4 classes."""
    g = torch.Generator().manual_seed(0)
    backbones = {
        "vec": build_backbone(BackboneConfig("mlp", (6, 5)), (7,), g),
        "b": build_backbone(BackboneConfig("mlp", (3,)), (4,), g),
    }
    spec = ArchSpec("late", (cell(["vec@2", "b@1"], width=3),), head=(2,))
    cost = candidate_cost(spec, backbones, num_classes=4)
    fusion_params = (8 * 3 + 3) + (3 * 2 + 2) + (2 * 4 + 4)
    backbone_params = (7 * 6 + 6) + (6 * 5 + 5) + (4 * 3 + 3)
    fusion_flops = 2 * (8 * 3 + 3 * 2 + 2 * 4)
    backbone_flops = 2 * (7 * 6 + 6 * 5 + 4 * 3)
    assert cost == {
        "params_total": backbone_params + fusion_params,
        "params_fusion": fusion_params,
        "flops_total": backbone_flops + fusion_flops,
        "flops_fusion": fusion_flops,
    }


@pytest.mark.parametrize("stage", ["late", "early", "hybrid"])
@pytest.mark.parametrize("op", F.list_fusions())
def test_candidate_cost_adds_up(op, stage):
    backbones = make_backbones("gru")
    # read only two of the three modalities: the unused backbone must not be counted
    spec = {
        "late": ArchSpec("late", (cell(["audio@2", "vec@2"], op),)),
        "early": ArchSpec("early", (cell(["audio@0", "vec@0"], op),), head=(4,)),
        "hybrid": ArchSpec("hybrid", (cell(["audio@1", "vec@0"], op), cell(["audio@2", "vec@1"], op, width=3))),
    }[stage]
    cost = candidate_cost(spec, backbones, NUM_CLASSES)
    assert all(p.requires_grad for b in backbones.values() for p in b.parameters()), "costing froze a backbone"

    model = build_model(spec, backbones, NUM_CLASSES)
    # costs are the inference path's: a discriminator trains but is not counted
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainable -= sum(p.numel() for p in training_only_parameters(model))
    assert cost["params_fusion"] == trainable == F.count_params(model.fusion)
    used = ("audio", "vec")
    lean = {m: backbones[m].lean(d) for m, d in F.deepest_taps(spec).items()}  # only the blocks that run
    assert cost["params_total"] == cost["params_fusion"] + sum(F.count_params(lean[m]) for m in used)

    inputs = make_inputs(batch=1, modalities=used)
    taps = {t: v for t, v in all_taps(backbones, inputs).items() if t in required_taps(spec)}
    assert cost["flops_fusion"] == F.count_flops(model.fusion, taps) > 0
    backbone_flops = sum(F.count_flops(lean[m], inputs[m]) for m in used)
    assert cost["flops_total"] == cost["flops_fusion"] + backbone_flops
    assert cost["flops_total"] == F.count_flops(model, inputs), "the whole forward on raw inputs"
    if stage == "early":  # raw inputs only: no backbone runs, and none is charged
        assert (cost["params_total"], cost["flops_total"]) == (cost["params_fusion"], cost["flops_fusion"])


def test_an_early_spec_on_raw_inputs_is_the_fusion_head_alone(backbone_sets):
    backbones = backbone_sets["gru"]
    spec = ArchSpec("early", (cell(["audio@0", "image@0"], "concat"),), head=(4,))
    model = build_model(spec, backbones, NUM_CLASSES)
    cost = candidate_cost(spec, backbones, NUM_CLASSES)
    assert cost["params_total"] == cost["params_fusion"] == F.count_params(model.fusion)
    assert cost["flops_total"] == cost["flops_fusion"]
    assert not [k for k in model.state_dict() if k.startswith("backbones.")], "no backbone tensor is kept"
    assert all(len(b.blocks) == 0 for b in model.backbones)


def test_a_spec_reading_depth_1_runs_and_counts_only_block_1(backbone_sets):
    backbones = backbone_sets["conv1d"]
    spec = ArchSpec("late", (cell(["audio@1", "vec@2"], "concat"),))
    model = build_model(spec, backbones, NUM_CLASSES)
    audio = model.backbones[model.modalities.index("audio")]
    assert len(audio.blocks) == 1 and audio.blocks[0] is backbones["audio"].blocks[0]
    audio_keys = {k for k in model.state_dict() if k.startswith(f"backbones.{model.modalities.index('audio')}.")}
    assert audio_keys and all(".blocks.0." in k for k in audio_keys)
    cost = candidate_cost(spec, backbones, NUM_CLASSES)
    block1 = F.count_params(backbones["audio"].blocks[0])
    assert cost["params_total"] == cost["params_fusion"] + block1 + F.count_params(backbones["vec"])
    x = make_inputs(1, ("audio",))["audio"]
    assert F.count_flops(audio, x) == F.count_flops(backbones["audio"].blocks[0], x.transpose(1, 2)) > 0


@pytest.mark.parametrize("kind", list(AUDIO))
def test_the_lean_model_on_raw_inputs_equals_forward_taps_on_cached_taps(backbone_sets, kind):
    backbones = backbone_sets[kind]
    inputs = make_inputs(5)
    taps = all_taps(backbones, inputs)
    for spec in (ArchSpec("early", (cell(["audio@0", "vec@0"]),)),
                 ArchSpec("hybrid", (cell(["audio@1", "image@0"]), cell(["image@1", "vec@2"]))),
                 ArchSpec("late", (cell(["audio@2", "image@2", "vec@2"]),))):
        model = build_model(spec, backbones, NUM_CLASSES).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(inputs), model.forward_taps(taps), rtol=0, atol=0)


# ------------------------------------------------------------------ how vector operators read token taps
def test_a_vector_operator_reads_a_small_fixed_length_token_tap_flattened():
    """concat on a (4, 3) and a (5, 2) token tap is one linear layer on the 12 + 10 flattened numbers
    (written out: W @ [a.flatten(), b.flatten()] + bias); the order of the tokens matters."""
    from fusion_ops.model import FusionHead

    spec = ArchSpec("early", (CellSpec(("a@0", "b@0"), "concat", 6, "identity"),), head=())
    head = FusionHead(spec, {"a@0": (4, 3), "b@0": (5, 2)}, 2).eval()
    cell = head.cells[0]
    assert cell.flat == {"a@0", "b@0"} and cell.op.in_dims == {"a": 12, "b": 10}
    a, b = torch.randn(3, 4, 3), torch.randn(3, 5, 2)
    linear = cell.op.linear
    want = torch.stack([linear.weight @ torch.cat([a[i].reshape(-1), b[i].reshape(-1)]) + linear.bias
                        for i in range(3)])
    with torch.no_grad():
        got = cell({"a@0": a, "b@0": b})
        swapped = cell({"a@0": a.flip(1), "b@0": b})
    torch.testing.assert_close(got, want)
    assert not torch.allclose(swapped, got), "reversing the tokens must change a flattened reading"


def test_large_padded_and_token_operator_taps_are_not_flattened():
    """Past FLAT_MAX numbers, or padded, a token tap is mean-pooled (in_dims = d); a token
    operator reads tokens; a vector tap is read as it is."""
    from fusion_ops.model import FLAT_MAX, FusionHead, flat_taps

    shapes = {"a@0": (FLAT_MAX // 8 + 1, 8), "b@0": (3, 2), "c@0": (5,)}
    assert flat_taps(shapes) == {"b@0"} and flat_taps(shapes, padded={"b@0"}) == frozenset()
    spec = ArchSpec("early", (CellSpec(("a@0", "b@0", "c@0"), "concat", 4, "relu"),), head=())
    assert FusionHead(spec, shapes, 2).cells[0].op.in_dims == {"a": 8, "b": 6, "c": 5}
    assert FusionHead(spec, shapes, 2, flat=()).cells[0].op.in_dims == {"a": 8, "b": 2, "c": 5}
    attn = ArchSpec("early", (CellSpec(("a@0", "b@0"), "attention", 4, "relu"),), head=())
    head = FusionHead(attn, shapes, 2)
    assert head.cells[0].flat == frozenset() and head.cells[0].op.in_dims == {"a": 8, "b": 2}


def test_a_padded_tap_read_flattened_is_refused_with_a_reason():
    from fusion_ops.base import lengths_key
    from fusion_ops.model import FusionHead

    spec = ArchSpec("early", (CellSpec(("a@0", "b@0"), "concat", 4, "relu"),), head=())
    head = FusionHead(spec, {"a@0": (4, 3), "b@0": (2,)}, 2)
    with pytest.raises(ValueError, match="a@0 comes with lengths"):
        head({"a@0": torch.zeros(2, 4, 3), lengths_key("a@0"): torch.tensor([2, 4]), "b@0": torch.zeros(2, 2)})


def test_models_on_raw_inputs_and_on_cached_taps_read_token_taps_alike(backbone_sets):
    """FusionModel marks the same taps flat as a FusionHead built on the taps' shapes, and a
    backbone marked padded turns flattening off for its taps."""
    backbones = backbone_sets["conv1d"]
    spec = ArchSpec("early", (cell(["audio@0", "image@0"], "concat", width=4),))
    model = build_model(spec, backbones, NUM_CLASSES)
    assert model.fusion.flat == {"audio@0"}  # the raw 8x8 image is a vector tap (cnn2d), the audio (20, 13) tokens
    assert model.fusion.cells[0].op.in_dims["audio"] == 20 * 13
    padded = {m: b.lean(len(b.tap_shapes) - 1) for m, b in backbones.items()}
    padded["audio"].padded = True
    assert build_model(spec, padded, NUM_CLASSES).fusion.flat == frozenset()
