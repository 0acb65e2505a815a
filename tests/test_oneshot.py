"""The one-shot strategy: its supernet's sharing, fair path sampling, the strategy's contract, resume."""
from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fusion_ops.backbones import seeded_init
from fusion_ops.model import FusionHead
from fusion_ops.supernet import cell_key
from search.runstore.replay import replay
from search.strategies import StrategyContext, make_strategy
from search.strategies.supernet.paths import fair_paths, first_cells, later_cells, prefix_specs
from search.strategies.supernet.train import Scorer, build_supernet, train_supernet
from search.training.taps import TapCache
from search.training.train import TrainConfig, accuracy
from spaces.args import Arg
from spaces.space import SearchSpace
from spaces.spec import ArchSpec, CellSpec

CATALOGUE = {
    "attention": (Arg("dim", "int", 64, low=1, high=512),),
    "concat": (),
    "low_rank": (Arg("rank", "int", 4, low=1, high=64),),
    "tensor": (Arg("proj_dim", "int", 8, low=1, high=64),),
}
DEPTHS = {"image": [0, 1, 2, 3], "audio": [0, 1, 2]}
# image@0 is a small token tap (4 tokens of 3): vector ops read it flattened, attention as tokens
SHAPES = {"image@0": (4, 3), "image@1": (6,), "image@2": (5,), "image@3": (4,),
          "audio@0": (7,), "audio@1": (5,), "audio@2": (3,)}
SPACE = SearchSpace.from_dict(
    {"ops": {"attention": {"dim": [4]}, "concat": {}, "low_rank": {"rank": [2]}, "tensor": {"proj_dim": [3]}},
     "widths": [4, 8], "activations": ["relu"], "max_cells": 2, "trunks": [[], [6]],
     "depths": {"image": [0, 3], "audio": [0, 2]}},
    catalogue=CATALOGUE, depths=DEPTHS,
)
FAST_TRAIN = TrainConfig(lr=1e-2, batch_size=32, full_batch=0, threads=1)


def fake_taps(n: dict[str, int] | None = None, seed: int = 0) -> TapCache:
    """Random taps of `SHAPES` whose label is the sign of a product of two inputs (learnable, not trivial)."""
    rng = np.random.default_rng(seed)
    n = n or {"train": 96, "val": 48, "test": 32}
    taps, labels = {}, {}
    for split, k in n.items():
        taps[split] = {t: rng.normal(size=(k, *s)).astype(np.float32) for t, s in SHAPES.items()}
        labels[split] = (taps[split]["image@1"][:, 0] * taps[split]["audio@0"][:, 0] > 0).astype(np.int64)
    return TapCache(taps, labels, dict(SHAPES), 2)


TAPS = fake_taps()


def context(run_dir: Path | None = None, **kw) -> StrategyContext:
    return StrategyContext(TAPS, FAST_TRAIN, run_dir, **kw)


# ---- the supernet ------------------------------------------------------------------------------------
def cell(taps: tuple[str, ...], op: str, width: int, **args) -> CellSpec:
    return CellSpec(taps=taps, op=op, width=width, activation="relu", args=tuple(args.items()))


SPECS = [
    ArchSpec("early", (cell(("audio@0", "image@0"), "tensor", 8, proj_dim=3),), (6,)),
    ArchSpec("early", (cell(("audio@0", "image@0"), "concat", 4),), ()),
    ArchSpec("late", (cell(("audio@2", "image@3"), "low_rank", 4, rank=2),)),
    ArchSpec("hybrid", (cell(("audio@0", "image@0"), "attention", 8, dim=4),)),
    ArchSpec("hybrid", (cell(("audio@2", "image@0"), "concat", 8), cell(("audio@0", "image@3"), "tensor", 4, proj_dim=3))),
    ArchSpec("hybrid", (cell(("audio@0", "image@3"), "low_rank", 4, rank=2), cell(("audio@2", "image@0"), "attention", 8, dim=4))),
]


