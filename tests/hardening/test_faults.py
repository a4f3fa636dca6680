"""Fault injection: training killed (SIGKILL) at random points, then resumed. The folder is either
resumable to the bit-identical result of an uninterrupted run, or refused with one clear line; no
temporary file survives the resume."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers.hardening import TINY_FLAGS
from safetensors.torch import load_file

EPOCHS = "4"


def _cmd(data, out, *extra):
    return [sys.executable, "-m", "distillad", "train", "--model", "rd", "--data", str(data), "--out", str(out),
            *TINY_FLAGS, "--epochs", EPOCHS, *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "DISTILLAD_PROGRESS": "0"}


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    subprocess.run(_cmd(tiny_data, out), env=_env(), check=True, capture_output=True)
    return load_file(out / "model.safetensors")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_at_a_random_point_then_resume(seed, reference, tiny_data, tmp_path):
    rng = random.Random(seed)
    out = tmp_path / "run"
    lines, delay = rng.randint(0, 3), rng.uniform(0.0, 0.4)  # after this many finished epochs, then a little
    proc = subprocess.Popen(_cmd(tiny_data, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    log = out / "train_log.jsonl"
    while proc.poll() is None and time.monotonic() - t0 < 240:
        if (log.exists() and len(log.read_text().splitlines()) >= lines) or (lines == 0 and out.exists()):
            time.sleep(delay)
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    res = subprocess.run(_cmd(tiny_data, out, "--resume"), env=_env(), capture_output=True, text=True)
    assert "Traceback" not in res.stderr, res.stderr
    if res.returncode != 0:  # allowed only as one clear line
        assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
        pytest.fail(f"killed run could not be resumed: {res.stderr.strip()}")
    got = load_file(out / "model.safetensors")
    assert got.keys() == reference.keys()
    assert all((got[k] == reference[k]).all() for k in got), "resumed run differs from the uninterrupted one"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


def test_death_between_the_weights_and_their_readable_copy(tiny_data, tmp_path, monkeypatch):
    """The window the random kills hit once: last.safetensors replaced, trainer_state.json not yet. The state
    lives in last.safetensors alone, so the resume is still exact."""
    from distillad import api, checkpoint
    from helpers.hardening import TINY
    kw = {**TINY, "epochs": 3}
    api.train("rd", tiny_data, tmp_path / "ref", **kw)
    real, calls = checkpoint.atomic_write_json, {"n": 0}

    def dies_on_second_state_copy(path, obj):
        if path.name == "trainer_state.json":
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt  # the process "dies" here
        return real(path, obj)
    monkeypatch.setattr(checkpoint, "atomic_write_json", dies_on_second_state_copy)
    with pytest.raises(KeyboardInterrupt):
        api.train("rd", tiny_data, tmp_path / "run", **kw)
    monkeypatch.undo()
    api.train("rd", tiny_data, tmp_path / "run", **kw, resume=True)
    a, b = load_file(tmp_path / "ref" / "model.safetensors"), load_file(tmp_path / "run" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
