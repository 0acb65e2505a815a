"""The tap cache on disk (`search.training.tap_files`, `TapCache.cached`): the same arrays as the
cache in memory, memory-mapped read-only, pickled as its folder's path, built atomically, in
float16 on request, and one clear line when a worker's node does not have the folder."""
from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion_ops.backbones import BackboneConfig, build_backbone
from search.config import config_from_dict, load_config
from search.datasets import load_dataset
from search.engine.run import TrialContext, prepare, tap_root
from search.training import tap_files
from search.training.taps import TapCache, holdout_rows, open_tap_cache
from search.training.train import TrainConfig, evaluate_candidate
from spaces import ArchSpec, ConfigError
from spaces.spec import CellSpec

ROOT = Path(__file__).resolve().parents[1]
TRAIN = TrainConfig(max_steps=60, min_steps=20, eval_every=10, batch_size=64, full_batch=0)
KEYS = {"m1": "k1", "m2": "k2"}  # the backbones' pretraining keys (any strings name them here)
DATA = {  # a vector task, padded sequences (token taps with lengths), a regression task (target scale)
    "vector": ({"kind": "planted", "task": "additive", "n_train": 1500, "n_test": 300, "d": 6, "seed": 0},
               BackboneConfig("mlp", (12, 8))),
    "padded": ({"kind": "planted", "task": "xor", "n_train": 1500, "n_test": 200, "d": 3, "seed": 1,
                "seq_len": 6, "min_len": 2}, BackboneConfig("conv1d", (4,))),
    "regression": ({"kind": "planted", "task": "regression", "n_train": 1500, "n_test": 200, "d": 4, "seed": 2},
                   BackboneConfig("mlp", (8,))),
}
TIMED = ("seconds", "seconds_per_epoch", "latency_ms", "latency_ms_std", "latency_batch_ms")
LATE = ArchSpec("late", (CellSpec(("m1@2", "m2@2"), "concat", 8),))


def setup(name: str):
    data, bcfg = DATA[name]
    ds = load_dataset(data)
    g = torch.Generator().manual_seed(0)
    backbones = {m: build_backbone(bcfg, ds.shapes[m], g).eval() for m in ds.modalities}
    return ds, backbones, holdout_rows(ds.y_val, ds.task, 0.4, seed=0)


@pytest.fixture(scope="module")
def vector(tmp_path_factory):
    """(dataset, backbones, holdout rows, cache in memory, cache on disk) of the vector task."""
    ds, backbones, rows = setup("vector")
    mem = TapCache.from_backbones(ds, backbones).with_holdout(rows)
    disk = TapCache.cached(tmp_path_factory.mktemp("taps"), ds, backbones, KEYS, holdout=rows)
    return ds, backbones, rows, mem, disk


def assert_same_cache(a: TapCache, b: TapCache, exact: bool = True) -> None:
    assert list(a.taps) == list(b.taps) and a.tap_shapes == b.tap_shapes and a.tap_names == b.tap_names
    assert (a.num_classes, a.task) == (b.num_classes, b.task)
    for split in a.taps:
        for tap in a.taps[split]:
            want = a.taps[split][tap] if exact else a.taps[split][tap].astype(b.taps[split][tap].dtype)
            assert np.array_equal(want, b.taps[split][tap]), (split, tap)
        assert np.array_equal(a.labels[split], b.labels[split]) and a.labels[split].dtype == b.labels[split].dtype
    assert {s: sorted(n) for s, n in a.lengths.items()} == {s: sorted(n) for s, n in b.lengths.items()}
    for split, per_tap in a.lengths.items():
        for tap, n in per_tap.items():
            assert np.array_equal(n, b.lengths[split][tap])
    assert np.array_equal(a.holdout_rows, b.holdout_rows)
    assert (a.target_scale is None) == (b.target_scale is None)
    if a.target_scale is not None:
        assert all(np.array_equal(x, y) for x, y in zip(a.target_scale, b.target_scale, strict=True))


