"""What can be searched: argument declarations, architecture specs, search spaces.

Pure Python + numpy: nothing here imports torch.
"""
from __future__ import annotations

from spaces._yaml_errors import ConfigError
from spaces.args import Arg, resolve_args
from spaces.space import SearchSpace
from spaces.spec import ArchSpec, CellSpec

__all__ = ["Arg", "ArchSpec", "CellSpec", "ConfigError", "SearchSpace", "resolve_args"]
