"""The Python API: the README's example runs as written, and a run directory reopens as the same object."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from search import api
from spaces import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    """The python block after the `api-example` marker in README.md."""
    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- api-example[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md lost its API example"
    return m.group(1)


@pytest.mark.usefixtures("ray_local")  # the example's search on the shared Ray
def test_the_readme_example_is_ten_lines_and_runs(tmp_path, monkeypatch, capsys):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 11  # ten lines and the import's blank line
    monkeypatch.chdir(tmp_path)
    # HOME stays: Ray keeps its auth token for the process, and a later ray.init would not match it
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    result = scope["result"]
    trials = result.trials
    assert len(trials) == 3 and set(trials["status"]) == {"ok"}
    assert {"params-stage", "flops-op", "history"} <= set(scope["figs"])
    front = result.front
    assert len(front) >= 1 and front["val"].is_monotonic_decreasing and result.knee["knee"]
    from fusion_ops import load_model

    model = load_model(tmp_path / "my_model")
    assert model.spec.describe() == result.knee["arch"]
    again = api.load_run(result.run_dir)
    assert again.trials["trial_id"].tolist() == trials["trial_id"].tolist()
    assert (result.run_dir / "report.html").is_file()
    out = capsys.readouterr().out
    assert "val_accuracy" in out and "params_total" in out


def test_a_bad_config_dict_is_one_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"<config dict>: data.kind: unknown dataset kind 'nope'"):
        api.search({"data": {"kind": "nope"}}, base_dir=tmp_path)


def test_a_run_reopened_is_judged_on_its_own_objectives_as_show_and_the_report_judge_it(tmp_path, capsys):
    from search.cli import main
    from tests.test_report import make_run

    store = make_run(tmp_path)  # the hand-made run: front A, B, C, E, H on accuracy, params, FLOPs
    store.write_json("objectives.json", {"task": "classification", "objectives": ["accuracy", "params"]})
    result = api.load_run(store.run_dir)
    assert [o.name for o in result.objectives] == ["accuracy", "params"]
    assert set(result.pareto()["trial_ids"]) == {"A", "B", "C"}  # E and H won on FLOPs only
    assert set(result.front["trial"]) == {"A", "B", "C"}
    assert set(result.figures()) == {"params-stage", "params-op", "history", "breakdown"}  # no FLOPs panel
    assert main(["show", str(store.run_dir)]) == 0
    assert "front of 3," in capsys.readouterr().out