@pytest.mark.parametrize("name", sorted(DATA))
def test_a_disk_cache_holds_the_arrays_of_the_cache_in_memory(tmp_path, name):
    """Array for array: taps, labels, lengths of padded taps, the holdout split (written as the
    cache is built) and the target scale equal from_backbones + with_holdout in memory."""
    ds, backbones, rows = setup(name)
    assert len(rows) >= 100  # a real holdout split
    mem = TapCache.from_backbones(ds, backbones).with_holdout(rows)
    disk = TapCache.cached(tmp_path, ds, backbones, KEYS, holdout=rows, batch_size=128)
    assert_same_cache(mem, disk)
    assert list(disk.taps) == ["train", "val", "test", "holdout"] and disk.directory is not None
    assert (name == "padded") == bool(disk.lengths) and (name == "regression") == (disk.target_scale is not None)
    assert disk.nbytes == mem.nbytes
    built = TapCache.from_backbones(ds, backbones, holdout=rows)  # the holdout taken while building, in memory
    assert_same_cache(mem, built)


def test_a_candidate_trained_on_the_disk_cache_gets_the_same_metrics(vector):
    _, backbones, _, mem, disk = vector
    a = evaluate_candidate(LATE, mem, TRAIN, backbones=backbones)
    b = evaluate_candidate(LATE, disk, TRAIN, backbones=backbones)
    assert a["status"] == "ok" and "holdout_accuracy" in a and a["val_accuracy"] > 0.6
    assert {k: v for k, v in a.items() if k not in TIMED} == {k: v for k, v in b.items() if k not in TIMED}


def test_pickling_a_disk_cache_sends_its_path_and_unpickles_read_only_memory_maps(vector):
    *_, mem, disk = vector
    data = pickle.dumps(disk)
    assert len(data) < 500 and disk.directory.encode() in data
    assert len(pickle.dumps(mem)) > 100 * len(data)  # the cache in memory pickles its arrays
    back = pickle.loads(data)
    assert back.directory == disk.directory and back.tap_names == disk.tap_names
    assert_same_cache(disk, back)
    for split in back.taps.values():
        for a in split.values():
            assert isinstance(a, np.memmap) and a.mode == "r" and not a.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        back.taps["train"]["m1@1"][0, 0] = 1.0
    sub = pickle.loads(pickle.dumps(disk.subset(["m2@1"])))
    assert sub.tap_names == ["m2@1"] and list(sub.taps["val"]) == ["m2@1"]
    ctx = TrialContext(disk, {}, TRAIN)  # what goes into Ray's object store
    assert len(pickle.dumps(ctx)) < 1000


def test_float16_round_trips_and_a_candidate_trains_in_float32(tmp_path, vector):
    ds, backbones, rows, mem, _ = vector
    half = TapCache.cached(tmp_path, ds, backbones, KEYS, holdout=rows, dtype="float16")
    assert_same_cache(mem, half, exact=False)  # each value is its float32 value rounded to float16
    for split in mem.taps:
        for tap, a in mem.taps[split].items():
            h = half.taps[split][tap]
            assert h.dtype == np.float16
            np.testing.assert_allclose(h, a, rtol=2**-11, atol=2**-24)  # half a float16 ulp (and subnormals)
    tap_bytes = sum(a.nbytes for s in mem.taps.values() for a in s.values())
    assert mem.nbytes - half.nbytes == tap_bytes // 2
    xs, _ = half.subset(["m1@2"]).tensors("train")
    assert xs["m1@2"].dtype == torch.float32 and torch.equal(xs["m1@2"], torch.from_numpy(
        mem.taps["train"]["m1@2"].astype(np.float16).astype(np.float32)))
    a = evaluate_candidate(LATE, mem, TRAIN, backbones=backbones)
    b = evaluate_candidate(LATE, half, TRAIN, backbones=backbones)
    assert b["status"] == "ok" and abs(a["val_accuracy"] - b["val_accuracy"]) < 0.05
    assert half.directory != mem.directory  # another key: another folder


def test_taps_beyond_float16_range_are_one_clear_error(tmp_path):
    ds, backbones, _ = setup("vector")
    big = type(ds)(**{**ds.__dict__, "train": {m: x * 1e6 for m, x in ds.train.items()}})
    with pytest.raises(ValueError, match=r"^tap m1@0 has values beyond float16's range .*search.tap_dtype: float32$"):
        TapCache.cached(tmp_path, big, backbones, KEYS, dtype="float16")
    assert not [p for p in tmp_path.iterdir()]  # nothing left behind, not even the temporary folder


