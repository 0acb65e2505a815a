"""Categorical fields and text tokens: coded from train only, OOV-safe, padding-blind, fed to every operator."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fusion_ops as F
from fusion_ops.backbones import BackboneConfig, build_backbone
from fusion_ops.ids import IdCoding, IdEncoder, compact, encode, fit_coding
from fusion_ops.load import ExportedModel
from fusion_ops.model import build_model
from search.datasets import DataError, load_dataset
from search.datasets.inputs import detect_type
from search.training.pretrain import BackbonesConfig, pretrain_backbones
from spaces.spec import ArchSpec, CellSpec
from tests.cli_run import fusion_nas_here


def ids_npz(path, n=300, seed=0, text_lengths=True, **extra):
    """fields (N, 3) int64 of cardinalities 1000, 50, 20; text (N, 12) tokens padded with 0; image (N, 8)."""
    rng = np.random.default_rng(seed)
    fields = np.stack([rng.integers(0, 1000, n), rng.integers(0, 50, n), rng.integers(0, 20, n)], axis=1)
    lengths = rng.integers(1, 13, n)
    text = rng.integers(1, 60, (n, 12))
    text[np.arange(12)[None, :] >= lengths[:, None]] = 0
    arrays = {"fields": fields, "text": text, "image": rng.standard_normal((n, 8)).astype(np.float32),
              "y": (fields[:, 2] % 2).astype(np.int64), **extra}
    if text_lengths:
        arrays["text_lengths"] = lengths
    np.savez(path, **arrays)
    return arrays


# ------------------------------------------------------------------ coding, against the slow way
def slow_codes(train_col, col, text):
    """The coding written out: a dict from each train ID (sorted) to 1 + its rank (2 + for text)."""
    table = {v: i + (2 if text else 1) for i, v in enumerate(sorted(set(int(t) for t in train_col) - ({0} if text else set())))}
    return [0 if text and v == 0 else table.get(int(v), 1 if text else 0) for v in col]


def test_codes_match_a_dictionary_of_the_train_ids_and_unseen_ids_get_the_oov_row():
    rng = np.random.default_rng(3)
    train, test = rng.integers(0, 40, (200, 3)), rng.integers(0, 60, (50, 3))  # test holds IDs train never saw
    coding = fit_coding("categorical", train)
    codes = encode(torch.from_numpy(test), [torch.from_numpy(v) for v in coding.vocab], coding.buckets, False)
    for f in range(3):
        assert codes[:, f].tolist() == slow_codes(train[:, f], test[:, f], False)
    assert (codes[torch.from_numpy(test) >= 40] == 0).all() and coding.rows == tuple(len(set(train[:, f])) + 1 for f in range(3))
    tokens = rng.integers(0, 30, (40, 9))
    text = fit_coding("text", tokens[:20], lengths_from="pad")
    got = encode(torch.from_numpy(tokens[20:]), [torch.from_numpy(text.vocab[0])], text.buckets, True)
    got = got * torch.from_numpy(tokens[20:] != 0)
    assert got.flatten().tolist() == slow_codes(tokens[:20].ravel(), tokens[20:].ravel(), True)


def test_a_field_with_more_ids_than_buckets_is_hashed_into_them():
    rng = np.random.default_rng(0)
    train = np.stack([rng.integers(0, 10**6, 500), rng.integers(0, 5, 500)], axis=1)
    coding = fit_coding("categorical", train, buckets=64)
    assert coding.buckets == (64, 0) and coding.rows == (65, len(set(train[:, 1])) + 1)
    codes = encode(torch.from_numpy(train), [torch.from_numpy(v) for v in coding.vocab], coding.buckets, False)
    slow = [1 + ((int(v) % 2147483647) * 2654435761) % 2**32 % 64 for v in train[:, 0]]
    assert codes[:, 0].tolist() == slow and len(set(slow)) > 40  # spread over the buckets


def test_compact_moves_the_tokens_to_the_front_in_their_order():
    x = torch.tensor([[0, 5, 0, 7, 9], [3, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    out, n = compact(x)
    assert out.tolist() == [[5, 7, 9, 0, 0], [3, 0, 0, 0, 0], [0, 0, 0, 0, 0]] and n.tolist() == [3, 1, 1]


# ------------------------------------------------------------------ data: detection, overrides, refusals
def test_the_rule_reads_int_fields_and_tokens_with_lengths_as_ids_and_the_rest_as_numbers(tmp_path):
    ids_npz(tmp_path / "d.npz", pixels=np.zeros((300, 16), np.uint8))
    ds = load_dataset({"kind": "npz", "path": str(tmp_path / "d.npz")})
    types = {m: ds.input_type(m) for m in ds.modalities}
    assert types == {"fields": "categorical", "text": "text", "image": "dense", "pixels": "dense"}
    assert detect_type(np.zeros((4, 3, 2), np.int64), False) == "dense" and detect_type(np.zeros(4, np.int32), False) == "categorical"
    assert ds.codings["text"].lengths_from == "lengths" and ds.lengths_of("train")["text"].min() >= 1
    assert ds.mean["fields"].shape == () and float(ds.std["fields"]) == 1.0  # codes are not standardised
    over = load_dataset({"kind": "npz", "path": str(tmp_path / "d.npz"),
                         "modalities": {"fields": {"type": "dense"}, "pixels": {"type": "categorical"}}})
    assert over.input_type("fields") == "dense" and over.input_type("pixels") == "categorical"


@pytest.mark.parametrize("modalities, key", [
    ({"nope": {"type": "text"}}, "data.modalities.nope"),
    ({"fields": {"type": "words"}}, "data.modalities.fields.type"),
    ({"fields": {"kind": "text"}}, "data.modalities.fields.kind"),
    ({"image": {"type": "text"}}, "data.modalities.image.type"),
    ({"fields": {"buckets": -1}}, "data.modalities.fields.buckets"),
])
def test_a_bad_modalities_entry_is_one_line_naming_the_key(tmp_path, modalities, key):
    ids_npz(tmp_path / "d.npz")
    with pytest.raises(DataError, match=key.replace(".", r"\.") + ":") as err:
        load_dataset({"kind": "npz", "path": str(tmp_path / "d.npz"), "modalities": modalities})
    assert "\n" not in str(err.value)


def test_a_negative_id_is_one_line_naming_the_array_and_exit_2(tmp_path):
    arrays = ids_npz(tmp_path / "d.npz")
    fields = arrays["fields"].copy()
    fields[17, 1] = -3
    np.savez(tmp_path / "d.npz", **{**arrays, "fields": fields})
    (tmp_path / "c.yaml").write_text("name: neg\ndata: {kind: npz, path: d.npz}\n")
    for command in (["search", "c.yaml"], ["init", "--data", "d.npz", "--out", "x.yaml"]):
        proc = fusion_nas_here(*command, cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "array 'fields' holds the negative ID -3" in proc.stderr and "d.npz" in proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x.yaml").exists()


def test_init_writes_embedding_and_text_and_says_why(tmp_path):
    ids_npz(tmp_path / "d.npz")
    mask = np.load(tmp_path / "d.npz")
    arrays = {k: mask[k] for k in mask.files if k != "text_lengths"}
    arrays["text_mask"] = np.arange(12)[None, :] < mask["text_lengths"][:, None]  # a mask says the same
    np.savez(tmp_path / "m.npz", **arrays)
    for data in ("d.npz", "m.npz"):
        proc = fusion_nas_here("init", "--data", data, "--out", f"{data}.yaml", "--force", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        text = (tmp_path / f"{data}.yaml").read_text()
        assert "fields:\n      kind: embedding" in text and "text:\n      kind: text" in text, text
        assert "image:\n      kind: mlp" in text and "#   fields: integer columns: categorical fields" in text
        assert "attention" in text  # ID taps are tokens: a token operator is offered
        assert fusion_nas_here("space", f"{data}.yaml", cwd=tmp_path).returncode == 0


# ------------------------------------------------------------------ train only
def test_vocabulary_and_cardinality_come_from_train_only_a_test_only_id_changes_nothing_learned(tmp_path):
    arrays = ids_npz(tmp_path / "a.npz", n=240)
    split = np.repeat([0, 1, 2], 80)
    np.savez(tmp_path / "a.npz", **arrays, split=split)
    fields, text = arrays["fields"].copy(), arrays["text"].copy()
    fields[160:, 0] = 5000 + np.arange(80)  # IDs only the test split holds
    text[160:, 0] = 999
    np.savez(tmp_path / "b.npz", **{**arrays, "fields": fields, "text": text}, split=split)
    a, b = (load_dataset({"kind": "npz", "path": str(tmp_path / f"{n}.npz")}) for n in "ab")
    for m in ("fields", "text"):
        assert a.codings[m].rows == b.codings[m].rows
        assert all(np.array_equal(u, v) for u, v in zip(a.codings[m].vocab, b.codings[m].vocab, strict=True))
        assert np.array_equal(a.train[m], b.train[m]) and np.array_equal(a.val[m], b.val[m])
    assert (b.test["fields"][:, 0] == 0).all() and (b.test["text"][:, 0] == 1).all()  # the OOV rows
    cfg = BackbonesConfig.from_dict({"cache_dir": None, "pretrain": {"epochs": 3}})
    learned = [pretrain_backbones(ds, cfg, {})[0] for ds in (a, b)]
    for m in ("fields", "text"):
        wa, wb = learned[0][m].state_dict(), learned[1][m].state_dict()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), m


# ------------------------------------------------------------------ padding
@pytest.mark.parametrize("encoder", ["conv1d", "gru", "transformer"])
def test_the_same_text_padded_differently_gives_the_same_prediction(encoder):
    g = torch.Generator().manual_seed(0)
    backbones = {"text": build_backbone(BackboneConfig.from_dict({"kind": "text", "encoder": encoder, "rows": 40}), (10,), g),
                 "v": build_backbone(BackboneConfig("mlp", (4,)), (3,), g)}
    backbones["text"].padded = True
    spec = ArchSpec("hybrid", (CellSpec(("text@0", "v@1"), "attention", 8, "relu", (("dim", 8),)),
                               CellSpec(("text@1", "v@0"), "tensor", 8, "relu"),
                               CellSpec(("text@2", "v@1"), "concat", 8, "relu")))
    model = build_model(spec, backbones, 2, generator=g).eval()
    coding = IdCoding("text", (np.arange(3, 40, dtype=np.int64),), (0,), "pad")
    exported = ExportedModel(model, {"text": 0.0, "v": np.zeros(3)}, {"text": 1.0, "v": np.ones(3)},
                             codings={"text": coding}).eval()
    words = [7, 3, 12, 12, 5]
    right, left, spread = (torch.tensor([r]) for r in (words + [0] * 5, [0] * 5 + words, [0, 7, 0, 3, 12, 0, 12, 0, 5, 0]))
    v = torch.randn(1, 3, generator=g)
    outs = [exported({"text": t, "v": v}) for t in (right, left, spread)]
    assert torch.allclose(outs[0], outs[1], atol=1e-6) and torch.allclose(outs[0], outs[2], atol=1e-6)
    other = exported({"text": torch.tensor([[7, 3, 12, 5, 12] + [0] * 5]), "v": v})
    assert not torch.allclose(outs[0], other, atol=1e-4)  # order matters: not a bag of words
    lengths = ExportedModel(model, {"text": 0.0, "v": np.zeros(3)}, {"text": 1.0, "v": np.ones(3)},
                            codings={"text": IdCoding("text", coding.vocab, (0,), "lengths")}).eval()
    junk = torch.tensor([words + [9, 9, 33, 2, 0]])  # given lengths: what lies past them is never read
    assert torch.allclose(lengths({"text": junk, "text:lengths": torch.tensor([5]), "v": v}), outs[0], atol=1e-6)
    with pytest.raises(ValueError, match="give them as inputs"):
        lengths({"text": junk, "v": v})


def test_an_unseen_id_at_prediction_time_reads_the_oov_row():
    coding = fit_coding("categorical", np.array([[1, 10], [2, 20], [3, 10]]))
    enc = IdEncoder(coding)
    codes, _ = enc(torch.tensor([[2, 20], [99, 7], [123456789, 10]]))
    assert codes.tolist() == [[2, 2], [0, 0], [0, 1]]
    with pytest.raises(ValueError, match="negative ID -1"):
        enc(torch.tensor([[-1, 10]]))


# ------------------------------------------------------------------ every operator reads an embedding tap
@pytest.mark.parametrize("op", F.list_fusions())
def test_an_embedding_tap_feeds_each_operator(op):
    g = torch.Generator().manual_seed(0)
    fields = build_backbone(BackboneConfig.from_dict({"kind": "embedding", "rows": [11, 51, 1001], "widths": [16, 8]}),
                            (3,), g)
    image = build_backbone(BackboneConfig("mlp", (6, 5)), (7,), g)
    assert fields.tap_shapes == [(3, 32), (16,), (8,)]
    backbones = {"fields": fields, "image": image}
    x = {"fields": torch.stack([torch.randint(0, r, (6,), generator=g) for r in (11, 51, 1001)], 1).float(),
         "image": torch.randn(6, 7, generator=g)}
    for taps in (("fields@0", "image@1"), ("fields@1", "image@2")):  # the tokens (B, F, d), then a vector
        spec = ArchSpec("hybrid", (CellSpec(taps, op, 8, "relu"),))
        model = build_model(spec, backbones, 3, generator=g)
        out = model(x)
        assert out.shape == (6, 3) and torch.isfinite(out).all(), (op, taps)
        out.sum().backward()
        grads = [p.grad for p in model.fusion.parameters() if p.requires_grad]
        assert any(gr is not None and gr.abs().sum() > 0 for gr in grads), (op, taps)


# ------------------------------------------------------------------ the classic CTR baseline
def test_the_linear_baseline_reads_fields_one_hot_where_as_numbers_it_sees_nothing(tmp_path):
    from search.training.baselines_fit import design_matrix, linear_baseline

    ids_npz(tmp_path / "d.npz", n=600)  # y is the parity of field 2's ID: a lookup, not a slope
    ds = load_dataset({"kind": "npz", "path": str(tmp_path / "d.npz")})
    x, reads = design_matrix(ds, "train")
    rows = sum(ds.codings["fields"].rows) + ds.codings["text"].rows[0]
    assert x.shape == (len(ds.y_train), 8 + rows) and reads == 8 + 3 + 12
    one_hot = x[:, 8:8 + sum(ds.codings["fields"].rows)].toarray()
    assert (one_hot.sum(axis=1) == 3).all()  # one column per field
    words = x[:, 8 + sum(ds.codings["fields"].rows):].toarray()
    assert np.array_equal(words.sum(axis=1), ds.lengths_of("train")["text"])  # a bag of the valid tokens
    record = linear_baseline(ds)
    assert record["test_accuracy"] > 0.9, record
    assert record["params_total"] == 8 + rows + 1 and record["flops_total"] == 2 * reads
    dense = load_dataset({"kind": "npz", "path": str(tmp_path / "d.npz"),
                          "modalities": {"fields": {"type": "dense"}}})
    assert linear_baseline(dense)["test_accuracy"] < 0.7  # the IDs as magnitudes: next to chance


@pytest.mark.parametrize("modality, backbone, says", [
    ("fields", {"kind": "mlp"}, "backbones.modalities.fields.kind: 'fields' holds categorical IDs, which the mlp "
                                "backbone would read as magnitudes; use embedding"),
    ("text", {"kind": "embedding"}, "backbones.modalities.text.kind: the embedding backbone reads categorical IDs, "
                                    "but 'text' holds text inputs; use text"),
    ("image", {"kind": "text"}, "backbones.modalities.image.kind: the text backbone reads token IDs, but 'image' "
                                "holds dense inputs"),
])
def test_a_backbone_that_cannot_read_the_inputs_is_one_line_and_exit_2(tmp_path, modality, backbone, says):
    ids_npz(tmp_path / "d.npz")
    (tmp_path / "c.yaml").write_text(f"name: b\ndata: {{kind: npz, path: d.npz}}\n"
                                     f"backbones: {{modalities: {{{modality}: {backbone}}}}}\n".replace("'", ""))
    proc = fusion_nas_here("search", "c.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()


def test_buckets_in_the_config_hash_the_wide_fields_and_an_export_hashes_alike(tmp_path):
    rng = np.random.default_rng(5)
    n = 400
    arrays = {"fields": np.stack([rng.integers(0, 10**9, n), rng.integers(0, 7, n)], axis=1),
              "image": rng.standard_normal((n, 4)).astype(np.float32), "y": rng.integers(0, 2, n)}
    np.savez(tmp_path / "d.npz", **arrays)
    ds = load_dataset({"kind": "npz", "path": str(tmp_path / "d.npz"), "modalities": {"fields": {"buckets": 32}}})
    coding = ds.codings["fields"]
    assert coding.buckets == (32, 0) and coding.rows == (33, 8)  # the narrow field keeps its vocabulary
    codes = ds.test["fields"].astype(np.int64)
    assert codes[:, 0].min() >= 1 and codes[:, 0].max() <= 32 and len(np.unique(codes[:, 0])) > 20
    enc = IdEncoder(IdCoding.from_json(coding.to_json(), [torch.from_numpy(v) for v in coding.vocab]))
    again, _ = enc(torch.from_numpy(ds.raw_ids["test"]["fields"]))
    assert np.array_equal(again.numpy(), codes)  # an export codes the raw IDs as the data did
