"""The costing benchmark's smoke test runs, prints both tables and writes nothing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_costing_smoke_test_prints_the_tables_and_leaves_results_alone():
    results = ROOT / "experiments" / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    run = subprocess.run([sys.executable, "experiments/bench_costing.py", "--smoke-test"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    for row in ("| before: a FusionHead built and counted per spec | ", "| after: per-cell counts (cost_function) | "):
        line = next(line for line in out.splitlines() if line.startswith(row))
        assert all(float(x) >= 0 for x in line.split("|")[2:5])  # set-up s, cold and warm ms/spec
    scored = [line for line in out.splitlines() if line.startswith("| 1 | 1 | yes | ")]
    assert len(scored) == 1  # the second batch is mfas's level 1, scored with the costs
    assert (results.read_bytes() if results.exists() else None) == before
