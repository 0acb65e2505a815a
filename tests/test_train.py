"""Training candidates on cached taps: config, the tap cache, determinism, failures, and that fusion works.

Fusion checks use fixed seeds. On the planted tasks the backbones are small MLPs pretrained
as unimodal classifiers; on xor each modality alone is at chance, so that pretraining keeps
nothing of the planted projection a_m in the embedding (the last tap): the multiplicative
operator therefore reads the raw inputs (depth-0 taps), and concat is checked both late
(embeddings) and on the very same raw taps, so the gap is the operator's, not the depth's.
"""
from __future__ import annotations

import math
import pickle
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import search.training.train as T
from fusion_ops.cost import count_flops, count_params
from fusion_ops.model import candidate_cost
from search.datasets import load_dataset
from search.training.pretrain import BackbonesConfig, pretrain_backbones
from search.training.taps import TapCache
from search.training.train import TrainConfig, evaluate_candidate, evaluate_with_backbones, train_fusion
from spaces import ConfigError
from spaces.spec import ArchSpec, CellSpec, make_tap


def cell(taps, op, width=16, activation="relu", **args):
    return CellSpec(tuple(taps), op, width, activation, tuple(args.items()))


def prepared(data_cfg, modalities, cache_dir, **pretrain):
    """(dataset, backbones, unimodal info, tap cache) for a data config and backbone configs."""
    ds = load_dataset(data_cfg)
    cfg = BackbonesConfig.from_dict({"cache_dir": str(cache_dir), "pretrain": pretrain, "modalities": modalities})
    backbones, info = pretrain_backbones(ds, cfg, data_cfg)
    return ds, backbones, info, TapCache.from_backbones(ds, backbones)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("backbones")


PLANTED_MLP = {m: {"kind": "mlp", "widths": [32, 16]} for m in ("m1", "m2")}


@pytest.fixture(scope="module")
def planted(cache_dir):
    made = {}

    def get(task):
        if task not in made:
            data = {"kind": "planted", "task": task, "n_train": 4000, "d": 16, "seed": 0}
            made[task] = prepared(data, PLANTED_MLP, cache_dir, epochs=20)
        return made[task]

    return get


LATE_CONCAT = ArchSpec("late", (cell(["m1@2", "m2@2"], "concat", activation="identity"),))
RAW_CONCAT = ArchSpec("early", (cell(["m1@0", "m2@0"], "concat", activation="identity"),))
RAW_TENSOR = ArchSpec("early", (cell(["m1@0", "m2@0"], "tensor", activation="identity", proj_dim=4),))
PLANTED_TRAIN = TrainConfig()  # the defaults (3,200 train samples: mini-batches of 128, 400 steps at most)


# ---------------------------------------------------------------- config
def test_train_config_defaults_round_trip_and_errors():
    cfg = TrainConfig.from_dict(None)
    assert cfg == TrainConfig() and cfg.to_dict()["threads"] == 1
    doc = {"epochs": 1000, "batch_size": 128, "lr": 1.0e-2, "weight_decay": 1.0e-2, "optimizer": "adam", "patience": 5,
           "threads": 1, "seed": 0, "aux_weight": None, "max_steps": 400, "min_steps": 200, "eval_every": 20, "full_batch": 2048,
           "schedule": "cosine", "warmup": 0.05, "grad_clip": 1.0, "dropout": 0.0, "device": "auto"}
    assert TrainConfig.from_dict(doc).to_dict() == doc
    old = {"epochs": 40, "batch_size": 128, "lr": 3.0e-3, "weight_decay": 1.0e-4, "patience": 6}  # still loads
    assert TrainConfig.from_dict(old).to_dict() == {**doc, **old}
    assert TrainConfig.from_dict({"lr": 1, "weight_decay": 0}).lr == 1.0
    for doc, message in (
        ({"lr": -1}, "train.lr: must be > 0, got -1"),
        ({"weight_decay": -0.1}, "train.weight_decay: must be >= 0, got -0.1"),
        ({"lr": "fast"}, "train.lr: expected a number, got 'fast'"),
        ({"lr": float("nan")}, "train.lr: expected a number, got nan"),
        ({"batch_size": 0}, "train.batch_size: expected an integer >= 1, got 0"),
        ({"seed": -1}, "train.seed: expected an integer >= 0, got -1"),
        ({"patience": 2.5}, "train.patience: expected an integer >= 1, got 2.5"),
        ({"epoch": 3}, "train.epoch: unknown key; known: epochs, batch_size, lr, weight_decay, optimizer, patience, threads, seed, "
                       "aux_weight, max_steps, min_steps, eval_every, full_batch, schedule, warmup, grad_clip, dropout, "
                       "device"),
        ("fast", "train: expected a mapping, got 'fast'"),
    ):
        with pytest.raises(ConfigError) as err:
            TrainConfig.from_dict(doc)
        assert str(err.value) == message


