"""`spaces/` must work where torch is not installed: import it with torch blocked."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# `sys.modules['torch'] = None` makes any `import torch` raise ImportError.
SCRIPT = """
import sys
sys.modules["torch"] = None
import importlib, pkgutil, random
import spaces, spaces.space, spaces.spec, spaces.args, spaces.encode
for info in pkgutil.iter_modules(spaces.__path__):
    importlib.import_module("spaces." + info.name)
from spaces.args import Arg
from spaces.space import SearchSpace
cat = {"concat": (), "low_rank": (Arg("rank", "int", 4, low=1, high=64),)}
s = SearchSpace.from_dict({"ops": {"concat": {}, "low_rank": {"rank": [2, 4]}}},
                          catalogue=cat, depths={"a": [0, 1, 2], "b": [0, 1]})
rng = random.Random(0)
x = s.sample(rng)
s.validate(s.mutate(x, rng))
assert s.encode(x).shape == (s.encode_length,)
assert sys.modules["torch"] is None
print("ok", x.arch_id)
"""


def test_spaces_import_and_work_without_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")


def test_the_torch_block_really_blocks() -> None:
    """Guard against a test that cannot fail: the same block stops `import torch`."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['torch'] = None; import torch"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0 and "import of torch halted" in done.stderr
