"""Where training runs: `train.device` (auto | cpu | cuda | cuda:N) resolved to a torch device,
and the tap-cache tensors a worker keeps on that device between candidates.

`auto` is CUDA when torch sees a CUDA device, else the CPU. CUDA asked for but absent
falls back to the CPU with one line, said once per process (not once per candidate).
Inside a Ray trial given GPUs, Ray sets `CUDA_VISIBLE_DEVICES`, so `cuda` is the GPU Ray
gave it. On the CPU nothing here changes what training computes: tensors are the tap
cache's copies, exactly as before (`TapCache.tensors`).
"""
from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fusion_ops.base import lengths_key
from spaces.yaml_errors import ConfigError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "cuda:N")  # as the config errors list them
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
_SAID: set[str] = set()  # fallback lines already said in this process


def check_device(value: Any, where: str) -> None:
    """ConfigError naming `where` unless `value` is one of `DEVICES`."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise ConfigError(f"{where}: unknown device {value!r}; known: {', '.join(DEVICES)}")


def resolve_device(name: str, say: Callable[[str], Any] | None = None, where: str = "train.device") -> torch.device:
    """The torch device `name` means on this machine (process). CUDA asked for but absent
    (or an index past the devices there are) gives the CPU (or `cuda:0`), and one line
    through `say` (else the logger's warning), once per process and name."""
    check_device(name, where)
    if name == "cpu":
        return torch.device("cpu")
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name == "auto":
        return torch.device("cuda" if have else "cpu")
    index = torch.device(name).index
    if not have:
        _say_once(f"{where}: {name} asked for, but torch sees no CUDA device here "
                  f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); training on the CPU", say)
        return torch.device("cpu")
    if index is not None and index >= have:
        _say_once(f"{where}: {name} asked for, but this process sees {have} CUDA device(s); using cuda:0", say)
        return torch.device("cuda", 0)
    return torch.device(name)


def _say_once(line: str, say: Callable[[str], Any] | None) -> None:
    if line in _SAID:
        return
    _SAID.add(line)
    if say is not None:
        say(f"warning: {line}")
    else:
        log.warning(line)


# ---------------------------------------------------------------- tap tensors kept on a device
# A worker trains candidate after candidate on the same taps: each goes to the device once. One
# entry per (what, split, tap, device), so a worker never holds two versions of a tap; it is
# reused while the array is the same one: the same file of a memory-mapped array, else the same
# address, which the entry keeps alive (it holds the array), so no other array can take it.
_ON_DEVICE: dict[tuple[Any, ...], tuple[tuple[Any, ...], np.ndarray, Tensor]] = {}


def to_device(split: tuple[dict[str, Tensor], Tensor], device: torch.device) -> tuple[dict[str, Tensor], Tensor]:
    """A split `({name: tensor}, labels)` moved to `device` (the same tensors on the CPU)."""
    xs, y = split
    return {k: v.to(device) for k, v in xs.items()}, y.to(device)


def tap_tensors(taps: Any, split: str, device: torch.device) -> tuple[dict[str, Tensor], Tensor]:
    """`taps.tensors(split)` on `device`: on the CPU `taps.rows(split)` (rows read from the cache as
    batches ask for them, as float32 copies); elsewhere each array is uploaded once per process and
    the cached device tensor reused (read it, never write it; float16 taps widened there)."""
    if device.type == "cpu":
        return taps.rows(split)
    if split not in taps.taps:
        return taps.tensors(split)  # its KeyError names the known splits
    xs = {t: _cached(("tap", split, t), a, device) for t, a in taps.taps[split].items()}
    xs.update({lengths_key(t): _cached(("lengths", split, t), n, device)
               for t, n in taps.lengths.get(split, {}).items()})
    return xs, _cached(("labels", split), taps.labels[split], device)


def _cached(name: tuple[Any, ...], a: np.ndarray, device: torch.device) -> Tensor:
    key, identity = (*name, str(device)), _identity(a)
    hit = _ON_DEVICE.get(key)
    if hit is not None and hit[0] == identity:
        return hit[2]
    _ON_DEVICE.pop(key, None)  # another version of this tap: its memory goes first
    with warnings.catch_warnings():  # the cache's arrays are read-only: the upload only reads them
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.as_tensor(np.ascontiguousarray(a)).to(device)
    if tensor.dtype == torch.float16:  # search.tap_dtype: float16 halves the upload; models read float32
        tensor = tensor.float()
    _ON_DEVICE[key] = (identity, a, tensor)
    return tensor


def _identity(a: np.ndarray) -> tuple[Any, ...]:
    """What makes `a` the same array as an earlier one: its file (a memory map, reopened by each
    trial) or its address, and its layout."""
    layout = (a.shape, a.strides, a.dtype.str)
    file = getattr(a, "filename", None)
    if not file:
        return ("memory", _address(a), *layout)
    root = a  # the whole mapping, whose start is `offset` bytes into the file
    while isinstance(root.base, np.ndarray):
        root = root.base
    where = getattr(root, "offset", 0) + _address(a) - _address(root)
    return ("file", file, os.stat(file).st_mtime_ns, where, *layout)


def _address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def clear_device_cache() -> None:
    """Drop every tensor `tap_tensors` keeps (tests; a worker moving on to other data)."""
    _ON_DEVICE.clear()
