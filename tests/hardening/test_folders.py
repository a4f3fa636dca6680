"""Run folders in awkward states, locks, permissions and full or read-only disks."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time

import pytest
from helpers.hardening import TINY, TINY_FLAGS, fingerprint

from distillad import api
from distillad.checkpoint import LOCK_FILE, atomic_write_bytes, load_run
from distillad.errors import CheckpointError, OutputError


def _train(cli, data, out, *extra):
    return cli("train", "--model", "rd", "--data", data, "--out", out, *TINY_FLAGS, *extra)


def test_stale_log_without_run_json_is_refused_then_overwritten(cli, tiny_data, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "train_log.jsonl").write_text('{"epoch": 7}\n')
    code, err = _train(cli, tiny_data, out)
    assert code == 2 and "train_log.jsonl" in err and "--overwrite" in err
    assert (out / "train_log.jsonl").read_text() == '{"epoch": 7}\n'
    code, _ = _train(cli, tiny_data, out, "--overwrite")
    assert code == 0 and '"epoch": 7' not in (out / "train_log.jsonl").read_text()


def test_overwrite_removes_only_the_runs_own_files(cli, tiny_data, run_copy):
    (run_copy / "notes.txt").write_text("mine")
    code, _ = _train(cli, tiny_data, run_copy, "--overwrite")
    assert code == 0 and (run_copy / "notes.txt").read_text() == "mine"


def test_finished_and_unfinished_runs_are_not_silently_reused(cli, tiny_data, run_copy, tmp_path):
    before = fingerprint(run_copy)
    code, err = _train(cli, tiny_data, run_copy)
    assert code == 2 and "a finished run is here" in err and fingerprint(run_copy) == before
    # a run that failed mid-way: the same command says how to go on, and --overwrite goes on
    out = tmp_path / "failed"
    with pytest.raises(KeyboardInterrupt):
        api.train("rd", tiny_data, out, **{**TINY, "epochs": 2},
                  on_step_end=lambda step, m: (_ for _ in ()).throw(KeyboardInterrupt()))
    code, err = _train(cli, tiny_data, out, "--epochs", "2")
    assert code == 2 and "unfinished run" in err and "--resume" in err and "--overwrite" in err
    assert _train(cli, tiny_data, out, "--epochs", "2", "--overwrite")[0] == 0
    load_run(out)


def test_resume_refuses_another_runs_trainer_state(tiny_data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    stop = lambda step, m: (_ for _ in ()).throw(KeyboardInterrupt())  # noqa: E731
    for run in (a, b):
        with pytest.raises(KeyboardInterrupt):
            api.train("rd", tiny_data, run, **{**TINY, "epochs": 2}, on_step_end=stop)
    shutil.copy(b / "trainer_state.json", a / "trainer_state.json")
    shutil.copy(b / "last.safetensors", a / "last.safetensors")
    with pytest.raises(CheckpointError, match="saved by another run"):
        api.train("rd", tiny_data, a, **{**TINY, "epochs": 2}, resume=True)


def test_a_second_process_cannot_train_into_a_locked_folder(cli, tiny_data, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from filelock import FileLock; l = FileLock(sys.argv[1], timeout=0); l.acquire(); "
        "print('held', flush=True); time.sleep(60)"), str(out / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, err = _train(cli, tiny_data, out)
        assert code == 2 and "another distillad process" in err and not (out / "run.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert _train(cli, tiny_data, out)[0] == 0  # the lock died with its process


def test_two_concurrent_trains_one_wins_the_other_is_refused(tiny_data, tmp_path):
    out = tmp_path / "o"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DISTILLAD_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "distillad", "train", "--model", "rd", "--data", str(tiny_data), "--out", str(out),
           *TINY_FLAGS, "--epochs", "3"]
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    err = next(e for c, e in results if c == 2)
    assert "Traceback" not in err and ("another distillad process" in err or "a finished run is here" in err), err
    load_run(out)


def test_files_respect_the_umask(tiny_data, tmp_path):
    old = os.umask(0o027)
    try:
        api.train("rd", tiny_data, tmp_path / "o", **TINY)
    finally:
        os.umask(old)
    for name in ("run.json", "model.safetensors", "last.safetensors", "trainer_state.json"):
        assert (tmp_path / "o" / name).stat().st_mode & 0o777 == 0o640, name


def _fail_writes(monkeypatch, err: int, after: int = 0):
    """Every os.fsync after the first ``after`` ones fails with ``err`` (a full or read-only disk)."""
    real, calls = os.fsync, {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(err, os.strerror(err))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def test_atomic_write_on_a_full_disk_keeps_the_old_file(monkeypatch, tmp_path):
    atomic_write_bytes(tmp_path / "f.json", b"old")
    _fail_writes(monkeypatch, errno.ENOSPC)
    with pytest.raises(OutputError, match="no space left"):
        atomic_write_bytes(tmp_path / "f.json", b"new")
    assert (tmp_path / "f.json").read_bytes() == b"old" and os.listdir(tmp_path) == ["f.json"]


@pytest.mark.parametrize("err,needle", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only file system")])
def test_train_on_a_full_or_read_only_disk(err, needle, monkeypatch, cli, tiny_data, tmp_path):
    """The disk fills after the first step's state: one line, the last good state kept, no temp file,
    and --resume finishes once there is room again."""
    out = tmp_path / "o"
    _fail_writes(monkeypatch, err, after=3)  # run.json, last.safetensors, trainer_state.json of step 1
    code, msg = _train(cli, tiny_data, out, "--epochs", "3")
    assert code == 2 and needle in msg, msg
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert _train(cli, tiny_data, out, "--epochs", "3", "--resume")[0] == 0
    load_run(out)


def test_test_into_a_read_only_run_fails_before_the_work(monkeypatch, cli, run_copy):
    import tempfile
    before = fingerprint(run_copy)

    def refuse(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    t0 = time.perf_counter()
    code, err = cli("test", "--run", run_copy)
    assert code == 2 and "read-only file system" in err and str(run_copy) in err
    assert fingerprint(run_copy) == before and time.perf_counter() - t0 < 30


def test_unwritable_out_for_train(monkeypatch, cli, tiny_data, tmp_path):
    real = os.mkdir

    def mkdir(path, *a, **k):
        if str(path).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, *a, **k)
    monkeypatch.setattr(os, "mkdir", mkdir)
    code, err = _train(cli, tiny_data, tmp_path / "ro" / "run")
    assert code == 2 and "permission denied" in err


def test_temporaries_left_by_a_kill_are_removed_on_resume(tiny_data, tmp_path):
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        api.train("rd", tiny_data, out, **{**TINY, "epochs": 2},
                  on_step_end=lambda step, m: (_ for _ in ()).throw(KeyboardInterrupt()))
    left = [out / ".last.safetensors.k3j_x9q2.tmp", out / ".trainer_state.json.ab12cd34", out / ".mine"]
    for f in left:
        f.write_bytes(b"partial")
    api.train("rd", tiny_data, out, **{**TINY, "epochs": 2}, resume=True)
    assert [f.exists() for f in left] == [False, False, True]  # ours gone (old and new naming), the user's kept


def test_a_corrupt_training_image_fails_before_anything_is_written(cli, tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    bad = sorted((data / "train" / "good").iterdir())[3]
    bad.write_bytes(b"\x89PNG but not really")
    code, err = _train(cli, data, tmp_path / "o")
    assert code == 2 and bad.name in err and "not a readable image" in err
    assert not (tmp_path / "o" / "run.json").exists()
