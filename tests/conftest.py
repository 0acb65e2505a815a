from __future__ import annotations

import os

# Before numpy/torch load: BLAS thread pools fighting over 2 shared cores make small fits 100x slower.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# Tests share 2 cores with whatever else runs: keep torch single-threaded and deterministic.
torch.set_num_threads(1)
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="module")
def ray_local():
    """One small embedded Ray for the module's tests, started at the first that asks for it; a
    search run in-process finds it initialised and uses it instead of starting its own
    (`search.engine.ray_cluster.init_ray`), so a module of searches pays for one Ray start.
    Workers import `tests` through PYTHONPATH (a search that imports plugins from a folder of its
    own needs its own Ray). The environment is put back afterwards (ray.init sets RAY_AUTH_MODE)."""
    import ray

    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "RAY_AUTH_MODE")}
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, saved["PYTHONPATH"]) if p)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# Measured the slowest first (pytest-xdist hands work out in collection order): a long module or
# test started last would leave the other worker idle at the end.
SLOW_FIRST = ("test_tune.py", "test_pack.py", "test_tasks.py", "test_resume.py", "test_search_e2e.py",
              "test_cluster.py", "test_oneshot.py", "test_bench_throughput.py", "test_wheel.py",
              "test_search_new_ops.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
