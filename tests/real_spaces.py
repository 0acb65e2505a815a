"""The spaces of shipped configs on their real data and backbone shapes, for costing and twin tests.

Backbones are built, not pretrained: shapes, parameters and FLOPs do not depend on the
weights, and a test need not wait for pretraining or touch the disk cache.
"""
from __future__ import annotations

import functools
import itertools
from pathlib import Path

import torch

from fusion_ops import build_backbone
from search.config import load_config
from search.datasets import load_dataset
from search.engine.run import Prepared
from search.training.taps import TapCache
from spaces.space import SearchSpace
from spaces.spec import ArchSpec, CellSpec, make_tap

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
ENUMERABLE = ("bench_xor.yaml", "bench_av_digits.yaml")  # the spaces experiments/bench_search.py trains whole


@functools.cache
def prepared(config_file: str) -> Prepared:
    """What `search.engine.run.prepare` gives for a shipped config, with untrained backbones."""
    config = load_config(CONFIGS / config_file)
    dataset = load_dataset(config.data, config.path.parent)
    g = torch.Generator().manual_seed(0)
    backbones = {m: build_backbone(c, dataset.shapes[m], g) for m, c in config.backbones.modalities.items()}
    offered = [make_tap(m, d) for m, ds in config.space.depth_map.items() for d in ds]
    taps = TapCache.from_backbones(dataset, backbones, only=offered)
    return Prepared(config, dataset, backbones, {}, taps)


def every_form(space: SearchSpace) -> list[ArchSpec]:
    """Every spec the space held before twins were folded: each one-cell hybrid on any taps,
    early with every trunk, late, and the longer chains (by brute force, not by `enumerate`)."""
    combos = itertools.product(*(ds for _, ds in space.depths))
    taps = [tuple(make_tap(m, d) for m, d in zip(space.modalities, c, strict=True)) for c in combos]
    cells = [c for t in taps for c in _cells(space, t)]
    out: list[ArchSpec] = []
    for stage in space.stages:
        if stage == "hybrid":
            for n in range(1, space.max_cells + 1):
                out += [ArchSpec("hybrid", chain) for chain in itertools.product(cells, repeat=n)]
            continue
        fixed = space.stage_depths(stage)
        assert fixed is not None
        heads = space.trunks if stage == "early" else ((),)
        out += [ArchSpec(stage, (c,), h) for c in _cells(space, tuple(make_tap(m, d) for m, d in fixed.items()))
                for h in heads]
    return out


def _cells(space: SearchSpace, taps: tuple[str, ...]) -> list[CellSpec]:
    return [CellSpec(taps, o.name, w, a, args) for o in space.ops for args in o.settings()
            for w in space.widths for a in space.activations]
