"""ONNX and TorchScript graphs of an export: the same outputs as PyTorch for every operator and backbone kind.

Each graph is traced on 2 samples and run on 7 others, with uneven lengths, IDs never seen in
train and padding where it can sit: the dynamic batch axis, the masks, the OOV rows and the
exact forms ONNX holds (circulant's sum, the vocabulary match) are what these tests check.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion_ops import BACKBONE_KINDS, BackboneConfig, build_backbone, list_fusions
from fusion_ops import formats as F
from fusion_ops.circulant import cross_correlation
from fusion_ops.ids import IdCoding, compact
from fusion_ops.load import ExportedModel, ExportError, save_model
from fusion_ops.model import build_model
from search.export_formats import check_available, read_graph
from spaces.spec import ArchSpec, CellSpec

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4  # the bound, float32 max abs difference
VOCAB = (np.arange(3, 41),)  # text: the train tokens 3..40


def bb(kind: str, shape: tuple[int, ...], g: torch.Generator, **options):
    return build_backbone(BackboneConfig.from_dict({"kind": kind, **options}), shape, g)


def graphs_and_reference(model: ExportedModel, x: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(onnxruntime's outputs, TorchScript's, PyTorch's) on `x` (graph names)."""
    feed = {("a:lengths" if k.endswith("_lengths") else k): torch.as_tensor(v) for k, v in x.items()}
    with torch.no_grad():
        reference = model(feed).numpy()
    onnx = F.run_onnx(F.onnx_session(F.onnx_bytes(model)), x)
    traced = F.load_torchscript(F.torchscript_bytes(model))
    with torch.no_grad():
        ts = traced(*(torch.as_tensor(x[n]) for n, _, _, _ in F.graph_inputs(model))).numpy()
    return onnx, ts, reference


def assert_parity(model: ExportedModel, x: dict[str, np.ndarray]) -> None:
    onnx, ts, reference = graphs_and_reference(model, x)
    assert reference.shape[0] == 7 and np.isfinite(reference).all()
    assert np.abs(onnx - reference).max() <= TOL, np.abs(onnx - reference).max()
    assert np.abs(ts - reference).max() <= TOL, np.abs(ts - reference).max()


# ------------------------------------------------------------------ every operator
@pytest.mark.parametrize("op", list_fusions())
def test_every_operator_exports_to_onnx_and_torchscript_with_the_same_outputs(op):
    """Token operators read a padded GRU's steps (lengths 1..6), vector operators its pooled state."""
    g = torch.Generator().manual_seed(0)
    backbones = {"a": bb("gru", (6, 3), g, hidden=[8]), "v": bb("mlp", (5,), g, widths=[8, 8])}
    backbones["a"].padded = True
    spec = ArchSpec("hybrid", (CellSpec(("a@0", "v@1"), op, 8, "relu"), CellSpec(("a@1", "v@0"), "concat", 8, "relu")))
    model = ExportedModel(build_model(spec, backbones, 3, generator=g), {"a": np.zeros(3), "v": np.zeros(5)},
                          {"a": np.ones(3), "v": np.ones(5)}).eval()
    x = F.example_inputs(model, batch=7, seed=1)
    x["a_lengths"] = np.array([1, 2, 3, 6, 5, 4, 6])
    assert_parity(model, x)


# ------------------------------------------------------------------ every backbone kind
CASES = {  # name: (kind, input shape, options, coding, padded)
    "mlp": ("mlp", (5,), {"widths": [8, 8]}, None, False),
    "cnn2d": ("cnn2d", (1, 8, 8), {}, None, False),
    "conv1d": ("conv1d", (8, 3), {}, None, True),
    "gru": ("gru", (8, 3), {}, None, True),
    "embedding": ("embedding", (3,), {"rows": [5, 7, 40], "widths": [8, 8]},
                  IdCoding("categorical", (np.arange(4), np.array([2, 5, 9, 11, 20, 30]), np.arange(100, 139)),
                           (0, 0, 0), ""), False),
    "embedding-hashed": ("embedding", (2,), {"rows": [5, 9], "widths": [8, 8]},
                         IdCoding("categorical", (np.arange(4), np.array([], dtype=np.int64)), (0, 8), ""), False),
    **{f"text-{enc}-{how}": ("text", (8,), {"encoder": enc, "rows": 42, "widths": [8, 8]},
                             IdCoding("text", VOCAB, (0,), how), False)
       for enc in ("conv1d", "gru", "transformer") for how in ("pad", "lengths")},
}


