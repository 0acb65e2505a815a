"""Per-modality backbones, pretrained once as unimodal classifiers and cached on disk.

Each modality's backbone is trained with a linear classifier on that modality alone
(`UnimodalClassifier`, the `search.training.train.fit` loop: Adam, early stopping on val
accuracy, best weights restored). The result is stored under a key hashing everything
that decides it — the data config and a digest of the data itself, the backbone
config, the pretraining config (all but `threads`) and the cache format — so the next
run with the same settings loads the weights instead of training.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fusion_ops.backbones import Backbone, BackboneConfig, UnimodalClassifier, build_backbone
from fusion_ops.base import lengths_key
from fusion_ops.python_backbone import factory_digest
from search.datasets import Dataset
from search.training.device import resolve_device, to_device
from search.training.tasks import get_task
from search.training.train import TrainConfig, accuracy, check_section, dataset_tensors, fit, predict
from spaces.yaml_errors import ConfigError

CACHE_FORMAT = 1  # bump when what a cache file holds, or how it is trained, changes
DEFAULT_CACHE_DIR = "~/.cache/fusion-nas/backbones"
Progress = Callable[[str], Any]


@dataclass(frozen=True)
class PretrainConfig(TrainConfig):
    """`backbones.pretrain:` — the `train:` keys, with pretraining's defaults.

    Pretraining keeps the recipe it had before the step-budget recipe of `train:`
    (constant lr 3e-3, mini-batches, a val check and patience per epoch, no clipping):
    unimodal backbones are not slow starters, and every tap cache, test and measured
    number downstream is built on these weights. Any key can still be set.
    """

    epochs: int = 30
    lr: float = 3.0e-3
    weight_decay: float = 1.0e-4
    patience: int = 5
    max_steps: int = 0
    min_steps: int = 0
    eval_every: int = 0
    full_batch: int = 0
    schedule: str = "constant"
    warmup: float = 0.0
    grad_clip: float = 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "backbones.pretrain") -> PretrainConfig:
        return super().from_dict(d, where)  # type: ignore[return-value]


@dataclass(frozen=True)
class BackbonesConfig:
    """`backbones:` — per-modality encoders, how they pretrain, where they are cached.

    A modality without an entry in `modalities` gets `default_backbone(shape)`.
    `cache_dir: null` turns the disk cache off.
    """

    freeze: bool = True
    cache_dir: str | None = DEFAULT_CACHE_DIR
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    modalities: dict[str, BackboneConfig] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "backbones") -> BackbonesConfig:
        """Validated config; a mistake raises ConfigError naming its key path."""
        if d is None:
            return cls()
        check_section(d, where, ("freeze", "cache_dir", "pretrain", "modalities"))
        freeze = d.get("freeze", True)
        if not isinstance(freeze, bool):
            raise ConfigError(f"{where}.freeze: expected true or false, got {freeze!r}")
        cache_dir = d.get("cache_dir", DEFAULT_CACHE_DIR)
        if cache_dir is not None and (not isinstance(cache_dir, str) or not cache_dir):
            raise ConfigError(f"{where}.cache_dir: expected a folder path (or null for no cache), got {cache_dir!r}")
        mods = d.get("modalities") or {}
        if not isinstance(mods, Mapping):
            raise ConfigError(f"{where}.modalities: expected a mapping of modality -> backbone, got {mods!r}")
        modalities = {}
        for m, bd in mods.items():
            try:
                modalities[str(m)] = BackboneConfig.from_dict(bd, f"{where}.modalities.{m}")
            except ValueError as err:
                raise ConfigError(str(err)) from None
        pretrain = PretrainConfig.from_dict(d.get("pretrain"), f"{where}.pretrain")
        return cls(freeze, cache_dir, pretrain, dict(sorted(modalities.items())))

    def to_dict(self) -> dict[str, Any]:
        return {
            "freeze": self.freeze,
            "cache_dir": self.cache_dir,
            "pretrain": self.pretrain.to_dict(),
            "modalities": {m: b.to_dict() for m, b in self.modalities.items()},
        }

    def backbone_for(self, modality: str, shape: tuple[int, ...]) -> BackboneConfig:
        return self.modalities.get(modality) or default_backbone(shape)


def default_backbone(shape: tuple[int, ...], input_type: str = "dense") -> BackboneConfig:
    """mlp for vectors, conv1d for `(T, F)` samples (sequences, padded or not, and spectrograms),
    cnn2d for `(C, H, W)` images; embedding for categorical fields, text for token IDs; default
    sizes. A `(H, W)` image wants `kind: cnn2d` by name."""
    if input_type != "dense":
        return BackboneConfig.from_dict({"kind": ID_KINDS[input_type]})
    return BackboneConfig.from_dict({"kind": {1: "mlp", 2: "conv1d"}.get(len(shape), "cnn2d")})


ID_KINDS = {"categorical": "embedding", "text": "text"}  # the backbone each kind of ID modality reads with


def resolve_backbone(cfg: BackbonesConfig, dataset: Dataset, modality: str) -> BackboneConfig:
    """The backbone `modality` gets (its entry in `cfg`, or the default for its shape and type),
    with the table sizes of an `embedding` or `text` backbone read from the data's train split.
    A backbone that cannot read the modality's kind of input is a `ConfigError` naming the key."""
    bcfg = cfg.modalities.get(modality) or default_backbone(dataset.shapes[modality], dataset.input_type(modality))
    kind = dataset.input_type(modality)
    wants = ID_KINDS.get(kind)
    where = f"backbones.modalities.{modality}.kind"
    if bcfg.kind in ID_KINDS.values() and bcfg.kind != wants:
        raise ConfigError(f"{where}: the {bcfg.kind} backbone reads {'token IDs' if bcfg.kind == 'text' else 'categorical IDs'}"
                          f", but {modality!r} holds {kind} inputs" + (f"; use {wants}" if wants else ""))
    if wants and bcfg.kind not in (wants, "python"):
        raise ConfigError(f"{where}: {modality!r} holds {kind} IDs, which the {bcfg.kind} backbone would read as "
                          f"magnitudes; use {wants} (or data.modalities.{modality}.type: dense if they are numbers)")
    if wants and bcfg.kind == wants:
        rows = dataset.codings[modality].rows
        return BackboneConfig.from_dict({**bcfg.to_dict(), "rows": list(rows) if kind == "categorical" else rows[0]})
    return bcfg


