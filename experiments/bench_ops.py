"""Benchmark: every registered fusion operator's best accuracy and cost on the built-in benchmarks.

For each operator, a few specs train on the tap cache (`evaluate_candidate`) with the
operator's default arguments: late fusion of the embeddings (last taps), and one-cell
hybrids on the middle taps (`@1`) and on the raw inputs (`@0`). Token taps reach the
token operators (attention, bottleneck, memory) as tokens; the others mean-pool them.
The spec with the best val accuracy is each operator's entry, with its test accuracy
and its exact params/FLOPs (whole model: backbones it reads + fusion; and fusion only).
Costs are the inference path's: auxiliary losses and training-only parts (the
adversarial operator's discriminator) are left out.

Datasets: `av_digits` (backbones and train settings of experiments/configs/av_digits.yaml),
planted xor (experiments/configs/planted.yaml) and its sequence variant
(experiments/configs/planted_seq.yaml: the marked frame hides among noise frames).

Usage: .venv/bin/python experiments/bench_ops.py [--smoke-test] [--no-write]
The full run replaces the generated block of the "Operators" section of experiments/RESULTS.md.
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

from experiments.results_block import RESULTS, command_line, machine_line, write_block  # noqa: E402
from fusion_ops import fusion_args, fusion_class, list_fusions  # noqa: E402
from search.datasets import load_dataset  # noqa: E402
from search.training.pretrain import BackbonesConfig, pretrain_backbones  # noqa: E402
from search.training.taps import TapCache  # noqa: E402
from search.training.train import TrainConfig, evaluate_candidate  # noqa: E402
from spaces.spec import ArchSpec, CellSpec, make_tap  # noqa: E402

WIDTH = 32
DATASETS = [  # (title, config file)
    ("av_digits", "av_digits.yaml"),
    ("planted xor", "planted.yaml"),
    ("planted xor, sequences", "planted_seq.yaml"),
]
SMOKE_DATA = {"n_train": 400, "n_test": 200}  # planted sizes in the smoke test
COST_NOTE = (
    "Params and FLOPs count the inference path only: auxiliary losses (shared_private's orthogonality "
    "penalty, adversarial's discriminator loss) and training-only modules (adversarial's discriminator) "
    "are left out. FLOPs are forward FLOPs per sample, 2 per multiply-add; elementwise work is not counted. "
    "Totals add the backbone blocks a spec runs: those up to the deepest tap it reads of each modality "
    "(none for the raw tap @0)."
)


def op_specs(op: str, last: dict[str, int]) -> dict[str, ArchSpec]:
    """The specs one operator is tried as: late on the embeddings, one-cell hybrids on `@1` and `@0`."""
    args = tuple((a.name, a.default) for a in fusion_args(op))  # explicit defaults: the table shows them

    def at(depth: dict[str, int], stage: str) -> ArchSpec:
        return ArchSpec(stage, (CellSpec(tuple(make_tap(m, d) for m, d in depth.items()), op, WIDTH, "relu", args),))

    return {
        "late": at(last, "late"),
        "hybrid @1": at({m: min(1, d) for m, d in last.items()}, "hybrid"),
        "hybrid @0": at(dict.fromkeys(last, 0), "hybrid"),
    }


def setup(config: str, cache_dir: str, smoke: bool) -> tuple[str, TapCache, dict, TrainConfig, float]:
    """(description, tap cache, backbones, train config, prepare seconds) for a shipped config."""
    start = time.perf_counter()
    raw = yaml.safe_load((ROOT / "experiments" / "configs" / config).read_text())
    data = dict(raw["data"])
    bdoc = {**raw["backbones"], "cache_dir": cache_dir}
    if smoke:
        bdoc["pretrain"] = {**bdoc.get("pretrain", {}), "epochs": 1}
        if data["kind"] == "planted":
            data.update(SMOKE_DATA)
    ds = load_dataset(data)
    backbones, _ = pretrain_backbones(ds, BackbonesConfig.from_dict(bdoc), data)
    taps = TapCache.from_backbones(ds, backbones)
    shapes = "; ".join(f"{t} {tuple(s)}" for t, s in sorted(taps.tap_shapes.items()))
    desc = (f"`{config}`: {len(ds.y_train)} train / {len(ds.y_val)} val / {len(ds.y_test)} test; backbones "
            + ", ".join(f"{m} {b.KIND}" for m, b in sorted(backbones.items())) + f"; taps {shapes}")
    return desc, taps, backbones, TrainConfig.from_dict(raw.get("train")), time.perf_counter() - start


def run_op(op: str, taps: TapCache, backbones: dict, cfg: TrainConfig,
           seeds: tuple[int, ...]) -> tuple[str, dict, dict[str, float]]:
    """(best spec's name, its averaged metrics, val accuracy of every spec tried)."""
    last = {m: len(b.tap_shapes) - 1 for m, b in backbones.items()}
    specs = op_specs(op, last)
    results = {}
    for name, spec in specs.items():
        runs = [evaluate_candidate(spec, taps, TrainConfig(**{**cfg.to_dict(), "seed": s}), backbones=backbones)
                for s in seeds]
        if any(r["status"] != "ok" for r in runs):
            raise RuntimeError(f"{op} {name} failed: {[r['reason'] for r in runs]}")
        mean = {k: statistics.mean(r[k] for r in runs) for k in ("val_accuracy", "test_accuracy", "seconds")}
        results[name] = {**runs[0], **mean, "spec": spec}
    best = max(results, key=lambda n: results[n]["val_accuracy"])
    return best, results[best], {n: r["val_accuracy"] for n, r in results.items()}


def bench_dataset(title: str, config: str, args: argparse.Namespace) -> list[str]:
    desc, taps, backbones, cfg, prep = setup(config, args.cache_dir, args.smoke_test)
    if args.smoke_test:
        cfg = TrainConfig(**{**cfg.to_dict(), "epochs": 1})
    seeds = tuple(range(args.seeds))
    lines = [
        f"### {title}", "",
        f"{desc}. Train settings of the config ({cfg.epochs} epochs max, patience {cfg.patience}, "
        f"lr {cfg.lr:g}, batch {cfg.batch_size}); accuracies are means over training seeds {list(seeds)}; "
        f"backbones and tap cache took {prep:.1f} s.", "",
        "| operator | best spec (by val) | val acc | test acc | params total | FLOPs total "
        "| params fusion | FLOPs fusion | val acc: late / hybrid @1 / hybrid @0 | s per spec |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for op in list_fusions():
        best, r, vals = run_op(op, taps, backbones, cfg, seeds)
        label = op + (" (tokens)" if fusion_class(op).TOKEN_INPUTS else "")
        lines.append(
            f"| {label} | `{r['spec'].describe()}` | {r['val_accuracy']:.3f} | {r['test_accuracy']:.3f} "
            f"| {r['params_total']:,} | {r['flops_total']:,} | {r['params_fusion']:,} | {r['flops_fusion']:,} "
            f"| {' / '.join(f'{v:.3f}' for v in vals.values())} | {r['seconds']:.1f} |"
        )
        print(lines[-1], flush=True)
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true", help="tiny and fast; writes nothing")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per spec (accuracies are means)")
    parser.add_argument("--only", nargs="*", default=None, help="config files to run (default: all)")
    parser.add_argument("--cache-dir", default=None, help="backbone cache (default: a fresh temporary folder)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.seeds = 1
    torch.set_num_threads(1)
    head = (f"{machine_line()}. Each spec: one cell of width {WIDTH}, relu, no hidden head, "
            "the operator's default arguments; trained on the tap cache (`evaluate_candidate`).")
    lines = [head, "", COST_NOTE, ""]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        args.cache_dir = args.cache_dir or tmp
        for title, config in DATASETS:
            if args.only is None or config in args.only:
                lines += bench_dataset(title, config, args)
    if not (args.smoke_test or args.no_write):
        command = command_line("bench_ops.py", argv)
        write_block("bench_ops", "Operators", lines, command)
        print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
