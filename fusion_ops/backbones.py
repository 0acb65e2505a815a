"""Per-modality encoders whose every block output is a tap.

A backbone is a chain of blocks. `forward_taps(x)` returns tap 0 = the raw input
and tap k = block k's output, each either a vector `(B, d)` or tokens `(B, T, d)`;
the last tap is always the pooled embedding `(B, embed_dim)`, so late fusion fuses
embeddings. Kinds are registered by name in `BACKBONE_KINDS` (a `spaces.registry.Registry`;
`python`, an encoder from user code, lives in `fusion_ops/python_backbone.py`):

| kind   | input          | block                              | tap 0      | inner taps      |
|--------|----------------|------------------------------------|------------|-----------------|
| mlp    | any (flattened)| Linear + ReLU                      | (B, prod)  | (B, w)          |
| cnn2d  | (H,W), (C,H,W) | Conv3x3 + ReLU + 2x2 max-pool      | (B, C*H*W) | (B, H*W, C)     |
| conv1d | (T, F)         | Conv1d k=3 + ReLU + max-pool 2     | (B, T, F)  | (B, T, C)       |
| gru    | (T, F)         | one GRU layer                      | (B, T, F)  | (B, T, h)       |

The last block is pooled: global average (cnn2d, conv1d), final hidden state (gru).
No normalisation layers: outputs do not depend on batch composition or mode.
Sequence kinds (conv1d, gru) take per-sample `lengths` of padded inputs: padded steps
are zeroed after every block, and neither the valid tokens nor the pooled embedding
depend on how much padding follows a sequence.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import ClassVar

import torch
from torch import Tensor, nn

from fusion_ops.backbone_config import (  # noqa: F401 - re-exported: the config side of a backbone
    BACKBONE_KINDS,
    BackboneConfig,
    BackboneKind,
    list_backbones,
    register_backbone,
)


class Backbone(nn.Module):
    """Blocks over one modality; `forward_taps(x)` gives every tap, `forward(x)` the embedding.

    Subclasses set `blocks` and say how the raw input becomes tap 0 (`raw_tap`) and
    the blocks' state (`prepare`), how a block's state becomes a tap (`as_tap`) and
    how the last one is pooled (`pool`).
    """

    KIND: ClassVar[str] = ""
    SEQUENCE: ClassVar[bool] = False  # takes per-sample `lengths` of padded (T, F) inputs
    # its data is padded (set by whoever builds it for a dataset with lengths): a fusion
    # pools this backbone's token taps instead of flattening them (`fusion_ops.model.flat_taps`)
    padded: bool = False

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.blocks = nn.ModuleList()
        self.tap_shapes: list[tuple[int, ...]] = []

    def _finish(self) -> None:
        self.n_blocks = len(self.blocks)
        with torch.no_grad():
            taps = self.forward_taps(torch.zeros(1, *self.input_shape))
        self.tap_shapes = [tuple(t.shape[1:]) for t in taps]

    @property
    def full_depth(self) -> int:
        """Blocks of the whole backbone (a `lean` one keeps fewer, and knows it)."""
        return getattr(self, "n_blocks", len(self.blocks))

    def lean(self, depth: int) -> Backbone:
        """This backbone cut after block `depth` (0: no block, only the raw tap): a new module
        sharing the kept blocks' parameters, whose `forward_taps` gives taps `0..depth` exactly
        as the whole backbone does. A candidate reading depth d runs (and owns) no more."""
        if not 0 <= depth <= self.full_depth:
            raise ValueError(f"{self.KIND} backbone: depth {depth} is outside 0..{self.full_depth}")
        out = self.__class__.__new__(self.__class__)
        out.__dict__ = dict(self.__dict__)
        out._parameters, out._buffers, out._modules = dict(self._parameters), dict(self._buffers), dict(self._modules)
        out.blocks = nn.ModuleList(list(self.blocks)[:depth])
        out.n_blocks = self.full_depth
        out.tap_shapes = list(self.tap_shapes[: depth + 1])
        return out

    @property
    def depths(self) -> range:
        return range(len(self.tap_shapes))

    @property
    def embed_dim(self) -> int:
        return self.tap_shapes[-1][0]

    def raw_tap(self, x: Tensor) -> Tensor:
        return x.flatten(1)  # (B, prod(input_shape))

    def prepare(self, x: Tensor) -> Tensor:
        return x

    def as_tap(self, state: Tensor) -> Tensor:
        return state

    def pool(self, state: Tensor, lengths: Tensor | None = None) -> Tensor:
        return state

    # ---- padded sequences (SEQUENCE kinds): a block's state keeps zeros past each sample's length
    def run_block(self, k: int, block: nn.Module, state: Tensor, lengths: Tensor | None) -> Tensor:
        return block(state)

    def next_lengths(self, k: int, lengths: Tensor) -> Tensor:
        """Valid steps after block `k` (1-based), from the valid steps before it."""
        return lengths

    def mask_state(self, state: Tensor, lengths: Tensor) -> Tensor:
        return state

    def tap_lengths(self, lengths: Tensor | None) -> list[Tensor | None]:
        """Valid tokens of each tap per sample (None for a vector tap, or without lengths)."""
        if lengths is None:
            return [None] * len(self.tap_shapes)
        out: list[Tensor | None] = [lengths]
        for k in range(1, len(self.tap_shapes)):
            lengths = self.next_lengths(k, lengths)
            out.append(lengths if len(self.tap_shapes[k]) == 2 else None)
        if len(self.tap_shapes[0]) != 2:
            out[0] = None
        return out

    def forward_taps(self, x: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        """`(B, *input_shape)` -> `len(blocks) + 1` taps, each `(B, d)` or `(B, T, d)`.

        `lengths` `(B,)`: valid steps of padded `(T, F)` inputs (sequence kinds only); the
        steps past them never change a tap's valid tokens or the pooled embedding.
        """
        if tuple(x.shape[1:]) != self.input_shape:
            expected = ", ".join(map(str, ("B", *self.input_shape)))
            raise ValueError(f"{self.KIND} backbone: expected inputs ({expected}), got {tuple(x.shape)}")
        if lengths is not None:
            if not self.SEQUENCE:
                raise ValueError(f"{self.KIND} backbone: cannot read padded sequences (lengths given); "
                                 "use a sequence backbone (conv1d, gru)")
            x = zero_padding(x, lengths)
        taps = [self.raw_tap(x)]
        if not len(self.blocks):  # a lean backbone of depth 0: the raw input is all it gives
            return taps
        state = self.prepare(x)
        for k, block in enumerate(self.blocks, start=1):
            state = self.run_block(k, block, state, lengths)
            if lengths is not None:
                lengths = self.next_lengths(k, lengths)
                state = self.mask_state(state, lengths)
            taps.append(self.pool(state, lengths) if k == self.full_depth else self.as_tap(state))
        return taps

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """`(B, *input_shape)` -> embedding `(B, embed_dim)` (the last tap)."""
        return self.forward_taps(x, lengths)[-1]


def step_mask(lengths: Tensor, steps: int) -> Tensor:
    """`(B,)` lengths -> `(B, steps)` bool, True on the valid (leading) steps."""
    return torch.arange(steps, device=lengths.device) < lengths.reshape(-1, 1)


def zero_padding(x: Tensor, lengths: Tensor, dim: int = 1) -> Tensor:
    """`x` with the steps along `dim` past each sample's length set to 0."""
    mask = step_mask(lengths, x.shape[dim])  # (B, T)
    shape = [x.shape[0]] + [1] * (x.dim() - 1)
    shape[dim] = x.shape[dim]
    return x * mask.reshape(shape).to(x.dtype)