class _OneModality(nn.Module):
    """`{modality: x, ...} -> classifier(x)`, so `fit` can train a unimodal classifier."""

    def __init__(self, modality: str, classifier: UnimodalClassifier) -> None:
        super().__init__()
        self.modality = modality
        self.classifier = classifier

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.classifier(inputs[self.modality], inputs.get(lengths_key(self.modality)))


def pretrain_backbones(
    dataset: Dataset,
    cfg: BackbonesConfig,
    data_cfg: Mapping[str, Any],
    *,
    progress: Progress | None = None,
) -> tuple[dict[str, Backbone], dict[str, dict[str, Any]]]:
    """One pretrained backbone per modality (eval mode) and per-modality info.

    Info: kind, val_accuracy, test_accuracy (of the unimodal classifier), epochs,
    best_epoch, seconds (of training), cached (loaded from disk), path (None without
    a cache), key. `data_cfg` is the `data:` section the dataset came from.
    """
    extra = sorted(set(cfg.modalities) - set(dataset.modalities))
    if extra:
        raise ConfigError(f"backbones.modalities.{extra[0]}: no such modality in the data; "
                          f"it has {', '.join(dataset.modalities)}")
    say = progress or (lambda _msg: None)
    backbones, infos = {}, {}
    for m in dataset.modalities:
        bcfg = resolve_backbone(cfg, dataset, m)
        key = cache_key(dataset, m, bcfg, cfg.pretrain, data_cfg)
        path = None
        if cfg.cache_dir is not None:
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{dataset.name}-{m}")
            path = Path(cfg.cache_dir).expanduser() / f"{name}-{key}.pt"
        clf = _new_classifier(dataset, m, bcfg, cfg.pretrain)
        if not bcfg.pretrain:  # an encoder that comes pretrained: used as its factory made it
            say(f"{m}: {bcfg.kind} backbone used as given (pretrain: false)")
            backbones[m] = clf.backbone.eval()
            infos[m] = {"kind": bcfg.kind, "pretrained": False, "val_accuracy": float("nan"),
                        "test_accuracy": float("nan"), "epochs": 0, "best_epoch": 0, "seconds": 0.0,
                        "cached": False, "path": None, "key": key}
            continue
        info = _load(path, clf) if path is not None else None
        if info is None:
            say(f"pretraining the {m} backbone ({bcfg.kind} {list(bcfg.sizes) or bcfg.option('factory')})")
            clf = _new_classifier(dataset, m, bcfg, cfg.pretrain)  # a failed load may have half-filled it
            info = _train(dataset, m, clf, cfg.pretrain, say)
            if path is not None:
                _save(path, clf, info)
        info.update(cached=info.get("cached", False), path=None if path is None else str(path), key=key)
        score = "" if dataset.task == "classification" else f" {get_task(dataset.task).selection or '-MSE'}"
        say(f"{m}: unimodal{score} val {info['val_accuracy']:.3f}, test {info['test_accuracy']:.3f}"
            f"{' (cached)' if info['cached'] else ''}")
        backbones[m], infos[m] = clf.backbone.eval(), info
    mark_padded(backbones, dataset)
    return backbones, infos


