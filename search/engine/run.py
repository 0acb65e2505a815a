"""One search, end to end: config -> data -> pretrained backbones -> tap cache -> Ray Tune.

`prepare` does the once-per-run work (backbones come from the disk cache after the
first run); `search` runs the trials and leaves everything in a run directory.
"""
from __future__ import annotations

import os
import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from fusion_ops import Backbone, count_flops, count_params, deepest_taps
from fusion_ops.head_cost import HeadCosts
from search import objectives
from search.baselines import seed_trials
from search.config import Config, config_from_dict
from search.datasets import DataError, Dataset, load_dataset
from search.datasets.common import seed_of
from search.objectives import Objective
from search.runstore.store import RunStore
from search.training.baselines_fit import ensure_baselines, seeds_of
from search.training.device import resolve_device
from search.training.pretrain import DEFAULT_CACHE_DIR, pretrain_backbones
from search.training.taps import TapCache, holdout_rows
from search.training.train import TrainConfig, evaluate_candidate, evaluate_with_backbones
from spaces import ArchSpec, ConfigError, SearchSpace
from spaces.registry import IMPORT_PATHS, load_plugins
from spaces.spec import make_tap
from spaces.yaml_errors import in_file

Say = Callable[[str], None]


@dataclass(frozen=True)
class Prepared:
    """What every trial of a run shares."""

    config: Config
    dataset: Dataset
    backbones: dict[str, Backbone]
    backbone_info: dict[str, dict[str, Any]]
    taps: TapCache


@dataclass(frozen=True)
class TrialContext:
    """The data a trial needs, put once into Ray's object store (plain, picklable). A disk tap
    cache travels as its folder's path: each worker maps the files again, so the workers of a
    node share one copy in the page cache (`search.training.taps`)."""

    taps: TapCache
    backbones: dict[str, Backbone]
    train: TrainConfig
    dataset: Dataset | None = None  # only when backbones train end to end (freeze: false)
    plugins: tuple[str, ...] = ()  # imported in the trial's process before it builds anything
    latency: bool = False  # measure each candidate's latency (~20 forward passes): when it is an objective


def prepare(config: Config, say: Say = print, dataset: Dataset | None = None) -> Prepared:
    """Load the data (unless given), pretrain (or load) the backbones, and compute the tap cache."""
    dataset = dataset if dataset is not None else load_dataset(config.data, config.path.parent)
    if dataset.meta.get("notice"):
        say(str(dataset.meta["notice"]))
    missing = sorted(set(dataset.modalities) - set(config.space.modalities))
    if missing:
        raise ConfigError(f"{config.path}: backbones.modalities: the data has modality {missing[0]!r} "
                          f"with no backbone; it has {', '.join(dataset.modalities)}")
    backbones, info = pretrain_backbones(dataset, config.backbones, config.data, progress=say)
    rows = holdout_rows(dataset.y_val, dataset.task, config.search.holdout, seed_of(config.data))
    device = resolve_device(config.backbones.pretrain.device, say, "backbones.pretrain.device")
    taps = tap_cache(config, dataset, backbones, info, rows, say, device)
    if len(rows):
        say(f"holdout: {len(rows)} of the {len(dataset.y_val)} val samples are kept out of the search; "
            "they only choose the answer among the front (search.holdout)")
    return Prepared(config, dataset, backbones, info, taps)


def tap_root(config: Config) -> Path | None:
    """The folder of the run's disk tap caches (absolute: workers may start elsewhere), or None for
    a cache in memory: `search.tap_cache: memory`, or `auto` with `backbones.cache_dir: null` and
    no `search.tap_dir` (no disk caches asked for)."""
    s = config.search
    if s.tap_cache == "memory" or (s.tap_cache == "auto" and not s.tap_dir and config.backbones.cache_dir is None):
        return None
    if s.tap_dir:
        return Path(s.tap_dir).expanduser().absolute()
    return Path(config.backbones.cache_dir or DEFAULT_CACHE_DIR).expanduser().absolute().parent / "taps"


