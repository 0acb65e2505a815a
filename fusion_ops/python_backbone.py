"""`kind: python`: an encoder from user code, tapped at named submodules by forward hooks.

Config: `{kind: python, factory: "my_pkg.encoders:make_audio", taps: [block1, block2],
args: {...}, pretrain: true}`. The factory is called as `factory(input_shape, **args)`
(or `factory(**args)` if it takes no positional argument) and returns an `nn.Module`
taking `(B, *input_shape)`. Tap 0 is the raw input (as for built-in backbones), tap k
the output of submodule `taps[k-1]`: `(B, d)` is a vector, `(B, T, d)` tokens,
`(B, C, H, W)` becomes tokens `(B, H*W, C)`; the last tap is pooled to the embedding
(mean over tokens). Shapes come from one dry run at build time. The whole module runs
(and its FLOPs count), up to its own output. `pretrain: false` keeps the factory's
weights (an encoder that comes pretrained, e.g. from a file the factory loads).
"""
from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from fusion_ops.backbones import Backbone, BackboneConfig, BackboneKind, register_backbone
from spaces.registry import import_object

KEYS = ("factory", "taps", "args", "pretrain")


class PythonBackbone(Backbone):
    """`module` (from a factory) read at `tap_modules` by forward hooks."""

    KIND = "python"

    def __init__(self, input_shape: tuple[int, ...], module: nn.Module, tap_modules: tuple[str, ...]) -> None:
        super().__init__(input_shape)
        self.module = module
        self.tap_modules = tuple(tap_modules)
        named = dict(module.named_modules())
        for name in self.tap_modules:
            if name not in named or not name:
                known = ", ".join(n for n in named if n) or "none"
                raise ValueError(f"taps: the module has no submodule {name!r}; it has {known}")
        self._subs = [named[n] for n in self.tap_modules]

    @property
    def full_depth(self) -> int:
        return len(self.tap_modules)

    def lean(self, depth: int) -> Backbone:
        """A user module cannot be cut at a tap: a candidate reading any depth > 0 runs (and
        is charged for) the whole module; reading only the raw input (depth 0) runs none of it."""
        if not 0 <= depth <= self.full_depth:
            raise ValueError(f"python backbone: depth {depth} is outside 0..{self.full_depth}")
        return self if depth > 0 else _RawOnly(self)

    def forward_taps(self, x: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        if tuple(x.shape[1:]) != self.input_shape:
            expected = ", ".join(map(str, ("B", *self.input_shape)))
            raise ValueError(f"python backbone: expected inputs ({expected}), got {tuple(x.shape)}")
        if lengths is not None:
            raise ValueError("python backbone: cannot read padded sequences (lengths given); "
                             "give the factory's module unpadded inputs or use conv1d / gru")
        seen: dict[int, Tensor] = {}

        def hook(i: int) -> Any:
            def read(_mod: nn.Module, _inp: Any, out: Any) -> None:
                seen[i] = out[0] if isinstance(out, (tuple, list)) else out  # e.g. nn.GRU's (output, h)
            return read

        handles = [sub.register_forward_hook(hook(i)) for i, sub in enumerate(self._subs)]
        try:
            self.module(x)
        finally:
            for h in handles:
                h.remove()
        taps = [x if x.dim() == 3 else x.flatten(1)]
        for i, name in enumerate(self.tap_modules):
            if i not in seen or not isinstance(seen[i], Tensor):
                raise ValueError(f"taps: submodule {name!r} did not run (or gave no tensor) in forward")
            taps.append(_as_tap(seen[i], name, last=i == len(self.tap_modules) - 1))
        return taps


class _RawOnly(Backbone):
    """A python backbone read at depth 0 only: the raw input is its one tap; no module runs."""

    KIND = "python"

    def __init__(self, whole: PythonBackbone) -> None:
        super().__init__(whole.input_shape)
        self.n_blocks = whole.full_depth
        self.tap_shapes = list(whole.tap_shapes[:1])

    @property
    def full_depth(self) -> int:
        return self.n_blocks

    def forward_taps(self, x: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        return [x if x.dim() == 3 else x.flatten(1)]


def _as_tap(out: Tensor, name: str, last: bool) -> Tensor:
    """A hooked output as a tap: vector `(B, d)` or tokens `(B, T, d)`; the last one pooled."""
    if out.dim() == 4:
        out = out.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)
    if out.dim() not in (2, 3):
        raise ValueError(f"taps: submodule {name!r} gives shape {tuple(out.shape)}; "
                         "a tap must be (B, d), (B, T, d) or (B, C, H, W)")
    return out.mean(dim=1) if last and out.dim() == 3 else out


def _parse(d: Mapping[str, Any], where: str) -> dict[str, Any]:
    for key in d:
        if key not in KEYS:
            raise ValueError(f"{where}.{key}: unknown key for a python backbone; known: kind, {', '.join(KEYS)}")
    factory = d.get("factory")
    if not isinstance(factory, str) or factory.count(":") != 1 or not all(factory.split(":")):
        raise ValueError(f"{where}.factory: expected 'module:function' naming a function that returns "
                         f"an nn.Module, got {factory!r}")
    root = factory.split(":")[0].split(".")[0]
    if root in sys.stdlib_module_names or root in sys.builtin_module_names:
        raise ValueError(f"{where}.factory: {factory!r} is in Python's standard library, not a model factory; "
                         "name your own function that returns an nn.Module")
    taps = d.get("taps")
    if not isinstance(taps, (list, tuple)) or not taps or not all(isinstance(t, str) and t for t in taps):
        raise ValueError(f"{where}.taps: expected a non-empty list of submodule names, got {taps!r}")
    if len(set(taps)) != len(taps):
        raise ValueError(f"{where}.taps: a submodule is named twice: {list(taps)}")
    args = d.get("args", {}) or {}
    if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
        raise ValueError(f"{where}.args: expected a mapping of keyword arguments for the factory, got {args!r}")
    pretrain = d.get("pretrain", True)
    if not isinstance(pretrain, bool):
        raise ValueError(f"{where}.pretrain: expected true or false, got {pretrain!r}")
    return {"factory": factory, "taps": list(taps), "args": dict(args), "pretrain": pretrain}


def _build(input_shape: tuple[int, ...], cfg: BackboneConfig) -> PythonBackbone:
    where = "factory"
    make = import_object(cfg.option("factory"), where)
    if not callable(make):
        raise ValueError(f"{where}: {cfg.option('factory')!r} is not callable")
    args = dict(cfg.option("args") or ())
    params = [p for p in inspect.signature(make).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in args]
    module = make(tuple(input_shape), **args) if params else make(**args)
    if not isinstance(module, nn.Module):
        raise ValueError(f"{where}: {cfg.option('factory')!r} returned {type(module).__name__}, not an nn.Module")
    return PythonBackbone(input_shape, module, tuple(cfg.option("taps")))


def factory_digest(cfg: BackboneConfig) -> str:
    """A digest of the factory's source file (part of a pretrained backbone's cache key)."""
    import hashlib

    try:
        obj = import_object(cfg.option("factory"), "factory")
        text = inspect.getsource(inspect.getmodule(obj))  # type: ignore[arg-type]
    except Exception:  # no source (a compiled module): the name alone keys the cache
        return ""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


register_backbone("python", BackboneKind(
    _build, None, "what the factory's module takes", parse=_parse, n_taps=lambda cfg: len(cfg.option("taps")) + 1))

__all__ = ["PythonBackbone", "factory_digest"]
