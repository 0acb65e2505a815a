"""Issue 11: names that cannot escape the runs directory, a locked run directory, Ray that
never hangs or attaches by accident, size guards before allocation, and one line per mistake."""
from __future__ import annotations

import os
import socket
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from search.cli import main
from search.config import load_config
from search.runstore.store import RunStore
from tests.test_report import CONFIG, make_run, record, spec_dict

BASE = {**CONFIG, "data": {**CONFIG["data"], "n_train": 120, "n_test": 60}}


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI in-process; it must exit 2 with exactly one `fusion-nas: error:` line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fusion-nas: error: "), err
    return err


def write_config(tmp_path: Path, **edits) -> Path:
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    raw["search"] = {**raw["search"], "runs_dir": str(tmp_path / "runs")}
    for key, value in edits.items():
        section, _, sub = key.partition("__")
        if sub:
            raw[section] = {**raw.get(section, {}), sub: value}
        else:
            raw[section] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- names and paths ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["/abs/run", "../../x", "..", ".", "a/b", "a\nb", "a\x00b", "x" * 300, "-x", ""])
def test_a_bad_name_is_refused_and_nothing_is_written(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path)
    err = one_line_error(capsys, ["search", str(cfg), f"--name={name}"])
    assert "--name: bad run name" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_a_name_dir_linked_outside_the_runs_dir_is_refused(tmp_path):
    from spaces import ConfigError

    (tmp_path / "runs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs" / "r").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="is not a directory inside the runs directory"):
        RunStore.create(tmp_path / "runs", "r", {})
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_the_default_name_from_a_file_name_is_made_legal(tmp_path):
    raw = dict(BASE)
    raw.pop("name")
    path = tmp_path / "my first config.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_config(path).name == "my_first_config"


# ---- YAML ---------------------------------------------------------------------------
def test_duplicate_keys_are_an_error_and_exponents_are_numbers(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\ntrain: {lr: 1}\ntrain: {lr: 2}\n")
    assert f"{path}:3:1: invalid YAML: duplicate key 'train'" in one_line_error(capsys, ["space", str(path)])
    path = write_config(tmp_path, train={"epochs": 2})
    path.write_text(path.read_text().replace("epochs: 2", "epochs: 2\n  lr: 1e-3\n  weight_decay: 1.0e4"))
    cfg = load_config(path)
    assert cfg.train.lr == 0.001 and cfg.train.weight_decay == 1.0e4


# ---- the run directory's lock -------------------------------------------------------
def test_a_second_resume_of_a_run_in_use_is_refused(tmp_path, capsys):
    store = make_run(tmp_path)
    with store.locked():
        err = one_line_error(capsys, ["search", "--resume", str(store.run_dir)])
    assert f"{store.run_dir} is in use by another fusion-nas process (pid {os.getpid()})" in err
    with store.locked():  # released: free again
        pass


# ---- Ray ----------------------------------------------------------------------------
def test_an_address_where_nothing_listens_fails_within_seconds(tmp_path, capsys, monkeypatch):
    import ray

    from search.engine import ray_cluster

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init must not be tried"))
    port = free_port()
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"nothing answers at 127.0.0.1:{port}"):
        ray_cluster.init_ray(f"127.0.0.1:{port}", None)
    assert time.monotonic() - start < ray_cluster.CONNECT_TIMEOUT_S + 2


def test_an_address_without_a_token_gives_the_hint_at_once(tmp_path, monkeypatch):
    import ray

    from search.engine import ray_cluster

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init must not be tried"))
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with socket.socket() as server:  # something listens: the probe passes, the token check does not
        server.bind(("127.0.0.1", 0))
        server.listen()
        with pytest.raises(ConnectionError, match="no Ray auth token is set.*RAY_AUTH_MODE=token"):
            ray_cluster.init_ray(f"127.0.0.1:{server.getsockname()[1]}", None)


