"""Backbone pretraining: config checks, determinism, and the disk cache (hit, miss, damage)."""
from __future__ import annotations

import json

import pytest
import torch

import search.training.pretrain as P
from fusion_ops.backbones import BackboneConfig
from search.datasets import load_dataset
from search.training.pretrain import BackbonesConfig, PretrainConfig, pretrain_backbones
from search.training.train import TrainConfig
from spaces import ConfigError

DATA = {"kind": "planted", "task": "additive", "n_train": 600, "n_test": 200, "d": 6, "seed": 1}
MODS = {"m1": {"kind": "mlp", "widths": [8, 4]}, "m2": {"kind": "mlp", "widths": [8]}}


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(DATA)


def config(cache_dir, **pretrain):
    return BackbonesConfig.from_dict(
        {"cache_dir": None if cache_dir is None else str(cache_dir), "pretrain": {"epochs": 8, "batch_size": 32, **pretrain}, "modalities": MODS}
    )


def weights(backbones):
    return {m: {k: v.clone() for k, v in b.state_dict().items()} for m, b in backbones.items()}


def same_weights(a, b):
    return a.keys() == b.keys() and all(
        a[m].keys() == b[m].keys() and all(torch.equal(a[m][k], b[m][k]) for k in a[m]) for m in a
    )


# ---------------------------------------------------------------- config
def test_config_defaults_round_trip_and_the_documented_yaml():
    cfg = BackbonesConfig.from_dict(None)
    assert cfg.freeze and cfg.cache_dir == "~/.cache/fusion-nas/backbones" and cfg.modalities == {}
    assert (cfg.pretrain.epochs, cfg.pretrain.patience, cfg.pretrain.batch_size) == (30, 5, 128)
    doc = {
        "freeze": True,
        "cache_dir": "/tmp/x",
        "pretrain": {"epochs": 30, "batch_size": 128, "lr": 3.0e-3, "weight_decay": 1.0e-4, "patience": 5, "seed": 0},
        "modalities": {"image": {"kind": "cnn2d", "channels": [16, 32]}, "audio": {"kind": "conv1d", "channels": [32, 32]}},
    }
    cfg = BackbonesConfig.from_dict(doc)
    assert cfg.modalities["image"] == BackboneConfig("cnn2d", (16, 32))
    assert list(cfg.modalities) == ["audio", "image"]
    assert BackbonesConfig.from_dict(cfg.to_dict()) == cfg
    assert BackbonesConfig.from_dict({"cache_dir": None}).cache_dir is None
    assert isinstance(cfg.pretrain, PretrainConfig) and isinstance(cfg.pretrain, TrainConfig)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"freez": True}, "backbones.freez: unknown key; known: freeze, cache_dir, pretrain, modalities"),
        ({"freeze": "yes"}, "backbones.freeze: expected true or false, got 'yes'"),
        ({"cache_dir": 3}, "backbones.cache_dir: expected a folder path"),
        ({"pretrain": {"lr": -1}}, "backbones.pretrain.lr: must be > 0, got -1"),
        ({"pretrain": {"epochs": 0}}, "backbones.pretrain.epochs: expected an integer >= 1, got 0"),
        ({"pretrain": {"threads": True}}, "backbones.pretrain.threads: expected an integer >= 1, got True"),
        ({"pretrain": {"epoch": 3}}, "backbones.pretrain.epoch: unknown key; known: epochs, batch_size"),
        ({"modalities": {"image": {"kind": "cnn3d"}}}, "backbones.modalities.image.kind: unknown backbone 'cnn3d'"),
        ({"modalities": {"image": {"kind": "mlp", "channels": [3]}}}, "backbones.modalities.image.channels: unknown key"),
        ({"modalities": [1]}, "backbones.modalities: expected a mapping"),
        ([1], "backbones: expected a mapping"),
    ],
)
def test_config_mistakes_are_one_line_errors_naming_the_key(doc, message):
    with pytest.raises(ConfigError) as err:
        BackbonesConfig.from_dict(doc)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_configured_modality_missing_from_the_data_is_named(dataset, tmp_path):
    cfg = BackbonesConfig.from_dict({"cache_dir": str(tmp_path), "modalities": {**MODS, "m3": {"kind": "mlp"}}})
    with pytest.raises(ConfigError, match=r"^backbones\.modalities\.m3: no such modality in the data; it has m1, m2$"):
        pretrain_backbones(dataset, cfg, DATA)


