"""distillad.distributed: 2 gloo ranks on CPU train the model one process trains with the same global
batch (float64: to 1e-9; float32: within rounding), only rank 0 writes files, and under torchrun a
rank killed mid-run fails the job within a timeout and ``--resume`` then finishes the same model.

The ranks of the in-process checks are forked from the test process (no second import of torch);
the kill test launches the real command, ``python -m torch.distributed.run ... -m distillad train``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest
import torch
import torch.multiprocessing as mp

from distillad import api, distributed
from distillad.checkpoint import load_weights
from distillad.data import load_samples, train_val_split
from distillad.demo_data import make_demo_dataset
from distillad.engine import TrainConfig, fit
from distillad.errors import ConfigError
from distillad.registry import create_model

from helpers import two_phase  # tests/ is on sys.path (pytest rootdir insertion)

pytestmark = [pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch built without gloo"),
              pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="the ranks are forked")]

# 12 images, 1 held out for validation: 11 per pass = global batches of 4, 4 and 3 (split 2 + 1 over 2 ranks)
RUN = dict(epochs=2, batch_size=4, image_size=32, device="cpu", teacher_weights="random")
CLI = ["--model", "rd", "--epochs", "2", "--batch-size", "4", "--image-size", "32", "--device", "cpu",
       "--teacher-weights", "random"]
WORLD = 2


class _Float64(torch.utils.data.Dataset):
    """A training set with its images in float64 (rounding far below the differences tested)."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in self.base[i].items()}


def _fit64(name: str, data: Path, **kw: Any) -> dict[str, Any]:
    """Train ``name`` in float64 with ``engine.fit`` (no run folder): per-step losses and final state."""
    train_s, _ = train_val_split(load_samples(data, "train"), 0.1, 0)
    torch.manual_seed(0)
    net = create_model(name, teacher_weights="random", **kw).double()
    sets = {k: _Float64(v) for k, v in api.build_train_sets(net, train_s, 32, 0).items()}
    hist = fit(net, sets, TrainConfig(epochs=2, batch_size=4, image_size=32, device="cpu"), progress=False)
    return {"losses": [(r["phase"], r["loss"]) for r in hist], "state": net.student_state_dict()}


def _writes_under(root: Path) -> list[str]:
    """Audit hook recording every file-system write of this process inside ``root`` (returns the live list)."""
    seen: list[str] = []
    root_s = str(root)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def hook(event: str, args: tuple) -> None:
        paths = []
        if event == "open" and isinstance(args[0], (str, Path)):
            mode, flags = args[1], args[2]
            if (mode and any(c in mode for c in "wax+")) or (not mode and flags & write_flags):
                paths.append(args[0])
        elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir"):
            paths.append(args[1] if event == "os.rename" else args[0])
        seen.extend(str(p) for p in paths if str(p).startswith(root_s))
    sys.addaudithook(hook)
    return seen


def _jobs(rank: int, data: Path, tmp: Path) -> dict[str, Any]:
    """What each rank (and the one-process reference) computes."""
    writes = _writes_under(tmp) if rank > 0 else []
    out = {"rd64": _fit64("rd", data), "two_phase64": _fit64(two_phase.NAME, data, head_epochs=2)}
    api.train("rd", data, tmp / ("two" if distributed.active() else "one"), progress=False, **RUN)
    if distributed.active():
        with pytest.raises(ConfigError) as err:
            api.train("rd", data, tmp / "odd", progress=False, **{**RUN, "batch_size": 3})
        out["odd_batch"] = (str(err.value), (tmp / "odd").exists())
    return {**out, "writes": list(writes), "rank": distributed.rank(), "world": distributed.world_size()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, job: Callable[[int], Any], results: Path) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DISTILLAD_DIST_TIMEOUT="60")
    torch.set_num_threads(1)
    distributed.init(torch.device("cpu"))
    try:
        torch.save(job(rank), results / f"rank{rank}.pt")
    finally:
        distributed.shutdown()


