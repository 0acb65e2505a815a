"""`fusion-nas` (also `python -m search`): search, show, ops, space."""
from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable, Sequence

from search.datasets import DataError
from spaces import ConfigError


class UsageError(ValueError):
    """A bad command line: reported as one line, exit code 2."""


def cmd_ops(args: argparse.Namespace) -> int:
    """List the fusion operators and their arguments."""
    from fusion_ops import fusion_args, fusion_class, list_fusions

    for name in list_fusions():
        doc = (fusion_class(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name}: {doc}")
        for arg in fusion_args(name):
            print(f"    {arg.describe()}")
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    """Print the size of a config's search space and a few samples."""
    from search.config import load_config

    cfg = load_config(args.config)
    space = cfg.space
    print(f"{args.config}: {space.size():,} architectures over modalities {', '.join(space.modalities)}")
    for stage in space.stages:
        print(f"  {stage}: {space.stage_size(stage):,}")
    rng = random.Random(args.seed)
    for _ in range(args.samples):
        print(f"  - {space.sample(rng).describe()}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"ops": cmd_ops, "space": cmd_space}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-nas", description="Multi-objective NAS over multimodal fusion strategies."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ops", help="list fusion operators and their arguments")
    space = sub.add_parser("space", help="size of a config's search space, and samples")
    space.add_argument("config")
    space.add_argument("--samples", type=int, default=5)
    space.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user mistakes print one line `fusion-nas: error: ...` and return 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DataError, UsageError) as err:
        print(f"fusion-nas: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fusion-nas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
