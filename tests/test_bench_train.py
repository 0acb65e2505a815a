"""The training benchmark's smoke test runs, prints its tables and writes nothing."""
from __future__ import annotations

from pathlib import Path

from tests.bench_run import run_bench

ROOT = Path(__file__).resolve().parents[1]


def test_bench_train_smoke_test_prints_the_tables_and_leaves_results_alone():
    results = ROOT / "experiments" / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    out = run_bench("bench_train", "--smoke-test")
    assert "| spec | batch | cached taps s/candidate (ms/epoch) | backbones per batch s/candidate (ms/epoch) | speed-up |" in out
    for spec in ("late concat", "hybrid tensor->concat", "early attention"):
        assert f"| {spec} | " in out
    rows = [line for line in out.splitlines() if line.startswith("| late concat | ")]
    assert rows and all(line.split("|")[5].strip().endswith("x") for line in rows)  # the speed-up ratio
    for title in ("av_digits (config", "mfeat", "planted xor", "planted additive"):
        assert f"### {title}" in out
    assert (results.read_bytes() if results.exists() else None) == before
