"""experiments/bench_oneshot.py --smoke-test runs end to end and leaves RESULTS.md alone."""
from __future__ import annotations

import re
from pathlib import Path

from tests.bench_run import run_bench

ROOT = Path(__file__).resolve().parents[1]


def test_bench_oneshot_smoke_test_prints_tau_and_the_tables():
    results = ROOT / "experiments" / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    out = run_bench("bench_oneshot", "--smoke-test")
    taus = re.findall(r"Kendall tau-b .* per seed \[0\]: (-?[\d.]+|nan); mean", out)
    assert len(taus) == 2 and all(t == "nan" or -1.0 <= float(t) <= 1.0 for t in taus)
    rows = re.findall(r"^\| (oneshot|mfas|nsga2|random) \| (4|8) \| ([\d.]+) ± [\d.]+ \| [\d.]+ ± [\d.]+ \| "
                      r"[\d.]+ ± [\d.]+ \| ([\d.]+) \|$", out, flags=re.M)
    assert len(rows) == 2 * 4 * 2 and all(0.0 < float(r[2]) <= 1.0 and float(r[3]) >= 0 for r in rows)  # a tiny search may print 0.0 s
    full = re.findall(r"^\| (oneshot|mfas) \| (\d+) \| (\d+) \| ([\d.]+) \| ", out, flags=re.M)
    assert [r[0] for r in full] == ["oneshot", "mfas"] and full[0][1] == "2" and int(full[1][1]) >= 1
    assert (results.read_bytes() if results.exists() else None) == before