def test_a_second_cached_call_reuses_the_folder_and_other_settings_get_their_own(tmp_path, vector):
    ds, backbones, rows, _, disk = vector
    lines: list[str] = []
    first = TapCache.cached(tmp_path, ds, backbones, KEYS, holdout=rows, say=lines.append, batch_size=100)
    assert any(re.fullmatch(r"tap cache: \d+/1800 samples", ln) for ln in lines)
    lines.clear()
    again = TapCache.cached(tmp_path, ds, backbones, KEYS, holdout=rows, say=lines.append)
    assert again.directory == first.directory and len(lines) == 1
    assert re.fullmatch(rf"tap cache: reusing {re.escape(str(first.directory))} \(checked [0-9.]+ MiB in [0-9.]+ s\)",
                        lines[0])
    assert Path(first.directory).name == Path(disk.directory).name  # the same key in another root
    others = {TapCache.cached(tmp_path, ds, backbones, KEYS).directory,  # no holdout
              TapCache.cached(tmp_path, ds, backbones, KEYS, holdout=rows, only=["m1@0", "m2@2"]).directory,
              TapCache.cached(tmp_path, ds, backbones, {**KEYS, "m1": "retrained"}, holdout=rows).directory}
    assert len(others) == 3 and first.directory not in others


def test_progress_lines_come_every_tenth_or_every_few_seconds():
    lines: list[str] = []
    clock = iter([0.0, *[0.5] * 30, 12.0, 12.5]).__next__
    p = tap_files.Progress(lines.append, 1000, every=10.0, clock=clock)
    for _ in range(30):
        p.advance(10)  # 300 samples in steps of 10 at t = 0.5 s
    assert lines == ["tap cache: 100/1000 samples", "tap cache: 200/1000 samples", "tap cache: 300/1000 samples"]
    p.advance(1)  # t = 12 s: ten seconds since the last line
    assert lines[-1] == "tap cache: 301/1000 samples"
    p.advance(699)  # done: the caller says so
    assert len(lines) == 4


KILLED_BUILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_taps_disk import KEYS, setup
    from search.training.taps import TapCache
    ds, backbones, rows = setup("vector")
    def say(line):  # killed (no cleanup can run) in the middle of writing the taps
        if line.startswith("tap cache: 600/"):
            os.kill(os.getpid(), signal.SIGKILL)
    TapCache.cached(Path({root!r}), ds, backbones, KEYS, holdout=rows, say=say, batch_size=100)
