"""The recipe benchmark's smoke test runs, prints its table and writes nothing."""
from __future__ import annotations

from pathlib import Path

from tests.bench_run import run_bench

ROOT = Path(__file__).resolve().parents[1]


def test_bench_recipe_smoke_test_prints_the_table_and_leaves_results_alone():
    results = ROOT / "experiments" / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    out = run_bench("bench_recipe", "--smoke-test")
    assert "| task | spec | old | new |" in out
    rows = [line for line in out.splitlines() if line.startswith("| planted xor (d 32, 800 train) | early tensor | ")]
    assert len(rows) == 1 and all(0.0 <= float(c) <= 1.0 for c in rows[0].strip(" |").split(" | ")[2:])
    assert "| **seconds per candidate** | (mean) | " in out
    assert (results.read_bytes() if results.exists() else None) == before