def _model(case: str, g: torch.Generator) -> ExportedModel:
    kind, shape, options, coding, padded = CASES[case]
    backbone = bb(kind, shape, g, **options)
    backbone.padded = padded or kind == "text"
    backbones = {"a": backbone, "v": bb("mlp", (5,), g, widths=[8])}
    deep = len(backbone.blocks) >= 2
    cells = [CellSpec(("a@0", "v@1"), "attention", 8, "relu"), CellSpec(("a@1", "v@0"), "tensor", 8, "relu")]
    cells += [CellSpec(("a@2", "v@1"), "circulant", 8, "relu")] if deep else []
    model = build_model(ArchSpec("hybrid", tuple(cells)), backbones, 3, generator=g)
    ids = coding is not None
    return ExportedModel(model, {"a": 0.0 if ids else np.zeros(shape[-1] if kind != "cnn2d" else shape), "v": np.zeros(5)},
                         {"a": 1.0 if ids else np.ones(shape[-1] if kind != "cnn2d" else shape), "v": np.ones(5)},
                         codings={"a": coding} if ids else None).eval()


@pytest.mark.parametrize("case", list(CASES))
def test_every_backbone_kind_exports_with_masks_padding_and_oov_ids(case):
    model = _model(case, torch.Generator().manual_seed(0))
    x = F.example_inputs(model, batch=7, seed=1)
    if "a_lengths" in x:
        x["a_lengths"] = np.array([1, 2, 3, 8, 5, 4, 8])
    if case.endswith("-pad"):  # pad ID 0: trailing, inside, and a sample of padding only
        x["a"][:, 5:] = 0
        x["a"][0, 1] = 0
        x["a"][1, :] = 0
    if CASES[case][3] is not None:
        x["a"][2, 0] = 99_999  # never seen in train: the OOV row
    assert_parity(model, x)


def test_the_cases_cover_every_backbone_kind_but_user_code():
    """`python` runs a user's factory: its graph is whatever the factory's module traces to (below)."""
    assert {kind for kind, *_ in CASES.values()} == set(BACKBONE_KINDS) - {"python"}


