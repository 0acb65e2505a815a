"""Name -> operator class registry (`@register_fusion`, `create_fusion`), a `spaces.registry.Registry`.

Third-party operators register with the same decorator from their own module, imported
by a config's `plugins:` list or by an entry point of group `fusion_nas.ops`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from spaces.args import Arg, resolve_args
from spaces.registry import Registry

if TYPE_CHECKING:
    from fusion_ops.base import FusionOp

OPERATORS: Registry[type[FusionOp]] = Registry("fusion operator", "ops")
T = TypeVar("T", bound="type[FusionOp]")


def register_fusion(name: str) -> Callable[[T], T]:
    """Class decorator: register a `FusionOp` subclass under `name` (duplicates raise)."""

    def deco(cls: T) -> T:
        OPERATORS.add(name, cls)
        cls.NAME = name
        return cls

    return deco


def list_fusions() -> list[str]:
    """Names of all registered fusion operators, sorted."""
    return OPERATORS.names()


def fusion_class(name: str) -> type[FusionOp]:
    """The class registered as `name`; an unknown name raises listing the known ones."""
    return OPERATORS.get(name)


def fusion_args(name: str) -> tuple[Arg, ...]:
    """The declared arguments (defaults and legal ranges) of operator `name`."""
    return fusion_class(name).ARGS


def create_fusion(name: str, in_dims: Mapping[str, int], out_dim: int, **args: Any) -> FusionOp:
    """Build operator `name` fusing modalities of widths `in_dims` into `out_dim` features."""
    cls = fusion_class(name)
    # check names and ranges here too, so a typo is a ValueError, not a TypeError
    return cls(in_dims, out_dim, **resolve_args(cls.ARGS, args, name))
