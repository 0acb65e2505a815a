"""The run directory: what a trial records, how a run keeps it, how a resume reads it back.

- `store`: `RunStore` (config.yaml, trials.jsonl, pareto.json, ...; crash-safe writes) and
  the front of a run's trials;
- `trial_metrics`: what a trial reports and what a strategy is told of it;
- `replay`: a resume: `trials.jsonl` replayed into a freshly seeded strategy.
"""
