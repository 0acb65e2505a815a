"""The run store: one directory per search run, safe against a driver killed at any moment.

Layout of `root/<name>/<run-id>/`:
- `config.yaml`: the resolved configuration the run was started with;
- `trials.jsonl`: one JSON line per finished trial, append-only (the source of truth);
- `pareto.json`: the current Pareto front, rewritten atomically after each trial;
- `baselines.json`: the baselines trained before the search (`search.baselines`);
- `objectives.json`: the run's task and objectives (`search.objectives`; a run without it has
  the classic accuracy, params, FLOPs);
- `ray/`: Ray Tune's experiment logs, one experiment per start or resume (never read back:
  a resume rebuilds the search from `trials.jsonl`);
- `.lock`: held (`flock`) by the one process searching in the run, holding its pid.

A run name (the `<name>` folder) follows `NAME_RULE`; a run directory is always inside
its runs directory.

A line is appended with one `write` and fsynced, so a crash leaves at most one torn
line, which `trials()` skips (and reports, when asked). Other files are written to a temporary file in the
same directory and moved into place with `os.replace`: never seen half-written.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import math
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from search import baselines as _baselines
from search import objectives as _objectives
from search import pareto
from spaces import ConfigError
from spaces.spec import ArchSpec
from spaces.yaml_errors import read_yaml

STATUSES = ("ok", "failed", "diverged", "errored", "early_stopped")
NAME_RULE = "1-100 characters from letters, digits, '.', '_' and '-', starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class RunInUse(RuntimeError):
    """Another process holds the run directory's lock."""


