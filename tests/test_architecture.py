"""The code's shape, read from its own source with `ast` (nothing is imported):

- layers: `search -> fusion_ops -> spaces`, nothing upward;
- no import loop among the parts of `search/` (a subpackage, or a top-level module, is one part);
- no private module or name (`_x`) imported from another part, nor from a third-party package
  (two exceptions below, with their reasons);
- only `search/engine/` imports Ray;
- sizes: files <= 400 lines, functions <= 60 lines and <= 8 parameters. The files and functions
  over those limits today are listed in `OVER` with their size now: they may shrink, not grow,
  and an entry that has come under its limit must leave the list (issue 25 splits them).

Imports inside functions count like any other. The last tests build small offending trees and
check that each rule catches them.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spaces", "fusion_ops", "search")  # lower to higher
LAYER = {name: i for i, name in enumerate(PACKAGES)}
MAX_LINES, MAX_FUNCTION_LINES, MAX_PARAMS = 400, 60, 8
# The private third-party imports allowed (importer, module.name), and why
THIRD_PARTY_PRIVATE = {
    # Ray's public state API (`ray.util.state`) goes through the dashboard, which a search does
    # not start: where a dead actor lived is only in the GCS's table
    ("search.engine.ray_cluster", "ray._private.state"): "ray",
    # torch documents dispatch modes at this path and has no public alias (its own
    # torch.utils.flop_counter.FlopCounterMode imports it from here)
    ("fusion_ops.cost", "torch.utils._python_dispatch.TorchDispatchMode"): "torch",
}

# what is over a size limit today, and its size now (lines, or parameters for `params:`)
OVER = {
    "file:search/export.py": 578,
    "file:search/training/train.py": 559,
    "file:search/runstore/store.py": 516,
    "file:search/training/taps.py": 506,
    "file:search/engine/tune.py": 460,
    "file:search/datasets/common.py": 415,
    "function:search.engine.tune.run_search": 99,
    "function:search.datasets.common.assemble": 85,
    "function:search.strategies.supernet.train.train_supernet": 65,
    "function:search.export.readme": 63,
    "params:search.engine.tune.run_search": 20,
    "params:search.strategies.mfas.MFASStrategy.__init__": 17,
    "params:search.strategies.oneshot.OneShotStrategy.__init__": 15,
    "params:search.api.search": 13,
    "params:search.datasets.common.build_dataset": 10,
    "params:search.engine.inprocess.search_in_process": 10,
    "params:search.engine.tune_searcher.StrategySearcher.__init__": 10,
    "params:search.export._metrics": 10,
    "params:search.training.baselines_fit.spec_baseline": 10,
    "params:search.training.taps.TapCache.cached": 10,
    "params:search.training.train._metrics": 10,
    "params:search.export._export": 9,
    "params:search.export.export_run": 9,
    "params:search.report.page.render_html": 9,
    "params:search.training.baselines_fit._record": 9,
    "params:search.training.baselines_fit.ensure_baselines": 9,
    "params:search.training.taps._build": 9,
    "params:search.training.taps._split_taps": 9,
    "params:search.training.taps._write_rest": 9,
    "params:search.training.train._one_epoch": 9,
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    line: int
    target: str  # the module imported from, dotted (relative imports resolved)
    name: str | None  # `from target import name`


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under the packages (a package is its `__init__`)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(module: str, path: Path) -> Iterator[Import]:
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, node.lineno, alias.name, None)
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                yield Import(module, node.lineno, target, alias.name)


def part(module: str) -> str:
    """`search.engine.run` -> `search.engine`; `search.config` -> `search.config`; `fusion_ops.x` -> `fusion_ops`."""
    pieces = module.split(".")
    return ".".join(pieces[:2]) if pieces[0] == "search" else pieces[0]


def first_party(found: Import, mods: dict[str, Path]) -> str | None:
    """The module an import reads from (`from pkg import submodule` names the submodule), or None."""
    if found.target.split(".")[0] not in PACKAGES:
        return None
    full = f"{found.target}.{found.name}"
    return full if found.name and full in mods else found.target


def all_imports(root: Path) -> tuple[dict[str, Path], list[Import]]:
    mods = modules(root)
    return mods, [i for m, p in mods.items() for i in imports(m, p)]


def upward_imports(root: Path) -> list[str]:
    mods, found = all_imports(root)
    bad = []
    for i in found:
        target = first_party(i, mods)
        if target and LAYER[target.split(".")[0]] > LAYER[i.module.split(".")[0]]:
            bad.append(f"{mods[i.module].relative_to(root)}:{i.line} imports {target}")
    return bad


def search_loops(root: Path) -> list[list[str]]:
    """Groups of `search` parts that import one another, directly or not (strongly connected)."""
    mods, found = all_imports(root)
    edges: dict[str, set[str]] = defaultdict(set)
    for i in found:
        target = first_party(i, mods)
        if target and target.startswith("search") and i.module.startswith("search") \
                and part(target) != part(i.module) and part(target) != "search":
            edges[part(i.module)].add(part(target))

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    parts = sorted({part(m) for m in mods if m.startswith("search.")})
    reached = {p: reach(p) for p in parts}
    loops, placed = [], set()
    for p in parts:
        if p not in placed and p in reached[p]:
            group = sorted(q for q in parts if q in reached[p] and p in reached[q])
            placed.update(group)
            loops.append(group)
    return loops


def _private(dotted: str) -> bool:
    return any(piece.startswith("_") and not piece.startswith("__") for piece in dotted.split("."))


def private_imports(root: Path) -> list[str]:
    """Also over the benchmark scripts in `experiments/`, which use the packages as a user would."""
    mods, found = all_imports(root)
    scripts = {f"experiments.{p.stem}": p for p in sorted((root / "experiments").glob("*.py"))}
    found += [i for m, p in scripts.items() for i in imports(m, p)]
    mods = {**mods, **scripts}
    bad = []
    for i in found:
        target = first_party(i, mods)
        where = f"{mods[i.module].relative_to(root)}:{i.line}"
        if target is None:  # third party
            if _private(i.target) and (i.module, f"{i.target}.{i.name}" if i.name else i.target) \
                    not in THIRD_PARTY_PRIVATE and (i.module, i.target) not in THIRD_PARTY_PRIVATE:
                bad.append(f"{where} imports {i.target} (private)")
            continue
        if part(target) == part(i.module):
            continue
        name = i.name if i.name and target == i.target else None
        if _private(target) or (name and _private(name)):
            bad.append(f"{where} imports {target}{'.' + name if name else ''} from another part")
    return bad


def ray_importers(root: Path) -> list[str]:
    mods, found = all_imports(root)
    return sorted({f"{mods[i.module].relative_to(root)}:{i.line}" for i in found
                   if i.target.split(".")[0] == "ray" and not i.module.startswith("search.engine")})


def sizes(root: Path) -> dict[str, int]:
    """Every file's lines, function's lines and function's parameters (`self`/`cls` not counted)."""
    out = {}
    for module, path in modules(root).items():
        text = path.read_text()
        out[f"file:{path.relative_to(root).as_posix()}"] = len(text.splitlines())

        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}.{child.name}")
                elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    name = f"{prefix}.{child.name}"
                    out[f"function:{name}"] = child.end_lineno - child.lineno + 1  # type: ignore[operator]
                    a = child.args
                    params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]
                    out[f"params:{name}"] = sum(p.arg not in ("self", "cls") for p in params)
                    visit(child, name)

        visit(ast.parse(text), module)
    return out


