"""Deprecated private name of `fusion_ops.base` (kept while other branches still import it)."""
from fusion_ops.base import FusionOp, auxiliary_loss, with_one  # noqa: F401
