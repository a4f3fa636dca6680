"""Experiment tracking: off by default, TensorBoard events read back, missing packages say what to install."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from distillad.errors import ConfigError
from distillad.tracking import Logger, make_logger


def test_off_by_default(tmp_path):
    assert make_logger(None, tmp_path) is None and make_logger("none", tmp_path) is None
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="wandb"):
        make_logger("wandb", tmp_path)


def test_tensorboard_events_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = make_logger("tensorboard", tmp_path)
    assert isinstance(log, Logger)
    for step in range(3):
        log.log_scalars({"loss": 1.0 / (step + 1), "loss_var": 0.5 * step}, step, prefix="train/")
    image = np.zeros((8, 12, 3), np.uint8)
    image[:, :6, 0] = 255
    log.log_image("val/overlays", image, 2)
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        log.log_image("bad", np.zeros((8, 8), np.float32), 0)
    log.close()

    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"train/loss", "train/loss_var"}
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [0, 1, 2]
    assert [e.value for e in loss] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [e.value for e in acc.Scalars("train/loss_var")] == pytest.approx([0.0, 0.5, 1.0])
    (img,) = acc.Images("val/overlays")
    assert (img.step, img.width, img.height) == (2, 12, 8)
    from PIL import Image
    import io
    back = np.asarray(Image.open(io.BytesIO(img.encoded_image_string)).convert("RGB"))
    assert np.array_equal(back, image)


def test_missing_tensorboard_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import → ImportError
    with pytest.raises(ConfigError, match=r"pip install 'distillad\[track\]'"):
        make_logger("tensorboard", tmp_path)


def test_missing_mlflow_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(ConfigError, match="pip install mlflow-skinny"):
        make_logger("mlflow", tmp_path)


def test_mlflow_local_file_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # must be ignored: no network
    log = make_logger("mlflow", tmp_path / "run")
    log.log_scalars({"loss": 0.25}, 1, prefix="train/")
    log.log_image("val/overlays", np.zeros((4, 4, 3), np.uint8), 1)
    log.close()
    hist = log.client.get_metric_history(log.run_id, "train/loss")
    assert [(m.step, m.value) for m in hist] == [(1, 0.25)]
    assert (tmp_path / "run" / "mlruns").is_dir()
