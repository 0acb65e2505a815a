"""`av_digits`: the built-in audio-visual digits benchmark shipped as a file.

Degraded 8x8 scikit-learn digits paired with noisy espeak-ng utterances of the same
digit as MFCC frames; made by `experiments/make_av_digits.py` (see
`experiments/data/README.md`); the file is package data, `search/datasets/data/av_digits.npz`.
The file fixes the train/val/test split, and test
images carry utterances never heard in training.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from search.datasets.common import DataError, Dataset, build_dataset, check_keys, normalize_of
from search.datasets.npz import read_npz, split_indices

# shipped inside the package (package data), so an installed wheel has it too
DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "av_digits.npz"
MODALITIES = ("audio", "image")
REQUIRED = (*MODALITIES, "y", "split")


def load_av_digits(cfg: Mapping[str, Any], base_dir: Path | None = None) -> Dataset:
    """Read `image` (N, 8, 8), `audio` (N, T, F), `y` and `split`; `data.path` overrides the file."""
    check_keys(cfg, ("path",), "av_digits")
    path = Path(cfg["path"]) if "path" in cfg else DEFAULT_PATH
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    arrays = read_npz(path)
    source = str(path)
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise DataError(f"{source}: no array {missing[0]!r}; an av_digits file holds {', '.join(REQUIRED)}")
    splits = split_indices(source, arrays["split"], len(arrays["y"]))
    xs = {m: arrays[m] for m in MODALITIES}
    return build_dataset("av_digits", source, xs, arrays["y"], splits, normalize_of(cfg))
