"""Benchmark: training candidates on cached taps vs running frozen backbones on every batch,
and how much fusion adds over the best single modality on each built-in benchmark.

Speed (av_digits, the backbones and train settings of experiments/configs/av_digits.yaml):
each spec trains the same epochs (no early stopping) once on the tap cache
(`evaluate_candidate`) and once as MFAS's code does, `FusionModel.forward(inputs)` on
every batch with the backbones frozen (`evaluate_with_backbones`); both share one
training loop and one initialisation, so they also reach the same accuracy.
Accuracy: unimodal (pretrained backbone + linear) vs fused test accuracy, mean over seeds.

Usage: .venv/bin/python experiments/bench_train.py [--smoke-test] [--no-write]
The full run replaces the generated part of the "Training" section of experiments/RESULTS.md.
"""
from __future__ import annotations

import argparse
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
import yaml  # noqa: E402

from experiments.results_block import command_line, machine_line, write_block  # noqa: E402
from search.datasets import load_dataset  # noqa: E402
from search.training.pretrain import BackbonesConfig, pretrain_backbones  # noqa: E402
from search.training.taps import TapCache  # noqa: E402
from search.training.train import TrainConfig, evaluate_candidate, evaluate_with_backbones  # noqa: E402
from spaces.spec import ArchSpec, CellSpec  # noqa: E402


def cell(taps: list[str], op: str, width: int = 32, activation: str = "relu", **args: object) -> CellSpec:
    return CellSpec(tuple(taps), op, width, activation, tuple(args.items()))


def speed_specs() -> dict[str, ArchSpec]:
    return {
        "late concat": ArchSpec("late", (cell(["audio@2", "image@2"], "concat"),)),
        "hybrid tensor->concat": ArchSpec(
            "hybrid", (cell(["audio@1", "image@1"], "tensor", proj_dim=8), cell(["audio@2", "image@2"], "concat"))
        ),
        "early attention": ArchSpec("early", (cell(["audio@0", "image@0"], "attention", dim=32),), head=(32,)),
    }


def gain_specs(modalities: list[str], last: dict[str, int], planted: bool) -> dict[str, ArchSpec]:
    raw, top = [f"{m}@0" for m in modalities], [f"{m}@{last[m]}" for m in modalities]
    if planted:  # identity activations: concat is then a purely additive fusion (see tests/test_train.py)
        return {
            "late concat (linear)": ArchSpec("late", (cell(top, "concat", 16, "identity"),)),
            "early concat (linear)": ArchSpec("early", (cell(raw, "concat", 16, "identity"),)),
            "early tensor": ArchSpec("early", (cell(raw, "tensor", 16, "identity", proj_dim=4),)),
        }
    return {
        "late concat": ArchSpec("late", (cell(top, "concat"),)),
        "early concat + trunk": ArchSpec("early", (cell(raw, "concat", 128),), head=(64,)),
        "hybrid raw->late concat": ArchSpec("hybrid", (cell(raw, "concat"), cell(top, "concat"))),
    }


def setup(config: str, cache_dir: str, smoke: bool, data: dict | None = None, mods: dict | None = None):
    """(dataset, backbones, unimodal info, tap cache, train config, tap-cache seconds) for a shipped config."""
    raw = yaml.safe_load((ROOT / "experiments" / "configs" / config).read_text())
    data = data or raw["data"]
    bdoc = {**raw["backbones"], "cache_dir": cache_dir, **({"modalities": mods} if mods else {})}
    if smoke:
        bdoc["pretrain"] = {**bdoc.get("pretrain", {}), "epochs": 1}
    ds = load_dataset(data)
    backbones, info = pretrain_backbones(ds, BackbonesConfig.from_dict(bdoc), data)
    start = time.perf_counter()
    taps = TapCache.from_backbones(ds, backbones)
    return ds, backbones, info, taps, TrainConfig.from_dict(raw.get("train")), time.perf_counter() - start


