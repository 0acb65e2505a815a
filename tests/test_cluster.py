"""Many nodes: a Ray cluster of two nodes on this machine (two `ray start` processes, each with
its own temp dir and one CPU), a real search across both, a driver killed and its search
resumed on the cluster, a worker node killed under a running trial, the head killed under a
search, and the form of `search.storage`. The tests share one cluster while it is as the next
needs (in this order: whole, whole, losing its worker node, the head alone and killed).

`ray.cluster_utils.Cluster` is not used: its driver hangs for minutes retrying the GCS at the
machine's interface address (DESIGN.md, "Two nodes on one machine"). Drivers run in
subprocesses, since token auth is read when Ray is imported. Every process a node starts
carries an environment marker of that node, so the test stops exactly those by pid, and nothing else on the machine.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from search.baselines import counts_to_budget
from search.config import SearchSettings, load_config
from search.engine.ray_cluster import STORAGE_NOTE, lost_node_reason, this_node
from search.engine.tune import run_search
from search.runstore.replay import replay
from search.runstore.store import RunStore, front_from_trials
from spaces import ConfigError
from spaces.spec import ArchSpec
from tests.test_report import CONFIG
from tests.test_tune import RandomStrategy, _descendants, _free_port, _kill_all, evaluate_slowly, fake_metrics

ROOT = str(Path(__file__).resolve().parents[1])
NODE_VAR = "FUSION_NAS_TEST_NODE"  # set on each `ray start`: its raylet and workers inherit it


# ---- search.storage: the form only, never contacted -----------------------------------
@pytest.mark.parametrize("value", ["", "/shared/ray", "~/ray_results", "s3://bucket", "s3://bucket/fusion/runs",
                                   "gs://b/p", "hdfs://namenode:8020/ray"])
def test_storage_takes_a_path_or_an_object_store_uri(value: str) -> None:
    assert SearchSettings.from_dict({"storage": value}).storage == value


@pytest.mark.parametrize(("value", "message"), [
    ("runs/ray", "expected an absolute path on a filesystem every node mounts or an object store URI"),
    ("ftp://host/x", "unknown storage scheme 'ftp'; known: s3, gs, gcs, abfs, hdfs"),
    ("s3://", "'s3://' names no bucket; expected s3://bucket/path"),
    ("gs:///p", "'gs:///p' names no bucket"),
    (5, "expected a string, got 5"),
])
def test_a_bad_storage_is_one_line_naming_the_file_and_key(tmp_path, value: Any, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "search": {**CONFIG["search"], "storage": value}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: search.storage: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_no_node_outside_ray_and_a_lost_node_reason_names_it() -> None:
    assert this_node() is None  # a plain call (the in-process engine, tests) names no node
    line = lost_node_reason({"id": "ab" * 28, "ip": "127.0.0.1"}, "ActorUnavailableError: gone\nmore")
    assert line.startswith("node 127.0.0.1 (abababab) was lost while the trial ran on it; a resume runs it again")
    assert "ActorUnavailableError: gone" in line and "\n" not in line and "more" not in line


def test_a_trial_lost_with_its_node_is_not_counted_and_a_replay_runs_it_again() -> None:
    asks = RandomStrategy(seed=3)
    specs = [asks.ask() for _ in range(4)]
    records = [{"trial_id": f"t{i}", "spec": s.to_dict(), "status": "ok", "metrics": fake_metrics(s, {"bonus": 0})}
               for i, s in enumerate(specs)]
    records[0] = {**records[0], "status": "errored", "metrics": {}, "lost_node": {"id": "ab" * 28, "ip": "127.0.0.1"}}
    assert [counts_to_budget(r) for r in records] == [False, True, True, True]
    fresh = RandomStrategy(seed=3)
    rerun = replay(fresh, records, lookahead=1)  # one trial at a time: the lost one waits, the rest match
    assert [s.arch_id for s in rerun] == [specs[0].arch_id]
    assert [a for a, _ in fresh.told] == [s.arch_id for s in specs[1:]]  # never told as a failure
    assert fresh.asked == specs  # each asked once: the next ask is a new candidate, not a repeat


# ---- a two-node cluster on this machine ----------------------------------------------
class TwoNodes:
    """A head and a worker node, each `ray start` with one CPU, its own temp dir and marker
    (`worker=False`: the head alone)."""

    def __init__(self, worker: bool = True) -> None:
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONPATH": ROOT, "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.env.pop(NODE_VAR, None)
        self.head = tempfile.mkdtemp(prefix="fnc1", dir="/tmp")  # short: Ray's socket paths
        self.worker = tempfile.mkdtemp(prefix="fnc2", dir="/tmp")
        ray = str(Path(sys.executable).parent / "ray")
        common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        self._start([ray, "start", "--head", f"--port={self.port}", f"--temp-dir={self.head}",
                     "--include-dashboard=false", *common], self.head)
        if worker:
            self._start([ray, "start", f"--address={self.address}", f"--temp-dir={self.worker}", *common],
                        self.worker)

    def _start(self, argv: list[str], marker: str) -> None:
        try:
            subprocess.run(argv, env={**self.env, NODE_VAR: marker}, check=True, capture_output=True, timeout=120)
        except BaseException:
            self.stop()
            raise

    def pids(self, marker: str) -> set[int]:
        """The processes of one node (and their children)."""
        found = set()
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if f"{NODE_VAR}={marker}\0".encode() in environ.read_bytes():
                    found.add(int(environ.parent.name))
            except OSError:
                continue
        return _descendants(found) - {os.getpid()}

    def nodes_up(self) -> tuple[bool, bool]:
        """Whether the head's and the worker node's processes are running."""
        return bool(self.pids(self.head)), bool(self.pids(self.worker))

    def kill_worker_node(self) -> None:
        _kill_all(self.pids(self.worker))

    def stop(self) -> None:
        _kill_all(self.pids(self.head) | self.pids(self.worker))
        for d in (self.head, self.worker):
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    """The module's cluster, kept from one test to the next while it is as the next asks (a
    start costs ~5 s): `two_nodes` wants both nodes up, `head_only` the head alone; one a test
    left otherwise (a node killed) is stopped and a new one started."""
    held: dict[str, TwoNodes] = {}
    yield held
    if "nodes" in held:
        held.pop("nodes").stop()


def _nodes(held: dict[str, TwoNodes], worker: bool) -> TwoNodes:
    nodes = held.get("nodes")
    if nodes is not None and nodes.nodes_up() != (True, worker):
        held.pop("nodes").stop()
        nodes = None
    if nodes is None:
        nodes = held["nodes"] = TwoNodes(worker=worker)
    return nodes


@pytest.fixture
def two_nodes(cluster) -> TwoNodes:
    return _nodes(cluster, worker=True)


@pytest.fixture
def head_only(cluster) -> TwoNodes:
    """A cluster of its head alone (one CPU): the worker node never started, or was lost."""
    return _nodes(cluster, worker=False)


def test_a_search_runs_across_two_nodes_and_each_trial_names_its_node(tmp_path, two_nodes) -> None:
    n = 6
    raw = {**CONFIG, "name": "two",
           "backbones": {**CONFIG["backbones"], "cache_dir": str(tmp_path / "cache"), "pretrain": {"epochs": 1}},
           # candidates of ~2-5 s: the first node's trial worker must not finish them all before the
           # second node's has started (~3 s, and more than the 12 s of 6 candidates of 1,000 steps
           # once, on a loaded CI machine); and no packs, which could hold them all
           "train": {"epochs": 2500, "min_steps": 2500, "max_steps": 2500, "patience": 2500},
           "search": {"strategy": "random", "num_samples": n, "confirm": 0, "baselines": "none",
                      "max_concurrent": 2, "pack": 1, "runs_dir": str(tmp_path / "runs")}}
    cfg = tmp_path / "two.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = subprocess.run([sys.executable, "-m", "search", "search", str(cfg), "--address", two_nodes.address],
                         env=two_nodes.env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    run_dir = Path(out.stdout.split("run directory: ")[1].split()[0])
    store = RunStore.open(run_dir)
    trials = store.trials()
    assert len(trials) == n and all(t["status"] == "ok" for t in trials), trials
    nodes = [t["metrics"]["node"] for t in trials]  # every record names the node that trained it
    assert all(len(node["id"]) == 56 and node["ip"] for node in nodes)
    assert len({node["id"] for node in nodes}) == 2, [t["metrics"].get("seconds") for t in trials]  # both nodes trained candidates
    for name in ("config.yaml", "trials.jsonl", "pareto.json", "report.html", "reference.json"):
        assert (run_dir / name).is_file(), name
    assert store.read_json("pareto.json")["front"]
    # Tune's state stays with the driver: one folder per trial, wherever the trial ran
    trial_dirs = {p.name for p in (store.ray_dir / "tune").iterdir() if p.is_dir()}
    assert trial_dirs == {f"trial_{t['trial_id'].split('_')[0]}" for t in trials}  # `<tune trial>_<k>` in a pack
    assert all((store.ray_dir / "tune" / d / "result.json").stat().st_size > 0 for d in trial_dirs)


# ---- a killed driver, resumed on the cluster it joined by address ---------------------
def drive_slowly(run_dir: str, n: int, address: str, resume: bool) -> None:
    """The driver the subprocesses run: a search of `n` trials on the cluster at `address`, one trial
    at a time (one trial worker per driver: ~3.5 CPU s of imports each), slow unless it resumes."""
    run_search(evaluate=evaluate_slowly, shared={"bonus": 0.0, "sleep": 0.0 if resume else 0.5},
               strategy=RandomStrategy(seed=5),
               num_samples=n, store=RunStore.open(run_dir), address=address, resume=resume, max_concurrent=1)


def test_a_killed_driver_resumes_on_a_cluster_joined_by_address(tmp_path, two_nodes) -> None:
    n = 8  # `ray start` turns token auth on; an explicit address needs the mode and the token too (two_nodes.env)
    store = RunStore.create(tmp_path, "kill", {"n": n})
    code = "from tests.test_cluster import drive_slowly; drive_slowly({!r}, {}, {!r}, {})"
    log = open(tmp_path / "driver.log", "w")
    driver = None
    try:
        driver = subprocess.Popen([sys.executable, "-c", code.format(str(store.run_dir), n, two_nodes.address, False)],
                                  env=two_nodes.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while len(store.trials()) < 3:
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trials recorded in time"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        before = store.trials()
        assert 3 <= len(before) < n
        subprocess.run([sys.executable, "-c", code.format(str(store.run_dir), n, two_nodes.address, True)],
                       env=two_nodes.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=150)
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        log.close()
    after = store.trials()
    assert len(after) == n and all(r["status"] == "ok" for r in after)
    first_asks = RandomStrategy(seed=5)  # nothing evaluated twice, nothing skipped: the first n asks
    assert sorted(r["arch_id"] for r in after) == sorted(first_asks.ask().arch_id for _ in range(n))
    assert after[: len(before)] == before  # every earlier trial kept, as recorded
    assert len([ln for ln in store.trials_path.read_text().splitlines() if ln.endswith("}")]) == n  # no reruns
    assert store.read_json("pareto.json") == json.loads(json.dumps(front_from_trials(after)))


# ---- a worker node lost under a running trial ----------------------------------------
def evaluate_held(spec: ArchSpec, shared: Any) -> dict[str, Any]:
    """A quick fake candidate; on the marked node, once `hold` exists, it says so and never ends.
    Elsewhere it first waits (up to a minute) for the marked node's first candidate: that node's
    trial worker starts seconds after the head's, which could train every candidate alone."""
    marked = os.environ.get(NODE_VAR) == shared["hold_on"]
    if marked:
        Path(shared["marked_up"]).touch()
    else:
        deadline = time.monotonic() + 60
        while not Path(shared["marked_up"]).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    if marked and Path(shared["hold"]).exists():
        part = Path(shared["held"] + ".part")  # written whole, then renamed: the test reads it as soon as it exists
        part.write_text(json.dumps({"node": this_node(), "arch_id": spec.arch_id}))
        part.replace(shared["held"])
        time.sleep(600)
    time.sleep(shared["sleep"])
    return {**fake_metrics(spec, shared), "node": this_node()}


