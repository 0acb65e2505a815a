"""Fuzz: hundreds of generated bad configs and data files through the CLI, in-process.

Each case is a valid config or data file with one thing broken (a wrong type, a negative
or huge number, an unknown key, a bad name, a damaged `.npz`, broken YAML). Every case must
end with exit 2 and exactly one `fusion-nas: error:` line on stderr: no traceback, no hang
(an alarm bounds each case). `space` is used where the mistake is found when the config
and data load; `search` only for mistakes found before anything starts (Ray never does:
`search.engine.run.search` is replaced by a failure).
"""
from __future__ import annotations

import copy
import io
import random
import signal
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from search.cli import main

CASE_TIMEOUT_S = 20
BASE: dict[str, Any] = {
    "name": "fuzz",
    "data": {"kind": "planted", "task": "xor", "n_train": 120, "n_test": 60, "d": 6, "seed": 0},
    "backbones": {"pretrain": {"epochs": 2, "patience": 1},
                  "modalities": {"m1": {"kind": "mlp", "widths": [8, 4]}, "m2": {"kind": "mlp", "widths": [8, 4]}}},
    "space": {"stages": ["late", "hybrid"], "ops": {"concat": {}, "tensor": {"proj_dim": [4]}, "low_rank": {"rank": [2]}},
              "widths": [8, 16], "activations": ["relu"], "max_cells": 2, "trunks": [[], [8]]},
    "train": {"epochs": 2, "patience": 1, "lr": 0.003, "batch_size": 32},
    "search": {"strategy": "random", "num_samples": 4, "cpus_per_trial": 1, "seed": 0},
}
NOT_INT = ["x", [1], {"a": 1}, 1.5, True]
NOT_NAME = [5, [], {"a": 1}, "nope", ""]
# (key path, bad values): every value is wrong for that key
BAD_VALUES: list[tuple[str, list[Any]]] = [
    ("data.kind", NOT_NAME), ("data.task", NOT_NAME),
    ("data.n_train", [-1, 0, 1, 10**15, *NOT_INT]), ("data.n_test", [-1, 0, 10**15, *NOT_INT]),
    ("data.d", [-1, 0, 10**15, *NOT_INT]), ("data.seed", [-1, *NOT_INT]),
    ("data.noise", [-1.0, "x", 1e9]), ("data.fractions", [[0.5, 0.5], "x"]), ("data.normalize", ["zscore", 3]),
    ("data", ["x", [1], {"kind": "mfeat", "views": [[1]]}, {"kind": "mfeat", "views": ["fou"]},
              {"kind": "mfeat", "views": "fou"}, {"kind": "avmnist", "root": "/no/such/dir"}, {"kind": "avmnist"},
              {"kind": "npz"}, {"kind": "npz", "path": 5}, {"kind": "av_digits", "path": "x"}]),
    ("backbones", ["x", [1], 3]), ("backbones.pretrain", ["x", [1]]),
    ("backbones.pretrain.epochs", [-1, 0, *NOT_INT]), ("backbones.pretrain.patience", [-1, 0, "x"]),
    ("backbones.freeze", ["x", 3]), ("backbones.cache_dir", [5, "", []]),
    ("backbones.modalities.m1", ["x", [], {"kind": "mlp", "size": 3}, {"widths": [4]}]),
    ("backbones.modalities.m1.kind", NOT_NAME), ("backbones.modalities.m1.widths", [[], [-1], [0], "x", [10**9]]),
    ("space", ["x", [1], 3]), ("space.stages", [[], ["middle"], "middle", [1], ["late", "late"]]),
    ("space.ops", [[], {}, ["tensr"], "x", 3, {"concat": [1]}, {"tensor": {"proj_dim": [0]}},
                   {"tensor": {"proj_dim": [65]}}, {"tensor": {"proj_dim": [64]}}, {"tensor": {"k": [4]}},
                   {"low_rank": {"rank": [-2]}}, {"low_rank": {"rank": ["x"]}}, {"low_rank": {"rank": [2, 2]}}]),
    ("space.widths", [[], [0], [-1], ["x"], [10**6], [8, 8], [1.5], {"a": 1}]),
    ("space.activations", [[], ["gelu2"], [3], "x"]),
    ("space.max_cells", [0, -1, 9, 10**9, *NOT_INT]),
    ("space.trunks", [[], "x", [[0]], [[-1]], [["x"]], [[], []], [[10**7]]]),
    ("space.depths", [{"m3": [0]}, {"m1": [9]}, {"m1": []}, "x", {"m1": ["x"]}]),
    ("train", ["x", [1]]), ("train.epochs", [-1, 0, *NOT_INT]), ("train.patience", [-1, 0, "x"]),
    ("train.lr", [-1, 0, "x", [1], float("nan"), float("inf")]), ("train.batch_size", [-1, 0, *NOT_INT]),
    ("train.device", ["gpu", "cuda:", 3, [1], True, "cuda"]),  # cuda: without search.gpus_per_trial
    ("backbones.pretrain.device", ["gpu", 3, None]),
    ("search.gpus_per_trial", [-1, 1.5, 10**6, "x", [1], True, float("nan"), float("inf")]),
    ("search", ["x", [1]]), ("search.strategy", NOT_NAME), ("search.num_samples", [-1, 0, *NOT_INT]),
    ("search.cpus_per_trial", [0, -1, 10**6, *NOT_INT]), ("search.max_concurrent", [-1, "x"]),
    ("search.seed", [-1, "x"]), ("search.scheduler", ["hyperband", 3]),
    ("search.address", [5, "::::", "http://x", "host:99999", "a b:1"]),
    ("search.max_params", [0, -1, 10, "x"]), ("search.max_flops", [0, 10, "x"]),
    ("search.runs_dir", [5, "", []]),
    ("search.storage", [5, [], "relative/dir", "ftp://host/x", "s3://", "s3:///path", "/a\0b"]),
    ("name", ["", "..", ".", "a/b", "/abs", "a\nb", "a\0b", "x" * 300, "-x", "a b", 5, [], None]),
]
UNKNOWN_KEYS = ["nmae", "data.colour", "backbones.frozen", "backbones.pretrain.epoch", "space.op",
                "space.ops.concat.width", "train.epoch", "search.cpus", "backbones.modalities.m1.channels"]


