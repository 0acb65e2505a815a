"""The tap cache on disk: one `.npy` file per split x tap (plus labels and lengths) and a
small JSON manifest, in a folder named by a key that hashes everything deciding its contents.

Files are read memory-mapped (`mmap_mode="r"`): every process of a node that opens them
shares the same page-cache pages, and a process touches only the taps it reads. A folder is
built under a temporary name beside its final one and renamed into place when complete, so
a build killed half way never leaves a folder that is later read. Knows nothing of
`TapCache` (`search.training.taps` builds and opens caches through these helpers).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = 1  # bump when what a cache folder holds changes
MANIFEST = "manifest.json"
DTYPES = ("float32", "float16")
MODES = ("auto", "disk", "memory")
_BUILDING, _TRASH = ".building-", ".trash-"


class TapCacheMissing(FileNotFoundError):
    """A disk tap cache a process was told to open is not there (another node, no shared filesystem)."""


def tap_file(part: str, index: int) -> str:
    """The file of tap number `index` (in the manifest's `taps` order) of split `part`."""
    return f"{part}/tap{index}.npy"


def lengths_file(part: str, index: int) -> str:
    return f"{part}/tap{index}.lengths.npy"


def labels_file(part: str) -> str:
    return f"{part}/labels.npy"


def cache_key(backbone_keys: Mapping[str, str], backbones: Mapping[str, torch.nn.Module], taps: Sequence[str],
              holdout_rows: np.ndarray | None, dtype: str, lengths: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """16 hex digits naming one tap cache: the backbones' pretraining keys (which hash the data
    and the backbone and pretraining configs, `search.training.pretrain.cache_key`), a digest of
    their weights as they are (a backbone cache turned off still trains them anew), the taps
    kept, the holdout rows, the stored dtype and the data's sequence lengths."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(backbones):
        for k, t in sorted(backbones[name].state_dict().items()):
            h.update(f"{name}.{k}{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    rows = np.zeros(0, np.int64) if holdout_rows is None else np.asarray(holdout_rows, np.int64)
    h.update(rows.tobytes())
    for split in sorted(lengths):
        for m, n in sorted(lengths[split].items()):
            h.update(f"{split}.{m}".encode())
            h.update(np.ascontiguousarray(n, dtype=np.int64).tobytes())
    payload = {"format": FORMAT, "backbones": dict(sorted(backbone_keys.items())), "digest": h.hexdigest(),
               "taps": sorted(taps), "dtype": dtype}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def read_manifest(directory: Path, key: str | None = None) -> dict[str, Any] | None:
    """The manifest of a complete cache folder (of `key`, when given); None when the folder, its
    manifest or a file it names is missing, or it is of another format or key."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or (key and manifest.get("key") != key):
        return None
    files = [labels_file(p) for p in manifest.get("sizes", {})]
    files += [tap_file(p, i) for p in manifest.get("sizes", {}) for i in range(len(manifest.get("taps", [])))]
    return manifest if all((directory / f).is_file() for f in files) else None


def open_array(directory: Path, name: str) -> np.ndarray:
    """A read-only memory map of `directory/name` (no page is read until it is used)."""
    return np.load(directory / name, mmap_mode="r", allow_pickle=False)


def new_array(directory: Path, name: str, shape: tuple[int, ...], dtype: str) -> np.memmap:
    """A writable `.npy` file of `shape`, memory-mapped: batches are written straight into it."""
    (directory / name).parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(directory / name, mode="w+", dtype=np.dtype(dtype), shape=shape)


def save_array(directory: Path, name: str, a: np.ndarray) -> None:
    (directory / name).parent.mkdir(parents=True, exist_ok=True)
    np.save(directory / name, np.ascontiguousarray(a), allow_pickle=False)


def release(arrays: Sequence[np.ndarray]) -> None:
    """Write memory-mapped arrays' dirty pages to their files and drop the pages from this
    process (the page cache keeps them): a build's resident memory stays a few batches, not a split."""
    for a in arrays:
        raw = getattr(a, "_mmap", None)
        if isinstance(a, np.memmap) and raw is not None:
            a.flush()
            with contextlib.suppress(OSError, ValueError, AttributeError):
                raw.madvise(mmap.MADV_DONTNEED)


@contextlib.contextmanager
def building(root: Path, key: str) -> Iterator[Path]:
    """A fresh temporary folder beside `root/key` to build into; on a clean exit it becomes
    `root/key` (one rename), on an error it is removed. A folder some other process completed
    meanwhile wins; a damaged one is replaced."""
    root.mkdir(parents=True, exist_ok=True)
    clean_stale(root)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f"{_BUILDING}{key}-{_host()}-{os.getpid()}-"))
    try:
        yield tmp
        _publish(tmp, root / key, key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, final: Path, key: str) -> None:
    try:
        os.rename(tmp, final)
        return
    except OSError:
        if read_manifest(final, key) is not None:  # another process finished the same cache first
            shutil.rmtree(tmp, ignore_errors=True)
            return
    trash = final.with_name(f"{_TRASH}{final.name}-{os.getpid()}-{time.time_ns()}")
    os.rename(final, trash)  # a damaged folder: out of the way first, then ours in its place
    os.rename(tmp, final)
    shutil.rmtree(trash, ignore_errors=True)


