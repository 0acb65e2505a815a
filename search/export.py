"""Export one trial of a run as a model a user loads in one line, and re-score an export.

A search keeps no weights, only specs and scores: export trains the chosen spec again
exactly as its trial did (same data, cached backbones, seed and loop, so the same
weights and the same test accuracy), or with `retrain` on train+val, and writes the
directory `fusion_ops.load` reads back: `arch.yaml`, `weights.safetensors` (the backbone
blocks the model runs included: the export stands alone), `model.json`, plus `metrics.json` and a README.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusion_ops import FusionModel, build_model, lengths_key, model_cost, required_taps
from fusion_ops.load import (
    MAX_TEXT_BYTES,
    ExportedModel,
    ExportError,
    code_named,
    load_model,
    read_bounded,
    save_model,
)
from search.baselines import answer_trial, summary_line
from search.bounded_pick import Bounds, pick_within
from search.config import Config, config_from_dict, load_config
from search.datasets import Dataset, load_dataset
from search.engine.run import Prepared, prepare, record_spec, trial_train
from search.export_formats import FILES, check_available, outputs_metrics, write_formats
from search.objectives import OBJECTIVES, Objective
from search.runstore.store import RunStore, front_from_trials, to_jsonable, utc_now
from search.training.device import resolve_device, to_device
from search.training.pretrain import resolve_backbone
from search.training.tasks import Task, get_task
from search.training.train import (
    FitResult,
    Split,
    TrainConfig,
    accuracy,
    build_head,
    candidate_config,
    dataset_tensors,
    fit,
    predict,
    task_of,
    torch_threads,
)
from spaces import ArchSpec, ConfigError
from spaces.yaml_errors import in_file, read_yaml

Say = Callable[[str], None]
EXPORT_FILES = {"arch.yaml", "model.json", "weights.safetensors", "metrics.json", "README.md", *FILES.values()}
FLOPS_NOTE = "forward FLOPs per sample, 2 per multiply-add; elementwise work not counted"

# --pick NAME -> sort key over the front's trials (first = chosen) given the run's metric (its val
# value made "lower is better"); ties fall to the earlier trial
PICKS: dict[str, Callable[[Mapping[str, Any], Callable[[Mapping[str, Any]], float]], tuple[float, ...]]] = {
    "accuracy": lambda m, worse: (worse(m), m["params_total"], m["flops_total"]),
    "smallest": lambda m, worse: (m["params_total"], worse(m), m["flops_total"]),
}


def pick_trial(trials: Sequence[Mapping[str, Any]], front: Mapping[str, Any], how: str,
               metric: Objective | None = None, bounds: Bounds | None = None,
               objs: Sequence[Objective] | None = None, rank: str = "mean",
               baselines: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The trial `how` names: `knee` (of the front, never an unstable candidate), `accuracy` (the
    run's answer, `search.baselines.answer_trial`: the front's best point — the best holdout
    metric when the run has a holdout, else the best val metric, the run's `metric` (accuracy by
    default) ranked as `rank` says (`search.rank`), then fewest params — or, given the run's
    `baselines`, the best basic one's own trial when it was trained as a candidate and the
    front's point does not beat it beyond the holdout's noise while it is cheaper),
    `smallest` (fewest params, then best val metric), or a trial id. The metric is always the validation one: test never chooses.
    With `bounds` (`search.bounded_pick`), `accuracy` and `knee` pick among the confirmed
    candidates within them (`objs`: the run's objectives)."""
    metric = metric or OBJECTIVES["accuracy"]
    objs = objs or [metric, OBJECTIVES["params"], OBJECTIVES["flops"]]
    if bounds is not None and bounds.any():
        return pick_within(trials, how, bounds, objs, rank)
    sign = -1.0 if metric.mode == "max" else 1.0
    by_id = {str(t["trial_id"]): dict(t) for t in trials}
    if how in ("knee", *PICKS):
        if not front.get("trial_ids"):
            raise ExportError(f"--pick {how}: the run has no ok trial with finite scores, so no front to pick from")
        # the front's entries: each candidate's metrics as the mean over its seeds, `unstable` marked
        if how == "knee":
            chosen = front.get("knee")
        elif how == "accuracy":  # the run's answer: chosen on the holdout when the run has one
            chosen = answer_trial(front, baselines, trials, objs, rank)
        else:
            chosen = min(front["front"], key=lambda t: PICKS[how](t["metrics"], lambda m: sign * m[metric.key]))["trial_id"]
        if chosen is None:
            raise ExportError(f"--pick {how}: every candidate it could pick is unstable (its seeds disagree); pick "
                              f"one by trial id to take it anyway: {', '.join(front['trial_ids'][:8])}")
        return by_id[str(chosen)]
    trial = by_id.get(how)
    if trial is None:
        ids = ", ".join(list(by_id)[:8]) + (", ..." if len(by_id) > 8 else "")
        raise ExportError(f"--pick {how}: no such trial; pick knee, accuracy, smallest or a trial id ({ids})")
    if trial.get("status") != "ok":
        raise ExportError(f"--pick {how}: trial {how} is {trial.get('status')} ({trial.get('reason') or 'no reason'});"
                          " only ok trials can be exported")
    return trial


