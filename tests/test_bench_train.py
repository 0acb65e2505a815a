"""The training benchmark's smoke test runs, prints its tables and writes nothing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_train_smoke_test_prints_the_tables_and_leaves_results_alone():
    results = ROOT / "experiments" / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    run = subprocess.run(
        [sys.executable, "experiments/bench_train.py", "--smoke-test"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "| spec | batch | cached taps s/candidate (ms/epoch) | backbones per batch s/candidate (ms/epoch) | speed-up |" in out
    for spec in ("late concat", "hybrid tensor->concat", "early attention"):
        assert f"| {spec} | " in out
    rows = [line for line in out.splitlines() if line.startswith("| late concat | ")]
    assert rows and all(line.split("|")[5].strip().endswith("x") for line in rows)  # the speed-up ratio
    for title in ("av_digits (config", "mfeat", "planted xor", "planted additive"):
        assert f"### {title}" in out
    assert (results.read_bytes() if results.exists() else None) == before