def drive(run_dir: str, n: int, address: str, resume: bool, shared: dict, storage: str) -> None:
    """The driver the subprocesses run: a search of `n` fake trials on the cluster at `address`."""
    from search.engine.tune import run_search

    def warn(line: str) -> None:
        print(f"fusion-nas: warning: {line}", file=sys.stderr, flush=True)

    run_search(evaluate=evaluate_held, shared=shared, strategy=RandomStrategy(seed=7), num_samples=n,
               store=RunStore.open(run_dir), address=address, resume=resume, max_concurrent=2, warn=warn,
               storage=storage)


def test_a_lost_worker_node_costs_only_its_running_trial_and_a_resume_reruns_it(tmp_path, two_nodes) -> None:
    n, shared_fs = 6, tmp_path / "shared"  # `search.storage` on a path every node would mount
    store = RunStore.create(tmp_path / "runs", "lost", {"n": n})
    shared = {"bonus": 0.0, "sleep": 0.4, "hold_on": two_nodes.worker, "hold": str(tmp_path / "hold"),
              "held": str(tmp_path / "held"), "marked_up": str(tmp_path / "worker_up")}
    code = ("import sys; from tests.test_cluster import drive; "
            f"drive({str(store.run_dir)!r}, {n}, {two_nodes.address!r}, sys.argv[1] == 'resume', {shared!r}, "
            f"{str(shared_fs)!r})")
    driver = subprocess.Popen([sys.executable, "-c", code, "start"], env=two_nodes.env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while len(store.trials()) < 2:  # a few finish first: they must survive the loss
            assert driver.poll() is None, driver.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no trials recorded in time"
            time.sleep(0.05)
        Path(shared["hold"]).touch()
        while not Path(shared["held"]).exists():  # a trial is now running on the worker node
            assert driver.poll() is None, driver.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no trial held on the worker node"
            time.sleep(0.05)
        before = store.trials()
        two_nodes.kill_worker_node()
        _, err = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, err[-4000:]
    held = json.loads(Path(shared["held"]).read_text())
    trials = store.trials()
    lost = [t for t in trials if t.get("lost_node")]
    assert len(trials) == n and lost, trials  # the search went on to its end on the head
    assert all(t["lost_node"] == {"id": held["node"]["id"], "ip": held["node"]["ip"]} for t in lost)
    assert held["arch_id"] in {t["arch_id"] for t in lost}
    short = f"node {held['node']['ip']} ({held['node']['id'][:8]}) was lost while the trial ran on it"
    assert all(t["status"] == "errored" and t["reason"].startswith(short) and "\n" not in t["reason"] for t in lost)
    assert all(t["status"] == "ok" for t in trials if not t.get("lost_node"))
    assert trials[: len(before)] == before  # nothing finished was lost
    assert f"{len(lost)} trial(s) were lost with node(s) {held['node']['ip']} ({held['node']['id'][:8]})" in err
    assert f"resume with fusion-nas search --resume {store.run_dir} to run them again" in err
    # Tune kept its experiment where search.storage said; the run's ray/ says where
    tune_dir = shared_fs / store.run_dir.parent.name / store.run_dir.name / "tune"
    assert (store.ray_dir / "tune" / STORAGE_NOTE).read_text().strip() == str(tune_dir)
    assert any(p.name.startswith("trial_") for p in tune_dir.iterdir())

    Path(shared["hold"]).unlink()  # the resume runs on the head alone: the worker node is gone
    subprocess.run([sys.executable, "-c", code, "resume"], env=two_nodes.env, cwd=ROOT, check=True,
                   capture_output=True, timeout=240)
    after = store.trials()
    counted = [t for t in after if not t.get("lost_node")]
    assert len(counted) == n and all(t["status"] == "ok" for t in counted)
    assert after[: len(trials)] == trials  # the lost records stay, as history
    first_asks = RandomStrategy(seed=7)  # the lost candidates ran again; nothing else twice
    assert sorted(t["arch_id"] for t in counted) == sorted(first_asks.ask().arch_id for _ in range(n))
    assert all(t["metrics"]["node"]["id"] != held["node"]["id"] for t in after[len(trials):])


# ---- the head lost under a search ----------------------------------------------------
def test_a_lost_head_ends_the_search_at_once_with_the_resume_hint(tmp_path, head_only) -> None:
    """The cluster's head dies mid-search: the driver ends within seconds with exit 2 and one
    line saying how far it got and how to resume (Ray alone would take ~60 s and exit 1)."""
    n = 8
    store = RunStore.create(tmp_path, "lost", {"n": n})
    code = (f"import sys\nfrom tests.test_cluster import drive_slowly\ntry:\n"
            f"    drive_slowly({str(store.run_dir)!r}, {n}, {head_only.address!r}, False)\n"
            "except ConnectionError as err:\n    print(f'fusion-nas: error: {err}', file=sys.stderr)\n"
            "    sys.exit(2)\n")
    driver = None
    try:
        driver = subprocess.Popen([sys.executable, "-c", code], env=head_only.env, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while len(store.trials()) < 2:
            assert driver.poll() is None, driver.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no trials recorded in time"
            time.sleep(0.05)
        _kill_all(head_only.pids(head_only.head) - _descendants({driver.pid}))  # the head dies, the driver lives on
        killed = time.monotonic()
        _, err = driver.communicate(timeout=60)
        waited = time.monotonic() - killed
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
    assert driver.returncode == 2, err[-3000:]
    assert f"search.address: the Ray cluster at {head_only.address} is gone" in err, err[-3000:]
    assert f"resume with fusion-nas search --resume {store.run_dir}" in err
    assert waited < 30  # the watchdog checks every 2 s; Ray's own give-up takes about 60 s
    assert len(store.trials()) >= 2  # the finished trials stay recorded
