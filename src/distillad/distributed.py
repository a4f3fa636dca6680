"""Data-parallel training over ``torch.distributed``, as launched by ``torchrun``.

``torchrun --nproc-per-node N -m distillad train ...`` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT set; ``init`` joins them into one process group (NCCL
on CUDA, gloo on CPU) with a timeout, so a rank that died makes the others fail instead of
waiting for ever. Without those variables every function here is a no-op for one process.

The contract: N ranks train the model one process would train with the same global batch.
- ``--batch-size`` is the *global* batch B (the paper's, by default); each rank takes B / N
  images of every global batch (``ShardedBatches``), so the N ranks together see exactly the
  batches of a one-process run, in the same order, reseeded per step as in ``engine.fit``.
- Gradients are averaged by ``DistributedDataParallel``; each rank's loss is weighted by its
  share of the global batch, so the averaged gradient is the one-process gradient whenever a
  method's loss is a mean over images (true of every method's distillation loss; a loss over
  batch statistics, e.g. rd_var's variance term or a Dice loss over the batch, is computed per
  rank, as in any DDP training).
- BatchNorm of the trained students is synchronised (``sync_batchnorm``); the teacher and
  every module a phase freezes stay in eval mode on every rank, so nothing needs syncing there.
- Only rank 0 writes the run folder, checkpoints, logs and the progress bar. ``--out`` must be
  on a filesystem every rank sees (``--resume`` reads it on every rank, and checks they agree).

``torchrun ... -m distillad predict`` splits the images instead (``my_share``: every N-th image from
the rank's index); every rank writes its overlays into one staging folder that rank 0 made in
``--out``, and rank 0 writes the merged predictions.csv in input order (``gather_shares``). An error
on any rank (a bad --out on rank 0, a full disk on rank 1) is raised on every rank (``main_first``).
"""

from __future__ import annotations

import atexit
import datetime
import inspect
import os
import warnings
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .errors import ConfigError, DistilladError

__all__ = ["launched", "init", "shutdown", "active", "rank", "world_size", "is_main", "barrier", "local_device",
           "check_batch_sizes", "ShardedBatches", "train_loader", "phase_loss", "batch_means", "loss_scale",
           "sync_batchnorm", "same_on_all_ranks", "main_first", "my_share", "gather_shares", "TIMEOUT_ENV",
           "DEFAULT_TIMEOUT_S"]

TIMEOUT_ENV = "DISTILLAD_DIST_TIMEOUT"  # seconds a collective waits for the other ranks
DEFAULT_TIMEOUT_S = 300
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_owned = False  # whether init() created the process group (and so shutdown() destroys it)
# torch.distributed.nn's all_reduce is the public differentiable collective (its suggested replacement is private)
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_reduce is deprecated",
                        category=FutureWarning)


def launched() -> bool:
    """True inside a process started by torchrun (or any launcher setting its environment)."""
    return all(k in os.environ for k in _ENV)


def active() -> bool:
    """True when a process group of more than one rank is up: training is data-parallel."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes files and prints."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def local_device(device: torch.device) -> torch.device:
    """This rank's device: ``cuda`` means ``cuda:LOCAL_RANK`` under torchrun (one GPU per rank)."""
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def _timeout() -> datetime.timedelta:
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
        if seconds <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected a positive number of seconds") from None
    return datetime.timedelta(seconds=seconds)


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group (once) and return this rank's device; without torchrun, ``device``.

    Backend: NCCL when the rank's device is CUDA, gloo otherwise. Collectives time out after
    ``DISTILLAD_DIST_TIMEOUT`` seconds (default 300), so a dead peer fails the job."""
    global _owned
    if not launched():
        return device
    dev = local_device(device)
    if dist.is_initialized():
        return dev
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=_timeout(), **({"device_id": dev} if dev.type == "cuda" else {}))
    except (RuntimeError, ValueError) as e:
        raise DistilladError(f"cannot join the torchrun process group ({backend}, MASTER_ADDR="
                             f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}): {e}") from None
    _owned = True
    atexit.register(shutdown)
    return dev


def shutdown() -> None:
    """Leave the process group ``init`` created (a no-op otherwise)."""
    global _owned
    if _owned and dist.is_initialized():
        dist.destroy_process_group()
    _owned = False


def same_on_all_ranks(value: int, what: str) -> int:
    """Check that every rank holds the same integer ``value`` (e.g. the step a resume starts at)."""
    if not active():
        return value
    got = [None] * world_size()
    dist.all_gather_object(got, int(value))
    if len(set(got)) > 1:
        raise DistilladError(f"ranks disagree on {what}: {got} (rank order); the run folder must be on a "
                             "filesystem that every rank sees")
    return value


# ------------------------------------------------------------------------- data

def check_batch_sizes(sizes: Mapping[str, int]) -> None:
    """Each phase's global batch must split evenly over the ranks; ConfigError naming the phase otherwise."""
    n = world_size()
    for phase, b in sizes.items():
        if b % n:
            raise ConfigError(f"--batch-size {b} (phase {phase!r}) is the global batch over all ranks and must be "
                              f"divisible by the {n} ranks (per rank: batch / {n})")


