"""Name -> operator class registry (`@register_fusion`, `create_fusion`)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from spaces.args import Arg, resolve_args

if TYPE_CHECKING:
    from fusion_ops._base import FusionOp

_REGISTRY: dict[str, type[FusionOp]] = {}
T = TypeVar("T", bound="type[FusionOp]")


def register_fusion(name: str) -> Callable[[T], T]:
    """Class decorator: register a `FusionOp` subclass under `name` (duplicates raise)."""

    def deco(cls: T) -> T:
        if name in _REGISTRY:
            raise ValueError(f"fusion operator {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.NAME = name
        _REGISTRY[name] = cls
        return cls

    return deco


def list_fusions() -> list[str]:
    """Names of all registered fusion operators, sorted."""
    return sorted(_REGISTRY)


def fusion_class(name: str) -> type[FusionOp]:
    """The class registered as `name`; an unknown name raises listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown fusion operator {name!r}; known: {', '.join(list_fusions())}") from None


def fusion_args(name: str) -> tuple[Arg, ...]:
    """The declared arguments (defaults and legal ranges) of operator `name`."""
    return fusion_class(name).ARGS


def create_fusion(name: str, in_dims: Mapping[str, int], out_dim: int, **args: Any) -> FusionOp:
    """Build operator `name` fusing modalities of widths `in_dims` into `out_dim` features."""
    cls = fusion_class(name)
    # check names and ranges here too, so a typo is a ValueError, not a TypeError
    return cls(in_dims, out_dim, **resolve_args(cls.ARGS, args, name))