def bench_speed(args: argparse.Namespace) -> list[str]:
    ds, backbones, _, taps, base, tap_seconds = setup("av_digits.yaml", args.cache_dir, args.smoke_test)
    epochs = args.epochs
    lines = [
        f"av_digits: {len(ds.y_train)} train / {len(ds.y_val)} val samples; backbones "
        + ", ".join(f"{m} {b.KIND} {[s[-1] for s in b.tap_shapes[1:]]}" for m, b in backbones.items())
        + f"; {epochs} epochs per candidate (no early stopping), {base.threads} thread, best of {args.repeats} runs. "
        f"Building the tap cache (all {len(taps.tap_names)} taps, {taps.nbytes / 1e6:.1f} MB) took {tap_seconds:.2f} s once.",
        "",
        "| spec | batch | cached taps s/candidate (ms/epoch) | backbones per batch s/candidate (ms/epoch) "
        "| speed-up | test acc cached / per batch |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    runs = [(name, spec, base.batch_size) for name, spec in speed_specs().items()]
    runs += [("late concat", speed_specs()["late concat"], b) for b in args.batches if b != base.batch_size]
    totals = [0.0, 0.0]  # seconds per candidate at the config's batch size, summed over the specs
    for name, spec, batch in runs:
        cfg = TrainConfig(**{**base.to_dict(), "epochs": epochs, "patience": epochs, "batch_size": batch,
                             "full_batch": 0, "min_steps": 0, "max_steps": 0})
        cached = [evaluate_candidate(spec, taps, cfg) for _ in range(args.repeats)]
        direct = [evaluate_with_backbones(spec, ds, backbones, cfg) for _ in range(args.repeats)]
        a, b = (min(r["seconds_per_epoch"] for r in runs) for runs in (cached, direct))
        lines.append(f"| {name} | {batch} | {a * epochs:.2f} ({a * 1e3:.1f}) | {b * epochs:.2f} ({b * 1e3:.1f}) | {b / a:.1f}x | "
                     f"{cached[0]['test_accuracy']:.3f} / {direct[0]['test_accuracy']:.3f} |")
        print(lines[-1], flush=True)
        if batch == base.batch_size:
            totals[0], totals[1] = totals[0] + a * epochs, totals[1] + b * epochs
    lines += ["", f"Per candidate over the {len(speed_specs())} specs at the config's batch size {base.batch_size}: "
              f"{totals[0]:.2f} s cached vs {totals[1]:.2f} s with backbones per batch, "
              f"{totals[1] / totals[0]:.1f}x faster on average."]
    print(lines[-1], flush=True)
    return lines


GAINS = [  # (title, config file, data override, modalities override)
    ("av_digits (config: cnn2d image, conv1d audio)", "av_digits.yaml", None, None),
    ("av_digits (mlp [128] backbones)", "av_digits.yaml", None,
     {"audio": {"kind": "mlp", "widths": [128]}, "image": {"kind": "mlp", "widths": [128]}}),
    ("mfeat (fou, zer, mor)", "mfeat.yaml", None, None),
    ("planted xor", "planted.yaml", None, None),
    ("planted additive", "planted.yaml", {"kind": "planted", "task": "additive", "n_train": 4000, "d": 16, "seed": 0}, None),
]


def bench_gain(args: argparse.Namespace) -> list[str]:
    lines = []
    seeds = (0,) if args.smoke_test else (0, 1, 2)
    for title, config, data, mods in GAINS:
        ds, backbones, info, taps, cfg, _ = setup(config, args.cache_dir, args.smoke_test, data, mods)
        if args.smoke_test:
            cfg = TrainConfig(**{**cfg.to_dict(), "epochs": 1})
        last = {m: len(b.tap_shapes) - 1 for m, b in backbones.items()}
        best = max(i["test_accuracy"] for i in info.values())
        part = [f"### {title}", "", "| model | test accuracy | vs best single |", "|---|---|---|"]
        part += [f"| {m} alone ({i['kind']}) | {i['test_accuracy']:.3f} | {i['test_accuracy'] - best:+.3f} |"
                 for m, i in info.items()]
        for name, spec in gain_specs(list(ds.modalities), last, config == "planted.yaml").items():
            acc = statistics.mean(
                evaluate_candidate(spec, taps, TrainConfig(**{**cfg.to_dict(), "seed": s}))["test_accuracy"] for s in seeds
            )
            part.append(f"| {name} (mean of {len(seeds)} seeds) | {acc:.3f} | {acc - best:+.3f} |")
        print("\n".join(part), flush=True)
        lines += [*part, ""]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true", help="tiny and fast; writes nothing")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="*", default=[128, 512])
    parser.add_argument("--cache-dir", default=None, help="backbone cache (default: a fresh temporary folder)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.epochs, args.repeats, args.batches = 1, 1, [512]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        args.cache_dir = args.cache_dir or tmp
        head = machine_line()
        print(head, flush=True)
        lines = [head, "", "### Speed: cached taps vs backbones run on every batch", "", *bench_speed(args), ""]
        lines += bench_gain(args)
    if not (args.smoke_test or args.no_write):
        command = command_line("bench_train.py", argv)
        write_block("bench_train", "Training", lines, command)
        print("wrote experiments/RESULTS.md")


if __name__ == "__main__":
    main()