def _run_ranks(job: Callable[[int], Any], results: Path, timeout: float = 240) -> list[Any]:
    """Run ``job(rank)`` on 2 forked gloo ranks; their results, by rank."""
    ctx = mp.start_processes(_rank_main, args=(_free_port(), job, results), nprocs=WORLD, join=False,
                             start_method="fork")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the {WORLD} ranks did not finish within {timeout} s")
    return [torch.load(results / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]  # tensors + plain data


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("ddp")
    data = make_demo_dataset(tmp / "data", n_train=12, n_test_good=1, n_test_defect=1, size=32, seed=1)
    two_phase.register()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = _jobs(0, data, tmp)
        ranks = _run_ranks(lambda r: _jobs(r, data, tmp), tmp)
    finally:
        torch.set_num_threads(threads)
        two_phase.unregister()
    return SimpleNamespace(tmp=tmp, data=data, one=one, ranks=ranks)


def _rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """‖a − b‖ / ‖a‖ over every floating tensor."""
    keys = [k for k in a if a[k].is_floating_point()]
    assert sorted(a) == sorted(b)
    num = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in keys)
    return (num / sum(float(a[k].double().pow(2).sum()) for k in keys)) ** 0.5


@pytest.mark.parametrize("model", ["rd64", "two_phase64"])
def test_two_ranks_train_the_one_process_model(ddp: SimpleNamespace, model: str) -> None:
    """float64, 2 epochs, an unevenly split last batch; two_phase: a student phase, then a head on synthetic data."""
    one, two = ddp.one[model], ddp.ranks[0][model]
    assert [p for p, _ in two["losses"]] == [p for p, _ in one["losses"]]
    for (_, a), (_, b) in zip(one["losses"], two["losses"]):
        assert abs(a - b) <= 1e-9 * abs(a)
    assert _rel(one["state"], two["state"]) < 1e-8  # weights and BatchNorm statistics
    assert _rel(two["state"], ddp.ranks[1][model]["state"]) == 0  # the ranks hold one model