@pytest.fixture(scope="module")
def trained_net():
    net = build_supernet(SPACE, TAPS, seed=0)
    stats = train_supernet(net, SPACE, TAPS, FAST_TRAIN, seed=0, steps_per_choice=4)
    return net, stats


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe())
def test_a_sub_network_with_inherited_weights_equals_the_stand_alone_spec_with_them_copied(spec, trained_net):
    net, _ = trained_net
    SPACE.validate(spec)
    with seeded_init(torch.Generator().manual_seed(123)):  # other weights than the supernet's
        alone = FusionHead(spec, TAPS.tap_shapes, TAPS.num_classes, flat=TAPS.flat_taps())
    xs, y = TAPS.tensors("val")
    before = alone(xs)
    path = net.path_head(spec)
    assert not torch.equal(before, path(xs))
    missing = alone.load_state_dict(path.state_dict())  # strict: the same modules, names and shapes
    assert not missing.missing_keys and not missing.unexpected_keys
    net.eval()
    alone.eval()
    with torch.no_grad():
        assert torch.equal(alone(xs), path(xs))
        assert torch.equal(alone(xs), net(spec, xs))
    assert Scorer(net, TAPS)(spec) == accuracy(alone, (xs, y))
    assert all(p.data_ptr() in {q.data_ptr() for q in net.parameters()} for p in path.parameters())  # shared


def test_specs_that_are_the_same_network_share_every_weight():
    early, hybrid = ArchSpec("early", SPECS[1].cells, ()), ArchSpec("hybrid", SPECS[1].cells)
    net = build_supernet(SPACE, TAPS, seed=0)
    a, b = net.path_modules(early), net.path_modules(hybrid)
    assert a[0][0] is b[0][0] and a[1] is b[1]
    with_trunk = net.path_modules(ArchSpec("early", SPECS[1].cells, (6,)))
    assert with_trunk[0][0] is a[0][0] and with_trunk[1] is not a[1]
    two = SPECS[4]  # the second cell's weights depend on its position and the first cell's width
    assert cell_key(two, 1)[0] == 1 and cell_key(two, 1)[-1] == 8
    assert all(net.has(s) for s in SPACE.enumerate())


def test_path_sampling_covers_every_choice_and_each_round_is_fair():
    first, later = first_cells(SPACE), later_cells(SPACE)
    assert len(first) == 4 * 4 * 2 and set(later) == set(first)  # 4 tap pairs x 4 ops x 2 widths
    paths = fair_paths(SPACE, random.Random(3))
    rounds = [[next(paths) for _ in range(len(first))] for _ in range(4)]
    for r in rounds:  # every position-0 cell exactly once per round
        assert Counter(p.chain.cells[0] for p in r) == Counter(first)
    seconds = Counter((p.chain.cells[0].width, p.chain.cells[1]) for r in rounds for p in r)
    # position 1: every cell after a cell of each width, equally often (two rounds close a width's cycle)
    assert seconds == Counter({(w, c): 2 for w in SPACE.widths for c in later})
    p = rounds[0][0]
    legal = {path_spec.arch_id for path_spec in prefix_specs(SPACE, p.chain.cells[:1])}
    assert legal and len(p.heads[0]) >= 1 and len(p.heads[1]) == 1


def test_training_steps_every_module_equally_and_lowers_the_loss(trained_net):
    net, stats = trained_net
    n0 = len(first_cells(SPACE))
    assert stats.steps == 4 * n0
    by_position = {0: set(), 1: set()}
    for key, count in stats.counts.items():
        by_position[key[0]].add(count)
    assert by_position == {0: {4}, 1: {2}}  # 4 rounds; each width group gets half of position 1's steps
    assert min(stats.head_counts.values()) > 0
    assert stats.last_loss < stats.first_loss


def test_training_is_deterministic_for_a_seed():
    nets = []
    for seed in (5, 5, 6):
        net = build_supernet(SPACE, TAPS, seed=seed)
        train_supernet(net, SPACE, TAPS, FAST_TRAIN, seed=seed, steps_per_choice=1)
        nets.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert torch.equal(nets[0], nets[1]) and not torch.equal(nets[0], nets[2])


def test_a_long_supernet_training_says_how_far_it_is_at_least_every_progress_s(monkeypatch):
    """Not only at each quarter of the budget: a supernet of thousands of cells once trained
    12 minutes without a line."""
    from search.strategies.supernet import train as supernet_train

    lines: list[str] = []
    monkeypatch.setattr(supernet_train, "PROGRESS_S", 0.0)  # every step is "long enough"
    net = build_supernet(SPACE, TAPS, seed=0)
    stats = train_supernet(net, SPACE, TAPS, FAST_TRAIN, seed=0, steps_per_choice=1, say=lines.append)
    assert len(lines) == stats.steps - 1, lines[:3]  # a line at every step but the last
    assert all(re.fullmatch(r"oneshot: supernet step [\d,]+/[\d,]+ \(\d+%\), loss \d+\.\d{3}, about \d+ (s|min) "
                            r"left", line) for line in lines), lines[:3]


