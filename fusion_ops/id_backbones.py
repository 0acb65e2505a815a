"""Backbones over integer codes (`fusion_ops.ids`): `embedding` for categorical fields, `text` for tokens.

| kind      | input        | tap 0                          | inner taps                  | last tap        |
|-----------|--------------|--------------------------------|-----------------------------|-----------------|
| embedding | (F,) codes   | field embeddings (B, F, d)     | Linear + ReLU on the        | (B, widths[-1]) |
|           |              |                                | flattened fields (B, w)     |                 |
| text      | (T,) codes   | token embeddings (B, T, d)     | encoder blocks (B, T', w)   | pooled (B, w)   |

`embedding`: one table per field, `rows[f]` long (its train vocabulary and the OOV row), of
width `field_dim(rows[f]) = min(dim, max(4, round(6 * rows^(1/4))))` (the rule of thumb for
embedding sizes; `dim`, default 32, caps it); a field narrower than the widest is projected to it by a bias-free linear
map, so that the fields are `d`-wide tokens, as attention and bottleneck fusion read them.
Tables start at `N(0, 0.01²)`: a rare ID's row stays near zero unless training moves it.

`text`: one table (row 0, padding, stays zero), then `encoder`: `conv1d` (Conv1d k=3 + ReLU +
max-pool 2 per block, as the conv1d backbone), `gru` (a GRU layer per block) or `transformer`
(a post-norm encoder layer per block, 2 heads, learned positions). Padded steps are zeroed
after every block and never reach the pooled embedding (masked mean; the last valid step of
a GRU), exactly as for padded float sequences. An embedding lookup is not a multiply-add:
tables cost parameters and no FLOPs (`fusion_ops.cost`).
"""
from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fusion_ops.backbone_config import BackboneConfig, BackboneKind, register_backbone
from fusion_ops.backbones import Backbone, Conv1dBackbone, GRUBackbone, step_mask

ENCODERS = ("conv1d", "gru", "transformer")
INIT_STD = 0.01  # field tables start near 0 (measured on planted ctr: experiments/RESULTS.md, "Input types")
TEXT_DIM = 32


def field_dim(rows: int, cap: int = 32) -> int:
    """The embedding width of a field with `rows` rows: `min(cap, max(4, round(6 * rows ** 0.25)))`."""
    return min(cap, max(min(4, cap), round(6 * rows ** 0.25)))


class EmbeddingBackbone(Backbone):
    """Categorical fields: tap 0 the field embeddings as tokens `(B, F, d)`, then an MLP on them flattened."""

    KIND = "embedding"

    def __init__(self, input_shape: tuple[int, ...], rows: tuple[int, ...], widths: tuple[int, ...],
                 cap: int = 32) -> None:
        super().__init__(input_shape)
        if len(rows) != input_shape[0]:
            raise ValueError(f"embedding backbone: {len(rows)} fields' table sizes for inputs of {input_shape[0]} fields")
        dims = [field_dim(r, cap) for r in rows]
        self.dim = max(dims)
        tables = [nn.Embedding(r, d) for r, d in zip(rows, dims, strict=True)]
        for table in tables:  # small rows: an ID seen once adds little noise (N(0, 1), torch's default, adds much)
            nn.init.normal_(table.weight, std=INIT_STD)
        self.tables = nn.ModuleList(tables)
        self.project = nn.ModuleList(nn.Identity() if d == self.dim else nn.Linear(d, self.dim, bias=False)
                                     for d in dims)
        sizes = (len(rows) * self.dim, *widths)
        self.blocks.extend(nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in pairwise(sizes))

    def raw_tap(self, x: Tensor) -> Tensor:
        codes = x.long()
        return torch.stack([p(t(codes[:, f])) for f, (t, p) in enumerate(zip(self.tables, self.project, strict=True))], dim=1)

    def prepare(self, x: Tensor) -> Tensor:
        return self.raw_tap(x).flatten(1)  # (B, F * d)


class _Tokens:
    """Mixin for a sequence backbone over token codes `(B, T)`: the blocks read their embeddings."""

    embed: nn.Embedding

    def raw_tap(self, x: Tensor) -> Tensor:
        return self.embed(x.long())  # (B, T, d); padding (code 0) is the zero row

    def prepare(self, x: Tensor) -> Tensor:
        return super().prepare(self.raw_tap(x))  # type: ignore[misc]


class TextConv1d(_Tokens, Conv1dBackbone):
    KIND = "text"

    def __init__(self, input_shape: tuple[int, ...], rows: int, dim: int, widths: tuple[int, ...]) -> None:
        super().__init__((input_shape[0], dim), widths)
        self.input_shape = tuple(input_shape)
        self.embed = nn.Embedding(rows, dim, padding_idx=0)


class TextGRU(_Tokens, GRUBackbone):
    KIND = "text"

    def __init__(self, input_shape: tuple[int, ...], rows: int, dim: int, widths: tuple[int, ...]) -> None:
        super().__init__((input_shape[0], dim), widths)
        self.input_shape = tuple(input_shape)
        self.embed = nn.Embedding(rows, dim, padding_idx=0)


