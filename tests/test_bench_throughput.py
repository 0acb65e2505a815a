"""The throughput benchmark: its table's arithmetic on made-up timings, and its smoke test end to end."""
from __future__ import annotations

import importlib.util
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.bench_run import run_bench

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_throughput", ROOT / "experiments" / "bench_throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_row_divides_wall_by_the_candidate_seconds_per_slot_and_says_where_the_rest_goes():
    bench = load_bench()
    base = bench.Timing("(a)", wall=120.0, first=3.0, prepared=1.0, records=[{"seconds": 1.5}] * 64)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    # two slots, packs of 8: candidates 2j and 2j+1 train side by side for 1.5 s, ending 10 + 2j s in
    records = [{"seconds": 1.5, "trial_id": f"t{i // 8}_{i % 8}", "pack": 8,
                "finished_at": (start + timedelta(seconds=10 + 2 * (i // 2))).isoformat()} for i in range(64)]
    packed = bench.Timing("(c)", wall=80.0, first=10.0, prepared=2.0, slots=2, load=(1.0, 2.5),
                          started_at=start.timestamp(), records=records)
    cells = [c.strip() for c in packed.row(base).strip("|").split("|")]
    # 64 candidates; wall 80; Σ 96; 2 slots: 80 / (96 / 2) = 1.67; 64 / 80 s * 3600 = 2880 an hour; 120 / 80 = 1.5x
    assert cells == ["(c)", "64", "80.0", "96.0", "2", "1.67", "2880", "10.0", "2.0", "1.50x", "1.0 / 2.5"]
    assert bench.packs(packed) == "8 Tune trials, pack sizes [8, 8, 8, 8, 8, 8, 8, 8]"
    # the first start at 8.5 s; the last finish at 72 s: 2 x 63.5 slot-seconds, 96 of them training; 8 s to the end
    assert packed.where() == pytest.approx((8.5, 2 * 63.5 - 96, 8.0))
    assert bench.packs(bench.Timing("(b)", records=[{"trial_id": "a"}, {"trial_id": "b"}])) == \
        "2 Tune trials of one candidate"
    assert bench._median([3.0, 1.0, 2.0, 10.0]) == pytest.approx(2.5)


@pytest.mark.usefixtures("ray_local")  # its two Ray searches on the shared Ray
def test_bench_throughput_smoke_test_prints_three_runs_and_leaves_results_alone():
    results = ROOT / "experiments" / "RESULTS.md"
    before = results.read_bytes()
    out = run_bench("bench_throughput", "--smoke-test")
    assert "the same 6 specs in all three: yes" in out
    rows = re.findall(r"^\| (\([abc]\)) [^|]+ \| 6 \| ([\d.]+) \| ([\d.]+) \| (\d) \| ([\d.]+) \| (\d+) \| ([\d.]+) \|",
                      out, flags=re.M)
    assert [r[0] for r in rows[-3:]] == ["(a)", "(b)", "(c)"]
    for _, wall, sigma, slots, ratio, per_hour, first in rows[-3:]:
        w, s, n = float(wall), float(sigma), int(slots)  # printed to 0.1 s: the ratios within that rounding
        assert (w - 0.05) / ((s + 0.05) / n) - 0.01 <= float(ratio) <= (w + 0.05) / ((s - 0.05) / n) + 0.01
        assert 6 / (w + 0.05) * 3600 - 1 <= int(per_hour) <= 6 / (w - 0.05) * 3600 + 1
        assert 0 < float(first) <= w
    assert "(b) 6 Tune trials of one candidate" in out
    where = re.search(r"s after the last finish\): \(a\) ([\d.]+), (-?[\d.]+), ([\d.]+); \(b\) ([\d.]+), "
                      r"(-?[\d.]+), ([\d.]+); \(c\) ([\d.]+), (-?[\d.]+), ([\d.]+)\.", out)
    assert where and all(float(v) >= -0.05 for v in where.groups()), out[-2000:]
    packed = re.search(r"\(c\) (\d) Tune trials, pack sizes \[([\d, ]+)\]", out)
    assert packed and int(packed.group(1)) < 6 and sum(map(int, packed.group(2).split(", "))) == 6
    assert results.read_bytes() == before
