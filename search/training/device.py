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
import re
import warnings
from collections import OrderedDict
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
# A worker trains candidate after candidate on the same taps: each tap goes to the device once.
# Key: the split, the tap, the device and the array's identity (address, shape, dtype); a few
# sampled values guard against another array at a freed address. Least recently used go first
# once the entries pass DEVICE_CACHE_FRACTION of the device's memory.
_ON_DEVICE: OrderedDict[tuple[Any, ...], tuple[np.ndarray, Tensor]] = OrderedDict()
DEVICE_CACHE_FRACTION = 0.5


def to_device(split: tuple[dict[str, Tensor], Tensor], device: torch.device) -> tuple[dict[str, Tensor], Tensor]:
    """A split `({name: tensor}, labels)` moved to `device` (the same tensors on the CPU)."""
    xs, y = split
    return {k: v.to(device) for k, v in xs.items()}, y.to(device)


def tap_tensors(taps: Any, split: str, device: torch.device) -> tuple[dict[str, Tensor], Tensor]:
    """`taps.tensors(split)` on `device`: on the CPU exactly that (fresh copies); elsewhere each
    array is uploaded once per process and the cached device tensor reused (read it, never write it)."""
    if device.type == "cpu":
        return taps.tensors(split)
    if split not in taps.taps:
        return taps.tensors(split)  # its KeyError names the known splits
    xs = {t: _cached(("tap", split, t), a, device) for t, a in taps.taps[split].items()}
    xs.update({lengths_key(t): _cached(("lengths", split, t), n, device)
               for t, n in taps.lengths.get(split, {}).items()})
    return xs, _cached(("labels", split), taps.labels[split], device)


def _cached(name: tuple[Any, ...], a: np.ndarray, device: torch.device) -> Tensor:
    key = (*name, str(device), a.__array_interface__["data"][0], a.shape, a.dtype.str)
    probe = _probe(a)
    hit = _ON_DEVICE.get(key)
    if hit is not None and np.array_equal(hit[0], probe, equal_nan=True):
        _ON_DEVICE.move_to_end(key)
        return hit[1]
    with warnings.catch_warnings():  # the cache's arrays are read-only: the upload only reads them
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.as_tensor(np.ascontiguousarray(a)).to(device)
    _ON_DEVICE[key] = (probe, tensor)
    _trim(device)
    return tensor


def _probe(a: np.ndarray) -> np.ndarray:
    """Up to 64 values spread over `a` (a copy)."""
    flat = a.reshape(-1)
    return np.array(flat[:: max(1, flat.size // 64)])


def _trim(device: torch.device) -> None:
    if device.type != "cuda":
        return
    budget = DEVICE_CACHE_FRACTION * torch.cuda.get_device_properties(device).total_memory
    while len(_ON_DEVICE) > 1 and sum(t.nbytes for _, t in _ON_DEVICE.values()) > budget:
        _ON_DEVICE.popitem(last=False)


def clear_device_cache() -> None:
    """Drop every tensor `tap_tensors` keeps (tests; a worker moving on to other data)."""
    _ON_DEVICE.clear()
