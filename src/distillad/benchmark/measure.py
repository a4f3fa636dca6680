"""What a run costs and where it was measured: machine description, inference throughput and
peak tensor memory of ``model.predict``."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

__all__ = ["machine_info", "same_machine", "measure_throughput", "measure_peak_memory", "FULL_TIMING",
           "QUICK_TIMING", "MEMORY_METHOD", "TIMING_METHOD"]

#: (warm-up calls at batch 1, timed repeats at batch 1, timed repeats at batch 16; one warm-up at 16)
FULL_TIMING = (3, 10, 5)
QUICK_TIMING = (1, 3, 2)
MEMORY_METHOD = ("tensor memory of one predict() at batch 16: parameters + buffers (teacher included) + peak of "
                 "live tensors allocated during the call; CPU: torch.profiler profile_memory, CUDA: "
                 "torch.cuda.max_memory_allocated; excludes the Python/torch runtime and allocator caches")
TIMING_METHOD = ("model.predict (anomaly map + blur + score, no data loading) on random input at the run's image "
                 "size; median of timed repeats after warm-up calls; CPU threads: machine.torch_threads")
_MACHINE_KEYS = ("cpu", "cores", "torch_threads", "device", "gpu", "torch")


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def _cpu_model() -> str:
    for line in _read_lines("/proc/cpuinfo"):
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """What the timings were taken on: CPU model, usable cores, torch threads, RAM, GPU, versions."""
    dev = torch.device(device)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    ram = None
    for line in _read_lines("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            ram = round(int(line.split()[1]) / 2**20, 1)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    return {"cpu": _cpu_model(), "cores": int(cores), "torch_threads": int(torch.get_num_threads()), "ram_gb": ram,
            "device": str(dev), "gpu": gpu, "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__}


def same_machine(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether costs measured on ``a`` stand for ``b`` (same CPU, cores, threads, device, GPU, torch)."""
    return all(a.get(k) == b.get(k) for k in _MACHINE_KEYS)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _random_batch(batch: int, image_size: int, device: torch.device) -> torch.Tensor:
    return torch.rand(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(device)


@torch.no_grad()
def measure_throughput(model: Any, image_size: int, batch: int, device: torch.device, warmup: int,
                       repeats: int) -> float:
    """Images per second of ``model.predict`` at ``batch``: median of ``repeats`` timed calls after ``warmup``."""
    x = _random_batch(batch, image_size, device)
    for _ in range(warmup):
        model.predict(x)
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(x)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ start/stop lines bypass Python's sys.stderr)."""
    try:
        sys.stderr.flush()
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except (OSError, AttributeError, ValueError):
        yield
        return
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _cpu_activation_bytes(model: Any, x: torch.Tensor) -> float:
    """Largest total of live CPU tensors allocated during one ``predict``, from torch's profiler."""
    with _quiet_stderr(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                 profile_memory=True) as prof:
        out = model.predict(x)
        del out
    with tempfile.TemporaryDirectory() as d:
        trace = Path(d) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text()).get("traceEvents", [])
    mem = [e["args"] for e in events if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type") == 0]
    if not mem:
        return float("nan")
    base = mem[0]["Total Allocated"] - mem[0]["Bytes"]
    return max(m["Total Allocated"] for m in mem) - base


@torch.no_grad()
def measure_peak_memory(model: Any, image_size: int, batch: int, device: torch.device) -> dict[str, Any]:
    """Tensor memory (MB) of one ``predict`` at ``batch``: parameters and buffers (teacher included)
    + the largest total of live tensors allocated during the call (see ``MEMORY_METHOD``)."""
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    x = _random_batch(batch, image_size, device)
    model.predict(x)  # warm-up: lazy initialisation is not the model's working memory
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = model.predict(x)
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device)
        del out
        act = float(peak - base)
        total = float(peak)
    else:
        act = _cpu_activation_bytes(model, x)
        total = weights + act
    return {"peak_memory_mb": total / 2**20, "weights_mb": weights / 2**20, "activations_mb": act / 2**20,
            "method": MEMORY_METHOD, "device": str(device)}
