"""One registry style for every extension point: operators, backbones, datasets, strategies.

A `Registry` maps names to objects (a class, a constructor, a loader). Built-in entries
register by decorator (`@REG.register("name")`); third-party code registers the same way
from its own module, which a config's `plugins: [module, ...]` list or an installed
package's entry point (group `fusion_nas.<kind>`, e.g. `fusion_nas.ops`) imports. Entry
points are read lazily, the first time a registry is asked for its names, so that an
installed plugin's names are known everywhere a list of names is (config checks, CLI
choices, `fusion-nas ops`). Duplicate names raise; an unknown name lists the known ones.

Pure Python (no torch): `spaces` is the bottom of the import arrows.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

from spaces.yaml_errors import ConfigError, one_line

T = TypeVar("T")
ENTRY_POINT_PREFIX = "fusion_nas."
IMPORT_PATHS: list[str] = []  # folders added by `add_import_path` (a Ray worker needs them too)


class PluginError(ConfigError):
    """A plugin module or entry point that cannot be imported or registers badly (one line)."""


class Registry(Generic[T]):
    """Name -> `T`, filled by `register` and by the entry points of group `fusion_nas.<group>`."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind  # what an entry is, for messages: "fusion operator", "backbone kind", ...
        self.group = ENTRY_POINT_PREFIX + group
        self._entries: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object as `name` (a duplicate name raises)."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        """Register `obj` as `name`; ValueError if the name is taken or not a plain name."""
        if not isinstance(name, str) or not name or not name.replace("_", "a").replace("-", "a").isalnum():
            raise ValueError(f"{self.kind} name must be letters, digits, _ or -, got {name!r}")
        if name in self._entries and self._entries[name] is not obj:
            held = getattr(self._entries[name], "__qualname__", repr(self._entries[name]))
            raise ValueError(f"{self.kind} {name!r} is already registered by {held}")
        self._entries[name] = obj

    def unregister(self, name: str) -> None:
        """Remove `name` if registered (tests, notebooks re-running a cell that registers)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        """Every registered name (entry points included), sorted."""
        self.load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str, where: str = "") -> T:
        """The entry `name`; an unknown name raises ValueError listing the known ones."""
        if name not in self._entries:
            self.load_entry_points()
        if name not in self._entries:
            prefix = f"{where}: " if where else ""
            raise ValueError(f"{prefix}unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]

    def load_entry_points(self) -> None:
        """Import every installed entry point of this registry's group, once."""
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in sorted(importlib.metadata.entry_points(group=self.group), key=lambda e: e.name):
            try:
                obj = ep.load()
            except Exception as err:
                raise PluginError(one_line(f"entry point {self.group}:{ep.name} ({ep.value}) failed to import: "
                                           f"{type(err).__name__}: {err}")) from None
            # an entry point may name a module (which registers on import) or the object itself
            if ep.name not in self._entries and not isinstance(obj, type(sys)):
                self.add(ep.name, obj)


def load_plugins(modules: Iterable[str], base_dir: str | Path | None = None, where: str = "plugins") -> None:
    """Import each plugin module (its import registers what it defines), the config's folder
    `base_dir` first on the path; a module that fails to import is a PluginError naming it."""
    add_import_path(base_dir)
    for i, name in enumerate(modules):
        if not isinstance(name, str) or not name:
            raise PluginError(f"{where}[{i}]: expected a module name, got {name!r}")
        try:
            importlib.import_module(name)
        except Exception as err:
            raise PluginError(one_line(f"{where}[{i}]: cannot import plugin module {name!r}: "
                                       f"{type(err).__name__}: {err}")) from None


def add_import_path(folder: str | Path | None) -> None:
    """Put `folder` (a config's folder) on `sys.path`, once, so its modules import by name."""
    if folder is None:
        return
    path = str(Path(folder).resolve())
    if path not in sys.path:
        sys.path.append(path)  # appended: a config's folder never shadows an installed package
    if path not in IMPORT_PATHS:
        IMPORT_PATHS.append(path)


def import_object(ref: str, where: str, base_dir: str | Path | None = None) -> object:
    """The object named `"package.module:attr"` (attr may be dotted); PluginError naming `where` if not found."""
    if not isinstance(ref, str) or ref.count(":") != 1 or not all(ref.split(":")):
        raise PluginError(f"{where}: expected 'module:name', got {ref!r}")
    module_name, attr = ref.split(":")
    add_import_path(base_dir)
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as err:
        raise PluginError(one_line(f"{where}: cannot import module {module_name!r} ({type(err).__name__}: {err})"))\
            from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"{where}: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj
