"""What the terminal shows: the live progress line and the Pareto front table."""
from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from search.objectives import OBJECTIVES


def human(n: float) -> str:
    """`12345678 -> '12.3M'`: counts of params and FLOPs at a glance."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


class Progress:
    """`trials 7/24 | best val 0.912 | front 4 | HV 1.83 | 0:42` — one line, redrawn in a
    terminal, one line per trial otherwise (logs stay readable)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        # sys.stdout read now, not at import: it may have been replaced since (pytest's capture, a notebook)
        self.stream = stream if stream is not None else sys.stdout
        self.start = time.monotonic()
        self.live = self.stream.isatty()

    def __call__(self, done: int, total: int, best: float | None, front: int, hv: float, confirm: int = 0) -> None:
        secs = int(time.monotonic() - self.start)
        best_s = "-" if best is None else f"{best:.3f}"
        seeds = f" + {confirm} confirming" if confirm else ""
        line = (f"trials {done}/{total}{seeds} | best val {best_s} | front {front} | HV {hv:.3f}"
                f" | {secs // 60}:{secs % 60:02d}")
        if self.live:
            self.stream.write("\r" + line.ljust(78))
            if done >= total and not confirm:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def front_table(rows: Sequence[Mapping[str, Any]], metric: str = "accuracy") -> str:
    """The front as a fixed-width table (rows from `search.engine.run.front_rows`); `metric` names what
    the val and test columns hold, extra cost columns (latency, ms) follow FLOPs."""
    if not rows:
        return "no finished trial yet: the front is empty"
    seeds = max(int(r.get("n_seeds", 1)) for r in rows) > 1
    width = 14 if seeds else 6
    extra = list(rows[0].get("extra") or {})
    units = {e: OBJECTIVES[e].unit for e in extra}
    head = (f"{'':1} {'trial':>10} {'val':>{width}} {'test':>{width}} {'seeds':>5} {'params':>8} {'FLOPs':>8}"
            + "".join(f" {f'{e} {units[e]}'.strip():>10}" for e in extra) + "  architecture")
    lines = [head, "-" * len(head)]
    for r in rows:
        mark = "*" if r["knee"] else "!" if r.get("unstable") else " "
        more = "".join(f" {_num(r['extra'].get(e)):>10}" for e in extra)
        lines.append(f"{mark} {r['trial']:>10} {_score(r, 'val', seeds):>{width}} {_score(r, 'test', seeds):>{width}} "
                     f"{int(r.get('n_seeds', 1)):>5} {human(r['params']):>8} {human(r['flops']):>8}{more}  {r['arch']}")
    what = "" if metric == "accuracy" else f" val, test: {metric}."
    if any(r.get("unstable") for r in rows):
        lines.append("! unstable: its seeds disagree (a spread well above the run's seed noise); never the knee "
                     "nor the answer.")
    lines.append("* knee of the front." + what + (" val, test: mean ± std over the seeds." if seeds else "")
                 + " FLOPs: forward, per sample, 2 per multiply-add (elementwise work not counted).")
    return "\n".join(lines)


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.3g}"


def _score(row: Mapping[str, Any], key: str, spread: bool) -> str:
    value = row[key]
    if value is None:
        return "-"
    return f"{value:.3f} ± {row.get(f'{key}_std') or 0.0:.3f}" if spread else f"{value:.3f}"


def baselines_table(baselines: Sequence[Mapping[str, Any]], cmp: Mapping[str, Any] | None = None,
                    metric: str = "accuracy") -> str:
    """The run's baselines under the front (records of `baselines.json`, at the run's `metric`;
    `cmp` from `search.baselines.compare` marks which classic ones the front dominates)."""
    if not baselines:
        return ""
    dominated = {c["name"]: c["dominated_by"] for c in (cmp or {}).get("classic", ())}  # classic names

    def acc(v: Any, s: Any) -> str:
        return "     -" if v is None else f"{v:6.3f}" + (f"±{s:.3f}" if s is not None else "      ")

    def cost(v: Any) -> str:
        return "-" if v is None else human(v)

    head = f"{'baseline':<22} {'panel':<7} {'val':>12} {'test':>12} {'params':>8} {'FLOPs':>8} {'seeds':>5}"
    lines = ["", f"baselines (trained before the search; val, test: {metric}, mean±std over seeds)", head,
             "-" * len(head)]
    for b in baselines:
        note = ""
        if b["panel"] == "classic" and b["name"] in dominated:
            by = dominated[b["name"]]
            note = f"  dominated by front trial {by}" if by else "  not dominated by the front"
        v, t = f"val_{metric}", f"test_{metric}"
        lines.append(f"{b['name']:<22} {b['panel']:<7} {acc(b.get(v), b.get(f'{v}_std', b['val_std'])):>12} "
                     f"{acc(b.get(t), b.get(f'{t}_std', b['test_std'])):>12} {cost(b['params_total']):>8} "
                     f"{cost(b['flops_total']):>8} {b['n_seeds']:>5}{note}")
    return "\n".join(lines)
