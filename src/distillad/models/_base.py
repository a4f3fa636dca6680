"""What every distillation model shares: the training/inference contract and its defaults.

A method subclasses ``DistillationModel``, builds its networks in ``__init__`` and implements
``forward`` (→ teacher_feats, student_feats), ``loss`` and ``anomaly_map``; ``predict`` blurs
the map and takes the image score. Training is declared, not written: ``phases()`` lists what
is trained, how and when (``distillad.phases``), and ``engine.fit`` runs it. A method that
learns from synthetic defects declares a phase with ``data="synthetic"`` and its paper's
``synthesis`` settings; the texture folder and foreground method are the user's data settings,
so a method does no file I/O. Checkpoint I/O lives in ``checkpoint``.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from ..maps import Combine, combine_maps, gaussian_blur, max_score, smooth_combined
from ..outputs import cache_root
from ..phases import Phase
from ..registry import bind_model_kwargs, check_bounds, check_choices, registered_name
from ..synthesis import SyntheticAnomalyDataset
from ..teachers import Teacher

__all__ = ["DistillationModel"]


class DistillationModel(nn.Module):
    """Base class: a frozen ``self.teacher`` plus trainable students; images in [0, 1].

    Every instance records its constructor's keywords with defaults applied (``model_kwargs``)
    and its registry name (``model_name``), however it was built, so any model can be
    checkpointed and rebuilt exactly; keywords hinted ``Literal[...]`` and the
    bounded types of ``distillad.hints`` are validated here.
    During a training phase ``self.training`` is True on the model itself while its frozen
    submodules are in eval mode, so a method may test it for training-only behaviour.
    """

    #: training settings of the paper, used by the engine unless the user overrides them
    train_defaults: dict[str, Any] = {"epochs": 200, "batch_size": 16, "image_size": 256}
    #: the paper's anomaly synthesis (``SyntheticAnomalyDataset`` keywords, e.g. ``PAPER_PRESETS``);
    #: used by phases with ``data="synthetic"``; ``foreground`` here is only the default
    synthesis: dict[str, Any] = {}

    #: ``predict`` fuses upsampling, combination and blur (see ``predict``); ``export`` turns it off, since
    #: OpenVINO on bf16-capable CPUs would run the fused matmuls in bf16 (its default precision hint)
    fused_map_stage: bool = True
    teacher: Teacher
    model_name: str | None
    model_kwargs: dict[str, Any] | None

    def __new__(cls, *args: Any, **kwargs: Any) -> "DistillationModel":
        self = super().__new__(cls)
        try:
            full = bind_model_kwargs(cls, args, kwargs)
        except TypeError:  # __init__ raises the proper error
            full = None
        if full is not None:
            check_choices(cls, full)  # every Literal-hinted mode, validated once for all methods
            check_bounds(cls, full)  # finite floats, and the ranges of distillad.hints types
        object.__setattr__(self, "model_kwargs", full)
        object.__setattr__(self, "model_name", registered_name(cls))
        return self

    def __init__(self, lr: float, betas: tuple[float, float], sigma: float = 4.0) -> None:
        super().__init__()
        self.lr = lr
        self.betas = tuple(betas)
        self.sigma = sigma

    # -- to implement ---------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training losses of one batch; key ``loss`` is the total that is back-propagated."""
        raise NotImplementedError

    def map_parts(self, images: torch.Tensor) -> tuple[list[torch.Tensor], Combine]:
        """Per-stage maps at their own resolution [(B,1,h_k,w_k)] and how they combine, for a method whose
        map is such a combination (then ``anomaly_map`` and the fused ``predict`` come from it)."""
        raise NotImplementedError

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        """Unsmoothed anomaly map at input resolution: (B,3,H,W) → (B,1,H,W)."""
        maps, mode = self.map_parts(images)
        return combine_maps(maps, images.shape[-2:], mode)

    # -- training contract ------------------------------------------------------------
    def student_modules(self) -> tuple[str, ...]:
        """Names of the direct submodules outside the teacher: what the default phase trains."""
        return tuple(n for n, m in self.named_children() if n != "teacher" and any(True for _ in m.parameters()))

    def phases(self) -> list[Phase]:
        """The training schedule; default: one joint phase training every student module with ``loss``."""
        return [Phase("train", self.student_modules())]

    @property
    def needs_synthesis(self) -> bool:
        """True when some phase trains on synthetic (normal, anomalous, mask) triplets."""
        return any(p.data == "synthetic" for p in self.phases())

    def synthetic_train_set(self, base: Dataset, textures: Any = None, foreground: str | None = None,
                            seed: int = 0) -> Dataset:
        """Wrap the normal training set so that items carry ``anomalous`` and ``mask`` (the paper's synthesis).

        ``textures`` (a folder, a ``TextureSource`` or None) and ``foreground`` (None: the paper's) are
        the run's data settings. Foreground masks are cached in ``cache_root()/foregrounds``, keyed by
        the image file's SHA-256, the method and the size, so the next run on the same images skips GrabCut."""
        kw = dict(self.synthesis)
        fg = foreground if foreground is not None else kw.pop("foreground", "none")
        kw.pop("foreground", None)
        kw.setdefault("cache_dir", cache_root() / "foregrounds")
        return SyntheticAnomalyDataset(base, textures=textures, foreground=fg, seed=seed, **kw)

    def build_optimizer(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        """Adam with the paper's lr and betas (RD4AD: 0.005, (0.5, 0.999)); ``params``: parameters or groups."""
        return torch.optim.Adam(params, lr=self.lr, betas=self.betas)

    # -- shared ---------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B,3,H,W) in [0,1] → (maps (B,1,H,W) blurred with σ, scores (B,) = max), in fp32.

        When the method declares ``map_parts``, upsampling, combination and blur run fused on the stage
        maps (``maps.smooth_combined``); ``predict_reference`` is the plain path it is tested against."""
        if type(self).map_parts is DistillationModel.map_parts or not self.fused_map_stage:
            return self.predict_reference(images)
        parts, mode = self.map_parts(images)
        maps = smooth_combined(parts, images.shape[-2:], mode, self.sigma)
        return maps, max_score(maps)

    @torch.no_grad()
    def predict_reference(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``predict`` the plain way: full-resolution ``anomaly_map``, then ``gaussian_blur``, then the max."""
        maps = gaussian_blur(self.anomaly_map(images), self.sigma)
        return maps, max_score(maps)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter outside the teacher (the teacher's are frozen)."""
        for name, p in self.named_parameters():
            if not name.startswith("teacher."):
                yield p

    def student_state_dict(self) -> dict[str, torch.Tensor]:
        """State to checkpoint: everything but the teacher, which is rebuilt from its verified weights."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}
