"""The run configuration: one YAML file, validated at load time.

Sections: `name`, `plugins` (modules to import first: their imports register
operators, backbones, datasets or strategies), `data` (a dataset, see
`search.datasets`), `backbones` (per-modality encoders and their pretraining),
`space` (what to search), `train` (how one candidate trains) and `search`
(strategy and its `options`, budget, Ray). Every list of names checked here comes
from a registry (`spaces.registry`).
Every mistake is a one-line `ConfigError`: `<file>: <key path>: <what is wrong>`.
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fusion_ops import fusion_args, list_fusions
from search import objectives
from search.baselines import PANELS as BASELINE_PANELS
from search.baselines import RANKS
from search.datasets import DataError, list_datasets, load_dataset
from search.runstore.store import check_run_name
from search.strategies import list_strategies
from search.training import tap_files
from search.training.pretrain import BackbonesConfig, resolve_backbone
from search.training.train import TrainConfig
from spaces import ConfigError, SearchSpace
from spaces.registry import load_plugins
from spaces.yaml_errors import in_file, read_yaml

SECTIONS = ("name", "plugins", "data", "backbones", "space", "train", "search")
SCHEDULERS = ("none", "asha")
# `host:port` (as `ray start --head` prints it), `ray://host:port` (Ray Client) or `auto`
_ADDRESS = re.compile(r"(?:ray://)?(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253})|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})")


def parse_address(address: str) -> tuple[str, int] | None:
    """`(host, port)` of a cluster address, None for `auto`; ConfigError if it cannot be one."""
    if address == "auto":
        return None
    m = _ADDRESS.fullmatch(address)
    if m is None or not 1 <= int(m["port"]) <= 65535:
        raise ConfigError(f"search.address: cannot read {address!r} as a Ray address; "
                          "expected host:port (as `ray start --head` prints it), ray://host:port or auto")
    return m["host"].strip("[]"), int(m["port"])


STORAGE_SCHEMES = ("s3", "gs", "gcs", "abfs", "hdfs")  # object stores Tune reaches through pyarrow
_URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)", re.DOTALL)


def check_storage(storage: str, where: str = "search.storage") -> None:
    """`search.storage` is "" (the run's ray/), an absolute path or `scheme://bucket/...` of an
    object store: the form only, it is never contacted here."""
    if not storage:
        return
    m = _URI.fullmatch(storage)
    expected = (f"expected an absolute path on a filesystem every node mounts or an object store URI "
                f"({', '.join(s + '://bucket/path' for s in STORAGE_SCHEMES[:2])}, ...), got {storage!r}")
    if "\0" in storage or "\n" in storage:
        raise ConfigError(f"{where}: {expected}")
    if m is not None:
        if m["scheme"].lower() not in STORAGE_SCHEMES:
            raise ConfigError(f"{where}: unknown storage scheme {m['scheme']!r}; known: {', '.join(STORAGE_SCHEMES)} "
                              "(or an absolute path)")
        if not m["rest"].split("/", 1)[0]:
            raise ConfigError(f"{where}: {storage!r} names no bucket; expected {m['scheme']}://bucket/path")
    elif not Path(storage).expanduser().is_absolute():
        raise ConfigError(f"{where}: {expected}")


# ---- search.pack: candidates one Ray trial trains one after another (search.engine.packing)
AUTO = "auto"
Pack = int | str  # N >= 1 or "auto"


def check_pack(value: Any, where: str = "search.pack") -> Pack:
    """`auto` or an integer >= 1; a one-line ConfigError naming `where` otherwise."""
    if value == AUTO:
        return AUTO
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: expected auto or an integer >= 1 (candidates per Ray trial), got {value!r}")
    return value


@dataclass(frozen=True)
class SearchSettings:
    """`search:` — which strategy, how many candidates, and how Ray runs them."""

    strategy: str = "mfas"
    num_samples: int = 32
    cpus_per_trial: int = 1
    # GPUs Ray gives each trial: 0 (trials train on the CPU), a fraction (0.25: four trials share
    # a GPU) or a whole number; train.device says what a trial given one trains on
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0  # 0: as many as the CPUs allow
    pack: Pack = AUTO  # candidates one Ray trial trains one after another (search.engine.packing sizes them)
    scheduler: str = "none"
    address: str = ""  # "" = embedded local Ray; else an existing cluster's address
    # where Ray Tune keeps its experiment state and logs: "" = the run directory's ray/; on
    # many machines a path every node mounts or an object store URI (check_storage)
    storage: str = ""
    runs_dir: str = "runs"
    seed: int = 0
    confirm: int = 2  # more seeds for every front candidate; the front uses their mean
    # the share of the val split no training or strategy sees; it picks the answer among the
    # front (search.baselines.best_front_point); off when that is under 100 samples
    holdout: float = 0.3
    baselines: str = "basic"  # which baselines train before the search (search.baselines.PANELS)
    # how the answer is ranked over its seeds: mean, or lcb = mean - std/sqrt(seeds) (search.baselines.ranked_value)
    rank: str = "mean"
    metric: str = ""  # the task metric the search optimises ("": the task's default, search.objectives)
    objectives: tuple[str, ...] = ()  # objective names (search.objectives.OBJECTIVES); (): metric, params, flops
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the strategy
    # the tap cache (search.training.taps): disk = memory-mapped files every worker of a node shares;
    # memory = arrays through Ray's object store; auto = disk unless backbones.cache_dir is null
    tap_cache: str = "auto"
    tap_dir: str = ""  # where disk tap caches live; "": `taps` beside backbones.cache_dir (~/.cache/fusion-nas/taps)
    tap_dtype: str = "float32"  # float16 halves the cache; candidates still train in float32
    # size guards, checked before anything is allocated: the largest architecture of the space
    max_params: int = 100_000_000  # 400 MB of float32 weights
    max_flops: int = 20_000_000_000  # forward FLOPs per sample

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "search") -> SearchSettings:
        d = _mapping(d, where)
        _no_unknown(d, cls.__dataclass_fields__, where)
        objectives.check_names(d.get("metric", ""), d.get("objectives", ()), where)
        out = cls(**{k: (tuple(d[k]) if k == "objectives" else d[k]) for k in d})
        _choice(out.strategy, tuple(list_strategies()), f"{where}.strategy")
        if not isinstance(out.options, Mapping) or not all(isinstance(k, str) for k in out.options):
            raise ConfigError(f"{where}.options: expected a mapping of the strategy's keyword arguments, "
                              f"got {out.options!r}")
        object.__setattr__(out, "options", dict(out.options))
        _choice(out.scheduler, SCHEDULERS, f"{where}.scheduler")
        _choice(out.baselines, BASELINE_PANELS, f"{where}.baselines")
        _choice(out.rank, RANKS, f"{where}.rank")
        _choice(out.tap_cache, tap_files.MODES, f"{where}.tap_cache")
        _choice(out.tap_dtype, tap_files.DTYPES, f"{where}.tap_dtype")
        for key, low in (("num_samples", 1), ("cpus_per_trial", 1), ("max_concurrent", 0), ("seed", 0),
                         ("confirm", 0), ("max_params", 1), ("max_flops", 1)):
            _int(getattr(out, key), low, f"{where}.{key}")
        check_pack(out.pack, f"{where}.pack")
        if out.scheduler != "none" and out.pack not in (AUTO, 1):
            raise ConfigError(f"{where}.pack: {out.scheduler} stops single trials by epoch, so packs stay 1 "
                              f"under a scheduler; set pack: auto or 1 (got {out.pack!r})")
        if isinstance(out.holdout, bool) or not isinstance(out.holdout, (int, float)) or not 0 <= out.holdout <= 0.5:
            raise ConfigError(f"{where}.holdout: expected a fraction of the val split in [0, 0.5], got {out.holdout!r}")
        object.__setattr__(out, "holdout", float(out.holdout))
        object.__setattr__(out, "gpus_per_trial", _gpus(out.gpus_per_trial, f"{where}.gpus_per_trial"))
        for key in ("address", "runs_dir", "storage", "tap_dir"):
            if not isinstance(getattr(out, key), str):
                raise ConfigError(f"{where}.{key}: expected a string, got {getattr(out, key)!r}")
        if not out.runs_dir or "\0" in out.runs_dir:
            raise ConfigError(f"{where}.runs_dir: expected a folder path, got {out.runs_dir!r}")
        if "\0" in out.tap_dir:
            raise ConfigError(f"{where}.tap_dir: expected a folder path, got {out.tap_dir!r}")
        if out.address:
            parse_address(out.address)
        check_storage(out.storage, f"{where}.storage")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "objectives": list(self.objectives)}


@dataclass(frozen=True)
class Config:
    """A validated configuration; `to_dict()` is the resolved file a run stores."""

    path: Path
    name: str
    data: dict[str, Any]
    backbones: BackbonesConfig
    space: SearchSpace
    train: TrainConfig
    search: SearchSettings
    plugins: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **({"plugins": list(self.plugins)} if self.plugins else {}),
            "data": dict(self.data),
            "backbones": self.backbones.to_dict(),
            "space": self.space.to_dict(),
            "train": self.train.to_dict(),
            "search": self.search.to_dict(),
        }


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and validate `path`; `overrides` replace `search:` keys (from the command line)."""
    path = Path(path)
    raw = read_yaml(path)
    with in_file(path):
        try:
            return config_from_dict(raw, path, overrides)
        except DataError as err:  # the data was read to learn its modalities
            raise ConfigError(str(err)) from None


TRUST_HINT = "open it with --trust-code (trust_code=True in Python) only if you trust whoever made it"


def code_in_config(raw: Mapping[str, Any]) -> list[str]:
    """What a config would import and run: its `plugins:` and its `kind: python` backbone factories."""
    out = []
    plugins = raw.get("plugins") or []
    if plugins:
        out.append(f"plugins: {', '.join(map(str, plugins)) if isinstance(plugins, list) else plugins!r}")
    backbones = raw.get("backbones")
    mods = backbones.get("modalities") if isinstance(backbones, Mapping) else None
    for m, d in sorted((mods or {}).items(), key=lambda kv: str(kv[0])) if isinstance(mods, Mapping) else ():
        if isinstance(d, Mapping) and d.get("kind") == "python":
            out.append(f"backbones.modalities.{m}.factory: {d.get('factory')!r}")
    return out


def config_from_dict(raw: Any, path: Path, overrides: Mapping[str, Any] | None = None, *,
                     trust_code: bool = True, run_dir: Path | None = None) -> Config:
    """Validate a parsed config (errors carry key paths, not the file).

    A config the user hands us is theirs (`trust_code`); a run's stored config may come from
    someone else: with `trust_code=False` a config that names code (`code_in_config`) is a
    ConfigError, and nothing is imported. Plugins import from the config's folder, never from
    `run_dir` (the run directory a stored config was read from) or a folder inside it."""
    raw = _mapping(raw, "config")
    _no_unknown(raw, SECTIONS, "config")
    code = code_in_config(raw)
    if code and not trust_code:
        raise ConfigError(f"names code to import and run ({'; '.join(code)}); {TRUST_HINT}")
    # a name from the file name is made legal; a name the user wrote is checked as written
    default = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).lstrip("._-")[:100] or "run"
    name = check_run_name(raw.get("name", default))
    plugins = raw.get("plugins") or []
    if not isinstance(plugins, list):
        raise ConfigError(f"plugins: expected a list of module names, got {plugins!r}")
    folder = path.parent.resolve()
    if run_dir is not None and (folder == run_dir.resolve() or run_dir.resolve() in folder.parents):
        folder = None  # a run directory's own modules are never imported
    load_plugins(plugins, folder)  # first: what they register is known to every check below
    data = _mapping(raw.get("data"), "data")
    if not isinstance(data.get("kind"), str) or data["kind"] not in list_datasets():
        raise ConfigError(f"data.kind: unknown dataset kind {data.get('kind')!r}; known: {', '.join(list_datasets())}")
    try:
        backbones = BackbonesConfig.from_dict(raw.get("backbones"), "backbones")
    except ConfigError:
        raise
    except ValueError as err:  # fusion_ops raises plain ValueErrors with the key path
        raise ConfigError(str(err)) from None
    if len(backbones.modalities) < 2:
        backbones = _with_default_backbones(backbones, data, path.parent)
    catalogue = {op: fusion_args(op) for op in list_fusions()}
    depths = {m: list(range(b.n_taps)) for m, b in backbones.modalities.items()}
    space = SearchSpace.from_dict(raw.get("space"), catalogue=catalogue, depths=depths, where="space")
    train = TrainConfig.from_dict(raw.get("train"), "train")
    search = SearchSettings.from_dict({**_mapping(raw.get("search"), "search"), **(overrides or {})})
    if train.device.startswith("cuda") and not search.gpus_per_trial:
        raise ConfigError(f"train.device: {train.device} needs search.gpus_per_trial > 0, or Ray gives the trials no "
                          "GPU (1: a GPU per trial; 0.25: four trials share one)")
    _check_options(search, space)
    return Config(path, name, dict(data), backbones, space, train, search, tuple(plugins))


