"""Resume from the record, never from a pickle; honest interrupts; what a run writes per trial.

- A run directory received from someone else runs none of their code: pickles planted in
  it are never loaded by `search --resume`, `show`, `report`, `export` or `evaluate`.
- Ray's own log lines go to the run's ray.log, not to the terminal.
- Ctrl-C (SIGINT) and SIGTERM (to the whole process group, embedded Ray included, as a job
  scheduler sends it) end a real `fusion-nas search` with 130 / 143 and the resume hint;
  resuming finishes exactly the requested trials, nothing trained twice, and reruns a
  candidate whose record line was torn, a confirmation seed's too.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from search.cli import main
from search.config import load_config
from search.engine.confirm import confirmation_todo
from search.runstore.store import RunStore, candidate_key
from search.strategies import make_strategy
from tests.test_export import make_trained_run
from tests.test_report import CONFIG

ROOT = Path(__file__).resolve().parents[1]
SMALL = {**CONFIG, "search": {"strategy": "random", "num_samples": 3, "confirm": 0, "baselines": "none"}}


class _Payload:
    """Unpickling this creates `path`: the code a hostile run directory would run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def test_pickles_planted_in_a_run_dir_are_never_loaded(tmp_path, capsys):
    store = make_trained_run(tmp_path, SMALL)
    marker, control = tmp_path / "pwned", tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()  # the payload works when unpickled
    payload = pickle.dumps(_Payload(marker))
    tune_dir = store.ray_dir / "tune"
    (tune_dir / "trial_x").mkdir(parents=True)
    for name in ("searcher.pkl", "ray/tune/tuner.pkl", "ray/tune/trainable.pkl", "ray/tune/searcher-state-x.pkl",
                 "ray/tune/search_gen_state-x.json", "ray/tune/experiment_state-x.json",
                 "ray/tune/trial_x/params.pkl", "ray/tune/basic-variant-state-x.json"):
        (store.run_dir / name).write_bytes(payload)
    run, out = str(store.run_dir), str(tmp_path / "export")
    assert main(["search", "--resume", run]) == 0  # its 3 trials are recorded: nothing to run
    assert main(["show", run]) == 0
    assert main(["report", run]) == 0
    assert main(["export", run, "--out", out]) == 0
    assert main(["evaluate", out, "--config", run]) == 0
    assert "error" not in capsys.readouterr().err
    assert not marker.exists()


# ---- interrupts, a torn line, and resuming to exactly the requested trials ----------
def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "search", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _main_trials(store: RunStore) -> list[dict]:
    return [t for t in store.trials() if not t.get("confirm")]


