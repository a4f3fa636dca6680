"""Training phases: the schedule, what each phase freezes, and exact resume after a kill in phase 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distillad import api
from distillad.checkpoint import load_weights
from distillad.engine import TrainConfig, fit
from distillad.errors import ConfigError
from distillad.phases import Phase, plan, validate_phases

from helpers import two_phase  # tests/ is on sys.path (pytest rootdir insertion)

SMALL = dict(epochs=2, batch_size=4, image_size=32, progress=False, device="cpu")


@pytest.fixture
def registered():
    two_phase.register()
    yield two_phase.NAME
    two_phase.unregister()


def test_plan_orders_joint_each_epoch_and_after_phases():
    a = Phase("a", ("x",))
    seg = Phase("seg", ("y",), schedule="each_epoch", after="a")
    fuse = Phase("fuse", ("z",), schedule="after", after="a", epochs=2)
    steps = plan([a, seg, fuse], epochs=3)
    assert [(s.phase.name, s.epoch) for s in steps] == [
        ("a", 0), ("seg", 0), ("a", 1), ("seg", 1), ("a", 2), ("seg", 2), ("fuse", 0), ("fuse", 1)]
    assert [s.index for s in steps] == list(range(8))
    single = plan([a], epochs=4)  # the single-phase methods: step index == epoch, as before phases existed
    assert [(s.index, s.epoch) for s in single] == [(0, 0), (1, 1), (2, 2), (3, 3)]


def test_bad_declarations_name_the_phase_and_problem():
    m = two_phase.TwoPhase()
    with pytest.raises(ConfigError, match="phase 'p'.*no module 'nope'"):
        validate_phases(m, [Phase("p", ("nope",))])
    with pytest.raises(ConfigError, match="teacher is frozen"):
        validate_phases(m, [Phase("p", ("teacher",))])
    with pytest.raises(ConfigError, match="'after' must name a phase declared before"):
        validate_phases(m, [Phase("p", ("student",)), Phase("q", ("head",), schedule="after", after="zz")])
    with pytest.raises(ConfigError, match="no loss method 'fly'"):
        validate_phases(m, [Phase("p", ("student",), loss="fly")])
    with pytest.raises(ConfigError, match="learning rate given for 'head'"):
        validate_phases(m, [Phase("p", ("student",), lr={"head": 1.0})])


def test_default_phase_trains_every_student_module():
    import distillad
    m = distillad.create_model("rd", teacher_weights="random")
    (ph,) = m.phases()
    assert ph.schedule == "joint" and set(ph.modules) == {"bottleneck", "decoder"} and not m.needs_synthesis


def test_second_phase_freezes_the_student(registered, tiny_data, tmp_path):
    """During phase 2 the student gets no gradient, its weights and BatchNorm buffers do not move, it is in
    eval mode; the head trains with its own learning rate."""
    torch.manual_seed(0)
    model = two_phase.TwoPhase(head_epochs=2)
    sets = api.build_train_sets(model, api.load_samples(tiny_data, "train"), 32, seed=0)
    assert set(sets) == {"normal", "synthetic"} and model.needs_synthesis
    seen: list[dict] = []

    def hook(step, m):
        seen.append({"phase": step.phase.name,
                     "student": {k: v.clone() for k, v in m.student.state_dict().items()},
                     "head": {k: v.clone() for k, v in m.head.state_dict().items()},
                     "student_grads": [p.grad for p in m.student.parameters()],
                     "head_grads": [p.grad is not None for p in m.head.parameters()],
                     "student_training": m.student.training, "head_training": m.head.training})

    log = fit(model, sets, TrainConfig(epochs=2, batch_size=4, seed=0, device="cpu"), progress=False,
              on_step_end=hook)
    assert [r["phase"] for r in log] == ["students", "students", "head", "head"]
    end_of_students = seen[1]["student"]
    for s in seen[2:]:
        assert s["phase"] == "head" and not s["student_training"] and s["head_training"]
        assert all(g is None for g in s["student_grads"]) and all(s["head_grads"])
        for k, v in s["student"].items():  # weights and running_mean/var/num_batches_tracked
            assert torch.equal(v, end_of_students[k]), k
    assert not torch.equal(seen[1]["head"]["0.weight"], seen[3]["head"]["0.weight"])  # the head did learn
    assert torch.equal(seen[0]["head"]["0.weight"], seen[1]["head"]["0.weight"])  # ... and only in its phase
    assert all(p.requires_grad for p in model.student.parameters())  # restored after training
    assert all(not p.requires_grad for p in model.teacher.parameters())


_CHILD = """
import sys
sys.path.insert(0, {root!r})
from helpers import two_phase
from distillad import api
two_phase.register()
api.train(two_phase.NAME, {data!r}, {out!r}, head_epochs=4, delay=0.15, **{small!r})
"""


def test_kill_in_phase_two_then_resume_is_bit_exact(registered, tiny_data, tmp_path):
    """SIGKILL a training process during its second phase; resuming gives the uninterrupted weights bit for bit."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    api.train(registered, tiny_data, straight, head_epochs=4, **SMALL)
    root = str(Path(__file__).resolve().parent)
    code = _CHILD.format(root=root, data=str(tiny_data), out=str(killed), small=SMALL)
    env = dict(os.environ, DISTILLAD_PROGRESS="0")
    err = tmp_path / "child.err"
    with open(err, "w") as err_file:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=err_file)
    state_file = killed / "trainer_state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(state_file.read_text())["phase"] == "head":
                break
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, err.read_text()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((killed / "trainer_state.json").read_text())
    assert state["phase"] == "head" and state["phase_epoch"] < 4  # killed inside phase 2
    api.train(registered, tiny_data, killed, resume=True, head_epochs=4, delay=0.15, **SMALL)
    a, b = load_weights(straight / "model.safetensors"), load_weights(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(x) for x in (killed / "train_log.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in rows] == [("students", 1), ("students", 2)] + [
        ("head", e) for e in range(1, 5)]  # each step logged once, though one may have been redone


def test_synthesis_sources_are_data_settings(registered, tiny_data, tmp_path):
    """--textures and --foreground are stored under the run's data settings, never as model keywords."""
    import numpy as np
    from PIL import Image

    tex = tmp_path / "textures"
    tex.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tex / "t.png")
    spec = api.train(registered, tiny_data, tmp_path / "run", textures=tex, foreground="otsu",
                     **dict(SMALL, epochs=1), head_epochs=1)
    assert spec["data"]["textures"] == str(tex.resolve()) and spec["data"]["foreground"] == "otsu"
    assert "textures" not in spec["model_kwargs"] and "foreground" not in spec["model_kwargs"]
    model = two_phase.TwoPhase()
    ds = model.synthetic_train_set(api.AnomalyDataset(api.load_samples(tiny_data, "train"), image_size=32),
                                   textures=str(tex), foreground="otsu")
    assert ds.foregrounds.method == "otsu" and not ds.textures.is_fallback
    item = ds[0]
    assert set(item) >= {"image", "anomalous", "mask"} and item["mask"].shape == (1, 32, 32)
    with pytest.raises(ConfigError, match="foreground must be one of"):
        api.train(registered, tiny_data, tmp_path / "bad", foreground="magic", **SMALL)