def _set(raw: dict, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        raw = raw[key]
    raw[last] = value


def config_cases() -> list[tuple[str, dict]]:
    cases = []
    for path, values in BAD_VALUES:
        for v in values:
            raw = copy.deepcopy(BASE)
            _set(raw, path, v)
            cases.append((f"{path}={str(v)[:20]!r}", raw))
    for path in UNKNOWN_KEYS:
        raw = copy.deepcopy(BASE)
        _set(raw, path, 1)
        cases.append((f"unknown {path}", raw))
    rng = random.Random(0)  # pairs of mistakes: the first one found is reported, still one line
    for i in range(30):
        raw = copy.deepcopy(BASE)
        for path, values in rng.sample(BAD_VALUES, 2):
            try:
                _set(raw, path, copy.deepcopy(rng.choice(values)))
            except (TypeError, KeyError):  # the parent was broken by the first mistake: still a bad config
                pass
        cases.append((f"pair {i}", raw))
    return cases


def _npy_member(header: dict, payload: bytes = b"\0" * 32) -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, header)
    return f.getvalue() + payload


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def data_cases(tmp: Path) -> list[tuple[str, Path]]:
    """Broken `.npz` files (each written once, under `tmp`)."""
    y = np.arange(40) % 2
    good = {"a": np.zeros((40, 3), np.float32), "b": np.ones((40, 2), np.float32), "y": y}
    arrays: dict[str, dict[str, Any]] = {
        "no y": {"a": good["a"], "b": good["b"]},
        "one modality": {"a": good["a"], "y": y},
        "only y": {"y": y},
        "rows differ": {**good, "b": np.ones((39, 2))},
        "one class": {**good, "y": np.zeros(40, int)},
        "nan labels": {**good, "y": np.where(np.arange(40) == 3, np.nan, y + 0.5)},  # float y is regression: not NaN
        "2-d labels": {**good, "y": y.reshape(20, 2)},
        "string labels": {**good, "y": np.array(["a"] * 40)},
        "nan": {**good, "a": np.full((40, 3), np.nan)},
        "inf": {**good, "a": np.full((40, 3), np.inf)},
        "complex": {**good, "a": np.ones((40, 3)) * 1j},
        "zero features": {**good, "a": np.zeros((40, 0))},
        "5-d modality": {**good, "a": np.zeros((40, 2, 2, 2, 2))},
        "bad modality name": {**good, "a-b": good["a"]},
        "string modality": {**good, "a": np.array([["x"] * 3] * 40)},
        "scalar modality": {**good, "a": np.array(3.0)},
        "split values": {**good, "split": np.full(40, 7)},
        "split no train": {**good, "split": np.arange(40) % 2 + 1},  # 0/1 is train/test now (val carved)
        "split names": {**good, "split": np.array(["train", "val", "tst", "x"] * 10)},
        "split shape": {**good, "split": np.zeros(3, int)},
    }
    cases = []
    for tag, members in arrays.items():
        path = tmp / f"{tag.replace(' ', '_')}.npz"
        np.savez(path, **members)
        cases.append((tag, path))
    raw: dict[str, dict[str, bytes] | bytes] = {
        "object array": {"a.npy": _npy_member({"descr": "|O", "fortran_order": False, "shape": (40,)}),
                         "y.npy": _npy_member({"descr": "<i8", "fortran_order": False, "shape": (40,)})},
        "10^12 rows": {"a.npy": _npy_member({"descr": "<f4", "fortran_order": False, "shape": (10**12, 3)}),
                       "y.npy": _npy_member({"descr": "<i8", "fortran_order": False, "shape": (10**12,)})},
        "huge 2nd dim": {"a.npy": _npy_member({"descr": "<f8", "fortran_order": False, "shape": (40, 10**14)})},
        "member not npy": {"a.npy": b"hello, not an array", "y.npy": b"\x93NUMPY"},
        "truncated array": {"a.npy": _npy_member({"descr": "<f8", "fortran_order": False, "shape": (40, 3)}, b""),
                            "y.npy": _npy_member({"descr": "<i8", "fortran_order": False, "shape": (40,)}, b"")},
        "bad npy version": {"a.npy": b"\x93NUMPY\x09\x00" + b"\0" * 20},
        "empty zip": {},
        "not a zip": b"PK\x03\x04 but then nothing",
        "random bytes": bytes(random.Random(1).randrange(256) for _ in range(300)),
        "empty file": b"",
        "text file": b"a,b,y\n1,2,0\n",
    }
    for tag, content in raw.items():
        path = tmp / f"{tag.replace(' ', '_').replace('^', '')}.npz"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            _zip(path, content)
        cases.append((tag, path))
    (tmp / "a_dir.npz").mkdir()
    cases += [("a directory", tmp / "a_dir.npz"), ("missing file", tmp / "missing.npz")]
    # a good file cut short at several points
    np.savez(tmp / "good.npz", **good)
    whole = (tmp / "good.npz").read_bytes()
    for cut in (10, 100, len(whole) // 2, len(whole) - 10):
        path = tmp / f"cut{cut}.npz"
        path.write_bytes(whole[:cut])
        cases.append((f"cut at {cut}", path))
    return cases


YAML_TEXTS = {
    "duplicate key": "name: a\nname: b\n", "duplicate nested": "data: {kind: planted, kind: npz}\n",
    "unclosed": "space: [unclosed\n", "tab indent": "data:\n\tkind: planted\n", "a list": "- 1\n- 2\n",
    "a scalar": "just text\n", "binary": "\x00\x01\x02", "python tag": "name: !!python/object:os.system x\n",
    "anchors bomb": "a: &a [1]\nb: &b [*a, *a]\nname: *b\n", "bad unicode": None,
}


@pytest.fixture()
def no_search(monkeypatch):
    """Fail loudly if a case gets past the checks into a real search (Ray would start)."""
    import search.engine.run

    def refuse(*_a, **_k):
        raise AssertionError("a fuzz case reached the search: it should have been refused first")

    monkeypatch.setattr(search.engine.run, "search", refuse)


def _alarm(_signum, _frame):
    raise TimeoutError(f"a fuzz case ran past {CASE_TIMEOUT_S} s")


def run_case(capsys, argv: list[str]) -> tuple[int, str]:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        code = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, capsys.readouterr().err


def test_every_generated_mistake_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, no_search):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    argvs: list[tuple[str, list[str]]] = []
    for i, (tag, raw) in enumerate(config_cases()):
        path = tmp_path / f"c{i}.yaml"
        if isinstance(raw.get("search"), dict):
            raw["search"].setdefault("runs_dir", str(runs))
        path.write_text(yaml.safe_dump(raw, allow_unicode=True))
        argvs.append((tag, ["space", str(path)]))
    for i, (tag, npz) in enumerate(data_cases(tmp_path)):
        raw = {**copy.deepcopy(BASE), "data": {"kind": "npz", "path": str(npz)}, "backbones": {}}
        path = tmp_path / f"d{i}.yaml"
        path.write_text(yaml.safe_dump(raw))
        argvs.append((f"npz {tag}", ["space", str(path)]))
        argvs.append((f"search npz {tag}", ["search", str(path)]))  # refused before any run directory
    for i, (tag, text) in enumerate(YAML_TEXTS.items()):
        path = tmp_path / f"y{i}.yaml"
        path.write_bytes(b"name: \xff\xfe\n") if text is None else path.write_text(text)
        argvs.append((f"yaml {tag}", ["space", str(path)]))
    (tmp_path / "afile").write_text("x")
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump({**BASE, "search": {**BASE["search"], "runs_dir": str(runs)}}))
    for flag in ["--name=..", "--name=/tmp/x", "--name=a/../../b", f"--name={'n' * 101}", "--name=",
                 "--address=::::", "--address=127.0.0.1:0"]:
        argvs.append((f"search {flag}", ["search", str(ok), flag]))
    argvs.append(("space --samples -1", ["space", str(ok), "--samples", "-1"]))
    for key in ("runs_dir", "cache_dir"):
        bad = tmp_path / f"file_{key}.yaml"
        section = "search" if key == "runs_dir" else "backbones"
        raw = copy.deepcopy(BASE)
        raw[section][key] = str(tmp_path / "afile")
        bad.write_text(yaml.safe_dump(raw))
        argvs.append((f"search {key} is a file", ["search", str(bad)]))
    assert len(argvs) >= 200

    failures = []
    for tag, argv in argvs:
        try:
            code, err = run_case(capsys, argv)
        except BaseException as exc:  # noqa: BLE001 - a traceback or a timeout is what this test looks for
            failures.append(f"{tag}: raised {type(exc).__name__}: {str(exc)[:200]}")
            capsys.readouterr()
            continue
        if code != 2 or err.count("\n") != 1 or not err.startswith("fusion-nas: error: ") or "Traceback" in err:
            failures.append(f"{tag}: exit {code}, stderr {err[:300]!r}")
    assert not failures, f"{len(failures)} of {len(argvs)} cases:\n" + "\n".join(failures)
    assert not runs.exists(), "a refused search left a run directory behind"
