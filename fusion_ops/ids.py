"""Integer inputs (categorical fields, text tokens) as the row numbers of embedding tables.

A modality of IDs is read in one of two ways, its `IdCoding.type`:

- `categorical`: `(N, F)` fields, one table per field. A field's vocabulary is the sorted set of
  IDs its train split holds; an ID is coded `1 + its position` in it, and an ID never seen in
  train is coded 0 (the out-of-vocabulary row). A field with more distinct train IDs than
  `buckets` is hashed instead: `1 + hash(id) mod buckets` (`2 + ...` for text), and its OOV
  row stays unused.
- `text`: `(N, T)` token sequences, one vocabulary for every step: 0 is padding, 1 the
  out-of-vocabulary token, `2 + position` a token seen in train. The valid steps come from
  lengths (`<m>_lengths`, `<m>_mask`, `lengths_from: lengths`) or from a pad ID of 0
  (`lengths_from: pad`): the non-zero tokens, moved to the front in their order, so the same
  words give the same codes wherever the padding sat.

Codes are what a model reads (as float32 arrays in a `Dataset`, exact below 2**24 rows); the
raw IDs are what a user has. `encode` is the one function from raw IDs to codes: the data
loaders and an export (`fusion_ops.load.ExportedModel`) both call it, so they agree.
IDs must be non-negative integers.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

TYPES = ("dense", "categorical", "text")
PAD, TEXT_OOV, FIELD_OOV = 0, 1, 0
MAX_ROWS = 2**24  # float32 holds every code exactly below this
_HASH_MUL = 2654435761  # Knuth's multiplicative hash (2^32 / golden ratio)
_HASH_MOD = 2147483647  # ids are first reduced mod 2^31 - 1, so the product fits in int64


@dataclass(frozen=True, eq=False)
class IdCoding:
    """How one modality of integer IDs becomes codes: its type, each field's train vocabulary
    (`vocab[f]`, sorted int64; one entry for text) or hash buckets (`buckets[f] > 0`, empty vocab),
    and where a text's valid steps come from (`lengths_from`: `lengths` or `pad`)."""

    type: str
    vocab: tuple[np.ndarray, ...]
    buckets: tuple[int, ...]
    lengths_from: str = ""

    @property
    def rows(self) -> tuple[int, ...]:
        """Rows of each field's embedding table (the OOV row, and padding for text, included)."""
        extra = 2 if self.type == "text" else 1
        return tuple((b if b else len(v)) + extra for v, b in zip(self.vocab, self.buckets, strict=True))

    def to_json(self) -> dict[str, Any]:
        """What an export's `model.json` says of it (the vocabularies travel as tensors)."""
        return {"type": self.type, "lengths_from": self.lengths_from, "buckets": list(self.buckets),
                "rows": list(self.rows)}

    @classmethod
    def from_json(cls, d: Any, vocab: Sequence[Tensor]) -> IdCoding:
        """The coding `to_json` described, with its vocabularies read back from an export's tensors."""
        if not isinstance(d, dict) or d.get("type") not in TYPES[1:] or d.get("lengths_from") not in ("", "lengths", "pad"):
            raise ValueError(f"input: expected a categorical or text coding, got {d!r}")
        buckets = tuple(int(b) for b in d.get("buckets", ()))
        if len(buckets) != len(vocab):
            raise ValueError(f"input: {len(buckets)} fields' buckets for {len(vocab)} vocabularies")
        return cls(d["type"], tuple(v.numpy().astype(np.int64) for v in vocab), buckets, d["lengths_from"])


def fit_coding(type_: str, train: np.ndarray, buckets: int = 0, lengths_from: str = "") -> IdCoding:
    """The coding of a modality from its train IDs `(N, F)` (categorical) or `(N, T)` (text: the
    valid tokens only, padding already 0 when `lengths_from` is `pad`, cut by lengths otherwise)."""
    x = np.asarray(train, dtype=np.int64)
    if type_ == "text":
        tokens = np.unique(x)
        if lengths_from == "pad":
            tokens = tokens[tokens != PAD]
        return _fitted(type_, (tokens,), buckets, lengths_from)
    return _fitted(type_, tuple(np.unique(x[:, f]) for f in range(x.shape[1])), buckets, lengths_from)


def _fitted(type_: str, vocab: tuple[np.ndarray, ...], buckets: int, lengths_from: str) -> IdCoding:
    hashed = [bool(buckets) and len(v) > buckets for v in vocab]
    coding = IdCoding(type_, tuple(np.empty(0, np.int64) if h else v.astype(np.int64) for v, h in zip(vocab, hashed, strict=True)),
                      tuple(buckets if h else 0 for h in hashed), lengths_from)
    if max(coding.rows) >= MAX_ROWS:
        raise ValueError(f"{max(coding.rows) - 2:,} distinct IDs in one field: give it `buckets` (hashing)")
    return coding