def tap_cache(config: Config, dataset: Dataset, backbones: Mapping[str, Backbone], info: Mapping[str, Any],
              rows: Any, say: Say = print, device: Any = "cpu") -> TapCache:
    """The run's tap cache: the taps its space offers, the holdout rows `rows` moved out of val,
    memory-mapped from a disk cache (reused when one with the same key is there) or in memory;
    the backbones run on `device` to make it."""
    s = config.search
    offered = [make_tap(m, d) for m, ds in config.space.depth_map.items() for d in ds]
    root = tap_root(config)
    start = time.perf_counter()
    if root is None:
        taps = TapCache.from_backbones(dataset, backbones, only=offered, holdout=rows, dtype=s.tap_dtype, say=say,
                                       device=device)
    else:
        with in_file(config.path):  # a folder that cannot be made or written names the setting
            try:
                taps = TapCache.cached(root, dataset, backbones, {m: str(i["key"]) for m, i in info.items()},
                                       only=offered, holdout=rows, dtype=s.tap_dtype, say=say, device=device)
            except OSError as err:
                raise ConfigError(f"search.tap_dir: cannot write the tap cache in {root}: {err.strerror or err}") \
                    from None
    where = "in memory" if taps.directory is None else f"in {taps.directory}"
    say(f"tap cache: {len(taps.tap_names)} taps, {taps.nbytes / 2**20:.1f} MiB {s.tap_dtype} {where} "
        f"({time.perf_counter() - start:.1f} s)")
    if taps.directory is not None and s.address:
        say(f"tap cache: every node of the cluster must see {taps.directory} (search.tap_dir on a shared "
            "filesystem), or set search.tap_cache: memory")
    return taps


def trial_context(prepared: Prepared, latency: bool = False) -> TrialContext:
    """What each trial needs (`latency`: the run's objectives hold it, see `objectives.measures_latency`)."""
    frozen = prepared.config.backbones.freeze
    return TrialContext(prepared.taps, prepared.backbones, trial_train(prepared.config),
                        None if frozen else prepared.dataset, prepared.config.plugins, latency)


def trial_train(config: Config) -> TrainConfig:
    """`train:` as the run's trials train: `device: auto` means the CPU when Ray gives trials no
    GPU (`search.gpus_per_trial: 0`), so the driver's baselines and an export train where trials did."""
    if config.train.device == "auto" and not config.search.gpus_per_trial:
        return replace(config.train, device="cpu")
    return config.train


def evaluate_trial(spec: ArchSpec, ctx: TrialContext, report: Callable[[int, float], bool] | None = None,
                   seed: int | None = None) -> dict:
    """Train and score one candidate inside a Ray trial (a module-level function: picklable);
    `seed` replaces the run's training seed (a confirmation trial). Inside Ray the metrics
    name the node that trained it (`node`: its Ray node id and IP)."""
    from search.engine.ray_cluster import this_node

    load_plugins(ctx.plugins)  # a Ray worker is a fresh process: plugin operators register here too
    if ctx.dataset is not None:
        metrics = evaluate_with_backbones(spec, ctx.dataset, ctx.backbones, ctx.train, freeze=False, seed=seed,
                                          latency=ctx.latency)
    else:
        metrics = evaluate_candidate(spec, ctx.taps, ctx.train, backbones=ctx.backbones, report=report, seed=seed,
                                     latency=ctx.latency)
    node = this_node()
    return metrics if node is None else {**metrics, "node": node}


def cost_function(prepared: Prepared) -> Callable[[ArchSpec], tuple[int, int]]:
    """Exact (params_total, flops_total) of a spec, known before training (for strategies).

    Equal to `candidate_cost`'s totals; each backbone cut at each depth (`Backbone.lean`:
    only the blocks up to the deepest tap read run) is counted once up front, and the fusion
    part is summed from per-cell counts (`fusion_ops.head_cost.HeadCosts`: each distinct
    cell built and counted once), so a spec costs microseconds once its cells have been seen
    (mfas costs up to 512 candidates per batch while the workers wait).
    """
    backbone_cost = {(m, d): cost_of_backbone(b.lean(d)) for m, b in prepared.backbones.items() for d in b.depths}
    heads = HeadCosts(prepared.taps.tap_shapes, prepared.taps.num_classes, flat=prepared.taps.flat_taps())
    cache: dict[str, tuple[int, int]] = {}

    def cost(spec: ArchSpec) -> tuple[int, int]:
        if spec.arch_id not in cache:
            params, flops = heads(spec)
            runs = deepest_taps(spec).items()
            cache[spec.arch_id] = (params + sum(backbone_cost[md][0] for md in runs),
                                   flops + sum(backbone_cost[md][1] for md in runs))
        return cache[spec.arch_id]

    return cost


def cost_of_backbone(backbone: Backbone) -> tuple[int, int]:
    """`(params, FLOPs per sample)` of a (lean) backbone, counted on one zero input."""
    return count_params(backbone), count_flops(backbone, torch.zeros(1, *backbone.input_shape))


