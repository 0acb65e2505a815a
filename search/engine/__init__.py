"""One search, end to end: `run.search` takes a checked config to a filled run directory.

- `run`: the once-per-run work (data, backbones, tap cache), then the trials;
- `preflight`: the checks made before anything is written or allocated;
- `tune`, `tune_searcher`, `ray_cluster`: the Ray Tune adapter, the strategy as a Tune
  `Searcher`, and connecting to Ray (the only modules that import Ray);
- `inprocess`: the same search without Ray, one trial after another;
- `confirm`: which front candidates still need their confirmation seeds;
- `packing`: how many candidates one Ray trial trains (`search.pack`);
- `interrupt`: Ctrl-C and SIGTERM during a search.
"""
