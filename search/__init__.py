"""How candidates are found, trained, compared, reported, exported.

Read it in this order:
- `api`: the Python API (a search, or a finished run, as one object); `cli/` is the
  `fusion-nas` command over it;
- `config`: the run configuration (one YAML file, validated at load time);
- `datasets/`, `strategies/`: the registries of data loaders and search strategies;
- `training/`: scoring one candidate (backbones, tap cache, training loop, tasks);
- `engine/`: one search end to end (preflight, Ray Tune, confirmation seeds, Ctrl-C);
- `runstore/`: the run directory (trials.jsonl, pareto.json, resume);
- `objectives`, `pareto`, `baselines`: what a front is made of and compared with;
- `report/`: report.html; `export`: a trial as a model that loads in one line.
"""
