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
os.environ.setdefault("RAY_prestart_worker_first_driver", "0")  # as the product's embedded Ray (ray_cluster)


_SHARED: dict[str, dict[str, str | None]] = {}  # the environment saved while the shared Ray runs


def _start_shared_ray() -> None:
    import ray

    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "RAY_AUTH_MODE")}
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, saved["PYTHONPATH"]) if p)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    _SHARED["env"] = saved


def _stop_shared_ray() -> None:
    import ray

    saved = _SHARED.pop("env", None)
    if saved is None:
        return
    ray.shutdown()
    for k, v in saved.items():  # ray.init sets RAY_AUTH_MODE
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def ray_local():
    """A small embedded Ray shared by the tests that ask for it, on this pytest worker: started
    at the first, kept for the next (a Ray start costs ~4 CPU s). A search run in-process finds
    it initialised and uses it instead of starting its own (`search.engine.ray_cluster.init_ray`).
    Workers import `tests` through PYTHONPATH; a search that imports plugins from a folder of
    its own, or joins a cluster, needs its own Ray: `_own_ray` stops the shared one before any
    test that does not ask for it."""
    import ray

    if "env" not in _SHARED or not ray.is_initialized():
        _stop_shared_ray()
        _start_shared_ray()
    yield


@pytest.fixture(autouse=True)
def _own_ray(request):
    if "ray_local" not in request.fixturenames:
        _stop_shared_ray()
    yield


def pytest_sessionfinish(session, exitstatus):
    _stop_shared_ray()


# Measured the slowest first (pytest-xdist hands work out in collection order): a long module or
# test started last would leave the other worker idle at the end.
SLOW_FIRST = ("test_tune.py", "test_pack.py", "test_tasks.py", "test_resume.py", "test_search_e2e.py",
              "test_cluster.py", "test_oneshot.py", "test_bench_throughput.py", "test_wheel.py",
              "test_search_new_ops.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
