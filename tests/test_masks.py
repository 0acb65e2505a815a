"""Padded sequences: the same sample with different padding gives the same result, at every
level (token operators, fusion cells of vector operators, backbones, a whole model) and
the data side (npz lengths and masks, planted random lengths, the tap cache)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion_ops import (
    BackboneConfig,
    build_backbone,
    build_model,
    create_fusion,
    fusion_class,
    lengths_key,
    list_fusions,
)
from fusion_ops.base import takes_masks
from search.datasets import DataError, load_dataset
from search.training.taps import TapCache
from spaces import ArchSpec, CellSpec

TOKEN_OPS = [n for n in list_fusions() if fusion_class(n).TOKEN_INPUTS]
SMALL = {"bottleneck": {"dim": 8, "heads": 2, "layers": 2, "fusion_layer": 1, "n_tokens": 2},
         "memory": {"hidden": 4, "mem": 4}, "attention": {"dim": 8}}


def padded(x: torch.Tensor, lengths: list[int], total: int, seed: int) -> torch.Tensor:
    """`x` `(B, T, d)` cut to `lengths` and padded to `total` steps with random garbage."""
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(x.shape[0], total, x.shape[2], generator=g) * 100
    for i, n in enumerate(lengths):
        out[i, :n] = x[i, :n]
    return out


def masks_of(lengths: list[int], total: int) -> torch.Tensor:
    return torch.arange(total) < torch.tensor(lengths).reshape(-1, 1)


def test_the_token_operators_are_the_ones_that_take_masks():
    assert set(TOKEN_OPS) >= {"attention", "bottleneck", "memory"}
    assert all(takes_masks(fusion_class(n)) for n in TOKEN_OPS)


@pytest.mark.parametrize("name", TOKEN_OPS)
def test_same_sample_different_padding_same_output(name):
    """Each token operator: a batch whose sequences are padded to 6 or to 11 steps with garbage
    (and one modality a vector) gives the same output as each sample run unpadded on its own."""
    torch.manual_seed(0)
    op = create_fusion(name, {"a": 5, "b": 3, "c": 4}, 7, **SMALL.get(name, {})).eval()
    a, b, c = torch.randn(3, 6, 5), torch.randn(3, 4, 3), torch.randn(3, 4)
    la, lb = [6, 2, 4], [1, 4, 3]
    with torch.no_grad():
        alone = torch.cat([op({"a": a[i : i + 1, : la[i]], "b": b[i : i + 1, : lb[i]], "c": c[i : i + 1]})
                           for i in range(3)])
        for total, seed in ((6, 1), (11, 2)):
            feats = {"a": padded(a, la, total, seed), "b": padded(b, lb, total + 2, seed + 10), "c": c}
            masks = {"a": masks_of(la, total), "b": masks_of(lb, total + 2)}
            torch.testing.assert_close(op(feats, masks=masks), alone, atol=1e-5, rtol=1e-4)
        unmasked = op({"a": padded(a, la, 11, 3), "b": padded(b, lb, 13, 4), "c": c})
    assert not torch.allclose(unmasked, alone, atol=1e-3)  # without masks the garbage does matter


@pytest.mark.parametrize("name", ["concat", "tensor", "low_rank"])
def test_a_vector_operator_cell_pools_only_the_real_tokens(name):
    """Vector operators mean-pool the tokens of padded taps (`flat=()`: none read flattened);
    the pool ignores the padding."""
    spec = ArchSpec("early", (CellSpec(("a@0", "b@0"), name, 6, "relu"),), head=())
    shapes = {"a@0": (9, 5), "b@0": (9, 3)}
    from fusion_ops import FusionHead

    torch.manual_seed(0)
    head = FusionHead(spec, shapes, 2, flat=()).eval()
    a, b, la, lb = torch.randn(2, 9, 5), torch.randn(2, 9, 3), [3, 9], [5, 1]
    with torch.no_grad():
        got = head({"a@0": padded(a, la, 9, 0), "b@0": padded(b, lb, 9, 1),
                    lengths_key("a@0"): torch.tensor(la), lengths_key("b@0"): torch.tensor(lb)})
        want = torch.cat([head({"a@0": a[i : i + 1, : la[i]].mean(1), "b@0": b[i : i + 1, : lb[i]].mean(1)})
                          for i in range(2)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["conv1d", "gru"])
def test_sequence_backbones_ignore_padding(kind):
    """Same weights (built from one seed: they do not depend on T), a sample unpadded (T = its
    length) and padded with garbage to T = 13: the same real tokens at every tap and the same embedding."""
    cfg = BackboneConfig(kind, (4, 6))
    x = torch.randn(3, 13, 5)
    lengths = [13, 7, 2]
    padded_b = build_backbone(cfg, (13, 5), torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        taps = padded_b.forward_taps(padded(x, lengths, 13, 5), torch.tensor(lengths))
        tap_lengths = padded_b.tap_lengths(torch.tensor(lengths))
        for i, n in enumerate(lengths):
            alone_b = build_backbone(cfg, (n, 5), torch.Generator().manual_seed(0)).eval()
            alone = alone_b.forward_taps(x[i : i + 1, :n])
            for d, (t, a) in enumerate(zip(taps, alone, strict=True)):
                if t.dim() == 3:
                    k = int(tap_lengths[d][i])
                    assert k == a.shape[1], (d, k, a.shape)
                    torch.testing.assert_close(t[i, :k], a[0], atol=1e-5, rtol=1e-4)
                    assert (t[i, k:] == 0).all()
                else:
                    torch.testing.assert_close(t[i], a[0], atol=1e-5, rtol=1e-4)


def test_vector_backbones_refuse_lengths():
    b = build_backbone(BackboneConfig("mlp", (4,)), (6, 3))
    with pytest.raises(ValueError, match="mlp backbone: cannot read padded sequences"):
        b.forward_taps(torch.zeros(2, 6, 3), torch.tensor([2, 3]))


def test_planted_random_lengths_model_logits_do_not_depend_on_padding():
    """Planted sequences of random lengths through gru backbones and every kind of cell
    (attention on tokens, concat on pooled tokens, bottleneck): garbage in the padding of a test
    sample leaves the logits as they were (the data itself carries zeros there)."""
    ds = load_dataset({"kind": "planted", "task": "xor", "n_train": 60, "n_test": 30, "d": 3, "seq_len": 9,
                       "min_len": 2, "seed": 0})
    lengths = ds.lengths_of("test")
    assert set(lengths) == {"m1", "m2"} and lengths["m1"].min() < 9
    steps = np.arange(9)[None, :]
    assert (ds.test["m1"][steps >= lengths["m1"][:, None]] == 0).all()
    g = torch.Generator().manual_seed(0)
    backbones = {m: build_backbone(BackboneConfig("gru", (4, 4)), ds.shapes[m], g) for m in ds.modalities}
    for b in backbones.values():
        b.padded = True  # as `pretrain_backbones` marks them for data with lengths: token taps are pooled
    xs = {m: torch.tensor(ds.test[m]) for m in ds.modalities}
    xs.update({lengths_key(m): torch.tensor(n) for m, n in lengths.items()})
    for cell in (CellSpec(("m1@1", "m2@0"), "attention", 6, "relu"), CellSpec(("m1@1", "m2@1"), "concat", 6, "relu"),
                 CellSpec(("m1@0", "m2@1"), "bottleneck", 6, "relu", (("dim", 4), ("n_tokens", 2)))):
        model = build_model(ArchSpec("hybrid", (cell,)), backbones, ds.num_classes, generator=g).eval()
        with torch.no_grad():
            clean = model(xs)
            noisy = dict(xs)
            for m in ds.modalities:
                junk = torch.randn(xs[m].shape, generator=g) * 50
                pad = torch.tensor(steps >= lengths[m][:, None])
                noisy[m] = torch.where(pad[..., None], junk, xs[m])
            torch.testing.assert_close(model(noisy), clean, atol=1e-5, rtol=1e-4)


def test_npz_lengths_and_masks_reach_the_tap_cache(tmp_path):
    """`audio_lengths` (or a leading `audio_mask`) beside a padded (N, T, F) array: the dataset,
    moments over real frames only, zeros in the padding, and token taps' lengths in the cache."""
    rng = np.random.default_rng(0)
    n, t = 40, 8
    lengths = rng.integers(1, t + 1, size=n)
    audio = rng.standard_normal((n, t, 3)) + 5.0
    audio[np.arange(t)[None, :] >= lengths[:, None]] = -999.0  # padding a user forgot to zero
    y = np.arange(n) % 2
    for extra in ({"audio_lengths": lengths}, {"audio_mask": np.arange(t)[None, :] < lengths[:, None]}):
        path = tmp_path / "seq.npz"
        np.savez(path, audio=audio, image=rng.standard_normal((n, 4)), y=y, **extra)
        ds = load_dataset({"kind": "npz", "path": str(path)})
        assert set(ds.lengths_of("train")) == {"audio"}
        real = np.arange(t)[None, :] < ds.lengths_of("train")["audio"][:, None]
        assert abs(ds.train["audio"][real].mean()) < 0.2 and (ds.train["audio"][~real] == 0).all()
    backbones = {"audio": build_backbone(BackboneConfig("conv1d", (4,)), (t, 3)),
                 "image": build_backbone(BackboneConfig("mlp", (4,)), (4,))}
    cache = TapCache.from_backbones(ds, backbones)
    xs, _ = cache.tensors("val")
    assert torch.equal(xs[lengths_key("audio@0")], torch.tensor(ds.lengths_of("val")["audio"]))
    assert lengths_key("audio@1") not in xs  # the last tap is pooled: a vector
    assert set(cache.subset(["audio@0", "image@1"]).lengths["train"]) == {"audio@0"}


