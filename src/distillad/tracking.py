"""Optional experiment tracking into the run folder: TensorBoard or MLflow, off by default.

Neither is a mandatory dependency: ``make_logger`` imports the backend only when asked, and
says which package to install when it is missing. Everything is written locally under the
run folder (``tensorboard/`` event files, an ``mlruns/`` file store); nothing goes to a server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import ConfigError

__all__ = ["Logger", "TensorBoardLogger", "MLflowLogger", "make_logger", "KINDS"]

KINDS = ("tensorboard", "mlflow")


@runtime_checkable
class Logger(Protocol):
    """What the engine and api call: scalars per step, images per step, close at the end."""

    def log_scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None: ...

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None: ...

    def close(self) -> None: ...


def _check_image(tag: str, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"log_image({tag!r}): expected a uint8 HxWx3 array, got {image.dtype} {image.shape}")
    return image


class TensorBoardLogger:
    """``torch.utils.tensorboard.SummaryWriter`` writing to ``<run_dir>/tensorboard/``."""

    def __init__(self, run_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--logger tensorboard needs the tensorboard package: "
                              "pip install 'distillad[track]'") from None
        self.log_dir = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        """One scalar per key, tagged ``prefix + key`` (e.g. ``"train/" + "loss"``)."""
        for k, v in values.items():
            self.writer.add_scalar(prefix + k, float(v), int(step))

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """A uint8 HxWx3 image (e.g. a strip of validation overlays)."""
        self.writer.add_image(tag, _check_image(tag, image), int(step), dataformats="HWC")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class MLflowLogger:
    """An MLflow run in a local file store ``<run_dir>/mlruns`` (experiment ``distillad``), no server.

    The tracking URI is given to the client explicitly, so ``MLFLOW_TRACKING_URI`` is never used, and
    MLflow's usage telemetry is switched off (``MLFLOW_DISABLE_TELEMETRY``) unless the user set it.
    """

    def __init__(self, run_dir: str | Path) -> None:
        try:
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before mlflow starts its telemetry
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError("--logger mlflow needs MLflow: pip install mlflow-skinny") from None
        self.store = (Path(run_dir) / "mlruns").resolve()
        self.store.mkdir(parents=True, exist_ok=True)
        uri = self.store.as_uri()
        # MLflow >= 3 refuses a file store unless this is set; a file store is the point (no server, no DB)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            exp = self.client.get_experiment_by_name("distillad")
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment("distillad")
            self.run_id = self.client.create_run(exp_id, run_name=Path(run_dir).name).info.run_id
        except Exception as e:  # an MlflowException: say it in one line, not a traceback
            raise ConfigError(f"--logger mlflow: cannot open the file store {self.store}: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    def log_scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        """One metric per key, named ``prefix + key``, at ``step``."""
        for k, v in values.items():
            self.client.log_metric(self.run_id, prefix + k, float(v), step=int(step))

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """A PNG artifact ``<tag>/step_<step>.png``."""
        self.client.log_image(self.run_id, _check_image(tag, image), artifact_file=f"{tag}/step_{int(step):06d}.png")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def make_logger(kind: str | None, run_dir: str | Path) -> Logger | None:
    """The logger ``kind`` ("tensorboard", "mlflow"; None or "none": no tracking) writing into ``run_dir``."""
    if kind is None or kind == "none":
        return None
    if kind == "tensorboard":
        return TensorBoardLogger(run_dir)
    if kind == "mlflow":
        return MLflowLogger(run_dir)
    raise ConfigError(f"logger must be one of {', '.join(KINDS)} (or None), got {kind!r}")
