"""Inference precision and the inference-ready model: fp32, or bf16/fp16 autocast for the networks
while the maps stay fp32 (``maps.fp32``), BatchNorm folded into the convolutions.

bf16/fp16 on a CPU run only where the CPU has the instructions for them (AVX512-BF16 or AMX for bf16,
AVX512-FP16 or AMX-FP16 for fp16); elsewhere oneDNN would emulate them, slower than fp32, so that is
refused with a one-line ``ConfigError`` instead of taking a silent slow path.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from typing import Iterator, Literal, get_args

import torch
import torch.nn as nn

from .errors import ConfigError
from .layers import fuse_for_inference

__all__ = ["Precision", "PRECISIONS", "cpu_flags", "check_precision", "autocast", "prepare_for_inference",
           "predict_batch"]

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: CPU flags (``/proc/cpuinfo``) that make each reduced precision native
_CPU_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def check_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``precision`` if this device runs it natively, else a ConfigError that says why and what to use."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dev = torch.device(device)
    if precision == "fp32":
        return precision
    if dev.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError("precision bf16: this GPU does not support bfloat16; use --precision fp16 or fp32")
        return precision
    if dev.type != "cpu":
        raise ConfigError(f"precision {precision}: only fp32 on device {dev.type!r}")
    wanted = _CPU_FLAGS[precision]
    if not cpu_flags() & set(wanted):
        raise ConfigError(f"precision {precision}: this CPU lacks {' / '.join(wanted)} (it would be emulated, "
                          "slower than fp32); use --precision fp32")
    return precision


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """Autocast the networks to ``precision`` on ``device`` (checked); fp32: nothing changes."""
    check_precision(precision, device)
    dev = torch.device(device)
    if precision == "fp32":
        yield
        return
    with torch.autocast(dev.type, dtype=_DTYPES[precision]):
        yield


#: images per forward pass on a CPU. Per image, a 256 px RD forward gets *slower* as the batch grows
#: beyond a few images (its activations no longer fit the caches: the depthwise convolutions of the
#: efficientnet_lite teachers are memory-bound), so a batch is run in chunks of this many
#: (benchmarks/results/speed.md, "chunk" table); GPUs get the whole batch.
CPU_CHUNK = 4


def prepare_for_inference(model: nn.Module, device: torch.device, image_size: int = 64) -> nn.Module:
    """An eval copy of ``model`` on ``device`` with its BatchNorms folded into their convolutions
    (``layers.fuse_for_inference``: also TF-"same" convolutions without a padding copy, and weights in
    channels_last, which oneDNN's and cuDNN's convolutions run fastest; benchmarks/results/speed.md).
    ``model`` itself is left as it is, so training can go on with it."""
    if getattr(model, "inference_ready", False):  # already a prepared copy (or a wrapper of one: tiling)
        return model.to(device).eval()
    out = copy.deepcopy(model).to(device).eval()
    fuse_for_inference(out, torch.rand(1, 3, image_size, image_size, device=device), getattr(out, "predict", None))
    out.inference_ready = True
    return out


def predict_batch(model: nn.Module, images: torch.Tensor, precision: str = "fp32",
                  chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.predict(images)`` under ``torch.inference_mode`` and the precision's autocast → fp32 (maps, scores).

    The images go in as channels_last, in chunks of ``chunk`` (None: ``CPU_CHUNK`` on a CPU, all at once
    elsewhere); an image's map does not depend on the chunking beyond float rounding."""
    if chunk is None:
        chunk = CPU_CHUNK if images.device.type == "cpu" else len(images)
    maps, scores = [], []
    with torch.inference_mode(), autocast(precision, images.device):
        for part in images.split(max(1, chunk)):
            m, s = model.predict(part.contiguous(memory_format=torch.channels_last))  # type: ignore[operator]
            maps.append(m.float())
            scores.append(s.float())
    return (maps[0], scores[0]) if len(maps) == 1 else (torch.cat(maps), torch.cat(scores))
