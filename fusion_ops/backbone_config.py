"""A backbone's configuration side: the `BACKBONE_KINDS` registry and `BackboneConfig`.

Each kind (`mlp`, `cnn2d`, `conv1d`, `gru`, `python`, a plugin's) registers a
`BackboneKind`: how its config is read and validated, how many taps it gives before any
data is seen (the search space needs that), and how it is built for an input shape.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spaces.registry import Registry

if TYPE_CHECKING:
    from fusion_ops.backbones import Backbone


@dataclass(frozen=True)
class BackboneKind:
    """How one kind of backbone is configured and built (an entry of `BACKBONE_KINDS`).

    Built-in kinds are a chain of blocks with one width per block, listed under
    `size_key` in a config; a kind with other keys (`python`: a factory) gives `parse`,
    which validates them into `BackboneConfig.options`, and `n_taps`.
    """

    build: Callable[[tuple[int, ...], BackboneConfig], Backbone]
    ranks: tuple[int, ...] | None  # legal input ranks per sample (None: any)
    expected: str  # what those ranks mean, for messages
    size_key: str = ""
    default_sizes: tuple[int, ...] = ()
    parse: Callable[[Mapping[str, Any], str], dict[str, Any]] | None = None
    n_taps: Callable[[BackboneConfig], int] | None = None
    sequence: bool = False  # reads (T, F) samples as sequences, and takes their lengths


BACKBONE_KINDS: Registry[BackboneKind] = Registry("backbone", "backbones")


def register_backbone(name: str, kind: BackboneKind) -> None:
    """Register a backbone kind under `name` (a duplicate raises)."""
    BACKBONE_KINDS.add(name, kind)


def list_backbones() -> list[str]:
    """Names of all registered backbone kinds, sorted."""
    return BACKBONE_KINDS.names()


def _check_kind(kind: Any, label: str) -> str:
    if not isinstance(kind, str) or kind not in BACKBONE_KINDS:
        raise ValueError(f"{label}: unknown backbone {kind!r}; known: {', '.join(list_backbones())}")
    return kind


def _check_sizes(sizes: Any, label: str) -> tuple[int, ...]:
    if (
        not isinstance(sizes, (list, tuple))
        or not sizes
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes)
    ):
        raise ValueError(f"{label}: expected a non-empty list of positive integers, got {sizes!r}")
    return tuple(sizes)


def _frozen(value: Any) -> Any:
    """A hashable copy of a parsed config value (lists -> tuples, dicts -> sorted item tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


@dataclass(frozen=True)
class BackboneConfig:
    """`kind` (a registered backbone) and the widths of its blocks, one per block
    (`channels`, `hidden` or `widths` in a config dict, by kind); `options` holds the
    other keys a kind reads (a `python` backbone's factory and taps), already validated."""

    kind: str
    sizes: tuple[int, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        spec = BACKBONE_KINDS.get(_check_kind(self.kind, "BackboneConfig.kind"))
        if spec.size_key:
            object.__setattr__(self, "sizes", _check_sizes(self.sizes, "BackboneConfig.sizes"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "backbone") -> BackboneConfig:
        """Validated config; errors name the key path, e.g. `backbones.audio.kind: ...`."""
        if not isinstance(d, Mapping):
            raise ValueError(f"{where}: expected a mapping with a 'kind', got {d!r}")
        kind = _check_kind(d.get("kind"), f"{where}.kind")
        spec = BACKBONE_KINDS.get(kind)
        if spec.parse is not None:
            options = spec.parse({k: v for k, v in d.items() if k != "kind"}, where)
            return cls(kind, (), tuple(sorted((k, _frozen(v)) for k, v in options.items())))
        key, default = spec.size_key, spec.default_sizes
        unknown = sorted(set(d) - {"kind", key})
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: unknown key for a {kind} backbone; known: kind, {key}")
        return cls(kind, _check_sizes(d.get(key, default), f"{where}.{key}"))

    def to_dict(self) -> dict[str, Any]:
        spec = BACKBONE_KINDS.get(self.kind)
        if spec.size_key:
            return {"kind": self.kind, spec.size_key: list(self.sizes)}
        return {"kind": self.kind, **{k: _plain(v) for k, v in self.options}}

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    @property
    def n_taps(self) -> int:
        """How many taps the backbone gives (tap 0 = the raw input), known before any data is read."""
        spec = BACKBONE_KINDS.get(self.kind)
        return spec.n_taps(self) if spec.n_taps is not None else len(self.sizes) + 1

    @property
    def pretrain(self) -> bool:
        """False for an encoder that comes pretrained (`pretrain: false`): it is used as it is."""
        return bool(self.option("pretrain", True))


def _plain(value: Any) -> Any:
    """Undo `_frozen` for `to_dict`: sorted `(key, value)` pairs become a dict, other tuples lists."""
    if not isinstance(value, tuple):
        return value
    pairs = value and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value)
    if pairs and list(value) == sorted(value, key=lambda kv: kv[0]) and len({k for k, _ in value}) == len(value):
        return {k: _plain(v) for k, v in value}
    return [_plain(v) for v in value]
