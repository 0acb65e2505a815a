"""Benchmark: CPU against GPU on av_digits candidates, in-process and through the real Ray search.

1. Prepare: backbone pretraining from scratch (no disk cache) plus the tap cache, once per
   device (`backbones.pretrain.device`).
2. In-process: the same sampled candidates of `experiments/configs/av_digits.yaml` trained one
   after another with `evaluate_candidate` on each device (`train.device`; one untimed
   warm-up candidate first: imports, the first optimiser step, the CUDA context). Seconds per
   candidate, candidates per hour, and how far the GPU's val accuracies are from the CPU's.
3. Ray: one real `search.engine.run.search` (random strategy, no baselines, no confirmation
   seeds) per setting: CPU trials (`search.gpus_per_trial: 0`), then, with a GPU, one trial
   per GPU (1) and four trials sharing each GPU (0.25). Wall time, candidates per hour.

Without CUDA the run says so and measures the CPU only. The smoke test (CPU, a shrunk config,
a few candidates, a 2-trial Ray search on a 1-CPU embedded Ray) writes nothing. The full run
takes ~3-5 minutes on a 16-core GPU machine and replaces the "GPUs" block of experiments/RESULTS.md.

Usage: .venv/bin/python experiments/bench_gpu.py [--smoke-test] [--no-write] [--candidates N] [--trials N]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402

from experiments.results_block import machine_line, write_block  # noqa: E402
from search.config import Config, config_from_dict  # noqa: E402
from search.engine.run import Prepared, prepare, trial_train  # noqa: E402
from search.training.train import evaluate_candidate  # noqa: E402
from spaces import ArchSpec  # noqa: E402

CONFIG = ROOT / "experiments" / "configs" / "av_digits.yaml"
COMMAND = ".venv/bin/python experiments/bench_gpu.py"


def quiet(_: str) -> None:
    """A `say` that says nothing."""


def bench_config(*, smoke: bool, trials: int, cache_dir: str | None, runs_dir: str) -> Config:
    """av_digits as shipped (shrunk for the smoke test), searched by `trials` random candidates,
    without baselines or confirmation seeds (they would time something else)."""
    raw = yaml.safe_load(CONFIG.read_text())
    if smoke:
        raw["backbones"]["pretrain"].update(epochs=1)
        raw["train"].update(max_steps=20, min_steps=10, eval_every=10)
        raw["space"].update(ops={"concat": {}, "tensor": {"proj_dim": [4]}}, max_cells=1)
    raw["backbones"]["cache_dir"] = cache_dir
    raw["search"] = {**raw.get("search", {}), "strategy": "random", "num_samples": trials, "baselines": "none",
                     "confirm": 0, "cpus_per_trial": 1, "runs_dir": runs_dir}
    return config_from_dict(raw, CONFIG)


def with_device(config: Config, device: str, gpus_per_trial: float = 0.0) -> Config:
    """`config` with backbone pretraining, tap extraction and training on `device`."""
    pretrain = dataclasses.replace(config.backbones.pretrain, device=device)
    return dataclasses.replace(
        config, backbones=dataclasses.replace(config.backbones, pretrain=pretrain),
        train=dataclasses.replace(config.train, device=device),
        search=dataclasses.replace(config.search, gpus_per_trial=gpus_per_trial))


def sample_specs(config: Config, n: int, seed: int = 0) -> list[ArchSpec]:
    """`n` distinct specs of the space (one more first: the warm-up)."""
    rng, out, seen = random.Random(seed), [], set()
    while len(out) < n + 1:
        spec = config.space.sample(rng)
        if spec.arch_id not in seen:
            seen.add(spec.arch_id)
            out.append(spec)
    return out


# ---- 1. prepare ---------------------------------------------------------------------------
def time_prepare(config: Config, device: str, keep: bool) -> tuple[Prepared, float]:
    """Pretraining from scratch and the tap cache, on `device`; `keep`: the weights go to the (empty)
    disk cache, for the Ray searches to load, else no disk cache at all."""
    config = with_device(config, device)
    if not keep:
        config = dataclasses.replace(config, backbones=dataclasses.replace(config.backbones, cache_dir=None))
    start = time.perf_counter()
    prepared = prepare(config, say=quiet)
    return prepared, time.perf_counter() - start


# ---- 2. in-process ------------------------------------------------------------------------
def in_process(prepared: Prepared, specs: list[ArchSpec], device: str) -> dict[str, Any]:
    """Every spec trained on `device` one after another (`specs[0]` untimed: the warm-up)."""
    cfg = dataclasses.replace(trial_train(prepared.config), device=device)
    start = time.perf_counter()
    evaluate_candidate(specs[0], prepared.taps, cfg, backbones=prepared.backbones)
    warmup = time.perf_counter() - start
    runs, start = [], time.perf_counter()
    for spec in specs[1:]:
        runs.append(evaluate_candidate(spec, prepared.taps, cfg, backbones=prepared.backbones))
    wall = time.perf_counter() - start
    return {"device": device, "warmup": warmup, "wall": wall, "runs": runs,
            "seconds": [float(r["seconds"]) for r in runs]}


# ---- 3. Ray -------------------------------------------------------------------------------
def ray_search(config: Config, gpus_per_trial: float, num_cpus: int, device: str) -> dict[str, Any]:
    """One real search under an embedded Ray of `num_cpus` CPUs (and this machine's GPUs)."""
    import ray

    from search.engine.run import search, start_run
    from search.engine.tune import concurrent_slots

    config = with_device(config, device, gpus_per_trial)
    start = time.perf_counter()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ray_init = time.perf_counter() - start
    try:
        slots = concurrent_slots(ray.cluster_resources(), config.search.cpus_per_trial, gpus_per_trial)
        store = start_run(config)
        start = time.perf_counter()
        prepare(config, say=quiet)  # what search() does first (backbones from the disk cache): timed apart
        prep = time.perf_counter() - start
        start = time.perf_counter()
        trials = search(config, store, say=quiet)
        wall = time.perf_counter() - start - prep
    finally:
        ray.shutdown()
    seconds = [float(r["seconds"]) for r in trials]
    return {"gpus": gpus_per_trial, "device": device, "slots": slots, "ray_init": ray_init, "wall": wall,
            "n": len(trials), "seconds": seconds, "statuses": sorted({r["status"] for r in trials})}


# ---- the table ----------------------------------------------------------------------------
def per_hour(n: int, seconds: float) -> str:
    return f"{3600 * n / seconds:,.0f}" if seconds > 0 else "-"


def report(preps: dict[str, float], runs: list[dict[str, Any]], searches: list[dict[str, Any]],
           cuda: str | None, load: float | None = None) -> list[str]:
    """The RESULTS.md block: the machine, then one row per step and device; `load`: the 1-minute
    load average when the run started (a shared machine inflates the CPU rows)."""
    lines = [machine_line() + (f", 1-minute load average at the start {load:.1f}" if load is not None else "")
             + (f"; GPU: {cuda}" if cuda else "; no CUDA device: the GPU rows were not measured"),
             "", "| step | device | candidates | wall s | s per candidate (median) | candidates per hour |",
             "|---|---|---|---|---|---|"]
    for device, seconds in preps.items():
        lines.append(f"| prepare: pretraining from scratch + tap cache | {device} | - | {seconds:.1f} | - | - |")
    for r in runs:
        n = len(r["seconds"])
        lines.append(f"| in-process, one after another (warm-up {r['warmup']:.2f} s untimed) | {r['device']} | {n} "
                     f"| {r['wall']:.1f} | {statistics.median(r['seconds']):.3f} | {per_hour(n, r['wall'])} |")
    for s in searches:
        what = "Ray, CPU trials (gpus_per_trial 0)" if not s["gpus"] else \
            f"Ray, gpus_per_trial {s['gpus']:g} ({s['slots']} trials at once)"
        device = s["device"] if s["gpus"] else "cpu"  # auto: Ray gives CPU trials no GPU
        lines.append(f"| {what}; statuses {', '.join(s['statuses'])} | {device} | {s['n']} | {s['wall']:.1f} "
                     f"| {statistics.median(s['seconds']):.3f} | {per_hour(s['n'], s['wall'])} |")
    if len(runs) == 2:
        cpu, gpu = (r["runs"] for r in runs)
        diffs = [abs(a["val_accuracy"] - b["val_accuracy"]) for a, b in zip(cpu, gpu, strict=True)
                 if a["status"] == b["status"] == "ok"]
        same = sum(d == 0 for d in diffs)
        lines += ["", f"GPU against CPU val accuracy of the same candidates: {same} of {len(diffs)} equal, "
                      f"mean |difference| {statistics.mean(diffs) if diffs else float('nan'):.4f} "
                      "(kernels differ, so results are close, not bit-identical)."]
    ray_rows = [s for s in searches if s["gpus"] == 0]
    if ray_rows:
        lines += ["", f"Ray wall excludes `ray.init` ({ray_rows[0]['ray_init']:.1f} s) and `prepare` (timed apart); "
                      f"the Ray CPU row runs as many trials at once as the embedded Ray has CPUs ({ray_rows[0]['slots']})."]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true", help="tiny and fast, on the CPU; writes nothing")
    parser.add_argument("--candidates", type=int, default=24, help="candidates trained in-process per device")
    parser.add_argument("--trials", type=int, default=32, help="trials of each Ray search")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the embedded Ray")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    torch.set_num_threads(1)
    if args.smoke_test:
        args.candidates, args.trials, args.num_cpus = 2, 2, 1  # one trial at a time: one worker to start
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.smoke_test else None
    devices = ["cpu"] + (["cuda"] if cuda else [])
    if not cuda:
        print("no CUDA device here (or --smoke-test): measuring the CPU only" if not args.smoke_test else
              "smoke test: the CPU only")
    with tempfile.TemporaryDirectory() as tmp:
        config = bench_config(smoke=args.smoke_test, trials=args.trials, cache_dir=str(Path(tmp) / "backbones"),
                              runs_dir=str(Path(tmp) / "runs"))
        preps, prepared = {}, {}
        for device in devices:  # the CPU's weights fill the disk cache every search below loads
            prepared[device], preps[device] = time_prepare(config, device, keep=device == "cpu")
            print(f"prepare on {device}: {preps[device]:.1f} s", flush=True)
        specs = sample_specs(config, args.candidates)
        runs = []
        for device in devices:  # the same taps (the CPU's) for both: only the training device differs
            runs.append(in_process(prepared["cpu"], specs, device))
            print(f"in-process on {device}: {runs[-1]['wall']:.1f} s for {args.candidates}", flush=True)
        searches = [ray_search(config, 0.0, args.num_cpus, "auto")]
        for gpus in ((1.0, 0.25) if cuda else ()):
            searches.append(ray_search(config, gpus, args.num_cpus, "cuda"))
        for s in searches:
            print(f"Ray, gpus_per_trial {s['gpus']:g}: {s['wall']:.1f} s for {s['n']}", flush=True)
    lines = report(preps, runs, searches, cuda, load)
    print("\n".join(lines))
    if not args.smoke_test and not args.no_write:
        flags = "".join(f" --{k} {getattr(args, k)}" for k in ("candidates", "trials") if getattr(args, k)
                        != parser.get_default(k))
        write_block("bench_gpu", "GPUs", lines, COMMAND + flags)


if __name__ == "__main__":
    main()