def data_bounds(objs: Sequence[Objective], dataset: Dataset) -> list[Objective]:
    """`objs`, a minimised metric with no fixed bound (MAE, RMSE, log loss) bounded by what the
    constant answer scores on val: the train mean (regression; outputs are standardised, so 0)
    or the train class frequencies (classes). A candidate no better than that adds no volume."""
    from search.training.tasks import get_task

    task = get_task(dataset.task, dataset.target_scale)
    y = torch.tensor(dataset.y_val)
    if dataset.task == "regression":
        constant = torch.zeros(len(y), dataset.num_classes)
    elif dataset.task == "multilabel":
        p = torch.tensor(dataset.y_train, dtype=torch.float64).mean(0).clamp(1e-6, 1 - 1e-6)  # a copy: the labels may be read-only
        constant = torch.log(p / (1 - p)).expand(len(y), -1)
    else:
        freq = torch.bincount(torch.tensor(dataset.y_train), minlength=dataset.num_classes).double() + 1.0
        constant = torch.log(freq / freq.sum()).expand(len(y), -1)
    out = []
    for o in objs:
        if o.kind == "metric" and o.bound is None:
            with warnings.catch_warnings():  # a constant has no Pearson r: NaN, not a warning
                warnings.simplefilter("ignore", RuntimeWarning)
                value = task.metrics(constant, y).get(o.name)
            o = replace(o, bound=float(value)) if value is not None and value > 0 else o
        out.append(o)
    return out


def reference_point(space: SearchSpace, cost: Callable[[ArchSpec], tuple[int, int]], seed: int,
                    n: int = 64, objs: Sequence[Objective] | None = None) -> list[float]:
    """A fixed hypervolume reference for a run, known before any training: each metric's and
    measured cost's `bound` and, per cost known before training, the decade above 10x the
    largest of `n` sampled specs' exact costs (`objs`: the run's; default the classic three)."""
    objs = objs or objectives.get(objectives.CLASSIC)
    rng = random.Random(seed)
    costs = [objectives.costs_of(cost(space.sample(rng))) for _ in range(n)]
    return objectives.reference({k: [c[k] for c in costs] for k in costs[0]}, objs).tolist()


def resolved_config(store: RunStore, trust_code: bool = False) -> Config:
    """The config a run was started with (as stored in its directory). A run may come from
    someone else: code it names (plugins, backbone factories) is imported only with `trust_code`."""
    raw = dict(store.config())
    source = raw.pop("source", store.config_path)
    with in_file(store.config_path):
        if not isinstance(source, str | Path) or not str(source) or "\0" in str(source):
            raise ConfigError(f"source: expected the path of the original config, got {source!r}")
        try:
            return config_from_dict(raw, Path(source), trust_code=trust_code, run_dir=store.run_dir)
        except DataError as err:
            raise ConfigError(str(err)) from None


def start_run(config: Config) -> RunStore:
    """A fresh run directory holding the resolved config (and where it came from)."""
    root = Path(config.search.runs_dir).expanduser()
    if not root.is_absolute():
        root = Path.cwd() / root
    with in_file(config.path):
        return RunStore.create(root, config.name, {**config.to_dict(), "source": str(config.path.resolve())})


def run_objectives(store: RunStore, config: Config, dataset: Dataset) -> tuple[Objective, ...]:
    """The run's objectives: those of `objectives.json` when resuming, else resolved from the
    config and the data's task, and written there before the first trial."""
    if (store.run_dir / objectives.FILE).is_file():
        return store.objectives()
    task = getattr(dataset, "task", "classification")
    with in_file(config.path):
        objs = objectives.resolve(task, config.search.metric, config.search.objectives)
    store.write_json(objectives.FILE, {"task": task, "objectives": [o.name for o in objs]})
    return objs


