"""A run directory or export received from someone else runs none of the code it names
(plugins, `kind: python` backbone factories) unless the user consents (`--trust-code`,
`trust_code=True`), and never imports a module from the run directory itself."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from search import api
from search.cli import main
from tests.test_report import make_run

MARK = "import pathlib\npathlib.Path({marker!r}).touch()\n"
FACTORY = "import pathlib\n\ndef make(*a, **k):\n    pathlib.Path({marker!r}).touch()\n    raise SystemExit(9)\n"


def hostile_run(tmp_path: Path, case: str, monkeypatch) -> tuple[Path, Path]:
    """A finished run (records only) whose config.yaml names code that would write `marker`:
    `run_plugin` a plugin module in the run directory, `cwd_plugin` one in the current folder
    (on sys.path, as `python -m search` puts it), `run_factory` a python backbone whose
    factory module lies in the run directory, `os_system` the factory `os:system`."""
    store = make_run(tmp_path)
    run_dir, marker = store.run_dir, tmp_path / "pwned"
    cfg = yaml.safe_load(store.config_path.read_text())
    if case == "run_plugin":
        (run_dir / "evil_v1.py").write_text(MARK.format(marker=str(marker)))
        cfg["plugins"] = ["evil_v1"]
        cfg["source"] = str(run_dir / "config.yaml")  # its folder is the run directory itself
    elif case == "cwd_plugin":
        here = tmp_path / "here"
        here.mkdir()
        (here / "evil_v3.py").write_text(MARK.format(marker=str(marker)))
        monkeypatch.chdir(here)
        monkeypatch.syspath_prepend(str(here))
        cfg["plugins"] = ["evil_v3"]
    elif case == "run_factory":
        (run_dir / "evil_factory.py").write_text(FACTORY.format(marker=str(marker)))
        cfg["backbones"]["modalities"]["m1"] = {"kind": "python", "factory": "evil_factory:make",
                                                "taps": ["a", "b"]}
        cfg["source"] = str(run_dir / "config.yaml")
    elif case == "os_system":
        cfg["backbones"]["modalities"]["m1"] = {"kind": "python", "factory": "os:system", "taps": ["a", "b"],
                                                "args": {"command": f"touch {marker}"}}
    store.config_path.write_text(yaml.safe_dump(cfg))
    return run_dir, marker


CASES = ["run_plugin", "cwd_plugin", "run_factory", "os_system"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("case", CASES)
def test_without_consent_no_command_runs_the_code_a_run_names(tmp_path, capsys, monkeypatch, case):
    run_dir, marker = hostile_run(tmp_path, case, monkeypatch)
    assert main(["show", str(run_dir)]) == 0  # records only
    assert main(["report", str(run_dir)]) == 0  # two records without costs: drawn without them
    assert "with unknown params/FLOPs are not drawn: X-errored, X-early" in (run_dir / "report.html").read_text()
    capsys.readouterr()
    named = "'os:system'" if case == "os_system" else "evil_"
    for argv in (["export", str(run_dir), "--out", str(tmp_path / "out")],
                 ["evaluate", str(tmp_path / "no_export"), "--config", str(run_dir)],
                 ["search", "--resume", str(run_dir)]):
        assert main(argv) == 2, argv
        err = _one_line(capsys)
        assert "names code to import and run" in err and named in err and "--trust-code" in err, err
    with pytest.raises(Exception, match="names code to import and run"):
        api.load_run(run_dir).export(tmp_path / "out2")
    assert not marker.exists()
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


@pytest.mark.parametrize("case", ["run_plugin", "run_factory", "os_system"])  # cwd_plugin: the next test
def test_with_consent_a_module_in_the_run_directory_is_still_never_imported(tmp_path, capsys, monkeypatch, case):
    for name in ("evil_v1", "evil_factory"):  # whatever another test imported under these names
        monkeypatch.delitem(sys.modules, name, raising=False)
    run_dir, marker = hostile_run(tmp_path, case, monkeypatch)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "out"), "--trust-code"]) == 2
    err = _one_line(capsys)
    expected = {"run_plugin": "cannot import plugin module 'evil_v1'",
                "run_factory": "cannot import module 'evil_factory'",
                "os_system": "factory: 'os:system' is in Python's standard library"}[case]
    assert expected in err, err
    assert not marker.exists()
    assert sys.modules.get("evil_v1") is None and sys.modules.get("evil_factory") is None


def test_with_consent_code_on_the_users_own_path_runs(tmp_path, capsys, monkeypatch):
    run_dir, marker = hostile_run(tmp_path, "cwd_plugin", monkeypatch)
    main(["export", str(run_dir), "--out", str(tmp_path / "out"), "--trust-code", "--pick", "nope"])
    assert marker.exists()  # imported: what --trust-code is for
    sys.modules.pop("evil_v3", None)


# ---- writes stay inside the run directory -----------------------------------------------
@pytest.mark.parametrize("name", ["trials.jsonl", ".lock", "ray", "pareto.json", "report.html"])
def test_a_symlink_leading_out_of_a_run_is_never_written_through(tmp_path, capsys, name):
    """A shared run whose file or folder is a symlink to the user's own data: `--resume` and
    `report` refuse in one line (exit 2) and the target is left as it was; `show` still reads."""
    store = make_run(tmp_path)
    outside = tmp_path / "precious"
    if name == "ray":
        outside.mkdir()
    else:
        outside.write_text("keep me\n" if name != "trials.jsonl" else store.trials_path.read_text())
    before = sorted(p.name for p in outside.iterdir()) if outside.is_dir() else outside.read_text()
    path = store.run_dir / name
    if path.exists():
        path.unlink()
    path.symlink_to(outside)
    assert main(["search", "--resume", str(store.run_dir)]) == 2
    err = _one_line(capsys)
    assert f"{path}: a symlink leading out of the run directory" in err, err
    if name == "report.html":
        assert main(["report", str(store.run_dir)]) == 2
        assert "a symlink leading out of the run directory" in _one_line(capsys)
    assert main(["show", str(store.run_dir)]) == 0  # reads through a symlink stay allowed
    after = sorted(p.name for p in outside.iterdir()) if outside.is_dir() else outside.read_text()
    assert after == before


def test_a_symlink_that_stays_inside_the_run_is_fine(tmp_path):
    store = make_run(tmp_path)
    (store.run_dir / "keep").mkdir()
    (store.run_dir / "link").symlink_to(store.run_dir / "keep")
    store.check_writes_stay_inside()
    assert store.inside(store.run_dir / "link" / "x.json") == store.run_dir / "link" / "x.json"
