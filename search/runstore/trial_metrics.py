"""What a trial reports and what a strategy is told of it (no Ray import: replay and the
in-process search use it too)."""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from search import objectives as _objectives
from search.objectives import Objective

log = logging.getLogger(__name__)

METRIC = "val_accuracy"
FINAL = "_final"  # set in a trial's last report only
METRICS_JSON = "_metrics_json"  # the evaluate metrics, exact (Tune adds keys, flattens dicts)
CANDIDATE = "_candidate"  # in the report of a finished candidate: its index in the trial's pack


def result_metrics(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The evaluate metrics of the candidate whose end `result` reports (a trial reports each
    candidate of its pack as it finishes; the last report has `FINAL`); None for any other
    report (a per-epoch one, or the last of a trial stopped early)."""
    return json.loads(result[METRICS_JSON]) if METRICS_JSON in result else None


def objectives_of(metrics: Mapping[str, Any] | None, objs: Sequence[Objective] | None = None) -> dict[str, float] | None:
    """What a strategy is told: `{objective name: value}` of an ok trial (`objs`: the strategy's
    objectives, default the classic accuracy, params, FLOPs), else None."""
    objs = objs or _objectives.get(_objectives.CLASSIC)
    out = _objectives.told(metrics, objs)
    if out is None and metrics and metrics.get("status", "ok") == "ok":
        log.warning("an ok trial without %s: told as failed", ", ".join(o.key for o in objs))
    return out
