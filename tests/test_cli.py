"""What a user sees from the command line for quick commands and for mistakes."""
from __future__ import annotations

from pathlib import Path

import pytest

from search.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"


def test_ops_lists_every_operator_with_its_arguments(capsys):
    import fusion_ops

    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    for name in fusion_ops.list_fusions():
        assert f"{name}:" in out
    assert "low_rank" in out and "rank: int in [1, 64], default 4" in out


def test_space_prints_size_and_samples(capsys):
    assert main(["space", str(CONFIGS / "planted.yaml"), "--samples", "3"]) == 0
    out = capsys.readouterr().out
    assert "architectures over modalities m1, m2" in out
    assert out.count("\n  - ") == 3


@pytest.mark.parametrize(
    "argv,message",
    [
        (["search", "/no/such.yaml"], "/no/such.yaml: no such file"),
        (["search"], "search needs a CONFIG file"),
        (["search", str(CONFIGS / "planted.yaml"), "--num-samples", "0"], "search.num_samples: expected an integer >= 1"),
        (["show", "/no/run"], "is not a fusion-nas run directory"),
        (["search", "--resume", "/no/run"], "is not a fusion-nas run directory"),
    ],
)
def test_mistakes_give_one_line_and_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fusion-nas: error: ")
    assert message in err


def test_bad_yaml_names_the_key(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text((CONFIGS / "planted.yaml").read_text().replace("max_cells: 2", "max_cells: 0"))
    assert main(["space", str(path)]) == 2
    assert f"{path}: space.max_cells:" in capsys.readouterr().err
