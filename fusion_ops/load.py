"""An exported candidate on disk, and the one line that loads it back.

An export directory holds `arch.yaml` (the `ArchSpec`), `model.json` (what to build:
each modality's backbone and input shape, the classes, the format version and the
SHA-256 of the weights) and `weights.safetensors` (every tensor: the backbone blocks the
model runs — none for a spec on raw inputs, blocks 1..d for one reading depth d — fusion
cells, head, and the train split's input standardisation). `load_model` builds each
backbone from its config and cuts it as the architecture needs (`Backbone.lean`). safetensors holds tensors
and nothing else, so loading an export never runs code from the file; the digest in
`model.json` catches a weights file changed or cut short after export before any of
it is parsed, and its `integrity` digest (format version 2) covers `model.json` and
`arch.yaml` themselves. A backbone of kind `python` names a factory to import and call:
`load_model` refuses it unless the caller trusts the export's author (`trust_code=True`).

    from fusion_ops.load import load_model
    model = load_model("export/")                    # nn.Module, eval mode, on the CPU
    model = load_model("export/", device="cuda")     # or on a GPU (inputs may stay on the CPU)
    logits = model({"m1": x1, "m2": x2})             # raw inputs (B, *input_shape) -> (B, C)
    logits = model({"fields": ids, "text": tokens, "text:lengths": n})  # IDs as the data holds them

A modality of integer IDs (`fusion_ops.ids`) takes its raw IDs: the export holds the train
split's vocabularies (as tensors in the weights file) and codes them as the search did.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fusion_ops.backbones import BackboneConfig, build_backbone
from fusion_ops.base import lengths_key
from fusion_ops.ids import IdCoding, IdEncoder
from fusion_ops.model import FusionModel, build_model, model_cost
from spaces.spec import ArchSpec

FORMAT = "fusion-nas-export"
VERSION = 2  # 2: model.json carries `integrity`; version 1 exports (without it) still load
READS = (1, 2)
ARCH_FILE, MODEL_FILE, WEIGHTS_FILE = "arch.yaml", "model.json", "weights.safetensors"
MAX_TEXT_BYTES = 16 * 2**20  # arch.yaml, model.json, metrics.json
MAX_WEIGHTS_BYTES = 8 * 2**30


class ExportError(ValueError):
    """An export directory that cannot be loaded: missing, damaged or changed files."""


def integrity(info: Mapping[str, Any], arch_text: bytes) -> str:
    """SHA-256 of `model.json` (its canonical JSON, without this digest) and the bytes of
    `arch.yaml`: what `load_model` checks before it reads anything else of them."""
    body = {k: v for k, v in info.items() if k != "integrity"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(canonical + b"\n" + arch_text).hexdigest()


def code_named(info: Mapping[str, Any]) -> list[str]:
    """What loading `info` (a model.json) would import and call: `modality: module:function` of
    each backbone of kind `python` (the other kinds are this package's, or installed plugins')."""
    mods = info.get("modalities")
    if not isinstance(mods, Mapping):
        return []
    return [f"{m}: {d['backbone'].get('factory')!r}" for m, d in sorted(mods.items())
            if isinstance(d, Mapping) and isinstance(d.get("backbone"), Mapping) and d["backbone"].get("kind") == "python"]


class ExportedModel(nn.Module):
    """Standardises raw inputs with the train split's statistics, then runs a `FusionModel`.

    `forward(inputs)`: `{m: (B, *input_shape_m)}` (tensors or arrays; extra modalities
    ignored) -> `(B, outputs)`: class logits (`classes[i]` is class i's label in the data),
    per-label logits (multilabel), or predictions in the targets' units (regression: the
    model's standardised outputs times `target_std` plus `target_mean`).
    A padded sequence modality takes its valid lengths `(B,)` as `inputs[m + ":lengths"]`.
    A modality of IDs (`codings[m]`) takes the raw integer IDs, coded by the train vocabularies;
    text read by a pad ID needs no lengths, text that came with lengths needs them.
    Inputs go to the model's device first (CPU arrays feed a model on a GPU).
    """

    def __init__(self, model: FusionModel, mean: Mapping[str, Any], std: Mapping[str, Any],
                 classes: Sequence[Any] = (), task: str = "classification",
                 target_scale: tuple[Any, Any] | None = None, codings: Mapping[str, IdCoding] | None = None) -> None:
        super().__init__()
        self.model = model
        self.modalities: tuple[str, ...] = model.modalities
        self.classes = tuple(classes)
        self.task = task
        if target_scale is not None:
            self.register_buffer("target_mean", torch.as_tensor(target_scale[0], dtype=torch.float32).clone())
            self.register_buffer("target_std", torch.as_tensor(target_scale[1], dtype=torch.float32).clone())
        # buffers by position in sorted order: modality names need not be valid attribute names
        for i, m in enumerate(self.modalities):
            self.register_buffer(f"mean_{i}", torch.as_tensor(mean[m], dtype=torch.float32).clone())
            self.register_buffer(f"std_{i}", torch.as_tensor(std[m], dtype=torch.float32).clone())
        self.codings = {m: c for m, c in (codings or {}).items() if m in self.modalities}
        for i, m in enumerate(self.modalities):
            if m in self.codings:
                self.add_module(f"ids_{i}", IdEncoder(self.codings[m]))

    @property
    def spec(self) -> ArchSpec:
        return self.model.spec

    @property
    def arch_id(self) -> str:
        return self.model.arch_id

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {m: b.input_shape for m, b in self.model.named_backbones()}

    def standardize(self, inputs: Mapping[str, Any]) -> dict[str, Tensor]:
        """`(x - mean) / std` per modality, in float32: the same arithmetic the dataset loaders do."""
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise ValueError(f"missing input for modality {missing[0]!r}; the model reads {', '.join(self.modalities)}")
        out: dict[str, Tensor] = {}
        for i, m in enumerate(self.modalities):
            mean = getattr(self, f"mean_{i}")
            if m in self.codings:
                out.update(self._coded(i, m, inputs, mean.device))
                continue
            x = torch.as_tensor(inputs[m], dtype=torch.float32, device=mean.device)
            out[m] = (x - mean) / getattr(self, f"std_{i}")
            if lengths_key(m) in inputs:  # padded sequences: the backbone zeroes the padding itself
                out[lengths_key(m)] = torch.as_tensor(inputs[lengths_key(m)], dtype=torch.long, device=mean.device)
        return out

    def _coded(self, i: int, m: str, inputs: Mapping[str, Any], device: torch.device) -> dict[str, Tensor]:
        """`{m: codes as float32, m:lengths: valid steps (text)}` from the raw IDs `inputs[m]`."""
        ids = torch.as_tensor(inputs[m], device=device)
        if ids.is_floating_point() and not bool((ids == ids.round()).all()):
            raise ValueError(f"modality {m!r} takes integer IDs, got fractional values")
        given = inputs.get(lengths_key(m))
        if self.codings[m].lengths_from == "lengths" and given is None:
            raise ValueError(f"modality {m!r} is text that came with lengths: give them as inputs[{lengths_key(m)!r}]")
        lengths = None if given is None else torch.as_tensor(given, dtype=torch.long, device=device)
        codes, lengths = getattr(self, f"ids_{i}")(ids.long(), lengths)
        return {m: codes.float(), **({lengths_key(m): lengths} if lengths is not None else {})}

    def forward(self, inputs: Mapping[str, Any]) -> Tensor:
        out = self.model(self.standardize(inputs))
        if hasattr(self, "target_mean"):  # regression: back to the targets' units
            out = out * self.target_std + self.target_mean
        return out


def save_model(model: ExportedModel, out: str | Path, backbones: Mapping[str, Mapping[str, Any]],
               formats: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Write `arch.yaml`, `weights.safetensors` and `model.json` of `model` into `out`; returns model.json.

    `backbones[m]` is modality m's `BackboneConfig.to_dict()` (how to rebuild it); `formats`, the
    graph files already written beside them (`search.export_formats`), go into model.json.
    """
    from safetensors.torch import save

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # clones: safetensors refuses tensors that share storage
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    data = save(tensors, metadata={"format": FORMAT, "arch_id": model.arch_id})
    info = {
        "format": FORMAT,
        "version": VERSION,
        "arch_id": model.arch_id,
        "num_classes": int(model.model.fusion.num_classes),
        "classes": list(model.classes),
        "task": model.task,
        "modalities": {
            m: {"input_shape": list(shape), "backbone": dict(backbones[m]),
                **({"input": model.codings[m].to_json()} if m in model.codings else {})}
            for m, shape in model.input_shapes.items()
        },
        # the token taps its vector operators read flattened (absent in older exports: none)
        "flat_taps": sorted(model.model.fusion.flat),
        # parameters and forward FLOPs per sample (fusion_ops.cost), beside the graphs' latency in `formats`
        "cost": {k: int(v) for k, v in model_cost(model.model).items()},
        "weights": {"file": WEIGHTS_FILE, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)},
        **({"formats": {k: dict(v) for k, v in formats.items()}} if formats else {}),
    }
    arch = model.spec.to_yaml().encode("utf-8")
    info["integrity"] = integrity(info, arch)
    (out / WEIGHTS_FILE).write_bytes(data)
    (out / ARCH_FILE).write_bytes(arch)
    (out / MODEL_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def read_bounded(file: Path, limit: int) -> bytes:
    """The bytes of `file`, which must be a regular file (a symlink to one is fine) of at
    most `limit` bytes: a FIFO or a device would block or never end."""
    try:
        st = os.stat(file)
    except FileNotFoundError:
        raise ExportError(f"{file}: missing") from None
    except OSError as err:
        raise ExportError(f"{file}: cannot read ({err.strerror or err})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ExportError(f"{file}: not a regular file")
    if st.st_size > limit:
        raise ExportError(f"{file}: {st.st_size:,} bytes, more than the {limit:,} an export file may have")
    try:
        with open(file, "rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise ExportError(f"{file}: cannot read ({err.strerror or err})") from None
    if len(data) > limit:
        raise ExportError(f"{file}: grew past {limit:,} bytes while being read")
    return data


def load_model(path: str | Path, device: str | torch.device = "cpu", *, trust_code: bool = False) -> ExportedModel:
    """The model exported to directory `path`, in eval mode, on `device` (its weights mapped there);
    `ExportError` says what is wrong otherwise. A backbone factory named in `model.json` (kind
    `python`) is imported and called only with `trust_code=True`: run code from people you trust."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    info, arch = read_checked_info(path)
    code = code_named(info)
    if code and not trust_code:
        raise ExportError(f"{path / MODEL_FILE} names code to import and run ({'; '.join(code)}); load it only "
                          "from someone you trust: load_model(..., trust_code=True), or fusion-nas evaluate --trust-code")
    spec = _read_spec(path, info, arch)
    data = _read_weights(path, info)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ExportError(f"device: cannot read {device!r} as a torch device ({err})") from None
    try:
        tensors = load(data)  # on the CPU: the model is built there, then moved
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise ExportError(f"{path / WEIGHTS_FILE}: not a readable safetensors file ({err})") from None
    model = _build(spec, info, tensors, path)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise ExportError(f"{path / WEIGHTS_FILE}: the weights do not fit the architecture in {ARCH_FILE}: "
                          f"{detail}") from None
    try:
        return model.to(device).eval()
    except (RuntimeError, AssertionError) as err:  # torch without CUDA asserts
        raise ExportError(f"device: cannot put the model on {device} ({err})") from None


def read_checked_info(path: Path) -> tuple[dict[str, Any], bytes]:
    """`model.json` and the bytes of `arch.yaml` of the export in `path`, refused unless they match
    the SHA-256 `model.json` holds over both ('integrity')."""
    info = _read_info(path)
    arch = read_bounded(path / ARCH_FILE, MAX_TEXT_BYTES)
    if info["version"] >= 2 and info.get("integrity") != integrity(info, arch):
        raise ExportError(f"{path}: {MODEL_FILE} or {ARCH_FILE} was changed after export (the SHA-256 in "
                          f"{MODEL_FILE}, 'integrity', does not match them); export it again")
    return info, arch


def _read_info(path: Path) -> dict[str, Any]:
    file = path / MODEL_FILE
    if not file.exists():
        raise ExportError(f"{path} is not a fusion-nas export (no {MODEL_FILE})")
    try:
        info = json.loads(read_bounded(file, MAX_TEXT_BYTES).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ExportError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ExportError(f"{file}: not a fusion-nas export description (format is not {FORMAT!r})")
    if info.get("version") not in READS:
        raise ExportError(f"{file}: export format version {info.get('version')!r}; this fusion-nas reads "
                          f"{', '.join(map(str, READS))}")
    return info


def _read_spec(path: Path, info: Mapping[str, Any], text: bytes) -> ArchSpec:
    file = path / ARCH_FILE
    try:
        spec = ArchSpec.from_yaml(text.decode("utf-8"))
    except Exception as err:  # yaml errors, missing keys, wrong types: all mean a damaged file
        raise ExportError(f"{file}: not a valid architecture ({type(err).__name__}: {err})") from None
    if spec.arch_id != info.get("arch_id"):
        raise ExportError(f"{file}: architecture {spec.arch_id} is not the exported one ({info.get('arch_id')})")
    return spec


def _read_weights(path: Path, info: Mapping[str, Any]) -> bytes:
    weights = info.get("weights") or {}
    file = path / WEIGHTS_FILE
    data = read_bounded(file, MAX_WEIGHTS_BYTES)
    if len(data) != weights.get("bytes") or hashlib.sha256(data).hexdigest() != weights.get("sha256"):
        raise ExportError(f"{file}: {len(data)} bytes that do not match the SHA-256 in {MODEL_FILE}: "
                          "the file was changed or truncated after export")
    return data


def _build(spec: ArchSpec, info: Mapping[str, Any], tensors: Mapping[str, Tensor], path: Path) -> ExportedModel:
    """The exported model's modules (weights still untrained: `load_state_dict` fills them)."""
    try:
        mods = info["modalities"]
        generator = torch.Generator().manual_seed(0)  # initial values are overwritten; the caller's RNG is untouched
        backbones = {
            m: build_backbone(BackboneConfig.from_dict(d["backbone"], f"modalities.{m}.backbone"),
                              tuple(d["input_shape"]), generator)
            for m, d in mods.items()
        }
        flat = info.get("flat_taps", [])
        if not isinstance(flat, list) or not all(isinstance(t, str) for t in flat):
            raise ValueError(f"flat_taps: expected a list of tap names, got {flat!r}")
        model = build_model(spec, backbones, int(info["num_classes"]), True, generator, flat=flat)
    except (KeyError, TypeError, ValueError, OverflowError, MemoryError, RuntimeError) as err:
        # RuntimeError, MemoryError: sizes no weights file could fill (a backbone 1e12 wide)
        detail = " ".join(str(err).split())[:300]
        raise ExportError(f"{path / MODEL_FILE}: cannot build the exported model ({type(err).__name__}: {detail})") from None
    stats = {}
    for kind in ("mean", "std"):
        stats[kind] = {m: tensors.get(f"{kind}_{i}", torch.zeros(())) for i, m in enumerate(model.modalities)}
    scale = (tensors["target_mean"], tensors["target_std"]) if "target_mean" in tensors else None
    try:
        codings = {m: IdCoding.from_json(d["input"], _vocab(tensors, model.modalities.index(m), d["input"]))
                   for m, d in mods.items() if isinstance(d, Mapping) and "input" in d}
    except (KeyError, TypeError, ValueError) as err:
        raise ExportError(f"{path / MODEL_FILE}: cannot read a modality's ID coding ({err})") from None
    return ExportedModel(model, stats["mean"], stats["std"], info.get("classes") or (),
                         str(info.get("task", "classification")), scale, codings)


def _vocab(tensors: Mapping[str, Tensor], i: int, d: Any) -> list[Tensor]:
    """The vocabularies of modality `i`'s ID coding, as the weights file holds them."""
    fields = len(d.get("buckets", ())) if isinstance(d, Mapping) else 0
    return [tensors[f"ids_{i}.vocab_{f}"] for f in range(fields)]
