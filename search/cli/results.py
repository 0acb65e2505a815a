"""`fusion-nas report | export | evaluate`: what a user does after a search.

Hooked into `search.cli.commands` by `add_parsers(sub)` (in `build_parser`); each command
registers itself in `search.cli.common.COMMANDS`, and a user's mistake raises `UsageError`
(one line, exit 2) like every other command.
"""
from __future__ import annotations

import argparse
from typing import Any

from search.cli.common import command, usage


@command("report")
def cmd_report(args: argparse.Namespace) -> int:
    """Write RUN/report.html (and static images)."""
    from search.report.write import write_report

    try:
        path = write_report(args.run, args.format or (), say=print)
    except FileNotFoundError as err:
        usage(err)
    print(f"report: {path}")
    for fmt in args.format or ():
        print(f"images: {path.parent}/report-*.{fmt}")
    return 0


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    """Export the picked trial of a run as a loadable model."""
    from fusion_ops.load import ExportError
    from search.bounded_pick import Bounds
    from search.export import export_run

    try:
        m = export_run(args.run, args.pick, args.out, retrain=args.retrain, device=args.device,
                       trust_code=args.trust_code,
                       bounds=Bounds(args.max_params, args.max_flops, args.max_latency_ms))
    except (FileNotFoundError, ExportError) as err:
        usage(err)
    reported = m["reported"]["test_metric"]
    note = {True: "reproduces the trial's", False: "DIFFERS from the trial's", None: "retrained; the trial had"}
    print(f"exported trial {m['trial_id']} ({m['arch']}) to {args.out}")
    print(f"test {m['metric']} {m['test_metric']:.4f} ({note[m['reproduced']]} {reported:.4f}), "
          f"{m['params_total']:,} parameters, {m['flops_total']:,} FLOPs")
    print(f'load it: from fusion_ops.load import load_model; model = load_model("{args.out}")')
    return 0


@command("evaluate")
def cmd_evaluate(args: argparse.Namespace) -> int:
    """Re-score an export on the test split of a config's data."""
    from fusion_ops.load import ExportError
    from search.export import evaluate_export
    from search.training.device import resolve_device

    device = resolve_device(args.device, print, "--device")
    try:
        r = evaluate_export(args.export, args.config, device, trust_code=args.trust_code)
    except (FileNotFoundError, ExportError) as err:
        usage(err)
    line = f"{r['arch']}: test {r['metric']} {r['test_metric']:.4f}"
    if r["exported_test_metric"] is not None:
        same = r["test_metric"] == r["exported_test_metric"]
        line += f" ({'equal to' if same else 'exported with'} {r['exported_test_metric']:.4f}"
        line += ")" if r["same_data"] else "; the config's data section differs from the export's)"
    print(line)
    return 0


def add_parsers(sub: Any) -> None:
    """The three subcommands, on `parser.add_subparsers(dest="command")`."""
    from search.report.write import IMAGE_FORMATS

    report = sub.add_parser("report", help="write RUN_DIR/report.html: the front, interactive, offline")
    report.add_argument("run", metavar="RUN_DIR")
    report.add_argument("--format", action="append", choices=IMAGE_FORMATS,
                        help="also write static images (repeatable), through kaleido")
    export = sub.add_parser("export", help="export one trial as a model that loads in one line")
    export.add_argument("run", metavar="RUN_DIR")
    export.add_argument("--pick", default="knee", metavar="knee|accuracy|smallest|TRIAL_ID",
                        help="which trial (default: knee of the front; accuracy is validation accuracy)")
    for flag, kind, what in (("--max-params", int, "parameters"), ("--max-flops", int, "FLOPs per sample"),
                             ("--max-latency-ms", float, "latency at batch 1, as the run measured it (ms)")):
        export.add_argument(flag, type=kind, metavar="N", help=f"with --pick accuracy|knee: the best confirmed "
                            f"candidate with at most N {what}")
    export.add_argument("--retrain", action="store_true", help="train on train+val (for the trial's best epoch count)")
    export.add_argument("--out", required=True, metavar="DIR", help="the export directory")
    export.add_argument("--device", metavar="auto|cpu|cuda|cuda:N",
                        help="train and score the export here (default: where the run's trials trained)")
    export.add_argument("--trust-code", action="store_true",
                        help="import the plugins and backbone factories the run's config names "
                             "(code: only from people you trust)")
    evaluate = sub.add_parser("evaluate", help="re-score an export on a config's test split")
    evaluate.add_argument("export", metavar="EXPORT_DIR")
    evaluate.add_argument("--config", required=True, metavar="CONFIG", help="a config file, or a run directory")
    evaluate.add_argument("--device", default="cpu", metavar="auto|cpu|cuda|cuda:N",
                          help="load the export onto this device and score it there (default: cpu)")
    evaluate.add_argument("--trust-code", action="store_true",
                          help="import and call the backbone factory the export names, and the code a run's "
                               "config names (code: only from people you trust)")