def test_float32_run_agrees_within_rounding_and_only_rank_0_writes(ddp: SimpleNamespace) -> None:
    """api.train in float32: the first epoch's loss agrees to 1e-3 (later epochs drift apart by
    rounding: Adam's first steps amplify a float32 difference in a gradient's last bits)."""
    one = [json.loads(x) for x in (ddp.tmp / "one" / "train_log.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (ddp.tmp / "two" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in two] == [1, 2]  # each step logged once: by rank 0 only
    assert abs(one[0]["loss"] - two[0]["loss"]) < 1e-3 * one[0]["loss"]
    assert json.loads((ddp.tmp / "two" / "run.json").read_text())["finished"]
    assert ddp.ranks[0]["world"] == WORLD and ddp.ranks[1]["rank"] == 1
    assert ddp.ranks[1]["writes"] == [], "rank 1 wrote into the run folders"
    msg, written = ddp.ranks[0]["odd_batch"]
    assert "--batch-size 3" in msg and "divisible by the 2 ranks" in msg and not written


def _rank_pid(parent: int, rank: int) -> int | None:
    """PID of the torchrun worker of ``rank`` under the launcher ``parent`` (from /proc)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (d / "environ").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"\0RANK={rank}\0".encode() in b"\0" + env:
            return int(d.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the torchrun workers in /proc")
def test_torchrun_killed_rank_fails_the_job_then_resume_finishes_the_same_model(ddp: SimpleNamespace) -> None:
    out = ddp.tmp / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
           "-m", "distillad", "train", *CLI, "--data", str(ddp.data), "--out", str(out)]
    env = dict(os.environ, DISTILLAD_PROGRESS="0", OMP_NUM_THREADS="1", DISTILLAD_DIST_TIMEOUT="30")
    log = ddp.tmp / "torchrun.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and not (out / "trainer_state.json").is_file():
        time.sleep(0.02)
    pid = _rank_pid(proc.pid, 1)
    assert proc.poll() is None and pid is not None, log.read_text()[-3000:]
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    try:
        rc = proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the job hung after a rank was killed")
    assert rc != 0 and time.monotonic() - t0 < 90
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["step"] < 2 and not json.loads((out / "run.json").read_text())["finished"]
    assert not (out / "model.safetensors").exists()  # nothing looks finished

    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count("trained rd") == 1  # rank 0 reports
    a, b = load_weights(out / "model.safetensors"), load_weights(ddp.tmp / "two" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs from the uninterrupted one"
    assert [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2]


def _predict_job(rank: int, run: Path, data: Path, tmp: Path) -> dict[str, Any]:
    """Each rank: predict the test images into pred2; again into it (an earlier prediction: rank 0's
    OutputError on every rank); then with rank 1's disk "full" (every rank fails, rank 0 leaves nothing)."""
    import errno

    import distillad.predict as predict_mod
    from distillad.errors import DistilladError

    writes = _writes_under(tmp) if rank > 0 else []
    kw = dict(device="cpu", batch_size=1, num_workers=0, progress=False, threads=1)
    rows = api.predict(run, [data / "test"], tmp / "pred2", **kw)
    out: dict[str, Any] = {"rows": rows, "writes": list(writes)}
    try:
        api.predict(run, [data / "test"], tmp / "pred2", **kw)
    except DistilladError as e:
        out["again"] = (type(e).__name__, str(e))
    if rank == 1:
        def full(*a: Any, **k: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")
        predict_mod._run = full  # type: ignore[assignment]  (this forked rank only)
    try:
        api.predict(run, [data / "test"], tmp / "pred_full", **kw)
    except DistilladError as e:
        out["full"] = (type(e).__name__, str(e))
    return out


@pytest.fixture(scope="module")
def ddp_predict(ddp: SimpleNamespace) -> SimpleNamespace:
    run = ddp.tmp / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = api.predict(run, [ddp.data / "test"], ddp.tmp / "pred1", device="cpu", batch_size=1, num_workers=0, threads=1,
                          progress=False)
        ranks = _run_ranks(lambda r: _predict_job(r, run, ddp.data, ddp.tmp), ddp.tmp)
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(tmp=ddp.tmp, one=one, ranks=ranks)


def test_two_ranks_predict_the_one_process_rows_into_one_csv(ddp_predict: SimpleNamespace) -> None:
    """torchrun predict: the ranks split the images, every rank returns the merged rows, in input order,
    equal to one process's; rank 0 writes one predictions.csv listing every overlay; rank 1 writes
    nothing but its overlays, into the staging folder."""
    one, (r0, r1) = ddp_predict.one, ddp_predict.ranks
    assert len(one) > WORLD  # both ranks have images
    for got in (r0["rows"], r1["rows"]):
        assert [r["path"] for r in got] == [r["path"] for r in one]
        assert [r["decision"] for r in got] == [r["decision"] for r in one]
        assert all(abs(a["score"] - b["score"]) <= 1e-5 * max(1.0, abs(b["score"])) for a, b in zip(got, one))
    pred2 = ddp_predict.tmp / "pred2"
    # the same images at batch 1 run the same operations: the merged CSV is the one-process CSV, byte for byte
    assert (pred2 / "predictions.csv").read_bytes() == (ddp_predict.tmp / "pred1" / "predictions.csv").read_bytes()
    assert all((pred2 / r["overlay"]).is_file() for r in r0["rows"])
    assert not [p for p in pred2.iterdir() if p.name.startswith(".distillad-predict-")]  # the stage is gone
    assert r1["writes"], "rank 1 predicted nothing"
    assert all(str(pred2) in p and ".distillad-predict-" in p for p in r1["writes"] if "pred2" in p)
    assert not [p for p in r1["writes"] if p.endswith("predictions.csv")]


def test_an_error_on_one_rank_stops_every_rank_and_leaves_no_prediction(ddp_predict: SimpleNamespace) -> None:
    r0, r1 = ddp_predict.ranks
    assert r0["again"][0] == r1["again"][0] == "OutputError" and "holds an earlier prediction" in r1["again"][1]
    assert r0["full"][0] == "DistilladError" and "rank 1 failed" in r0["full"][1] and "No space left" in r0["full"][1]
    assert r1["full"][0] == "OutputError" and "no space left on device" in r1["full"][1]
    assert not (ddp_predict.tmp / "pred_full").exists()  # rank 0 removed its stage and the new empty folder
