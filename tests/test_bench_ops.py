"""The operator benchmark's smoke test runs every operator on every dataset, prints its tables
and writes nothing."""
from __future__ import annotations

import re
from pathlib import Path

from fusion_ops import list_fusions
from tests.bench_run import run_bench

ROOT = Path(__file__).resolve().parents[1]


def test_bench_ops_smoke_test_prints_a_row_per_operator_and_dataset_and_leaves_results_alone():
    results = ROOT / "experiments" / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    out = run_bench("bench_ops", "--smoke-test")
    assert "inference path only" in out
    tables = out.split("### ")[1:]
    assert [t.splitlines()[0] for t in tables] == ["av_digits", "planted xor", "planted xor, sequences"]
    for table in tables:
        rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ") and "`" in line]
        assert sorted(r[0].removeprefix("| ").removesuffix(" (tokens)") for r in rows) == list_fusions()
        for r in rows:
            val, test, params, flops, p_fusion, f_fusion = r[2:8]
            assert 0 <= float(val) <= 1 and 0 <= float(test) <= 1
            # honest costs: a spec on the raw taps (@0) runs no backbone, so its total is its fusion part
            raw_only = all(t.endswith("@0") for t in re.findall(r"\w+@\d+", r[1]))
            assert (int(params.replace(",", "")) == int(p_fusion.replace(",", ""))) == raw_only
            assert (int(flops.replace(",", "")) == int(f_fusion.replace(",", ""))) == raw_only
            assert int(p_fusion.replace(",", "")) > 0 and int(f_fusion.replace(",", "")) > 0
            assert len(r[8].split(" / ")) == 3  # late, hybrid @1, hybrid @0 were all tried
    assert (results.read_bytes() if results.exists() else None) == before
