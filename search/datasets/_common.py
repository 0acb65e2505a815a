"""Deprecated private name of `search.datasets.common` (kept while other branches still import it)."""
from search.datasets.common import *  # noqa: F403
from search.datasets.common import _CHUNK, _NAME  # noqa: F401
