"""What ``train`` says before it starts: the data it found, the model it builds, and an estimate of the time.

One compact block (``Preamble.text``): layout, training/validation counts, image sizes, the model input
and resize mode, teacher, phases, the test folders that will be read as defect classes, and the time
estimated from one timed batch per phase. Its warnings name what is likely wrong *now*, not at
``test``: a good-images folder that would be read as a defect class (``test/0``, ``test/ok``), a test
split that cannot be read, images stretched by ``squash``. The probe changes nothing: no optimiser
step, gradients cleared, BatchNorm buffers restored (each training step reseeds its own randomness).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch.utils.data import Dataset, default_collate

from .data import load_samples
from .data.io import read_size
from .data.layout import detect_layout, test_folders
from .data.resize import SQUASH_WARN_ASPECT
from .engine import _enter_phase
from .errors import DistilladError
from .phases import plan

__all__ = ["Preamble", "GOOD_LIKE", "describe_run", "time_one_batch", "image_sizes"]

#: folder names that usually hold good images; such a folder read as a defect class is warned about
GOOD_LIKE = re.compile(r"^(0|ok|okay|normal|nominal|good.*|.*[_-]good|free|defect[_-]?free|no[_-]?defects?|"
                       r"non[_-]?defective|pass(ed)?|negative|clean)$", re.IGNORECASE)


@dataclass
class Preamble:
    """The block ``train`` prints: info ``lines`` and ``warnings`` (each one line)."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join([*self.lines, *(f"  warning: {w}" for w in self.warnings)])

    __str__ = text


def image_sizes(samples: Sequence[Any]) -> list[tuple[int, int]]:
    """(width, height) of every sample's image, from the file headers (no decoding)."""
    return [read_size(s.image) for s in samples]


def _fmt_seconds(s: float) -> str:
    return "< 1 s" if s < 1 else f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def _sizes_line(sizes: Sequence[tuple[int, int]]) -> str:
    counts = Counter(sizes)
    if len(counts) == 1:
        (w, h), = counts
        return f"{w}×{h} px (all)"
    ws, hs = [w for w, _ in sizes], [h for _, h in sizes]
    return f"{len(counts)} sizes, width {min(ws)}–{max(ws)}, height {min(hs)}–{max(hs)} px"


def _test_lines(data: Any, category: str | None, layout: str | None, out: Preamble) -> None:
    """The test folders and how they will be read; a suspicious or unreadable test split is a warning."""
    try:
        folders = test_folders(data, category, layout)
    except DistilladError as e:
        out.warnings.append(f"cannot list the test folders: {e}")
        return
    if not folders:
        out.lines.append("  test split: none in this layout (`distillad test` needs a dataset with one)")
        return
    try:
        counts = Counter((s.label, s.defect.lower()) for s in load_samples(data, "test", category, layout))
    except DistilladError as e:
        out.warnings.append(f"the test split cannot be read, `distillad test` will fail: {e}")
        counts = Counter()

    def n(label: int, folder: str) -> str:  # images of a folder, as its samples name their defect
        name = "good" if label == 0 else (folder[3:] if folder.startswith("MT_") else folder).lower()
        return f" ({counts[(label, name)]})" if counts else ""
    good = [f"{f}{n(0, f)}" for f, lab in folders if lab == 0]
    bad = [f for f, lab in folders if lab == 1]
    shown = ", ".join(f"{f}{n(1, f)}" for f in bad) or "none"
    out.lines.append(f"  test folders: good = {', '.join(good) or 'none'}; read as defect classes = {shown}")
    for f in bad:
        if GOOD_LIKE.match(f):
            out.warnings.append(f"test folder {f!r} looks like good images but will be read as a defect class "
                                "(only 'good' is good in this layout); rename it to 'good' if it holds good images")


