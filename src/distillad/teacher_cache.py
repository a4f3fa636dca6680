"""The frozen teacher's features of the training images, computed once per run instead of every epoch.

A phase that trains on the plain good images (rd, stfpm, rd_var, dskd; not the synthetic-defect
phases, whose images change every pass) shows the frozen teacher the same unaugmented tensors in every
epoch, so its features are the same every epoch too. ``build`` computes them once, in the order of
the dataset, and ``CachedTeacherSet`` hands each item its features beside its image; during the loss
``Teacher.serve`` returns them for exactly that batch tensor (identity, not equality), so a method that
shows the teacher anything else (a crop, a concatenation) gets its features computed as before. No
method code changes: the same runner on the same images, so the losses and weights equal the recomputed
path's to float rounding (bit for bit at one thread, ``tests/test_teacher_cache.py``; with several threads a
convolution's rounding may depend on the batch it ran in). Whether a run uses the cache depends on its whole
plan, so a resumed run sees the features the uninterrupted one saw, and resumes bit for bit.

Memory is bounded: the cache is kept in memory only when it fits ``DISTILLAD_TEACHER_CACHE_MB``
(default 4096 MB; 0 turns it off), else the run recomputes the features, as before, and says so.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate

from .errors import ConfigError

__all__ = ["ENV", "DEFAULT_LIMIT_MB", "CachedTeacherSet", "limit_bytes", "build", "batch_features", "KEY"]

ENV, DEFAULT_LIMIT_MB = "DISTILLAD_TEACHER_CACHE_MB", 4096
KEY = "teacher_feats"  # the batch key the features travel under (the engine takes it out before the loss)
log = logging.getLogger("distillad")


def limit_bytes() -> int:
    """The cache's memory limit from ``$DISTILLAD_TEACHER_CACHE_MB`` (MB; 0 = no cache)."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_LIMIT_MB * 2**20
    try:
        mb = float(raw)
    except ValueError:
        raise ConfigError(f"${ENV}={raw!r}: expected a number of megabytes (0 turns the teacher cache off)") from None
    if not mb >= 0:
        raise ConfigError(f"${ENV}={raw!r}: must be >= 0 megabytes")
    return int(mb * 2**20)


class CachedTeacherSet(Dataset):
    """``base``'s items plus ``teacher_feats``: the list of the teacher's stage features of that item."""

    def __init__(self, base: Dataset, feats: list[torch.Tensor]) -> None:
        self.base, self.feats = base, feats
        #: the teacher gives channels_last features; a collated batch is made so again (``batch_features``)
        self.channels_last = [f.dim() == 4 and f.is_contiguous(memory_format=torch.channels_last)
                              and not f.is_contiguous() for f in feats]

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.base[i], KEY: [f[i] for f in self.feats]}


def batch_features(data: Dataset, batch: dict[str, Any]) -> list[torch.Tensor] | None:
    """Take the collated teacher features out of ``batch`` (None when ``data`` carries none), laid out as
    the teacher lays them out, so the student's kernels see what they would see recomputed."""
    feats = batch.pop(KEY, None)
    if feats is None or not isinstance(data, CachedTeacherSet):
        return None
    return [f.contiguous(memory_format=torch.channels_last) if cl else f for f, cl in zip(feats, data.channels_last)]


@torch.no_grad()
def build(teacher: torch.nn.Module, data: Dataset, batch_size: int, device: torch.device,
          autocast_ctx: Any, limit: int | None = None) -> CachedTeacherSet | None:
    """``data`` with its teacher features attached, or None when they would exceed ``limit`` bytes
    (default ``limit_bytes()``). Features keep the dtype and memory layout the teacher gives them."""
    limit = limit_bytes() if limit is None else limit
    n = len(data)  # type: ignore[arg-type]
    if limit <= 0 or n == 0:
        return None
    first = data[0]["image"].unsqueeze(0).to(device)
    with autocast_ctx():
        probe = teacher(first)
    need = n * sum(f.numel() * f.element_size() for f in probe)
    if need > limit:
        log.info("teacher cache off: %d images need %.0f MB, over the %.0f MB limit ($%s); the features are "
                 "recomputed every epoch", n, need / 2**20, limit / 2**20, ENV)
        return None
    parts: list[list[torch.Tensor]] = [[] for _ in probe]
    for start in range(0, n, batch_size):
        batch = default_collate([data[i] for i in range(start, min(n, start + batch_size))])
        with autocast_ctx():
            out = teacher(batch["image"].to(device))
        for p, f in zip(parts, out):
            p.append(f)
    return CachedTeacherSet(data, [torch.cat(p) for p in parts])