class _EncoderLayer(nn.Module):
    """A projection to `width` (when it changes) and one post-norm transformer encoder layer."""

    def __init__(self, d_in: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Identity() if d_in == width else nn.Linear(d_in, width)
        self.layer = nn.TransformerEncoderLayer(width, 2 if width % 2 == 0 else 1, 2 * width, dropout=0.0,
                                                batch_first=True)

    def forward(self, x: Tensor, pad: Tensor | None = None) -> Tensor:
        return self.layer(self.proj(x), src_key_padding_mask=pad)


class TextTransformer(_Tokens, Backbone):
    KIND = "text"
    SEQUENCE: ClassVar[bool] = True

    def __init__(self, input_shape: tuple[int, ...], rows: int, dim: int, widths: tuple[int, ...]) -> None:
        super().__init__(input_shape)
        self.embed = nn.Embedding(rows, dim, padding_idx=0)
        self.position = nn.Parameter(torch.zeros(input_shape[0], dim))
        nn.init.normal_(self.position, std=0.02)
        sizes = (dim, *widths)
        self.blocks.extend(_EncoderLayer(a, b) for a, b in pairwise(sizes))

    def prepare(self, x: Tensor) -> Tensor:
        return self.raw_tap(x) + self.position

    def run_block(self, k: int, block: nn.Module, state: Tensor, lengths: Tensor | None) -> Tensor:
        pad = None if lengths is None else ~step_mask(lengths, state.shape[1])
        return block(state, pad)

    def mask_state(self, state: Tensor, lengths: Tensor) -> Tensor:
        return state * step_mask(lengths, state.shape[1]).unsqueeze(-1).to(state.dtype)

    def pool(self, state: Tensor, lengths: Tensor | None = None) -> Tensor:
        if lengths is None:
            return state.mean(dim=1)
        return state.sum(dim=1) / lengths.reshape(-1, 1).to(state.dtype)  # padding is 0: mean of valid steps


_TEXT = {"conv1d": TextConv1d, "gru": TextGRU, "transformer": TextTransformer}


# ---------------------------------------------------------------- config side
def _positive_ints(value: Any, where: str) -> list[int]:
    if (not isinstance(value, (list, tuple)) or not value
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)):
        raise ValueError(f"{where}: expected a non-empty list of positive integers, got {value!r}")
    return [int(v) for v in value]


def _check(d: Mapping[str, Any], where: str, kind: str, keys: tuple[str, ...]) -> None:
    for key in d:
        if key not in keys:
            raise ValueError(f"{where}.{key}: unknown key for a {kind} backbone; known: kind, {', '.join(keys)}")


def _parse_embedding(d: Mapping[str, Any], where: str) -> dict[str, Any]:
    _check(d, where, "embedding", ("widths", "dim", "rows"))
    out = {"widths": _positive_ints(d.get("widths", [64, 32]), f"{where}.widths"),
           "dim": _positive_ints([d.get("dim", 32)], f"{where}.dim")[0]}
    if "rows" in d:  # filled from the train split when the data is read (search.config)
        out["rows"] = _positive_ints(d["rows"], f"{where}.rows")
    return out


def _parse_text(d: Mapping[str, Any], where: str) -> dict[str, Any]:
    _check(d, where, "text", ("encoder", "dim", "widths", "rows"))
    encoder = d.get("encoder", "conv1d")
    if encoder not in ENCODERS:
        raise ValueError(f"{where}.encoder: unknown encoder {encoder!r}; known: {', '.join(ENCODERS)}")
    out = {"encoder": encoder, "dim": _positive_ints([d.get("dim", TEXT_DIM)], f"{where}.dim")[0],
           "widths": _positive_ints(d.get("widths", [32, 32]), f"{where}.widths")}
    if "rows" in d:
        out["rows"] = _positive_ints([d["rows"]], f"{where}.rows")[0]
    return out


def _rows(cfg: BackboneConfig) -> Any:
    rows = cfg.option("rows")
    if rows is None:
        raise ValueError(f"{cfg.kind} backbone: its table sizes ('rows') come from the data; build it for a dataset "
                         "(search.config resolves them) or give rows")
    return rows


def _build_embedding(shape: tuple[int, ...], cfg: BackboneConfig) -> Backbone:
    return EmbeddingBackbone(shape, tuple(_rows(cfg)), tuple(cfg.option("widths")), int(cfg.option("dim", 32)))


def _build_text(shape: tuple[int, ...], cfg: BackboneConfig) -> Backbone:
    return _TEXT[cfg.option("encoder")](shape, int(_rows(cfg)), int(cfg.option("dim")), tuple(cfg.option("widths")))


register_backbone("embedding", BackboneKind(_build_embedding, (1,), "(F,) integer fields", parse=_parse_embedding,
                                            n_taps=lambda cfg: len(cfg.option("widths")) + 1))
register_backbone("text", BackboneKind(_build_text, (1,), "(T,) token IDs", parse=_parse_text,
                                       n_taps=lambda cfg: len(cfg.option("widths")) + 1, sequence=True))

__all__ = ["ENCODERS", "EmbeddingBackbone", "TextConv1d", "TextGRU", "TextTransformer", "field_dim"]
