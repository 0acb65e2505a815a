"""What each modality's numbers are: `dense` features, `categorical` IDs or `text` tokens.

The rule, when `data.modalities` names no type:

- an integer array `(N,)` or `(N, F)` is `categorical` (one field per column), unless it comes
  with `<m>_lengths` / `<m>_mask`: then it is `text` `(N, T)`;
- `uint8` arrays (bytes, such as pixels) and every float or boolean array are `dense`, and so is
  any array of more than two dimensions.

`data.modalities: {name: {type: categorical | text | dense, buckets: N}}` overrides the rule
(`type: text` without lengths takes a pad ID of 0); `buckets` hashes the categorical fields (or
the text vocabulary) that hold more distinct train IDs than that. ID modalities are coded from
the train split by `fusion_ops.ids` and are not standardised.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fusion_ops.ids import TYPES, IdCoding, IdEncoder, check_ids, fit_coding
from search.datasets.errors import DataError

KEYS = ("type", "buckets")


def detect_type(x: np.ndarray, has_lengths: bool) -> str:
    """The type the rule gives an array of `N` samples (see the module doc)."""
    ids = np.issubdtype(x.dtype, np.integer) and x.dtype != np.uint8 and x.ndim <= 2
    if not ids:
        return "dense"
    return "text" if has_lengths and x.ndim == 2 else "categorical"


def input_types(source: str, xs: Mapping[str, np.ndarray], lengths: Mapping[str, Any],
                overrides: Any) -> dict[str, tuple[str, int]]:
    """`{modality: (type, buckets)}` for every array of `xs`, the rule overridden by `data.modalities`."""
    given = _overrides(source, overrides, xs)
    out = {}
    for m, x in xs.items():
        entry = given.get(m, {})
        kind = entry.get("type") or detect_type(x, m in lengths)
        where = f"data.modalities.{m}"
        if kind == "text" and x.ndim != 2:
            raise DataError(f"{where}.type: text reads (N, T) token IDs; {source} array {m!r} has shape {x.shape}")
        if kind == "categorical" and x.ndim > 2:
            raise DataError(f"{where}.type: categorical reads (N, F) fields; {source} array {m!r} has shape {x.shape}")
        if kind == "categorical" and m in lengths:
            raise DataError(f"{where}.type: categorical fields have no lengths; {source} gives lengths for {m!r} "
                            "(type: text reads padded token sequences)")
        if kind == "dense" and entry.get("buckets"):
            raise DataError(f"{where}.buckets: only categorical and text modalities are hashed")
        if kind != "dense":
            try:
                check_ids(source, m, x)
            except ValueError as err:  # a type the config named: the key is what to fix
                raise DataError(f"{where}.type: {err}" if entry.get("type") else str(err)) from None
        out[m] = (kind, int(entry.get("buckets", 0)))
    return out


def _overrides(source: str, overrides: Any, xs: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise DataError(f"data.modalities: expected a mapping of modality -> {{type: ...}}, got {overrides!r}")
    out = {}
    for m, entry in overrides.items():
        where = f"data.modalities.{m}"
        if m not in xs:
            raise DataError(f"{where}: no such array in {source}; it has {', '.join(sorted(xs))}")
        if not isinstance(entry, Mapping):
            raise DataError(f"{where}: expected a mapping such as {{type: categorical}}, got {entry!r}")
        unknown = sorted(set(entry) - set(KEYS))
        if unknown:
            raise DataError(f"{where}.{unknown[0]}: unknown key; known: {', '.join(KEYS)}")
        kind = entry.get("type")
        if kind is not None and kind not in TYPES:
            raise DataError(f"{where}.type: unknown type {kind!r}; known: {', '.join(TYPES)}")
        buckets = entry.get("buckets", 0)
        if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 0:
            raise DataError(f"{where}.buckets: expected a whole number of hash buckets >= 1, got {buckets!r}")
        out[str(m)] = dict(entry)
    return out


def code_modality(source: str, name: str, kind: str, buckets: int, parts: Mapping[str, np.ndarray],
                  lengths: Mapping[str, np.ndarray]) -> tuple[IdCoding, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Code one ID modality's splits (`parts[split]`, raw int64 IDs `(N, F)` or `(N, T)`) from its train split.

    Returns the coding, the float32 codes per split and the valid steps per split (text only:
    those given, or those counted from a pad ID)."""
    lengths_from = ("lengths" if lengths else "pad") if kind == "text" else ""
    train = parts["train"]
    if lengths:  # the vocabulary of the valid tokens only: what lies past a length is never read
        train = np.where(np.arange(train.shape[1])[None, :] < lengths["train"][:, None], train, 0)
    try:
        coding = fit_coding(kind, train, buckets, lengths_from)
    except ValueError as err:
        raise DataError(f"{source}: array {name!r}: {err} (data.modalities.{name}.buckets)") from None
    encoder = IdEncoder(coding)
    codes, steps = {}, {}
    for split, raw in parts.items():
        x = torch.from_numpy(raw)
        given = torch.from_numpy(lengths[split]) if lengths else None
        with torch.no_grad():
            c, n = encoder(x, given)
        codes[split] = c.numpy().astype(np.float32)
        if n is not None:
            steps[split] = n.numpy().astype(np.int64)
    return coding, codes, steps
