"""The Python API, for notebooks and scripts: run a search, or open a finished run, as one object.

    from search import api
    result = api.search("experiments/configs/av_digits.yaml", num_samples=8)
    result.trials          # a pandas DataFrame, one row per trial
    result.front           # the Pareto front (DataFrame, most accurate first); result.knee: its knee
    result.figures()       # the report's Plotly figures, by name
    result.export("my_model")  # the knee (or pick=...), loadable by `fusion_ops.load_model`

`search` takes a config path or a dict (the YAML's content) and runs the checks, the run
directory, the Ray Tune search and the report; `load_run(run_dir)` opens a finished (or
running) run into the same `SearchResult`, and `resume(run_dir)` finishes an interrupted one.
The `fusion-nas` command (`search.cli`) is a thin layer over these functions.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.config import Config, config_from_dict, load_config
from search.objectives import Objective
from search.runstore.store import RunStore, check_run_name, front_from_trials
from spaces.yaml_errors import in_file

if TYPE_CHECKING:
    from search.datasets import Dataset
    from search.engine.interrupt import Interrupts

Say = Callable[[str], Any]
Progress = Callable[..., None]  # called after each trial: see `search.engine.tune.run_search`


class SearchResult:
    """A run directory as Python objects: trials, front, knee, figures, export and report."""

    def __init__(self, run_dir: str | Path, trust_code: bool = False) -> None:
        self.store = RunStore.open(run_dir)
        # a run may come from someone else: `export` and `resume` import the code its config
        # names (plugins, backbone factories) only with consent; `search` trusts the user's own config
        self.trust_code = trust_code

    @property
    def run_dir(self) -> Path:
        return self.store.run_dir

    @property
    def objectives(self) -> tuple[Objective, ...]:
        """The run's objectives, its metric first (accuracy, params, FLOPs unless it chose others)."""
        return self.store.objectives()

    def records(self, warn: Say | None = None) -> list[dict[str, Any]]:
        """The raw trial records (`trials.jsonl`), in the order they finished; `warn` hears
        of lines a crash tore (they are skipped)."""
        return self.store.trials(warn=warn)

    @property
    def trials(self) -> Any:
        """One row per trial: trial_id, status, seed, confirm, arch (described), stage, ops, then every metric."""
        import pandas as pd

        from search.engine.run import record_spec

        rows = []
        for t in self.records():
            spec = record_spec(t) if t.get("spec") is not None else None
            rows.append({"trial_id": t.get("trial_id"), "status": t.get("status"), "seed": t.get("seed"),
                         "confirm": bool(t.get("confirm")), "baseline": t.get("baseline"),
                         "arch_id": t.get("arch_id"),
                         "arch": spec.describe() if spec else None, "stage": spec.stage if spec else None,
                         "ops": ",".join(c.op for c in spec.cells) if spec else None,
                         **(t.get("metrics") or {})})
        return pd.DataFrame(rows)

    def pareto(self, records: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """The front over the run's objectives as `pareto.json` holds it (front, knee,
        hypervolume, reference): of `records` when given, else of every recorded trial."""
        return front_from_trials(self.records() if records is None else records, self.store.reference,
                                 self.objectives)

    @property
    def front(self) -> Any:
        """The front's candidates (mean over their seeds), most accurate first, as a DataFrame."""
        import pandas as pd

        from search.engine.run import front_rows

        return pd.DataFrame(front_rows(self.pareto(), self.objectives))

    @property
    def knee(self) -> dict[str, Any] | None:
        """The knee of the front as a row of `front` (None for an empty front)."""
        rows = self.front
        picked = rows[rows["knee"]] if len(rows) else rows
        return None if picked.empty else picked.iloc[0].to_dict()

    def figures(self) -> dict[str, Any]:
        """The report's Plotly figures by name (accuracy vs params / FLOPs, history, breakdown)."""
        from search.report.write import run_figures

        return run_figures(self.run_dir)

    def report(self, formats: tuple[str, ...] = (), say: Say = lambda _m: None) -> Path:
        """(Re)write `report.html` (and images in `formats`: png, svg); returns its path."""
        from search.report.write import write_report

        return write_report(self.run_dir, formats, say=say)

    def export(self, out: str | Path, pick: str = "knee", *, retrain: bool = False,
               say: Say = lambda _m: None, max_params: int | None = None, max_flops: int | None = None,
               max_latency_ms: float | None = None, formats: Sequence[str] = ("native",)) -> Path:
        """Train the picked trial again (knee, accuracy, smallest or a trial id; knee and accuracy
        within the `max_*` bounds, among the confirmed candidates) and save it to `out`, with
        `formats` (onnx, torchscript) beside the native files; `pick="front"`: every front member."""
        from search.bounded_pick import Bounds
        from search.export import export_front, export_run

        if pick == "front":
            export_front(self.run_dir, out, say=say, trust_code=self.trust_code, formats=formats)
        else:
            export_run(self.run_dir, pick, out, retrain=retrain, say=say, trust_code=self.trust_code,
                       bounds=Bounds(max_params, max_flops, max_latency_ms), formats=formats)
        return Path(out)

    def resume(self, *, address: str | None = None, say: Say = print, progress: Progress | None = None,
               warn: Say | None = None, interrupts: Interrupts | None = None, report: bool = True) -> SearchResult:
        """Finish this run with the settings it was started with (only the Ray `address` may
        change): the strategy is rebuilt from the run's seed and `trials.jsonl` replayed into
        it. Raises `RunInUse` while another process searches in the run; the other
        arguments are `search`'s."""
        from search.config import SearchSettings
        from search.engine import run
        from search.engine.preflight import preflight

        if interrupts is not None:
            interrupts.run_dir = self.run_dir
        with self.store.locked():  # before anything else: a second process stops here, at once
            cfg = run.resolved_config(self.store, self.trust_code)
            if address is not None:
                cfg = dataclasses.replace(cfg, search=SearchSettings.from_dict({**cfg.search.to_dict(),
                                                                                 "address": address}))
            dataset = preflight(cfg, writes=False)  # a head that is gone fails first, before data and backbones
            say(f"resuming {self.run_dir}")
            _run_trials(cfg, self.store, dataset, resume=True, say=say, progress=progress, warn=warn,
                        interrupts=interrupts)
        if report:
            _report(self, say)
        return self

    def __repr__(self) -> str:
        return f"SearchResult({str(self.run_dir)!r})"


def load_run(run_dir: str | Path, trust_code: bool = False) -> SearchResult:
    """A finished (or running) run directory as a `SearchResult`; its `export` and `resume`
    import the code its config names (plugins, backbone factories) only with `trust_code`."""
    return SearchResult(run_dir, trust_code)


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
           say: Say = print, progress: Progress | None = None, warn: Say | None = None,
           interrupts: Interrupts | None = None, report: bool = True) -> SearchResult:
    """Run a search and return its result; a mistake in the config is a `ConfigError`.

    `progress` is called after each trial (the CLI's live line), `warn` hears of damaged
    records, and `interrupts`, a `search.engine.interrupt.Interrupts` already installed,
    turns Ctrl-C and SIGTERM into a stop that lets running trials finish: `SearchInterrupted`
    is raised with its `run_dir` set. `report=False` leaves `report.html` to the caller."""
    from search.engine import run
    from search.engine.preflight import preflight

    cfg = make_config(config, base_dir, num_samples=num_samples, strategy=strategy, seed=seed,
                      runs_dir=runs_dir, address=address)
    if name is not None:
        cfg = dataclasses.replace(cfg, name=check_run_name(name, "name"))
    dataset = preflight(cfg)  # data, backbones and size errors come before the run directory exists
    store = run.start_run(cfg)
    if interrupts is not None:
        interrupts.run_dir = store.run_dir  # from now on a signal ends with the resume hint
    say(f"run {store.run_dir}")
    with store.locked():
        _run_trials(cfg, store, dataset, resume=False, say=say, progress=progress, warn=warn,
                    interrupts=interrupts)
    result = SearchResult(store.run_dir, trust_code=True)  # the user's own config: its code already ran
    if report:
        _report(result, say)
    return result