""")


def test_a_build_killed_half_way_is_never_read_and_is_cleaned_up(tmp_path, vector):
    _, _, _, mem, disk = vector
    code = KILLED_BUILD.format(tests=str(ROOT / "tests"), root=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".building-")  # the half cache, under a temporary name
    key = Path(disk.directory).name
    assert list((tmp_path / left[0]).rglob("tap*.npy")) and tap_files.read_manifest(tmp_path / key) is None
    ds, backbones, rows = setup("vector")
    fresh = TapCache.cached(tmp_path, ds, backbones, KEYS, holdout=rows)
    assert [p.name for p in tmp_path.iterdir()] == [key]  # built anew; the dead build's folder removed
    assert_same_cache(mem, fresh)


def test_a_damaged_cache_folder_is_rebuilt_not_read(tmp_path, vector):
    ds, backbones, rows, mem, _ = vector
    first = Path(TapCache.cached(tmp_path, ds, backbones, KEYS, holdout=rows).directory)
    (first / "train" / "tap1.npy").unlink()  # e.g. a copy cut short
    with pytest.raises(ValueError, match="incomplete or damaged"):
        open_tap_cache(str(first))
    again = TapCache.cached(tmp_path, ds, backbones, KEYS, holdout=rows)
    assert again.directory == str(first) and [p.name for p in tmp_path.iterdir()] == [first.name]
    assert_same_cache(mem, again)


def test_a_folder_missing_where_the_cache_is_unpickled_is_one_line_naming_it_and_the_settings(tmp_path, vector):
    ds, backbones, rows, _, _ = vector
    disk = TapCache.cached(tmp_path / "shared", ds, backbones, KEYS, holdout=rows)
    data = pickle.dumps(TrialContext(disk, {}, TRAIN))
    os.rename(tmp_path / "shared", tmp_path / "elsewhere")  # as on a node that does not mount it
    with pytest.raises(tap_files.TapCacheMissing) as err:
        pickle.loads(data)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"tap cache {disk.directory} is not on this node")
    assert "point search.tap_dir at a folder every node mounts" in line and "search.tap_cache: memory" in line


def test_a_candidate_maps_only_the_pages_of_the_taps_it_reads(tmp_path, vector):
    """Read from /proc/self/smaps: after training on m1@2 and m2@2, no page of any other tap
    file is mapped into this process."""
    smaps = Path("/proc/self/smaps")
    if not smaps.exists():
        pytest.skip("needs Linux /proc")
    _, backbones, _, _, disk = vector
    copy = shutil.copytree(disk.directory, tmp_path / "copy")  # files no other test has mapped
    fresh = open_tap_cache(str(copy))
    names = fresh.tap_names
    evaluate_candidate(LATE, fresh, TRAIN, backbones=backbones)
    rss = _mapped_kib(smaps.read_text(), copy)
    read = {f"{s}/tap{names.index(t)}.npy" for s in fresh.taps for t in ("m1@2", "m2@2")}
    assert {f for f in read if rss.get(f, 0) > 0} == read  # the taps it reads are mapped, every split
    others = {f: kib for f, kib in rss.items() if f.endswith(".npy") and "labels" not in f and f not in read}
    assert others and all(kib == 0 for kib in others.values()), others
    del fresh


def _mapped_kib(text: str, directory: Path) -> dict[str, int]:
    """`{file under directory: resident KiB of its mappings}` from smaps."""
    out: dict[str, int] = {}
    current = None
    for line in text.splitlines():
        head = line.split()
        if head and re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", head[0]):  # a mapping's first line
            path = line.split(None, 5)[5] if len(head) >= 6 else ""
            current = path[len(str(directory)) + 1:] if path.startswith(str(directory) + "/") else None
            if current is not None:
                out.setdefault(current, 0)
        elif current is not None and head and head[0] == "Rss:":
            out[current] += int(head[1])
    return out


BASE = {"name": "t", "data": {"kind": "planted", "task": "additive", "n_train": 2000, "n_test": 300, "d": 6},
        "backbones": {"pretrain": {"epochs": 2},
                      "modalities": {"m1": {"kind": "mlp", "widths": [8]}, "m2": {"kind": "mlp", "widths": [8]}}},
        "space": {"ops": {"concat": {}}, "widths": [8], "max_cells": 1}}


@pytest.mark.parametrize(("search", "message"), [
    ({"tap_dtype": "float64"}, "search.tap_dtype: unknown value 'float64'; known: float32, float16"),
    ({"tap_dtype": 16}, "search.tap_dtype: unknown value 16; known: float32, float16"),
    ({"tap_cache": "ssd"}, "search.tap_cache: unknown value 'ssd'; known: auto, disk, memory"),
    ({"tap_dir": 5}, "search.tap_dir: expected a string, got 5"),
    ({"tap_dir": "a\0b"}, "search.tap_dir: expected a folder path"),
    ({"tap_dirs": "/x"}, "search.tap_dirs: unknown key; known: "),
])
def test_bad_tap_cache_settings_are_one_line_naming_file_and_key(tmp_path, search, message):
    path = tmp_path / "run.yaml"
    path.write_text(__import__("yaml").safe_dump({**BASE, "search": search}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}: {message}")


def cfg(tmp_path: Path, cache_dir, **search):
    return config_from_dict({**BASE, "backbones": {**BASE["backbones"], "cache_dir": cache_dir}, "search": search},
                            tmp_path / "run.yaml")


def test_where_the_tap_cache_lives(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bb = str(tmp_path / "cache" / "backbones")
    assert tap_root(cfg(tmp_path, bb)) == tmp_path / "cache" / "taps"  # beside the backbone cache
    assert tap_root(cfg(tmp_path, None)) is None  # no disk caches asked for: in memory
    assert tap_root(cfg(tmp_path, None, tap_cache="disk")) == Path("~/.cache/fusion-nas/taps").expanduser()
    assert tap_root(cfg(tmp_path, bb, tap_cache="memory")) is None
    assert tap_root(cfg(tmp_path, None, tap_dir="rel/taps")) == tmp_path / "rel" / "taps"  # absolute for workers
    assert tap_root(cfg(tmp_path, bb, tap_dir="~/x")) == Path("~/x").expanduser()


def test_prepare_builds_the_disk_cache_once_and_reuses_it(tmp_path):
    config = cfg(tmp_path, str(tmp_path / "cache" / "backbones"), tap_dtype="float16")
    lines: list[str] = []
    first = prepare(config, say=lines.append).taps
    assert Path(first.directory).parent == tmp_path / "cache" / "taps"
    assert first.taps["train"]["m1@1"].dtype == np.float16 and len(first.labels["holdout"]) == 120
    assert any(re.fullmatch(r"tap cache: 4 taps, [0-9.]+ MiB float16 in .* \([0-9.]+ s\)", ln) for ln in lines)
    lines.clear()
    again = prepare(config, say=lines.append).taps
    assert again.directory == first.directory and any(ln.startswith(f"tap cache: reusing {first.directory} (checked ")
                                                       for ln in lines)
    memory = prepare(cfg(tmp_path, str(tmp_path / "cache" / "backbones"), tap_cache="memory", tap_dtype="float16"),
                     say=lambda _m: None).taps
    assert memory.directory is None
    assert_same_cache(memory, again)


@pytest.mark.usefixtures("ray_local")
def test_a_ray_trial_on_a_node_without_the_folder_fails_with_that_line(tmp_path, vector):
    """Through Ray's object store: the context goes as a path; a worker that cannot see the folder
    errors the trial, and the record's reason is the one line, while the search ends normally."""
    from fusion_ops import fusion_args, list_fusions
    from search.engine.run import evaluate_trial
    from search.engine.tune import run_search
    from search.runstore.store import RunStore
    from search.strategies import make_strategy
    from spaces import SearchSpace

    ds, backbones, rows, _, _ = vector
    disk = TapCache.cached(tmp_path / "shared", ds, backbones, KEYS, holdout=rows)
    ctx = TrialContext(disk, backbones, TRAIN)
    os.rename(tmp_path / "shared", tmp_path / "elsewhere")  # the driver has it; the "node" does not
    space = SearchSpace.from_dict({"stages": ["late"], "ops": {"concat": {}}, "widths": [8], "max_cells": 1},
                                  catalogue={op: fusion_args(op) for op in list_fusions()},
                                  depths={"m1": [0, 1, 2], "m2": [0, 1, 2]})
    store = RunStore.create(tmp_path / "runs", "missing", {})
    records = run_search(evaluate=evaluate_trial, shared=ctx, strategy=make_strategy("random", space, seed=0, budget=2),
                         num_samples=2, store=store, max_concurrent=1)  # one trial worker: ~3.5 CPU s of imports
    assert len(records) == 2 and {r["status"] for r in records} == {"errored"}
    for r in records:
        assert "\n" not in r["reason"] and tap_files.missing_line(disk.directory) in r["reason"]


