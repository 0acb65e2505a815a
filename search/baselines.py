"""Baselines beside every front: what they are, and whether the front beats them.

A run trains a few baselines before its search (`search.training.baselines_fit`) and stores
them in `baselines.json`: a list of records with the keys in `RECORD_KEYS`. This
module is the pure part: the record's shape, the panels, and `compare`, which says
whether the front earned its cost. No torch here: `search.runstore.store` imports it to add
the comparison to `pareto.json`.

Panels (`search.baselines:`): `basic` = each modality alone (its frozen backbone and a
linear head), L2 logistic regression on the concatenated raw inputs, and a late concat
of the embeddings; `classic` adds every registered operator as its paper places it
(late fusion of the embeddings, default arguments: `classic <op>`); `none` trains nothing.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from search import objectives as _objectives
from search.objectives import finite
from spaces.spec import ArchSpec

FILE = "baselines.json"
PANELS = ("basic", "classic", "none")
KINDS = ("unimodal", "linear", "late_concat", "classic")
RECORD_KEYS = ("name", "kind", "panel", "val_accuracy", "val_std", "test_accuracy", "test_std", "n_seeds",
               "params_total", "flops_total", "spec", "seconds")




def _sign(o: _objectives.Objective) -> float:
    return 1.0 if o.mode == "max" else -1.0


def holdout_key(metric: _objectives.Objective) -> str:
    """`holdout_accuracy` for `val_accuracy`: the metric on the run's holdout (`search.holdout`)."""
    return "holdout_" + metric.key.removeprefix("val_")


RANKS = ("mean", "lcb")  # how the answer is ranked over its seeds (`search.rank`)


def ranked_value(m: Mapping[str, Any], key: str, metric: _objectives.Objective, rank: str = "mean") -> float:
    """`m[key]` (a mean over seeds) as `rank` ranks it, higher is better: the mean, or (`lcb`)
    its lower confidence bound mean - std/sqrt(k) over the k seeds (`<key>_std`, `n_seeds`;
    one seed or no std: the mean), so a candidate whose seeds spread is ranked below one as
    good on average whose seeds agree. Negated for a metric to minimise."""
    value = _sign(metric) * float(m[key])
    if rank == "lcb":
        std, k = finite(m.get(f"{key}_std")), int(m.get("n_seeds") or 1)
        value -= (std or 0.0) / math.sqrt(k)
    return value


def _choose(items: Sequence[Mapping[str, Any]], metric: _objectives.Objective,
            metrics_of: Any = lambda x: x, tie: Any = lambda m: (), rank: str = "mean") -> Mapping[str, Any] | None:
    """The item whose metrics (`metrics_of(item)`) are best on the holdout when every item has
    a holdout value, else on val (each as `rank` ranks it: `ranked_value`); then by val; then
    by `tie(metrics)`. None when `items` is empty."""
    if not items:
        return None
    held = holdout_key(metric)
    by_holdout = all(finite(metrics_of(x).get(held)) is not None for x in items)

    def order(x: Mapping[str, Any]) -> tuple[float, ...]:
        m = metrics_of(x)
        first = (ranked_value(m, held, metric, rank),) if by_holdout else ()
        return (*first, ranked_value(m, metric.key, metric, rank), *tie(m))

    return max(items, key=order)


def best_basic(baselines: Sequence[Mapping[str, Any]], metric: _objectives.Objective | None = None,
               rank: str = "mean") -> Mapping[str, Any] | None:
    """The basic-panel baseline with the best (mean) holdout metric when each has one, else val
    metric (default accuracy): chosen as the front's best point is (`best_front_point`)."""
    metric = metric or _objectives.OBJECTIVES["accuracy"]
    return _choose([b for b in baselines if b.get("panel") == "basic" and finite(b.get(metric.key)) is not None],
                   metric, rank=rank)


