"""`fusion-nas export --format onnx|torchscript`: the export's graph files, checked on the test split.

The native files (`arch.yaml`, `weights.safetensors`, `model.json`) are always written: they are
what the graphs are made from and what `fusion-nas evaluate` reads. Each other format adds one
file (`fusion_ops.formats`), recorded in `model.json` (`formats`) with its SHA-256, and checked
before it is kept: its outputs on the whole test split must equal PyTorch's within `PARITY`
(max absolute difference, float32). `model.json` also records, per format, that difference,
its test metric, and for ONNX its latency in onnxruntime at batch 1 on one thread (the median
after warm-up), beside the PyTorch latency measured the same way.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusion_ops import formats as F
from fusion_ops.load import ExportedModel, ExportError, read_bounded, read_checked_info
from search.training.tasks import Task
from search.training.train import predict, torch_threads

FORMATS = ("native", "onnx", "torchscript")
FILES = {"onnx": F.ONNX_FILE, "torchscript": F.TORCHSCRIPT_FILE}
PARITY = 1e-4
MAX_GRAPH_BYTES = 2 * 1024**3  # as the weights file (fusion_ops.load.MAX_WEIGHTS_BYTES)


def check_available(formats: Sequence[str]) -> None:
    """Before any training: one line with the install command when ONNX is asked for without its extra."""
    if "onnx" in formats:
        for package in ("onnx", "onnxruntime"):
            try:
                __import__(package)
            except ImportError:
                raise ExportError(f"--format onnx needs the {package} package: {F.ONNX_INSTALL}") from None


def write_formats(model: ExportedModel, out: Path, formats: Sequence[str], xs: Mapping[str, torch.Tensor],
                  y: torch.Tensor, task: Task, metric: str) -> dict[str, dict[str, Any]]:
    """Write each of `formats` (other than native) into `out`; `model.json`'s `formats` entries.
    `xs`, `y`: the raw test split (`search.export.raw_test_split`); `metric`: the run's test metric."""
    wanted = list(dict.fromkeys(f for f in formats if f != "native"))
    if not wanted:
        return {}
    model = model.cpu().eval()
    with torch.no_grad():
        reference = predict(model, dict(xs)).numpy()
    feed = {name: xs[key].numpy() for name, key, _, _ in F.graph_inputs(model)}
    one = [torch.as_tensor(v[:1]) for v in feed.values()]
    with torch.no_grad(), torch_threads(1):  # as onnxruntime's: one thread
        torch_ms = F.latency_ms(F.Positional(model), one)
    infos: dict[str, dict[str, Any]] = {}
    for fmt in wanted:
        if fmt == "onnx":
            data = F.onnx_bytes(model)
            session = F.onnx_session(data)
            outputs = F.run_onnx(session, feed)
            extra = {"opset": F.OPSET, "latency_ms_batch1": F.onnx_latency_ms(model, session)}
        else:
            data = F.torchscript_bytes(model)
            traced = F.load_torchscript(data)
            with torch.no_grad():
                outputs = predict(_Keyed(traced, list(feed)), {k: torch.as_tensor(v) for k, v in feed.items()}).numpy()
            extra = {}
        diff = float(np.abs(outputs - reference).max()) if outputs.size else 0.0
        if not diff <= PARITY:  # NaN fails too
            raise ExportError(f"--format {fmt}: its outputs differ from PyTorch's by {diff:.3g} on the test split "
                              f"(more than {PARITY:g}); not written")
        (out / FILES[fmt]).write_bytes(data)
        score = outputs_metrics(task, torch.from_numpy(outputs), y)[f"test_{metric}"]
        infos[fmt] = {"file": FILES[fmt], "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                      "inputs": [{"name": n, "shape": ["batch", *s], "dtype": d} for n, _, s, d in F.graph_inputs(model)],
                      "output": F.OUTPUT, "max_abs_diff_test": diff, f"test_{metric}": score, **extra,
                      "torch_latency_ms_batch1": torch_ms}
    return infos


def outputs_metrics(task: Task, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """`{test_<metric>: value}` of `outputs` (an export's, in the targets' units) against `y`."""
    return {f"test_{k}": v for k, v in task.metrics(outputs, y).items()}


class _Keyed(torch.nn.Module):
    """A traced graph called with a dict of its inputs by graph name (what `predict` feeds)."""

    def __init__(self, traced: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.traced, self.names = traced, names

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.traced(*(inputs[n] for n in self.names))


def read_graph(export_dir: str | Path, fmt: str) -> bytes:
    """The bytes of an export's `fmt` graph, refused unless they match the SHA-256 in `model.json`."""
    path = Path(export_dir)
    info, _ = read_checked_info(path)
    entry = (info.get("formats") or {}).get(fmt)
    if not isinstance(entry, Mapping):
        raise ExportError(f"{path}: exported without --format {fmt}")
    file = path / FILES[fmt]
    data = read_bounded(file, MAX_GRAPH_BYTES)
    if len(data) != entry.get("bytes") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise ExportError(f"{file}: {len(data)} bytes that do not match the SHA-256 in model.json: "
                          "the file was changed or truncated after export")
    return data
