"""Benchmark: which `train:` recipe lets each kind of fusion show what it can do on small data.

Trains a few representative specs on low-data planted tasks (xor, bilinear, shift; d = 32
features a modality, 1,000 samples of which 800 train and 200 val) and on av_digits and
mfeat (the backbones of experiments/configs/), under the old defaults, the new ones, and
one-key variations of the new ones; prints mean test accuracy over seeds per spec and
recipe, and seconds per candidate (mean over every spec and task of a recipe).

Usage: .venv/bin/python experiments/bench_recipe.py [--smoke-test] [--seeds 0 1] [--no-write]
The full run replaces the generated part of the "Training recipe" section of experiments/RESULTS.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from experiments.bench_train import cell, setup  # noqa: E402
from experiments.results_block import command_line, machine_line, write_block  # noqa: E402
from search.training.train import TrainConfig, evaluate_candidate  # noqa: E402
from spaces.spec import ArchSpec  # noqa: E402

# the recipe `train:` had before this benchmark (epochs, mini-batches, patience in epochs)
OLD = TrainConfig(epochs=40, batch_size=128, lr=3e-3, weight_decay=1e-4, patience=6, max_steps=0, min_steps=0,
                  eval_every=0, full_batch=0, schedule="constant", warmup=0.0, grad_clip=0.0)
NEW = TrainConfig()
RECIPES = {
    "old": OLD,
    "new": NEW,
    "lr 3e-3": dataclasses.replace(NEW, lr=3e-3),
    "min_steps 0": dataclasses.replace(NEW, min_steps=0),
    "min_steps 400": dataclasses.replace(NEW, min_steps=400),
    "mini-batch": dataclasses.replace(NEW, full_batch=0),
    "no warm-up/clip": dataclasses.replace(NEW, warmup=0.0, grad_clip=0.0),
    "max_steps 800": dataclasses.replace(NEW, max_steps=800, min_steps=400),
    "adamw": dataclasses.replace(NEW, optimizer="adamw"),  # decoupled decay at the same weight_decay
    "adamw wd 0.1": dataclasses.replace(NEW, optimizer="adamw", weight_decay=0.1),
}


def planted_specs() -> dict[str, ArchSpec]:
    raw = ["m1@0", "m2@0"]
    return {
        "early tensor": ArchSpec("early", (cell(raw, "tensor", 16, "identity", proj_dim=4),)),
        "early low_rank": ArchSpec("early", (cell(raw, "low_rank", 16, "identity", rank=4),)),
        "early circulant": ArchSpec("early", (cell(raw, "circulant", 16, "identity", dim=32),)),
        "early concat (relu)": ArchSpec("early", (cell(raw, "concat", 32),)),
        "late concat": ArchSpec("late", (cell(["m1@2", "m2@2"], "concat", 16),)),
    }


def real_specs(modalities: list[str], last: dict[str, int]) -> dict[str, ArchSpec]:
    raw, top = [f"{m}@0" for m in modalities], [f"{m}@{last[m]}" for m in modalities]
    mid = [f"{m}@1" for m in modalities]
    return {
        "late concat": ArchSpec("late", (cell(top, "concat"),)),
        "early concat + trunk": ArchSpec("early", (cell(raw, "concat", 128),), head=(64,)),
        "hybrid tensor->concat": ArchSpec("hybrid", (cell(mid, "tensor", proj_dim=8), cell(top, "concat"))),
        "late low_rank": ArchSpec("late", (cell(top, "low_rank", rank=4),)),
    }


TASKS = [  # (title, config file, data override)
    *[(f"planted {t} (d 32, 800 train)", "planted.yaml", {"kind": "planted", "task": t, "n_train": 1000, "d": 32,
                                                           "seed": 0}) for t in ("xor", "bilinear", "shift")],
    ("av_digits", "av_digits.yaml", None),
    ("mfeat", "mfeat.yaml", None),
]


def bench(args: argparse.Namespace) -> list[str]:
    recipes = {k: RECIPES[k] for k in args.recipes}
    head = "| task | spec | " + " | ".join(recipes) + " |"
    lines = [head, "|" + "---|" * (len(recipes) + 2)]
    print("\n".join(lines), flush=True)
    seconds: dict[str, list[float]] = {r: [] for r in recipes}
    for title, config, data in TASKS[: 1 if args.smoke_test else None]:
        ds, backbones, _, taps, _, _ = setup(config, args.cache_dir, args.smoke_test, data)
        last = {m: len(b.tap_shapes) - 1 for m, b in backbones.items()}
        specs = planted_specs() if config == "planted.yaml" else real_specs(list(ds.modalities), last)
        for name, spec in list(specs.items())[: 2 if args.smoke_test else None]:
            cells = []
            for rname, recipe in recipes.items():
                accs = []
                for seed in args.seeds:
                    start = time.perf_counter()
                    r = evaluate_candidate(spec, taps, dataclasses.replace(recipe, seed=seed))
                    seconds[rname].append(time.perf_counter() - start)
                    accs.append(r["test_accuracy"])
                cells.append(f"{statistics.mean(accs):.3f}")
            lines.append(f"| {title} | {name} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    lines.append("| **seconds per candidate** | (mean) | "
                 + " | ".join(f"{statistics.mean(s):.2f}" for s in seconds.values()) + " |")
    print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true", help="tiny and fast; writes nothing")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--cache-dir", default=None, help="backbone cache (default: a fresh temporary folder)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.seeds, args.recipes = [0], ["old", "new"]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        args.cache_dir = args.cache_dir or tmp
        top = machine_line()
        print(top, flush=True)
        lines = [top, "", *bench(args)]
    if not (args.smoke_test or args.no_write):
        command = command_line("bench_recipe.py", argv)
        write_block("bench_recipe", "Training recipe", lines, command)
        print("wrote experiments/RESULTS.md")


if __name__ == "__main__":
    main()
