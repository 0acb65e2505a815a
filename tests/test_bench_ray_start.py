"""The Ray start benchmark's smoke test starts Ray once per setting, prints its table and writes nothing."""
from __future__ import annotations

from pathlib import Path

from tests.bench_run import run_bench

ROOT = Path(__file__).resolve().parents[1]


def test_bench_ray_start_smoke_test_prints_both_settings_and_leaves_results_alone():
    results = ROOT / "experiments" / "RESULTS.md"
    before = results.read_bytes()
    out = run_bench("bench_ray_start", "--smoke-test")
    rows = [line for line in out.splitlines() if line.startswith(("| on (Ray's default) |", "| off (fusion-nas) |"))]
    assert len(rows) == 2, out
    for row in rows:
        init_s, cpu_s = (float(c) for c in row.strip(" |").split(" | ")[1:3])
        assert 0 < init_s < 120 and 0 < cpu_s < 120, row
    assert results.read_bytes() == before
