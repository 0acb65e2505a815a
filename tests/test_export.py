"""Export: picking a trial, writing a model that loads in one line, and refusing damaged files.

A real run is made without Ray: its trials are scored by `search.engine.run.evaluate_trial`,
the function every Ray trial calls, so their recorded test accuracies are the ones a
search would report.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusion_ops.load import ExportError, load_model
from search.engine.run import evaluate_trial, prepare, trial_context
from search.export import export_front, export_run, pick_trial, read_config
from search.runstore.store import front_from_trials, to_jsonable
from spaces import ArchSpec
from tests.test_report import CONFIG, KNEE, make_run, record, spec_dict

REPO = Path(__file__).resolve().parents[1]
SPECS = [spec_dict("hybrid", "tensor", ("m1@0", "m2@1"), 16), spec_dict("late", "concat", ("m1@2", "m2@2"), 8),
         spec_dict("hybrid", "low_rank", ("m1@1", "m2@2"), 8)]


def make_trained_run(tmp: Path, config: dict = CONFIG, specs: list[dict] = SPECS):
    """A run directory whose trials were trained and scored as a search does it."""
    store = make_run(tmp, trials=[], config=config)
    prepared = prepare(read_config(store.run_dir), say=lambda _m: None)
    for i, spec in enumerate(specs):
        metrics = to_jsonable(evaluate_trial(ArchSpec.from_dict(spec), trial_context(prepared)))
        store.append_trial(record(f"t{i}", spec, metrics["status"], metrics))
    store.write_pareto()
    return store


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return make_trained_run(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "best"
    return out, export_run(trained.run_dir, "accuracy", out, say=lambda _m: None)


def _trial(store, tid):
    return next(t for t in store.trials() if t["trial_id"] == tid)


# ------------------------------------------------------------------ --pick
@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    store = make_run(tmp_path_factory.mktemp("handmade"))
    return store.trials(), front_from_trials(store.trials(), store.reference)


@pytest.mark.parametrize(("how", "want"), [("knee", KNEE), ("accuracy", "A"), ("smallest", "C"), ("D", "D"), ("H", "H")])
def test_pick_chooses_the_right_trial(handmade, how, want):
    # accuracy: A and F tie at 0.90 and A has fewer params; smallest: C, G, H tie at 500 params and C is most accurate
    assert pick_trial(*handmade, how)["trial_id"] == want


@pytest.mark.parametrize(("how", "message"), [
    ("X-errored", "trial X-errored is errored (RayActorError: the worker died); only ok trials"),
    ("X-early", "is early_stopped"),
    ("nope", "no such trial; pick knee, accuracy, smallest or a trial id (A, B, C, X-failed,"),
])
def test_pick_refuses_what_cannot_be_exported(handmade, how, message):
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pick_trial(*handmade, how)


def test_pick_on_a_run_without_a_front_says_so(handmade):
    trials = [t for t in handmade[0] if t["status"] != "ok"]
    with pytest.raises(ExportError, match="no front to pick from"):
        pick_trial(trials, front_from_trials(trials), "knee")


def _cli(argv):
    from search.cli.common import COMMANDS
    from search.cli.results import add_parsers

    parser = argparse.ArgumentParser(prog="fusion-nas")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return COMMANDS[args.command](args)


def test_export_command_reports_a_bad_pick_as_one_usage_line(tmp_path):
    from search.cli.common import UsageError

    store = make_run(tmp_path)
    with pytest.raises(UsageError, match="--pick zzz: no such trial"):
        _cli(["export", str(store.run_dir), "--pick", "zzz", "--out", str(tmp_path / "out")])


def test_an_out_under_a_file_is_one_usage_line_before_any_training(tmp_path, monkeypatch):
    from search.cli.common import UsageError

    store = make_run(tmp_path)
    monkeypatch.setattr("search.export.prepare", lambda *a, **k: pytest.fail("nothing may train"))
    with pytest.raises(UsageError, match="--out /dev/null/x: /dev/null is not a directory"):
        _cli(["export", str(store.run_dir), "--out", "/dev/null/x"])


def test_export_refuses_to_write_over_other_files(tmp_path):
    store = make_run(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="holds other files"):
        export_run(store.run_dir, "knee", tmp_path / "out")


# ------------------------------------------------------------------ the export reproduces its trial
def test_export_writes_the_files_and_reproduces_the_trial(trained, exported):
    out, metrics = exported
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "arch.yaml", "metrics.json", "model.json",
                                                     "weights.safetensors"]
    best = max((t for t in trained.trials()), key=lambda t: t["metrics"]["val_accuracy"])
    assert metrics["trial_id"] == best["trial_id"]
    assert metrics["reproduced"] is True
    assert metrics["test_accuracy"] == best["metrics"]["test_accuracy"]
    assert metrics["params_total"] == best["metrics"]["params_total"]
    assert metrics["flops_total"] == best["metrics"]["flops_total"]
    assert ArchSpec.from_yaml((out / "arch.yaml").read_text()).to_dict() == best["spec"]
    readme = (out / "README.md").read_text()
    for text in ("from fusion_ops.load import load_model", 'model = load_model("path/to/this/folder")',
                 "on the Pareto front of its run: 1st most accurate", f"{metrics['params_total']:,}",
                 "fusion-nas evaluate"):
        assert text in readme


def test_export_formats_write_graphs_equal_to_pytorch_on_the_test_split(trained, tmp_path, capsys):
    import numpy as np

    from fusion_ops import formats
    from search.export_formats import read_graph

    out = tmp_path / "graphs"
    assert _cli(["export", str(trained.run_dir), "--pick", "accuracy", "--out", str(out),
                 "--format", "onnx", "--format", "torchscript"]) == 0
    printed = capsys.readouterr().out
    assert {"model.onnx", "model.torchscript.pt", "weights.safetensors"} <= {p.name for p in out.iterdir()}
    info = json.loads((out / "model.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    native = metrics["test_accuracy"]
    for fmt in ("onnx", "torchscript"):
        g = info["formats"][fmt]
        assert g["max_abs_diff_test"] <= 1e-4 and abs(g["test_accuracy"] - native) <= 1 / 200, g
        assert f"{fmt}: {out}/{g['file']}, test accuracy" in printed
    assert info["formats"]["onnx"]["opset"] == 17 and info["formats"]["onnx"]["latency_ms_batch1"] > 0
    assert [i["name"] for i in info["formats"]["onnx"]["inputs"]] == ["m1", "m2"]
    model = load_model(out)  # the native files load as before
    session = formats.onnx_session(read_graph(out, "onnx"))
    x = formats.example_inputs(model, batch=5, seed=3)
    with torch.no_grad():
        want = model({k: torch.as_tensor(v) for k, v in x.items()}).numpy()
    assert np.abs(formats.run_onnx(session, x) - want).max() <= 1e-4


def test_onnx_without_its_extra_is_one_usage_line_before_any_training(trained, tmp_path, monkeypatch):
    from search.cli.common import UsageError

    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setattr("search.export.prepare", lambda *a, **k: pytest.fail("nothing may train"))
    with pytest.raises(UsageError, match=r"--format onnx needs the onnx package: pip install 'fusion-nas\[onnx\]'"):
        _cli(["export", str(trained.run_dir), "--out", str(tmp_path / "o"), "--format", "onnx"])
    assert not (tmp_path / "o").exists()


def test_pick_front_exports_every_member_with_a_listing_and_a_model_card(tmp_path, capsys):
    """The hand-made run's front has 5 members (made-up scores: each export is trained for real)."""
    run = make_run(tmp_path)
    out = tmp_path / "front"
    assert _cli(["export", str(run.run_dir), "--pick", "front", "--out", str(out)]) == 0
    listing = json.loads((out / "front.json").read_text())
    front = json.loads(run.pareto_path.read_text())
    assert sorted(f["trial_id"] for f in listing["members"]) == sorted(front["trial_ids"])
    assert len(listing["members"]) == 5
    assert [f["folder"] for f in listing["members"]] == ["01-A", "02-B", "03-E", "04-C", "05-H"]  # best val first
    assert [f["knee"] for f in listing["members"]] == [f["trial_id"] == front["knee"] for f in listing["members"]]
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f["folder"] for f in listing["members"]), "front.json"])
    for f in listing["members"]:
        trial = _trial(run, f["trial_id"])["metrics"]
        assert f["metrics"]["val_accuracy"] == {"mean": trial["val_accuracy"], "std": 0.0}
        assert f["metrics"]["test_accuracy"] == {"mean": trial["test_accuracy"], "std": 0.0}
        member = json.loads((out / f["folder"] / "metrics.json").read_text())
        assert (f["params_total"], f["flops_total"], f["exported_test_metric"]) == (
            member["params_total"], member["flops_total"], member["test_metric"])
        assert load_model(out / f["folder"]).arch_id == _trial(run, f["trial_id"])["arch_id"]
        card = (out / f["folder"] / "README.md").read_text()
        for text in ("## Model card", f"seeds {f['seeds']}", listing["data_sha256"], "Against the baselines: ",
                     (run.run_dir / "config.yaml").read_text().splitlines()[0]):
            assert text in card, text
    assert len(listing["data_sha256"]) == 64
    assert f"front of 5 exported to {out}" in capsys.readouterr().out
    with pytest.raises(ExportError, match="give a new or empty directory for the front"):
        export_front(run.run_dir, out)
    from search.cli.common import UsageError

    with pytest.raises(UsageError, match="--pick front exports every front member"):
        _cli(["export", str(run.run_dir), "--pick", "front", "--out", str(tmp_path / "b"), "--max-params", "10"])


