from __future__ import annotations

import os

import torch

# Tests share 2 cores with whatever else runs: keep torch single-threaded and deterministic.
torch.set_num_threads(1)
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
