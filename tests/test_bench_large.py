"""The large-data benchmark's smoke test runs a real search on a disk tap cache, prints its
table and writes nothing (nor leaves its temporary folder behind)."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from tests.bench_run import run_bench

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.no_shared_ray  # it measures this process's children: Ray's, and nothing else
def test_bench_large_smoke_test_prints_the_table_and_leaves_results_alone():
    results = ROOT / "experiments" / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    left_before = set(Path(tempfile.gettempdir()).glob("bench_large-*"))
    out = run_bench("bench_large", "--smoke-test")
    assert re.search(r"tap cache: 6 taps, [0-9.]+ MiB float32 in /\S+/taps/[0-9a-f]{16} \([0-9.]+ s\)", out)
    assert "planted xor: 4,000 samples (3,000 train, 500 val incl. the holdout, 500 test)" in out
    assert "2 finished ok" in out
    for measure in ("tap cache build", "first candidate finished, after the tap cache was ready",
                    "driver peak RSS (ru_maxrss)", "worker 1 peak RSS (VmHWM) / private (RssAnon) / PSS"):
        row = next((ln for ln in out.splitlines() if ln.startswith(f"| {measure}")), None)
        assert row is not None, measure
        assert re.search(r"\| [0-9.]+ (s|GiB)", row), row  # a measured number in the value column
    # one row per trial worker process: the smoke test runs one trial at a time, so one worker
    workers = re.findall(r"^\| worker (\d) peak RSS \(VmHWM\) .*\| [0-9.]+ GiB", out, flags=re.M)
    assert workers == ["1"], workers
    assert (results.read_bytes() if results.exists() else None) == before
    assert set(Path(tempfile.gettempdir()).glob("bench_large-*")) == left_before
