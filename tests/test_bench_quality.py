"""The quality benchmark: its table from hand-made results, and its smoke test end to end."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests.bench_run import run_bench

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "experiments" / "bench_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_reports_means_and_gaps_in_points():
    bench = load_bench()
    searches = [{"dataset": "d", "budget": b, "seed": s, "test": t, "lcb_test": t + 0.01}
                for b, ts in ((32, (0.80, 0.82, 0.84)), (64, (0.85, 0.86, 0.87))) for s, t in enumerate(ts)]
    lines = bench.table(searches, [{"dataset": "d", "name": "logreg", "test": 0.84}],
                        [{"dataset": "d", "test": 0.88}], (32, 64))
    assert lines[0].startswith("| dataset | search, budget 32") and "search 64 − baseline" in lines[0]
    # the worst seed's gap to the oracle (0.85 - 0.88), and the answer's mean with `search.rank: lcb`
    assert lines[2] == ("| d | 0.820 ± 0.020 | 0.860 ± 0.010 | 0.840 (logreg) | 0.880 | +2.0 pts | -2.0 pts "
                        "| -3.0 pts | 0.870 |")


@pytest.mark.no_shared_ray  # its process pool forks this process
def test_bench_quality_smoke_test_prints_the_table_and_leaves_results_alone():
    results = ROOT / "experiments" / "RESULTS.md"
    before = results.read_bytes()
    out = run_bench("bench_quality", "--smoke-test", "--jobs", "1")
    row = next(ln for ln in out.splitlines() if ln.startswith("| planted xor |"))
    numbers = [float(x) for x in re.findall(r"\d\.\d{3}", row)]
    # 2 budgets: search ± std; baseline, oracle; the answer with `rank: lcb`
    assert len(numbers) == 7 and all(0.0 <= x <= 1.0 for x in numbers)
    assert "budget 2, seed 0" in out and "budget 4, seed 0" in out  # budget 2: the same search, stopped
    assert "(3 seeds," in out  # the search's best point was confirmed: 1 + search.confirm seeds
    assert results.read_bytes() == before
