"""Shared by tests/hardening: tiny-run settings and a folder fingerprint."""

from __future__ import annotations

import hashlib
from pathlib import Path

TINY = dict(epochs=1, batch_size=4, image_size=32, teacher_weights="random", progress=False)
#: the same run on the command line
TINY_FLAGS = ["--epochs", "1", "--batch-size", "4", "--image-size", "32", "--teacher-weights", "random"]


def fingerprint(folder: Path) -> dict[str, str]:
    """Relative path → SHA-256 (or "<dir>") of everything under ``folder``."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out