def read_config(path: str | Path, trust_code: bool = False) -> Config:
    """A config from a user's YAML file, a run directory, or a run's stored `config.yaml`; the
    code a run's config names is imported only with `trust_code` (the user's own file: always)."""
    path = Path(path)
    if path.is_dir():
        path = RunStore.open(path).config_path
    raw = read_yaml(path)
    if not (isinstance(raw, dict) and "source" in raw):
        return load_config(path)
    raw = dict(raw)
    source = raw.pop("source")  # relative data paths are relative to the original config
    with in_file(path):
        if not isinstance(source, str) or not source or "\0" in source:
            raise ConfigError(f"source: expected the path of the original config, got {source!r}")
        return config_from_dict(raw, Path(source), trust_code=trust_code, run_dir=path.parent)


# ------------------------------------------------------------------ training the chosen spec
def train_for_export(spec: ArchSpec, prepared: Prepared, *, retrain: bool = False,
                     epochs: int | None = None, seed: int | None = None,
                     device: torch.device | None = None) -> tuple[FusionModel, FitResult]:
    """`spec` trained as its trial was (its training settings and `seed`; frozen backbones: on
    cached taps; else end to end), or with `retrain` on train+val for `epochs` epochs, keeping
    the last weights. It trains on `device` (default: where the run's trials trained) and the
    model comes back on the CPU."""
    cfg, data = candidate_config(trial_train(prepared.config), spec, seed), prepared.dataset
    device = device or resolve_device(cfg.device)
    frozen = prepared.config.backbones.freeze
    task = task_of(prepared.taps)
    if frozen:
        module: torch.nn.Module = build_head(spec, prepared.taps, cfg.seed, cfg.dropout)
        sub = prepared.taps.subset(required_taps(spec))
        train, val = sub.tensors("train"), sub.tensors("val")
    else:  # end to end, as `evaluate_with_backbones(freeze=False)` trained the trial
        module = model = build_model(spec, prepared.backbones, data.num_classes, False,
                                     torch.Generator().manual_seed(cfg.seed), cfg.dropout)
        train, val = dataset_tensors(data, "train"), dataset_tensors(data, "val")
    module.to(device)
    train, val = to_device(train, device), to_device(val, device)
    if retrain:
        result = _fit_last(module, _concat(train, val), val, cfg, epochs or cfg.epochs, task)
    else:
        result = fit(module, train, val, cfg, task=task)
    module.cpu()
    if result.status != "ok":
        raise ExportError(f"training {spec.arch_id} for export failed: {result.reason}")
    if frozen:  # the trained head behind the frozen backbones it was trained on the taps of
        model = build_model(spec, prepared.backbones, data.num_classes, True, torch.Generator().manual_seed(0),
                            flat=prepared.taps.flat_taps())
        model.fusion.load_state_dict(module.state_dict())
    return model, result


def _concat(a: Split, b: Split) -> Split:
    return {k: torch.cat([a[0][k], b[0][k]]) for k in a[0]}, torch.cat([a[1], b[1]])


