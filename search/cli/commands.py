"""`fusion-nas` (also `python -m search`): search, show, report, export, evaluate, ops, space."""
from __future__ import annotations

import argparse
import random
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.cli import results
from search.cli.common import COMMANDS, UsageError, command, usage
from search.datasets import DataError
from search.engine.interrupt import SIGNALS, resume_hint
from search.runstore.store import RunStore
from spaces import ConfigError
from spaces.yaml_errors import in_file

if TYPE_CHECKING:
    from search.api import SearchResult
    from search.engine.interrupt import SearchInterrupted


@command("ops")
def cmd_ops(args: argparse.Namespace) -> int:
    """List the fusion operators and their arguments, then the other registries' names."""
    from fusion_ops import fusion_args, fusion_class, list_backbones, list_fusions
    from search.datasets import list_datasets
    from search.strategies import list_strategies

    for name in list_fusions():
        doc = (fusion_class(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name}: {doc}")
        for arg in fusion_args(name):
            print(f"    {arg.describe()}")
    # every name comes from a registry: a plugin's entries are listed with the built-in ones
    print(f"backbones: {', '.join(list_backbones())}")
    print(f"strategies: {', '.join(list_strategies())}")
    print(f"datasets: {', '.join(list_datasets())}")
    return 0


@command("space")
def cmd_space(args: argparse.Namespace) -> int:
    """Print the size of a config's search space and a few samples."""
    from search.config import load_config
    from search.engine.preflight import preflight

    if args.samples < 0:
        raise UsageError(f"--samples: expected an integer >= 0, got {args.samples}")
    cfg = load_config(args.config)
    preflight(cfg, writes=False, cluster=False)  # the size guards: a space `search` would refuse is refused here too
    space = cfg.space
    modalities = ", ".join(space.modalities)
    if space.train:
        archs = space.size() // space.train_size()
        print(f"{args.config}: {space.size():,} candidates = {archs:,} architectures over modalities {modalities}"
              f" x {space.train_size():,} training settings (a range counts as its grid)")
    else:
        print(f"{args.config}: {space.size():,} architectures over modalities {modalities}")
    for stage in space.stages:
        print(f"  {stage}: {space.stage_size(stage):,}")
    for choice in space.train:
        print(f"  train.{choice.describe()}")
    rng = random.Random(args.seed)
    for _ in range(args.samples):
        print(f"  - {space.sample(rng).describe()}")
    return 0


@command("search")
def cmd_search(args: argparse.Namespace) -> int:
    """Run a search (or resume one) through `search.api` and print the front."""
    from search import api
    from search.cli.display import Progress
    from search.engine.interrupt import Interrupts, SearchInterrupted
    from search.runstore.store import RunInUse, check_run_name

    if args.resume:
        # a resumed run keeps its recorded settings: a flag that would change them is refused, not ignored
        given = [flag for flag, value in (("CONFIG", args.config), ("--strategy", args.strategy),
                                          ("--num-samples", args.num_samples), ("--seed", args.seed),
                                          ("--name", args.name)) if value is not None]
        if given:
            raise UsageError(f"{given[0]}: not allowed with --resume (a resumed run keeps the settings it was "
                             "started with; only --address may change)")
        try:
            result = api.load_run(args.resume, trust_code=args.trust_code)
        except FileNotFoundError as err:
            usage(err)
    elif not args.config:
        raise UsageError("search needs a CONFIG file (or --resume RUN_DIR)")
    elif args.name is not None:
        check_run_name(args.name, "--name")
    hooks: dict[str, Any] = {"say": print, "progress": Progress(), "warn": _warn, "report": False}
    with Interrupts().installed() as interrupts:
        try:
            if args.resume:
                result.resume(address=args.address, interrupts=interrupts, **hooks)
            else:
                result = api.search(args.config, strategy=args.strategy, num_samples=args.num_samples,
                                    seed=args.seed, name=args.name, address=args.address,
                                    interrupts=interrupts, **hooks)
        except RunInUse as err:
            usage(err)
        except KeyboardInterrupt as exc:  # the trials finished so far are in trials.jsonl
            if not isinstance(exc, SearchInterrupted):  # a second signal inside Ray's C++ (ray.wait) comes
                # out as a plain KeyboardInterrupt: it is ours all the same
                exc = SearchInterrupted(interrupts.signum or signal.SIGINT, True, interrupts.run_dir)
            if exc.run_dir is None:  # before the run directory existed: nothing to show or resume
                raise exc from None
            if sys.stdout.isatty():
                print()  # end the live progress line
            _after_interrupt(exc.run_dir, exc)
            return exc.exit_code
    with in_file(result.store.trials_path):
        _print_front(result, result.records())
    try:
        print(f"report: {result.report(say=print)}")
    except Exception as err:  # the trials are safe on disk; `fusion-nas report RUN` redoes it
        print(f"fusion-nas: could not write the report ({type(err).__name__}: {err})", file=sys.stderr)
    print(f"run directory: {result.run_dir}")
    return 0


def _warn(line: str) -> None:
    print(f"fusion-nas: warning: {line}", file=sys.stderr)


def _after_interrupt(run_dir: Path, exc: SearchInterrupted) -> None:
    """The front and report of what finished, then the resume hint: always the last line, also
    when a second signal cuts the front or the report short (a second signal first skips them)."""
    from search import api

    try:
        if not exc.forced:
            result = api.load_run(run_dir)
            with in_file(result.store.trials_path):
                _print_front(result, result.records())
            print(f"report: {result.report(say=print)}")
    except KeyboardInterrupt:
        pass
    except Exception as err:  # the trials are safe on disk; `fusion-nas report RUN` redoes it
        print(f"fusion-nas: could not write the report ({type(err).__name__}: {err})", file=sys.stderr)
    for s in SIGNALS:  # the user asked twice already: nothing more stops the hint
        signal.signal(s, signal.SIG_IGN)
    print(resume_hint(RunStore.open(run_dir)), file=sys.stderr)


@command("show")
def cmd_show(args: argparse.Namespace) -> int:
    """Print the front of a finished (or running) search."""
    from search import api

    try:
        result = api.load_run(args.run)
    except FileNotFoundError as err:
        usage(err)
    with in_file(result.store.trials_path):
        _print_front(result, result.records(warn=_warn))
    return 0


def _print_front(result: SearchResult, trials: list[dict[str, Any]]) -> None:
    """The status counts, the front's table (the knee starred) and the baselines beside it."""
    from search.baselines import compare, summary_line
    from search.cli.display import baselines_table, front_table
    from search.engine.run import front_rows
    from search.runstore.store import STATUSES

    objs = result.objectives
    front = result.pareto(trials)
    counts = {s: sum(t.get("status") == s for t in trials) for s in STATUSES}
    print(f"{len(trials)} trials ({', '.join(f'{n} {s}' for s, n in counts.items() if n)}); "
          f"front of {len(front['trial_ids'])}, hypervolume {front['hypervolume']:.4f}")
    if trials and not front["trial_ids"]:
        print(f"every trial ended without a usable score ({len(trials)} of {len(trials)}): the front is empty; "
              "the reasons are in trials.jsonl (`status`, `reason`)")
        return
    print(front_table(front_rows(front, objs), objs[0].name))
    stored = result.store.baselines()
    if stored:
        cmp = compare(front, stored, objs, rank=result.store.rank(), trials=trials)
        print(baselines_table(stored, cmp, objs[0].name))
        print(summary_line(cmp))


@command("init")
def cmd_init(args: argparse.Namespace) -> int:
    """Write a commented starter config (read from `--data` when given)."""
    from search.cli.starter import write_starter

    path = write_starter(args.out, args.data, args.force)
    print(f"wrote {path}; next: fusion-nas space {path}, then fusion-nas search {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-nas", description="Multi-objective NAS over multimodal fusion strategies."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    search = sub.add_parser("search", help="search a config's space; prints the Pareto front")
    search.add_argument("config", nargs="?", help="the run's YAML config")
    search.add_argument("--strategy", help="a registered strategy (default: the config's); "
                        "plugins' strategies too, so the name is checked with the config")
    search.add_argument("--num-samples", type=int, help="candidates to train")
    search.add_argument("--name", help="run name (default: the config's)")
    search.add_argument("--seed", type=int)
    search.add_argument("--address", help="join an existing Ray cluster (`ray start --head`)")
    search.add_argument("--resume", metavar="RUN_DIR",
                        help="finish an interrupted run with its recorded settings (only --address may be given)")
    search.add_argument("--trust-code", action="store_true",
                        help="with --resume: import the plugins and backbone factories the run's config names "
                             "(code: only from people you trust)")
    show = sub.add_parser("show", help="the Pareto front of a run, as a table")
    show.add_argument("run", metavar="RUN_DIR")
    sub.add_parser("ops", help="list fusion operators and their arguments")
    init = sub.add_parser("init", help="write a commented starter config (from your data with --data)")
    init.add_argument("--data", metavar="FILE", help="an .npz: one array per modality, y, optional split")
    init.add_argument("--out", default="fusion-nas.yaml", help="where to write it (default: fusion-nas.yaml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    results.add_parsers(sub)
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
    except (ConfigError, DataError, UsageError, ConnectionError) as err:
        print(f"fusion-nas: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # a search handles its own (search.engine.interrupt): this is any other
        print("fusion-nas: interrupted", file=sys.stderr)
        return getattr(err, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())
