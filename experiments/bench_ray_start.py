"""Benchmark: what the embedded Ray's idle workers cost. Ray starts one idle worker per CPU for
the first driver (`RAY_prestart_worker_first_driver`, on by default); fusion-nas turns that off
(`search.engine.ray_cluster.NO_PRESTART`) because Ray Tune's trial actors never run in them.

Each measurement is a fresh Python process (the setting is read when Ray starts), alternating
the two settings: `ray.init` (embedded, 2 CPUs) and its wall time, the CPU seconds of every
process Ray started once it has settled, then a Ray Tune run of `--trials` trivial trials (each
imports torch, 2 at once, actors reused) and its wall time, and whether any trial ran in a
worker Ray had started before Tune asked for one.

Usage: python experiments/bench_ray_start.py [--smoke-test] [--no-write] [--repeats N] [--trials N]
The full run replaces its block in the "Search" section ("Ray overhead") of experiments/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.results_block import command_line, machine_line, write_block  # noqa: E402

SETTINGS = {"on (Ray's default)": "1", "off (fusion-nas)": "0"}


def _trial(config: dict) -> dict:
    import torch  # what a fusion-nas trial imports first

    return {"pid": os.getpid(), "threads": torch.get_num_threads()}


def _children_cpu() -> tuple[float, set[int]]:
    import psutil

    total, pids = 0.0, set()
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
        pids.add(child.pid)
    return total, pids


def child(trials: int, settle_s: float) -> dict:
    """One measurement in this process (its environment holds the setting)."""
    import ray
    from ray import tune

    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    out: dict = {"init_s": time.perf_counter() - start}
    time.sleep(settle_s)  # idle workers, if any, finish starting
    out["ray_cpu_s"], before = _children_cpu()
    if trials:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            grid = tune.Tuner(_trial, param_space={"x": tune.grid_search(list(range(trials)))},
                              tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=2),
                              run_config=tune.RunConfig(verbose=0, storage_path=tmp)).fit()
            out["tune_s"] = time.perf_counter() - start
        out["in_prestarted"] = len({r.metrics["pid"] for r in grid} & before)
    ray.shutdown()
    return out


def measure(setting: str, trials: int, settle_s: float) -> dict:
    env = {**os.environ, "RAY_prestart_worker_first_driver": setting, "PYTHONPATH": str(ROOT),
           "RAY_AIR_NEW_OUTPUT": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--child", str(trials), str(settle_s)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(rows: dict[str, list[dict]], trials: int) -> list[str]:
    def med(name: str, key: str) -> str:
        values = [r[key] for r in rows[name] if key in r]
        return f"{statistics.median(values):.2f}" if values else "-"

    n = len(next(iter(rows.values())))
    lines = [f"Idle workers at the first driver, median of {n} fresh processes per setting (alternating):", "",
             "| idle workers | `ray.init` s | CPU s of Ray's processes after start | "
             f"Tune run of {trials} trials, s | trials in a prestarted worker |", "|---|---|---|---|---|"]
    for name in rows:
        used = sum(r.get("in_prestarted", 0) for r in rows[name])
        lines.append(f"| {name} | {med(name, 'init_s')} | {med(name, 'ray_cpu_s')} | {med(name, 'tune_s')} | "
                     f"{used if trials else '-'} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true", help="one start per setting, no Tune; writes nothing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    repeats, trials, settle_s = (1, 0, 0.2) if args.smoke_test else (args.repeats, args.trials, 5.0)
    head = machine_line()
    print(head, flush=True)
    rows: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for i in range(repeats):
        for name in (SETTINGS if i % 2 == 0 else reversed(SETTINGS)):
            rows[name].append(measure(SETTINGS[name], trials, settle_s))
            print(f"{name}: {rows[name][-1]}", flush=True)
    lines = [head, "", *report(rows, trials)]
    print("\n".join(lines), flush=True)
    if not (args.smoke_test or args.no_write):
        command = command_line("bench_ray_start.py", argv, python="python")
        write_block("bench_ray_start", "Search", lines, command)
        print("wrote experiments/RESULTS.md")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(int(sys.argv[2]), float(sys.argv[3]))))
    else:
        main()
