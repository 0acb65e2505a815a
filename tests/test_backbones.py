"""Backbones: every tap, its layout and shape, the pooled embedding, config errors."""
from __future__ import annotations

import pytest
import torch

from fusion_ops.backbones import BackboneConfig, UnimodalClassifier, build_backbone

# (kind, sizes, per-sample input shape, expected tap shapes)
CASES = [
    ("mlp", (6, 5), (7,), [(7,), (6,), (5,)]),
    ("mlp", (4,), (2, 3, 4), [(24,), (4,)]),
    ("cnn2d", (3, 4), (8, 8), [(64,), (16, 3), (4,)]),
    ("cnn2d", (3, 4, 2), (2, 8, 8), [(128,), (16, 3), (4, 4), (2,)]),
    ("cnn2d", (3, 4), (20, 13), [(260,), (60, 3), (4,)]),  # a (T, F) spectrogram
    ("cnn2d", (3, 4), (1, 8), [(8,), (4, 3), (4,)]),  # a thin map: only W is pooled
    ("conv1d", (3, 4), (20, 13), [(20, 13), (10, 3), (4,)]),
    ("gru", (5, 4), (20, 13), [(20, 13), (20, 5), (4,)]),
    ("gru", (5,), (20, 13), [(20, 13), (5,)]),
]


def make(kind, sizes, shape, seed=0):
    return build_backbone(BackboneConfig(kind, sizes), shape, torch.Generator().manual_seed(seed))


def rand(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("kind", "sizes", "shape", "expected"), CASES)
def test_taps_shapes_and_embedding(kind, sizes, shape, expected):
    b = make(kind, sizes, shape)
    assert b.tap_shapes == expected
    assert list(b.depths) == list(range(len(sizes) + 1))
    assert b.embed_dim == sizes[-1]
    x = rand(3, *shape)
    taps = b.forward_taps(x)
    assert len(taps) == len(sizes) + 1
    for tap, s in zip(taps, expected, strict=True):
        assert tap.dim() in (2, 3), "every tap is a vector (B, d) or tokens (B, T, d)"
        assert tuple(tap.shape) == (3, *s)
    assert torch.equal(b(x), taps[-1])
    assert taps[-1].dim() == 2
    # tap 0 is the raw input itself: flattened to a vector, or (T, F) tokens as given
    raw = x if kind in ("conv1d", "gru") else x.flatten(1)
    assert torch.equal(taps[0], raw)


def test_cnn2d_tokens_are_positions_by_channels():
    b = make("cnn2d", (3, 4), (8, 8))
    x = rand(2, 8, 8)
    taps = b.forward_taps(x)
    fmap = b.blocks[0](x.unsqueeze(1))  # (B, C, H, W)
    assert fmap.shape == (2, 3, 4, 4)
    # token i*W + j holds the C channels at (i, j)
    assert torch.equal(taps[1][1, 2 * 4 + 3], fmap[1, :, 2, 3])
    last = b.blocks[1](fmap)
    torch.testing.assert_close(taps[2], last.mean(dim=(2, 3)))


def test_conv1d_tokens_are_time_by_channels():
    b = make("conv1d", (3, 4), (20, 13))
    x = rand(2, 20, 13)
    taps = b.forward_taps(x)
    seq = b.blocks[0](x.transpose(1, 2))  # (B, C, T)
    assert torch.equal(taps[1], seq.transpose(1, 2))
    torch.testing.assert_close(taps[2], b.blocks[1](seq).mean(dim=2))


def test_gru_embedding_is_the_final_hidden_state():
    b = make("gru", (5, 4), (20, 13))
    x = rand(2, 20, 13)
    taps = b.forward_taps(x)
    _, h_n = b.blocks[1].gru(taps[1])
    torch.testing.assert_close(taps[2], h_n[0])