FRESH = """
import json, sys
from fusion_ops.load import load_model
from fusion_ops import count_params
model = load_model(sys.argv[1])
clean = not any(m == "search" or m.startswith(("search.", "ray")) for m in sys.modules)
from search.export import raw_test_accuracy, read_config
from search.datasets import load_dataset
config = read_config(sys.argv[2])
raw = load_dataset({**config.data, "normalize": "none"}, config.path.parent)
x = {m: raw.test[m][:5] for m in model.modalities}  # numpy arrays work too
print(json.dumps({"test_accuracy": raw_test_accuracy(model, config), "params": count_params(model),
                  "arch_id": model.arch_id, "clean": clean, "logits": list(model(x).shape)}))
"""


def test_an_export_loaded_in_a_fresh_process_scores_the_reported_test_accuracy(trained, exported):
    out, metrics = exported
    reported = _trial(trained, metrics["trial_id"])["metrics"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", FRESH, str(out), str(trained.run_dir)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["test_accuracy"] == reported["test_accuracy"]  # exactly: same seed, CPU
    assert got["params"] == reported["params_total"]
    assert got["arch_id"] == metrics["arch_id"]
    assert got["clean"], "loading an export imported search or ray: fusion_ops must stand alone"
    assert got["logits"] == [5, 2]


def test_evaluate_command_rescores_an_export(trained, exported, capsys, tmp_path):
    out, metrics = exported
    assert _cli(["evaluate", str(out), "--config", str(trained.run_dir)]) == 0
    acc = metrics["test_accuracy"]
    assert f"test accuracy {acc:.4f} (equal to {acc:.4f})" in capsys.readouterr().out
    user_config = Path(trained.config()["source"])  # the user's own YAML works as well
    assert _cli(["evaluate", str(out), "--config", str(user_config)]) == 0
    assert f"test accuracy {acc:.4f}" in capsys.readouterr().out


def test_export_with_unfrozen_backbones_reproduces_its_trial(tmp_path):
    config = {**CONFIG, "backbones": {**CONFIG["backbones"], "freeze": False}, "train": {"epochs": 3, "patience": 2}}
    store = make_trained_run(tmp_path, config, SPECS[:1])
    metrics = export_run(store.run_dir, "t0", tmp_path / "out", say=lambda _m: None)
    assert metrics["reproduced"] is True
    assert metrics["test_accuracy"] == _trial(store, "t0")["metrics"]["test_accuracy"]


def test_retrain_trains_on_train_and_val_for_the_trials_best_epoch(trained, exported, tmp_path, monkeypatch):
    import search.export as export

    seen = []

    def spy(module, train, val, cfg, **kw):
        seen.append((len(train[1]), cfg.epochs))
        return fit(module, train, val, cfg, **kw)

    fit = export.fit
    monkeypatch.setattr(export, "fit", spy)
    tid = exported[1]["trial_id"]
    metrics = export_run(trained.run_dir, tid, tmp_path / "retrained", retrain=True, say=lambda _m: None)
    config = read_config(trained.run_dir)
    data = prepare(config, say=lambda _m: None).dataset
    best_epoch = _trial(trained, tid)["metrics"]["best_epoch"]
    assert seen == [(len(data.y_train) + len(data.y_val), best_epoch)]
    assert (metrics["trained_on"], metrics["epochs"], metrics["val_accuracy"], metrics["reproduced"]) == (
        "train+val", best_epoch, None, None)
    a, b = load_model(exported[0]), load_model(tmp_path / "retrained")
    assert not torch.equal(a.model.fusion.head[-1].weight, b.model.fusion.head[-1].weight)
    assert torch.equal(a.model.backbones[0].blocks[0][0].weight, b.model.backbones[0].blocks[0][0].weight)


# ------------------------------------------------------------------ damaged exports fail clearly
@pytest.fixture
def copy(exported, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(exported[0], out)
    return out


def _rehash(out: Path) -> None:
    """Make model.json vouch for the current weights file and arch.yaml (an attacker who edits all)."""
    import hashlib

    from fusion_ops.load import integrity

    info = json.loads((out / "model.json").read_text())
    data = (out / "weights.safetensors").read_bytes()
    info["weights"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    info["integrity"] = integrity(info, (out / "arch.yaml").read_bytes())
    (out / "model.json").write_text(json.dumps(info))


def test_a_changed_byte_in_the_weights_is_refused(copy):
    data = bytearray((copy / "weights.safetensors").read_bytes())
    data[-7] ^= 0x01
    (copy / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(ExportError, match="do not match the SHA-256 in model.json: the file was changed or truncated"):
        load_model(copy)


def test_truncated_weights_are_refused_even_when_model_json_vouches_for_them(copy):
    data = (copy / "weights.safetensors").read_bytes()
    (copy / "weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match="changed or truncated"):
        load_model(copy)
    _rehash(copy)
    with pytest.raises(ExportError, match="not a readable safetensors file"):
        load_model(copy)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_pickle_in_place_of_the_weights_never_runs(copy, tmp_path, kind):
    marker = tmp_path / "pwned"
    path = copy / "weights.safetensors"
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"w": _Payload(marker)}))
    else:
        torch.save({"w": _Payload(marker)}, path)
    _rehash(copy)
    with pytest.raises(ExportError, match="not a readable safetensors file"):
        load_model(copy)
    assert not marker.exists()


def test_weights_of_another_shape_are_refused(copy):
    from safetensors.torch import load_file, save_file

    tensors = load_file(copy / "weights.safetensors")
    key = "model.fusion.head.0.weight"
    tensors[key] = torch.zeros(tensors[key].shape[0], tensors[key].shape[1] + 1)
    save_file(tensors, copy / "weights.safetensors")
    _rehash(copy)
    with pytest.raises(ExportError, match=f"do not fit the architecture in arch.yaml: .*{key}"):
        load_model(copy)


@pytest.mark.parametrize("width", [10**12, 2**62])
def test_a_backbone_too_wide_to_build_is_one_export_error(copy, width):
    info = json.loads((copy / "model.json").read_text())
    first = sorted(info["modalities"])[0]
    info["modalities"][first]["backbone"]["widths"] = [width] * len(info["modalities"][first]["backbone"]["widths"])
    (copy / "model.json").write_text(json.dumps(info))
    with pytest.raises(ExportError, match="was changed after export"):
        load_model(copy)
    _rehash(copy)  # as its author wrote it
    with pytest.raises(ExportError, match="model.json: cannot build the exported model"):
        load_model(copy)


def test_an_edited_architecture_or_a_missing_file_is_refused(copy, tmp_path):
    arch = copy / "arch.yaml"
    arch.write_text(arch.read_text().replace("width: ", "width: 1"))
    with pytest.raises(ExportError, match="model.json or arch.yaml was changed after export"):
        load_model(copy)
    _rehash(copy)  # integrity recomputed: the architecture's own id still gives it away
    with pytest.raises(ExportError, match="is not the exported one"):
        load_model(copy)
    (copy / "model.json").unlink()
    with pytest.raises(ExportError, match="is not a fusion-nas export \\(no model.json\\)"):
        load_model(copy)


def _name_a_factory(copy: Path, factory: str, marker: Path) -> None:
    """Edit model.json as a hostile author would: the first modality's backbone becomes a
    `python` one whose factory is `factory`, called with a command that writes `marker`."""
    info = json.loads((copy / "model.json").read_text())
    first = sorted(info["modalities"])[0]
    args = {"command": f"touch {marker}"} if factory.startswith("os:") else {"args": ["touch", str(marker)]}
    if factory == "builtins:eval":
        args = {"source": f"open({str(marker)!r}, 'w')"}
    info["modalities"][first]["backbone"] = {"kind": "python", "factory": factory, "taps": ["0"], "args": args,
                                             "pretrain": False}
    (copy / "model.json").write_text(json.dumps(info))


@pytest.mark.parametrize("factory", ["os:system", "subprocess:run", "builtins:eval", "evil_factory:make"])
def test_a_model_json_that_names_a_factory_runs_nothing_without_consent(copy, tmp_path, factory, monkeypatch):
    """Edited model.json: the integrity hash fails. Rehashed as well (an author who signs what
    they ship): refused for want of consent. With consent, a standard-library "factory" is still
    refused before anything is imported, while a real factory is imported and called."""
    marker = tmp_path / "pwned"
    (tmp_path / "evil_factory.py").write_text(
        f"from pathlib import Path\n\ndef make(*a, **k):\n    Path({str(marker)!r}).touch()\n    raise SystemExit(9)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evil_factory", raising=False)  # imported below: gone afterwards
    _name_a_factory(copy, factory, marker)
    with pytest.raises(ExportError, match="was changed after export"):
        load_model(copy)
    _rehash(copy)
    with pytest.raises(ExportError, match=f"names code to import and run \\(.*{factory}.*\\); load it only from "
                                          "someone you trust: load_model\\(..., trust_code=True\\)"):
        load_model(copy)
    assert not marker.exists()
    if factory == "evil_factory:make":
        with pytest.raises(SystemExit):  # consent given: the author's code runs, whatever it does
            load_model(copy, trust_code=True)
        assert marker.exists()
    else:
        with pytest.raises(ExportError, match=f"factory: '{factory}' is in Python's standard library"):
            load_model(copy, trust_code=True)
        assert not marker.exists()


def test_evaluate_refuses_an_export_that_names_code_in_one_line_and_runs_nothing(copy, trained, tmp_path):
    from search.cli.common import UsageError

    marker = tmp_path / "pwned"
    _name_a_factory(copy, "os:system", marker)
    _rehash(copy)
    with pytest.raises(UsageError, match="names code to import and run .*fusion-nas evaluate --trust-code"):
        _cli(["evaluate", str(copy), "--config", str(trained.run_dir)])
    with pytest.raises(UsageError, match="is in Python's standard library"):
        _cli(["evaluate", str(copy), "--config", str(trained.run_dir), "--trust-code"])
    assert not marker.exists()


def test_evaluate_command_turns_a_damaged_export_into_one_usage_line(copy, trained):
    from search.cli.common import UsageError

    (copy / "weights.safetensors").write_bytes(b"")
    with pytest.raises(UsageError, match="changed or truncated"):
        _cli(["evaluate", str(copy), "--config", str(trained.run_dir)])


# ------------------------------------------------------------------ files that are not plain files
@pytest.mark.parametrize("name", ["weights.safetensors", "model.json", "arch.yaml"])
def test_an_export_file_that_is_a_fifo_or_a_device_is_refused_at_once(exported, tmp_path, name):
    out, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / name).unlink()
    os.mkfifo(copy / name)  # reading it would block forever
    with pytest.raises(ExportError, match=f"{copy / name}: not a regular file"):
        load_model(copy)
    (copy / name).unlink()
    (copy / name).symlink_to("/dev/zero")  # reading it would never end
    with pytest.raises(ExportError, match=f"{copy / name}: not a regular file"):
        load_model(copy)


def test_an_oversized_export_file_is_refused_before_reading(exported, tmp_path, monkeypatch):
    import fusion_ops.load

    out, _ = exported
    monkeypatch.setattr(fusion_ops.load, "MAX_WEIGHTS_BYTES", 100)
    with pytest.raises(ExportError, match="more than the 100 an export file may have"):
        load_model(out)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"test_accuracy": "high"}'])