def test_a_python_backbone_exports_as_what_its_factory_built(tmp_path):
    (tmp_path / "my_factory.py").write_text(textwrap.dedent("""
        from torch import nn

        def make(input_shape):
            return nn.Sequential(nn.Linear(input_shape[0], 6), nn.ReLU(), nn.Linear(6, 4), nn.Tanh())
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        g = torch.Generator().manual_seed(0)
        cfg = BackboneConfig.from_dict({"kind": "python", "factory": "my_factory:make", "taps": ["1", "3"]})
        backbones = {"a": build_backbone(cfg, (4,), g), "v": bb("mlp", (5,), g, widths=[8])}
        spec = ArchSpec("hybrid", (CellSpec(("a@0", "v@1"), "low_rank", 8, "relu"),))
        model = ExportedModel(build_model(spec, backbones, 3, generator=g), {"a": np.zeros(4), "v": np.zeros(5)},
                              {"a": np.ones(4), "v": np.ones(5)}).eval()
        assert_parity(model, F.example_inputs(model, batch=7, seed=1))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_factory", None)


# ------------------------------------------------------------------ the exact forms, against their definitions
def test_the_circulant_sum_is_the_circular_cross_correlation_the_fft_computes():
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(3, 2, 7, generator=g, dtype=torch.float64), torch.randn(3, 2, 7, generator=g, dtype=torch.float64)
    slow = torch.zeros_like(x)
    for k in range(7):
        for j in range(7):
            slow[..., k] += x[..., j] * t[..., (j + k) % 7]
    fft = torch.fft.irfft(torch.fft.rfft(x).conj() * torch.fft.rfft(t), n=7)
    assert torch.allclose(cross_correlation(x, t), slow) and torch.allclose(fft, slow)


def test_compact_moves_the_tokens_to_the_front_in_their_order():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.integers(0, 4, size=(50, 9)) * (rng.random((50, 9)) < 0.6))
    out, lengths = compact(x)
    for row, got, n in zip(x.tolist(), out.tolist(), lengths.tolist(), strict=True):
        kept = [v for v in row if v != 0]
        assert got == kept + [0] * (9 - len(kept)) and n == max(len(kept), 1)


def test_an_onnx_graph_codes_negative_and_unseen_ids_as_oov_where_python_refuses_them():
    model = _model("embedding", torch.Generator().manual_seed(0))
    x = F.example_inputs(model, batch=7, seed=1)
    oov = x.copy()
    oov["a"] = x["a"].copy()
    oov["a"][:, 0] = 123_456  # never seen: the OOV row
    neg = x.copy()
    neg["a"] = x["a"].copy()
    neg["a"][:, 0] = -5
    session = F.onnx_session(F.onnx_bytes(model))
    assert np.array_equal(F.run_onnx(session, neg), F.run_onnx(session, oov))  # the same row
    assert not np.array_equal(F.run_onnx(session, x), F.run_onnx(session, oov))  # another row: the test can fail
    with pytest.raises(ValueError, match="negative ID -5"):
        model({"a": torch.as_tensor(neg["a"]), "v": torch.as_tensor(x["v"])})


# ------------------------------------------------------------------ files a user receives
def _export(tmp_path: Path) -> tuple[Path, ExportedModel]:
    """A native export plus its ONNX graph, written as `fusion-nas export --format onnx` writes them."""
    from search.export_formats import FILES

    model = _model("embedding", torch.Generator().manual_seed(0))
    out = tmp_path / "my-export"
    out.mkdir()
    data = F.onnx_bytes(model)
    (out / FILES["onnx"]).write_bytes(data)
    import hashlib

    formats = {"onnx": {"file": FILES["onnx"], "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}
    backbones = {m: BackboneConfig.from_dict({"kind": "mlp", "widths": [8]}).to_dict() for m in ("a", "v")}
    save_model(model, out, backbones | {"a": BackboneConfig.from_dict(
        {"kind": "embedding", "rows": [5, 7, 40], "widths": [8, 8]}).to_dict()}, formats)
    return out, model


def test_a_changed_or_truncated_graph_is_refused_by_its_sha256(tmp_path):
    out, _ = _export(tmp_path)
    assert read_graph(out, "onnx") == (out / "model.onnx").read_bytes()
    with pytest.raises(ExportError, match="exported without --format torchscript"):
        read_graph(out, "torchscript")
    data = (out / "model.onnx").read_bytes()
    (out / "model.onnx").write_bytes(data[:-10])
    with pytest.raises(ExportError, match="do not match the SHA-256 in model.json"):
        read_graph(out, "onnx")
    (out / "model.onnx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ExportError, match="do not match the SHA-256 in model.json"):
        read_graph(out, "onnx")


def test_asking_for_onnx_without_the_extra_is_one_line_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: import fails
    with pytest.raises(ExportError) as err:
        check_available(["native", "onnx"])
    assert str(err.value) == "--format onnx needs the onnxruntime package: pip install 'fusion-nas[onnx]'"
    check_available(["native", "torchscript"])  # torch alone


def _readme_block(marker: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(marker)
    block = text[text.index("```python", start) + len("```python"): text.index("```", text.index("```python", start) + 9)]
    return textwrap.dedent(block)


def test_the_readme_onnx_example_runs_with_onnxruntime_alone(tmp_path):
    """In a fresh, isolated interpreter: no fusion-nas, no torch; the folder holds no Python to run."""
    out, model = _export(tmp_path)
    x = F.example_inputs(model, batch=8, seed=2)
    np.savez(tmp_path / "my-data.npz", **x)
    code = _readme_block("<!-- onnx example -->")
    check = "\nimport sys\nassert not {'torch', 'search', 'fusion_ops'} & set(sys.modules), sorted(sys.modules)\n"
    proc = subprocess.run([sys.executable, "-I", "-c", code + check], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with torch.no_grad():
        want = model({k: torch.as_tensor(v) for k, v in x.items()}).numpy().argmax(1)
    assert proc.stdout.strip().splitlines()[-1] == str(want.tolist()), proc.stdout
    assert not list(out.glob("*.py"))