def n_global_batches(n: int, batch_size: int, world: int = 1) -> int:
    """Batches of one pass: a last partial batch is dropped when smaller than 2 (BatchNorm cannot train on
    one image) or than the number of ranks (it cannot be split) — the only difference a world size makes."""
    tail = n % batch_size
    return n // batch_size + (tail >= max(2, world))


class ShardedBatches(Sampler[list[int]]):
    """Rank ``rank``'s part of every global batch of one shuffled pass.

    The permutation is the one a one-process ``DataLoader(shuffle=True, generator=g)`` draws
    (``torch.randperm`` on the same generator, after the loader's own base-seed draw), cut into
    global batches of ``batch_size``; image j of a global batch goes to rank j mod N. Not
    ``DistributedSampler``: it pads a pass with repeated images to a multiple of N, so its
    batches would not be the one-process batches."""

    def __init__(self, n: int, batch_size: int, rank: int, world: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.rank, self.world, self.generator = n, batch_size, rank, world, generator
        self.count = n_global_batches(n, batch_size, world)

    def __iter__(self) -> Iterator[list[int]]:
        perm = torch.randperm(self.n, generator=self.generator).tolist()
        for b in range(self.count):
            yield perm[b * self.batch_size:(b + 1) * self.batch_size][self.rank::self.world]

    def __len__(self) -> int:
        return self.count


def train_loader(data: Dataset, batch_size: int, generator: torch.Generator, num_workers: int) -> DataLoader:
    """One training pass's loader: the one-process shuffled loader, or this rank's ``ShardedBatches`` of it."""
    n = len(data)  # type: ignore[arg-type]
    if not active():
        return DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator, num_workers=num_workers,
                          drop_last=n % batch_size == 1)  # as n_global_batches
    sampler = ShardedBatches(n, batch_size, rank(), world_size(), generator)
    return DataLoader(data, batch_sampler=sampler, generator=generator, num_workers=num_workers)


# ------------------------------------------------------------------------- model

class _PhaseLoss(nn.Module):
    """The model's loss method as a ``forward``, so that DistributedDataParallel can wrap it."""

    def __init__(self, model: nn.Module, loss: str) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return getattr(self.model, self.loss)(batch)


def phase_loss(model: nn.Module, loss: str, device: torch.device) -> Callable[[dict[str, Any]], dict[str, torch.Tensor]]:
    """The phase's loss function; under DDP wrapped in a ``DistributedDataParallel`` that averages the
    gradients of the parameters the phase trains (built per step, after the phase set ``requires_grad``).

    No buffer broadcast per forward: the trained BatchNorm statistics are synchronised, the frozen ones fixed.
    ``static_graph``: a phase uses the same parameters at every batch, so a parameter it never uses (a
    variant's idle branch) is handled without ``find_unused_parameters``' per-batch graph search."""
    if not active():
        return getattr(model, loss)
    from torch.nn.parallel import DistributedDataParallel
    ids = [device.index] if device.type == "cuda" else None
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
               inspect.signature(DistributedDataParallel).parameters else {"broadcast_buffers": False})  # torch < 2.14
    return DistributedDataParallel(_PhaseLoss(model, loss), device_ids=ids, static_graph=True, **no_sync)


def batch_means(losses: Mapping[str, torch.Tensor], n: int) -> tuple[dict[str, float], int]:
    """(each loss as the mean over the whole global batch, the global batch's size); one small
    all-reduce under DDP, so every rank logs, shows and checks the same numbers."""
    if not active():
        return {k: float(v.detach()) for k, v in losses.items()}, n
    t = torch.stack([v.detach().double().cpu() * n for v in losses.values()] + [torch.tensor(float(n), dtype=torch.float64)])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    total = int(round(float(t[-1])))
    return {k: float(t[i]) / total for i, k in enumerate(losses)}, total


