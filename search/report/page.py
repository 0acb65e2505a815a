"""Drawing `report.html`: Plotly figures from `search.report.data`, one self-contained page.

plotly.js is embedded once in the page's head (the same as `include_plotlyjs=True`):
a CDN link would render a blank page offline. Nothing here computes what is drawn.
"""
from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from search import objectives as _objectives
from search.objectives import Objective
from search.report.data import (
    BaselinePoint,
    Point,
    Series,
    baseline_series,
    baseline_table,
    breakdown,
    front_points,
    front_table,
    human,
    scatter_series,
    staircase,
)

FLOPS_NOTE = ("FLOPs: forward, per sample, 2 per multiply-add, as torch.utils.flop_counter counts them "
              "(plus FFTs, CPU attention kernels and fusion interactions); elementwise work is not counted. "
              "Params and FLOPs count the inference path only: auxiliary losses and training-only parts "
              "(the adversarial discriminator) are left out.")
SYMBOLS = {"ok": "circle", "early_stopped": "diamond-open", "failed": "x", "diverged": "x-open", "errored": "cross-open"}
STAGE_COLOURS = {"early": "#1f77b4", "late": "#ff7f0e", "hybrid": "#2ca02c"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def _colours(series: Sequence[Series], by: str) -> dict[str, str]:
    groups = sorted({s.group for s in series})
    if by == "stage":
        return {g: STAGE_COLOURS.get(g, PALETTE[i % len(PALETTE)]) for i, g in enumerate(groups)}
    return {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}


BASELINE_MARKER = {"symbol": "x-thin-open", "size": 15, "color": "#8b0000", "line": {"width": 3, "color": "#8b0000"}}


def _axis(cost: str) -> str:
    o = _objectives.OBJECTIVES[cost]
    return f"{o.label} (log)" if o.scale == "log10" else o.label


def scatter_figure(points: Sequence[Point], cost: str, by: str,
                   baselines: Sequence[BaselinePoint] = (), metric: str = "accuracy") -> go.Figure:
    """Accuracy against one cost (log x): every placeable trial coloured by `by`, marked by
    status; the front ringed (error bars: mean ± std over seeds) and drawn as a step line; the knee a
    star; a front member whose seeds disagree crossed out in red; baselines a labelled cross."""
    series = scatter_series(points, cost, by)
    colours = _colours(series, by)
    fig = go.Figure()
    for s in series:
        fig.add_trace(go.Scatter(
            x=s.x, y=s.y, mode="markers", name=s.name, legendgroup=s.group, meta="trials",
            customdata=s.trial_ids, hovertext=s.hover, hoverinfo="text",
            marker={"symbol": SYMBOLS.get(s.status, "circle"), "color": colours[s.group], "size": 9,
                    "line": {"width": 1.5 if s.status != "ok" else 0.5, "color": colours[s.group]}},
        ))
    xs, ys = staircase(points, cost)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"shape": "hv", "color": "black", "width": 1.5},
                             name="front: best accuracy at this cost", meta="staircase", hoverinfo="skip"))
    for knee_only in (False, True):
        f = front_points(points, cost, knee_only)
        fig.add_trace(go.Scatter(
            x=f.x, y=f.y, mode="markers", name=f.name, meta="knee" if knee_only else "front",
            customdata=f.trial_ids, hovertext=f.hover, hoverinfo="text",
            # the front's error bars: mean ± std of the val metric over a confirmed candidate's seeds
            error_y=None if knee_only else {"type": "data", "array": f.std, "visible": True, "color": "#555",
                                            "thickness": 1.2, "width": 4},
            marker=({"symbol": "star", "size": 18, "color": "gold", "line": {"width": 1, "color": "black"}}
                    if knee_only else
                    {"symbol": "circle-open", "size": 16, "color": "black", "line": {"width": 2}}),
        ))
    u = front_points(points, cost, unstable=True)
    if u.x:
        fig.add_trace(go.Scatter(
            x=u.x, y=u.y, mode="markers", name=u.name, meta="unstable", customdata=u.trial_ids,
            hovertext=u.hover, hoverinfo="text",
            marker={"symbol": "x-open", "size": 20, "color": "#d62728", "line": {"width": 2, "color": "#d62728"}},
        ))
    b = baseline_series(baselines, cost)
    if b.x:
        fig.add_trace(go.Scatter(
            x=b.x, y=b.y, mode="markers+text", name=b.name, meta="baselines", customdata=b.trial_ids,
            text=b.trial_ids, textposition="bottom center", textfont={"size": 10, "color": "#8b0000"},
            hovertext=b.hover, hoverinfo="text", marker=BASELINE_MARKER,
        ))
    label = "stage" if by == "stage" else "operator"
    fig.update_layout(title=f"by {label}", xaxis={"type": "log", "title": _axis(cost)},
                      yaxis={"title": _objectives.OBJECTIVES[metric].label}, hoverlabel={"align": "left"},
                      legend={"orientation": "h", "y": -0.22, "x": 0}, height=520, margin={"t": 40, "r": 10})
    return fig


