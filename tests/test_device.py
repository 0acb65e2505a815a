"""Devices: `train.device` resolved (and its CPU fallback said once), tap tensors uploaded once per
process, GPUs for Ray trials (`search.gpus_per_trial`) checked and counted, and exports loaded
onto the device asked for. This machine has no GPU: every path is exercised on the CPU (and the
tap upload cache on torch's meta device), and CUDA is hidden where a test needs it absent."""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle

import numpy as np
import pytest
import torch

import search.training.device as D
from fusion_ops.load import ExportError, load_model
from search.cli import main
from search.config import SearchSettings, load_config
from search.engine.run import prepare, trial_train
from search.engine.tune import concurrent_slots, trial_resources
from search.export import export_run, read_config
from search.training.pretrain import PretrainConfig, cache_key
from search.training.taps import TapCache
from search.training.train import TrainConfig, evaluate_candidate
from spaces import ArchSpec, ConfigError
from tests.test_export import SPECS, make_trained_run
from tests.test_hardening import one_line_error, write_config

FALLBACK = "train.device: cuda asked for, but torch sees no CUDA device here"
TIMING = ("seconds", "seconds_per_epoch", "latency_ms", "latency_batch_ms")


@pytest.fixture
def no_cuda(monkeypatch):
    """This process as a machine without CUDA, with no fallback line said yet."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(D, "_SAID", set())


# ------------------------------------------------------------------ resolving train.device
def test_auto_and_cpu_are_the_cpu_without_cuda(no_cuda, caplog):
    with caplog.at_level(logging.WARNING):
        assert D.resolve_device("auto") == torch.device("cpu")
        assert D.resolve_device("cpu") == torch.device("cpu")
    assert caplog.records == []  # nothing was asked for that is missing: nothing to say


def test_cuda_absent_falls_back_to_the_cpu_with_one_line_once_per_process(no_cuda, caplog):
    with caplog.at_level(logging.WARNING, logger="search.training.device"):
        for _ in range(3):  # three candidates in one worker: one line
            assert D.resolve_device("cuda") == torch.device("cpu")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith(FALLBACK) and lines[0].endswith("training on the CPU")


def test_the_fallback_line_goes_through_say_when_given(no_cuda, capsys):
    for _ in range(2):
        assert D.resolve_device("cuda:1", print, "backbones.pretrain.device") == torch.device("cpu")
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith("warning: backbones.pretrain.device: cuda:1 asked for, but torch sees no CUDA device")


def test_an_index_past_the_devices_there_are_uses_the_first(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(D, "_SAID", set())
    assert D.resolve_device("auto") == torch.device("cuda")
    assert D.resolve_device("cuda") == torch.device("cuda")
    with caplog.at_level(logging.WARNING, logger="search.training.device"):
        assert D.resolve_device("cuda:2") == torch.device("cuda", 0)
    assert [r.getMessage() for r in caplog.records] == [
        "train.device: cuda:2 asked for, but this process sees 1 CUDA device(s); using cuda:0"]


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "CPU", "", 0, None, True])
def test_a_bad_device_is_one_line_naming_the_key(value):
    known = "known: auto, cpu, cuda, cuda:N"
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"device": value})
    assert str(err.value) == f"train.device: unknown device {value!r}; {known}"
    with pytest.raises(ConfigError, match=r"^backbones\.pretrain\.device: unknown device"):
        PretrainConfig.from_dict({"device": value})


def test_device_keys_load():
    assert TrainConfig.from_dict({"device": "cuda:3"}).device == "cuda:3"
    assert TrainConfig().device == PretrainConfig().device == "auto"


# ------------------------------------------------------------------ a candidate on a device
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return make_trained_run(tmp_path_factory.mktemp("device"), specs=[SPECS[1]])


@pytest.fixture(scope="module")
def prepared(trained):
    return prepare(read_config(trained.run_dir), say=lambda _m: None)


def _same(a: dict, b: dict) -> None:
    keys = set(a) - set(TIMING)
    assert keys == set(b) - set(TIMING)
    for k in keys:
        same = a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k]))
        assert same, (k, a[k], b[k])


def test_a_candidate_trained_on_cpu_explicitly_equals_the_default(prepared, monkeypatch):
    spec = ArchSpec.from_dict(SPECS[2])  # a hybrid low-rank cell: two cells' worth of weights
    cfg = TrainConfig(epochs=6, patience=3)
    default = evaluate_candidate(spec, prepared.taps, cfg, backbones=prepared.backbones)
    assert default["status"] == "ok" and default["steps"] > 0
    explicit = evaluate_candidate(spec, prepared.taps, TrainConfig(epochs=6, patience=3, device="cpu"),
                                  backbones=prepared.backbones)
    _same(default, explicit)
    # cuda asked for on a machine without it: the same candidate, on the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(D, "_SAID", set())
    fallen_back = evaluate_candidate(spec, prepared.taps, TrainConfig(epochs=6, patience=3, device="cuda"),
                                     backbones=prepared.backbones)
    _same(default, fallen_back)


def test_tap_tensors_on_the_cpu_are_rows_read_as_fresh_copies(prepared):
    """On the CPU a candidate reads the cache row by row (`TapCache.rows`): the same values as
    `tensors`, each read a copy of its own (a trial may not share them)."""
    taps = prepared.taps
    (xs, y), (xs2, _) = D.tap_tensors(taps, "val", torch.device("cpu")), taps.tensors("val")
    whole = {k: v[0:len(v)] for k, v in xs.items()}
    assert set(xs) == set(xs2) and all(torch.equal(whole[k], xs2[k]) for k in xs)
    assert torch.equal(y, torch.tensor(taps.labels["val"]))
    again = {k: v[0:len(v)] for k, v in D.tap_tensors(taps, "val", torch.device("cpu"))[0].items()}
    assert all(again[k].data_ptr() != whole[k].data_ptr() for k in xs)


def test_tap_tensors_on_a_device_are_uploaded_once_per_process(prepared, monkeypatch):
    monkeypatch.setattr(D, "_ON_DEVICE", {})
    meta, taps = torch.device("meta"), prepared.taps
    xs, y = D.tap_tensors(taps, "train", meta)
    assert all(v.device == meta for v in xs.values()) and y.device == meta
    assert {k: tuple(v.shape) for k, v in xs.items()} == {k: a.shape for k, a in taps.taps["train"].items()}
    uploads = len(D._ON_DEVICE)
    assert uploads == len(xs) + 1  # every tap and the labels
    # the next candidate of this worker, reading two of those taps through a subset: no upload
    sub = taps.subset(["m1@2", "m2@2"])
    xs2, y2 = D.tap_tensors(sub, "train", meta)
    assert set(xs2) == {"m1@2", "m2@2"} and all(xs2[k] is xs[k] for k in xs2) and y2 is y
    assert len(D._ON_DEVICE) == uploads
    # the cache is on disk (search.tap_cache: auto): a trial unpickles it by mapping the same files again
    assert taps.directory is not None
    assert D.tap_tensors(pickle.loads(pickle.dumps(sub)), "train", meta)[0]["m1@2"] is xs["m1@2"]
    # another copy of the data (other addresses): uploaded, replacing the entries it shares names with
    other = dataclasses.replace(sub, directory=None,
                                taps={s: {t: np.array(a) for t, a in split.items()} for s, split in sub.taps.items()})
    assert D.tap_tensors(other, "train", meta)[0]["m1@2"] is not xs["m1@2"]
    assert len(D._ON_DEVICE) == uploads
    assert D.tap_tensors(taps, "train", meta)[0]["m1@2"] is not xs["m1@2"]  # so the first is uploaded again
    D.clear_device_cache()
    assert len(D._ON_DEVICE) == 0
    with pytest.raises(KeyError, match="unknown split 'nope'"):
        D.tap_tensors(taps, "nope", meta)


def test_memory_mapped_taps_reopened_by_each_trial_are_uploaded_once(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "_ON_DEVICE", {})
    np.save(tmp_path / "x.npy", np.arange(24, dtype=np.float32).reshape(6, 4))
    np.save(tmp_path / "y.npy", np.arange(6, dtype=np.int64))

    def opened() -> TapCache:  # what a trial sees: the files mapped afresh
        x, y = (np.load(tmp_path / f, mmap_mode="r") for f in ("x.npy", "y.npy"))
        return TapCache({"train": {"a@0": x}, "val": {"a@0": x[3:]}}, {"train": y, "val": y[3:]}, {"a@0": (4,)}, 6)

    meta = torch.device("meta")
    first, second = D.tap_tensors(opened(), "train", meta), D.tap_tensors(opened(), "train", meta)
    assert first[0]["a@0"] is second[0]["a@0"] and first[1] is second[1]
    val = D.tap_tensors(opened(), "val", meta)  # rows 3.. of the same file: not the train tensor
    assert tuple(val[0]["a@0"].shape) == (3, 4) and val[0]["a@0"] is not first[0]["a@0"]
    assert D.tap_tensors(opened(), "val", meta)[0]["a@0"] is val[0]["a@0"]
    np.save(tmp_path / "x.npy", np.ones((6, 4), dtype=np.float32))  # the file rewritten: uploaded again
    os.utime(tmp_path / "x.npy", ns=(1, 1))
    assert D.tap_tensors(opened(), "train", meta)[0]["a@0"] is not first[0]["a@0"]


def test_a_pretrained_backbone_is_cached_under_one_key_for_every_device(prepared):
    config = prepared.config
    bcfg = config.backbones.backbone_for("m1", prepared.dataset.shapes["m1"])
    keys = {cache_key(prepared.dataset, "m1", bcfg, PretrainConfig(device=d), config.data)
            for d in ("auto", "cpu", "cuda", "cuda:1")}
    assert len(keys) == 1
    assert cache_key(prepared.dataset, "m1", bcfg, PretrainConfig(seed=1), config.data) not in keys


# ------------------------------------------------------------------ exports on a device
def test_load_model_maps_to_the_device_asked_for(trained, tmp_path):
    out = tmp_path / "export"
    export_run(trained.run_dir, "accuracy", out, say=lambda _m: None, device="cpu")
    default, on_cpu = load_model(out), load_model(out, device="cpu")
    assert all(t.device.type == "cpu" for t in on_cpu.state_dict().values())
    x = {m: torch.randn(5, *s) for m, s in default.input_shapes.items()}
    assert torch.equal(default(x), on_cpu(x))
    with pytest.raises(ExportError, match="^device: cannot read 'gpu' as a torch device"):
        load_model(out, device="gpu")


def test_evaluate_on_cuda_without_it_says_so_once_and_scores_on_the_cpu(trained, tmp_path, capsys, no_cuda):
    out = tmp_path / "export"
    export_run(trained.run_dir, "accuracy", out, say=lambda _m: None)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--config", str(trained.run_dir), "--device", "cuda"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("warning: --device: cuda asked for, but torch sees no CUDA device here")
    assert len(lines) == 2 and "test accuracy" in lines[1] and "(equal to " in lines[1]
    err = one_line_error(capsys, ["evaluate", str(out), "--config", str(trained.run_dir), "--device", "tpu"])
    assert "--device: unknown device 'tpu'; known: auto, cpu, cuda, cuda:N" in err


# ------------------------------------------------------------------ GPUs for Ray trials
@pytest.mark.parametrize(("value", "message"), [
    (-1, "search.gpus_per_trial: expected a number of GPUs >= 0 (e.g. 1, or 0.25 to share one GPU among four "
         "trials), got -1"),
    ("one", "search.gpus_per_trial: expected a number of GPUs >= 0"),
    (True, "search.gpus_per_trial: expected a number of GPUs >= 0"),
    (float("nan"), "search.gpus_per_trial: expected a number of GPUs >= 0"),
    (1.5, "search.gpus_per_trial: Ray takes a fraction of one GPU or a whole number of them, got 1.5"),
])
def test_gpus_per_trial_is_checked(value, message):
    with pytest.raises(ConfigError) as err:
        SearchSettings.from_dict({"gpus_per_trial": value})
    assert str(err.value).startswith(message)


def test_gpus_per_trial_loads_and_says_where_trials_train(tmp_path):
    assert SearchSettings().gpus_per_trial == 0.0
    assert SearchSettings.from_dict({"gpus_per_trial": 0.25}).gpus_per_trial == 0.25
    assert SearchSettings.from_dict({"gpus_per_trial": 2}).gpus_per_trial == 2.0
    config = load_config(write_config(tmp_path))
    assert trial_train(config).device == "cpu"  # auto, and Ray gives trials no GPU
    config = load_config(write_config(tmp_path, search__gpus_per_trial=0.5))
    assert trial_train(config).device == "auto"
    with pytest.raises(ConfigError, match=r"c\.yaml: train\.device: cuda needs search\.gpus_per_trial > 0"):
        load_config(write_config(tmp_path, train__device="cuda"))


def test_trial_resources_and_concurrency_count_gpus():
    assert trial_resources(2) == {"cpu": 2}
    assert trial_resources(1, 0.25) == {"cpu": 1, "gpu": 0.25}
    box = {"CPU": 16.0, "GPU": 1.0}
    assert concurrent_slots(box, 1) == 16
    assert concurrent_slots(box, 1, 1) == 1
    assert concurrent_slots(box, 1, 0.25) == 4  # four trials share the GPU
    assert concurrent_slots(box, 8, 0.25) == 2  # CPUs bind first
    assert concurrent_slots({"CPU": 2.0}, 1, 0.5) == 1  # never 0: a run with no GPU is refused earlier


def test_more_gpus_per_trial_than_the_embedded_ray_has_is_refused():
    import ray

    from search.engine.ray_cluster import init_ray

    assert not ray.is_initialized()
    want = torch.cuda.device_count() + 1
    with pytest.raises(ConfigError) as err:
        init_ray(None, 1, 1, gpus_per_trial=want)
    have = want - 1
    assert str(err.value) == f"search.gpus_per_trial: {want} GPUs per trial, but the embedded Ray has {have}"
    assert not ray.is_initialized()  # the refused instance is shut down


def test_a_search_asking_for_a_gpu_on_a_machine_without_one_is_refused_before_the_run_dir(tmp_path, capsys,
                                                                                           no_cuda):
    err = one_line_error(capsys, ["search", str(write_config(tmp_path, search__gpus_per_trial=1))])
    assert "search.gpus_per_trial: 1 GPUs per trial, but torch sees 0 CUDA devices on this machine" in err
    assert not (tmp_path / "runs").exists()
