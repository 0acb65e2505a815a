"""Packs: how many candidates one Ray Tune trial trains, one after another (`search.pack`).

Candidates on the tap cache take 0.1-1 s, while Tune costs about a CPU-slot second a trial
(experiments/RESULTS.md, "Ray overhead"): a trial that trains a pack of candidates pays that
once. `auto` sizes each pack from the measured seconds per candidate so that a trial lasts
`TARGET_S`, and never hands one worker more than half its fair share of what is left (the
budget still to hand out over twice the concurrent slots: "factoring", which balances candidates
of unequal length better than whole shares do), so that no worker idles at the end of the budget.
Long candidates get packs of 1. No Ray: the searcher and the tests use it alike.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from search.config import AUTO, Pack  # the setting, checked where the config is read

TARGET_S = 15.0  # what an auto pack should take: Tune's ~1 s per trial stays under ~7 %
FIRST = 4  # an auto pack before any candidate's seconds are known
CAP = 64  # an auto pack at most, however short its candidates
WINDOW = 16  # the finished candidates the rolling mean of seconds looks at


def pack_size(pack: Pack, remaining: int, slots: int, mean_s: float | None) -> int:
    """How many candidates the next trial gets, out of `remaining` still to hand out.

    `pack` N: N (at most `remaining`). `auto`: enough for `TARGET_S` at `mean_s` seconds a
    candidate (`FIRST` while unknown), at most `CAP` and, with several slots, at most half
    the fair share, `ceil(remaining / (2 * slots))`; always at least 1 (0 only when nothing remains).
    (Whole shares left one slot idle for 21 slot-seconds of a 109 s search on av_digits, whose
    candidates take 0.2-24 s: a share sized by count can hold the longest candidates.)
    """
    if remaining <= 0:
        return 0
    if pack != AUTO:
        return max(1, min(int(pack), remaining))
    if mean_s is None or not math.isfinite(mean_s):
        want = FIRST
    else:
        want = math.ceil(TARGET_S / max(mean_s, 1e-3))
    share = remaining if slots <= 1 else math.ceil(remaining / (2 * slots))  # one slot: nobody to wait for
    return max(1, min(want, CAP, share, remaining))


class RollingSeconds:
    """The mean of the last `WINDOW` finished candidates' `seconds` (None before any)."""

    def __init__(self, window: int = WINDOW) -> None:
        self._last: deque[float] = deque(maxlen=window)

    def add(self, seconds: Any) -> None:
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and math.isfinite(seconds) \
                and seconds >= 0:
            self._last.append(float(seconds))

    @property
    def mean(self) -> float | None:
        return sum(self._last) / len(self._last) if self._last else None


def replay_lookahead(records: Iterable[Mapping[str, Any]], slots: int, pack: Pack) -> int:
    """How far ahead a resume's replay may ask (`search.runstore.replay`): the candidates that
    can be in flight at once, i.e. `slots` packs of the largest size the run used (a record of
    a packed candidate holds its pack's size under `pack`), or of `pack` N."""
    sizes = [int(r["pack"]) for r in records if isinstance(r.get("pack"), int) and not isinstance(r["pack"], bool)]
    biggest = max([FIRST if pack == AUTO else int(pack), *sizes])
    return max(1, slots) * biggest

