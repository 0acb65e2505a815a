"""Connecting to Ray: an embedded instance, or a cluster by address with bounded probes, and
a watchdog that ends a search whose cluster head went away (with the resume hint)."""
from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import ray

from search.baselines import counts_to_budget
from search.runstore.store import RunStore
from spaces import ConfigError

_AUTH_HINT = ("`ray start` (Ray >= 2.60) enables token auth: with an explicit address, set RAY_AUTH_MODE=token "
              "and give the cluster's token (~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH), "
              "or use address='auto' on the head node")


CONNECT_TIMEOUT_S = 5.0  # for the head's port to answer before ray.init is tried at all


def init_ray(address: str | None, num_cpus: int | None, cpus_per_trial: int = 1, gpus_per_trial: float = 0.0) -> bool:
    """Connect to `address`, or start an embedded Ray; True if this call started it.

    The embedded Ray is `address="local"`: it never attaches to a `ray start` cluster on
    this machine by accident. An address is probed first (a bounded TCP connect), and a
    cluster with fewer CPUs (or GPUs) than one trial asks for is refused, since that trial would wait forever.
    """
    if ray.is_initialized():
        return False
    if address:
        probe_address(address)
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as exc:
            raise ConnectionError(" ".join(f"{exc}. {_AUTH_HINT}".split())) from exc
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 log_to_driver=False)
    have = ray.cluster_resources()
    for unit, key, want in (("CPU", "cpus_per_trial", cpus_per_trial), ("GPU", "gpus_per_trial", gpus_per_trial)):
        if want > have.get(unit, 0):
            ray.shutdown()
            where = f"the cluster at {address}" if address else "the embedded Ray"
            raise ConfigError(f"search.{key}: {want:g} {unit}s per trial, but {where} has {have.get(unit, 0):g}")
    return True


def probe_address(address: str) -> None:
    """Fail within seconds, with one line, where nothing answers at `address` (Ray itself
    retries for minutes), or where `ray start`'s token auth is on but no token is given."""
    from search.config import parse_address

    host_port = parse_address(address)
    if host_port is None:  # "auto": Ray finds the cluster of this machine itself
        return
    host, port = host_port
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise ConnectionError(f"search.address: nothing answers at {host}:{port} within {CONNECT_TIMEOUT_S:g} s "
                              f"({err.strerror or err}); is the cluster's head up (`ray start --head --port={port}`)?"
                              ) from None
    has_token = any(os.environ.get(k) for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")) or \
        (Path.home() / ".ray" / "auth_token").is_file()
    if "RAY_AUTH_MODE" not in os.environ and not has_token:
        raise ConnectionError(f"search.address: {address}: no Ray auth token is set. {_AUTH_HINT} "
                              "(RAY_AUTH_MODE=disabled for a cluster started without auth)")


class HeadLost(ConnectionError):
    """The Ray cluster joined by address went away during the search."""


def head_gone(address: str | None) -> bool:
    """True when the head at `address` no longer answers (a bounded TCP connect); False when it
    does, or when the address does not say where the head is ("auto")."""
    from search.config import parse_address

    host_port = parse_address(address) if address else None
    if host_port is None:
        return False
    try:
        socket.create_connection(host_port, timeout=CONNECT_TIMEOUT_S).close()
    except OSError:
        return True
    return False


def lost_head(store: RunStore, address: str, num_samples: int, detail: str = "") -> HeadLost:
    """The one line that ends a search whose cluster went away: how far it got, how to resume."""
    done = sum(counts_to_budget(r) for r in store.trials())
    why = f" ({detail.splitlines()[0][:200]})" if detail.strip() else ""
    return HeadLost(f"search.address: the Ray cluster at {address} is gone{why}; {done} of {num_samples} "
                    f"trials recorded; resume with fusion-nas search --resume {store.run_dir}")


HEAD_CHECK_S = 2.0  # how often a search on a cluster checks that its head still answers


def watch_head(address: str, message: Callable[[], str]) -> threading.Event:
    """A daemon thread that ends this process with exit 2 and `message()` once the cluster's head
    stops answering twice in a row. Ray's driver would end it only after 60 s, with a native
    message and exit 1, and a Python exception cannot reach a driver blocked on the dead head.
    Every finished trial is already on disk. Set the returned event to stop watching."""
    gcs = ray.get_runtime_context().gcs_address  # also where "auto" and ray:// lead
    host, _, port = gcs.rpartition(":")
    stop, misses = threading.Event(), 0

    def watch() -> None:
        nonlocal misses
        while not stop.wait(HEAD_CHECK_S):
            try:
                socket.create_connection((host, int(port)), timeout=HEAD_CHECK_S).close()
                misses = 0
            except OSError:
                misses += 1
            if misses >= 2 and not stop.is_set():
                print(f"\nfusion-nas: error: {message()}", file=sys.stderr, flush=True)
                os._exit(2)

    threading.Thread(target=watch, name="fusion-nas-head-watch", daemon=True).start()
    return stop