def history_figure(hist: Mapping[str, list], metric: str = "accuracy") -> go.Figure:
    """Hypervolume and best val metric after each finished trial."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("hypervolume of the front", f"best {_objectives.OBJECTIVES[metric].label}"))
    for row, key in ((1, "hypervolume"), (2, "best_val_accuracy")):
        fig.add_trace(go.Scatter(x=hist["n"], y=hist[key], mode="lines+markers", line={"shape": "hv"},
                                 customdata=hist["trial_id"], meta="history", name=key.replace("_", " "),
                                 hovertemplate="after trial %{x} (%{customdata}): %{y:.4f}<extra></extra>"),
                      row=row, col=1)
    fig.update_xaxes(title_text="trials finished", row=2, col=1)
    if metric in ("accuracy", "balanced_accuracy", "macro_f1", "auc"):  # a constant line must not float mid-plot
        fig.update_yaxes(range=[0, 1.02], row=2, col=1)
    fig.update_layout(title="Over the course of the search", showlegend=False, height=480, margin={"t": 70})
    return fig


def breakdown_figure(points: Sequence[Point], metric: str = "accuracy") -> go.Figure:
    """Trials and front members per stage and per operator, best val metric in the hover."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("by stage", "by operator (each one a trial uses)"))
    higher = _objectives.OBJECTIVES[metric].mode == "max"
    for col, by in ((1, "stage"), (2, "op")):
        rows = breakdown(points, by, higher)
        keys = [r["key"] for r in rows]
        best = ["-" if r["best_val_accuracy"] is None else f"{r['best_val_accuracy']:.4f}" for r in rows]
        for name, field, colour in (("trials", "trials", "#b0b0b0"), ("on the front", "on_front", "#2ca02c")):
            fig.add_trace(go.Bar(x=keys, y=[r[field] for r in rows], name=name, marker_color=colour,
                                 showlegend=col == 1, legendgroup=name, customdata=best, meta="breakdown",
                                 hovertemplate=f"%{{x}}: %{{y}} {name}, best val {metric} %{{customdata}}"
                                               "<extra></extra>"),
                          row=1, col=col)
    fig.update_layout(title="Which fusion kinds reach the front", barmode="group", height=400, margin={"t": 70})
    return fig


def parallel_figure(points: Sequence[Point], objs: Sequence[Objective]) -> go.Figure:
    """Every ok trial with all objectives known as one line across one axis per objective
    (costs on log10), the front in colour: for runs of more than three objectives."""
    rows = [p for p in points if p.status == "ok" and p.accuracy is not None
            and all(p.cost(o.name) is not None for o in objs[1:])]
    dims = [{"label": objs[0].label, "values": [p.accuracy for p in rows]}]
    dims += [{"label": f"log10 {o.label}" if o.scale == "log10" else o.label,
              "values": [float(o.values([p.cost(o.name)])[0]) for p in rows]} for o in objs[1:]]
    fig = go.Figure(go.Parcoords(line={"color": [1 if p.on_front else 0 for p in rows],
                                       "colorscale": [[0, "#c0c0c0"], [1, "#d62728"]]},
                                 dimensions=dims, meta="parallel"))
    fig.update_layout(title="All objectives (red: on the front)", height=420, margin={"t": 70})
    return fig