def _hash(x: Tensor, buckets: int) -> Tensor:
    return ((x % _HASH_MOD) * _HASH_MUL) % 2**32 % buckets


def encode(x: Tensor, vocab: Sequence[Tensor], buckets: Sequence[int], text: bool) -> Tensor:
    """Raw non-negative int64 IDs -> int64 codes of the same shape (see the module doc).

    `x` is `(B, F)` with one vocabulary per field, or `(B, T)` tokens with one vocabulary
    (`text`: padding must already be `PAD`; the caller keeps it at 0)."""
    x = x.long()
    cols = [x] if text else [x[:, f] for f in range(x.shape[1])]
    out = []
    for col, v, b in zip(cols, vocab, buckets, strict=True):
        if b:
            out.append((2 if text else 1) + _hash(col, int(b)))
            continue
        v = v.to(col.device)
        if torch.onnx.is_in_onnx_export() and len(v):  # ONNX has no searchsorted: match every entry (B, V)
            match = (col.unsqueeze(-1) == v).long()
            at, known = (match * torch.arange(len(v), device=col.device)).sum(-1), match.sum(-1) > 0
        else:
            at = torch.searchsorted(v, col.contiguous()).clamp(max=max(len(v) - 1, 0))
            known = (v[at] == col) if len(v) else torch.zeros_like(col, dtype=torch.bool)
        out.append(torch.where(known, at + (2 if text else 1), torch.full_like(col, TEXT_OOV if text else FIELD_OOV)))
    return out[0] if text else torch.stack(out, dim=1)


def compact(x: Tensor) -> tuple[Tensor, Tensor]:
    """Tokens `(B, T)` with pad ID 0 anywhere -> the non-zero tokens moved to the front in their
    order, zeros after them, and their count per sample `(B,)` (at least 1)."""
    keep = x != PAD
    kept = keep.sum(dim=1, keepdim=True)
    # where each step goes: a kept one after the kept ones before it, a pad after every kept one
    to = torch.where(keep, keep.long().cumsum(1) - 1, kept + (~keep).long().cumsum(1) - 1)
    return torch.zeros_like(x).scatter(1, to, x), kept.squeeze(1).clamp(min=1)


def check_ids(source: str, name: str, x: np.ndarray) -> None:
    """Integral, non-negative IDs, or a `ValueError` naming the array."""
    if np.issubdtype(x.dtype, np.floating):
        bad = x[~np.isfinite(x) | (x != np.round(x))]
        if len(bad):
            raise ValueError(f"{source}: array {name!r} holds IDs, found the non-integer {bad[0].item()!r}")
    elif not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{source}: array {name!r} holds IDs and must be integers, got dtype {x.dtype}")
    if x.size and x.min() < 0:
        raise ValueError(f"{source}: array {name!r} holds the negative ID {x.min().item()}; IDs must be >= 0")


class IdEncoder(nn.Module):
    """`forward(x, lengths)`: raw IDs -> `(codes, lengths)`, the coding's vocabularies held as
    buffers (`vocab_<f>`), so that an export carries them in its weights file.

    Text from a pad ID (`lengths_from: pad`) is compacted first and its lengths counted; text
    with given lengths keeps them, and the codes past them are padding."""

    def __init__(self, coding: IdCoding) -> None:
        super().__init__()
        self.coding_type, self.lengths_from, self.buckets = coding.type, coding.lengths_from, coding.buckets
        for f, v in enumerate(coding.vocab):
            self.register_buffer(f"vocab_{f}", torch.as_tensor(np.asarray(v, dtype=np.int64)).clone())

    def vocab(self) -> list[Tensor]:
        return [getattr(self, f"vocab_{f}") for f in range(len(self.buckets))]

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        x = x.long()
        if not torch.jit.is_tracing() and x.numel() and int(x.min()) < 0:  # a traced graph codes it as OOV
            raise ValueError(f"negative ID {int(x.min())}: IDs must be >= 0")
        text = self.coding_type == "text"
        if text and self.lengths_from == "pad":
            x, lengths = compact(x)
        codes = encode(x, self.vocab(), self.buckets, text)
        if text:
            if self.lengths_from == "pad":
                codes = codes * (x != PAD)
            if lengths is not None:
                codes = codes * (torch.arange(x.shape[1], device=x.device) < lengths.reshape(-1, 1))
        return codes, lengths