class MLPBackbone(Backbone):
    KIND = "mlp"

    def __init__(self, input_shape: tuple[int, ...], widths: tuple[int, ...]) -> None:
        super().__init__(input_shape)
        dims = (math.prod(input_shape), *widths)
        self.blocks.extend(nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in pairwise(dims))

    def prepare(self, x: Tensor) -> Tensor:
        return x.flatten(1)  # (B, prod(input_shape))


class CNN2dBackbone(Backbone):
    KIND = "cnn2d"

    def __init__(self, input_shape: tuple[int, ...], channels: tuple[int, ...]) -> None:
        super().__init__(input_shape)
        c, h, w = self.image_shape
        for out in channels:
            # halve each side still >= 2, so thin maps (spectrogram strips) keep going
            kernel = (2 if h >= 2 else 1, 2 if w >= 2 else 1)
            self.blocks.append(
                nn.Sequential(nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(kernel, kernel))
            )
            c, h, w = out, h // kernel[0], w // kernel[1]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """`(C, H, W)`: a 2-D input (an image, or a (T, F) spectrogram) has one channel."""
        s = self.input_shape
        return (1, s[0], s[1]) if len(s) == 2 else (s[0], s[1], s[2])

    def prepare(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.image_shape)  # (B, C, H, W)

    def as_tap(self, state: Tensor) -> Tensor:
        return state.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)

    def pool(self, state: Tensor, lengths: Tensor | None = None) -> Tensor:
        return state.mean(dim=(2, 3))  # (B, C)