def check_run_name(name: object, where: str = "name") -> str:
    """`name` if it is a legal run name (a single folder name: see `NAME_RULE`); else ConfigError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = repr(name) if not isinstance(name, str) or len(name) <= 40 else f"{name[:40]!r}... ({len(name)} characters)"
        raise ConfigError(f"{where}: bad run name {shown}; a run name has {NAME_RULE}")
    return name


def utc_now() -> str:
    """The current UTC time as ISO 8601, e.g. `2025-01-31T12:00:00.123456+00:00`."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def new_run_id() -> str:
    """`20250131T120000Z-1a2b3c`: sortable by start time, random suffix against clashes."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def to_jsonable(obj: Any) -> Any:
    """Plain JSON data: numpy scalars/arrays unwrapped, paths as strings, NaN/inf as None
    (strict JSON has no NaN; a missing value reads the same to every consumer)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset, np.ndarray)):
        return [to_jsonable(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class RunStore:
    """Handle on one run directory; create it with `create`, reopen it with `open`."""

    run_dir: Path

    @classmethod
    def create(cls, root: str | Path, name: str, config: Mapping[str, Any]) -> RunStore:
        """Make a fresh `root/<name>/<run-id>/` and write `config.yaml` into it.

        `name` must follow `NAME_RULE` and the run directory must resolve inside `root`
        (a symlinked `<name>` pointing elsewhere is refused): nothing is written outside it.
        """
        check_run_name(name)
        root = Path(root).resolve()
        if root.exists() and not root.is_dir():
            raise ConfigError(f"search.runs_dir: {root} exists and is not a directory")
        parent = root / name
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"search.runs_dir: cannot make {parent} ({err.strerror or err})") from None
        if not parent.is_dir() or not parent.resolve().is_relative_to(root):
            raise ConfigError(f"name: {parent} is not a directory inside the runs directory {root}")
        for _ in range(100):
            run_dir = parent / new_run_id()
            try:
                run_dir.mkdir()  # exist_ok=False: two runs never share a directory
            except FileExistsError:
                continue
            store = cls(run_dir)
            atomic_write(store.config_path, yaml.safe_dump(to_jsonable(config), sort_keys=False))
            return store
        raise RuntimeError(f"could not make a unique run directory under {parent}")

    @classmethod
    def open(cls, run_dir: str | Path) -> RunStore:
        """The run in `run_dir` (to resume or show it); raises if it is not a run directory."""
        run_dir = Path(run_dir).resolve()
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir} is not a fusion-nas run directory (no config.yaml)")
        return cls(run_dir)

    # ---- paths --------------------------------------------------------------------
    def inside(self, path: Path) -> Path:
        """`path`, a file the product is about to write in the run directory, if it stays there;
        a ConfigError (one line) when it, or a folder on its way, is a symlink leading out of
        the run directory. Reads through symlinks stay allowed."""
        root = self.run_dir.resolve()
        if not Path(path).resolve().is_relative_to(root):
            raise ConfigError(f"{path}: a symlink leading out of the run directory ({Path(path).resolve()}); "
                              "fusion-nas writes only inside it")
        return Path(path)

    def check_writes_stay_inside(self) -> None:
        """Refuse (one line) a run directory holding a symlink that leads out of it: run before a
        search or resume writes anything, since its files (trials.jsonl, .lock, ray/, ...) would
        be written through the link."""
        for entry in sorted(self.run_dir.iterdir()):
            if entry.is_symlink():
                self.inside(entry)

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def config_path(self) -> Path:
        return self.run_dir / "config.yaml"

    @property
    def trials_path(self) -> Path:
        return self.run_dir / "trials.jsonl"

    @property
    def pareto_path(self) -> Path:
        return self.run_dir / "pareto.json"

    @property
    def ray_log_path(self) -> Path:
        """Ray's and Tune's own log lines during the run's searches (`search.engine.ray_cluster`)."""
        return self.run_dir / "ray.log"

    @property
    def ray_dir(self) -> Path:
        """Absolute directory for Ray Tune's state (Tune's `storage_path` must be absolute)."""
        return self.run_dir.resolve() / "ray"

    def config(self) -> dict[str, Any]:
        """The stored `config.yaml` as a mapping; a damaged file raises ConfigError naming it."""
        raw = read_yaml(self.config_path)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{self.config_path}: expected a mapping, got {type(raw).__name__}")
        return raw

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold `run_dir/.lock` (non-blocking `flock`) while searching; raise `RunInUse` if
        another process holds it. The lock dies with its process, even a killed one."""
        self.check_writes_stay_inside()
        path = self.inside(self.run_dir / ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                raise RunInUse(f"{self.run_dir} is in use by another fusion-nas process (pid {pid})") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    # ---- trials -------------------------------------------------------------------
    def append_trial(self, record: Mapping[str, Any]) -> None:
        """Append one finished trial as one JSON line: a single write, then fsync."""
        if "trial_id" not in record:
            raise ValueError("a trial record needs a 'trial_id'")
        line = json.dumps(to_jsonable(record), sort_keys=True, allow_nan=False) + "\n"
        fd = os.open(self.inside(self.trials_path), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # a torn line left by a crash would swallow this one: end it first
            if os.fstat(fd).st_size and os.pread(fd, 1, os.fstat(fd).st_size - 1) != b"\n":
                line = "\n" + line
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def trials(self, warn: Callable[[str], Any] | None = None) -> list[dict[str, Any]]:
        """The finished trials, in order of first appearance, one per `trial_id`.

        Lines that do not parse (a write torn by a crash) are skipped; with `warn`, it gets
        one line naming them (a resumed search runs their candidates again). A trial
        recorded twice keeps its first position and its last record.
        """
        records, torn = self._read_trials()
        if torn and warn is not None:
            where = ", ".join(map(str, torn[:5])) + (", ..." if len(torn) > 5 else "")
            warn(f"{self.trials_path}: skipped {len(torn)} torn or unparsable line(s) (line {where})")
        return records

    def torn_lines(self) -> list[int]:
        """The 1-based numbers of the lines of `trials.jsonl` that are not a trial record."""
        return self._read_trials()[1]

    def _read_trials(self) -> tuple[list[dict[str, Any]], list[int]]:
        if not self.trials_path.exists():
            return [], []
        by_id: dict[str, dict[str, Any]] = {}
        torn = []
        with open(self.trials_path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                if isinstance(record, dict) and "trial_id" in record:
                    by_id[str(record["trial_id"])] = record
                else:
                    torn.append(n)
        return list(by_id.values()), torn

    # ---- json files ---------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> Path:
        """Write `obj` as `run_dir/name` atomically (temp file in the same dir + os.replace)."""
        path = self.inside(self.run_dir / name)
        atomic_write(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")
        return path

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write `run_dir/name` atomically."""
        path = self.inside(self.run_dir / name)
        atomic_write(path, data)
        return path

    def read_json(self, name: str) -> Any:
        return json.loads((self.run_dir / name).read_text(encoding="utf-8"))

    @property
    def reference(self) -> list[float] | None:
        """The run's fixed hypervolume reference point (`reference.json`), if one was set."""
        path = self.run_dir / "reference.json"
        return json.loads(path.read_text())["reference"] if path.is_file() else None

    def objectives(self) -> tuple[_objectives.Objective, ...]:
        """The run's objectives (`objectives.json`), the metric first; the classic three without it."""
        path = self.run_dir / _objectives.FILE
        return _objectives.from_stored(json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None)

    def rank(self) -> str:
        """How the run ranks its answer over seeds (`search.rank` of `config.yaml`, which `create`
        writes once: read once per handle); `mean` for a run from before it, or an unknown value."""
        if "_rank" not in self.__dict__ and self.config_path.is_file():
            rank = (self.config().get("search") or {}).get("rank", "mean")
            object.__setattr__(self, "_rank", rank if rank in _baselines.RANKS else "mean")  # a cache, not a field
        return self.__dict__.get("_rank", "mean")

    def task(self) -> str:
        """The run's task (`objectives.json`); classification for a run from before it."""
        path = self.run_dir / _objectives.FILE
        return (json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}).get("task", "classification")

    def baselines(self) -> list[dict[str, Any]] | None:
        """The run's baselines (`baselines.json`, see `search.baselines`), or None if it has none."""
        path = self.run_dir / _baselines.FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def write_pareto(self, trials: Iterable[Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """Write `pareto.json`, the front of the stored trials (or of `trials`), and return it; with
        `baselines.json` present, its `baselines` key says whether the front beats them, and which
        trial is the run's answer (`search.baselines.answer_trial`)."""
        trials, objs = (self.trials() if trials is None else list(trials)), self.objectives()
        data = front_from_trials(trials, self.reference, objs)
        if (stored := self.baselines()) is not None:
            data["baselines"] = _baselines.compare(data, stored, objs, rank=self.rank(), trials=trials)
        self.write_json(self.pareto_path.name, data)
        return data


# ---- candidates: a trial and its confirmation seeds ------------------------------------
def candidate_key(record: Mapping[str, Any]) -> str:
    """Which candidate a trial record belongs to: its spec's `candidate_id` (architecture and
    training settings; the seed is not part of it), or its own id when it has no spec.
    A record written by a trial says it (`candidate_id`): the front is recomputed after every
    trial, so only older records have their spec parsed again."""
    if isinstance(record.get("candidate_id"), str):
        return record["candidate_id"]
    spec = record.get("spec")
    if isinstance(spec, Mapping):
        try:
            return ArchSpec.from_dict(dict(spec)).candidate_id
        except (KeyError, TypeError, ValueError):
            pass
    return f"trial:{record.get('trial_id')}"


def candidate_records(trials: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per candidate, in order of first appearance: each strategy trial joined by
    the confirmation trials (`confirm: true`) of its candidate, with every `val_*`, `test_*`, `holdout_*` and
    measured cost (`latency_ms`) replaced by its mean over every trial (seed) of it, `<key>_std` (sample
    std, 0 for one seed) beside each (`val_std`, `test_std`: accuracy's), and `n_seeds`,
    `seeds` and `seed_trials` added to its metrics.

    A candidate is ok only if every seed is: one seed that failed, diverged or errored
    makes the candidate that status (with that seed's reason), and keeps it off the front.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}  # first trial id -> the candidate's trials
    first: dict[str, str] = {}  # candidate key -> the first trial id of that candidate
    for t in trials:
        key = candidate_key(t)
        if t.get("confirm") and key in first:  # a confirmation seed joins its candidate
            groups[first[key]].append(t)
        else:  # a strategy's trial is a point of its own, even if it repeats a candidate
            first.setdefault(key, str(t.get("trial_id")))
            groups[str(t.get("trial_id"))] = [t]
    return [_aggregate(g) for g in groups.values()]


# averaged over a candidate's seeds: its metrics, and the costs measured by training (latency)
SEED_MEANS = ("val_", "test_", "holdout_",
              *(o.key for o in _objectives.OBJECTIVES.values() if o.kind == "cost" and not o.known_before))
SEED_KEEP = {"val_std", "test_std"}


def _aggregate(group: list[Mapping[str, Any]]) -> dict[str, Any]:
    first = dict(group[0])
    metrics = dict(first.get("metrics") or {})
    bad = next((t for t in group if t.get("status") != "ok"), None)
    if bad is not None and bad is not group[0]:
        first["status"] = bad.get("status")
        first["reason"] = f"seed {(bad.get('metrics') or {}).get('seed')}: {bad.get('reason')}"
    averaged = sorted({k for t in group for k in (t.get("metrics") or {}) if k.startswith(SEED_MEANS)} - SEED_KEEP)
    for key in averaged:
        values = [_objectives.finite((t.get("metrics") or {}).get(key)) for t in group]
        values = [v for v in values if v is not None]
        metrics[key] = float(np.mean(values)) if values else None
        metrics[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    for split in ("val", "test"):  # the spread of accuracy, as runs before other metrics named it
        if f"{split}_accuracy_std" in metrics:
            metrics[f"{split}_std"] = metrics[f"{split}_accuracy_std"]
    metrics["n_seeds"] = len(group)
    metrics["seeds"] = [t.get("seed", (t.get("metrics") or {}).get("seed")) for t in group]
    metrics["seed_trials"] = [t.get("trial_id") for t in group]
    first["metrics"] = metrics
    return first




# ---- seeds that disagree ------------------------------------------------------------
UNSTABLE_TIMES_NOISE = 3.0  # a candidate's seed std above this many times the run's seed-to-seed noise
UNSTABLE_SHARE = 0.05  # ... and above this share of its mean metric: its seeds disagree
UNSTABLE_ALWAYS = 0.15  # a std above this share of its mean: they disagree, however noisy the rest


def mark_unstable(candidates: Sequence[dict[str, Any]], metric: _objectives.Objective) -> None:
    """Mark each candidate trained on 2+ seeds whose seeds disagree: `metrics["unstable"]` says
    why. Disagree: the sample std of the run's metric over its seeds is above the bar
    min(max(`UNSTABLE_TIMES_NOISE` x the run's seed-to-seed noise, `UNSTABLE_SHARE` x |mean|),
    `UNSTABLE_ALWAYS` x |mean|). The noise is the median std of the other multi-seed
    candidates, so one wild candidate does not raise its own bar, and the last term holds when
    every candidate is wild. One seed stalled at chance while another learns is far above it:
    {0.95, 0.50, 0.50} has std 0.26 on a mean of 0.65. An unstable candidate may sit on the
    front, marked, but is never its knee nor the run's answer."""
    spreads: dict[int, float] = {}
    for i, c in enumerate(candidates):
        m = c.get("metrics") or {}
        std, mean = _objectives.finite(m.get(f"{metric.key}_std")), _objectives.finite(m.get(metric.key))
        if int(m.get("n_seeds") or 1) >= 2 and std is not None and mean is not None:
            spreads[i] = std
    for i, std in spreads.items():
        m = candidates[i]["metrics"]
        others = [v for j, v in spreads.items() if j != i]
        noise = float(np.median(others)) if others else 0.0
        mean = abs(float(m[metric.key]))
        bar = min(max(UNSTABLE_TIMES_NOISE * noise, UNSTABLE_SHARE * mean), UNSTABLE_ALWAYS * mean)
        if std > bar:
            m["unstable"] = (f"its seeds disagree: {metric.name} std {std:.3f} over {m['n_seeds']} seeds, above "
                             f"{bar:.3f} (the run's seed noise is {noise:.3f})")


def stable(record: Mapping[str, Any]) -> bool:
    """False for a candidate `mark_unstable` marked."""
    return not (record.get("metrics") or {}).get("unstable")


# ---- the front ----------------------------------------------------------------------
def on_front_candidate(record: Mapping[str, Any], objs: Sequence[_objectives.Objective] | None = None) -> bool:
    """An ok trial whose objectives (default: the classic three) are all finite (costs > 0)."""
    if record.get("status") != "ok":
        return False
    return _objectives.usable(record.get("metrics") or {}, objs or _objectives.get(_objectives.CLASSIC))


def ok_candidates(candidates: Iterable[dict[str, Any]], objs: Sequence[_objectives.Objective]) -> list[dict[str, Any]]:
    """The candidates (`candidate_records`) that may enter a front over `objs`, those whose
    seeds disagree marked (`mark_unstable`, against the seed noise of all of them)."""
    ok = [c for c in candidates if on_front_candidate(c, objs)]
    mark_unstable(ok, objs[0])
    return ok


def objective_points(trials: Sequence[Mapping[str, Any]],
                     objs: Sequence[_objectives.Objective] | None = None) -> np.ndarray:
    """`(n, k)` minimisation matrix of `trials` (all must be usable)."""
    return _objectives.points(trials, objs or _objectives.get(_objectives.CLASSIC))


def front_from_trials(trials: Iterable[Mapping[str, Any]], reference: Sequence[float] | None = None,
                      objs: Sequence[_objectives.Objective] | None = None) -> dict[str, Any]:
    """The Pareto front of the ok candidates (failed, errored, early-stopped never enter it)
    over `objs` (the run's objectives, `RunStore.objectives`; default the classic three), with
    its hypervolume, reference point and knee.

    A candidate trained with several seeds (`search.confirm`) is one point at its mean
    val metric (`candidate_records`); the front's entries carry the mean and spread and
    name the candidate's first trial. One whose seeds disagree (`mark_unstable`) is on the
    front, marked, when no other candidate dominates it, but dominates none itself, and is
    never the knee.

    `reference` fixes the hypervolume's reference point (a run sets one before its first
    trial, so hypervolumes over the course of the search compare); by default it is
    `objectives.reference` of these trials' values."""
    objs = tuple(objs or _objectives.get(_objectives.CLASSIC))
    metric = objs[0]
    trials = list(trials)
    candidates = candidate_records(trials)
    ok = ok_candidates(candidates, objs)
    out: dict[str, Any] = {
        "objectives": _objectives.describe(objs),
        "metric": metric.name,
        "n_trials": len(trials),
        "n_candidates": len(candidates),
        "n_ok": len(ok),
        "front": [],
        "trial_ids": [],
        "hypervolume": 0.0,
        "reference": None,
        "knee": None,
        "best_val_accuracy": None,
        "best_val": None,
    }
    if not ok:
        return out
    points = objective_points(ok, objs)
    ref = (np.asarray(reference, dtype=float) if reference is not None else
           _objectives.reference({o.name: [float(t["metrics"][o.key]) for t in ok] for o in objs}, objs))
    # a mean over seeds that disagree is no evidence: such a candidate pushes none off the front
    steady = np.array([stable(t) for t in ok])
    mask = pareto.pareto_mask(points, by=steady)
    keep = np.flatnonzero(steady)  # the knee: of the candidates whose seeds agree
    knee = ok[keep[pareto.knee_point(points[keep])]]["trial_id"] if keep.size else None
    out["front"] = [{"trial_id": t["trial_id"], "arch_id": t.get("arch_id"), "spec": t.get("spec"),
                     "metrics": t["metrics"], "objectives": p.tolist()}
                    for t, p, on in zip(ok, points, mask, strict=True) if on]
    out["trial_ids"] = [f["trial_id"] for f in out["front"]]
    out["hypervolume"] = pareto.hypervolume(points, ref)
    out["reference"] = ref.tolist()
    out["knee"] = knee
    values = [float(t["metrics"][metric.key]) for t in ok]
    out["best_val"] = max(values) if metric.mode == "max" else min(values)
    if metric.name == "accuracy":
        out["best_val_accuracy"] = out["best_val"]
    return out