def test_the_embedded_ray_never_attaches_to_another_cluster(monkeypatch):
    import ray

    from search.engine import ray_cluster

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    assert ray_cluster.init_ray(None, 2) is True
    assert calls[0]["address"] == "local" and calls[0]["num_cpus"] == 2
    from spaces import ConfigError

    with pytest.raises(ConfigError, match="search.cpus_per_trial: 3 CPUs per trial, but the embedded Ray has 2"):
        ray_cluster.init_ray(None, 2, cpus_per_trial=3)
    assert calls[-1] == "shutdown"


def test_an_unreachable_address_is_refused_before_the_data_and_the_run_dir(tmp_path, capsys, monkeypatch):
    from search.engine import preflight

    monkeypatch.setattr(preflight, "load_dataset", lambda *a: pytest.fail("the data must not be read"))
    port = free_port()
    err = one_line_error(capsys, ["search", str(write_config(tmp_path)), "--address", f"127.0.0.1:{port}"])
    assert f"search.address: nothing answers at 127.0.0.1:{port}" in err
    assert not (tmp_path / "runs").exists()


def test_address_auto_uses_only_the_address_given_or_recorded_by_ray_start(tmp_path, capsys, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init must not be tried"))
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # no cluster recorded there
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    path = str(write_config(tmp_path))
    err = one_line_error(capsys, ["search", path, "--address", "auto"])
    assert "search.address: auto: RAY_ADDRESS is not set and no `ray start --head` cluster is recorded" in err
    (tmp_path / "ray").mkdir()
    recorded = free_port()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{recorded}\n")  # what `ray start` writes
    assert f"nothing answers at 127.0.0.1:{recorded}" in one_line_error(capsys, ["search", path, "--address", "auto"])
    given = free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{given}")  # the user's own address comes first
    assert f"nothing answers at 127.0.0.1:{given}" in one_line_error(capsys, ["search", path, "--address", "auto"])
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("address", ["::::", "http://x", "127.0.0.1:99999", "host port", "a:b"])
def test_an_unparsable_address_is_one_line(tmp_path, capsys, address):
    err = one_line_error(capsys, ["search", str(write_config(tmp_path)), "--address", address])
    assert "search.address: cannot read" in err
    assert not (tmp_path / "runs").exists()


def test_more_cpus_per_trial_than_the_machine_has_is_refused_before_the_run_dir(tmp_path, capsys):
    path = write_config(tmp_path, search__cpus_per_trial=(os.cpu_count() or 1) + 1)
    assert "search.cpus_per_trial:" in one_line_error(capsys, ["search", str(path)])
    assert not (tmp_path / "runs").exists()


# ---- size guards --------------------------------------------------------------------
def test_a_huge_width_is_refused_with_its_size(tmp_path, capsys):
    path = write_config(tmp_path, space__widths=[1000000])
    err = one_line_error(capsys, ["search", str(path)])
    assert "space: the largest architecture" in err and "more than search.max_params = 100,000,000" in err
    assert not (tmp_path / "runs").exists()
    # the limit is the user's to raise: a generous one lets the space through to `space`
    path = write_config(tmp_path, space__widths=[64], search__max_params=50)
    assert "search.max_params = 50" in one_line_error(capsys, ["space", str(path)])
    path = write_config(tmp_path, search__max_flops=1000)
    err = one_line_error(capsys, ["space", str(path)])
    assert "FLOPs per sample, more than search.max_flops = 1,000" in err and "backbones" in err


def test_a_tensor_op_too_big_for_three_inputs_is_refused_at_config_time(tmp_path, capsys):
    path = write_config(tmp_path, space__ops={"tensor": {"proj_dim": [64]}})  # hybrid: two taps + the previous cell
    assert "space.ops.tensor.proj_dim: outer product of 3 modalities" in one_line_error(capsys, ["space", str(path)])


def write_fake_npz(path: Path, members: dict[str, dict]) -> None:
    """An .npz whose members have the given headers (and almost no data)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, header in members.items():
            with zf.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array_header_1_0(f, header)
                f.write(b"\0" * 64)


def npz_config(tmp_path: Path, npz: Path) -> Path:
    return write_config(tmp_path, data={"kind": "npz", "path": str(npz)}, backbones={})


def test_an_npz_header_larger_than_memory_is_refused_before_reading(tmp_path, capsys):
    npz = tmp_path / "big.npz"
    write_fake_npz(npz, {"a": {"descr": "<f4", "fortran_order": False, "shape": (10**12, 3)},
                         "y": {"descr": "<i8", "fortran_order": False, "shape": (10,)}})
    err = one_line_error(capsys, ["space", str(npz_config(tmp_path, npz))])
    assert f"{npz}: array 'a' claims shape (1000000000000, 3)" in err and "memory" in err


@pytest.mark.parametrize(("arrays", "message"), [
    ({"a": np.zeros((40, 3)), "y": np.arange(40) % 2}, "data: fusion needs at least 2 modalities"),
    ({"a": np.zeros((40, 2, 2, 2, 2)), "b": np.zeros((40, 3)), "y": np.arange(40) % 2}, "backbones.modalities.a:"),
    ({"a": np.zeros((40, 0)), "b": np.zeros((40, 3)), "y": np.arange(40) % 2}, "array 'a' has no features"),
    ({"a": np.ones((40, 3)) * 1j, "b": np.zeros((40, 3)), "y": np.arange(40) % 2}, "array 'a' holds complex numbers"),
    ({"a": np.array([None] * 40), "b": np.zeros((40, 3)), "y": np.arange(40) % 2}, "array 'a' holds Python objects"),
])
def test_bad_data_is_one_line_before_the_run_dir_exists(tmp_path, capsys, arrays, message):
    npz = tmp_path / "d.npz"
    np.savez(npz, **arrays)
    assert message in one_line_error(capsys, ["search", str(npz_config(tmp_path, npz))])
    assert not (tmp_path / "runs").exists()


def test_a_cnn2d_backbone_on_vector_data_is_one_line(tmp_path, capsys):
    path = write_config(tmp_path, backbones={"modalities": {"m1": {"kind": "cnn2d", "channels": [4]},
                                                            "m2": {"kind": "mlp", "widths": [8]}}})
    assert "backbones.modalities.m1: cnn2d backbone: inputs must be" in one_line_error(capsys, ["space", str(path)])


@pytest.mark.parametrize("key", ["search__runs_dir", "backbones__cache_dir"])
def test_a_folder_setting_naming_a_file_is_one_line(tmp_path, capsys, key):
    (tmp_path / "afile").write_text("x")
    path = write_config(tmp_path, **{key: str(tmp_path / "afile")})
    err = one_line_error(capsys, ["search", str(path)])
    assert f"{key.replace('__', '.')}: {tmp_path / 'afile'} exists and is not a directory" in err


@pytest.mark.parametrize("key", ["search__runs_dir", "backbones__cache_dir", "search__tap_dir"])
def test_a_folder_that_cannot_be_written_is_refused_before_the_run_dir(tmp_path, capsys, key):
    path = write_config(tmp_path, **{key: "/sys/fusion-nas-test"})  # /sys is read-only, even to root
    err = one_line_error(capsys, ["search", str(path)])
    assert f"{key.replace('__', '.')}: /sys/fusion-nas-test cannot be written (/sys: " in err
    assert not (tmp_path / "runs").exists() and not Path("/sys/fusion-nas-test").exists()


# ---- resume, show ---------------------------------------------------------------------
@pytest.mark.parametrize("flags", [["--num-samples", "3"], ["--strategy", "grid"], ["--seed", "1"], ["--name", "x"]])
def test_flags_a_resume_would_ignore_are_refused(tmp_path, capsys, flags):
    store = make_run(tmp_path)
    err = one_line_error(capsys, ["search", "--resume", str(store.run_dir), *flags])
    assert f"{flags[0]}: not allowed with --resume" in err


def test_a_damaged_config_on_resume_is_one_line(tmp_path, capsys):
    store = make_run(tmp_path)
    store.config_path.write_text("name: [unclosed\n")
    assert f"{store.config_path}:" in one_line_error(capsys, ["search", "--resume", str(store.run_dir)])
    store.config_path.write_text("- a list\n")
    assert f"{store.config_path}: expected a mapping" in one_line_error(capsys, ["search", "--resume",
                                                                                 str(store.run_dir)])


def test_show_and_export_of_a_record_without_spec_are_one_line(tmp_path, capsys):
    spec = spec_dict("late", "concat", ("m1@2", "m2@2"), 8)
    good = record("t0", spec, "ok", {"val_accuracy": 0.9, "test_accuracy": 0.8, "params_total": 10,
                                     "flops_total": 20})
    store = make_run(tmp_path, trials=[{k: v for k, v in good.items() if k != "spec"}])
    err = one_line_error(capsys, ["show", str(store.run_dir)])
    assert f"{store.trials_path}: trial 't0': spec: missing" in err
    err = one_line_error(capsys, ["export", str(store.run_dir), "--out", str(tmp_path / "out")])
    assert f"{store.trials_path}: trial 't0': spec: missing" in err


def test_show_says_when_every_trial_failed(tmp_path, capsys):
    spec = spec_dict("late", "concat", ("m1@2", "m2@2"), 8)
    store = make_run(tmp_path, trials=[record(f"t{i}", spec, "failed", {}, reason="boom") for i in range(3)])
    assert main(["show", str(store.run_dir)]) == 0
    out = capsys.readouterr().out
    assert "every trial ended without a usable score (3 of 3)" in out and "no finished trial yet" not in out


def test_space_refuses_negative_samples(capsys):
    from tests.test_cli import CONFIGS

    assert "--samples: expected an integer >= 0, got -1" in one_line_error(
        capsys, ["space", str(CONFIGS / "planted.yaml"), "--samples", "-1"])


def test_init_refuses_one_modality_and_an_out_it_cannot_write_in_one_line(tmp_path, capsys, monkeypatch):
    """`init --data` of a one-modality npz is refused by init itself (the config it would write is
    refused by `space` and `search`); --out onto a directory, through a file or onto a full disk
    is one line too."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "one.npz", m1=rng.normal(size=(60, 4)), y=np.arange(60) % 2)
    cases = [(["init", "--data", "one.npz", "--out", "c.yaml"], "one.npz: 1 modality (m1) besides the labels; "
                                                                 "fusion needs at least 2"),
             (["init", "--out", str(tmp_path), "--force"], f"{tmp_path}: is a directory"),
             (["init", "--out", "/dev/null/x.yaml"], "/dev/null/x.yaml: cannot write it"),
             (["init", "--out", "/dev/full", "--force"], "/dev/full: cannot write it (No space left on device)")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (argv, err)
    assert not (tmp_path / "c.yaml").exists()


def test_data_near_the_float32_maximum_pretrains_and_trains_to_finite_numbers(tmp_path):
    """Values near float32's largest (once NaN in pretraining, then a traceback) are
    standardised in float64: the backbones pretrain and a candidate trains to finite scores."""
    from search.engine.run import evaluate_trial, prepare, trial_context
    from spaces import ArchSpec

    rng = np.random.default_rng(0)
    huge = (rng.uniform(0.5, 1.0, (200, 6)) * np.finfo(np.float32).max).astype(np.float32)
    np.savez(tmp_path / "big.npz", m1=huge, m2=rng.normal(size=(200, 6)).astype(np.float32),
             y=rng.integers(0, 2, 200))
    cfg = load_config(write_config(tmp_path, data={"kind": "npz", "path": str(tmp_path / "big.npz")},
                                   backbones={**BASE["backbones"], "cache_dir": str(tmp_path / "cache")}))
    prepared = prepare(cfg, say=lambda _m: None)
    spec = ArchSpec.from_dict(spec_dict("late", "concat", ("m1@2", "m2@2"), 8))
    metrics = evaluate_trial(spec, trial_context(prepared))
    assert metrics["status"] == "ok", metrics.get("reason")
    assert all(np.isfinite(metrics[k]) for k in ("val_accuracy", "test_accuracy"))
