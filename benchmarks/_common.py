"""Helpers the benchmark scripts share: the command line a results file records (the "Reproduce" line every
results file ends with), the markdown writer, and markdown tables."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["PYTHON", "command_line", "md_row", "md_table", "reproduce_line", "write_md"]

#: how the commands are written unless a script says otherwise (e.g. "PYTHONPATH=src .venv/bin/python")
PYTHON = "PYTHONPATH=src python"


def command_line(argv: Sequence[str], python: str = PYTHON) -> str:
    """``PYTHONPATH=src python benchmarks/x.py ARGS`` from the script's own argv (``argv[0]``: the script's path,
    as ``sys.argv[0]`` or ``__file__``); the arguments shell-quoted where they need it."""
    script = Path(argv[0])
    rel = f"benchmarks/{script.name}" if script.resolve().parent.name == "benchmarks" else str(script)
    return " ".join([python, shlex.quote(rel), *(shlex.quote(a) for a in argv[1:])])


def reproduce_line(argv: Sequence[str], python: str = PYTHON) -> str:
    """``Reproduce: `PYTHONPATH=src python benchmarks/x.py ...` `` from the script's own argv."""
    return f"Reproduce: `{command_line(argv, python)}`"


def write_md(path: str | Path | None, lines: list[str], argv: Sequence[str], python: str = PYTHON) -> str:
    """The table lines plus the reproduce line, printed, and written to ``path`` when given."""
    text = "\n".join([*lines, "", reproduce_line(argv, python)]) + "\n"
    print(text, end="")
    if path:
        Path(path).write_text(text)
    return text


def md_row(cells: Iterable[object]) -> str:
    """``| a | b |``: one markdown table row (cells as ``str`` gives them)."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def md_table(header: Sequence[object], rows: Iterable[Iterable[object]] = ()) -> list[str]:
    """A markdown table's lines: the header row, the ``|---|`` rule, then one line per row."""
    return [md_row(header), "|" + "---|" * len(header), *(md_row(r) for r in rows)]