def test_a_modality_without_a_config_gets_a_default_backbone_by_shape():
    assert P.default_backbone((7,)).kind == "mlp"
    assert P.default_backbone((8, 8)).kind == "conv1d" and P.default_backbone((1, 8, 8)).kind == "cnn2d"
    cfg = BackbonesConfig.from_dict({"modalities": {"a": {"kind": "gru"}}})
    assert cfg.backbone_for("a", (5, 3)).kind == "gru" and cfg.backbone_for("b", (5,)).kind == "mlp"


# ---------------------------------------------------------------- training and the cache
def test_pretraining_is_deterministic_and_reports_unimodal_accuracies(dataset):
    first, info = pretrain_backbones(dataset, config(None), DATA)
    again, _ = pretrain_backbones(dataset, config(None), DATA)
    other, _ = pretrain_backbones(dataset, config(None, seed=1), DATA)
    assert same_weights(weights(first), weights(again))
    assert not same_weights(weights(first), weights(other))
    assert set(first) == {"m1", "m2"} and [len(b.tap_shapes) for b in first.values()] == [3, 2]
    assert all(not b.training for b in first.values())
    for m, i in info.items():
        assert not i["cached"] and i["path"] is None and 1 <= i["best_epoch"] <= i["epochs"] <= 8
        # additive task: each modality alone predicts the label well above chance (~75 %)
        assert 0.6 < i["val_accuracy"] <= 1 and 0.6 < i["test_accuracy"] <= 1, (m, i)


def test_the_second_call_loads_from_disk_without_training(dataset, tmp_path, monkeypatch):
    first, info1 = pretrain_backbones(dataset, config(tmp_path), DATA)
    assert not any(i["cached"] for i in info1.values())
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 4 and all(f.startswith("planted-additive-m") for f in files)

    def no_training(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(P, "_train", no_training)
    messages = []
    # threads do not change what is trained, so they are not part of the key
    loaded, info2 = pretrain_backbones(dataset, config(tmp_path, threads=2), DATA, progress=messages.append)
    assert all(i["cached"] for i in info2.values())
    assert same_weights(weights(first), weights(loaded))
    for m in info1:
        assert info2[m]["path"] == info1[m]["path"] and info2[m]["key"] == info1[m]["key"]
        assert info2[m]["val_accuracy"] == info1[m]["val_accuracy"]
        assert json.loads((tmp_path / f"planted-additive-{m}-{info1[m]['key']}.json").read_text())["epochs"] >= 1
    assert any("(cached)" in msg for msg in messages)
    # anything that changes the result changes the key: pretraining, backbone, data
    for cfg, data_cfg in (
        (config(tmp_path, seed=3), DATA),
        (BackbonesConfig.from_dict({**config(tmp_path).to_dict(), "modalities": {**MODS, "m2": {"kind": "mlp", "widths": [5]}}}), DATA),
        (config(tmp_path), {**DATA, "noise": 0.2}),
    ):
        with pytest.raises(AssertionError, match="cache should have been used"):
            pretrain_backbones(load_dataset(data_cfg), cfg, data_cfg)


def test_a_damaged_cache_entry_is_retrained_and_replaced(dataset, tmp_path):
    _, info = pretrain_backbones(dataset, config(tmp_path), DATA)
    path = tmp_path / info["m1"]["path"].rsplit("/", 1)[-1]
    path.write_bytes(b"not a state dict")
    _, again = pretrain_backbones(dataset, config(tmp_path), DATA)
    assert not again["m1"]["cached"] and again["m2"]["cached"]
    _, third = pretrain_backbones(dataset, config(tmp_path), DATA)
    assert third["m1"]["cached"]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # atomic writes leave no debris


def test_the_cache_key_names_what_decides_the_weights(dataset):
    b, p = BackboneConfig("mlp", (8,)), PretrainConfig(epochs=4)
    key = P.cache_key(dataset, "m1", b, p, DATA)
    assert len(key) == 16 and key == P.cache_key(dataset, "m1", b, PretrainConfig(epochs=4, threads=3), DATA)
    assert key != P.cache_key(dataset, "m2", b, p, DATA)
    assert key != P.cache_key(dataset, "m1", b, PretrainConfig(epochs=5), DATA)
    assert key != P.cache_key(dataset, "m1", b, p, {**DATA, "kind_note": 1})