def limit(key: str) -> int:
    return {"file": MAX_LINES, "function": MAX_FUNCTION_LINES, "params": MAX_PARAMS}[key.split(":")[0]]


def size_breaches(root: Path, over: dict[str, int]) -> list[str]:
    """Sizes past their limit and not in `over`, or past what `over` allows; entries of `over` no longer needed."""
    found = sizes(root)
    bad = [f"{key} is {n} (limit {limit(key)})" for key, n in sorted(found.items())
           if n > limit(key) and n > over.get(key, limit(key))]
    bad += [f"{key}: {found.get(key)} is within its limit now; take it out of OVER" for key in sorted(over)
            if found.get(key, 0) <= limit(key)]
    return bad


# ---------------------------------------------------------------- the rules on this code
def test_imports_point_down_the_layers():
    assert upward_imports(ROOT) == []


def test_no_import_loop_among_the_parts_of_search():
    assert search_loops(ROOT) == []


def test_no_private_module_or_name_is_imported_from_another_part():
    assert private_imports(ROOT) == []


def test_only_the_engine_imports_ray():
    assert ray_importers(ROOT) == []


def test_sizes_stay_within_their_limits_or_shrink():
    assert size_breaches(ROOT, OVER) == []


def test_the_size_counts_agree_with_a_hand_count():
    found = sizes(ROOT)
    path = ROOT / "search" / "engine" / "packing.py"
    assert found["file:search/engine/packing.py"] == path.read_text().count("\n")
    lines = path.read_text().splitlines()
    start = next(i for i, s in enumerate(lines) if s.startswith("def pack_size("))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(("def ", "class ")))
    while not lines[end - 1].strip():
        end -= 1
    assert found["function:search.engine.packing.pack_size"] == end - start
    assert found["params:search.engine.packing.pack_size"] == 4  # pack, remaining, slots, mean_s