def mark_padded(backbones: Mapping[str, Backbone], dataset: Dataset) -> None:
    """Set `padded` on the backbone of each modality the data pads (it comes with lengths):
    a fusion pools those tokens instead of flattening them (`fusion_ops.model.flat_taps`)."""
    padded = dataset.lengths_of("train")
    for m, b in backbones.items():
        b.padded = m in padded


def cache_key(dataset: Dataset, modality: str, bcfg: BackboneConfig, pcfg: PretrainConfig,
              data_cfg: Mapping[str, Any]) -> str:
    """16 hex digits naming one pretrained backbone: same key, same training, same weights."""
    payload = {
        "format": CACHE_FORMAT,
        "data": dict(data_cfg),
        "digest": _data_digest(dataset, modality),
        "modality": modality,
        "backbone": bcfg.to_dict(),
        "code": factory_digest(bcfg) if bcfg.kind == "python" else "",  # user code changed: retrain
        # threads do not change the result; nor, by choice, the device: CPU and GPU runs share one cache
        "pretrain": {k: v for k, v in pcfg.to_dict().items() if k not in ("threads", "device")},
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _data_digest(dataset: Dataset, modality: str) -> str:
    """BLAKE2 of the modality's arrays and the labels of every split: a changed file changes the key."""
    h = hashlib.blake2b(digest_size=16)
    for split in ("train", "val", "test"):
        xs, y = dataset.split(split)
        for a in (xs[modality], y):
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _new_classifier(dataset: Dataset, m: str, bcfg: BackboneConfig, pcfg: PretrainConfig) -> UnimodalClassifier:
    # each modality draws from its own generator: one modality's weights never depend on another's
    g = torch.Generator().manual_seed(pcfg.seed)
    return UnimodalClassifier(build_backbone(bcfg, dataset.shapes[m], g), dataset.num_classes, g)


def _train(dataset: Dataset, m: str, clf: UnimodalClassifier, pcfg: PretrainConfig,
           say: Progress | None = None) -> dict[str, Any]:
    """Train `clf` on `pcfg.device` (`resolve_device`); it comes back on the CPU."""
    device = resolve_device(pcfg.device, say, "backbones.pretrain.device")
    model = _OneModality(m, clf).to(device)
    train, val, test = (to_device(dataset_tensors(dataset, split, [m]), device) for split in ("train", "val", "test"))
    task = get_task(dataset.task, dataset.target_scale)  # the task's own loss: a regression backbone learns MSE
    try:
        result = fit(model, train, val, pcfg, task=task)
        if result.status != "ok":
            raise RuntimeError(f"pretraining the {m} backbone failed: {result.reason}; lower backbones.pretrain.lr")
        test_score = accuracy(model, test) if task.name == "classification" else \
            task.score(predict(model, test[0]), test[1])
    finally:
        model.cpu()  # the disk cache and the tap cache's callers get CPU weights
    return {
        "kind": clf.backbone.KIND,
        # the task's selection score (`Task.score`): accuracy for classification
        "val_accuracy": result.val_accuracy,
        "test_accuracy": test_score,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
    }


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save(path: Path, clf: UnimodalClassifier, info: Mapping[str, Any]) -> None:
    _atomic_write(path, lambda f: torch.save(clf.state_dict(), f))
    # the JSON goes last: its presence says the weights next to it are complete
    _atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(dict(info), indent=1).encode()))


def _load(path: Path, clf: UnimodalClassifier) -> dict[str, Any] | None:
    """The cached info after loading the weights into `clf`; None on a miss or an unreadable entry."""
    meta = path.with_suffix(".json")
    if not (path.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text())
        clf.load_state_dict(torch.load(path, weights_only=True))
    except Exception:  # a damaged entry is a miss: it is retrained and overwritten
        return None
    return {**info, "cached": True}