def _check_options(search: SearchSettings, space: SearchSpace) -> None:
    """`search.options` must be keyword arguments the chosen strategy's constructor takes."""
    from search.strategies import STRATEGIES

    try:
        inspect.signature(STRATEGIES.get(search.strategy)).bind(space, seed=0, budget=1, cost_fn=None,
                                                                **search.options)
    except TypeError as err:
        raise ConfigError(f"search.options: the {search.strategy} strategy does not take these options ({err})") \
            from None


def _with_default_backbones(backbones: BackbonesConfig, data: Mapping[str, Any], base_dir: Path) -> BackbonesConfig:
    """Name a backbone for every modality of the data (the defaults by sample shape),
    so that the space knows each modality's taps and the resolved config says what ran."""
    dataset = load_dataset(data, base_dir)
    if len(dataset.modalities) < 2:
        raise ConfigError(f"data: fusion needs at least 2 modalities; the data has {len(dataset.modalities)}"
                          f" ({', '.join(dataset.modalities)})")
    chosen = {m: resolve_backbone(backbones, dataset, m) for m in dataset.modalities}
    return replace(backbones, modalities=chosen)


def _mapping(d: Any, where: str) -> dict[str, Any]:
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__} {d!r}")
    return dict(d)


def _no_unknown(d: Mapping[str, Any], known: Any, where: str) -> None:
    for key in d:
        if key not in known:
            label = f"{where}.{key}" if where != "config" else str(key)
            raise ConfigError(f"{label}: unknown key; known: {', '.join(known)}")


def _choice(value: Any, known: tuple[str, ...], where: str) -> None:
    if value not in known:
        raise ConfigError(f"{where}: unknown value {value!r}; known: {', '.join(known)}")


def _gpus(value: Any, where: str) -> float:
    """GPUs per trial as Ray takes them: a fraction in [0, 1] or a whole number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ConfigError(f"{where}: expected a number of GPUs >= 0 (e.g. 1, or 0.25 to share one GPU "
                          f"among four trials), got {value!r}")
    if value > 1 and value != int(value):
        raise ConfigError(f"{where}: Ray takes a fraction of one GPU or a whole number of them, got {value!r}")
    return float(value)


def _int(value: Any, low: int, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{where}: expected an integer >= {low}, got {value!r}")
