"""Benchmark: costing candidates for a strategy, the old way (build each `FusionHead`, count it)
against `cost_function` (per-cell counts, `fusion_ops.head_cost`), and one mfas batch with each.

Space, data and tap shapes: experiments/configs/av_digits.yaml (the default space); the
backbones are built, not pretrained (parameters and FLOPs do not depend on the weights).
Per spec: 512 specs drawn by `space.sample` costed on a fresh cost function (cold), then
512 other ones on the same function (warm: their cells mostly seen). One mfas batch: the
strategy (batch 15, `max_candidates` 512, as `search` runs it) is told a synthetic metric (a
hash of the spec; only batch building is timed) with the exact costs; each ask that builds
a batch is timed, with the costing inside it. Both cost functions give equal costs, so
both strategies ask the same specs (checked).

Usage: .venv/bin/python experiments/bench_costing.py [--smoke-test] [--no-write]
The full run replaces the generated part of the "Costing candidates" section of experiments/RESULTS.md.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from experiments.results_block import command_line, machine_line, write_block  # noqa: E402
from fusion_ops import FusionHead, build_backbone, count_flops, count_params, deepest_taps  # noqa: E402
from search.config import load_config  # noqa: E402
from search.datasets import load_dataset  # noqa: E402
from search.engine.run import Prepared, cost_function, cost_of_backbone  # noqa: E402
from search.strategies import MFASStrategy  # noqa: E402
from search.training.taps import TapCache  # noqa: E402
from spaces.spec import ArchSpec, make_tap  # noqa: E402

Cost = Callable[[ArchSpec], tuple[int, int]]


def setup(config_file: str) -> Prepared:
    config = load_config(ROOT / "experiments" / "configs" / config_file)
    dataset = load_dataset(config.data, config.path.parent)
    g = torch.Generator().manual_seed(0)
    backbones = {m: build_backbone(c, dataset.shapes[m], g) for m, c in config.backbones.modalities.items()}
    offered = [make_tap(m, d) for m, ds in config.space.depth_map.items() for d in ds]
    return Prepared(config, dataset, backbones, {}, TapCache.from_backbones(dataset, backbones, only=offered))


def old_cost_function(prepared: Prepared) -> Cost:
    """`cost_function` before per-cell counts: one whole `FusionHead` built and counted per spec."""
    backbone_cost = {(m, d): cost_of_backbone(b.lean(d)) for m, b in prepared.backbones.items() for d in b.depths}
    cache: dict[str, tuple[int, int]] = {}
    flat = prepared.taps.flat_taps()

    def cost(spec: ArchSpec) -> tuple[int, int]:
        if spec.arch_id not in cache:
            head = FusionHead(spec, prepared.taps.tap_shapes, prepared.taps.num_classes, flat=flat)
            runs = deepest_taps(spec).items()
            cache[spec.arch_id] = (
                count_params(head) + sum(backbone_cost[md][0] for md in runs),
                count_flops(head, head.example_taps(1)) + sum(backbone_cost[md][1] for md in runs),
            )
        return cache[spec.arch_id]

    return cost


def distinct_specs(prepared: Prepared, n: int, seed: int) -> list[ArchSpec]:
    space, rng = prepared.config.space, random.Random(seed)
    specs: dict[str, ArchSpec] = {}
    while len(specs) < n:
        s = space.sample(rng)
        specs.setdefault(s.arch_id, s)
    return list(specs.values())


def per_spec(prepared: Prepared, n: int) -> list[str]:
    first, second = distinct_specs(prepared, n, 0), distinct_specs(prepared, 2 * n, 1)
    second = [s for s in second if s.arch_id not in {x.arch_id for x in first}][:n]
    rows = []
    for name, make in (("before: a FusionHead built and counted per spec", old_cost_function),
                       ("after: per-cell counts (cost_function)", cost_function)):
        start = time.perf_counter()
        cost = make(prepared)
        setup_s = time.perf_counter() - start
        times = []
        for specs in (first, second):
            start = time.perf_counter()
            for s in specs:
                cost(s)
            times.append((time.perf_counter() - start) / len(specs) * 1000)
        rows.append(f"| {name} | {setup_s:.2f} | {times[0]:.2f} | {times[1]:.3f} |")
        print(rows[-1], flush=True)
    return ["| cost function | set-up s (backbones) | ms/spec, first specs (cold) | ms/spec, next specs (warm) |",
            "|---|---|---|---|", *rows]


def metric(spec: ArchSpec) -> float:
    return 0.4 + 0.5 * int(hashlib.sha256(spec.arch_id.encode()).hexdigest()[:8], 16) / 16**8


def mfas_batches(prepared: Prepared, cost: Cost, batches: int, max_candidates: int) -> tuple[list, list]:
    """(per built batch: level, candidates scored, seconds, costing seconds; every spec asked)."""
    spent = [0.0]

    def timed(spec: ArchSpec) -> tuple[int, int]:
        start = time.perf_counter()
        out = cost(spec)
        spent[0] += time.perf_counter() - start
        return out

    # refine=0: the second batch is level 1, the one scored by the costs (the refinement batch scores nothing)
    s = MFASStrategy(prepared.config.space, seed=0, cost_fn=timed, max_candidates=max_candidates, refine=0)
    out, asked = [], []
    while len(out) < batches:
        built, spent[0] = len(s.batches), 0.0
        start = time.perf_counter()
        spec = s.ask()
        seconds = time.perf_counter() - start
        if len(s.batches) > built:
            out.append((s.batches[-1]["level"], spent[0] > 0, seconds, spent[0]))
        asked.append(spec)
        params, flops = cost(spec)
        s.tell(spec, {"accuracy": metric(spec), "params": params, "flops": flops})
    return out, asked


def mfas_table(prepared: Prepared, batches: int, max_candidates: int) -> list[str]:
    before, asked_before = mfas_batches(prepared, old_cost_function(prepared), batches, max_candidates)
    after, asked_after = mfas_batches(prepared, cost_function(prepared), batches, max_candidates)
    if asked_before != asked_after:
        raise AssertionError("the two cost functions led mfas to different specs: their costs differ")
    rows = ["| batch | level | scored by costs | s before (costing s) | s after (costing s) |", "|---|---|---|---|---|"]
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        rows.append(f"| {i} | {b[0]} | {'yes' if b[1] else 'no (first batch: hand-made and drawn)'} | "
                    f"{b[2]:.2f} ({b[3]:.2f}) | {a[2]:.2f} ({a[3]:.2f}) |")
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true", help="tiny and fast; writes nothing")
    parser.add_argument("--specs", type=int, default=512)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--max-candidates", type=int, default=512)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.specs, args.batches, args.max_candidates = 16, 2, 24
    torch.set_num_threads(1)
    prepared = setup("av_digits.yaml")
    old_cost_function(prepared)(distinct_specs(prepared, 1, 99)[0])  # warm up: the FLOP counter's first use
    space = prepared.config.space
    head = machine_line()
    print(head, flush=True)
    load = os.getloadavg()[0]
    lines = [head, "", f"av_digits space: {space.size():,} specs; {args.specs} specs per pass.", "",
             *per_spec(prepared, args.specs), "",
             f"One mfas batch (`max_candidates` {args.max_candidates}), before and after:", "",
             *mfas_table(prepared, args.batches, args.max_candidates), "",
             f"Load average (1 min) at the start and the end: {load:.1f}, {os.getloadavg()[0]:.1f} "
             "(the machine is shared: other work inflates both columns)."]
    if not (args.smoke_test or args.no_write):
        command = command_line("bench_costing.py", argv)
        write_block("bench_costing", "Costing candidates", lines, command)
        print("wrote experiments/RESULTS.md")


if __name__ == "__main__":
    main()
