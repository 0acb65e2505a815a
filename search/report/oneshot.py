"""The one-shot strategy's part of the report: its predictions (`RUN/oneshot.json`) against the
stand-alone results of the same candidates (`trials.jsonl`), as data and as a small table."""
from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from search.objectives import Objective
from search.runstore.store import candidate_records

FILE = "oneshot.json"


def predicted_vs_trained(run_dir: Path, trials: Sequence[Mapping[str, Any]],
                         metric: Objective) -> dict[str, Any] | None:
    """`{"rows": [{arch, order, predicted, trained}], "tau": Kendall tau-b or None, "supernet": ...}`
    for every trained candidate the strategy predicted (None: the run has no predictions);
    `order` is the place in the predicted queue, None for an ask next to the real front."""
    path = run_dir / FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        predicted = {p["arch_id"]: p for p in saved["predictions"]}
        # an ask next to the real front has no place in the queue (even if the queue holds it)
        predicted.update({p["arch_id"]: {**p, "order": None} for p in saved.get("local", [])})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    rows = []
    for t in candidate_records(trials):  # one per candidate, confirmation seeds averaged
        p = predicted.get(str(t.get("arch_id")))
        value = (t.get("metrics") or {}).get(metric.key)
        if p is not None and t.get("status") == "ok" and isinstance(value, int | float) and math.isfinite(value):
            rows.append({"arch": p["arch"], "order": p["order"], "predicted": float(p["predicted"]),
                         "trained": float(value)})
    rows.sort(key=lambda r: (r["order"] is None, r["order"] or 0))
    tau = None
    if len(rows) >= 3:
        from scipy.stats import kendalltau  # ~0.7 s to import: only for a one-shot run, never for `show`

        tau = float(kendalltau([r["predicted"] for r in rows], [r["trained"] for r in rows])[0])
        tau = None if math.isnan(tau) else tau
    return {"rows": rows, "tau": tau, "supernet": saved.get("supernet", {}), "ranking": saved.get("ranking", {})}


def oneshot_html(data: Mapping[str, Any] | None, metric: Objective) -> str:
    """The section of the page (empty without predictions)."""
    if not data:
        return ""
    net, rank = data["supernet"], data["ranking"]
    tau = "-" if data["tau"] is None else f"{data['tau']:.2f}"
    body = "".join(f"<tr><td>{'near front' if r['order'] is None else r['order']}</td>"
                   f"<td>{r['predicted']:.4f}</td><td>{r['trained']:.4f}</td>"
                   f"<td>{html.escape(r['arch'])}</td></tr>" for r in data["rows"])
    return (f"<h2>One-shot: predicted vs stand-alone {html.escape(metric.label)}</h2>"
            f"<p id='oneshot-summary'>Supernet: {net.get('steps', '?')} steps in {net.get('seconds', 0):.1f} s; "
            f"{rank.get('scored', '?')} sub-networks scored with inherited weights ({rank.get('mode', '?')}). "
            f"Kendall tau between predicted and stand-alone over the {len(data['rows'])} trained: {tau}.</p>"
            "<table id='oneshot-table' class='sortable'><thead><tr><th data-kind='num'>asked</th>"
            "<th data-kind='num'>predicted</th><th data-kind='num'>stand-alone</th><th data-kind='text'>architecture"
            f"</th></tr></thead><tbody>{body}</tbody></table>")