def resume(run_dir: str | Path, *, trust_code: bool = False, **kw: Any) -> SearchResult:
    """Finish an interrupted run (see `SearchResult.resume` for the keywords; `trust_code`: `load_run`)."""
    return load_run(run_dir, trust_code).resume(**kw)


def _run_trials(cfg: Config, store: RunStore, dataset: Dataset, *, resume: bool, say: Say,
                progress: Progress | None, warn: Say | None, interrupts: Interrupts | None) -> None:
    """The trials of a checked config, in its locked run directory."""
    from search.engine import run

    s = cfg.search
    say(f"{s.strategy} search: {s.num_samples} candidates from {cfg.space.size():,} architectures, "
        f"{s.cpus_per_trial} CPU{f' and {s.gpus_per_trial:g} GPU' if s.gpus_per_trial else ''} per trial on "
        f"{s.address or 'an embedded local Ray'}")
    run.search(cfg, store, resume=resume, say=say, progress=progress, dataset=dataset,
               interrupts=interrupts, warn=warn)  # a SearchInterrupted carries the run directory


def _report(result: SearchResult, say: Say) -> None:
    try:
        result.report()
    except Exception as err:  # the trials are safe on disk; result.report() redoes it
        say(f"could not write the report ({type(err).__name__}: {err})")


__all__ = ["SearchResult", "load_run", "make_config", "resume", "search"]