def clean_stale(root: Path) -> None:
    """Remove what killed builds left in `root`: temporary folders of this host whose process is gone."""
    for p in root.glob(f"{_BUILDING}*"):
        parts = p.name[len(_BUILDING):].split("-")
        if len(parts) >= 4 and parts[1] == _host() and parts[2].isdigit() and not _alive(int(parts[2])):
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(f"{_TRASH}*"):
        shutil.rmtree(p, ignore_errors=True)


def _host() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    """The manifest goes last: with the folder's rename, its presence says the files are complete.
    It lists every other file with its size and content digest (`file_digests`), which a run
    reusing the folder checks (`verify`)."""
    body = {"format": FORMAT, **manifest, "files": file_digests(directory)}
    (directory / MANIFEST).write_text(json.dumps(body, indent=1))


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def file_digests(directory: Path) -> dict[str, dict[str, Any]]:
    """`{path in the folder: {"bytes": size, "blake2b": 128-bit digest of the content}}` of every
    file of a cache folder but its manifest."""
    return {str(f.relative_to(directory)): {"bytes": f.stat().st_size, "blake2b": _digest(f)}
            for f in sorted(directory.rglob("*")) if f.is_file() and f.name != MANIFEST}


def verify(directory: Path, manifest: Mapping[str, Any], expect: Mapping[str, Any]) -> str:
    """"" when the cache folder holds what its manifest says and the manifest says what `expect`
    (the run's data and taps: `num_classes`, `task`, `dtype`, `sizes`, `taps`, `tap_shapes`)
    says it must; else the first problem found, in a few words. Reads every file once: the
    content digests catch zeroed, randomised, reordered, cut or rewritten data; the `.npy`
    headers are checked against the manifest's row counts, shapes and dtype."""
    for key, want in expect.items():
        if manifest.get(key) != want:
            return f"its manifest says {key} {manifest.get(key)!r}, the data {want!r}"
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        return "its manifest lists no content digests (a cache from before they were written)"
    needed = [labels_file(p) for p in manifest["sizes"]]
    needed += [tap_file(p, i) for p in manifest["sizes"] for i in range(len(manifest["taps"]))]
    for name in needed:
        if name not in listed:
            return f"{name} is not in its manifest"
    for name, rec in listed.items():
        path = directory / name
        try:
            size = path.stat().st_size
            if not isinstance(rec, dict) or size != rec.get("bytes"):
                return f"{name} has {size:,} bytes, the manifest says {rec.get('bytes') if isinstance(rec, dict) else rec!r}"
            if _digest(path) != rec.get("blake2b"):
                return f"the content of {name} changed since it was written"
        except OSError as err:
            return f"cannot read {name} ({err.strerror or err})"
    for p, rows in manifest["sizes"].items():
        arrays = [(labels_file(p), (rows,), None)]
        arrays += [(tap_file(p, i), (rows, *manifest["tap_shapes"][t]), manifest["dtype"])
                   for i, t in enumerate(manifest["taps"])]
        for name, shape, dtype in arrays:
            try:
                a = open_array(directory, name)
            except (OSError, ValueError) as err:
                return f"{name} is not a readable .npy file ({err})"
            if a.shape[: len(shape)] != shape or (dtype is not None and a.dtype != np.dtype(dtype)):
                return f"{name} holds {a.dtype} {a.shape}, the manifest says {dtype or a.dtype} {shape}"
    return ""


def discard(directory: Path) -> None:
    """Move a damaged cache folder out of the way (renamed, then removed)."""
    trash = directory.with_name(f"{_TRASH}{directory.name}-{os.getpid()}-{time.time_ns()}")
    os.rename(directory, trash)
    shutil.rmtree(trash, ignore_errors=True)


def missing_line(directory: Path | str) -> str:
    return (f"tap cache {directory} is not on this node ({socket.gethostname()}): point search.tap_dir at a "
            "folder every node mounts (a shared filesystem), or set search.tap_cache: memory")


class Progress:
    """`tap cache: 120000/400000 samples` through `say`, at each further 10 % or every `every` seconds."""

    def __init__(self, say: Callable[[str], Any] | None, total: int, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.say, self.total, self.every, self.clock = say, max(total, 1), every, clock
        self.done, self.shown, self.last = 0, 0, clock()

    def advance(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if self.say is None or self.done >= self.total:
            return
        if self.done - self.shown >= self.total / 10 or now - self.last >= self.every:
            self.say(f"tap cache: {self.done}/{self.total} samples")
            self.shown, self.last = self.done, now