def describe_run(net: Any, data: Any, category: str | None, layout: str | None, n_train: int, n_val: int,
                 sizes: Sequence[tuple[int, int]], input_size: tuple[int, int], resize: str, epochs: int,
                 batch_sizes: Mapping[str, int], n_items: Mapping[str, int],
                 per_batch: Mapping[str, float] | None, device: str) -> Preamble:
    """The preamble of a run: ``n_items`` = images per phase's data kind, ``per_batch`` = seconds per
    batch of each phase (None: not measured), ``sizes`` = (width, height) of the training images."""
    out = Preamble()
    lay = layout or detect_layout(data, category)
    where = f"{Path(data)}" + (f" (category {category})" if category else "")
    out.lines.append(f"distillad train: {net.model_name} on {where}, layout {lay}"
                     + ("" if layout else " (detected)"))
    out.lines.append(f"  images: {n_train} training + {n_val} validation (good), {_sizes_line(sizes)}")
    t = net.teacher
    weights = "random weights" if t.weights_sha256 == "random" else f"weights {str(t.weights_sha256)[:12]}"
    out.lines.append(f"  model input: {input_size[1]}×{input_size[0]} px ({resize}); teacher {t.name} ({weights})")
    phases = net.phases()
    steps = plan(phases, epochs)
    desc = []
    for ph in phases:
        n = sum(1 for s in steps if s.phase.name == ph.name)
        when = {"joint": "every epoch", "each_epoch": f"after each {ph.after} epoch",
                "after": f"after {ph.after}", "once": "once, first"}[ph.schedule]
        desc.append(f"{ph.name} ({when}, {ph.data} images, {n} pass{'' if n == 1 else 'es'})")
    out.lines.append(f"  phases: {' → '.join(desc)}; {epochs} epochs")
    _test_lines(data, category, layout, out)
    if per_batch is not None:
        total = sum(-(-n_items[s.phase.data] // batch_sizes[s.phase.name]) * per_batch[s.phase.name] for s in steps)
        out.lines.append(f"  estimated training time: ~{_fmt_seconds(total)} on {device} (an estimate from one timed "
                         "batch per phase; data loading and validation not included)")
    stretch = {s: _stretch(s, input_size) for s in sizes} if resize != "pad" else {}
    stretched = [s for s in sizes if stretch[s] >= SQUASH_WARN_ASPECT] if stretch else []
    if stretched:
        w, h = max(stretched, key=stretch.__getitem__)
        shape = "far from square" if resize == "squash" else f"of another shape than the {resize} input"
        out.warnings.append(f"{len(stretched)} of {len(sizes)} training images are {shape} (e.g. {w}×{h}); "
                            f"{resize} stretches them to {input_size[1]}×{input_size[0]} ({stretch[(w, h)]:.1f}× along "
                            "one side) and thin defects can vanish; --resize pad keeps every image's aspect"
                            + (" (long-side: the images' median one)" if resize == "squash" else ""))
    return out


def _stretch(wh: tuple[int, int], input_size: tuple[int, int]) -> float:
    """How much fitting a (width, height) image to the (H, W) input distorts it: ≥ 1, 1 = aspect kept."""
    r = (wh[1] / wh[0]) / (input_size[0] / input_size[1])
    return max(r, 1 / r)


def time_one_batch(net: torch.nn.Module, sets: Mapping[str, Dataset], batch_sizes: Mapping[str, int],
                   device: torch.device) -> dict[str, float]:
    """Seconds of one forward/backward of each phase on its first batch (the second of two runs, so the
    first call's setup is not counted). Leaves the model as it was: weights, buffers, gradients, modes."""
    net.to(device)
    trainable = {id(p): p.requires_grad for p in net.parameters()}
    buffers = {n: b.detach().clone() for n, b in net.named_buffers()}
    rng = torch.random.get_rng_state()
    out: dict[str, float] = {}
    try:
        for ph in net.phases():  # type: ignore[operator]
            data = sets[ph.data]
            items = [data[i] for i in range(min(batch_sizes[ph.name], len(data)))]  # type: ignore[arg-type]
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in default_collate(items).items()}
            for _ in range(2):
                _enter_phase(net, ph, trainable)
                t0 = time.perf_counter()
                with torch.set_grad_enabled(ph.gradient):  # a statistics fit (PatchCore) has no backward
                    loss = getattr(net, ph.loss)(batch)["loss"]
                if ph.gradient:
                    loss.backward()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                out[ph.name] = time.perf_counter() - t0
    finally:
        for p in net.parameters():
            p.requires_grad_(trainable[id(p)])
            p.grad = None
        with torch.no_grad():
            for n, b in net.named_buffers():
                b.copy_(buffers[n])
        torch.random.set_rng_state(rng)
        net.eval()
    return out