def best_front_point(front: Mapping[str, Any], metric: _objectives.Objective | None = None,
                     rank: str = "mean") -> Mapping[str, Any] | None:
    """The search's answer: of the front members whose seeds agree (not marked `unstable`,
    `search.runstore.store.mark_unstable`), the one with the best holdout metric when every
    member has one (`search.holdout`: val samples no training or strategy saw, so the choice
    is not the luckiest of many on the same val samples), else the best val metric, each
    ranked over its seeds as `rank` says (`search.rank`: the mean, or its lower confidence
    bound); ties: the better val metric, then the cheaper in params. None for an empty front."""
    metric = metric or _objectives.OBJECTIVES["accuracy"]
    members = [f for f in front.get("front") or () if finite((f.get("metrics") or {}).get(metric.key)) is not None
               and not (f.get("metrics") or {}).get("unstable")]  # seeds that disagree: never the answer
    return _choose(members, metric, lambda f: f["metrics"],
                   lambda m: (-(finite(m.get("params_total")) or 0.0),), rank=rank)


def dominating_member(front: Mapping[str, Any], baseline: Mapping[str, Any],
                      objs: Sequence[_objectives.Objective] | None = None) -> str | None:
    """The trial id of a front member that weakly dominates `baseline` in every objective it has
    (default: accuracy >=, params <=, FLOPs <=; equal values count), or None when none does.
    The metric is judged on the run's holdout where the baseline has a holdout value (the search
    chose its front on val, so a val lead can be the winner's curse; a member without a holdout
    value then does not count), else on val. An objective the baseline does not record
    (latency) is left out of the comparison; a member marked unstable (its seeds disagree)
    never counts."""
    objs = [o for o in (objs or _objectives.get(_objectives.CLASSIC)) if baseline.get(o.key) is not None]
    if not objs:
        return None
    held = holdout_key(objs[0])
    keys = [held if finite(baseline.get(held)) is not None else objs[0].key] + [o.key for o in objs[1:]]
    mine = [finite(baseline.get(k)) for k in keys]
    if any(v is None for v in mine):
        return None
    for f in front.get("front") or ():
        m = f.get("metrics") or {}
        if m.get("unstable"):  # a mean over seeds that disagree is no evidence
            continue
        theirs = [finite(m.get(k)) for k in keys]
        if all(t is not None and _sign(o) * t >= _sign(o) * b for o, t, b in zip(objs, theirs, mine, strict=True)):
            return str(f.get("trial_id"))
    return None


def _delta(a: Any, b: Any) -> float | None:
    a, b = finite(a), finite(b)
    return None if a is None or b is None else a - b


