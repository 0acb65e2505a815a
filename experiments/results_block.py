"""Shared by the benchmarks: the machine line and the generated block each one owns in
`experiments/RESULTS.md` (between `<!-- NAME:begin -->` and `<!-- NAME:end -->`)."""
from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine_line() -> str:
    return (f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"python {platform.python_version()}")


def command_line(script: str, argv: list[str] | None, python: str = ".venv/bin/python") -> str:
    """The command that reproduces a benchmark run: `python experiments/<script> ARGS` (ARGS: `argv`,
    or this process's own arguments when `argv` is None)."""
    return " ".join([python, f"experiments/{script}", *(argv if argv is not None else sys.argv[1:])])


def write_block(name: str, section: str, lines: list[str], command: str, path: Path = RESULTS) -> None:
    """Replace benchmark `name`'s block, or append it under `## {section}` if it is missing."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = "\n".join([begin, f"Command: `{command}`", "", *lines, end])
    text = path.read_text() if path.exists() else "# Results\n"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + f"\n\n## {section}\n\n" + block + "\n"
    path.write_text(text)