# ---- the strategy ----------------------------------------------------------------------------------
def cost(spec: ArchSpec) -> tuple[int, int]:
    params = sum(c.width * (3 if c.op in ("tensor", "low_rank") else 1) * 10 for c in spec.cells) + 50 * sum(spec.head)
    return params, 4 * params


def strategy(seed: int = 0, run_dir: Path | None = None, **kw):
    return make_strategy("oneshot", SPACE, seed=seed, budget=12, cost_fn=cost, context=context(run_dir),
                         **{"steps_per_choice": 2, **kw})


def test_the_supernet_trains_no_longer_than_the_runs_budget_of_candidates():
    """Default steps per choice: 3/4 of a candidate's steps, cut to budget x candidate steps / choices."""
    from search.strategies.supernet.paths import n_choices
    from search.training.train import step_budget

    per_candidate = step_budget(len(TAPS.labels["train"]), FAST_TRAIN)
    choices = n_choices(SPACE)
    unbounded = make_strategy("oneshot", SPACE, seed=0, budget=None, cost_fn=cost, context=context())
    assert unbounded.steps_per_choice() == round(0.75 * per_candidate)
    for budget in (1, 2, 12, 10_000):
        s = make_strategy("oneshot", SPACE, seed=0, budget=budget, cost_fn=cost, context=context())
        want = max(1, min(round(0.75 * per_candidate), budget * per_candidate // choices))
        assert s.steps_per_choice() == want, budget
        assert s.steps_per_choice() * choices <= max(budget * per_candidate, choices)  # the run's steps, at most
    small = make_strategy("oneshot", SPACE, seed=0, budget=1, cost_fn=cost, context=context())
    assert small.steps_per_choice() < unbounded.steps_per_choice()  # the cut is real here
    explicit = make_strategy("oneshot", SPACE, seed=0, budget=1, cost_fn=cost, context=context(), steps_per_choice=50)
    assert explicit.steps_per_choice() == 50  # an explicit option is the user's


def table(spec: ArchSpec) -> dict[str, float]:
    params, flops = cost(spec)
    return {"accuracy": 0.5 + 0.4 * ("tensor" in spec.ops) + 0.01 * len(spec.cells), "params": params, "flops": flops}


def test_asks_are_the_predicted_front_first_best_by_hypervolume():
    s = strategy()
    first = s.ask()
    front = [p for p in s.predictions if p["front_rank"] == 0]
    assert front and s.predictions[0]["arch_id"] == first.arch_id
    assert [p["order"] for p in s.predictions] == list(range(len(s.predictions)))
    assert [p["front_rank"] for p in s.predictions] == sorted(p["front_rank"] for p in s.predictions)
    for p in front:  # no predicted-front point is dominated by any scored spec
        assert not any(q["predicted"] >= p["predicted"] and q["params"] <= p["params"] and q["flops"] <= p["flops"]
                       and (q["predicted"], q["params"], q["flops"]) != (p["predicted"], p["params"], p["flops"])
                       for q in s.predictions)
    asked = [first] + [s.ask() for _ in range(len(front) - 1)]
    assert {a.arch_id for a in asked} == {p["arch_id"] for p in front}
    assert s.info["ranking"]["mode"] == "exhaustive" and s.info["ranking"]["scored"] == SPACE.size()


def test_a_large_space_is_searched_by_evolution_within_its_size():
    s = strategy(exhaustive=10, population=8, generations=3)
    spec = s.ask()
    SPACE.validate(spec)
    assert s.info["ranking"]["mode"] == "evolution" and 8 <= s.info["ranking"]["scored"] <= 8 * 4


def real_front(told: list[ArchSpec]) -> list[ArchSpec]:
    """The told specs no other told spec dominates (accuracy up, params and FLOPs down), slowly."""
    def row(s):
        t = table(s)
        return (-t["accuracy"], t["params"], t["flops"])
    return [s for s in told if not any(all(a <= b for a, b in zip(row(o), row(s), strict=True)) and row(o) != row(s)
                                       for o in told)]


def one_choice_apart(a: ArchSpec, b: ArchSpec) -> bool:
    """Whether `SearchSpace.mutate` turns `b` into `a` for some seed (every single change is drawn in 3000)."""
    return any(SPACE.mutate(b, random.Random(k)) == a for k in range(3000))


def test_after_its_front_share_it_asks_neighbours_of_the_real_front():
    s, queued = strategy(front_share=0.5), strategy(front_share=1.0)
    told = []
    for _ in range(6):  # budget 12: the first half from the predicted fronts, as front_share 1 asks them
        spec = s.ask()
        assert spec == queued.ask()
        s.tell(spec, table(spec))
        queued.tell(spec, table(spec))
        told.append(spec)
    later = []
    for _ in range(6):
        spec = s.ask()
        front = real_front(told)
        assert spec not in told and any(one_choice_apart(spec, f) for f in front), spec.describe()
        s.tell(spec, table(spec))
        told.append(spec)
        later.append(spec)
    assert later != [queued.ask() for _ in range(6)]  # not simply the rest of the predicted queue
    assert [p["arch_id"] for p in s.local] == [a.arch_id for a in later]  # kept for the report
    assert [p["predicted"] for p in s.local] == [Scorer(s.supernet()[0], TAPS, "accuracy")(a) for a in later]


def test_the_neighbour_asked_is_the_one_adding_most_hypervolume_by_the_supernet_delta():
    from search.pareto import hypervolume
    from search.strategies.supernet.local import next_local

    a = ArchSpec("hybrid", (cell(("audio@0", "image@0"), "concat", 4),))
    preds = {}

    def predict(spec):  # a made-up surrogate: tensor is predicted 0.3 better than anything else
        return preds.setdefault(spec.arch_id, 0.2 + 0.3 * ("tensor" in spec.ops))

    def points(specs, values):
        return np.array([[-v, cost(x)[0], cost(x)[1]] for x, v in zip(specs, values, strict=True)], dtype=float)

    spec = next_local(SPACE, [(a, 0.6)], predict, points, random.Random(0), tries=200, skip={a.arch_id})
    assert one_choice_apart(spec, a)
    # the slow way: every neighbour's estimate is 0.6 + predict(n) - predict(a); the pick adds the most HV
    near = {SPACE.mutate(a, random.Random(k)) for k in range(3000)} - {a}
    ref = points([a, *near], [0.6] + [0.6 + predict(n) - predict(a) for n in near]).max(0) + 1.0
    gain = {n: hypervolume(points([a, n], [0.6, 0.6 + predict(n) - predict(a)]), ref)
            - hypervolume(points([a], [0.6]), ref) for n in near}
    assert gain[spec] == pytest.approx(max(gain.values()))
    assert "tensor" in spec.ops


def test_the_evolution_keeps_finding_new_sub_networks():
    s = strategy(exhaustive=10, population=8, generations=6)
    s.ask()
    assert s.info["ranking"]["scored"] >= 8 * 7 * 0.75  # a converged population walks on instead of repeating


def test_the_supernet_lr_option_reaches_its_training_and_a_bad_one_is_refused():
    s = strategy(lr=1e-3, batch_size=16)
    cfg = s.train_config()
    assert (cfg.lr, cfg.batch_size, cfg.full_batch) == (1e-3, 16, 0)
    assert s.fingerprint() != strategy(lr=2e-3, batch_size=16).fingerprint()
    with pytest.raises(ValueError, match="oneshot: front_share must be a number > 0 and <= 1.0, got 1.5"):
        strategy(front_share=1.5)
    with pytest.raises(ValueError, match="oneshot: lr must be a number > 0, got 0"):
        strategy(lr=0)


def test_without_the_runs_data_it_says_what_it_needs():
    with pytest.raises(ValueError, match="oneshot: needs the run's tap cache"):
        make_strategy("oneshot", SPACE, seed=0, cost_fn=cost)
    with pytest.raises(ValueError, match="oneshot: population must be a positive integer, got 0"):
        strategy(population=0)


def test_the_predictions_and_weights_are_kept_and_a_resume_loads_them(tmp_path):
    lines = []
    s = strategy(run_dir=tmp_path, **{"steps_per_choice": 2})
    s.context = replace(s.context, say=lines.append)
    records = []
    for i in range(6):
        spec = s.ask()
        records.append({"trial_id": f"t{i}", "spec": spec.to_dict(), "status": "ok",
                        "metrics": {"val_accuracy": table(spec)["accuracy"], "params_total": cost(spec)[0],
                                    "flops_total": cost(spec)[1]}})
        s.tell(spec, table(spec))
    later = [s.ask() for _ in range(4)]
    assert any(line.startswith("oneshot: supernet trained in") for line in lines)
    saved = json.loads((tmp_path / "oneshot.json").read_text())
    assert saved["predictions"][0]["arch_id"] == ArchSpec.from_dict(records[0]["spec"]).arch_id
    assert (tmp_path / "supernet.safetensors").is_file()

    resumed = strategy(run_dir=tmp_path)
    assert replay(resumed, records[:4] + records[5:], lookahead=2) == [ArchSpec.from_dict(records[4]["spec"])]
    assert resumed.info["supernet"].get("loaded") is True  # not trained again
    resumed.tell(ArchSpec.from_dict(records[4]["spec"]), table(ArchSpec.from_dict(records[4]["spec"])))  # rerun
    assert [resumed.ask() for _ in range(4)] == later  # the later asks follow the real front: the same results

    (tmp_path / "oneshot.json").write_text(json.dumps({**saved, "supernet": {**saved["supernet"], "fingerprint": "x"}}))
    again = strategy(run_dir=tmp_path)
    again.ask()
    assert not again.info["supernet"].get("loaded")  # weights of another supernet are never loaded


@pytest.mark.usefixtures("ray_local")  # the search and its resume share one embedded Ray
def test_a_oneshot_search_runs_and_resumes_end_to_end(tmp_path):
    from search.cli import main
    from search.runstore.store import RunStore
    from tests.test_report import CONFIG

    # one candidate at a time (no packs): the last asks (next to the real front) see the same results in both runs
    config = {**CONFIG, "search": {"strategy": "oneshot", "num_samples": 4, "confirm": 0, "baselines": "none",
                                   "max_concurrent": 1, "pack": 1, "runs_dir": str(tmp_path / "runs"),
                                   "options": {"steps_per_choice": 2}}}
    path = tmp_path / "oneshot.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["search", str(path)]) == 0
    store = RunStore.open(next((tmp_path / "runs").glob("*/*/config.yaml")).parent)
    trials = store.trials()
    assert len(trials) == 4 and (store.run_dir / "oneshot.json").is_file()
    kept = store.trials_path.read_text().splitlines(keepends=True)
    store.trials_path.write_text("".join(kept[:2]))  # the last two records lost
    assert main(["search", "--resume", str(store.run_dir)]) == 0
    resumed = store.trials()
    assert sorted(t["candidate_id"] for t in resumed) == sorted(t["candidate_id"] for t in trials)
    assert "predicted vs stand-alone" in (store.run_dir / "report.html").read_text()


def test_the_report_shows_the_asks_next_to_the_real_front_without_a_queue_place(tmp_path):
    from search.objectives import get
    from search.report.oneshot import oneshot_html, predicted_vs_trained

    a, b, c = SPECS[1], SPECS[3], SPECS[4]
    entry = {"arch_id": None, "arch": None, "predicted": 0.0, "order": 0}
    (tmp_path / "oneshot.json").write_text(json.dumps({
        "predictions": [{**entry, "arch_id": a.arch_id, "arch": a.describe(), "predicted": 0.7, "order": 0},
                        {**entry, "arch_id": c.arch_id, "arch": c.describe(), "predicted": 0.6, "order": 1}],
        "local": [{"arch_id": c.arch_id, "arch": c.describe(), "predicted": 0.6, "ask": 2},
                  {"arch_id": b.arch_id, "arch": b.describe(), "predicted": 0.9, "ask": 1}]}))
    trials = [{"trial_id": f"t{i}", "arch_id": s.arch_id, "spec": s.to_dict(), "status": "ok",
               "metrics": {"val_accuracy": v}} for i, (s, v) in enumerate(((a, 0.8), (b, 0.85), (c, 0.5)))]
    data = predicted_vs_trained(tmp_path, trials, get(["accuracy"])[0])
    assert [(r["arch"], r["order"], r["predicted"], r["trained"]) for r in data["rows"]] == [
        (a.describe(), 0, 0.7, 0.8), (b.describe(), None, 0.9, 0.85), (c.describe(), None, 0.6, 0.5)]
    assert data["tau"] == pytest.approx(1.0)  # 0.7 < 0.9 and 0.6 lowest: the same order as 0.8, 0.85, 0.5
    assert oneshot_html(data, get(["accuracy"])[0]).count("<td>near front</td>") == 2