def figures(points: Sequence[Point], hist: Mapping[str, list],
            baselines: Sequence[BaselinePoint] = (), objs: Sequence[Objective] | None = None) -> dict[str, go.Figure]:
    """Every figure of the page by its id (also the static images' names): one metric-vs-cost
    panel per cost objective and colouring, the history, the breakdown, and a parallel-
    coordinates view when there are more than three objectives."""
    objs = tuple(objs or _objectives.get(_objectives.CLASSIC))
    metric = objs[0].name
    out = {f"{o.name}-{by}": scatter_figure(points, o.name, by, baselines, metric)
           for by in ("stage", "op") for o in objs[1:]}
    out["history"] = history_figure(hist, metric)
    out["breakdown"] = breakdown_figure(points, metric)
    if len(objs) > 3:
        out["parallel"] = parallel_figure(points, objs)
    return out


def write_images(figs: Mapping[str, go.Figure], out_dir: Path, formats: Sequence[str]) -> list[Path]:
    """`report-<figure>.<fmt>` for every figure and format, through kaleido (one browser start)."""
    paths = [out_dir / f"report-{name}.{fmt}" for fmt in formats for name in figs]
    if paths:
        pio.write_images([figs[p.stem.removeprefix("report-")] for p in paths], paths,
                         format=[p.suffix[1:] for p in paths], width=1000, height=560)
    return paths


# ------------------------------------------------------------------ the page
def _fmt(v: Any, kind: str) -> tuple[str, str]:
    """(shown text, sort key) of one table cell."""
    if v is None:
        return "-", ""
    if kind == "acc":
        return f"{v:.4f}", repr(v)
    if kind == "cost":
        return human(v), repr(v)
    return html.escape(str(v)), html.escape(str(v))


TABLE_COLUMNS = (("trial", "trial", "text"), ("knee", "knee", "text"), ("stage", "stage", "text"),
                 ("operator", "op", "text"), ("val acc", "val", "acc"), ("test acc", "test", "acc"),
                 ("params", "params", "cost"), ("FLOPs", "flops", "cost"), ("architecture", "arch", "text"))


