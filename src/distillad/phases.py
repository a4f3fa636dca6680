"""Training phases: what a method trains, with which optimiser and loss, on which data, and when.

A method declares ``phases()``; ``engine.fit`` runs them. Everything a phase does not train is
frozen (no gradient) *and* in eval mode, so frozen BatchNorm statistics do not move. Schedules:

- ``"joint"``: one pass over the data in each of the run's epochs (single-phase methods: one
  joint phase that trains every module but the teacher);
- ``"each_epoch"``: ``epochs`` passes after every epoch of the phase named by ``after`` (DMDD's
  segmentation network, "trained at the end of each epoch with teacher and student frozen");
- ``"after"``: ``epochs`` epochs once the phase named by ``after`` has finished (DSKD-fusion's
  fusion network, students frozen);
- ``"once"``: one pass before everything else, whatever the run's epochs (a memory bank's fit).

A phase with ``gradient=False`` fits by statistics, not by descent (PatchCore's memory bank): no
optimiser; its method maps a batch to outputs under ``torch.no_grad``, the 0-dim ones are logged, the
others are concatenated over the pass and handed to the model method named by ``finish``.

``plan`` unrolls a declaration into a list of steps, one pass over the data each; a step's
index seeds its shuffling and synthesis, so a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, Sequence

import torch
import torch.nn as nn

from .errors import ConfigError

__all__ = ["Phase", "Step", "plan", "validate_phases", "param_groups", "SCHEDULES", "DATA_KINDS"]

SCHEDULES = ("joint", "each_epoch", "after", "once")
DATA_KINDS = ("normal", "synthetic")


@dataclass(frozen=True)
class Phase:
    """One training phase.

    ``modules``: attribute paths of the submodules this phase trains (``"decoder"``, ``"seg.head"``).
    ``loss``: name of the model method that maps a batch to a dict of losses; key ``loss`` is the total.
    ``optimizer``: factory taking parameter groups (None: the model's ``build_optimizer``).
    ``lr``: per-module learning rates, {module path: lr}, overriding the optimiser's default.
    ``data``: ``"normal"`` images, or ``"synthetic"`` (image, anomalous, mask) triplets.
    ``batch_size``: None = the run's.
    ``gradient``: False for a phase fitted by statistics (no optimiser, no backward; see the module doc);
    ``finish``: name of the model method called with the pass's concatenated outputs (``gradient=False`` only).
    """

    name: str
    modules: tuple[str, ...]
    loss: str = "loss"
    optimizer: Callable[[list[dict]], torch.optim.Optimizer] | None = None
    lr: Mapping[str, float] = field(default_factory=dict)
    data: Literal["normal", "synthetic"] = "normal"
    schedule: Literal["joint", "each_epoch", "after", "once"] = "joint"
    after: str | None = None
    epochs: int = 1
    batch_size: int | None = None
    gradient: bool = True
    finish: str | None = None


@dataclass(frozen=True)
class Step:
    """One pass over a phase's data: ``index`` in the whole run, ``epoch`` (0-based) of ``total`` for the phase."""

    index: int
    phase: Phase
    epoch: int
    total: int


def validate_phases(model: nn.Module, phases: Sequence[Phase]) -> None:
    """Raise ``ConfigError`` naming the phase and the problem: unknown modules or schedules, the teacher
    trained, a loss the model lacks, an ``after`` that names no earlier phase."""
    if not phases:
        raise ConfigError(f"{type(model).__name__}: phases() declares no phase")
    seen: dict[str, Phase] = {}
    for ph in phases:
        where = f"{type(model).__name__} phase {ph.name!r}"
        if ph.name in seen:
            raise ConfigError(f"{where}: declared twice")
        if ph.schedule not in SCHEDULES:
            raise ConfigError(f"{where}: schedule must be one of {SCHEDULES}, got {ph.schedule!r}")
        if ph.data not in DATA_KINDS:
            raise ConfigError(f"{where}: data must be one of {DATA_KINDS}, got {ph.data!r}")
        if not ph.modules:
            raise ConfigError(f"{where}: trains no module")
        for m in ph.modules:
            if m == "teacher" or m.startswith("teacher."):
                raise ConfigError(f"{where}: the teacher is frozen and cannot be trained")
            try:
                model.get_submodule(m)
            except AttributeError:
                raise ConfigError(f"{where}: the model has no module {m!r}") from None
        for m in ph.lr:
            if m not in ph.modules:
                raise ConfigError(f"{where}: learning rate given for {m!r}, which the phase does not train")
        if not callable(getattr(model, ph.loss, None)):
            raise ConfigError(f"{where}: the model has no loss method {ph.loss!r}")
        if ph.finish is not None and (ph.gradient or not callable(getattr(model, ph.finish, None))):
            raise ConfigError(f"{where}: 'finish' names a model method, for a phase with gradient=False only")
        if ph.schedule in ("joint", "once"):
            if ph.after is not None:
                raise ConfigError(f"{where}: a {ph.schedule} phase follows no phase")
        else:
            if ph.after not in seen:
                raise ConfigError(f"{where}: 'after' must name a phase declared before it, got {ph.after!r}")
            if ph.schedule == "each_epoch" and seen[ph.after].schedule != "joint":
                raise ConfigError(f"{where}: 'each_epoch' must follow a joint phase, {ph.after!r} is not")
            if ph.epochs < 1:
                raise ConfigError(f"{where}: epochs must be >= 1, got {ph.epochs}")
        if ph.batch_size is not None and ph.batch_size < 1:
            raise ConfigError(f"{where}: batch_size must be >= 1, got {ph.batch_size}")
        seen[ph.name] = ph
    if not any(ph.schedule in ("joint", "once") for ph in phases):
        raise ConfigError(f"{type(model).__name__}: needs at least one joint or once phase")


def plan(phases: Sequence[Phase], epochs: int) -> list[Step]:
    """Unroll the schedule for a run of ``epochs`` epochs into its steps, in the order they run."""
    joint = [p for p in phases if p.schedule == "joint"]
    each = [p for p in phases if p.schedule == "each_epoch"]
    order: list[tuple[Phase, int, int]] = [(p, 0, 1) for p in phases if p.schedule == "once"]
    for e in range(epochs):
        for p in joint:
            order.append((p, e, epochs))
            for q in each:
                if q.after == p.name:
                    order += [(q, e * q.epochs + j, epochs * q.epochs) for j in range(q.epochs)]
    for p in phases:
        if p.schedule == "after":
            order += [(p, e, p.epochs) for e in range(p.epochs)]
    return [Step(i, p, e, n) for i, (p, e, n) in enumerate(order)]


def param_groups(model: nn.Module, phase: Phase, trainable: Mapping[int, bool]) -> list[dict]:
    """Optimiser parameter groups of a phase: one per module, with its own ``lr`` when given.

    ``trainable``: id(parameter) → requires_grad before training (parameters a method froze itself stay out).
    A phase with ``gradient=False`` has none (and no optimiser).
    """
    if not phase.gradient:
        return []
    groups, seen = [], set()
    for m in phase.modules:
        params = [p for p in model.get_submodule(m).parameters() if trainable.get(id(p)) and id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            groups.append({"params": params, **({"lr": phase.lr[m]} if m in phase.lr else {})})
    if not groups:
        raise ConfigError(f"phase {phase.name!r}: its modules {phase.modules} have no trainable parameter")
    return groups
