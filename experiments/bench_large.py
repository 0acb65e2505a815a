"""Benchmark: data larger than a toy. A real search (`search.engine.run.search`, Ray Tune, 2
workers) on planted xor with 400,000 samples and a ~1.5 GiB tap cache on disk, memory-mapped
(experiments/configs/bench_large.yaml).

Measured: the tap cache's build time and size on disk; the peak memory of the driver and of
each Ray worker; the time from "tap cache ready" to the first finished candidate. Targets
(issue 13): driver and each worker at most 1.5x the tap cache's size, first candidate within
30 s of the cache being ready.

How memory is counted: every 0.5 s the driver reads /proc of itself and of the Ray processes it
started (its descendants): VmHWM (peak RSS, kept by the kernel), RssAnon (private memory) and
Pss (smaps_rollup: shared pages divided among the processes mapping them). RSS counts in full
every page of the memory-mapped cache a process touched, although those pages sit once in the
page cache for the whole node; PSS is the fairer "in all" number. The driver's peak RSS is also
`getrusage(RUSAGE_SELF).ru_maxrss`. Peaks of anon and PSS are the largest samples seen.

Usage: .venv/bin/python experiments/bench_large.py [--smoke-test] [--no-write] [--keep-cache]
The full run (a fresh tap cache folder, built and measured, then removed) writes the "Large data"
section of experiments/RESULTS.md. The backbones are pretrained once and cached as usual.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from experiments.results_block import command_line, machine_line, write_block  # noqa: E402
from search.config import config_from_dict  # noqa: E402
from search.engine.run import search, start_run  # noqa: E402
from search.training import tap_files  # noqa: E402

CONFIG = ROOT / "experiments" / "configs" / "bench_large.yaml"
GIB = 2**30
SMOKE = {"data": {"n_train": 3500, "n_val": 500, "n_test": 500, "d": 8},
         "widths": [32, 24], "pretrain": {"max_steps": 20}, "num_samples": 2, "max_concurrent": 1}


def bench_config(tmp: Path, smoke: bool, backbone_cache: str | None) -> Any:
    raw = yaml.safe_load(CONFIG.read_text())
    if smoke:
        raw["data"].update(SMOKE["data"])
        raw["backbones"]["pretrain"].update(SMOKE["pretrain"])
        for m in raw["backbones"]["modalities"].values():
            m["widths"] = SMOKE["widths"]
        raw["search"].update(num_samples=SMOKE["num_samples"], max_concurrent=SMOKE["max_concurrent"])
    raw["backbones"]["cache_dir"] = backbone_cache or str(tmp / "backbones")
    raw["search"].update(tap_dir=str(tmp / "taps"), runs_dir=str(tmp / "runs"))
    return config_from_dict(raw, CONFIG)


# ---------------------------------------------------------------------------------- memory
def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _kib(text: str, key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            if stat:
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


class MemorySampler(threading.Thread):
    """Peaks (KiB) of VmHWM, RssAnon and Pss of this process and its descendants, sampled."""

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every, self.stop = every, threading.Event()
        self.peak: dict[int, dict[str, int]] = {}
        self.names: dict[int, set[str]] = {}
        self.marks: dict[str, float] = {}  # when Ray was up, when a trial's worker first showed

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.every)

    def sample(self) -> None:
        if ray.is_initialized():
            self.marks.setdefault("ray", time.perf_counter())
        if self.workers():
            self.marks.setdefault("worker", time.perf_counter())
        for pid in _descendants(os.getpid()):
            status = _read(f"/proc/{pid}/status")
            if not status:
                continue
            now = {"hwm": _kib(status, "VmHWM"), "anon": _kib(status, "RssAnon"),
                   "pss": _kib(_read(f"/proc/{pid}/smaps_rollup"), "Pss")}
            peak = self.peak.setdefault(pid, dict.fromkeys(now, 0))
            for k, v in now.items():
                peak[k] = max(peak[k], v)
            name = _read(f"/proc/{pid}/cmdline").split("\0")[0]
            self.names.setdefault(pid, set()).add(name)

    def workers(self) -> dict[int, dict[str, int]]:
        """The Ray worker processes that ran a trial (named `ray::ImplicitFunc...` meanwhile)."""
        return {pid: p for pid, p in self.peak.items()
                if any(n.startswith("ray::ImplicitFunc") for n in self.names.get(pid, ()))}


# ---------------------------------------------------------------------------------- the run
def run(config: Any) -> dict[str, Any]:
    """One search with timestamps of its phases and the memory peaks."""
    marks: dict[str, float] = {}
    said: list[str] = []
    start = time.perf_counter()

    def say(line: str) -> None:
        said.append(line)
        print(f"  [{time.perf_counter() - start:6.1f} s] {line}", flush=True)
        if re.match(r"tap cache: \d+ taps", line):
            marks["ready"] = time.perf_counter()

    def progress(done: int, *_: Any) -> None:
        marks.setdefault("first", time.perf_counter())

    sampler = MemorySampler()
    sampler.start()
    try:
        store = start_run(config)
        records = search(config, store, say=say, progress=progress)
    finally:
        sampler.stop.set()
        sampler.join()
    sampler.sample()
    line = next(ln for ln in said if re.match(r"tap cache: \d+ taps", ln))
    directory = Path(re.search(r" in (/\S+) \(", line).group(1))
    size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    manifest = json.loads((directory / tap_files.MANIFEST).read_text())
    check = time.perf_counter()  # what a run reusing the folder pays first (`tap_files.verify`)
    problem = tap_files.verify(directory, manifest, {})
    check_s = time.perf_counter() - check
    assert not problem, problem
    return {
        "check_s": check_s,
        "records": records, "line": line, "directory": directory, "size": size,
        "build_s": float(re.search(r"\(([0-9.]+) s\)$", line).group(1)),
        "first_s": marks["first"] - marks["ready"], "total_s": time.perf_counter() - start,
        "ray_s": sampler.marks["ray"] - marks["ready"], "worker_s": sampler.marks["worker"] - marks["ready"],
        "driver_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # KiB on Linux
        "driver": sampler.peak[os.getpid()], "workers": sampler.workers(),
        "ray_pss": sum(p["pss"] for pid, p in sampler.peak.items()
                       if pid != os.getpid() and pid not in sampler.workers()),
    }


def report(r: dict[str, Any], config: Any) -> list[str]:
    size = r["size"]
    gib = size / GIB

    def x(kib: float) -> str:
        return f"{kib / 2**20:.2f} GiB ({kib * 1024 / size:.2f}x)"

    d = config.data
    ok = [x for x in r["records"] if x.get("status") == "ok"]
    lines = [
        f"planted {d['task']}: {d['n_train'] + d['n_test']:,} samples ({d['n_train'] - d['n_val']:,} train, "
        f"{d['n_val']:,} val incl. the holdout, {d['n_test']:,} test), backbones "
        f"{ {m: list(b.sizes) for m, b in config.backbones.modalities.items()} }, taps kept: all depths; "
        f"tap cache {config.search.tap_dtype} on disk: {gib:.2f} GiB in {len(list(r['directory'].rglob('*.npy')))} files",
        f"search: {config.search.strategy}, {config.search.num_samples} candidates, "
        f"{config.search.max_concurrent} workers x {config.search.cpus_per_trial} CPU; {len(ok)} finished ok; "
        f"baselines: {config.search.baselines}",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| tap cache build (backbones over every sample, written to disk) | {r['build_s']:.1f} s | |",
        f"| tap cache size on disk | {gib:.2f} GiB | |",
        f"| tap cache check before a reuse (every file read and digested, .npy headers checked; page cache warm) "
        f"| {r['check_s']:.1f} s ({gib / max(r['check_s'], 1e-9):.2f} GiB/s) | |",
        f"| first candidate finished, after the tap cache was ready | {r['first_s']:.1f} s | <= 30 s |",
        f"| of which: until Ray was up / until a trial's worker process showed (+-0.5 s) | {r['ray_s']:.1f} s / "
        f"{r['worker_s']:.1f} s | |",
        f"| whole command (data, cached backbones, cache build, search) | {r['total_s']:.1f} s | |",
        f"| driver peak RSS (ru_maxrss) | {x(r['driver_maxrss'])} | <= 1.5x |",
        f"| driver peak private (RssAnon) / PSS | {x(r['driver']['anon'])} / {x(r['driver']['pss'])} | |",
    ]
    for i, (_, p) in enumerate(sorted(r["workers"].items()), 1):
        lines.append(f"| worker {i} peak RSS (VmHWM) / private (RssAnon) / PSS | {x(p['hwm'])} / {x(p['anon'])} / "
                     f"{x(p['pss'])} | <= 1.5x |")
    lines.append(f"| Ray's other processes (raylet, GCS, agents, idle workers), PSS peaks summed | {x(r['ray_pss'])} | |")
    per = sorted(float(x.get("seconds") or 0) for x in ok)
    if per:
        lines.append(f"| candidate seconds (min / median / max) | {per[0]:.1f} / {per[len(per) // 2]:.1f} / "
                     f"{per[-1]:.1f} | |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true", help="a few thousand samples; writes nothing")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    parser.add_argument("--keep-cache", action="store_true", help="leave the tap cache folder in place")
    parser.add_argument("--backbone-cache", default=None,
                        help="backbone cache folder (default: ~/.cache/fusion-nas/backbones; smoke test: temporary)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_large-"))
    try:
        backbones = args.backbone_cache or (None if args.smoke_test else "~/.cache/fusion-nas/backbones")
        config = bench_config(tmp, args.smoke_test, backbones)
        head = machine_line()
        print(head, flush=True)
        r = run(config)
        lines = [head, "", *report(r, config)]
        print("\n".join(lines[1:]), flush=True)
    finally:
        if not args.keep_cache:
            shutil.rmtree(tmp, ignore_errors=True)
    if not (args.smoke_test or args.no_write):
        command = command_line("bench_large.py", argv)
        write_block("bench_large", "Large data", lines, command)
        print("wrote experiments/RESULTS.md")


if __name__ == "__main__":
    main()