@pytest.mark.parametrize(("kind", "sizes", "shape", "expected"), CASES)
def test_batch_independent_and_seeded(kind, sizes, shape, expected):
    b = make(kind, sizes, shape)
    x = rand(4, *shape)
    whole = b.forward_taps(x)
    alone = b.forward_taps(x[2:3])
    for t_all, t_one in zip(whole, alone, strict=True):
        torch.testing.assert_close(t_all[2:3], t_one)

    before = torch.random.get_rng_state()
    again = make(kind, sizes, shape)
    assert torch.equal(torch.random.get_rng_state(), before), "a seeded build must not touch the global RNG"
    other = make(kind, sizes, shape, seed=1)
    for (n, p), q, r in zip(b.named_parameters(), again.parameters(), other.parameters(), strict=True):
        assert torch.equal(p, q), n
        assert not torch.equal(p, r), n


def test_unimodal_classifier_trains_the_backbone():
    b = make("conv1d", (3, 4), (20, 13))
    clf = UnimodalClassifier(b, num_classes=5, generator=torch.Generator().manual_seed(0))
    out = clf(rand(6, 20, 13))
    assert out.shape == (6, 5)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in b.parameters())


def test_config_from_dict_defaults_and_round_trip():
    assert BackboneConfig.from_dict({"kind": "gru"}) == BackboneConfig("gru", (32,))
    cfg = BackboneConfig.from_dict({"kind": "cnn2d", "channels": [4, 8, 8]})
    assert cfg.sizes == (4, 8, 8)
    assert cfg.to_dict() == {"kind": "cnn2d", "channels": [4, 8, 8]}
    assert BackboneConfig.from_dict(cfg.to_dict()) == cfg
    assert BackboneConfig.from_dict({"kind": "mlp", "widths": [3]}).to_dict() == {"kind": "mlp", "widths": [3]}


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"kind": "cnn"}, "backbones.audio.kind: unknown backbone 'cnn'; known: cnn2d, conv1d, embedding, gru, mlp, python, text"),
        ({"channels": [4]}, "backbones.audio.kind: unknown backbone None"),
        ({"kind": "mlp", "channels": [4]}, "backbones.audio.channels: unknown key for a mlp backbone; known: kind, widths"),
        ({"kind": "gru", "hidden": []}, "backbones.audio.hidden: expected a non-empty list of positive integers"),
        ({"kind": "conv1d", "channels": [8, 0]}, "backbones.audio.channels: expected a non-empty list"),
        ({"kind": "conv1d", "channels": [True]}, "backbones.audio.channels: expected a non-empty list"),
        ({"kind": "mlp", "widths": "16"}, "backbones.audio.widths: expected a non-empty list"),
        (["cnn2d"], "backbones.audio: expected a mapping"),
    ],
)
def test_bad_config_names_the_key_path(d, message):
    with pytest.raises(ValueError) as err:
        BackboneConfig.from_dict(d, "backbones.audio")
    assert str(err.value).startswith(message)


def test_bad_direct_config_and_input_shapes():
    with pytest.raises(ValueError, match="BackboneConfig.kind: unknown backbone 'rnn'"):
        BackboneConfig("rnn", (4,))
    with pytest.raises(ValueError, match="BackboneConfig.sizes"):
        BackboneConfig("mlp", ())
    with pytest.raises(ValueError, match=r"conv1d backbone: inputs must be \(T, F\) per sample, got shape \(13,\)"):
        build_backbone(BackboneConfig("conv1d", (4,)), (13,))
    with pytest.raises(ValueError, match=r"cnn2d backbone: inputs must be \(H, W\) or \(C, H, W\)"):
        build_backbone(BackboneConfig("cnn2d", (4,)), (1, 2, 8, 8))
    b = make("gru", (4,), (20, 13))
    with pytest.raises(ValueError, match=r"expected inputs \(B, 20, 13\), got \(2, 13, 20\)"):
        b.forward_taps(torch.zeros(2, 13, 20))
