"""Run a benchmark's `main()` in this process, as `python experiments/<name>.py ARGS` would run
it, less the ~3 s of imports a subprocess pays (`test_bench_costing` keeps one true script run)."""
from __future__ import annotations

import contextlib
import importlib
import io
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_bench(name: str, *args: str) -> str:
    """What `experiments/<name>.py ARGS` prints on stdout, run from the repository's root; the
    benchmark's own checks fail the test (an exception, or `main` returning non-zero)."""
    module = importlib.import_module(f"experiments.{name}")
    out, here = io.StringIO(), Path.cwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out):
            code = module.main(list(args))
    finally:
        os.chdir(here)
    assert not code, f"{name} {' '.join(args)} returned {code}:\n{out.getvalue()[-3000:]}"
    return out.getvalue()