class Conv1dBackbone(Backbone):
    KIND = "conv1d"
    SEQUENCE = True

    def __init__(self, input_shape: tuple[int, ...], channels: tuple[int, ...]) -> None:
        super().__init__(input_shape)
        t, c = input_shape
        self.kernels: list[int] = []
        for out in channels:
            kernel = 2 if t >= 2 else 1
            self.kernels.append(kernel)
            self.blocks.append(nn.Sequential(nn.Conv1d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool1d(kernel)))
            c, t = out, t // kernel

    def run_block(self, k: int, block: nn.Module, state: Tensor, lengths: Tensor | None) -> Tensor:
        if lengths is None:
            return block(state)
        conv, relu, pool = block.children()
        # zero the padded steps before pooling: after the ReLU a 0 never wins a max
        return pool(zero_padding(relu(conv(state)), lengths, dim=2))

    def next_lengths(self, k: int, lengths: Tensor) -> Tensor:
        # a pooled step is valid when both its inputs are (the unpadded sequence drops an odd tail too)
        return lengths if self.kernels[k - 1] == 1 else torch.clamp(lengths // 2, min=1)

    def mask_state(self, state: Tensor, lengths: Tensor) -> Tensor:
        return zero_padding(state, lengths, dim=2)  # (B, C, T)

    def raw_tap(self, x: Tensor) -> Tensor:
        return x  # (B, T, F) tokens

    def prepare(self, x: Tensor) -> Tensor:
        return x.transpose(1, 2)  # (B, T, F) -> (B, F, T)

    def as_tap(self, state: Tensor) -> Tensor:
        return state.transpose(1, 2)  # (B, C, T) -> (B, T, C)

    def pool(self, state: Tensor, lengths: Tensor | None = None) -> Tensor:
        if lengths is None:
            return state.mean(dim=2)  # (B, C)
        return state.sum(dim=2) / lengths.reshape(-1, 1).to(state.dtype)  # padding is 0: mean of valid steps


class _GRULayer(nn.Module):
    """One GRU layer returning its output sequence `(B, T, h)` only."""

    def __init__(self, d_in: int, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(d_in, hidden, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.gru(x)[0]


class GRUBackbone(Backbone):
    KIND = "gru"
    SEQUENCE = True

    def __init__(self, input_shape: tuple[int, ...], hidden: tuple[int, ...]) -> None:
        super().__init__(input_shape)
        dims = (input_shape[1], *hidden)
        self.blocks.extend(_GRULayer(a, b) for a, b in pairwise(dims))

    def raw_tap(self, x: Tensor) -> Tensor:
        return x  # (B, T, F) tokens

    def pool(self, state: Tensor, lengths: Tensor | None = None) -> Tensor:
        if lengths is None:
            return state[:, -1]  # final hidden state (B, h)
        return state[torch.arange(state.shape[0], device=state.device), lengths.long() - 1]  # each sample's last step

    def mask_state(self, state: Tensor, lengths: Tensor) -> Tensor:
        return zero_padding(state, lengths, dim=1)  # causal: valid steps never saw the padding


def _chain_kind(
    cls: Callable[[tuple[int, ...], tuple[int, ...]], Backbone],
) -> Callable[[tuple[int, ...], BackboneConfig], Backbone]:
    """A built-in kind's `build`: its class on the sample shape and the config's one width per block."""
    return lambda shape, cfg: cls(shape, cfg.sizes)


for _name, _cls, _ranks, _expected, _key, _sizes in (
    ("cnn2d", CNN2dBackbone, (2, 3), "(H, W) or (C, H, W)", "channels", (8, 16)),
    ("conv1d", Conv1dBackbone, (2,), "(T, F)", "channels", (16, 32)),
    ("gru", GRUBackbone, (2,), "(T, F)", "hidden", (32,)),
    ("mlp", MLPBackbone, None, "of any shape", "widths", (64, 32)),
):
    register_backbone(_name, BackboneKind(_chain_kind(_cls), _ranks, _expected, _key, _sizes,
                                          sequence=_cls.SEQUENCE))


@contextlib.contextmanager
def seeded_init(generator: torch.Generator | None) -> Iterator[None]:
    """Module initialisation drawn from `generator` (None: from the global RNG as usual).

    torch layers initialise from the global RNG; this seeds a forked copy of it from
    `generator` and restores it afterwards, so the caller's global state is untouched.
    """
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_backbone(
    cfg: BackboneConfig, input_shape: tuple[int, ...], generator: torch.Generator | None = None
) -> Backbone:
    """A `cfg.kind` backbone for per-sample inputs of `input_shape`, tap shapes computed."""
    kind = BACKBONE_KINDS.get(cfg.kind)
    shape = tuple(int(s) for s in input_shape)
    if not shape or (kind.ranks is not None and len(shape) not in kind.ranks) or any(s < 1 for s in shape):
        raise ValueError(f"{cfg.kind} backbone: inputs must be {kind.expected} per sample, got shape {shape}")
    with seeded_init(generator):
        backbone = kind.build(shape, cfg)
    backbone._finish()
    return backbone


class UnimodalClassifier(nn.Module):
    """A backbone plus `Linear(embed_dim, num_classes)`, to pretrain one modality."""

    def __init__(self, backbone: Backbone, num_classes: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        with seeded_init(generator):
            self.classifier = nn.Linear(backbone.embed_dim, num_classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """`(B, *input_shape)` -> logits `(B, num_classes)`."""
        return self.classifier(self.backbone(x, lengths))