# ---------------------------------------------------------------- the tap cache
def test_tap_cache_holds_every_tap_read_only_and_picklable(planted):
    ds, backbones, _, taps = planted("xor")
    assert taps.tap_names == ["m1@0", "m1@1", "m1@2", "m2@0", "m2@1", "m2@2"]
    assert taps.tap_shapes["m1@1"] == (32,) and taps.num_classes == 2 and taps.n_taps() == {"m1": 3, "m2": 3}
    with torch.no_grad():
        direct = backbones["m2"].forward_taps(torch.from_numpy(ds.val["m2"][:50]))
    for d, tap in enumerate(direct):
        np.testing.assert_allclose(taps.taps["val"][make_tap("m2", d)][:50], tap.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(taps.labels["test"], ds.y_test)
    arrays = [a for split in taps.taps.values() for a in split.values()]
    assert all(a.dtype == np.float32 and not a.flags.writeable for a in arrays)
    assert taps.nbytes == sum(a.nbytes for a in arrays) + sum(y.nbytes for y in taps.labels.values())
    sub = taps.subset(["m2@2", "m1@0"])
    assert sub.tap_names == ["m1@0", "m2@2"] and sub.taps["train"]["m1@0"] is taps.taps["train"]["m1@0"]
    assert sub.nbytes < taps.nbytes
    with pytest.raises(ValueError, match=r"^taps not in the cache: m3@0; cached: m1@0, m2@2$"):
        sub.subset(["m3@0"])
    back = pickle.loads(pickle.dumps(sub))
    np.testing.assert_array_equal(back.taps["test"]["m2@2"], sub.taps["test"]["m2@2"])
    only = TapCache.from_backbones(ds, backbones, only=["m1@0", "m2@2"])
    assert only.tap_names == ["m1@0", "m2@2"]
    np.testing.assert_array_equal(only.taps["train"]["m2@2"], taps.taps["train"]["m2@2"])


# ---------------------------------------------------------------- planted: which fusion finds the interaction
def test_xor_needs_a_multiplicative_operator(planted):
    *_, taps = planted("xor")
    acc = {n: evaluate_candidate(s, taps, PLANTED_TRAIN)["test_accuracy"]
           for n, s in (("late", LATE_CONCAT), ("raw concat", RAW_CONCAT), ("tensor", RAW_TENSOR))}
    assert acc["late"] < 0.60 and acc["raw concat"] < 0.60, acc  # additive fusion: chance (measured 0.50, 0.50)
    assert acc["tensor"] > 0.85, acc  # measured 0.93 with the old per-epoch recipe (not remeasured)


def test_additive_is_solved_by_concat_as_well_as_by_tensor(planted):
    *_, taps = planted("additive")
    acc = {n: evaluate_candidate(s, taps, PLANTED_TRAIN)["test_accuracy"]
           for n, s in (("late", LATE_CONCAT), ("raw concat", RAW_CONCAT), ("tensor", RAW_TENSOR))}
    assert abs(acc["raw concat"] - acc["tensor"]) <= 0.03, acc  # measured 0.957 vs 0.952 (old per-epoch recipe)
    # late concat of pretrained embeddings: unimodal pretraining saturates the embedding towards
    # sign(a_m) and loses some of |a_m|, which a sum needs (measured 0.927, 2.5 points below tensor)
    assert acc["late"] > 0.88 and acc["tensor"] - acc["late"] <= 0.05, acc


# ---------------------------------------------------------------- metrics, determinism, failures
def test_metrics_are_complete_exact_and_repeatable(planted):
    _, backbones, _, taps = planted("xor")
    spec = ArchSpec("hybrid", (cell(["m1@0", "m2@1"], "tensor", proj_dim=2), cell(["m1@2", "m2@2"], "concat")))
    cfg = TrainConfig(epochs=3, patience=3, seed=5)
    a, b = (evaluate_candidate(spec, taps, cfg, backbones=backbones, latency=True) for _ in range(2))
    timing = {"seconds", "seconds_per_epoch", "latency_ms", "latency_batch_ms"}  # measured: they vary
    assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    assert 0 < a["latency_ms"] < 1000 and 0 < a["latency_batch_ms"] and a["latency_batch"] == cfg.batch_size
    unmeasured = evaluate_candidate(spec, taps, cfg, backbones=backbones)  # latency is not a run's objective
    assert set(a) - set(unmeasured) == {"latency_ms", "latency_batch_ms", "latency_batch", "latency_threads"}
    assert {k: v for k, v in unmeasured.items() if k not in timing} == {k: v for k, v in a.items() if k in unmeasured
                                                                         and k not in timing}
    assert a["status"] == "ok" and a["reason"] == "" and a["arch_id"] == spec.arch_id and a["epochs"] == 3
    assert a["seconds"] > 0 and math.isclose(a["seconds_per_epoch"] * 3, a["seconds"], rel_tol=0.5)
    assert {k: a[k] for k in ("params_total", "params_fusion", "flops_total", "flops_fusion")} == candidate_cost(
        spec, backbones, 2
    )
    head, fit = train_fusion(spec, taps, cfg)
    assert a["params_fusion"] == count_params(head) and a["flops_fusion"] == count_flops(head, head.example_taps(1))
    assert fit.val_accuracy == a["val_accuracy"]
    alone = evaluate_candidate(spec, taps, cfg)
    assert (alone["params_total"], alone["flops_total"]) == (a["params_fusion"], a["flops_fusion"])
    other, _ = train_fusion(spec, taps, TrainConfig(epochs=3, patience=3, seed=6))
    assert any(not torch.equal(p, q) for p, q in zip(head.parameters(), other.parameters(), strict=True))


def test_report_is_called_each_epoch_and_can_stop_training(planted):
    *_, taps = planted("additive")
    calls = []
    r = evaluate_candidate(RAW_CONCAT, taps, TrainConfig(epochs=4, patience=4), report=lambda e, acc: calls.append((e, acc)))
    assert [e for e, _ in calls] == [1, 2, 3, 4] and r["val_accuracy"] == max(acc for _, acc in calls)
    r = evaluate_candidate(RAW_CONCAT, taps, TrainConfig(epochs=4, patience=4), report=lambda e, acc: e == 2)
    assert r["status"] == "ok" and r["epochs"] == 2


def test_early_stopping_restores_the_best_epoch(planted, monkeypatch):
    *_, taps = planted("additive")
    scores = iter([0.5, 0.9, 0.7, 0.6, 0.8, 0.99])
    monkeypatch.setattr(T, "accuracy", lambda model, split: next(scores))
    r = evaluate_candidate(RAW_CONCAT, taps, TrainConfig(epochs=10, patience=3, min_steps=0))  # 25 steps an epoch
    assert (r["epochs"], r["best_epoch"], r["val_accuracy"], r["steps"]) == (5, 2, 0.9, 125)


def test_a_diverging_candidate_fails_with_a_reason_instead_of_raising(planted):
    ds, backbones, _, taps = planted("xor")
    r = evaluate_candidate(RAW_TENSOR, taps, TrainConfig(epochs=3, lr=1e10))
    assert r["status"] == "diverged" and r["reason"].startswith("loss became nan (weights blew up (max |w| "), r
    assert r["reason"].endswith("in epoch 1 (lr 1e+10)"), r
    assert math.isnan(r["val_accuracy"]) and math.isnan(r["test_accuracy"]) and r["params_fusion"] > 0
    bad = {s: dict(split) for s, split in taps.taps.items()}
    poisoned = bad["train"]["m1@2"].copy()
    poisoned[7, 3] = np.nan
    bad["train"]["m1@2"] = poisoned
    r = evaluate_candidate(LATE_CONCAT, TapCache(bad, taps.labels, taps.tap_shapes, taps.num_classes), PLANTED_TRAIN)
    assert r["status"] == "failed" and r["reason"] == "loss became nan in epoch 1 (lr 0.01)", r  # bad input: not divergence
    r = evaluate_candidate(ArchSpec("late", (cell(["m1@3", "m2@2"], "concat"),)), taps, PLANTED_TRAIN)
    assert r["status"] == "failed" and r["reason"] == "cannot build: spec.cells[0].taps: 'm1@3' is past the last tap m1@2"
    assert torch.get_num_threads() == 1  # the caller's thread count is restored


def test_cached_taps_train_exactly_like_backbones_run_on_every_batch(planted):
    ds, backbones, _, taps = planted("xor")
    spec = ArchSpec("hybrid", (cell(["m1@0", "m2@1"], "tensor", proj_dim=4), cell(["m1@2", "m2@0"], "concat")))
    cfg = TrainConfig(epochs=4, patience=4)
    cached = evaluate_candidate(spec, taps, cfg, backbones=backbones)
    direct = evaluate_with_backbones(spec, ds, backbones, cfg)
    for key in ("val_accuracy", "test_accuracy", "epochs", "params_total", "flops_total", "flops_fusion"):
        assert cached[key] == pytest.approx(direct[key], abs=0.01), key
    before = {m: [p.clone() for p in b.parameters()] for m, b in backbones.items()}
    end_to_end = evaluate_with_backbones(spec, ds, backbones, cfg, freeze=False)
    assert end_to_end["status"] == "ok" and end_to_end["val_accuracy"] != cached["val_accuracy"]
    # end to end trains copies: the shared, frozen backbones are untouched
    assert all(torch.equal(p, q) for m, b in backbones.items() for p, q in zip(b.parameters(), before[m], strict=True))


# ---------------------------------------------------------------- real data: fusion beats every single modality
def _gain(info, taps, spec, cfg, seeds):
    best = max(i["test_accuracy"] for i in info.values())
    fused = statistics.mean(evaluate_candidate(spec, taps, TrainConfig(**{**cfg, "seed": s}))["test_accuracy"] for s in seeds)
    return best, fused


def test_mfeat_fusion_beats_the_best_view_by_five_points(cache_dir):
    mods = {"fou": {"kind": "mlp", "widths": [64, 32]}, "zer": {"kind": "mlp", "widths": [64, 32]},
            "mor": {"kind": "mlp", "widths": [16, 16]}}
    _, _, info, taps = prepared({"kind": "mfeat"}, mods, cache_dir, epochs=60, batch_size=64, patience=8)
    spec = ArchSpec("early", (cell(["fou@0", "mor@0", "zer@0"], "concat", width=128),), head=(64,))
    best, fused = _gain(info, taps, spec, {}, (0, 1, 2))  # the train defaults
    assert best > 0.8 and fused >= best + 0.05, (info, fused)  # measured fou 0.848, fused 0.910 with the old recipe and wd 1e-3 (not remeasured)


AV_DIGITS = yaml.safe_load((Path(__file__).resolve().parents[1] / "experiments" / "configs" / "av_digits.yaml").read_text())


def test_av_digits_fusion_beats_the_best_modality_with_the_config_backbones(cache_dir):
    """The shipped config's backbones (cnn2d image, conv1d audio) and train settings: each modality
    alone lands near 70 % test (the benchmark's design), late concat of their embeddings >= +5 points."""
    bb = AV_DIGITS["backbones"]
    _, _, info, taps = prepared(AV_DIGITS["data"], bb["modalities"], cache_dir, **bb["pretrain"])
    acc = {m: i["test_accuracy"] for m, i in info.items()}
    assert all(0.62 <= a <= 0.80 for a in acc.values()), acc  # measured audio 0.753, image 0.692
    late = ArchSpec("late", (cell(["audio@2", "image@2"], "concat", width=32),))
    best, fused = _gain(info, taps, late, AV_DIGITS["train"], (0, 1, 2))
    assert best + 0.05 <= fused < 0.95, (acc, fused)  # measured 0.869 (+11.6) with the old recipe; bench_recipe: 0.896 (seeds 0-1)


def test_auxiliary_loss_sums_the_weighted_terms_of_fusion_ops():
    """An op that sets `aux_loss` in forward contributes `weight * aux_loss` (the training loop adds it)."""
    import torch
    from torch import nn

    from fusion_ops import FusionOp, auxiliary_loss

    class Penalised(FusionOp):
        NAME = "penalised_test_op"
        AUX_WEIGHT = 0.5

        def __init__(self, in_dims, out_dim):
            super().__init__(in_dims, out_dim)
            self.lin = nn.Linear(sum(in_dims.values()), out_dim)

        def forward(self, feats):
            out = self.lin(torch.cat(self.vectors(feats), dim=1))
            self.aux_loss = (out ** 2).mean()
            return out

    model = nn.Sequential()
    op = Penalised({"a": 2, "b": 3}, 4)
    model.add_module("op", op)
    assert auxiliary_loss(model) is None  # nothing before a forward
    out = op({"a": torch.randn(5, 2), "b": torch.randn(5, 3)})
    torch.testing.assert_close(auxiliary_loss(model), 0.5 * (out**2).mean())
    torch.testing.assert_close(auxiliary_loss(model, weight=2.0), 2.0 * (out**2).mean())


def test_pooling_token_taps_once_changes_no_number():
    """Vector ops mean-pool token taps on every batch; training pools them once instead."""
    import torch

    from search.training.train import _pooled, pooled_taps
    from spaces import ArchSpec, CellSpec

    spec = ArchSpec("hybrid", (
        CellSpec(("a@1", "b@1"), "concat", 4),
        CellSpec(("a@1", "b@2"), "attention", 4, args=(("dim", 4),)),
    ))
    # a@1 and b@2 are read by attention (a token op): they stay tokens
    assert pooled_taps(spec) == {"b@1"}
    x = torch.randn(37, 5, 3)
    xs, _ = _pooled(({"a@1": x, "b@1": x, "b@2": x}, torch.zeros(37)), pooled_taps(spec))
    assert xs["a@1"] is x and xs["b@2"] is x and xs["b@1"].shape == (37, 3)
    # pooled once over the whole split == pooled per batch, bit for bit
    assert torch.equal(xs["b@1"][10:20], x[10:20].mean(dim=1))
