"""Resuming a search from its record: `trials.jsonl` replayed into a freshly seeded strategy.

Nothing of a run's state is pickled: a resume builds the strategy anew with the run's
seed and replays the record, in the order the trials finished (the order they were told):
before each recorded trial is told, the strategy is asked until it proposes that
candidate, at most `lookahead` specs ahead (the trials that can run at once). A seeded
strategy whose asks do not depend on results (random, grid) proposes exactly what it did
before; one that learns (mfas, nsga2) may diverge where trials finished in another order,
and a recorded candidate it does not propose is adopted (`Strategy.adopt`) and told all
the same. Specs it proposed that the record does not hold were lost with the driver:
they are run first. Confirmation trials are never told to the strategy, nor trials lost
with their Ray node (`lost_node`): those count as never recorded, so they run again.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from search.runstore.trial_metrics import objectives_of
from spaces.spec import ArchSpec

log = logging.getLogger(__name__)


def replay(strategy: Any, records: Iterable[Mapping[str, Any]], lookahead: int = 8) -> list[ArchSpec]:
    """Tell `strategy` every recorded strategy trial (confirmation trials are skipped); returns
    the specs it proposed that no record holds, to be run first, in the order asked."""
    unmatched: list[ArchSpec] = []
    for record in records:
        if record.get("confirm"):
            continue
        if record.get("lost_node"):  # its spec, asked again, waits among the unmatched to run again
            lookahead += 1
            continue
        try:
            spec = ArchSpec.from_dict(record["spec"])
        except Exception as exc:  # a damaged record is not a candidate to tell
            log.warning("recorded trial %s has no usable spec (%s): not replayed", record.get("trial_id"), exc)
            continue
        while not _has(unmatched, spec) and len(unmatched) < lookahead and not strategy.done:
            asked = strategy.ask()
            if asked is None:  # it waits for results before proposing more
                break
            unmatched.append(asked)
        if _has(unmatched, spec):
            unmatched.pop(next(i for i, s in enumerate(unmatched) if s.candidate_id == spec.candidate_id))
        elif hasattr(strategy, "adopt"):
            strategy.adopt(spec)
        metrics = dict(record.get("metrics") or {}) | {"status": record.get("status")}
        try:
            strategy.tell(spec, objectives_of(metrics, getattr(strategy, "objectives", None)))
        except Exception as exc:  # a strategy may refuse a spec it never asked
            log.warning("the strategy did not take recorded trial %s: %s", record.get("trial_id"), exc)
    return unmatched


def _has(specs: list[ArchSpec], spec: ArchSpec) -> bool:
    return any(s.candidate_id == spec.candidate_id for s in specs)
