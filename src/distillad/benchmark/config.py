"""``BenchmarkConfig``: what one benchmark runs (the flags of ``distillad benchmark``), with its
defaults and checks, and the keywords each model is built with."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..registry import list_models, model_class
from ..settings import parse_epochs
from .measure import FULL_TIMING, QUICK_TIMING

__all__ = ["BenchmarkConfig", "DEFAULT_TEACHER", "synthesizes"]

DEFAULT_TEACHER = "efficientnet_lite0"


def synthesizes(model: str) -> bool:
    """Whether ``model`` trains on synthetic defects (its class declares the paper's synthesis)."""
    return bool(getattr(model_class(model), "synthesis", None))


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """What a benchmark runs; ``resolved()`` fills in the defaults and checks it.

    ``categories``: specs relative to ``data`` (``mvtec_ad/bottle``, ``magnetic_tile``, ``.``); None:
    every category found under ``data``. ``seeds``: a count (seeds 0..n-1) or a list (default 3,
    ``quick`` 1). ``model_kwargs``: ``{model: {keyword: value}}``, key ``"*"`` for every model;
    ``teacher`` and ``teacher_weights`` are passed to every model unless a model's keywords set them.
    ``quick``: CI budget (1 epoch, 1 seed, 64 px, batch 8 unless given; fewer timing repeats;
    generated demo data when no data is given or found). ``threads``: torch CPU threads for the
    whole benchmark (default: torch's default; recorded with the machine). ``report_only``: train
    nothing; aggregate the runs already finished and measured (e.g. by benchmarks run in parallel).
    ``timing``: (warm-up calls, repeats at batch 1, repeats at batch 16); default by ``quick``.
    ``shard``: (i, n): run only part i of n of the grid (``runner.shard_plan``), for n independent
    workers writing into one ``out``; they write no results.json (``report_only`` merges them).
    ``textures``: texture folder (DTD's ``images/``) for the methods that train on synthetic defects
    (``api.train(textures=...)``); None: the synthesis fallback (procedural noise), said in results.md.
    """

    models: Sequence[str] = ("rd", "stfpm", "patchcore")  # patchcore: the memory-bank reference, same teacher
    data: str | Path | None = None
    categories: Sequence[str] | None = None
    seeds: int | Sequence[int] | None = None
    epochs: int | None = None
    out: str | Path = "runs/benchmark"
    image_size: int | None = None
    batch_size: int | None = None
    model_kwargs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    quick: bool = False
    device: str = "auto"
    progress: bool | None = None
    teacher: str | None = DEFAULT_TEACHER
    teacher_weights: str | None = None
    image_size_for: dict[str, int] = dataclasses.field(default_factory=dict)
    plots: bool = True
    threads: int | None = None
    report_only: bool = False
    timing: tuple[int, int, int] | None = None
    shard: tuple[int, int] | None = None
    textures: str | Path | None = None

    def resolved(self) -> BenchmarkConfig:
        """A copy with the defaults applied (models a list, seeds a list, epochs, image size, batch
        size and timing set); ConfigError for what no benchmark can run."""

        models = list(self.models)
        known = list_models()
        bad = [m for m in models if m not in known]
        if not models:
            raise ConfigError("no models given")
        if bad:
            raise ConfigError(f"unknown model(s) {', '.join(bad)}; available: {', '.join(known)}")
        if len(set(models)) != len(models):
            raise ConfigError(f"a model is listed twice: {models}")
        unknown = set(self.model_kwargs or {}) - set(models) - {"*"}
        if unknown:
            raise ConfigError(f"model keywords given for models not benchmarked: {', '.join(sorted(unknown))}")
        if self.epochs is None and not self.quick:
            raise ConfigError("pass --epochs N: every method is trained for the same number of epochs "
                              "(see the protocol in the README)")
        epochs = 1 if self.epochs is None else parse_epochs(self.epochs)  # a number, or "auto" (early stopping)
        seeds = (1 if self.quick else 3) if self.seeds is None else self.seeds
        seed_list = list(range(int(seeds))) if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]
        if not seed_list:
            raise ConfigError(f"seeds must be >= 1, got {seeds}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.shard is not None:
            i, n = self.shard
            if not (n >= 1 and 0 <= i < n):
                raise ConfigError(f"shard {i}/{n}: expected I/N with N >= 1 and 0 <= I < N (e.g. 0/4)")
            if self.report_only:
                raise ConfigError("--report-only merges every shard's runs: give it without --shard")
        textures = None if self.textures is None else str(Path(self.textures).resolve())
        if textures is not None and not Path(textures).is_dir():
            raise ConfigError(f"--textures {self.textures}: no such folder (give DTD's images/ folder)")
        return dataclasses.replace(
            self, models=models, textures=textures, seeds=seed_list, epochs=epochs,
            image_size=(64 if self.quick else 256) if self.image_size is None else int(self.image_size),
            batch_size=8 if self.batch_size is None and self.quick else self.batch_size,
            model_kwargs=dict(self.model_kwargs or {}), image_size_for=dict(self.image_size_for or {}),
            timing=self.timing or (QUICK_TIMING if self.quick else FULL_TIMING))

    def textures_for(self, model: str) -> str | None:
        """The texture folder ``model`` trains with: ``textures`` for a method with synthesis, else None."""
        return self.textures if self.textures is not None and synthesizes(model) else None  # type: ignore[return-value]

    def keywords_for(self, model: str) -> dict[str, Any]:
        """The keywords ``model`` is built with: teacher, teacher weights, then ``"*"``, then its own."""
        kw: dict[str, Any] = {}
        if self.teacher is not None:
            kw["teacher"] = self.teacher
        if self.teacher_weights is not None:
            kw["teacher_weights"] = self.teacher_weights
        given = self.model_kwargs or {}
        return {**kw, **given.get("*", {}), **given.get(model, {})}
