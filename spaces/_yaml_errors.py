"""Deprecated private name of `spaces.yaml_errors` (kept while other branches still import it)."""
from spaces.yaml_errors import ConfigError, StrictLoader, at, in_file, one_line, parse_yaml, read_yaml  # noqa: F401
