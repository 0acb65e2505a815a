"""Run `fusion-nas` as a user does: a subprocess (`fusion_nas`), or its `main()` in this process
(`fusion_nas_here`, no ~3 s of imports and, with the `ray_local` fixture, no Ray start)."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fusion_nas(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "search", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def fusion_nas_here(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`fusion_nas`, run through `search.cli.main` in this process, in `cwd`."""
    from search.cli import main

    out, err, before = io.StringIO(), io.StringIO(), Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(["fusion-nas", *args], code, out.getvalue(), err.getvalue())


def run_dir_of(proc: subprocess.CompletedProcess) -> Path:
    """The run directory a finished `search` printed on its last line."""
    return Path(proc.stdout.strip().splitlines()[-1].split(": ", 1)[1])
