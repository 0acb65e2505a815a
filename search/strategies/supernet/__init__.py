"""One-shot search: a weight-sharing supernet (`fusion_ops.supernet`) trained fairly on the tap
cache (`train`), the paths that train it (`paths`); the strategy is `search.strategies.oneshot`."""
