from __future__ import annotations

import functools
import os
import sys

# Before numpy/torch load: BLAS thread pools fighting over 2 shared cores make small fits 100x slower.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# Tests share 2 cores with whatever else runs: keep torch single-threaded and deterministic.
torch.set_num_threads(1)
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_prestart_worker_first_driver", "0")  # as the product's embedded Ray (ray_cluster)


_SHARED: dict[str, dict[str, str | None]] = {}  # "env": as before the shared Ray; "ray_env": as it set it


def _set_env(values: dict[str, str | None]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


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
    set_aside = _SHARED.pop("ray_env", None) is not None
    if saved is None:
        return
    ray.shutdown()
    if not set_aside:  # else the environment is as before already, or as the test has made it since
        _set_env(saved)  # ray.init sets RAY_AUTH_MODE


def _ensure_shared_ray() -> None:
    """The shared Ray up, with the environment it runs in (set aside while a test that did not
    ask for it ran; if that test changed the environment, a new one starts from it, as before)."""
    import ray

    saved = _SHARED.get("env")
    if "ray_env" in _SHARED and saved is not None and any(os.environ.get(k) != v for k, v in saved.items()):
        _stop_shared_ray()
    if "env" not in _SHARED or not ray.is_initialized():
        _stop_shared_ray()
        _start_shared_ray()
    elif "ray_env" in _SHARED:
        _set_env(_SHARED.pop("ray_env"))


_REAL: dict[str, Any] = {}  # ray.init and ray.is_initialized while the guard below is on


def _in_finalizer() -> bool:
    """Whether a `__del__` asks (a Tune placement group of an earlier search, collected now): it
    cleans up after the shared Ray and must not stop it in the middle of whatever runs."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _stop_first(name: str):
    real = _REAL[name]

    @functools.wraps(real)
    def guarded(*args, **kwargs):
        if "env" in _SHARED and not _in_finalizer():
            _stop_shared_ray()
        return real(*args, **kwargs)

    return guarded


def _set_aside_shared_ray() -> None:
    """While a test that did not ask for the shared Ray runs, it stays up (a Ray start and stop
    cost ~4 s) but out of the way: the environment is as before it started, and the first
    `ray.init` or `ray.is_initialized` in this process (every way in to Ray goes through one of
    them: `init_ray`, `this_node`, Tune, `ray.remote`/`get`/`put` via Ray's auto-init) stops it
    first, so the test finds no Ray, as if it had been stopped before the test. A test that must
    not run beside it at all is marked `no_shared_ray`."""
    import ray

    _guard_off()
    if "ray_env" not in _SHARED:
        _SHARED["ray_env"] = {k: os.environ.get(k) for k in _SHARED["env"]}
        _set_env(_SHARED["env"])
    for name in ("init", "is_initialized"):
        _REAL[name] = getattr(ray, name)
        setattr(ray, name, _stop_first(name))


def _guard_off() -> None:
    if _REAL:
        import ray

        for name, real in _REAL.items():
            setattr(ray, name, real)
        _REAL.clear()


@pytest.fixture(scope="module")
def ray_local():
    """A small embedded Ray shared by the tests that ask for it, on this pytest worker: started
    at the first, kept for the next (a Ray start costs ~4 CPU s), across the tests between that
    do not ask for it as long as they leave Ray alone (`_set_aside_shared_ray`). A search run
    in-process finds it initialised and uses it instead of starting its own
    (`search.engine.ray_cluster.init_ray`). Workers import `tests` through PYTHONPATH; a search
    that imports plugins from a folder of its own, or joins a cluster, needs its own Ray: a test
    that does not ask for this one finds none."""
    _ensure_shared_ray()
    yield


def pytest_configure(config):
    config.addinivalue_line("markers", "no_shared_ray: stop the shared Ray before the test, not only at its first "
                                       "touch of Ray (it forks, or looks at this process's children)")
    # pytest-xdist's loadscope hands out the modules with the most tests first unless told not to:
    # the long modules of few tests would come last. SLOW_FIRST below decides instead.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before any fixture of the test (a module-scoped one may run a search on the shared Ray)."""
    if "ray_local" in item.fixturenames:
        _ensure_shared_ray()
    elif item.get_closest_marker("no_shared_ray"):
        _stop_shared_ray()
    elif "env" in _SHARED:
        _set_aside_shared_ray()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    _guard_off()


def pytest_sessionfinish(session, exitstatus):
    _guard_off()
    _stop_shared_ray()


# Measured the slowest first (pytest-xdist hands work out in collection order, see pytest_configure):
# a long module started last would leave the other worker idle at the end; the many short ones
# (the rest, in file order) fill the gaps.
SLOW_FIRST = ("test_cluster.py", "test_resume.py", "test_pack.py", "test_tune.py", "test_oneshot.py",
              "test_strategies.py", "test_id_search.py", "test_search_e2e.py", "test_tasks.py", "test_taps_disk.py",
              "test_bench_search.py", "test_wheel.py", "test_search_new_ops.py", "test_report_browser.py",
              "test_plugins.py", "test_bench_ray_start.py", "test_train.py", "test_api.py", "test_bench_gpu.py",
              "test_seeding.py", "test_bench_quality.py", "test_bench_large.py", "test_bench_throughput.py",
              "test_baselines.py", "test_twins.py", "test_bench_ops.py", "test_device.py", "test_head_cost.py",
              "test_bench_costing.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
