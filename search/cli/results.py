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
    from search.export import export_front, export_run

    if args.pick == "front":
        if any(b is not None for b in (args.max_params, args.max_flops, args.max_latency_ms)) or args.retrain:
            usage(ValueError("--pick front exports every front member: --max-params, --max-flops, "
                             "--max-latency-ms and --retrain go with one pick"))
        try:
            front = export_front(args.run, args.out, device=args.device, trust_code=args.trust_code,
                                 formats=args.format or ["native"])
        except (FileNotFoundError, ExportError) as err:
            usage(err)
        for f in front["members"]:
            mark = " (knee)" if f["knee"] else " (UNSTABLE)" if f["unstable"] else ""
            print(f"{args.out}/{f['folder']}: {f['arch']}{mark}, test {front['metric']} {f['exported_test_metric']:.4f}")
        print(f"front of {len(front['members'])} exported to {args.out}; listed in {args.out}/front.json")
        return 0
    try:
        m = export_run(args.run, args.pick, args.out, retrain=args.retrain, device=args.device,
                       trust_code=args.trust_code,
                       bounds=Bounds(args.max_params, args.max_flops, args.max_latency_ms),
                       formats=args.format or ["native"])
    except (FileNotFoundError, ExportError) as err:
        usage(err)
    reported = m["reported"]["test_metric"]
    note = {True: "reproduces the trial's", False: "DIFFERS from the trial's", None: "retrained; the trial had"}
    print(f"exported trial {m['trial_id']} ({m['arch']}) to {args.out}")
    print(f"test {m['metric']} {m['test_metric']:.4f} ({note[m['reproduced']]} {reported:.4f}), "
          f"{m['params_total']:,} parameters, {m['flops_total']:,} FLOPs")
    for fmt, g in m["formats"].items():
        if fmt != "native":
            speed = (f", {g['latency_ms_batch1']:.3f} ms at batch 1 in onnxruntime (PyTorch "
                     f"{g['torch_latency_ms_batch1']:.3f} ms)") if "latency_ms_batch1" in g else ""
            print(f"{fmt}: {args.out}/{g['file']}, test {m['metric']} {g['test_' + m['metric']]:.4f}, outputs within "
                  f"{g['max_abs_diff_test']:.1e} of PyTorch's on the test split{speed}")
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
    export.add_argument("--pick", default="knee", metavar="knee|accuracy|smallest|front|TRIAL_ID",
                        help="which trial (default: knee of the front; accuracy: the best on the holdout; "
                             "front: every front member, each in its own folder, with front.json)")
    for flag, kind, what in (("--max-params", int, "parameters"), ("--max-flops", int, "FLOPs per sample"),
                             ("--max-latency-ms", float, "latency at batch 1, as the run measured it (ms)")):
        export.add_argument(flag, type=kind, metavar="N", help=f"with --pick accuracy|knee: the best confirmed "
                            f"candidate with at most N {what}")
    export.add_argument("--format", action="append", choices=("native", "onnx", "torchscript"),
                        help="also write the model as one graph (repeatable): onnx (model.onnx, opset 17; needs "
                             "fusion-nas[onnx]) or torchscript (model.torchscript.pt); the native files are always written")
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
