"""An exported model as one graph that runs without this package: ONNX and TorchScript.

The graph is the whole `ExportedModel`: the raw inputs in, the standardisation with the train
split's statistics, the ID coding with the train vocabularies, the lengths of padded
sequences, the backbones, the fusion head, and (regression) the way back to the targets'
units. Its inputs, in order (`graph_inputs`), are each modality by name, in sorted order,
followed by `<name>_lengths` `(B,)` int64 for a padded sequence or text that came with
lengths; dense inputs are float32, IDs int64. The batch axis is dynamic.

ONNX is written at opset `OPSET` by torch's TorchScript-based exporter. Three parts take
another, exact form there (`torch.onnx.is_in_onnx_export()`), with the same results:
circulant fusion's FFT becomes its defining sum (`fusion_ops.circulant.cross_correlation`);
a vocabulary lookup compares an ID with every entry (`(B, V)` at once: feed large batches in
chunks); and multi-head attention runs its plain path, masks included. An ID the train split
never held, or a negative one, reads the out-of-vocabulary row: the graph refuses nothing.

TorchScript (`torch.jit.trace`) loads with `torch.jit.load` and needs torch alone.
"""
from __future__ import annotations

import contextlib
import io
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fusion_ops.base import lengths_key
from fusion_ops.ids import IdEncoder
from fusion_ops.load import ExportedModel

OPSET = 17
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.torchscript.pt"
OUTPUT = "output"
ONNX_INSTALL = "pip install 'fusion-nas[onnx]'"


def graph_inputs(model: ExportedModel) -> list[tuple[str, str, tuple[int, ...], str]]:
    """`(graph name, ExportedModel input key, shape after the batch axis, dtype)` per graph input, in order."""
    out: list[tuple[str, str, tuple[int, ...], str]] = []
    backbones = dict(model.model.named_backbones())
    for m, shape in model.input_shapes.items():
        ids = m in model.codings
        out.append((m, m, tuple(shape), "int64" if ids else "float32"))
        if model.codings[m].lengths_from == "lengths" if ids else getattr(backbones[m], "padded", False):
            out.append((f"{m}_lengths", lengths_key(m), (), "int64"))
    return out


class Positional(nn.Module):
    """`forward(*tensors)`, in `graph_inputs` order: what a traced or exported graph takes."""

    def __init__(self, model: ExportedModel) -> None:
        super().__init__()
        self.model = model
        self.keys = [key for _, key, _, _ in graph_inputs(model)]

    def forward(self, *xs: Tensor) -> Tensor:
        return self.model(dict(zip(self.keys, xs, strict=True)))


def example_inputs(model: ExportedModel, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of `batch` samples by graph name: normal floats, IDs from each field's train
    vocabulary (or small ones where it hashes), full lengths. Full lengths matter: a trace
    keeps the number of steps it saw, and a sequence never has more than its full length."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, key, shape, dtype in graph_inputs(model):
        if key != name:  # lengths: every step valid
            m = key.split(":")[0]
            out[name] = np.full(batch, model.input_shapes[m][0], dtype=np.int64)
        elif dtype == "int64":
            encoder: IdEncoder = getattr(model, f"ids_{model.modalities.index(name)}")
            vocab = [v.cpu().numpy() for v in encoder.vocab()]
            cols = [rng.choice(v, size=(batch, *shape) if encoder.coding_type == "text" else batch)
                    if len(v) else rng.integers(1, 1000, size=batch) for v in vocab]
            out[name] = (cols[0] if encoder.coding_type == "text" else np.stack(cols, axis=1)).astype(np.int64)
        else:
            out[name] = rng.standard_normal((batch, *shape)).astype(np.float32)
    return out


def _tensors(model: ExportedModel, inputs: Mapping[str, Any]) -> tuple[Tensor, ...]:
    return tuple(torch.as_tensor(np.asarray(inputs[name])) for name, _, _, _ in graph_inputs(model))


@contextlib.contextmanager
def _plain_attention() -> Iterator[None]:
    """Multi-head attention's fused inference path off (ONNX and tracing do not read it)."""
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


def onnx_bytes(model: ExportedModel, example: Mapping[str, Any] | None = None) -> bytes:
    """The ONNX graph of `model` (on the CPU, in eval mode), traced on `example` (default
    `example_inputs`). Needs the `onnx` package: `ImportError` with the install line without it."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise ImportError(f"ONNX export needs the onnx extra: {ONNX_INSTALL}") from None
    model = model.cpu().eval()
    example = example_inputs(model) if example is None else example
    names = [name for name, _, _, _ in graph_inputs(model)]
    buffer = io.BytesIO()
    with _plain_attention(), torch.no_grad(), _quiet():
        torch.onnx.export(Positional(model), _tensors(model, example), buffer,  # type: ignore[arg-type]
                          dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=[OUTPUT],
                          dynamic_axes={n: {0: "batch"} for n in [*names, OUTPUT]})
    return buffer.getvalue()


def torchscript_bytes(model: ExportedModel, example: Mapping[str, Any] | None = None) -> bytes:
    """`model` traced to TorchScript on `example` (default `example_inputs`), as `torch.jit.save` writes it."""
    model = model.cpu().eval()
    example = example_inputs(model) if example is None else example
    with _plain_attention(), torch.no_grad(), _quiet():
        traced = torch.jit.trace(Positional(model), _tensors(model, example), check_trace=False)
    buffer = io.BytesIO()
    with _quiet():  # torch 2.13 marks TorchScript deprecated (in favour of torch.export); it still loads everywhere
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def load_torchscript(data: bytes) -> torch.jit.ScriptModule:
    """A TorchScript graph from its bytes (what `torch.jit.load` does, without its deprecation warning)."""
    with _quiet():
        return torch.jit.load(io.BytesIO(data))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Tracing warns about every Python-level shape read; the parity tests are what checks the graphs."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def onnx_session(source: str | Path | bytes, threads: int = 1) -> Any:
    """An onnxruntime session on the CPU with `threads` intra-op threads."""
    try:
        import onnxruntime as ort  # type: ignore[import-untyped]
    except ImportError:
        raise ImportError(f"running ONNX needs onnxruntime: {ONNX_INSTALL}") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    data = source if isinstance(source, bytes) else str(source)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, inputs: Mapping[str, Any], chunk: int = 512) -> np.ndarray:
    """The graph's outputs for `inputs` (by graph name; extra keys ignored), `chunk` samples at a time."""
    names = [i.name for i in session.get_inputs()]
    n = len(np.asarray(inputs[names[0]]))
    parts = [session.run([OUTPUT], {k: np.ascontiguousarray(np.asarray(inputs[k])[s:s + chunk]) for k in names})[0]
             for s in range(0, n, chunk)]
    return np.concatenate(parts) if parts else np.zeros((0,), dtype=np.float32)


def latency_ms(run: Any, inputs: Sequence[Any], warmup: int = 10, repeats: int = 50) -> float:
    """The median seconds x 1000 of `run(*inputs)` over `repeats` calls, after `warmup` calls."""
    for _ in range(warmup):
        run(*inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(*inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def onnx_latency_ms(model: ExportedModel, session: Any, **kw: Any) -> float:
    """The median latency of `session` on one sample (batch 1), as `latency_ms` measures it."""
    one = example_inputs(model, batch=1)
    return latency_ms(lambda feed: session.run([OUTPUT], feed), [one], **kw)
