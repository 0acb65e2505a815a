"""The `fusion-nas` command (also `python -m search`): a thin layer over `search.api`.

- `commands`: the parser, `main`, and `search`, `show`, `ops`, `space`, `init`;
- `results`: `report`, `export`, `evaluate` (what a user does after a search);
- `display`: what the terminal shows (the live progress line, the front table);
- `starter`: the commented starter config `fusion-nas init` writes.
"""
from __future__ import annotations

from search.cli.commands import main

__all__ = ["main"]
