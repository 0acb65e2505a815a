"""The search benchmark: its scoring on a hand-made table, and its smoke test end to end."""
from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import pytest

from fusion_ops import fusion_args
from search.strategies import list_strategies
from spaces import SearchSpace
from tests.bench_run import run_bench

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_search", ROOT / "experiments" / "bench_search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_space() -> SearchSpace:
    raw = {"stages": ["early", "late", "hybrid"], "ops": {"concat": {}, "tensor": {"proj_dim": [2, 4]}},
           "widths": [8], "activations": ["relu"], "max_cells": 1, "trunks": [[]]}
    catalogue = {op: fusion_args(op) for op in ("concat", "tensor")}
    return SearchSpace.from_dict(raw, catalogue=catalogue, depths={"a": [0, 1], "b": [0, 1]})


def fake_table(space: SearchSpace) -> dict:
    """Made-up, deterministic results: accuracy and costs from the spec's position; one failure."""
    table = {}
    for i, spec in enumerate(space.enumerate()):
        table[spec.arch_id] = {"status": "failed" if i == 3 else "ok",
                               "val_accuracy": math.nan if i == 3 else 0.3 + 0.05 * ((i * 7) % 11),
                               "params_total": 100 + 10 * i, "flops_total": 1000 + 37 * ((i * 5) % 13),
                               "spec": spec.to_dict()}
    return table


def test_a_search_that_asks_every_spec_finds_the_whole_front_and_the_best_spec():
    bench, space = load_bench(), tiny_space()
    table = fake_table(space)
    refs = bench.references(table)
    hv = {k: bench.pareto.hypervolume(bench.points(table.values()), ref) for k, ref in refs.items()}
    asked = bench.drive("grid", space, table, space.size(), seed=0, cost=None)
    assert sorted(asked) == sorted(table)
    best = max(r["val_accuracy"] for r in table.values() if r["status"] == "ok")
    assert bench.score(asked, table, refs, hv) == {"default": 1.0, "nadir": 1.0, "best_found": 1.0,
                                                   "best_accuracy": best}


def test_a_partial_search_scores_below_one_and_misses_the_best_spec_it_never_asked():
    bench, space = load_bench(), tiny_space()
    table = fake_table(space)
    refs = bench.references(table)
    hv = {k: bench.pareto.hypervolume(bench.points(table.values()), ref) for k, ref in refs.items()}
    best = max((r for r in table.values() if r["status"] == "ok"), key=lambda r: r["val_accuracy"])
    others = [a for a, r in table.items() if r["val_accuracy"] != best["val_accuracy"]]
    out = bench.score(others, table, refs, hv)
    assert out["best_found"] == 0.0 and out["best_accuracy"] < best["val_accuracy"]
    assert 0.0 < out["default"] < 1.0 and 0.0 < out["nadir"] < 1.0
    # the fixed references come from every spec's costs, the failed one included
    assert refs["default"].tolist() == [0.0, 4.0, 5.0]
    assert refs["nadir"][1] == pytest.approx(math.log10(100 + 10 * (space.size() - 1)))


def test_mfas_and_nsga2_ask_distinct_specs_from_the_table():
    bench, space = load_bench(), tiny_space()
    table = fake_table(space)
    for name in ("mfas", "nsga2", "random"):
        asked = bench.drive(name, space, table, 8, seed=1, cost=lambda s: (
            table[s.arch_id]["params_total"], table[s.arch_id]["flops_total"]))
        assert len(asked) == len(set(asked)) == 8, name


def test_a_variant_passes_its_options_to_the_strategy(monkeypatch):
    bench, space = load_bench(), tiny_space()
    table = fake_table(space)
    cost = lambda s: (table[s.arch_id]["params_total"], table[s.arch_id]["flops_total"])  # noqa: E731
    plain = bench.drive("mfas", space, table, 6, seed=0, cost=cost)
    bare = bench.drive("mfas", space, table, 6, seed=0, cost=cost, options={"handmade": False})
    handmade = [s.arch_id for s in bench.make_strategy("mfas", space, seed=0)._handmade]
    assert plain[: len(handmade)] == handmade and bare[: len(handmade)] != handmade
    said = []
    prepared = type("P", (), {"taps": None})()
    monkeypatch.setattr(bench, "cost_function", lambda _p: cost)
    config = type("C", (), {"space": space, "train": None})()
    lines = bench.strategy_rows(config, prepared, table, [4], [0], said.append, ["mfas", "random"], [{"refine": 0}])
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| mfas", "| mfas refine: 0", "| random"]


@pytest.mark.usefixtures("ray_local")  # its Ray search on the shared Ray
def test_bench_search_smoke_test_prints_the_tables_and_leaves_results_alone():
    results = ROOT / "experiments" / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    out = run_bench("bench_search", "--smoke-test")
    for title in ("planted xor", "av_digits"):
        assert f"### {title} (`experiments/configs/bench_" in out
    header = ("| strategy | budget | HV / exhaustive HV (default ref) | HV / exhaustive HV (nadir ref) "
              "| best-accuracy spec found | best val accuracy found |")
    assert out.count(header) == 2
    names = "|".join(map(re.escape, list_strategies()))
    rows = re.findall(rf"^\| ({names}) \| (\d+) \| ([\d.]+) ± [\d.]+ \| ([\d.]+) ± [\d.]+ \| (\d)/1 \| [\d.]+ ± [\d.]+ \|",
                      out, flags=re.M)
    assert sorted({(r[0], r[1]) for r in rows}) == sorted((s, b) for s in list_strategies() for b in ("4", "8"))
    assert len(rows) == 2 * 2 * len(list_strategies())  # two datasets, two budgets
    assert all(0.0 < float(r[2]) <= 1.0 and 0.0 <= float(r[3]) <= 1.0 for r in rows)
    assert "differs from the trained candidates' costs on 0 of" in out
    assert re.search(r"\| Σ trial seconds .* \| \d+\.\d\d \|", out)
    assert re.search(r"Ratios: wall / Σ trials \d+\.\d\d", out)
    assert "4 of 4 trials reproduced step 1's val accuracy exactly" in out
    assert (results.read_bytes() if results.exists() else None) == before
