"""The Python API, for notebooks and scripts: run a search, or open a finished run, as one object.

    from search import api
    result = api.search("experiments/configs/av_digits.yaml", num_samples=8)
    result.trials          # a pandas DataFrame, one row per trial
    result.front           # the Pareto front (DataFrame, most accurate first); result.knee: its knee
    result.figures()       # the report's Plotly figures, by name
    result.export("my_model")  # the knee (or pick=...), loadable by `fusion_ops.load_model`

`search` takes a config path or a dict (the YAML's content) and goes through the same
checks, run directory, Ray Tune search and report as `fusion-nas search`;
`load_run(run_dir)` opens a finished (or running) run into the same `SearchResult`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from search.config import Config, config_from_dict, load_config
from search.runstore.store import RunStore, check_run_name, front_from_trials
from spaces.yaml_errors import in_file

Say = Callable[[str], Any]


class SearchResult:
    """A run directory as Python objects: trials, front, knee, figures, export and report."""

    def __init__(self, run_dir: str | Path) -> None:
        self.store = RunStore.open(run_dir)

    @property
    def run_dir(self) -> Path:
        return self.store.run_dir

    def records(self) -> list[dict[str, Any]]:
        """The raw trial records (`trials.jsonl`), in the order they finished."""
        return self.store.trials()

    @property
    def trials(self) -> Any:
        """One row per trial: trial_id, status, seed, confirm, arch (described), stage, ops, then every metric."""
        import pandas as pd

        from search.engine.run import record_spec

        rows = []
        for t in self.records():
            spec = record_spec(t) if t.get("spec") is not None else None
            rows.append({"trial_id": t.get("trial_id"), "status": t.get("status"), "seed": t.get("seed"),
                         "confirm": bool(t.get("confirm")), "arch_id": t.get("arch_id"),
                         "arch": spec.describe() if spec else None, "stage": spec.stage if spec else None,
                         "ops": ",".join(c.op for c in spec.cells) if spec else None,
                         **(t.get("metrics") or {})})
        return pd.DataFrame(rows)

    def pareto(self) -> dict[str, Any]:
        """The front as `pareto.json` holds it (front, knee, hypervolume, reference)."""
        return front_from_trials(self.records(), self.store.reference)

    @property
    def front(self) -> Any:
        """The front's candidates (mean over their seeds), most accurate first, as a DataFrame."""
        import pandas as pd

        from search.engine.run import front_rows

        return pd.DataFrame(front_rows(self.pareto()))

    @property
    def knee(self) -> dict[str, Any] | None:
        """The knee of the front as a row of `front` (None for an empty front)."""
        rows = self.front
        picked = rows[rows["knee"]] if len(rows) else rows
        return None if picked.empty else picked.iloc[0].to_dict()

    def figures(self) -> dict[str, Any]:
        """The report's Plotly figures by name (accuracy vs params / FLOPs, history, breakdown)."""
        from search.baselines import compare
        from search.report import data
        from search.report import page as report_html
        from search.runstore.store import candidate_records

        trials, front = self.records(), self.pareto()
        points = data.trial_points(candidate_records(trials), front, {})
        hist = data.history([t for t in trials if not t.get("confirm")], self.store.reference)
        stored = self.store.baselines() or []
        return dict(report_html.figures(points, hist, data.baseline_points(stored, compare(front, stored))))

    def report(self, formats: tuple[str, ...] = (), say: Say = lambda _m: None) -> Path:
        """(Re)write `report.html` (and images in `formats`: png, svg); returns its path."""
        from search.report.write import write_report

        return write_report(self.run_dir, formats, say=say)

    def export(self, out: str | Path, pick: str = "knee", *, retrain: bool = False,
               say: Say = lambda _m: None) -> Path:
        """Train the picked trial again (knee, accuracy, smallest or a trial id) and save it to `out`."""
        from search.export import export_run

        export_run(self.run_dir, pick, out, retrain=retrain, say=say)
        return Path(out)

    def __repr__(self) -> str:
        return f"SearchResult({str(self.run_dir)!r})"


def load_run(run_dir: str | Path) -> SearchResult:
    """A finished (or running) run directory as a `SearchResult`."""
    return SearchResult(run_dir)


def make_config(config: str | Path | Mapping[str, Any], base_dir: str | Path | None = None,
                **search_overrides: Any) -> Config:
    """A validated `Config` from a YAML path or a dict (relative paths in a dict from `base_dir`,
    default the current folder); `search_overrides` replace `search:` keys (None: not given)."""
    overrides = {k: v for k, v in search_overrides.items() if v is not None}
    if isinstance(config, Mapping):
        source = Path(base_dir or Path.cwd()).resolve() / f"{config.get('name', 'run')}.yaml"
        with in_file("<config dict>"):
            return config_from_dict(dict(config), source, overrides)
    return load_config(config, overrides)


def search(config: str | Path | Mapping[str, Any], *, num_samples: int | None = None,
           strategy: str | None = None, seed: int | None = None, name: str | None = None,
           runs_dir: str | None = None, address: str | None = None, base_dir: str | Path | None = None,
           say: Say = print) -> SearchResult:
    """Run a search (as `fusion-nas search` does) and return its result; errors are `ConfigError`s."""
    from search.engine import run
    from search.engine.preflight import preflight

    cfg = make_config(config, base_dir, num_samples=num_samples, strategy=strategy, seed=seed,
                      runs_dir=runs_dir, address=address)
    if name is not None:
        cfg = dataclasses.replace(cfg, name=check_run_name(name, "name"))
    dataset = preflight(cfg)
    store = run.start_run(cfg)
    say(f"run {store.run_dir}")
    with store.locked():
        run.search(cfg, store, say=say, dataset=dataset)
    result = SearchResult(store.run_dir)
    try:
        result.report()
    except Exception as err:  # the trials are safe on disk; result.report() redoes it
        say(f"could not write the report ({type(err).__name__}: {err})")
    return result


__all__ = ["SearchResult", "load_run", "make_config", "search"]
