"""Architecture specs: what one candidate fusion network is, as plain data.

An `ArchSpec` is a stage, a chain of fusion `CellSpec`s and an MLP head. It is
frozen, hashable, round-trips through dicts/YAML/JSON, and its `arch_id` is a hash
of its canonical JSON, so equal specs always get equal ids.
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

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "cells": [c.to_dict() for c in self.cells], "head": list(self.head)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchSpec:
        return cls(
            stage=d["stage"],
            cells=tuple(CellSpec.from_dict(c) for c in d["cells"]),
            head=tuple(int(w) for w in d.get("head") or ()),
        )

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> ArchSpec:
        return cls.from_dict(yaml.safe_load(text))

    @property
    def arch_id(self) -> str:
        """12 hex digits of the SHA-256 of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(c.op for c in self.cells)

    def describe(self) -> str:
        """One line for tables and hover text: `hybrid: tensor(a@1,b@2)->concat(a@3,b@3)`."""
        cells = " -> ".join(
            f"{c.op}({','.join(c.taps)}{''.join(f',{k}={v}' for k, v in c.args)})/{c.width}" for c in self.cells
        )
        head = f" | head {list(self.head)}" if self.head else ""
        return f"{self.stage}: {cells}{head}"
