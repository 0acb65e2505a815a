"""Benchmark: does a Ray search pay for itself? 64 av_digits candidates three ways.

(a) in-process: `prepare`, then the random strategy's candidates trained one after another
    with `evaluate_candidate` on the prepared tap cache (`search.engine.inprocess`), in this
    process with torch's default threads (each candidate trains with `train.threads`);
(b) the real Ray search, `search.engine.run.search`, with `search.pack: 1`;
(c) the same with `search.pack: auto`.
All three: experiments/configs/av_digits.yaml, random strategy with one seed (so the same
64 specs, checked), `confirm: 0`, `baselines: none`, the default holdout. Each reports its
wall time from the call's start (`prepare`, Ray's start and stop included), wall / (Σ candidate
seconds / concurrent slots), candidates per hour, and the time from the start to the first
finished candidate (a progress hook).

Usage: python experiments/bench_throughput.py [--smoke-test] [--no-write] [--samples N]
The full run replaces its block in the "Throughput" section of experiments/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from experiments.results_block import command_line, machine_line, write_block  # noqa: E402
from search.config import Config, config_from_dict  # noqa: E402
from search.engine.inprocess import search_in_process  # noqa: E402
from search.engine.run import prepare, search, start_run  # noqa: E402
from search.strategies import make_strategy  # noqa: E402
from search.training.train import evaluate_candidate  # noqa: E402

CONFIG = ROOT / "experiments" / "configs" / "av_digits.yaml"
Say = Callable[[str], None]


def bench_config(*, samples: int, pack: Any, smoke: bool, runs_dir: str, cache_dir: str | None) -> Config:
    """av_digits for this benchmark: random strategy, seed 0, no confirmation, no baselines;
    the smoke test shrinks pretraining, training and the space, and runs one trial at a time."""
    raw = yaml.safe_load(CONFIG.read_text())
    if smoke:
        raw["backbones"]["pretrain"].update(epochs=1)
        raw["train"] = {**raw.get("train", {}), "max_steps": 10, "min_steps": 5, "eval_every": 5}
        raw["space"].update(ops={"concat": {}, "tensor": {"proj_dim": [4]}}, widths=[8], max_cells=1, trunks=[[]])
        raw["search"] = {**raw.get("search", {}), "max_concurrent": 1}  # one slot: one Ray worker to start per run
    if cache_dir is not None:
        raw["backbones"]["cache_dir"] = cache_dir
    raw["search"] = {**raw.get("search", {}), "strategy": "random", "num_samples": samples, "seed": 0,
                     "confirm": 0, "baselines": "none", "pack": pack, "runs_dir": runs_dir}
    return config_from_dict(raw, CONFIG)


@dataclass
class Timing:
    """One way of training the candidates: what the table shows."""

    name: str
    wall: float = 0.0
    first: float = float("nan")  # seconds from the start to the first finished candidate
    prepared: float = float("nan")  # seconds from the start to the tap cache being ready
    records: list[dict[str, Any]] = field(default_factory=list)
    slots: int = 1
    started_at: float = 0.0  # the call's start, as a Unix time (records carry `finished_at`)
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after

    @property
    def sigma(self) -> float:
        return sum(float(r["seconds"]) for r in self.records)

    def row(self, base: Timing) -> str:
        n = len(self.records)
        return (f"| {self.name} | {n} | {self.wall:.1f} | {self.sigma:.1f} | {self.slots} | "
                f"{self.wall / (self.sigma / self.slots):.2f} | {n / self.wall * 3600:.0f} | {self.first:.1f} | "
                f"{self.prepared:.1f} | {base.wall / self.wall:.2f}x | {self.load[0]:.1f} / {self.load[1]:.1f} |")

    def where(self) -> tuple[float, float, float]:
        """Where the wall time not spent training goes, from the records: seconds from the start to
        the first candidate's start (prepare, Ray's start, workers, warm-up), slot-seconds between
        the first start and the last finish that trained nothing (Tune's per-trial cost, idle
        slots at the end), and seconds from the last finish to the end (Ray's stop)."""
        ends = [datetime.fromisoformat(r["finished_at"]).timestamp() for r in self.records]
        starts = [e - float(r["seconds"]) for e, r in zip(ends, self.records, strict=True)]
        first, last = min(starts), max(ends)
        return first - self.started_at, self.slots * (last - first) - self.sigma, self.started_at + self.wall - last


def _clock(t: Timing, start: float) -> tuple[Say, Callable[..., None]]:
    """A `say` that notes when the tap cache is ready, and a progress hook that notes the first candidate."""
    def say(line: str) -> None:
        if line.startswith("tap cache:") and " MiB" in line and t.prepared != t.prepared:  # its last line
            t.prepared = time.perf_counter() - start

    def progress(*_: Any) -> None:
        if t.first != t.first:
            t.first = time.perf_counter() - start

    return say, progress


def in_process(config: Config) -> Timing:
    t = Timing("(a) in-process, one after another", load=(os.getloadavg()[0], 0.0), started_at=time.time())
    start = time.perf_counter()
    say, progress = _clock(t, start)
    prepared = prepare(config, say)
    s = config.search
    strategy = make_strategy(s.strategy, config.space, seed=s.seed, budget=s.num_samples)

    def evaluate(spec: Any, seed: int | None = None) -> dict[str, Any]:
        return evaluate_candidate(spec, prepared.taps, config.train, backbones=prepared.backbones, seed=seed)

    t.records = search_in_process(evaluate, strategy, s.num_samples, on_record=progress)
    t.wall = time.perf_counter() - start
    t.load = (t.load[0], os.getloadavg()[0])
    return t


def on_ray(config: Config, name: str) -> Timing:
    t = Timing(name, load=(os.getloadavg()[0], 0.0))
    t.slots = (config.search.max_concurrent or os.cpu_count() or 1) // config.search.cpus_per_trial
    store = start_run(config)
    t.started_at, start = time.time(), time.perf_counter()
    say, progress = _clock(t, start)
    t.records = search(config, store, say=say, progress=progress)
    t.wall = time.perf_counter() - start
    t.load = (t.load[0], os.getloadavg()[0])
    return t


def packs(t: Timing) -> str:
    """The Tune trials of a Ray run and their pack sizes, in the order their first candidate finished."""
    sizes: dict[str, int] = {}
    for r in t.records:
        sizes.setdefault(str(r["trial_id"]).split("_")[0], int(r.get("pack", 1)))
    if all(s == 1 for s in sizes.values()):
        return f"{len(sizes)} Tune trials of one candidate"
    return f"{len(sizes)} Tune trials, pack sizes {list(sizes.values())}"


def report(timings: list[Timing], same: bool, n: int) -> list[str]:
    a, *_ = timings
    lines = [
        f"{n} candidates of `experiments/configs/av_digits.yaml` (random strategy, seed 0, confirm 0, baselines "
        f"none, default holdout); the same {n} specs in all three: {'yes' if same else 'NO'}.", "",
        "| how | candidates | wall s | Σ candidate s | slots | wall / (Σ / slots) | candidates per hour "
        "| s to first candidate | s to tap cache | speed-up vs (a) | load before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[t.row(a) for t in timings], "",
        "Ray runs: " + "; ".join(f"{t.name.split()[0]} {packs(t)}" for t in timings[1:]) + ".",
        "Where the time outside training goes (s before the first candidate starts; slot-seconds "
        "between the first start and the last finish that trained nothing; s after the last finish): "
        + "; ".join(f"{t.name.split()[0]} " + ", ".join(f"{v:.1f}" for v in t.where()) for t in timings) + ".",
        "Candidate seconds (median, max): " + "; ".join(
            f"{t.name.split()[0]} {_median([float(r['seconds']) for r in t.records]):.2f}, "
            f"{max(float(r['seconds']) for r in t.records):.2f}" for t in timings) + ".",
    ]
    return lines


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true", help="tiny and fast; writes nothing")
    parser.add_argument("--samples", type=int, default=64, help="candidates per run")
    parser.add_argument("--cache-dir", default=None, help="backbone cache (default: the config's own)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke_test:  # everything in the temporary folder: no cache read or written elsewhere
            args.samples, args.cache_dir = 6, str(Path(tmp) / "backbones")
        head = machine_line()
        print(head, flush=True)

        def config(pack: Any) -> Config:
            return bench_config(samples=args.samples, pack=pack, smoke=args.smoke_test,
                                runs_dir=str(Path(tmp) / "runs"), cache_dir=args.cache_dir)

        timings = [in_process(config(1))]
        print(timings[0].row(timings[0]), flush=True)
        for pack, name in ((1, "(b) Ray search, pack 1"), ("auto", "(c) Ray search, pack auto")):
            timings.append(on_ray(config(pack), name))
            print(timings[-1].row(timings[0]), flush=True)
        asked = [sorted(r["candidate_id"] for r in t.records) for t in timings]
        lines = [head, "", *report(timings, all(a == asked[0] for a in asked), args.samples)]
        print("\n".join(lines), flush=True)
    if not (args.smoke_test or args.no_write):
        command = command_line("bench_throughput.py", argv, python="python")
        write_block("bench_throughput", "Throughput", lines, command)
        print("wrote experiments/RESULTS.md")


if __name__ == "__main__":
    main()