def front_table_html(points: Sequence[Point], metric: str = "accuracy") -> str:
    short = "acc" if metric == "accuracy" else metric
    head = "".join(f'<th data-kind="{k}" title="sort">{html.escape(t.replace("acc", short))}</th>'
                   for t, _, k in TABLE_COLUMNS)
    body = []
    for r in front_table(points):
        r = {**r, "knee": "★" if r["knee"] else "unstable" if r.get("unstable") else ""}  # seeds that disagree
        cells = (_fmt(r[key], kind) for _, key, kind in TABLE_COLUMNS)
        body.append("<tr>" + "".join(f'<td data-sort="{s}">{t}</td>' for t, s in cells) + "</tr>")
    return (f'<table id="front-table" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


BASELINE_COLUMNS = (("baseline", "name", "text"), ("kind", "kind", "text"), ("panel", "panel", "text"),
                    ("val acc", "val", "acc"), ("test acc", "test", "acc"), ("params", "params", "cost"),
                    ("FLOPs", "flops", "cost"), ("against the front", "front", "text"))


def baselines_html(baselines: Sequence[BaselinePoint], comparison_line: str) -> str:
    """The comparison line and the baselines' table (empty when the run has none)."""
    if not baselines:
        return ""
    head = "".join(f'<th data-kind="{k}" title="sort">{html.escape(t)}</th>' for t, _, k in BASELINE_COLUMNS)
    body = []
    for r in baseline_table(baselines):
        cells = (_fmt(r[key], kind) for _, key, kind in BASELINE_COLUMNS)
        body.append("<tr>" + "".join(f'<td data-sort="{s}">{t}</td>' for t, s in cells) + "</tr>")
    return (f'<h2>Baselines</h2><p id="baseline-comparison">{html.escape(comparison_line)}</p>'
            "<p class='note'>Trained before the search with the run's training settings (mean over seeds); "
            "drawn as ✕ in the plots above. Logistic regression: params = weights + biases, FLOPs = 2·d·outputs "
            "per sample. A classic method is dominated when a front trial has val accuracy ≥, params ≤ and "
            "FLOPs ≤ its own.</p>"
            f'<table id="baselines-table" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


SORT_JS = """
document.querySelectorAll('table.sortable th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0], numeric = th.dataset.kind !== 'text';
  const dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
  const key = tr => tr.cells[col].dataset.sort;
  const rows = Array.from(body.rows).sort((a, b) => numeric
    ? dir * ((parseFloat(key(a)) || -Infinity) - (parseFloat(key(b)) || -Infinity))
    : dir * key(a).localeCompare(key(b)));
  rows.forEach(r => body.appendChild(r));
}));
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
table { border-collapse: collapse; font-size: 0.9em; } th, td { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f0f0f0; cursor: pointer; } td:last-child { font-family: monospace; }
pre { background: #f7f7f7; padding: 1em; overflow: auto; max-height: 28em; } .note { color: #555; font-size: 0.9em; }
"""


def _summary_html(title: str, s: Mapping[str, Any]) -> str:
    counts = ", ".join(f"{n} {k.replace('_', '-')}" for k, n in s["status_counts"].items()) or "none finished yet"
    best = "-" if s["best_val_accuracy"] is None else f"{s['best_val_accuracy']:.4f}"
    knee = "-" if s["knee"] is None else f"trial {s['knee']}"
    unplaced = (f" {len(s['unplaced'])} trial(s) with unknown params/FLOPs are not drawn: "
                f"{', '.join(s['unplaced'])}." if s["unplaced"] else "")
    names = s.get("objectives") or list(_objectives.CLASSIC)
    labels = [_objectives.OBJECTIVES[n].label for n in names]
    metric = labels[0]
    notes = "".join(f" {_objectives.OBJECTIVES[n].note}" for n in names if _objectives.OBJECTIVES[n].note)
    return (f"<h1>{html.escape(title)}</h1><p>{s['n_trials']} trials ({counts}); Pareto front of "
            f"{s['front_size']} over {', '.join(labels[:-1])} and {labels[-1]}; hypervolume {s['hypervolume']:.4f}; "
            f"best {metric} {best}; knee: {html.escape(knee)}.{html.escape(unplaced)}</p>"
            "<p class='note'>Markers: ● ok, ◇ early-stopped (the metric when stopped), × failed, ⊕ errored; a trial "
            f"without a metric is drawn at 0. Colour by operator: the operator of the last cell (the whole chain "
            f"is in the hover). Rings: the {len(names)}-objective Pareto front; ★ its knee. {FLOPS_NOTE}{notes}</p>")


def render_html(title: str, points: Sequence[Point], hist: Mapping[str, list], summary: Mapping[str, Any],
                config_text: str, figs: Mapping[str, go.Figure] | None = None, *,
                baselines: Sequence[BaselinePoint] = (), comparison_line: str = "", extra: str = "") -> str:
    """The whole page as one string; `extra`: a strategy's own section (HTML), after the baselines."""
    figs = figs if figs is not None else figures(points, hist, baselines)
    summary_json = json.dumps(summary).replace("</", "<\\/")  # "</script>" must not end the block
    div = {name: pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"fig-{name}",
                             config=PLOT_CONFIG) for name, fig in figs.items()}
    names = summary.get("objectives") or list(_objectives.CLASSIC)
    metric_label = _objectives.OBJECTIVES[names[0]].label.capitalize()
    panels = "".join(div[f"{c}-{by}"] for by in ("stage", "op") for c in names[1:] if f"{c}-{by}" in div)
    panels += div.get("parallel", "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
{_summary_html(title, summary)}
<h2>{html.escape(metric_label)} against cost</h2>
<div class="grid">{panels}</div>
<h2>The search over time</h2>{div['history']}
<h2>Stages and operators</h2>{div['breakdown']}
<h2>The Pareto front</h2><p class="note">Click a column to sort.</p>{front_table_html(points, names[0])}
{baselines_html(baselines, comparison_line)}
{extra}
<h2>Configuration</h2><pre id="config">{html.escape(config_text)}</pre>
<script type="application/json" id="report-summary">{summary_json}</script>
<script>{SORT_JS}</script>
</body></html>
"""
