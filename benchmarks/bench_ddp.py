"""Training throughput of one process vs N gloo ranks (``distillad.distributed``), one CPU thread each,
and the communication share of a training step.

Every configuration trains with the library's own loop (``engine.fit``) on the same in-memory images
(no decoding, so the numbers are the step's compute and communication), the same global batch:
- ``1 process``: plain training, global batch B on one process;
- ``N ranks``: DDP, B / N images per rank, gradients averaged, students' BatchNorm synchronised;
- ``N ranks, no communication``: the same, with DDP's gradient all-reduce replaced by a no-op comm hook
  and BatchNorm left per rank: the step's compute alone (it trains a slightly different model; only its
  time is used; the per-batch all-reduce of the loss values, a few numbers, stays). Communication
  share = 1 − (img/s with) / (img/s without): the part of a step
  that communication adds and that backward does not hide;
- ``N independent processes``: N processes without a process group, each training B / N images a
  step on its own share of the pass (img/s summed): what the machine offers N workers at that batch
  size, the ceiling of the DDP figures.
images/s = images of one pass / seconds of that pass (``train_log`` "seconds"), median over the
passes after the first (warm-up); every configuration runs ``--repeats`` times, interleaved, and the
median is reported, with the ratio to the 1-process figure measured in the same run.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_ddp.py --out benchmarks/results/ddp.md
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from distillad import distributed  # noqa: E402
from distillad.engine import TrainConfig, fit  # noqa: E402
from distillad.registry import create_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line  # noqa: E402


class _Images(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int) -> None:
        self.x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.x[i]}


def _no_comm() -> None:
    """Gradients not all-reduced (a no-op comm hook), BatchNorm not synchronised."""
    real = distributed.phase_loss

    def phase_loss(model, loss, device):  # type: ignore[no-untyped-def]
        ddp = real(model, loss, device)
        if hasattr(ddp, "register_comm_hook"):
            def hook(state, bucket):  # type: ignore[no-untyped-def]
                fut: torch.futures.Future = torch.futures.Future()
                fut.set_result(bucket.buffer())
                return fut
            ddp.register_comm_hook(None, hook)
        return ddp
    distributed.phase_loss = phase_loss  # type: ignore[assignment]
    distributed.sync_batchnorm = lambda model, device, exclude="teacher": (lambda: None)  # type: ignore[assignment]


def _train(args: argparse.Namespace) -> float:
    """images/s of one configuration in this process (rank 0's view under DDP)."""
    torch.manual_seed(0)
    net = create_model(args.model, teacher_weights="random")
    data = _Images(args.images, args.image_size)
    hist = fit(net, data, TrainConfig(epochs=args.passes, batch_size=args.batch_size, image_size=args.image_size,
                                      device="cpu"), progress=False)
    return args.images / statistics.median(r["seconds"] for r in hist[1:])


def _rank(rank: int, world: int, port: int, args: argparse.Namespace, comm: bool, out: Path) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed.init(torch.device("cpu"))
    if not comm:
        _no_comm()
    ips = _train(args)
    if rank == 0:
        out.write_text(str(ips))
    distributed.shutdown()


def _alone(index: int, args: argparse.Namespace, world: int, out: Path) -> None:
    torch.set_num_threads(1)
    part = argparse.Namespace(**{**vars(args), "batch_size": args.batch_size // world, "images": args.images // world})
    (out.parent / f"{out.name}.{index}").write_text(str(_train(part)))


def _independent(world: int, args: argparse.Namespace) -> float:
    out = Path(f"/tmp/bench_ddp_{os.getpid()}.alone")
    mp.start_processes(_alone, args=(args, world, out), nprocs=world, start_method="fork")
    return sum(float((out.parent / f"{out.name}.{i}").read_text()) for i in range(world))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks(world: int, args: argparse.Namespace, comm: bool) -> float:
    out = Path(f"/tmp/bench_ddp_{os.getpid()}.txt")
    mp.start_processes(_rank, args=(world, _free_port(), args, comm, out), nprocs=world, start_method="fork")
    return float(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="rd")
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8, help="global batch")
    ap.add_argument("--images", type=int, default=32, help="images of one pass")
    ap.add_argument("--passes", type=int, default=4, help="passes per configuration (the first is warm-up)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/ddp.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = ["1 process", f"{args.world} ranks", f"{args.world} ranks, no communication",
             f"{args.world} independent processes, batch {args.batch_size // args.world} each"]
    got: dict[str, list[float]] = {n: [] for n in names}
    t0 = time.time()
    for r in range(args.repeats):  # interleaved, so a change of machine load hits every configuration
        got[names[0]].append(_train(args))
        got[names[1]].append(_ranks(args.world, args, True))
        got[names[2]].append(_ranks(args.world, args, False))
        got[names[3]].append(_independent(args.world, args))
        print(f"repeat {r + 1}: " + ", ".join(f"{n} {v[-1]:.1f} img/s" for n, v in got.items()), flush=True)
    med = {n: statistics.median(v) for n, v in got.items()}
    share = 1 - med[names[1]] / med[names[2]]
    load = os.getloadavg()
    lines = [
        "# Data-parallel training throughput: 1 process vs gloo ranks on CPU", "",
        f"`{command_line(sys.argv, 'PYTHONPATH=src .venv/bin/python')}`", "",
        f"{args.model}, random teacher weights, {args.image_size} px, global batch {args.batch_size}, "
        f"{args.images} in-memory images a pass, {args.passes} passes (first = warm-up), one torch thread per "
        f"process, {args.repeats} interleaved repeats (median; every repeat in the last column). Machine: "
        f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores usable, torch "
        f"{torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}; **shared with other jobs** "
        f"(load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end, {time.time() - t0:.0f} s in all), "
        "so absolute numbers are noisy; the ratios are measured in the same run.", "",
        "| configuration | images/s | ratio to 1 process | all repeats |", "|---|---|---|---|",
    ]
    for n in names:
        lines.append(f"| {n} | {med[n]:.1f} | {med[n] / med[names[0]]:.2f} | "
                     + ", ".join(f"{v:.1f}" for v in got[n]) + " |")
    lines += ["", f"Communication share of a {args.world}-rank step (gradient all-reduce + synchronised "
              f"BatchNorm, what backward does not hide): **{share:.0%}** (1 − {med[names[1]]:.1f} / "
              f"{med[names[2]]:.1f}). {args.world} independent processes reach "
              f"{med[names[3]] / med[names[0]]:.2f}× the one-process figure: the most any {args.world}-rank "
              "run could reach on this machine at this load and per-rank batch."]
    net = create_model(args.model, teacher_weights="random")
    grad_mb = sum(p.numel() for p in net.trainable_parameters()) * 4 / 2**20
    n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for n, m in net.named_modules()
               if not n.startswith("teacher"))
    lines += ["", "Per step, DDP all-reduces the trained parameters' gradients "
              f"({grad_mb:.1f} MB for {args.model}), and each of the {n_bn} trained BatchNorm layers "
              "all-reduces its statistics twice in forward and twice in backward: many small, latency-bound "
              "messages, which gloo sends over loopback TCP, in step with the slowest rank.", "",
              "**What a GPU node would change** (reasoning, not measured: no GPU in this session). NCCL moves "
              "the gradients over NVLink/PCIe at tens to hundreds of GB/s (milliseconds or less for the "
              "gradients above) on their own CUDA stream, overlapped with backward bucket by bucket; "
              "SyncBatchNorm uses torch's fused CUDA kernels; no rank competes with the others for CPU cores. "
              "The per-rank batch must stay large enough to keep a GPU busy (the paper's global batch 16 "
              "over 8 GPUs gives 2 images a rank, where the fixed cost of a step dominates), so DDP pays "
              "off for large images (512 px) or large global batches; for many small models, the sharded "
              "benchmark grid (one model per GPU) scales better. This script runs on CPU with gloo; on a GPU node, "
              "compare the seconds per epoch in `train_log.jsonl` of `torchrun --nproc-per-node N -m distillad "
              "train ...` for N = 1 and N = all GPUs."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
