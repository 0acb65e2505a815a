"""Architecture specs: what one candidate fusion network is, as plain data.

An `ArchSpec` is a stage, a chain of fusion `CellSpec`s and an MLP head, plus the
training settings searched with it (`train`: lr, weight decay, ...; empty when the
space searches none). It is frozen, hashable and round-trips through
dicts/YAML/JSON. `arch_id` hashes the architecture alone (equal networks, equal
ids, however they train); `candidate_id` hashes architecture and training settings.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import yaml

STAGES = ("early", "late", "hybrid")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "identity")
PREV = "_prev"  # input name under which a hybrid cell receives the previous cell's output


def make_tap(modality: str, depth: int) -> str:
    """`"image", 2 -> "image@2"`: tap `depth` of a modality's backbone (0 = raw input)."""
    return f"{modality}@{depth}"


def parse_tap(tap: str) -> tuple[str, int]:
    """`"image@2" -> ("image", 2)`; raises ValueError on anything else."""
    modality, sep, depth = tap.rpartition("@")
    if not sep or not modality or not depth.isdigit():
        raise ValueError(f"tap must look like 'modality@depth', got {tap!r}")
    return modality, int(depth)


@dataclass(frozen=True)
class CellSpec:
    """One fusion step: one tap per modality (sorted), an operator with its arguments,
    the output width and the activation applied to the operator's output."""

    taps: tuple[str, ...]
    op: str
    width: int
    activation: str = "relu"
    args: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        # canonical order, so equal cells compare (and hash) equal whatever the input order
        object.__setattr__(self, "taps", tuple(sorted(self.taps, key=lambda t: parse_tap(t)[0])))
        object.__setattr__(self, "args", tuple(sorted((str(k), v) for k, v in dict(self.args).items())))

    @property
    def depths(self) -> dict[str, int]:
        """`{modality: depth}` of this cell's taps."""
        return dict(parse_tap(t) for t in self.taps)

    @property
    def op_args(self) -> dict[str, Any]:
        return dict(self.args)

    def to_dict(self) -> dict[str, Any]:
        return {
            "taps": list(self.taps),
            "op": self.op,
            "args": dict(self.args),
            "width": self.width,
            "activation": self.activation,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellSpec:
        return cls(
            taps=tuple(d["taps"]),
            op=d["op"],
            width=int(d["width"]),
            activation=d.get("activation", "relu"),
            args=tuple(dict(d.get("args") or {}).items()),
        )


@dataclass(frozen=True)
class ArchSpec:
    """A candidate: `stage` (early | late | hybrid), fusion `cells` (hybrid: a chain,
    each cell also fed the previous one's output under the name `_prev`), and the
    hidden widths of the MLP `head` before the classifier (the early-fusion trunk)."""

    stage: str
    cells: tuple[CellSpec, ...]
    head: tuple[int, ...] = field(default=())
    train: tuple[tuple[str, Any], ...] = field(default=())  # searched training settings, sorted by name

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", tuple(sorted((str(k), v) for k, v in dict(self.train).items())))

    def to_dict(self) -> dict[str, Any]:
        """Plain data; `train` appears only when the spec has training settings."""
        out = self.arch_dict()
        if self.train:
            out["train"] = dict(self.train)
        return out

    def arch_dict(self) -> dict[str, Any]:
        """The architecture alone (what `arch_id` hashes)."""
        return {"stage": self.stage, "cells": [c.to_dict() for c in self.cells], "head": list(self.head)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchSpec:
        return cls(
            stage=d["stage"],
            cells=tuple(CellSpec.from_dict(c) for c in d["cells"]),
            head=tuple(int(w) for w in d.get("head") or ()),
            train=tuple(dict(d.get("train") or {}).items()),
        )

    @property
    def train_settings(self) -> dict[str, Any]:
        """`{setting: value}` of the searched training settings (empty if none)."""
        return dict(self.train)

    @property
    def architecture(self) -> ArchSpec:
        """This spec without training settings."""
        return ArchSpec(self.stage, self.cells, self.head)

    def with_train(self, settings: dict[str, Any]) -> ArchSpec:
        """This architecture with the training settings `settings` (replacing any it had)."""
        return ArchSpec(self.stage, self.cells, self.head, tuple(settings.items()))

    def to_json(self) -> str:
        """Canonical JSON of the whole candidate: sorted keys, no whitespace."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> ArchSpec:
        return cls.from_dict(yaml.safe_load(text))

    @property
    def arch_id(self) -> str:
        """12 hex digits of the SHA-256 of the architecture's canonical JSON (training settings left out)."""
        return _digest(self.arch_dict())

    @property
    def candidate_id(self) -> str:
        """Like `arch_id`, over architecture and training settings: one id per distinct candidate
        (equal to `arch_id` when the spec has no training settings)."""
        return _digest(self.to_dict())

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(c.op for c in self.cells)

    def describe(self) -> str:
        """One line for tables and hover text: `hybrid: tensor(a@1,b@2)->concat(a@3,b@3)`."""
        cells = " -> ".join(
            f"{c.op}({','.join(c.taps)}{''.join(f',{k}={v}' for k, v in c.args)})/{c.width}" for c in self.cells
        )
        head = f" | head {list(self.head)}" if self.head else ""
        train = f" | {' '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in self.train)}" \
            if self.train else ""
        return f"{self.stage}: {cells}{head}{train}"


def _digest(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
