"""The one error every data loader raises (`search.datasets.common` re-exports it)."""


class DataError(ValueError):
    """Bad data config or bad data file; the message names the config key or the file and array."""
