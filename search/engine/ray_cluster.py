"""Connecting to Ray: an embedded instance, or a cluster by address with bounded probes, a
watchdog that ends a search whose cluster head went away (with the resume hint), the node a
trial ran on, a worker node lost under a trial, and where Tune keeps an experiment
(`search.storage`)."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import ray

from search.baselines import counts_to_budget
from search.runstore.store import RunStore
from spaces import ConfigError

_AUTH_HINT = ("`ray start` (Ray >= 2.60) enables token auth: with an explicit address, set RAY_AUTH_MODE=token "
              "and give the cluster's token (~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH), "
              "or use address='auto' on the head node")


@contextlib.contextmanager
def ray_output_to(path: Path) -> Iterator[None]:
    """While the block runs, Ray's and Tune's own lines (the token-auth warning, "Started a local
    Ray instance", "Wrote the latest version of all result files ...") go to the log file `path`
    and only their errors to the terminal, between the product's lines; Tune's new console
    output (its "Configuration for experiment" box, "View detailed results here" and the
    TensorBoard hint, printed even at verbose=0) is off. All comes back afterwards. (Ray's
    `configure_logging` keeps these handlers: it only sets their format.)"""
    ray_logger = logging.getLogger("ray")
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setLevel(logging.INFO)
    errors = logging.StreamHandler(sys.stderr)
    errors.setLevel(logging.ERROR)
    saved = ray_logger.handlers[:], ray_logger.propagate, os.environ.get("RAY_AIR_NEW_OUTPUT")
    ray_logger.handlers[:] = [to_file, errors]
    ray_logger.propagate = False
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        ray_logger.handlers[:], ray_logger.propagate = saved[:2]
        if saved[2] is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved[2]
        to_file.close()


# Ray starts one idle worker per CPU for the first driver; Tune's trial actors never use them
# (each gets a fresh worker), so on 2 cores they only cost ~0.75 CPU s per Ray start
# (experiments/RESULTS.md, "Idle workers at Ray's start").
NO_PRESTART = ("RAY_prestart_worker_first_driver", "0")
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
        address = resolve_address(address)
        probe_address(address)
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as exc:
            raise ConnectionError(" ".join(f"{exc}. {_AUTH_HINT}".split())) from exc
    else:
        os.environ.setdefault(*NO_PRESTART)
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 log_to_driver=False)
    have = ray.cluster_resources()
    for unit, key, want in (("CPU", "cpus_per_trial", cpus_per_trial), ("GPU", "gpus_per_trial", gpus_per_trial)):
        if want > have.get(unit, 0):
            ray.shutdown()
            where = f"the cluster at {address}" if address else "the embedded Ray"
            raise ConfigError(f"search.{key}: {want:g} {unit}s per trial, but {where} has {have.get(unit, 0):g}")
    return True


def resolve_address(address: str) -> str:
    """`auto` made explicit, so that Ray never goes looking for a cluster by itself (it would
    take any Ray it finds running on this machine, someone else's too): the address in
    `RAY_ADDRESS`, else the head this machine's `ray start --head` recorded
    (`$RAY_TMPDIR/ray/ray_current_cluster`, /tmp by default); one line when there is neither.
    Any other address comes back as it is."""
    if address != "auto":
        return address
    given = os.environ.get("RAY_ADDRESS", "").strip()
    if given and given != "auto":
        return given
    recorded = Path(os.environ.get("RAY_TMPDIR") or "/tmp") / "ray" / "ray_current_cluster"
    try:
        head = recorded.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        head = ""
    if not head:
        raise ConnectionError(f"search.address: auto: RAY_ADDRESS is not set and no `ray start --head` cluster is "
                              f"recorded on this machine ({recorded}); give the head's host:port")
    return head


def probe_address(address: str) -> None:
    """Fail within seconds, with one line, where nothing answers at `address` (Ray itself
    retries for minutes), or where `ray start`'s token auth is on but no token is given."""
    from search.config import parse_address

    address = resolve_address(address)
    host_port = parse_address(address)
    if host_port is None:  # unreachable: `auto` is resolved
        raise ConnectionError(f"search.address: cannot resolve {address!r}")
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
    does, or when `auto` leads nowhere any more."""
    from search.config import parse_address

    try:
        host_port = parse_address(resolve_address(address)) if address else None
    except ConnectionError:
        return False
    if host_port is None:
        return False
    try:
        socket.create_connection(host_port, timeout=CONNECT_TIMEOUT_S).close()
    except OSError:
        return True
    return False


def how_far(store: RunStore, num_samples: int) -> str:
    """`N of M trials recorded; resume with ...`: the end of a line that stops a search."""
    done = sum(counts_to_budget(r) for r in store.trials())
    return f"{done} of {num_samples} trials recorded; resume with fusion-nas search --resume {store.run_dir}"


def lost_head(store: RunStore, address: str, num_samples: int, detail: str = "") -> HeadLost:
    """The one line that ends a search whose cluster went away: how far it got, how to resume."""
    why = f" ({detail.splitlines()[0][:200]})" if detail.strip() else ""
    return HeadLost(f"search.address: the Ray cluster at {address} is gone{why}; {how_far(store, num_samples)}")


HEAD_CHECK_S = 1.0  # how often a search checks that its Ray head still answers (2 misses end it: before Ray core gives up on its own)
HURRY_S = 0.002  # how often once a signal came (it may have reached Ray's processes too: one miss ends it)


def watch_head(last_words: Callable[[], tuple[str, int]], signalled: threading.Event | None = None) -> threading.Event:
    """A daemon thread that ends this process once the Ray head (the GCS this driver is connected
    to: a cluster's, or the embedded Ray's) stops answering twice in a row: it prints the line
    of `last_words()` to stderr and exits with its code. Ray's driver would end only after 60 s,
    with a native message and exit 1, and a Python exception cannot reach a driver blocked on
    the dead head. Every finished trial is already on disk.

    The embedded Ray goes when its processes are signalled from outside: a SIGTERM to the whole
    process group (a job scheduler's, `kill -- -PGID`) reaches them too, and Ray's core ends
    this driver (exit 1) soon after its raylet is gone. So once `signalled` is set (by the
    search's signal handler, as the signal arrives) the head is checked every `HURRY_S` instead of
    every `HEAD_CHECK_S`, and one refused connection is enough.
    Set the returned event to stop watching."""
    gcs = ray.get_runtime_context().gcs_address  # also where "auto" and ray:// lead
    host, _, port = gcs.rpartition(":")
    stop, misses = threading.Event(), 0
    woken = signalled or threading.Event()

    def watch() -> None:
        nonlocal misses
        while True:
            if woken.is_set():
                stop.wait(HURRY_S)
            else:
                woken.wait(HEAD_CHECK_S)  # returns at once when a signal comes
            if stop.is_set():
                return
            try:
                socket.create_connection((host, int(port)), timeout=HEAD_CHECK_S / 4 if woken.is_set() else HEAD_CHECK_S).close()
                misses = 0
            except OSError:
                misses += 1
            if misses >= (1 if woken.is_set() else 2) and not stop.is_set():
                line, code = last_words()
                print(f"\n{line}", file=sys.stderr, flush=True)
                os._exit(code)

    threading.Thread(target=watch, name="fusion-nas-head-watch", daemon=True).start()
    return stop


# ---- which node: a trial's, and one lost under a trial -------------------------------
def this_node() -> dict[str, str] | None:
    """`{"id", "ip"}` of the Ray node this process runs on when it is a Ray worker (a trial);
    None in a driver or outside Ray."""
    if not ray.is_initialized():
        return None
    ctx = ray.get_runtime_context()
    if ctx.worker.mode != ray.WORKER_MODE:
        return None
    return {"id": ctx.get_node_id(), "ip": ray.util.get_node_ip_address()}


_NODE_ID = re.compile(r"node[ _]?id:? ([0-9a-f]{56})\b", re.IGNORECASE)  # "... its node has died. Node Id: ..."
_ACTOR_ID = re.compile(r"\bactor(?: id:?)? ([0-9a-f]{32})\b", re.IGNORECASE)  # "The actor 0615... is unavailable"
NODE_CHECK_S = 2.0  # for a node's raylet to answer before it counts as lost


def lost_node(error_text: str) -> dict[str, str] | None:
    """`{"id", "ip"}` of the node a failed trial ran on, when that node is gone: dead in Ray's
    node table, or its raylet no longer answers (Ray marks a node dead only ~30 s later).
    None when the node lives on (a worker that died there: the candidate's own failure), or
    when the error does not say where the trial ran."""
    if not ray.is_initialized():
        return None
    node_id = _failed_node_id(error_text)
    try:
        node = next((n for n in ray.nodes() if n.get("NodeID") == node_id), None) if node_id else None
    except Exception:  # the head itself is gone: the head watchdog ends the search
        return None
    if node is None:
        return None
    ip, port = str(node.get("NodeManagerAddress", "")), int(node.get("NodeManagerPort") or 0)
    if node.get("Alive") and _answers(ip, port):
        return None
    return {"id": str(node_id), "ip": ip}


def lost_node_reason(node: dict[str, str], detail: str) -> str:
    """The one line of a trial lost with its node (`detail`: Ray's own reason)."""
    first = detail.strip().splitlines()[0].split(". ")[0][:200] if detail.strip() else "no detail"
    return f"node {node['ip']} ({node['id'][:8]}) was lost while the trial ran on it; a resume runs it again ({first})"


def _failed_node_id(text: str) -> str | None:
    found = _NODE_ID.search(text)
    if found:
        return found.group(1)
    actor = _ACTOR_ID.search(text)
    if actor is None:
        return None
    try:  # the GCS's actor table (no dashboard needed) still knows where a dead actor lived
        from ray._private import state

        return str(state.actors(actor.group(1))["Address"]["NodeID"]) or None
    except Exception:  # an actor the GCS has forgotten, or Ray's private table moved
        return None


def _answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=NODE_CHECK_S).close()
    except (OSError, ValueError):
        return False
    return True


# ---- where Tune keeps an experiment (search.storage) --------------------------------
STORAGE_NOTE = "storage.txt"  # in the run's ray/<experiment>/ when Tune's state lives elsewhere


def experiment_storage(store: RunStore, storage: str, name: str) -> str:
    """Tune's `storage_path` for experiment `name` of this run: the run's `ray/` by default;
    with `search.storage` (a shared filesystem path or an object store URI) a folder of it
    named after the run, and `ray/<name>/storage.txt` saying where the experiment went."""
    if not storage:
        return str(store.inside(store.ray_dir / name).parent)  # a ray/ or ray/<name> leading out is refused
    root = storage.rstrip("/") if "://" in storage else str(Path(storage).expanduser())
    where = f"{root}/{store.run_dir.parent.name}/{store.run_dir.name}"
    note = store.inside(store.ray_dir / name)
    note.mkdir(parents=True, exist_ok=True)
    (note / STORAGE_NOTE).write_text(f"{where}/{name}\n", encoding="utf-8")
    return where
