"""Progress bars that suit where they are written: a live bar with ETA on a terminal; on anything else
(CI logs, ``nohup`` files) a line at most every ``$DISTILLAD_PROGRESS_INTERVAL`` seconds (default 30),
never one per update. ``DISTILLAD_PROGRESS=0`` (or ``--quiet`` where offered) turns them off."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["bar", "log_interval"]


def log_interval() -> float:
    """Seconds between two updates of a bar written to a non-terminal."""
    try:
        return max(0.0, float(os.environ.get("DISTILLAD_PROGRESS_INTERVAL", "30")))
    except ValueError:
        return 30.0


def bar(iterable: Any = None, **kw: Any) -> tqdm:
    """``tqdm(iterable, **kw)``, throttled to one line per ``log_interval()`` when stderr is not a terminal."""
    stream = kw.get("file") or sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        kw.setdefault("mininterval", log_interval())
        kw.setdefault("maxinterval", max(log_interval(), 10.0))
        kw["dynamic_ncols"] = False
        kw.setdefault("ncols", 100)
    return tqdm(iterable, **kw)