def _interrupt_after(proc: subprocess.Popen, store: RunStore, n: int, signum: int,
                     group: bool = False, again_after: float | None = None) -> tuple[int, str, str, float]:
    """Send `signum` once the run has `n` strategy trials recorded (`group`: to the process and
    its embedded Ray's processes, as a job scheduler does; `again_after` seconds: a second time,
    as an impatient user does); the exit code, stdout, stderr and the seconds from the signal to the exit."""
    deadline = time.monotonic() + 300  # Ray start-up and pretraining first: slow on a loaded machine
    while len(_main_trials(store)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no trial recorded in time"
        time.sleep(0.05)
    sent = time.monotonic()
    os.killpg(proc.pid, signum) if group else proc.send_signal(signum)
    if again_after is not None:
        time.sleep(again_after)
        if proc.poll() is None:
            proc.send_signal(signum)
    out, err = proc.communicate(timeout=90)
    return proc.returncode, out, err, time.monotonic() - sent


RAY_LINES = ("Started a local Ray instance", "Token authentication", "Wrote the latest version", "INFO", "WARNING",
             "View detailed results", "Configuration for experiment")


# No Ray of this process runs beside the two interrupted searches (its load would widen the race
# between a group SIGTERM and Ray's own exit of the driver); the last resumes then take the shared one.
@pytest.mark.no_shared_ray
def test_sigint_and_sigterm_stop_with_the_hint_and_resume_finishes_exactly(tmp_path, capfd, request):
    """Two real `fusion-nas search` processes interrupted, then resumed to the end in this process;
    a torn record line is trained again, and so is a torn confirmation seed's."""
    raw = {**SMALL, "backbones": {**SMALL["backbones"], "cache_dir": str(tmp_path / "cache")},
           "train": {"epochs": 100000, "min_steps": 400, "max_steps": 400, "patience": 100000},
           "search": {**SMALL["search"], "num_samples": 3, "confirm": 1, "max_concurrent": 1,
                      "runs_dir": str(tmp_path / "runs")}}
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(raw))
    first = _cli("search", str(path))
    deadline = time.monotonic() + 60
    while not list((tmp_path / "runs").glob("*/*/config.yaml")):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    store = RunStore.open(next((tmp_path / "runs").glob("*/*/config.yaml")).parent)
    hint = re.compile(rf"interrupted: (\d) of 3 trials; resume with fusion-nas search --resume {store.run_dir}\n$")

    code, _, err, _ = _interrupt_after(first, store, 1, signal.SIGINT, again_after=0.2)  # Ctrl-C twice
    assert code == 130 and hint.search(err), err
    assert 1 <= int(hint.search(err).group(1)) < 3
    kept = store.trials_path.read_bytes()
    torn = kept[: kept.rfind(b"\n", 0, len(kept) - 1) + 1] + kept.splitlines(keepends=True)[-1][:40]
    store.trials_path.write_bytes(torn)  # the last record torn by a crash: its candidate must run again
    kept = torn[: torn.rfind(b"\n") + 1]

    second = _cli("search", "--resume", str(store.run_dir))
    code, out, err, seconds = _interrupt_after(second, store, len(_main_trials(store)) + 1, signal.SIGTERM,
                                               group=True)
    assert code == 143 and hint.search(err), err
    assert seconds < 30, seconds  # Ray died with the group: the driver does not wait 60 s for its GCS
    assert "torn or unparsable line(s) (line " in err and "Fatal Python error" not in err
    for ray_line in RAY_LINES:
        assert ray_line not in out + err, out + err  # the terminal shows the product's lines only
    assert "Started a local Ray instance" in store.ray_log_path.read_text()  # Ray's go to the run
    assert store.trials_path.read_bytes().startswith(kept)
    kept = store.trials_path.read_bytes()

    request.getfixturevalue("ray_local")  # the in-process resumes below run on the shared Ray
    capfd.readouterr()
    assert main(["search", "--resume", str(store.run_dir)]) == 0
    out, err = capfd.readouterr()  # the file descriptors: Ray's and Tune's own writes too
    for ray_line in RAY_LINES:
        assert ray_line not in out + err, out + err
    assert store.trials_path.read_bytes().startswith(kept)  # every earlier record kept, byte for byte

    records = store.trials()
    main_trials = _main_trials(store)
    cfg = load_config(path)
    asks = make_strategy("random", cfg.space, seed=cfg.search.seed, budget=3)
    assert sorted(candidate_key(t) for t in main_trials) == sorted(asks.ask().candidate_id for _ in range(3))
    lines = [json.loads(ln) for ln in store.trials_path.read_text().splitlines() if ln.endswith("}")]
    assert len({r["trial_id"] for r in lines}) == len(lines)  # no trial recorded twice
    pairs = [(candidate_key(r), r["seed"]) for r in lines]
    assert len(set(pairs)) == len(pairs)  # no candidate trained twice with one seed
    assert any(r.get("confirm") for r in records)
    assert confirmation_todo(records, store.reference, 1, cfg.train.seed) == []  # the front is confirmed
    assert main(["show", str(store.run_dir)]) == 0
    assert "torn or unparsable line(s)" in capfd.readouterr().err  # show says so too

    # a crash mid-write of the last record, a confirmation seed's: the resume trains that seed again
    def front() -> dict[str, list]:
        entries = json.loads(store.pareto_path.read_text())["front"]
        return {candidate_key(e): sorted(e["metrics"]["seeds"]) for e in entries}

    before = front()
    assert before and all(len(seeds) == 2 for seeds in before.values()), before
    lines = [ln for ln in store.trials_path.read_bytes().splitlines(keepends=True) if ln.endswith(b"}\n")]
    last = json.loads(lines[-1])
    assert last.get("confirm"), last  # the run ends on a confirmation seed: tear that one
    store.trials_path.write_bytes(b"".join(lines[:-1]) + lines[-1][:60])
    assert main(["search", "--resume", str(store.run_dir)]) == 0
    assert "torn or unparsable line(s)" in capfd.readouterr().err
    assert front() == before  # the seed was trained again: the same candidates, each on 2 seeds
    seeds = [(candidate_key(t), t["seed"]) for t in store.trials()]
    assert (candidate_key(last), last["seed"]) in seeds and len(set(seeds)) == len(seeds)


def test_resuming_a_run_whose_cluster_head_is_gone_fails_at_once(tmp_path, capsys):
    from tests.test_hardening import free_port
    from tests.test_report import make_run

    port = free_port()
    store = make_run(tmp_path, config={**SMALL, "search": {**SMALL["search"], "address": f"127.0.0.1:{port}"}})
    start = time.monotonic()
    assert main(["search", "--resume", str(store.run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"search.address: nothing answers at 127.0.0.1:{port}" in err, err
    assert time.monotonic() - start < 6 and not (store.run_dir / "baselines.json").exists()  # before any work
