"""The GPU benchmark: its table from hand-made numbers (GPU rows included, which this machine
cannot measure), and its smoke test end to end on the CPU."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from tests.bench_run import run_bench

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "experiments" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(device: str, seconds: list[float], vals: list[float], wall: float) -> dict:
    runs = [{"status": "ok", "val_accuracy": v, "seconds": s} for s, v in zip(seconds, vals, strict=True)]
    return {"device": device, "warmup": 1.5, "wall": wall, "runs": runs, "seconds": seconds}


def test_the_table_counts_candidates_per_hour_and_compares_gpu_with_cpu():
    bench = load_bench()
    runs = [_run("cpu", [1.0, 2.0, 3.0, 4.0], [0.5, 0.6, 0.7, 0.8], 10.0),
            _run("cuda", [0.5, 0.5, 0.25, 0.75], [0.5, 0.6, 0.75, 0.7], 2.0)]
    searches = [{"gpus": 0.0, "device": "auto", "slots": 16, "ray_init": 3.0, "wall": 36.0, "n": 32,
                 "seconds": [1.0] * 32, "statuses": ["ok"]},
                {"gpus": 0.25, "device": "cuda", "slots": 4, "ray_init": 3.0, "wall": 7.2, "n": 32,
                 "seconds": [0.5] * 31 + [3.0], "statuses": ["ok"]}]
    lines = bench.report({"cpu": 20.0, "cuda": 5.0}, runs, searches, "NVIDIA H200")
    assert lines[0].endswith("; GPU: NVIDIA H200")
    rows = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| step")]
    assert rows == [
        "| prepare: pretraining from scratch + tap cache | cpu | - | 20.0 | - | - |",
        "| prepare: pretraining from scratch + tap cache | cuda | - | 5.0 | - | - |",
        # 4 candidates in 10 s: 1,440 an hour; the median of 1, 2, 3, 4 is 2.5
        "| in-process, one after another (warm-up 1.50 s untimed) | cpu | 4 | 10.0 | 2.500 | 1,440 |",
        "| in-process, one after another (warm-up 1.50 s untimed) | cuda | 4 | 2.0 | 0.500 | 7,200 |",
        "| Ray, CPU trials (gpus_per_trial 0); statuses ok | cpu | 32 | 36.0 | 1.000 | 3,200 |",
        "| Ray, gpus_per_trial 0.25 (4 trials at once); statuses ok | cuda | 32 | 7.2 | 0.500 | 16,000 |",
    ]
    # |0.7 - 0.75| and |0.8 - 0.7|: two of four equal, mean difference 0.15 / 4
    assert "2 of 4 equal, mean |difference| 0.0375" in "\n".join(lines)


def test_without_cuda_the_table_says_the_gpu_rows_were_not_measured():
    bench = load_bench()
    lines = bench.report({"cpu": 20.0}, [_run("cpu", [1.0], [0.5], 1.0)], [], None)
    assert lines[0].endswith("; no CUDA device: the GPU rows were not measured")
    assert not any("cuda" in ln for ln in lines[1:])


def test_bench_gpu_smoke_test_trains_on_the_cpu_and_through_ray_and_leaves_results_alone():
    results = ROOT / "experiments" / "RESULTS.md"
    before = results.read_bytes()
    out = run_bench("bench_gpu", "--smoke-test")
    assert "smoke test: the CPU only" in out
    assert re.search(r"^\| prepare: pretraining from scratch \+ tap cache \| cpu \| - \| \d+\.\d \| - \| - \|$",
                     out, flags=re.M)
    assert re.search(r"^\| in-process, one after another \(warm-up \d+\.\d\d s untimed\) \| cpu \| 2 \| [\d.]+ "
                     r"\| \d+\.\d{3} \| [\d,]+ \|$", out, flags=re.M)
    assert re.search(r"^\| Ray, CPU trials \(gpus_per_trial 0\); statuses ok \| cpu \| 2 \| [\d.]+ \| \d+\.\d{3} "
                     r"\| [\d,]+ \|$", out, flags=re.M)
    assert "| cuda |" not in out
    assert results.read_bytes() == before
