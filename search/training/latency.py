"""Measured latency of a candidate: the `latency` objective's measuring code.

Latency is measured, not counted: per candidate, on the trial's device and with the
trial's thread count, the median wall time of repeated forward passes of the model as
it would be deployed (the backbone blocks it runs, then cells and head; `FusionModel` on
raw inputs), after warm-up, at batch 1 and at the training batch size. Only a run whose
objectives hold `latency` measures it (`search.objectives.measures_latency`). Weights do not
change the time, so an untrained copy is timed. It is known only after a trial ran, so
strategies treat it as unknown before training (`search.objectives`: `known_before`).
"""
from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from fusion_ops import Backbone, FusionModel
from fusion_ops.backbones import seeded_init

WARMUP = 3
REPEATS = 15  # at batch 1; a third of that (at least 3) at the training batch size


def median_ms(run: Callable[[], Any], repeats: int, warmup: int = WARMUP) -> float:
    """Median wall time of `run()` in milliseconds over `repeats` calls, after `warmup` calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def model_latency(model: nn.Module, example: Callable[[int], Mapping[str, torch.Tensor]], batch: int,
                  threads: int, repeats: int = REPEATS) -> dict[str, Any]:
    """`latency_ms` (batch 1), `latency_batch_ms` (one batch of `batch`), `latency_batch`, `latency_threads`
    of `model(example(b))` in eval mode under `inference_mode`, with `threads` torch threads."""
    was_training, before = model.training, torch.get_num_threads()
    model.eval()
    torch.set_num_threads(threads)
    where = next(iter(model.parameters()), torch.zeros(())).device
    # CUDA runs asynchronously: wait for the kernels, or the time is only that of launching them
    sync = torch.cuda.synchronize if where.type == "cuda" else (lambda: None)
    try:
        with torch.inference_mode():
            one, many = example(1), example(batch)
            ms1 = median_ms(lambda: (model(one), sync()), repeats)
            msb = median_ms(lambda: (model(many), sync()), max(3, repeats // 3))
    finally:
        torch.set_num_threads(before)
        model.train(was_training)
    return {"latency_ms": ms1, "latency_batch_ms": msb, "latency_batch": batch, "latency_threads": threads}


def candidate_latency(spec: Any, head: nn.Module, backbones: Mapping[str, Backbone] | None, num_classes: int,
                      batch: int, threads: int) -> dict[str, Any]:
    """Latency of candidate `spec` on raw inputs (lean backbones + a head shaped like `head`);
    without `backbones`, of `head` on its taps (all a candidate runs when there are none)."""
    device = next(head.parameters(), torch.zeros(())).device
    if backbones is None:
        return model_latency(head, lambda b: {t: v.to(device) for t, v in head.example_taps(b).items()}, batch,
                             threads)
    with torch.random.fork_rng(devices=[]), seeded_init(torch.Generator().manual_seed(0)):
        model = FusionModel(spec, backbones, num_classes, frozen=True)
    if device.type != "cpu":  # its lean backbones share the caller's blocks: move a copy
        model = copy.deepcopy(model).to(device)
    shapes = {m: b.input_shape for m, b in zip(model.modalities, model.backbones, strict=True)}
    return model_latency(model, lambda b: {m: torch.zeros(b, *s, device=device) for m, s in shapes.items()}, batch,
                         threads)
