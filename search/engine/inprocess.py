"""A search without Ray: the strategy's candidates trained one after another in this process.

The same ask/tell, the same confirmation of the front over seeds and the same records
as `search.engine.tune.run_search`, minus the parallelism: for benchmarks (how good is what the
search finds, how much does Ray cost) and for quick runs in a notebook.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from search.engine.confirm import confirmation_todo
from search.runstore.replay import replay
from search.runstore.store import to_jsonable, utc_now
from search.runstore.trial_metrics import objectives_of
from spaces.spec import ArchSpec

Evaluate = Callable[..., dict[str, Any]]  # evaluate(spec, seed=None) -> metrics


def record(n: int, spec: ArchSpec, metrics: dict[str, Any], seed: int, confirm: bool) -> dict[str, Any]:
    """A `trials.jsonl`-shaped record of one finished candidate (trial ids `p00000`, ...)."""
    out = {"trial_id": f"p{n:05d}", "spec": spec.to_dict(), "arch_id": spec.arch_id,
           "candidate_id": spec.candidate_id, "seed": seed, "metrics": to_jsonable(metrics),
           "status": str(metrics.get("status", "ok")), "reason": metrics.get("reason"),
           "seconds": metrics.get("seconds"), "finished_at": utc_now()}
    if confirm:
        out["confirm"] = True
    return out


def search_in_process(evaluate: Evaluate, strategy: Any, num_samples: int, *, confirm: int = 0,
                      base_seed: int = 0, reference: Sequence[float] | None = None,
                      on_record: Callable[[dict[str, Any]], Any] | None = None,
                      checkpoints: Sequence[int] = (),
                      on_checkpoint: Callable[[int, list[dict[str, Any]]], Any] | None = None,
                      seeded: Sequence[dict[str, Any]] = (),
                      ) -> list[dict[str, Any]]:
    """`num_samples` of the strategy's candidates, then the seeds `base_seed + 1 .. + confirm`
    of every front candidate (as `StrategySearcher` does); returns the records in order.

    At each of `checkpoints` (a number of the strategy's candidates) the front so far is
    confirmed too and `on_checkpoint(n, records)` sees the run as it would have ended there;
    the search then goes on (its confirmation seeds count again later: none is trained twice).
    `seeded`: records the run holds before its search (`search.baselines.seed_trials`), told to
    the strategy first as a run's replay tells them; they do not count towards `num_samples`.
    """
    records: list[dict[str, Any]] = list(seeded)
    pending = replay(strategy, seeded, lookahead=1) if seeded else []  # asked in the replay: run first

    def run(spec: ArchSpec, seed: int | None, is_confirm: bool) -> dict[str, Any]:
        start = time.perf_counter()
        metrics = dict(evaluate(spec, seed=seed))
        metrics.setdefault("seconds", time.perf_counter() - start)
        r = record(len(records), spec, metrics, base_seed if seed is None else seed, is_confirm)
        records.append(r)
        if on_record is not None:
            on_record(r)
        return metrics

    def confirm_front() -> None:
        while todo := confirmation_todo(records, reference, confirm, base_seed,
                                        objs=getattr(strategy, "objectives", None)):
            spec, seed = todo[0]
            run(spec, seed, True)

    asked = 0
    while asked < num_samples and not strategy.done:
        spec = pending.pop(0) if pending else strategy.ask()
        strategy.tell(spec, objectives_of(run(spec, None, False), getattr(strategy, "objectives", None)))
        asked += 1
        if asked in checkpoints and asked < num_samples:
            confirm_front()
            if on_checkpoint is not None:
                on_checkpoint(asked, list(records))
    confirm_front()
    return records