def loss_scale(n: int, total: int) -> float:
    """Factor of this rank's loss so that DDP's gradient average is the gradient of the global batch mean."""
    return world_size() * n / total


# ------------------------------------------------------------------------- BatchNorm

class _CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Synchronised BatchNorm on CPU (gloo), where ``nn.SyncBatchNorm`` and DDP's check of it want a GPU:
    per-channel sums and counts all-reduced with autograd (``torch.distributed.nn``), then the mean and
    the biased variance in two passes, as torch's kernel computes them. On GPU torch's own is used."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype)
        s = all_reduce(torch.cat([x.sum(dims), count]))
        n = s[-1]
        mean = s[:-1] / n
        shape = [1, -1] + [1] * (x.dim() - 2)
        centred = x - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * (n / (n - 1)), alpha=factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def sync_batchnorm(model: nn.Module, device: torch.device, exclude: str = "teacher") -> Callable[[], None]:
    """Make every BatchNorm outside ``exclude`` synchronised across ranks (``nn.SyncBatchNorm`` on GPU,
    ``_CPUSyncBatchNorm`` on CPU); returns the function that undoes it.

    The layers keep their identity (their class is swapped, not the modules replaced), so parameters,
    optimiser groups, phase freezing by module path and checkpoints are untouched."""
    if not active():
        return lambda: None
    sync = _CPUSyncBatchNorm if device.type == "cpu" else nn.SyncBatchNorm
    swapped: list[tuple[nn.Module, type]] = []
    for name, m in model.named_modules():
        if name == exclude or name.startswith(exclude + "."):
            continue
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, (nn.SyncBatchNorm, _CPUSyncBatchNorm)):
            swapped.append((m, type(m)))
            m.__class__ = sync
            m.process_group = None  # type: ignore[assignment]  (nn.SyncBatchNorm: the whole world)

    def undo() -> None:
        for m, cls in swapped:
            m.__class__ = cls
            del m.process_group
    return undo


# ------------------------------------------------------------------------- inference (predict)

def _relay(errors: list[tuple[int, type, str] | None]) -> None:
    """Raise, on every rank, the first rank's error of ``errors`` (by rank); DistilladError kinds keep
    their class (a one-line message for the CLI), anything else becomes a DistilladError naming its rank."""
    failed = next((e for e in errors if e is not None), None)
    if failed is None:
        return
    r, cls, msg = failed
    if isinstance(cls, type) and issubclass(cls, DistilladError):
        raise cls(msg if r == rank() else f"{msg} (on rank {r})")
    raise DistilladError(f"rank {r} failed: {cls.__name__}: {msg}")


def main_first(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only and return its result on every rank; when it raises, every rank raises
    (rank 0 its own exception), so no rank goes on alone or waits for a peer that stopped. One process: ``fn()``."""
    if not active():
        return fn()
    box: list[Any] = [None]
    error: BaseException | None = None
    if is_main():
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # relayed, then re-raised here below
            error, box[0] = e, ("error", type(e), str(e))
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if box[0][0] == "error":
        _relay([(0, box[0][1], box[0][2])])
    return box[0][1]


def my_share(n: int) -> range:
    """The indices of ``n`` items this rank handles: every world-th from its rank (an interleaved split,
    so the ranks get similar mixes of a folder ordered by class); one process: all of them."""
    return range(rank(), n, world_size())


def gather_shares(mine: list[Any] | BaseException, n: int) -> list[Any]:
    """Every rank's results for ``my_share(n)`` merged in item order, on every rank. ``mine`` is this
    rank's list, or the exception that stopped it: then every rank raises (this one its own exception)."""
    if not active():
        if isinstance(mine, BaseException):
            raise mine
        return list(mine)
    got: list[Any] = [None] * world_size()
    failed = isinstance(mine, BaseException)
    dist.all_gather_object(got, ("error", type(mine), str(mine)) if failed else ("ok", mine))
    if failed:
        raise mine  # type: ignore[misc]
    _relay([(r, p[1], p[2]) if p[0] == "error" else None for r, p in enumerate(got)])
    merged: list[Any] = [None] * n
    for r, (_, items) in enumerate(got):
        for j, item in enumerate(items):
            merged[r + j * world_size()] = item
    return merged
