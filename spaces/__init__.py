"""What can be searched: argument declarations, architecture specs, search spaces.

Pure Python + numpy: nothing here imports torch.
"""
from __future__ import annotations

from spaces._space_config import OpChoice
from spaces.args import Arg, resolve_args
from spaces.registry import PluginError, Registry, load_plugins
from spaces.space import SearchSpace
from spaces.spec import ArchSpec, CellSpec
from spaces.yaml_errors import ConfigError, in_file, one_line, read_yaml

__all__ = ["Arg", "ArchSpec", "CellSpec", "ConfigError", "OpChoice", "PluginError", "Registry", "SearchSpace",
           "in_file", "load_plugins", "one_line", "read_yaml", "resolve_args"]
