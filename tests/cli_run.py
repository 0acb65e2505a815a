"""Run `fusion-nas` as a user does (a subprocess), for the end-to-end tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fusion_nas(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "search", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_dir_of(proc: subprocess.CompletedProcess) -> Path:
    """The run directory a finished `search` printed on its last line."""
    return Path(proc.stdout.strip().splitlines()[-1].split(": ", 1)[1])
