"""`fusion-nas report RUN`: a run directory -> `RUN/report.html` (and static images).

Reads the run store only (`trials.jsonl`, `reference.json`, `config.yaml`); the front
is recomputed from the trials exactly as `pareto.json` is. The data behind the page is
`search.report.data`, the drawing `search.report.page`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from search.baselines import compare, summary_line
from search.objectives import Objective
from search.report import data
from search.report.oneshot import oneshot_html, predicted_vs_trained
from search.runstore.store import RunStore, atomic_write, candidate_records, front_from_trials

IMAGE_FORMATS = ("png", "svg")
Say = Callable[[str], Any]


class Drawn(NamedTuple):
    """What the page draws of a run, computed from its store (see `drawn`)."""

    objectives: tuple[Objective, ...]
    front: dict[str, Any]  # as `front_from_trials` returns it
    points: list[data.Point]  # one per candidate (a confirmed candidate is one point)
    history: dict[str, list]
    stored: list[dict[str, Any]]  # the run's baselines (`baselines.json`), [] without
    comparison: dict[str, Any]  # `baselines.compare` of the front and `stored`
    baselines: list[data.BaselinePoint]


def drawn(store: RunStore, *, fill_costs: bool = True, say: Say = lambda _msg: None) -> Drawn:
    """The data behind the page and its figures, read from the run store; `fill_costs`:
    see `write_report`."""
    trials = store.trials()
    objs = store.objectives()
    front = front_from_trials(trials, store.reference, objs)
    costs = missing_costs(store, trials, say) if fill_costs else {}
    points = data.trial_points(candidate_records(trials), front, costs, objs)  # a confirmed candidate: one point
    hist = data.history([t for t in trials if not t.get("confirm")], store.reference, objs)
    stored = store.baselines() or []
    comparison = compare(front, stored, objs, rank=store.rank(), trials=trials)
    return Drawn(objs, front, points, hist, stored, comparison, data.baseline_points(stored, comparison, objs))


def run_figures(run_dir: str | Path, *, fill_costs: bool = True, say: Say = lambda _msg: None) -> dict[str, Any]:
    """The page's Plotly figures of a run by their ids (`params-stage`, `history`, ...)."""
    from search.report import page  # plotly: only when drawing

    d = drawn(RunStore.open(run_dir), fill_costs=fill_costs, say=say)
    return page.figures(d.points, d.history, d.baselines, d.objectives)


def write_report(run_dir: str | Path, formats: Sequence[str] = (), *, fill_costs: bool = True,
                 say: Say = lambda _msg: None) -> Path:
    """Write `run_dir/report.html` (and `report-<figure>.<fmt>` for each of `formats`); returns its path.

    `fill_costs` computes the exact params/FLOPs of trials whose record lacks them
    (errored, early-stopped) from the run's config, so that every trial is drawn.
    """
    from search.report import page  # plotly: only when drawing

    bad = [f for f in formats if f not in IMAGE_FORMATS]
    if bad:
        raise ValueError(f"unknown image format {bad[0]!r}; known: {', '.join(IMAGE_FORMATS)}")
    store = RunStore.open(run_dir)
    d = drawn(store, fill_costs=fill_costs, say=say)
    figs = page.figures(d.points, d.history, d.baselines, d.objectives)
    title = f"fusion-nas report: {store.config().get('name', store.run_dir.parent.name)} / {store.run_id}"
    oneshot = predicted_vs_trained(store.run_dir, store.trials(), d.objectives[0])  # None unless strategy oneshot
    html = page.render_html(title, d.points, d.history, data.summary(d.points, d.front),
                            store.config_path.read_text(encoding="utf-8"), figs, baselines=d.baselines,
                            comparison_line=summary_line(d.comparison) if d.stored else "",
                            extra=oneshot_html(oneshot, d.objectives[0]))
    path = store.inside(store.run_dir / "report.html")
    atomic_write(path, html)
    page.write_images(figs, store.run_dir, formats)
    return path


def missing_costs(store: RunStore, trials: Sequence[Mapping[str, Any]],
                  say: Say = lambda _msg: None) -> dict[str, tuple[float, float]]:
    """`{arch_id: (params_total, flops_total)}` of the trials whose record has no costs.

    Costs do not depend on weights, so untrained backbones of the run's config do; the
    data is read for its sample shapes. Best effort: when that fails, those trials are
    listed on the page as not drawn.
    """
    from spaces import ArchSpec

    need = {}
    for t in trials:
        m = t.get("metrics") or {}
        if data.finite(m.get("params_total")) is None or data.finite(m.get("flops_total")) is None:
            spec = ArchSpec.from_dict(t["spec"])
            need[spec.arch_id] = spec
    if not need:
        return {}
    try:
        return _costs(store, need.values())
    except Exception as err:  # a moved data file must not cost the user the whole report
        say(f"note: the costs of {len(need)} trial(s) are unknown ({type(err).__name__}: {err}); not drawn")
        return {}


def _costs(store: RunStore, specs: Any) -> dict[str, tuple[float, float]]:
    import torch

    from fusion_ops import build_backbone, candidate_cost
    from search.datasets import load_dataset
    from search.export import read_config
    from search.training.pretrain import mark_padded, resolve_backbone

    config = read_config(store.run_dir)
    dataset = load_dataset(config.data, config.path.parent)
    g = torch.Generator().manual_seed(0)
    backbones = {m: build_backbone(resolve_backbone(config.backbones, dataset, m), s, g) for m, s in dataset.shapes.items()}
    mark_padded(backbones, dataset)
    out = {}
    for spec in specs:
        try:
            c = candidate_cost(spec, backbones, dataset.num_classes)
        except ValueError:  # cannot be built: it has no cost to draw
            continue
        out[spec.arch_id] = (float(c["params_total"]), float(c["flops_total"]))
    return out
