"""What a trial reports and what a strategy is told of it (no Ray import: replay and the
in-process search use it too)."""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

METRIC = "val_accuracy"
FINAL = "_final"  # set in a trial's last report only
METRICS_JSON = "_metrics_json"  # the evaluate metrics, exact (Tune adds keys, flattens dicts)


def result_metrics(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The evaluate metrics in a trial's final result (None if it never reported one)."""
    return json.loads(result[METRICS_JSON]) if result.get(FINAL) else None


def objectives_of(metrics: Mapping[str, Any] | None) -> dict[str, float] | None:
    """What a strategy is told: `{"accuracy", "params", "flops"}` of an ok trial, else None."""
    keys = {"accuracy": METRIC, "params": "params_total", "flops": "flops_total"}
    if not metrics or metrics.get("status", "ok") != "ok":
        return None
    if any(metrics.get(k) is None for k in keys.values()):
        log.warning("an ok trial without %s: told as failed", ", ".join(keys.values()))
        return None
    return {name: float(metrics[k]) for name, k in keys.items()}
