"""What can be searched: argument declarations, architecture specs, search spaces.

Pure Python + numpy: nothing here imports torch.
"""
from __future__ import annotations

from spaces.args import Arg, resolve_args

__all__ = ["Arg", "resolve_args"]
