"""Installed like a library: build the wheel, install it into a fresh virtual environment,
and from an empty folder run `fusion-nas init` and a short search (av_digits from package data).

The fresh environment reuses the test interpreter's installed dependencies (torch, Ray, ...)
through a `.pth` line, so nothing is downloaded; the source tree is nowhere on its path.
A wheel that cannot be built fails the test: that is what it checks."""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "spaces", "fusion_ops", "search")


def build_wheel(tmp: Path) -> Path:
    """A wheel built from a copy of the sources (the tree itself gets no build/ or egg-info)."""
    src = tmp / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    wheels = list((tmp / "dist").glob("fusion_nas-*.whl"))
    assert proc.returncode == 0 and wheels, f"the wheel did not build: {proc.stderr.strip()[-1500:]}"
    return wheels[0]


def fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A new venv without pip whose only extra path is this interpreter's site-packages (deps)."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = [p for p in {sysconfig.get_paths()["purelib"], *site.getsitepackages()} if Path(p).is_dir()]
    # a path added by a .pth line is not scanned for .pth files: the dev tree's editable install stays off
    (Path(purelib) / "_deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, timeout=300, capture_output=True)
    return venv


def test_wheel_installs_and_runs_init_and_a_search_from_an_empty_folder(tmp_path):
    wheel = build_wheel(tmp_path)
    import zipfile

    assert "search/datasets/data/av_digits.npz" in zipfile.ZipFile(wheel).namelist()
    venv = fresh_venv(tmp_path, wheel)
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ray_tmp = tempfile.mkdtemp(prefix="fnw", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    env.update(HOME=str(tmp_path), RAY_TMPDIR=ray_tmp)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=300)

    where = run(str(venv / "bin" / "python"), "-c", "import search; print(search.__file__)")
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    init = run(str(venv / "bin" / "fusion-nas"), "init")
    assert init.returncode == 0, init.stderr[-2000:]
    cfg = yaml.safe_load((work / "fusion-nas.yaml").read_text())
    assert cfg["data"] == {"kind": "av_digits"} and set(cfg["backbones"]["modalities"]) == {"audio", "image"}
    cfg["backbones"]["pretrain"] = {"epochs": 1, "patience": 1}
    cfg["space"] = {"stages": ["late"], "ops": {"concat": {}}, "widths": [8, 16], "activations": ["relu"]}
    cfg["train"] = {"max_steps": 10, "min_steps": 0, "eval_every": 5}
    cfg["search"].update(strategy="random", num_samples=2, confirm=0, baselines="none", max_concurrent=1)
    (work / "fusion-nas.yaml").write_text(yaml.safe_dump(cfg))
    try:
        proc = run(str(venv / "bin" / "fusion-nas"), "search", "fusion-nas.yaml")
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trials 2/2" in proc.stdout or "2 trials (2 ok)" in proc.stdout, proc.stdout[-2000:]
    assert list((work / "runs" / "av_digits").glob("*/report.html"))
