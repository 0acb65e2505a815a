"""Ray Tune adapter: run a plain search strategy as a Tune experiment, recording to a RunStore.

- `StrategySearcher` (search/engine/tune_searcher.py) wraps the strategy as a Tune `Searcher`.
- `run_search` trains candidates in function trials (`evaluate(spec, shared)`), a pack of
  one or more per trial (`search.pack`, `search.engine.packing`), appends every finished
  candidate to `trials.jsonl` from the driver the moment it ends, and rewrites
  `pareto.json`. A candidate that raises is one errored record.

Each candidate's report carries its index in the pack (`_candidate`) and its evaluate
metrics as JSON (Tune adds its own keys and flattens nested dicts, so the JSON keeps them
exact); the trial's last report carries `_final=True`. A single-candidate trial that ends
without its report was stopped by the scheduler: `early_stopped`. A worker that dies errs
the candidate it was training; the pack's later candidates are asked again.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import re
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from ray.tune.error import TuneError
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.stopper import Stopper

from search.baselines import counts_to_budget
from search.engine.balance import PLAN, fixed_asks
from search.engine.confirm import confirmation_todo
from search.engine.interrupt import Interrupts, resume_hint
from search.engine.packing import Pack, replay_lookahead
from search.engine.ray_cluster import (
    experiment_storage,
    head_gone,
    how_far,
    init_ray,
    lost_head,
    lost_node,
    lost_node_reason,
    ray_output_to,
    watch_head,
)
from search.engine.tune_searcher import (
    CANDIDATE,
    FINAL,
    METRIC,
    METRICS_JSON,
    StrategySearcher,
    pack_members,
    record_id,
    result_metrics,
)
from search.runstore.replay import replay
from search.runstore.store import RunStore, to_jsonable, utc_now
from spaces.spec import ArchSpec

log = logging.getLogger(__name__)

EXPERIMENT = "tune"  # Tune's experiment directory under `store.ray_dir`; a resume adds tune-1, tune-2, ...
Progress = Callable[[int, int, "float | None", int, float], None]
_PROGRESS: dict[str, Progress] = {}  # driver-side hooks by run dir: never pickled into Tune state


# ---- the trial ----------------------------------------------------------------------
def _accepts_report(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "report" or p.kind is p.VAR_KEYWORD for p in params)


def _report_epoch(epoch: int, val_accuracy: float) -> bool:
    """The per-epoch `report` given to `evaluate` (search.training.train's `Report`): an intermediate
    Tune result for the scheduler. Never asks to stop: a stopping scheduler ends the trial."""
    tune.report({"epoch": int(epoch), METRIC: float(val_accuracy), FINAL: False})
    return False


_WARM = False  # set once this worker process has paid its one-off costs (see `warm_up`)


def warm_up() -> None:
    """Pay a worker process's one-off costs before its first candidate, so that they never
    count in a candidate's seconds: the first backward pass and optimiser step, and the first
    FLOP count."""
    global _WARM
    if _WARM:
        return
    from fusion_ops import count_flops
    from search.training.adam import Adam

    layer = torch.nn.Linear(4, 2)
    optimiser = Adam(layer.parameters(), lr=1e-3)
    layer(torch.zeros(3, 4)).square().mean().backward()
    optimiser.step()
    count_flops(layer, torch.zeros(1, 4))
    _WARM = True


def _train_one(evaluate: Callable[..., dict], shared: Any, member: Mapping[str, Any],
               report: Callable[..., bool] | None) -> dict[str, Any]:
    """One candidate's metrics (an exception is its `errored` status: it must not end the pack)."""
    spec = ArchSpec.from_dict(member["spec"])
    start = time.perf_counter()
    kwargs: dict[str, Any] = {"report": report} if report is not None else {}
    if member.get("seed") is not None:  # a confirmation seed
        kwargs["seed"] = int(member["seed"])
    try:
        metrics = dict(evaluate(spec, shared, **kwargs))
    except Exception as exc:  # one bad candidate must not end the search
        metrics = {"status": "errored", "reason": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(limit=-8)}
    metrics.setdefault("status", "ok")
    metrics.setdefault("seconds", time.perf_counter() - start)
    metrics.setdefault("arch_id", spec.arch_id)
    return to_jsonable(metrics)


def make_trainable(evaluate: Callable[..., dict], shared: Any, cpus_per_trial: int = 1,
                   gpus_per_trial: float = 0.0, per_epoch: bool = True) -> Any:
    """The Tune function trainable: `evaluate(spec, shared)` for each candidate of the trial's pack,
    one after another, each candidate's metrics reported the moment it ends (`CANDIDATE` = its
    index; the last report has `FINAL`). `per_epoch`: also hand `evaluate` the per-epoch
    `report` (for a scheduler; each report is a round trip to the driver).
    `shared` goes to the object store once (`tune.with_parameters`). With `gpus_per_trial` > 0 Ray
    gives each trial that share of a GPU (and sets CUDA_VISIBLE_DEVICES to it)."""
    with_report = per_epoch and _accepts_report(evaluate)

    def fusion_trial(config: dict[str, Any], shared: Any = None) -> None:
        torch.set_num_threads(cpus_per_trial)  # concurrent trials must not fight over cores
        warm_up()
        members = pack_members(config)
        for k, member in enumerate(members):
            metrics = _train_one(evaluate, shared, member, _report_epoch if with_report else None)
            acc = metrics.get(METRIC)
            tune.report({METRIC: math.nan if acc is None else float(acc), "status": metrics["status"],
                         CANDIDATE: k, FINAL: k == len(members) - 1, METRICS_JSON: json.dumps(metrics)})

    return tune.with_resources(tune.with_parameters(fusion_trial, shared=shared), trial_resources(cpus_per_trial,
                                                                                                  gpus_per_trial))


def trial_resources(cpus_per_trial: int, gpus_per_trial: float = 0.0) -> dict[str, float]:
    """What Ray reserves for one trial: `{"cpu": ..}`, and `"gpu"` when trials get GPUs."""
    return {"cpu": cpus_per_trial, **({"gpu": gpus_per_trial} if gpus_per_trial > 0 else {})}


def concurrent_slots(resources: Mapping[str, float], cpus_per_trial: int, gpus_per_trial: float = 0.0) -> int:
    """How many trials fit in the cluster's `resources` at once (CPUs, and GPUs when trials take them)."""
    slots = resources.get("CPU", 1) // cpus_per_trial
    if gpus_per_trial > 0:
        slots = min(slots, resources.get("GPU", 0) // gpus_per_trial)
    return max(1, int(slots))


def trial_record(trial_id: str, config: Mapping[str, Any], result: Mapping[str, Any] | None,
                 error: str | None = None, pack: int = 1) -> dict[str, Any]:
    """The `trials.jsonl` line of a finished candidate (`config`: its own, one of a pack's;
    `pack`: the size of the pack it was trained in, kept when above 1)."""
    spec = ArchSpec.from_dict(config["spec"])
    result = result or {}
    metrics = None if error is not None else result_metrics(result)
    if error is not None:
        status, reason, metrics = "errored", error, {}
    elif metrics is None:
        epochs = int(result.get("training_iteration", 0))
        status, reason = "early_stopped", f"stopped by the scheduler after {epochs} epoch(s)"
        metrics = {METRIC: result.get(METRIC), "epochs": epochs}
    else:
        status, reason = str(metrics.get("status", "ok")), metrics.get("reason")
    seconds = metrics.get("seconds", result.get("time_total_s"))
    record = {"trial_id": trial_id, "spec": spec.to_dict(), "arch_id": spec.arch_id,
              "candidate_id": spec.candidate_id, "seed": config.get("seed", metrics.get("seed")), "metrics": metrics,
              "status": status, "reason": reason, "seconds": seconds, "finished_at": utc_now()}
    if pack > 1:
        record["pack"] = pack
    if config.get("confirm"):
        record["confirm"] = True
    return record


def _error_text(trial: Any) -> str:
    path = trial.error_file  # the driver's copy: storage may not have it yet
    return Path(path).read_text(errors="replace") if path and Path(path).exists() else str(trial.get_error() or "")


def _error_reason(trial: Any, text: str | None = None) -> str:
    """One line saying why Tune failed a trial (a dead worker, a lost node): the last
    `SomeError: ...` line of its error text, else its headline and the exit detail."""
    text = _error_text(trial) if text is None else text
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Failure #")]
    errors = [ln for ln in lines if re.fullmatch(r"[\w.]*(Error|Exception)", ln.split(":", 1)[0])]
    if errors or not lines:
        return errors[-1][:300] if errors else "the trial's worker failed"
    detail = re.search(r"Worker exit detail: ([^.]*\.)", text)
    return lines[0][:200] + (f" ({detail.group(1)})" if detail else "")


class StoreCallback(tune.Callback):
    """Driver side: append each finished candidate to the store at once (a trial reports each
    candidate of its pack as it ends), rewrite pareto.json, report progress. A candidate seen
    again after a resume keeps its first record."""

    def __init__(self, store: RunStore, total: int, interrupts: Interrupts | None = None) -> None:
        self.run_dir, self.total = str(store.run_dir), total
        self._records: dict[str, dict[str, Any]] | None = None
        self._interrupts = interrupts
        self._done: dict[str, set[int]] = {}  # Tune trial id -> the candidates of its pack recorded
        self._handle: RunStore | None = store  # one handle: it reads the run's settings once (`RunStore.rank`)

    def __getstate__(self) -> dict[str, Any]:  # pickled into Tune's state: no cache
        return {**self.__dict__, "_records": None, "_interrupts": None, "_done": {}, "_handle": None}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        k = result.get(CANDIDATE)
        if isinstance(k, int):
            self._record_candidate(trial, k, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        left = self._left(trial)
        if len(pack_members(trial.config)) == 1 and left and not self._cut_short(trial):
            self._record_candidate(trial, 0, trial.last_result)  # stopped early by the scheduler
        # a pack with candidates left was stopped by an interrupt: those are not recorded

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        left = self._left(trial)
        if left and not self._cut_short(trial):  # the running candidate; those after it are asked again
            text = _error_text(trial)
            self._record_candidate(trial, left[0], None, error=_error_reason(trial, text), lost=lost_node(text))

    def _left(self, trial: Any) -> list[int]:
        done = self._done.get(trial.trial_id, set())
        return [k for k in range(len(pack_members(trial.config))) if k not in done]

    def _record_candidate(self, trial: Any, k: int, result: Mapping[str, Any] | None, error: str | None = None,
                          lost: dict[str, str] | None = None) -> None:
        members = pack_members(trial.config)
        if k in self._done.setdefault(trial.trial_id, set()) or not 0 <= k < len(members):
            return
        self._done[trial.trial_id].add(k)
        record = trial_record(record_id(trial.trial_id, k, len(members)), members[k],
                              result if error is None else None, error, len(members))
        if lost is not None:  # not the candidate's fault: it does not count, and a resume runs it again
            record.update(lost_node=lost, reason=lost_node_reason(lost, record["reason"]))
        self._record(record)

    def _cut_short(self, trial: Any) -> bool:
        """A trial stopped (or killed: Ctrl-C reaches the workers too) by an interrupt before its
        final report: its unfinished candidates are not recorded, so that a resume runs them again."""
        return (self._interrupts is not None and self._interrupts.requested
                and not (trial.last_result or {}).get(FINAL))

    def _record(self, record: dict[str, Any]) -> None:
        store = self._handle = self._handle or RunStore(Path(self.run_dir))
        if self._records is None:
            self._records = {str(r["trial_id"]): r for r in store.trials()}
        old = self._records.get(record["trial_id"])
        if old is not None and old["status"] != "errored":
            return
        store.append_trial(record)
        self._records[record["trial_id"]] = record
        front = store.write_pareto(trials=self._records.values())  # the front of the records, and the answer
        hook = _PROGRESS.get(self.run_dir)
        n_confirm = sum(not counts_to_budget(r) and not r.get("lost_node")  # seeds and seeded baselines
                        for r in self._records.values())
        try:
            if hook is not None:  # confirmation seeds are counted apart from the candidates asked for
                hook(len(self._records) - n_confirm, self.total, front["best_val"], len(front["front"]),
                     front["hypervolume"], *((n_confirm,) if n_confirm else ()))
        except Exception:  # a broken progress display must not end the search
            log.exception("the progress hook failed")


def _warn_lost_nodes(lost: list[dict[str, Any]], store: RunStore, warn: Callable[[str], Any] | None) -> None:
    """The one line after a search that lost trials with a worker node: which, and how to run them again."""
    if not lost:
        return
    nodes = ", ".join(dict.fromkeys(f"{r['lost_node']['ip']} ({r['lost_node']['id'][:8]})" for r in lost))
    line = (f"{len(lost)} trial(s) were lost with node(s) {nodes} and are not counted; resume with "
            f"fusion-nas search --resume {store.run_dir} to run them again")
    (warn or log.warning)(line)


# ---- the search ---------------------------------------------------------------------
def _scheduler(scheduler: str | TrialScheduler | None, max_epochs: int) -> TrialScheduler | None:
    if scheduler is None or isinstance(scheduler, TrialScheduler):
        return scheduler
    if scheduler == "asha":  # the final report is one more iteration: at max_t=epochs ASHA would cut every trial
        return ASHAScheduler(metric=METRIC, mode="max", max_t=max_epochs + 1, grace_period=1, reduction_factor=2)
    raise ValueError(f"unknown scheduler {scheduler!r}; known: asha (or none)")


@contextlib.contextmanager
def _pending_trials(slots: int) -> Any:
    """Let Tune start `slots` trials at once (`TUNE_MAX_PENDING_TRIALS_PG`, unless the user set it).
    With a custom searcher Tune keeps one trial pending: the second worker started only once the
    first was running, 2.4-2.7 s later on 2 cores. `StrategySearcher` keeps at most `slots` + 1 live."""
    key = "TUNE_MAX_PENDING_TRIALS_PG"
    if key in os.environ:
        yield
        return
    os.environ[key] = str(max(slots, 1))
    try:
        yield
    finally:
        os.environ.pop(key, None)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"  # Tune's default spells out the whole config


def _experiment_name(store: RunStore) -> str:
    """A fresh Tune experiment per start or resume: an old one is never restored (nor read)."""
    names = [EXPERIMENT] + [f"{EXPERIMENT}-{n}" for n in range(1, 10_000)]
    return next(n for n in names if not (store.ray_dir / n).exists())


class _InterruptStopper(Stopper):
    """After an interrupt: ends each running trial at its next finished candidate (the rest of its
    pack is left to a resume), and the experiment once the running trials are done, or overdue."""

    def __init__(self, interrupts: Interrupts, searcher: StrategySearcher) -> None:
        self.interrupts, self.searcher = interrupts, searcher

    def __getstate__(self) -> dict[str, Any]:  # pickled into tuner.pkl: nothing of the run
        return {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.interrupts.requested and isinstance(result.get(CANDIDATE), int)

    def stop_all(self) -> bool:
        if not self.interrupts.requested:
            return False
        self.searcher.stopping = True
        return self.searcher.live == 0 or self.interrupts.overdue()


def _last_words(store: RunStore, address: str | None, num_samples: int,
                interrupts: Interrupts | None) -> tuple[str, int]:
    """What a search says, and its exit code, when the Ray under it goes away (`watch_head`)."""
    if interrupts is not None and interrupts.received is not None:  # the signal reached Ray's processes too
        return resume_hint(store), 128 + interrupts.received
    if address:
        return f"fusion-nas: error: {lost_head(store, address, num_samples)}", 2
    return (f"fusion-nas: error: the embedded Ray stopped (its processes were ended from outside); "
            f"{how_far(store, num_samples)}"), 2


def run_search(*, evaluate: Callable[..., dict], shared: Any, strategy: Any, num_samples: int, store: RunStore,
               cpus_per_trial: int = 1, gpus_per_trial: float = 0.0, max_concurrent: int | None = None,
               address: str | None = None,
               scheduler: str | TrialScheduler | None = None, resume: bool = False,
               progress: Progress | None = None, num_cpus: int | None = None,
               max_epochs: int = 100, confirm: int = 0, base_seed: int = 0,
               interrupts: Interrupts | None = None, warn: Callable[[str], Any] | None = None,
               storage: str = "", pack: Pack = 1) -> list[dict[str, Any]]:
    """Run `num_samples` candidates of `strategy`; returns the store's trial records.

    `evaluate(spec, shared)` returns the metrics dict of one candidate; under a scheduler,
    if it takes a `report` argument it gets `report(epoch, val_accuracy)` to call after each
    epoch, so that `scheduler="asha"` (with `max_t=max_epochs`) can stop it early.
    `pack` (N or "auto", `search.engine.packing`): how many candidates one Tune trial trains
    one after another; each is still its own record, told and shown the moment it ends.
    A scheduler stops single trials, so under one the packs are 1.
    `progress(done, total, best_val_accuracy, front_size, hypervolume)` runs after each
    candidate. `address` joins a running cluster instead of starting Ray here.

    `confirm=K` then trains every front candidate with seeds `base_seed + 1 .. + K` (see
    `StrategySearcher`); those trials come on top of `num_samples`.

    Resuming: `strategy` must be freshly built with the run's seed; the records of
    `trials.jsonl` are replayed into it (`search.runstore.replay`), and a new Tune experiment runs
    what is left, so that the run ends with `num_samples` strategy trials. Nothing of Tune's
    earlier state is read. `warn` gets a line about torn lines in the record.

    `interrupts` (installed by the caller): after its first signal no trial starts, the
    running ones get its grace period, the front is written, and `SearchInterrupted` is raised.
    A cluster joined by `address` that goes away ends the search with `HeadLost`, or, when
    the driver is stuck on the dead head, ends the process with that line and exit 2. A
    worker node that goes away costs its running trials: each is recorded `errored` with
    `lost_node` (not counted in the budget, run again by a resume), the search carries on
    on the other nodes, and `warn` gets the resume hint at the end.
    `storage`: Tune's `storage_path` (`search.storage`; "" = the run's `ray/`).
    """
    sched = _scheduler(scheduler, max_epochs)
    if sched is not None:
        pack = 1
    records = store.trials(warn=warn)
    lost_before = [r for r in records if r.get("lost_node")]
    remaining = num_samples - sum(counts_to_budget(r) for r in records)
    if remaining <= 0 and not confirmation_todo(records, store.reference, confirm, base_seed,
                                                objs=getattr(strategy, "objectives", None)):
        store.write_pareto()  # nothing left to run: no Ray at all
        return records
    with ray_output_to(store.inside(store.ray_log_path)):  # Ray's lines in the run, not the terminal
        started = init_ray(address, num_cpus, cpus_per_trial, gpus_per_trial)
        watching = watch_head(lambda: _last_words(store, address, num_samples, interrupts),
                              None if interrupts is None else interrupts.signalled)
        if progress is not None:
            _PROGRESS[str(store.run_dir)] = progress
        try:
            slots = max_concurrent or concurrent_slots(ray.cluster_resources(), cpus_per_trial, gpus_per_trial)
            ahead = min(PLAN, fixed_asks(strategy))  # the searcher asks that far ahead too
            rerun = replay(strategy, records, replay_lookahead(records, slots, pack) + ahead) if records else []
            searcher = StrategySearcher(strategy, max_trials=num_samples, store=store, confirm=confirm,
                                        base_seed=base_seed, recorded=records, rerun=rerun, pack=pack, slots=slots,
                                        max_live=slots + 1)  # Tune may start `slots` at once: see _pending_trials
            # an upper bound: the searcher ends the experiment when the front is confirmed
            bound = max(remaining, 0) + confirm * num_samples + 1
            if interrupts is not None:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours: stop, record, hint at --resume
            name = _experiment_name(store)
            tuner = tune.Tuner(
                make_trainable(evaluate, shared, cpus_per_trial, gpus_per_trial, per_epoch=sched is not None),
                tune_config=tune.TuneConfig(search_alg=searcher, num_samples=bound, reuse_actors=True,
                                            max_concurrent_trials=max_concurrent,
                                            scheduler=sched,
                                            trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(
                    storage_path=experiment_storage(store, storage, name), name=name, verbose=0,
                    callbacks=[StoreCallback(store, num_samples, interrupts)],
                    stop=None if interrupts is None else _InterruptStopper(interrupts, searcher),
                    failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
            )
            with interrupts.soft() if interrupts is not None else contextlib.nullcontext(), _pending_trials(slots):
                try:
                    tuner.fit()
                except TuneError as exc:  # every finished trial is already in trials.jsonl
                    if address and head_gone(address):
                        raise lost_head(store, address, num_samples, str(exc)) from None
                    log.warning("Ray Tune ended with an error: %s", exc)
                except Exception as exc:  # Ray's own errors when the cluster goes away
                    if address and head_gone(address):
                        raise lost_head(store, address, num_samples, f"{type(exc).__name__}: {exc}") from None
                    raise
                if address and head_gone(address):
                    raise lost_head(store, address, num_samples)
                store.write_pareto()
            after = store.trials()
            _warn_lost_nodes([r for r in after if r.get("lost_node")][len(lost_before):], store, warn)
            return after
        finally:
            if watching is not None:
                watching.set()
            _PROGRESS.pop(str(store.run_dir), None)
            if started:
                ray.shutdown()