def search(config: Config, store: RunStore, *, resume: bool = False, say: Say = print,
           progress: Callable[..., None] | None = None, dataset: Dataset | None = None,
           interrupts: Any = None, warn: Say | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the search of `config` into `store`; returns the trial records.
    `dataset`: the config's data, when already loaded (by `search.engine.preflight`); `interrupts`
    and `warn`: see `search.engine.tune.run_search`. A resume rebuilds the strategy from the run's seed
    and replays `trials.jsonl` into it."""
    from search.engine.tune import run_search
    from search.strategies import StrategyContext, make_strategy

    prepared = prepare(config, say, dataset)
    s = config.search
    objs = run_objectives(store, config, prepared.dataset)
    latency = objectives.measures_latency(objs)  # timed by the trials and the baselines that join them, or by none
    baselines = ensure_baselines(store, prepared.dataset, prepared.backbones, prepared.taps, trial_train(config),
                                 panel=s.baselines, n_seeds=seeds_of(s), latency=latency, say=say)
    seed_baselines(store, baselines, config.space, say)
    cost = cost_function(prepared)
    if store.reference is None:
        bounded = data_bounds(objs, prepared.dataset)
        store.write_json("reference.json", {"reference": reference_point(config.space, cost, s.seed, objs=bounded),
                                            "objectives": objectives.describe(objs)["minimised"]})
    context = StrategyContext(prepared.taps, config.train, store.run_dir, say)  # for strategies that train (oneshot)
    strategy = make_strategy(s.strategy, config.space, seed=s.seed, budget=s.num_samples, cost_fn=cost,
                             objectives=objs, context=context, **s.options)
    share_import_paths()
    return run_search(
        evaluate=evaluate_trial, shared=trial_context(prepared, latency), strategy=strategy,
        num_samples=s.num_samples, store=store, cpus_per_trial=s.cpus_per_trial, gpus_per_trial=s.gpus_per_trial,
        max_concurrent=s.max_concurrent or None, address=s.address or None,
        scheduler=None if s.scheduler == "none" else s.scheduler, resume=resume,
        progress=progress, max_epochs=config.train.epochs, confirm=s.confirm, base_seed=config.train.seed,
        interrupts=interrupts, warn=warn, storage=s.storage, pack=s.pack,
    )


def seed_baselines(store: RunStore, baselines: Any, space: SearchSpace, say: Say = print) -> None:
    """Write the baselines that are candidates of `space` into `trials.jsonl` as trials of the run
    (`search.baselines.seed_trials`; once: a resume finds them there)."""
    have = {str(t.get("trial_id")) for t in store.trials()}
    new = [r for r in seed_trials(baselines, space) if r["trial_id"] not in have]
    for record in new:
        store.append_trial(record)
    if new:
        names = ", ".join(dict.fromkeys(r["baseline"] for r in new))
        say(f"baselines in the space join the search as trained candidates: {names}")


def share_import_paths() -> None:
    """Put the folders plugins and factories were imported from on `PYTHONPATH`, so that the
    processes an embedded Ray starts (which unpickle user modules) can import them too.
    (On an existing cluster, install the plugin package on every node instead.)"""
    paths = [p for p in IMPORT_PATHS if p not in os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    if paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])


def front_rows(front: Mapping[str, Any], objs: Sequence[Objective] | None = None) -> list[dict[str, Any]]:
    """The front's candidates as table rows (mean and spread over their seeds), best by the run's
    metric first (`objs`: the run's objectives; default accuracy, params, FLOPs); `extra` holds
    the other cost objectives (latency)."""
    objs = objs or objectives.get(objectives.CLASSIC)
    metric = objs[0]
    test_key = "test_" + metric.name
    rows = []
    for f in front.get("front", []):
        m = f["metrics"]
        rows.append({"trial": f["trial_id"], "val": m[metric.key], "test": _number(m.get(test_key)),
                     "val_std": m.get(f"{metric.key}_std", m.get("val_std", 0.0)),
                     "test_std": m.get(f"{test_key}_std", m.get("test_std", 0.0)),
                     "n_seeds": m.get("n_seeds", 1), "params": m["params_total"], "flops": m["flops_total"],
                     "extra": {o.name: m.get(o.key) for o in objs[1:] if o.name not in ("params", "flops")},
                     "knee": f["trial_id"] == front.get("knee"), "unstable": m.get("unstable"),
                     "arch": record_spec(f).describe()})
    return sorted(rows, key=lambda r: -r["val"] if metric.mode == "max" else r["val"])


def record_spec(record: Mapping[str, Any]) -> ArchSpec:
    """The architecture of a trial record; a ConfigError naming the trial and key if it has none."""
    try:
        return ArchSpec.from_dict(record["spec"])
    except Exception as err:  # missing, wrong types, unknown stage: all mean a damaged record
        detail = "missing" if record.get("spec") is None else f"not an architecture ({type(err).__name__}: {err})"
        raise ConfigError(f"trial {record.get('trial_id')!r}: spec: {detail}") from None


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else float("nan")
