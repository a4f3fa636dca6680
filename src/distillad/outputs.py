"""Guards for the files commands write: never over a run's or an input's files, writable before work starts.

Every command that writes outside its run folder (``predict``, ``export``) checks its ``--out`` with
these before loading a model, so a bad path costs a one-line error, not minutes of compute.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import OutputError

__all__ = ["is_within", "check_writable", "ensure_folder", "write_failed", "first_existing_parent"]


def is_within(path: str | Path, folder: str | Path) -> bool:
    """True when ``path`` is ``folder`` or lies inside it (both resolved, symlinks followed)."""
    p, f = Path(path).resolve(), Path(folder).resolve()
    return p == f or f in p.parents


def first_existing_parent(path: str | Path) -> Path:
    """The nearest folder above ``path`` (or ``path`` itself) that exists: where a write would start."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable(folder: str | Path, flag: str = "--out") -> None:
    """Create and delete a probe file in ``folder`` (which exists); a one-line OutputError when that fails."""
    folder = Path(folder)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".distillad-probe.", dir=folder)
        try:
            os.write(fd, b"0")
            os.fsync(fd)
        finally:
            os.close(fd)
            Path(tmp).unlink(missing_ok=True)
    except OSError as e:
        raise write_failed(folder, e, flag) from None


def ensure_folder(folder: str | Path, flag: str = "--out") -> None:
    """Create ``folder`` (and its parents) if needed, then ``check_writable`` it."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_failed(folder, e, flag) from None
    check_writable(folder, flag)


def write_failed(path: str | Path, e: OSError, flag: str = "--out") -> OutputError:
    """The one-line error for a failed write: names the path and says disk full / read-only / denied
    (``flag``: the option that named it, or "" for a file the command chose itself)."""
    why = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
           errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
           errno.EPERM: "operation not permitted"}.get(e.errno or -1, e.strerror or str(e))
    hint = ("; nothing was replaced (an earlier version of the file is kept): free some space and run again"
            if e.errno in (errno.ENOSPC, errno.EDQUOT) else "")
    return OutputError(f"{flag + ' ' if flag else ''}{path}: cannot write ({why}){hint}")


def cache_root() -> Path:
    """Where distillad keeps what it can recompute (converted datasets, foreground masks): env
    ``DISTILLAD_CACHE``, else ``~/.cache/distillad``."""
    return Path(os.environ.get("DISTILLAD_CACHE") or "~/.cache/distillad").expanduser()