def compare(front: Mapping[str, Any], baselines: Sequence[Mapping[str, Any]],
            objs: Sequence[_objectives.Objective] | None = None, rank: str = "mean",
            trials: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Did the search earn its cost? `front` as `store.front_from_trials` returns it.

    `best`: the front's best point against the best basic baseline, each chosen on the
    holdout when there is one, else on val (`best_front_point`, `best_basic`): their val,
    test and holdout metrics, the differences (front minus baseline) and `beats_val` /
    `beats_test` (strictly higher). With the run's `trials`, `answer` is the run's answer
    (`answer_trial`) and `answer_is_baseline` whether it is that baseline. `classic`: for each
    classic-panel baseline, the id of a front member that weakly dominates it (`dominated_by`), or None.
    """
    objs = tuple(objs or _objectives.get(_objectives.CLASSIC))
    metric = objs[0]
    vkey, tkey = metric.key, "test_" + metric.key.removeprefix("val_")
    top, base = best_front_point(front, metric, rank), best_basic(baselines, metric, rank)
    best: dict[str, Any] | None = None
    if top is not None and base is not None:
        m = top["metrics"]
        dv, dt = _delta(m.get(vkey), base.get(vkey)), _delta(m.get(tkey), base.get(tkey))
        hkey = holdout_key(metric)
        best = {"trial_id": top.get("trial_id"), "metric": metric.name, "front_val": finite(m.get(vkey)),
                "front_test": finite(m.get(tkey)), "front_holdout": finite(m.get(hkey)),
                "baseline_holdout": finite(base.get(hkey)), "baseline": base["name"],
                "baseline_val": finite(base.get(vkey)), "baseline_test": finite(base.get(tkey)),
                "val_delta": dv, "test_delta": dt,
                "beats_val": dv is not None and _sign(metric) * dv > 0,
                "beats_test": dt is not None and _sign(metric) * dt > 0,
                **holdout_noise(m, base, metric)}
        if trials is not None:
            best["answer"] = _answer(best, top, trials)
            best["answer_is_baseline"] = best["answer"] != top.get("trial_id")
    classic = []
    for b in baselines:
        if b.get("panel") == "classic":
            by = dominating_member(front, b, objs)
            classic.append({"name": b["name"], "dominated": by is not None, "dominated_by": by})
    return {"best": best, "classic": classic, "n_baselines": len(baselines)}


def _answer(best: Mapping[str, Any], top: Mapping[str, Any], trials: Sequence[Mapping[str, Any]]) -> Any:
    """`compare`'s `best` turned into the run's answer: the best basic baseline's own trial when it
    is a candidate the run trained (`seed_trials`) and the front's best point does not beat it
    beyond the noise on the holdout while it is the cheaper, or it beats that point beyond the
    noise; else the front's best point."""
    if best.get("noise") is None:
        return top.get("trial_id")
    behind = best["beyond_noise"] and _sign(_objectives.OBJECTIVES[best["metric"]]) * best["holdout_delta"] < 0
    level = not best["beyond_noise"] and best.get("cheaper") == "baseline"
    if behind or level:
        own = [t for t in trials if t.get("baseline") == best["baseline"] and not t.get("confirm")
               and t.get("status") == "ok"]
        if own:
            return own[0].get("trial_id")
    return top.get("trial_id")


def answer_trial(front: Mapping[str, Any], baselines: Sequence[Mapping[str, Any]] | None,
                 trials: Sequence[Mapping[str, Any]], objs: Sequence[_objectives.Objective] | None = None,
                 rank: str = "mean") -> Any:
    """The trial id of the run's answer (None for an empty front): the front's best point
    (`best_front_point`), unless the best basic baseline is a candidate the run trained (the
    late concat of the embeddings, `seed_trials`) and, on the holdout, that point does not beat
    it beyond the noise while the baseline is the cheaper (the run prefers the cheaper model
    when the two cannot be told apart), or it beats that point beyond the noise."""
    objs = tuple(objs or _objectives.get(_objectives.CLASSIC))
    best = compare(front, baselines, objs, rank, trials)["best"] if baselines else None
    if best is not None:  # the front and the basic baselines both had a best point
        return best["answer"]
    top = best_front_point(front, objs[0], rank)
    return None if top is None else top.get("trial_id")


def holdout_noise(front: Mapping[str, Any], base: Mapping[str, Any], metric: _objectives.Objective) -> dict[str, Any]:
    """Is the holdout difference (front minus baseline) larger than its noise? `noise` is 2
    standard errors of the difference: each side's seed spread (std / sqrt(seeds)) and, for
    accuracy, the sampling error of a proportion on the `holdout_n` samples, sqrt(p (1 - p) / n),
    counted as independent (so the bound is conservative: the two models err on many of the
    same samples). `cheaper`: the side with fewer parameters, the one to prefer within the noise.
    Empty when a side has no holdout value, or nothing to measure the noise by (accuracy without
    `holdout_n`; another metric without 2+ seeds on each side)."""
    key = holdout_key(metric)
    a, b = finite(front.get(key)), finite(base.get(key))
    if a is None or b is None:
        return {}
    var = 0.0
    for side, value in ((front, a), (base, b)):
        std, k = finite(side.get(key + "_std")), int(side.get("n_seeds") or 1)
        n = finite(side.get("holdout_n"))  # a mean over seeds, like every other number here
        if metric.name == "accuracy" and n is not None and n > 0:
            var += value * (1 - value) / n
        elif metric.name == "accuracy" or std is None or k < 2:
            return {}
        var += (std or 0.0) ** 2 / max(k, 1)
    noise = 2 * math.sqrt(var)
    pf, pb = finite(front.get("params_total")), finite(base.get("params_total"))
    cheaper = None if pf is None or pb is None or pf == pb else ("front" if pf < pb else "baseline")
    return {"holdout_delta": a - b, "noise": noise, "beyond_noise": abs(a - b) > noise, "cheaper": cheaper}


def summary_line(cmp: Mapping[str, Any]) -> str:
    """`front best 0.912 val / 0.897 test vs best baseline (logreg) 0.881 / 0.870: +3.1 / +2.7 points
    (above on val and test)`: the front's best point against the best basic baseline."""
    b = cmp.get("best")
    if not b:
        return "no comparison with the baselines: the front or the basic baselines are empty"

    def acc(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    def pts(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:+.1f}"

    metric = b.get("metric", "accuracy")

    def word(delta: float | None, beats: bool) -> str:
        if delta is None or delta == 0:
            return "-" if delta is None else "level"
        if metric == "accuracy":
            return "above" if delta > 0 else "below"
        return "better" if beats else "worse"  # a lower MAE or log loss is the better one

    v, t = word(b["val_delta"], b.get("beats_val", False)), word(b["test_delta"], b.get("beats_test", False))
    verdict = f"{v} on val and test" if v == t else f"{v} on val, {t} on test"
    held = ""  # both chosen on the holdout: say on what
    if b.get("front_holdout") is not None and b.get("baseline_holdout") is not None:
        held = f"; chosen on the holdout: {acc(b['front_holdout'])} vs {acc(b['baseline_holdout'])}"
        if b.get("noise") is not None:
            scale, digits, unit = (100, 1, " points") if metric == "accuracy" else (1, 3, "")
            size, noise = f"{scale * b['holdout_delta']:+.{digits}f}{unit}", f"±{scale * b['noise']:.{digits}f}"
            if b["beyond_noise"]:
                held += f", {size}, beyond the noise ({noise})"
            else:
                which = {"front": "the front's point", "baseline": b["baseline"]}.get(b.get("cheaper"))
                held += (f", {size}, within the noise ({noise}): no better "
                         f"than {b['baseline']}{f'; prefer the cheaper ({which})' if which else ''}")
            if b.get("answer_is_baseline"):
                held += f"; the run's answer is {b['baseline']} (trial {b['answer']})"
    if metric != "accuracy":  # deltas of other metrics are not accuracy points
        return (f"front best {metric} {acc(b['front_val'])} val / {acc(b['front_test'])} test vs best baseline "
                f"({b['baseline']}) {acc(b['baseline_val'])} / {acc(b['baseline_test'])} ({verdict}{held})")
    return (f"front best {acc(b['front_val'])} val / {acc(b['front_test'])} test vs best baseline "
            f"({b['baseline']}) {acc(b['baseline_val'])} / {acc(b['baseline_test'])}: "
            f"{pts(b['val_delta'])} / {pts(b['test_delta'])} points ({verdict}{held})")


# ------------------------------------------------------------------ baselines that lie in the space
def seed_trials(baselines: Sequence[Mapping[str, Any]] | None, space: Any) -> list[dict[str, Any]]:
    """The baselines that are candidates of `space` (an ArchSpec it contains, e.g. the late
    concat of the embeddings), every seed ok, as `trials.jsonl` records: the first seed as a
    strategy trial, the others as its confirmation seeds (`confirm: true`), each tagged
    `baseline: <name>`. A run writes them before its search, so its front (and its answer)
    holds what a user would have built by hand, the strategy is told them (a resume replays
    them) and never trains them again; they do not count towards `search.num_samples`.
    Trial ids: `b<k>s<seed>`."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for b in baselines or ():
        runs = b.get("seed_runs") or []
        if not b.get("spec") or not runs or any(r.get("status") != "ok" for r in runs):
            continue
        spec = ArchSpec.from_dict(b["spec"])
        if spec.candidate_id in seen or not space.contains(spec):
            continue
        seen.add(spec.candidate_id)
        k = len(seen) - 1
        for i, run in enumerate(runs):
            seed = run.get("seed")
            record = {"trial_id": f"b{k}s{seed}", "spec": spec.to_dict(), "arch_id": spec.arch_id,
                      "candidate_id": spec.candidate_id, "seed": seed, "metrics": dict(run), "status": "ok",
                      "reason": None, "seconds": run.get("seconds"), "finished_at": None, "baseline": b["name"]}
            out.append({**record, "confirm": True} if i else record)
    return out


def counts_to_budget(record: Mapping[str, Any]) -> bool:
    """Whether a trial record is one of the strategy's `search.num_samples` (not a confirmation
    seed, not a baseline seeded into the run, not a trial lost with its Ray node: a resume
    runs that one again)."""
    return not record.get("confirm") and not record.get("baseline") and not record.get("lost_node")