def test_rows_read_on_demand_equal_the_copied_tensors_and_train_the_same(vector):
    """`TapCache.rows` (what training reads) gives the rows `tensors` copies, as float32, for slices
    and index tensors alike; fitting a head on either gives the same weights."""
    from search.training.train import build_head, fit

    _, _, _, mem, disk = vector
    half = TapCache.from_backbones(vector[0], vector[1], dtype="float16")
    for cache in (mem, disk, half):
        xs, y = cache.rows("train")
        copied, y2 = cache.tensors("train")
        assert torch.equal(y, y2) and set(xs) == set(copied)
        idx = torch.tensor([5, 0, 17, 5])
        for tap, rows in xs.items():
            assert len(rows) == len(y) and rows.shape == copied[tap].shape and rows.dim() == 2
            assert rows[3:9].dtype == torch.float32 and torch.equal(rows[3:9], copied[tap][3:9])
            assert torch.equal(rows[idx], copied[tap][idx])
    sub = disk.subset(["m1@2", "m2@2"])
    heads = [build_head(LATE, sub, seed=0) for _ in range(2)]
    fit(heads[0], sub.tensors("train"), sub.tensors("val"), TRAIN)
    fit(heads[1], sub.rows("train"), sub.rows("val"), TRAIN)
    for a, b in zip(heads[0].state_dict().values(), heads[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_tap_dir_that_is_a_file_or_cannot_be_written_is_one_line(tmp_path):
    from search.engine.preflight import check_folders

    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=f"^search.tap_dir: {tmp_path / 'afile'} exists and is not a directory$"):
        check_folders(cfg(tmp_path, None, tap_dir=str(tmp_path / "afile" / "taps")))
    with pytest.raises(ConfigError) as err:  # past the preflight (it was made a file meanwhile): still one line
        prepare(cfg(tmp_path, None, tap_dir=str(tmp_path / "afile")), say=lambda _m: None)
    assert re.fullmatch(rf"{tmp_path / 'run.yaml'}: search.tap_dir: cannot write the tap cache in "
                        rf"{tmp_path / 'afile'}: .+", str(err.value))


# ---- a damaged cache is found before it is used, and rebuilt ---------------------------------
def _damage(directory: Path, how: str) -> None:
    """Damage a complete cache folder the way a disk, a careless copy or an editor would."""
    import json

    manifest = json.loads((directory / tap_files.MANIFEST).read_text())
    tap, labels = directory / tap_files.tap_file("train", 1), directory / tap_files.labels_file("train")
    if how in ("zeroed", "randomised", "permuted labels", "short labels", "fewer rows", "wrong shape"):
        target = labels if "labels" in how else tap
        a = np.load(target)
        if how == "zeroed":
            a = np.zeros_like(a)
        elif how == "randomised":
            a = np.random.default_rng(0).normal(size=a.shape).astype(a.dtype)
        elif how == "permuted labels":
            a = a[np.random.default_rng(0).permutation(len(a))]
        elif how in ("short labels", "fewer rows"):
            a = a[: len(a) // 2]
        else:
            a = a.reshape(len(a), -1)[:, :-1]  # one feature fewer
        np.save(target, a)
    elif how == "truncated":
        tap.write_bytes(tap.read_bytes()[: tap.stat().st_size // 2])
    elif how == "bad header":
        data = bytearray(tap.read_bytes())
        data[:16] = b"garbage-garbage!"
        tap.write_bytes(bytes(data))
    elif how == "manifest lie":
        manifest["num_classes"] += 3
        (directory / tap_files.MANIFEST).write_text(json.dumps(manifest))


DAMAGE = ["zeroed", "randomised", "permuted labels", "short labels", "manifest lie", "truncated", "bad header",
          "wrong shape", "fewer rows"]


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_cache_is_found_and_rebuilt_never_used(tmp_path, vector, how):
    ds, backbones, rows, mem, _ = vector
    first = TapCache.cached(tmp_path, ds, backbones, KEYS, holdout=rows)
    _damage(Path(first.directory), how)
    del first
    lines: list[str] = []
    again = TapCache.cached(tmp_path, ds, backbones, KEYS, holdout=rows, say=lines.append)
    checks = [ln for ln in lines if "failed its check" in ln]
    assert len(checks) == 1 and checks[0].endswith("; rebuilding it") and str(tmp_path) in checks[0], lines
    assert_same_cache(mem, again)  # what a candidate reads is the true cache again
    lines.clear()
    TapCache.cached(tmp_path, ds, backbones, KEYS, holdout=rows, say=lines.append)
    assert len(lines) == 1 and lines[0].startswith("tap cache: reusing ")  # the rebuilt one passes
    assert [p.name for p in tmp_path.iterdir()] == [Path(again.directory).name]  # no trash left


def test_the_manifest_lists_every_file_with_its_digest(vector):
    *_, disk = vector
    import json

    manifest = json.loads((Path(disk.directory) / tap_files.MANIFEST).read_text())
    on_disk = sorted(str(p.relative_to(disk.directory)) for p in Path(disk.directory).rglob("*")
                     if p.is_file() and p.name != tap_files.MANIFEST)
    assert sorted(manifest["files"]) == on_disk
    assert tap_files.verify(Path(disk.directory), manifest, {}) == ""