def test_evaluate_with_a_malformed_metrics_json_is_one_line(trained, exported, tmp_path, capsys, text):
    out, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "metrics.json").write_text(text)
    from search.cli import main

    assert main(["evaluate", str(copy), "--config", str(trained.run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{copy / 'metrics.json'}:" in err


def test_an_export_holds_only_the_backbone_blocks_that_run(tmp_path):
    """An early spec on raw inputs exports no backbone tensor; one reading m1@1 exports block 1 of m1 only."""
    from safetensors.torch import load_file

    specs = [spec_dict("early", "concat", ("m1@0", "m2@0"), 8), spec_dict("hybrid", "concat", ("m1@1", "m2@0"), 8)]
    store = make_trained_run(tmp_path, specs=specs)
    for tid, want in (("t0", set()), ("t1", {"model.backbones.0.blocks.0.0.weight", "model.backbones.0.blocks.0.0.bias"})):
        out = tmp_path / tid
        metrics = export_run(store.run_dir, tid, out, say=lambda _m: None)
        tensors = load_file(out / "weights.safetensors")
        assert {k for k in tensors if ".backbones." in f".{k}"} == want
        assert metrics["reproduced"] is True and metrics["params_total"] == _trial(store, tid)["metrics"]["params_total"]
        assert sum(v.numel() for k, v in tensors.items() if k.startswith("model.")) == metrics["params_total"]
        model = load_model(out)
        assert [len(b.blocks) for b in model.model.backbones] == ([0, 0] if tid == "t0" else [1, 0])