@pytest.mark.parametrize(("extra", "message"), [
    ({"audio_lengths": np.full(10, 9)}, "array 'audio_lengths' must lie in 1..8"),
    ({"audio_mask": np.tile(np.array([False, True] * 4), (10, 1))}, "the valid steps must come first"),
    ({"audio_lengths": np.full(10, 2), "audio_mask": np.ones((10, 8), dtype=bool)}, "not both"),
])
def test_bad_lengths_are_one_line(tmp_path, extra, message):
    path = tmp_path / "bad.npz"
    np.savez(path, audio=np.zeros((10, 8, 3)), image=np.zeros((10, 2)), y=np.arange(10) % 2, **extra)
    with pytest.raises(DataError, match=message):
        load_dataset({"kind": "npz", "path": str(path)})


@pytest.mark.parametrize("split", [np.array(["train"] * 70 + ["test"] * 30), np.array([0] * 70 + [1] * 30)])
def test_a_train_test_split_gets_a_stratified_val_from_train(tmp_path, split):
    rng = np.random.default_rng(1)
    path = tmp_path / "tt.npz"
    y = np.arange(100) % 2
    np.savez(path, a=rng.standard_normal((100, 3)), b=rng.standard_normal((100, 2)), y=y, split=split)
    ds = load_dataset({"kind": "npz", "path": str(path), "val_fraction": 0.2})
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (56, 14, 30)
    assert ds.y_val.sum() == 7  # stratified: half of each class
    assert "validation is 14 train rows (0.2, stratified, data.val_fraction)" in ds.meta["notice"]