# ---------------------------------------------------------------- the rules catch offenders
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent != tmp_path and not (path.parent / "__init__.py").exists():
            (path.parent / "__init__.py").write_text("")
        path.write_text(text)
    return tmp_path


def test_an_upward_import_is_caught_even_inside_a_function(tmp_path):
    root = _tree(tmp_path, {"spaces/space.py": "def f():\n    from fusion_ops.model import FusionModel\n",
                            "fusion_ops/model.py": "from search import api\n", "search/api.py": ""})
    assert upward_imports(root) == ["spaces/space.py:2 imports fusion_ops.model", "fusion_ops/model.py:1 imports search.api"]


def test_a_loop_between_two_parts_of_search_is_caught(tmp_path):
    root = _tree(tmp_path, {"search/config.py": "from search.engine.packing import AUTO\n",
                            "search/engine/packing.py": "AUTO = 1\n",
                            "search/engine/run.py": "def f():\n    from search import config\n",
                            "search/report/page.py": "from search.config import x\n"})
    assert search_loops(root) == [["search.config", "search.engine"]]


def test_a_private_name_or_module_from_another_part_is_caught(tmp_path):
    root = _tree(tmp_path, {
        "search/strategies/_pools.py": "class CellTable: ...\n",
        "search/strategies/mfas.py": "from search.strategies._pools import CellTable\n",  # same part: fine
        "search/oneshot/paths.py": "from search.strategies._pools import CellTable\n",
        "search/training/train.py": "def _adam(): ...\n",
        "search/oneshot/train.py": "from search.training.train import _adam\n",
        "search/engine/cluster.py": "from ray._private import state\nfrom ray._private.x import y\n",
        "experiments/bench.py": "from search.engine.run import _backbone_cost\n",
    })
    assert private_imports(root) == [
        "search/engine/cluster.py:1 imports ray._private (private)",  # only the allowed module of the allowed file
        "search/engine/cluster.py:2 imports ray._private.x (private)",
        "search/oneshot/paths.py:1 imports search.strategies._pools.CellTable from another part",
        "search/oneshot/train.py:1 imports search.training.train._adam from another part",
        "experiments/bench.py:1 imports search.engine.run._backbone_cost from another part",
    ]


def test_ray_outside_the_engine_is_caught(tmp_path):
    root = _tree(tmp_path, {"search/engine/tune.py": "import ray\n",
                            "search/api.py": "def f():\n    from ray import tune\n"})
    assert ray_importers(root) == ["search/api.py:2"]


def test_a_long_file_function_or_parameter_list_is_caught_and_a_stale_entry_too(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    root = _tree(tmp_path, {"search/big.py": "\n" * 401,
                            "search/run.py": f"def long():\n{body}\n\n\nclass A:\n"
                                             "    def many(self, a, b, c, d, e, f, g, h, *i): ...\n"})
    assert size_breaches(root, {"file:search/run.py": 10}) == [
        "file:search/big.py is 401 (limit 400)",
        "function:search.run.long is 62 (limit 60)",
        "params:search.run.A.many is 9 (limit 8)",
        "file:search/run.py: 66 is within its limit now; take it out of OVER",
    ]
    assert size_breaches(root, {"file:search/big.py": 401, "function:search.run.long": 62,
                                "params:search.run.A.many": 9}) == []
    assert size_breaches(root, {"file:search/big.py": 400 + 0, "function:search.run.long": 61,
                                "params:search.run.A.many": 9})[:1] == ["file:search/big.py is 401 (limit 400)"]


@pytest.mark.parametrize("rule", [upward_imports, search_loops, private_imports, ray_importers])
def test_a_clean_tree_passes_every_rule(tmp_path, rule):
    root = _tree(tmp_path, {"search/engine/tune.py": "import ray\nfrom search.config import x\n",
                            "search/config.py": "from fusion_ops import model\n",
                            "fusion_ops/model.py": "from spaces.spec import ArchSpec\n", "spaces/spec.py": ""})
    assert rule(root) == []
