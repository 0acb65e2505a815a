"""One run's front under the old cost rule (every backbone a candidate reads, whole) and under
honest costs (only the blocks up to the deepest tap read), side by side, as a Markdown table.

Training does not change (candidates train on cached taps either way), so the same trials
are re-costed: "before" adds each read backbone's full params/FLOPs to the fusion part the
record holds, "after" is what the record holds (`candidate_cost` of the lean model).

    PYTHONPATH=. python experiments/costs_before_after.py RUN_DIR
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fusion_ops import build_backbone, count_flops, count_params, deepest_taps  # noqa: E402
from search import objectives, pareto  # noqa: E402
from search.datasets import load_dataset  # noqa: E402
from search.export import read_config  # noqa: E402
from search.report.data import human  # noqa: E402
from search.runstore.store import RunStore, candidate_records, on_front_candidate  # noqa: E402
from spaces import ArchSpec  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    args = ap.parse_args(argv)
    store = RunStore.open(args.run_dir)
    config = read_config(store.run_dir)
    data = load_dataset(config.data, config.path.parent)
    g = torch.Generator().manual_seed(0)
    full = {}
    for m, shape in data.shapes.items():
        b = build_backbone(config.backbones.backbone_for(m, shape), shape, g)
        full[m] = (count_params(b), count_flops(b, torch.zeros(1, *shape)))
    ok = [t for t in candidate_records(store.trials()) if on_front_candidate(t)]
    acc = [float(t["metrics"]["val_accuracy"]) for t in ok]
    after = [(t["metrics"]["params_total"], t["metrics"]["flops_total"]) for t in ok]
    before = []
    for t in ok:
        used = deepest_taps(ArchSpec.from_dict(t["spec"]))
        m = t["metrics"]
        before.append((m["params_fusion"] + sum(full[u][0] for u in used),
                       m["flops_fusion"] + sum(full[u][1] for u in used)))
    fronts = {}
    for name, costs in (("before", before), ("after", after)):
        p, f = zip(*costs, strict=True)
        fronts[name] = pareto.pareto_mask(objectives.objective_matrix(acc, p, f))
    print(f"{len(ok)} ok candidates of {store.run_dir}; front before: {int(fronts['before'].sum())}, "
          f"after: {int(fronts['after'].sum())}\n")
    print("| val acc | architecture | params before → after | FLOPs before → after | front before | front after |")
    print("|---|---|---|---|---|---|")
    rows = [i for i in np.argsort(acc)[::-1] if fronts["before"][i] or fronts["after"][i]]
    for i in rows:
        spec = ArchSpec.from_dict(ok[i]["spec"]).describe()
        print(f"| {acc[i]:.3f} | `{spec}` | {human(before[i][0])} → {human(after[i][0])} | "
              f"{human(before[i][1])} → {human(after[i][1])} | {'●' if fronts['before'][i] else ''} | "
              f"{'●' if fronts['after'][i] else ''} |")


if __name__ == "__main__":
    main()
