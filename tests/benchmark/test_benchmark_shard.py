"""``distillad benchmark --shard I/N``: disjoint deterministic parts of the grid, two concurrent workers
that never write the same file, a worker killed mid-run that leaves nothing looking finished, a rerun
of its shard that resumes, and ``--report-only`` merging the shards."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from distillad import api
from distillad.benchmark import add_arguments, config_from_args, run_benchmark
from distillad.benchmark.runner import shard_plan
from distillad.demo_data import make_demo_dataset
from distillad.errors import ConfigError

SHARDS = 2


def test_shards_are_disjoint_deterministic_and_cover_the_grid() -> None:
    grid = [(c, m, s) for c in "ab" for m in ("rd", "stfpm", "dskd") for s in range(3)]
    for n in (1, 2, 4, 7, 30):
        parts = [shard_plan(grid, (i, n)) for i in range(n)]
        assert sorted(p for part in parts for p in part) == sorted(grid)  # each run in exactly one part
        assert parts == [shard_plan(grid, (i, n)) for i in range(n)]
    assert shard_plan(grid, None) == grid


def test_shard_flag_parses_and_bad_values_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert config_from_args(p.parse_args(["--shard", "1/3", "--quick"])).shard == (1, 3)
    with pytest.raises(SystemExit):
        p.parse_args(["--shard", "1-3"])
    assert "invalid I/N value: '1-3'" in capsys.readouterr().err
    for bad in (["--shard", "3/3"], ["--shard", "0/0"], ["--shard", "0/2", "--report-only"]):
        with pytest.raises(ConfigError):
            config_from_args(p.parse_args([*bad, "--quick", "--models", "rd"])).resolved()


def _worker(index: int, kw: dict, log_path: str, die_in_run: int | None) -> None:
    """One shard in its own process; every file it opens for writing (or renames onto) under ``out``
    is logged to ``log_path`` by an audit hook; ``die_in_run``: os._exit after the first training step
    of that run (a worker killed mid-training)."""
    torch.set_num_threads(1)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    root = str(kw["out"])

    def hook(event: str, args: tuple) -> None:
        path = None
        if event == "open" and isinstance(args[0], (str, Path)):
            if (args[1] and any(c in args[1] for c in "wax+")) or (not args[1] and args[2] & (os.O_WRONLY | os.O_RDWR)):
                path = args[0]
        elif event == "os.rename":
            path = args[1]
        if path is not None and str(path).startswith(root):
            os.write(fd, f"{path}\n".encode())  # os.write raises no audit event
    sys.addaudithook(hook)
    if die_in_run is not None:
        real, calls = api.train, []

        def train(*a: object, **k: object) -> dict:
            calls.append(1)
            if len(calls) == die_in_run:
                k["on_step_end"] = lambda step, model: os._exit(3)
            return real(*a, **k)
        api.train = train  # type: ignore[assignment]  (this forked process only)
    run_benchmark(**kw, shard=(index, SHARDS))


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("shard")
    make_demo_dataset(root / "data", n_train=6, n_test_good=1, n_test_defect=1, size=32, seed=0)
    out = root / "out"
    kw = dict(models=["rd"], data=root / "data", categories=["washer"], seeds=3, epochs=2, out=out, image_size=32,
              batch_size=4, model_kwargs={"*": {"teacher_weights": "random"}}, quick=True, progress=False,
              timing=(0, 1, 1), plots=False)
    ctx = multiprocessing.get_context("fork")
    logs = [root / f"writes{i}.txt" for i in range(SHARDS)]
    # the grid is seeds 0, 1, 2: shard 0 runs seeds 0 and 2 (and dies during seed 2), shard 1 runs seed 1
    procs = [ctx.Process(target=_worker, args=(i, kw, str(logs[i]), 2 if i == 0 else None)) for i in range(SHARDS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    codes = [p.exitcode for p in procs]
    writes = [set(log.read_text().split()) if log.exists() else set() for log in logs]
    dead = out / "runs" / "washer" / "rd" / "seed2"
    dead_state = {"run": json.loads((dead / "run.json").read_text()) if (dead / "run.json").is_file() else None,
                  "bench": (dead / "bench.json").exists(), "shard_file": (out / "shards" / "shard-0-of-2.json").exists()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        partial = run_benchmark(**kw, report_only=True)
        fits: list[str] = []
        real_fit = api.fit
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(api, "fit", lambda model, *a, **k: fits.append(model.model_name) or real_fit(model, *a, **k))
            rerun = run_benchmark(**kw, shard=(0, SHARDS))
        merged = run_benchmark(**kw, report_only=True)
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(out=out, codes=codes, writes=writes, dead=dead, dead_state=dead_state, partial=partial,
                           rerun=rerun, merged=merged, fits=fits)


def test_concurrent_shards_never_write_the_same_file(sharded: SimpleNamespace) -> None:
    w0, w1 = sharded.writes
    # a folder in both logs is the writability probe (an unnamed O_TMPFILE in it), not a written file
    assert w0 and w1 and not {p for p in w0 & w1 if not Path(p).is_dir()}, sorted(w0 & w1)
    runs = sharded.out / "runs" / "washer" / "rd"
    shard_file = sharded.out / "shards" / "shard-1-of-2.json"
    in_shards = lambda p: shard_file.parent in (Path(p), Path(p).parent)  # noqa: E731  (lock, probe, summary)
    assert all(p.startswith((str(runs / "seed0"), str(runs / "seed2"))) or in_shards(p) for p in w0)
    assert all(p.startswith(str(runs / "seed1")) or in_shards(p) for p in w1)
    assert str(shard_file) in w1


def test_a_dead_worker_leaves_nothing_that_looks_finished(sharded: SimpleNamespace) -> None:
    assert sharded.codes == [3, 0]
    assert sharded.dead_state == {"run": sharded.dead_state["run"], "bench": False, "shard_file": False}
    assert sharded.dead_state["run"]["finished"] is False
    assert [(r["seed"]) for r in sharded.partial["runs"]] == [0, 1]  # report-only: the finished runs only


def test_rerunning_a_shard_resumes_it_and_report_only_merges(sharded: SimpleNamespace) -> None:
    assert sharded.fits == ["rd"], "the rerun retrained a finished run"  # seed 2 only, resumed
    assert [r["seed"] for r in sharded.rerun["runs"]] == [0, 2]
    steps = [json.loads(x)["step"] for x in (sharded.dead / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == 2
    assert [r["seed"] for r in sharded.merged["runs"]] == [0, 1, 2]
    assert (sharded.out / "results.json").is_file() and (sharded.out / "shards" / "shard-0-of-2.json").is_file()


def test_a_second_worker_on_the_same_shard_is_refused_and_a_dead_ones_lock_is_free(tmp_path: Path) -> None:
    """Two workers given the same --shard would train the same runs: the second stops at once, before
    reading any data; the lock is the OS's, so a shard whose worker died (the fixture's shard 0) reruns."""
    from filelock import FileLock

    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    kw = dict(models=["rd"], data=tmp_path / "no-data-here", epochs=1, out=out, quick=True, progress=False)
    with FileLock(str(out / "shards" / "shard-1-of-2.lock"), timeout=0):
        with pytest.raises(ConfigError, match=r"shard 1/2 is already running in another process"):
            run_benchmark(**kw, shard=(1, SHARDS))
        # another shard of the same grid is not blocked by it (it fails later, on the missing data)
        with pytest.raises(Exception) as other:
            run_benchmark(**kw, shard=(0, SHARDS))
        assert "already running" not in str(other.value)