def _fit_last(module: torch.nn.Module, train: Split, val: Split, cfg: TrainConfig, epochs: int,
              task: Task | None = None) -> FitResult:
    """`fit` for exactly `epochs` epochs, keeping the last weights: val is part of the
    training data now, so "best on val" would choose on data the model was fitted to."""
    cfg = dataclasses.replace(cfg, epochs=epochs, patience=epochs)
    last: dict[str, torch.Tensor] = {}

    def keep(epoch: int, _acc: float) -> None:
        if epoch == epochs:
            last.update({k: v.detach().clone() for k, v in module.state_dict().items()})

    result = fit(module, train, val, cfg, report=keep, task=task)
    if last:
        module.load_state_dict(last)
    return dataclasses.replace(result, best_epoch=result.epochs, val_accuracy=math.nan)


# ------------------------------------------------------------------ export
class _Run:
    """What an export reads of its run, read once for all the members of a front: the record and
    its front, the config, then on first use the prepared data (backbones, tap cache), the raw
    data as stored on disk, and the data's SHA-256 (`data_fingerprint`)."""

    def __init__(self, run_dir: str | Path, trust_code: bool) -> None:
        self.store = RunStore.open(run_dir)
        self.config = read_config(self.store.run_dir, trust_code)  # first: a run naming code stops here, having run none
        self.trials = self.store.trials()
        self.objs = self.store.objectives()
        self.front = front_from_trials(self.trials, self.store.reference, self.objs)
        self.rank, self.baselines = self.store.rank(), self.store.baselines()  # what `--pick accuracy` weighs
        self._prepared: Prepared | None = None
        self._raw: Dataset | None = None
        self._fingerprint: str | None = None

    def prepared(self, say: Say) -> Prepared:
        if self._prepared is None:
            self._prepared = prepare(self.config, say)
        return self._prepared

    def raw(self) -> Dataset:
        if self._raw is None:
            self._raw = load_raw(self.config)
        return self._raw

    def fingerprint(self, say: Say) -> str:
        if self._fingerprint is None:
            self._fingerprint = data_fingerprint(self.prepared(say).dataset)
        return self._fingerprint


def export_run(run_dir: str | Path, how: str, out: str | Path, *, retrain: bool = False,
               say: Say = print, device: str | None = None, trust_code: bool = False,
               bounds: Bounds | None = None, formats: Sequence[str] = ("native",)) -> dict[str, Any]:
    """Export the trial `how` picks (within `bounds`, if any) from the run in `run_dir` into
    `out`; returns its metrics.json.
    It trains and scores on `device` (auto | cpu | cuda | cuda:N; default: where the run's trials
    trained, `trial_train`); the weights written are CPU tensors either way. Code the run's
    config names (plugins, backbone factories) is imported only with `trust_code`. `formats`
    beyond native add graph files, checked on the test split (`search.export_formats`)."""
    check_available(formats)
    run = _Run(run_dir, trust_code)
    _check_out(Path(out))
    return _export(run, how, Path(out), retrain=retrain, say=say, device=device, bounds=bounds, formats=formats)


