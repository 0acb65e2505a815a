from __future__ import annotations

import os

# Before numpy/torch load: BLAS thread pools fighting over 2 shared cores make small fits 100x slower.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402

# Tests share 2 cores with whatever else runs: keep torch single-threaded and deterministic.
torch.set_num_threads(1)
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
