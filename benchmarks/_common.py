"""Helpers the benchmark scripts share: the "Reproduce" line every results file ends with."""

from __future__ import annotations

import shlex
from pathlib import Path

__all__ = ["reproduce_line", "write_md"]


def reproduce_line(argv: list[str]) -> str:
    """``Reproduce: `PYTHONPATH=src python benchmarks/x.py ...` `` from the script's own argv."""
    script = Path(argv[0])
    rel = f"benchmarks/{script.name}" if script.parent.name == "benchmarks" else str(script)
    return f"Reproduce: `PYTHONPATH=src python {rel} {' '.join(shlex.quote(a) for a in argv[1:])}`"


def write_md(path: str | None, lines: list[str], argv: list[str]) -> str:
    """The table lines plus the reproduce line, printed, and written to ``path`` when given."""
    text = "\n".join([*lines, "", reproduce_line(argv)]) + "\n"
    print(text, end="")
    if path:
        Path(path).write_text(text)
    return text