def _export(run: _Run, how: str, out: Path, *, retrain: bool, say: Say, device: str | None,
            bounds: Bounds | None, formats: Sequence[str], card: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`export_run` of a run already read (`card`: a front member's model card, `export_front`)."""
    store, config, objs = run.store, run.config, run.objs
    trial = pick_trial(run.trials, run.front, how, objs[0], bounds, objs, run.rank, run.baselines)
    with in_file(store.trials_path):
        spec = record_spec(trial)
    where = resolve_device(device or trial_train(config).device, say, "--device" if device else "train.device")
    say(f"trial {trial['trial_id']}: {spec.describe()}")
    prepared = run.prepared(say)
    say("retraining on train+val" if retrain else "training it again as its trial did")
    model, result = train_for_export(spec, prepared, retrain=retrain, epochs=trial["metrics"].get("best_epoch"),
                                     seed=trial["metrics"].get("seed"), device=where)
    data = prepared.dataset
    exported = ExportedModel(model, data.mean, data.std, data.classes, data.task, data.target_scale, data.codings)
    split = raw_test_split(exported, run.raw(), data)  # the scores and the graphs' checks share it
    with torch_threads(config.search.cpus_per_trial):  # score as the trial did, in a worker of that size
        tests = split_metrics(exported.to(where), *split)
    exported.cpu()
    out.mkdir(parents=True, exist_ok=True)
    graphs = write_formats(exported, out, formats, *split, objs[0].name)
    info = save_model(exported, out, {m: resolve_backbone(config.backbones, data, m).to_dict()
                                      for m in exported.modalities}, graphs)
    metrics = _metrics(store, config, trial, run.front, how, retrain, exported, result, tests, objs[0])
    metrics["formats"] = {"native": {}, **graphs}
    metrics["data_sha256"] = run.fingerprint(say)
    store_json(out / "metrics.json", metrics)
    (out / "README.md").write_text(readme(metrics, exported, code_named(info), card), encoding="utf-8")
    if metrics["reproduced"] is False:
        say(f"warning: test {metrics['metric']} {metrics['test_metric']:.4f} differs from the trial's "
            f"{metrics['reported']['test_metric']}")
    return metrics


def export_front(run_dir: str | Path, out: str | Path, *, say: Say = print, device: str | None = None,
                 trust_code: bool = False, formats: Sequence[str] = ("native",)) -> dict[str, Any]:
    """`--pick front`: every member of the run's front exported into its own folder of `out`
    (`01-<trial id>`, ..., in order of the run's metric, best first), each with a model card
    (README.md: what it is, the data's fingerprint, its seeds, the baselines line, the config),
    and `out/front.json` listing them: metrics as mean ± std over seeds, costs, folder."""
    out = Path(out)
    run = _Run(run_dir, trust_code)
    store, config, objs, front = run.store, run.config, run.objs, run.front
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"--out {out}: give a new or empty directory for the front")
    _check_out(out)
    check_available(formats)
    if not front["front"]:
        raise ExportError(f"{store.run_dir}: the run has no front to export (no successful trial)")
    metric = objs[0]
    sign = -1.0 if metric.mode == "max" else 1.0
    entries = sorted(front["front"], key=lambda e: sign * float(e["metrics"][metric.key]))
    line = summary_line(store.read_json("pareto.json").get("baselines") or {})
    config_text = (store.run_dir / "config.yaml").read_text(encoding="utf-8")
    members = []
    for i, entry in enumerate(entries):
        folder = f"{i + 1:02d}-{entry['trial_id']}"
        say(f"[{i + 1}/{len(entries)}] {folder}")
        em = entry["metrics"]
        stats = {f"{split}_{metric.name}": {"mean": em[f"{split}_{metric.name}"], "std": _std(em, split, metric.name)}
                 for split in ("val", "holdout", "test") if em.get(f"{split}_{metric.name}") is not None}
        card = {"seeds": em.get("seeds", [em.get("seed")]), "unstable": em.get("unstable"), "baselines": line,
                "config": config_text, "stats": stats}
        m = _export(run, entry["trial_id"], out / folder, retrain=False, say=say, device=device, bounds=None,
                    formats=formats, card=card)
        members.append({"folder": folder, "trial_id": entry["trial_id"], "arch": m["arch"], "knee": m["front"]["knee"],
                        "unstable": em.get("unstable"), "n_seeds": em.get("n_seeds", 1), "seeds": card["seeds"],
                        "metrics": stats, "params_total": m["params_total"], "flops_total": m["flops_total"],
                        "latency_ms": em.get("latency_ms"), "exported_test_metric": m["test_metric"],
                        "formats": sorted(m["formats"])})
    listing = {"run_dir": str(store.run_dir), "run": config.name, "metric": metric.name, "baselines": line,
               "data_sha256": m["data_sha256"], "members": members}
    store_json(out / "front.json", listing)
    return listing


def _std(metrics: Mapping[str, Any], split: str, name: str) -> float:
    """The std over seeds of `split`'s metric `name` (accuracy's is also kept as `<split>_std`); 0 for one seed."""
    std = metrics.get(f"{split}_{name}_std", metrics.get(f"{split}_std") if name == "accuracy" else None)
    return float(std or 0.0)


def data_fingerprint(data: Dataset) -> str:
    """SHA-256 over every split's arrays and labels, as the model trained and was scored on them."""
    digest = hashlib.sha256()
    for split in ("train", "val", "test"):
        xs = getattr(data, split)
        for m in sorted(xs):
            a = np.ascontiguousarray(xs[m])
            digest.update(f"{split}/{m}/{a.dtype}/{a.shape}".encode())
            digest.update(a.tobytes())
        y = np.ascontiguousarray(getattr(data, f"y_{split}"))
        digest.update(f"{split}/y/{y.dtype}/{y.shape}".encode())
        digest.update(y.tobytes())
    return digest.hexdigest()


def _check_out(out: Path) -> None:
    """Refuse to write into a file, or a directory holding anything but a previous export."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a directory")
    base = next(p for p in (out, *out.absolute().parents) if os.path.lexists(p))  # what exists of its path
    if not base.is_dir():  # e.g. /dev/null/x: found now, not after the training
        raise ExportError(f"--out {out}: {base} is not a directory, so nothing can be written under it")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ExportError(f"--out {out}: {base} is not writable")
    others = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_FILES) if out.is_dir() else []
    if others:
        raise ExportError(f"--out {out}: holds other files ({', '.join(others[:3])}); give a new or empty directory")


def raw_test_metrics(model: ExportedModel, config: Config, standardised: Dataset | None = None) -> dict[str, float]:
    """Every test metric of `model`'s task (`test_<metric>`) on the config's data as stored on disk
    (before standardisation), the way a user feeds it; labels are checked against `standardised`
    when given. Classification's `test_accuracy` is computed exactly as a trial computes it."""
    return split_metrics(model, *raw_test_split(model, load_raw(config), standardised))


def split_metrics(model: ExportedModel, xs: Mapping[str, torch.Tensor], y: torch.Tensor, task: Task) -> dict[str, float]:
    """`raw_test_metrics` on a split `raw_test_split` read."""
    out = outputs_metrics(task, predict(model, xs), y)
    if task.name == "classification":
        out["test_accuracy"] = accuracy(model, (xs, y))
    return out


def load_raw(config: Config) -> Dataset:
    """The config's data as stored on disk: not standardised, IDs as the files hold them."""
    return load_dataset({**config.data, "normalize": "none"}, config.path.parent)


def raw_test_split(model: ExportedModel, raw: Dataset,
                   standardised: Dataset | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor, Task]:
    """The test split of `raw` (`load_raw`) as `model` takes it (raw values and IDs, `m:lengths`),
    its labels in the units the model answers in, and the task (see `raw_test_metrics`)."""
    missing = [m for m in model.modalities if m not in raw.shapes]
    if missing:
        raise ExportError(f"the data has no modality {missing[0]!r}; the model reads {', '.join(model.modalities)}")
    wrong = {m: raw.shapes[m] for m, s in model.input_shapes.items() if raw.shapes[m] != s}
    if wrong:
        m = next(iter(wrong))
        raise ExportError(f"modality {m!r}: the data has samples of shape {wrong[m]}, "
                          f"the model reads {model.input_shapes[m]}")
    if standardised is not None and not np.array_equal(raw.y_test, standardised.y_test):
        raise ExportError("the unstandardised data splits differently from the standardised one")
    xs, y = dataset_tensors(raw, "test", model.modalities)
    for m, coding in raw.codings.items():  # the IDs as the file holds them: the model codes them itself
        if m in xs:
            xs[m] = torch.from_numpy(raw.raw_ids["test"][m])
            if coding.lengths_from == "pad":
                xs.pop(lengths_key(m), None)
    task = get_task(raw.task)
    if raw.target_scale is not None:  # the model answers in the targets' units: so must the labels
        y = y * torch.as_tensor(raw.target_scale[1]) + torch.as_tensor(raw.target_scale[0])
    return xs, y, task


def raw_test_accuracy(model: ExportedModel, config: Config, standardised: Dataset | None = None) -> float:
    """Test accuracy of a classifier `model` on the config's data as stored on disk (see `raw_test_metrics`)."""
    return raw_test_metrics(model, config, standardised)["test_accuracy"]


def _metrics(store: RunStore, config: Config, trial: Mapping[str, Any], front: Mapping[str, Any], how: str,
             retrain: bool, model: ExportedModel, result: FitResult, tests: Mapping[str, float],
             metric: Objective) -> dict[str, Any]:
    reported = trial["metrics"]
    tid = trial["trial_id"]
    on_front = tid in front["trial_ids"]
    sign = -1.0 if metric.mode == "max" else 1.0
    by_metric = sorted(front["front"], key=lambda f: sign * f["metrics"][metric.key])
    test_key = "test_" + metric.name
    val = None if retrain else result.val_accuracy
    if metric.name != "accuracy" and not retrain:  # fit's score is the selection score: report the metric's
        val = reported.get(metric.key) if reported.get("n_seeds", 1) == 1 else None
    return {
        "trial_id": tid,
        "arch_id": model.arch_id,
        "arch": model.spec.describe(),
        "pick": how,
        "run_dir": str(store.run_dir),
        "run": config.name,
        "data": config.data,
        "task": model.task,
        "metric": metric.name,
        "trained_on": "train+val" if retrain else "train",
        "seed": candidate_config(config.train, model.spec, trial["metrics"].get("seed")).seed,
        "train_settings": model.spec.train_settings,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "val_accuracy": (None if retrain else result.val_accuracy) if metric.name == "accuracy" else None,
        "test_accuracy": tests.get("test_accuracy"),
        "val_metric": val,
        "test_metric": tests[test_key],
        "test_metrics": dict(tests),
        "reproduced": None if retrain else tests[test_key] == reported.get(test_key),
        **model_cost(model.model),
        "flops_convention": FLOPS_NOTE,
        "reported": {k: reported.get(k) for k in ("val_accuracy", "test_accuracy", "params_total", "flops_total",
                                                  "params_fusion", "flops_fusion", "epochs", "best_epoch")}
        | {"val_metric": reported.get(metric.key), "test_metric": reported.get(test_key)},
        "front": {
            "on_front": on_front,
            "knee": tid == front["knee"],
            "rank_by_val_metric": next((i + 1 for i, f in enumerate(by_metric) if f["trial_id"] == tid), None),
            "size": len(front["trial_ids"]),
            "n_ok": front["n_ok"],
            "n_trials": front["n_trials"],
        },
        "exported_at": utc_now(),
    }


def store_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def readme(m: Mapping[str, Any], model: ExportedModel, code: Sequence[str] = (),
           card: Mapping[str, Any] | None = None) -> str:
    """The export's README.md: what the model is, where it sits on the front, how to load it
    (`code`: the backbone factories loading imports and calls, `code_named`); with `card`
    (`export_front`), a model card: the seeds' spread, the data, the baselines, the config."""
    trust, trust_flag, code_note = "", "", ""
    if code:
        trust, trust_flag = ", trust_code=True", " --trust-code"
        code_note = (f"\nLoading imports and calls backbone code ({'; '.join(code)}), which must be installed "
                     "where you load it; `trust_code=True` says you trust it (without it, loading refuses).\n")
    f = m["front"]
    if f["on_front"]:
        best = "most accurate" if m["metric"] == "accuracy" else f"best by val {m['metric']}"
        where = (f"on the Pareto front of its run: {_ordinal(f['rank_by_val_metric'])} {best} of "
                 f"{f['size']} front points{' and the knee' if f['knee'] else ''} "
                 f"({f['n_ok']} ok trials of {f['n_trials']})")
    else:
        where = f"not on the Pareto front of its run (chosen by trial id; front of {f['size']})"
    inputs = "\n".join(f"| `{mod}` | {tuple(s)} |" for mod, s in model.input_shapes.items())
    example = ", ".join(f'"{mod}": x_{i}' for i, mod in enumerate(model.modalities))
    val = "n/a (trained on it)" if m["val_metric"] is None else f"{m['val_metric']:.4f}"
    return f"""# {m['run']} / trial {m['trial_id']}

{m['arch']}

A multimodal fusion model ({m['task']}) found by fusion-nas (`--pick {m['pick']}`), {where}.
Trained on {m['trained_on']} ({m['epochs']} epochs, seed {m['seed']}); backbones included.

| | |
|---|---|
| val {m['metric']} | {val} |
| test {m['metric']} | {m['test_metric']:.4f} |
| parameters | {m['params_total']:,} ({m['params_fusion']:,} in fusion + head) |
| FLOPs | {m['flops_total']:,} ({m['flops_fusion']:,} in fusion + head) |

FLOPs: {FLOPS_NOTE}.

## Inputs

Raw samples, as in the data files: the model standardises them with its training
split's mean and std. Classes (logit index -> label): {list(model.classes)}.

| modality | shape per sample |
|---|---|
{inputs}

## Load

```python
from fusion_ops.load import load_model
model = load_model("path/to/this/folder"{trust})
logits = model({{{example}}})  # each x_i: (batch, *shape)
```
{code_note}
Re-score on a config's test split: `fusion-nas evaluate THIS_FOLDER --config CONFIG{trust_flag}`.

## Files

- `arch.yaml`: the architecture (`spaces.ArchSpec`)
- `weights.safetensors`: all weights, the backbone blocks it runs included (tensors only: loading runs no code)
- `model.json`: how to rebuild it, the weights' SHA-256, and `integrity`: the SHA-256 of model.json and arch.yaml
- `metrics.json`: scores, costs and where the trial came from
""" + ("" if card is None else _card(m, card))


def _card(m: Mapping[str, Any], card: Mapping[str, Any]) -> str:
    """The model card part of a front member's README."""
    rows = "\n".join(f"| {k.replace('_', ' ')} | {v['mean']:.4f} ± {v['std'] or 0.0:.4f} |" for k, v in card["stats"].items())
    warn = f"\n**Unstable:** {card['unstable']}\n" if card.get("unstable") else ""
    return f"""
## Model card

Its run trained it with seeds {card['seeds']}; mean ± std over them (this folder holds seed {m['seed']}):

| | |
|---|---|
{rows}
{warn}
- Data: SHA-256 `{m['data_sha256']}` over the train, val and test arrays and labels as the model read them
  (`fusion-nas evaluate` on other data says so).
- Against the baselines: {card['baselines']}

The run's configuration:

```yaml
{card['config'].rstrip()}
```
"""


def _ordinal(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


# ------------------------------------------------------------------ evaluate
def evaluate_export(export_dir: str | Path, config_path: str | Path, device: str | torch.device = "cpu",
                    trust_code: bool = False) -> dict[str, Any]:
    """The test metric of the export in `export_dir` (the one it was exported with; accuracy for
    an older export) on the data of `config_path`, next to the exported value, computed on `device`.
    A backbone factory named in the export is run only with `trust_code` (`load_model`)."""
    config = read_config(config_path, trust_code)  # first: a run's config naming code stops here
    model = load_model(export_dir, device, trust_code=trust_code)
    tests = raw_test_metrics(model, config)
    exported = {}
    metrics_path = Path(export_dir) / "metrics.json"
    if metrics_path.exists():
        try:
            exported = json.loads(read_bounded(metrics_path, MAX_TEXT_BYTES).decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ExportError(f"{metrics_path}: not valid JSON ({err})") from None
        if not isinstance(exported, dict):
            raise ExportError(f"{metrics_path}: expected a JSON object, got {type(exported).__name__}")
        for key in ("test_accuracy", "test_metric"):
            value = exported.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ExportError(f"{metrics_path}: {key}: expected a number, got {value!r}")
    name = exported.get("metric") if exported.get("metric") in OBJECTIVES else "accuracy"
    if f"test_{name}" not in tests:  # an export of another task than this data's
        name = next(iter(tests)).removeprefix("test_")
    key = "test_metric" if "test_metric" in exported else "test_accuracy"
    return {"metric": name, "test_metric": tests[f"test_{name}"], "exported_test_metric": exported.get(key),
            "test_accuracy": tests.get("test_accuracy"), "exported_test_accuracy": exported.get("test_accuracy"),
            "same_data": exported.get("data") == config.data if exported else None,
            "arch": model.spec.describe(), "params_total": model_cost(model.model)["params_total"]}
