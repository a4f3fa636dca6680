"""What computes a batch for ``distillad serve``: the run's PyTorch model, or the file that
``distillad export`` wrote for it, run with onnxruntime (ONNX) or OpenVINO (``--format openvino``). Both take a list of (3, H, W) float32
images in [0, 1] at the run's image size and return (maps (B, 1, H, W), scores (B,)) as numpy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from ..checkpoint import load_run, read_run_spec
from ..data.resize import run_geometry
from ..engine import resolve_device
from ..errors import CheckpointError, ConfigError
from ..precision import check_precision, predict_batch, prepare_for_inference

__all__ = ["Backend", "TorchBackend", "OnnxBackend", "OpenVinoBackend", "load_backend", "check_backend",
           "finished_spec", "BACKENDS"]

BACKENDS = ("torch", "onnx", "openvino")
_DEFAULT_FILE = {"onnx": "model.onnx", "openvino": "model.xml"}


class Backend(Protocol):
    name: str
    device: str

    def predict(self, images: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """Images (3, H, W) → (maps (B, 1, H, W), scores (B,)) float32."""
        ...


def finished_spec(run: str | Path) -> dict[str, Any]:
    """run.json of a trained run (format checked), or a ``CheckpointError`` saying why it cannot serve."""
    spec = read_run_spec(run)
    if not spec.get("finished"):
        raise CheckpointError(f"{run}: training did not finish, nothing to serve")
    return spec


class TorchBackend:
    """The run's model rebuilt by ``checkpoint.load_run`` (format, weights and teacher hashes checked)."""

    name = "torch"

    def __init__(self, run: str | Path, device: str = "auto", precision: str = "fp32") -> None:
        dev = resolve_device(device)
        self.precision = check_precision(precision, dev)
        model, self.spec = load_run(run, dev)
        self.model = prepare_for_inference(model, dev)  # BatchNorm folded
        self.dev = dev
        self.device = str(dev) if precision == "fp32" else f"{dev} ({precision})"

    def predict(self, images: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = predict_batch(self.model, torch.stack(list(images)).to(self.dev), self.precision)
        return maps.cpu().numpy(), scores.cpu().numpy()


class OnnxBackend:
    """``distillad export``'s file (input ``images`` (B, 3, H, W) → ``anomaly_maps``, ``scores``) on
    onnxruntime; its input size must be the run's. Nothing ties the file to the run's weights beyond
    that: serve the file exported from this run."""

    name = "onnx"

    def __init__(self, run: str | Path, onnx_path: str | Path | None = None, device: str = "auto") -> None:
        ort, self.spec, path = _runtime("onnx", "onnxruntime", "export", run, onnx_path)
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise CheckpointError(f"{path}: not a loadable ONNX model ({e})") from None
        names = [i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()]
        if names != (["images"], ["anomaly_maps", "scores"]):
            raise CheckpointError(f"{path}: inputs/outputs {names}, expected (['images'], ['anomaly_maps', 'scores']) "
                                  "as `distillad export` writes them")
        shape = self.session.get_inputs()[0].shape
        size = list(run_geometry(self.spec)[0])
        hw = [size, size] if isinstance(size, int) else list(size)
        if list(shape[2:]) != hw:
            raise CheckpointError(f"{path}: input size {shape[2:]} but the run {run} works at {hw}; "
                                  "export this run's model")
        self.path = path
        self.device = self.session.get_providers()[0]

    def predict(self, images: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        x = torch.stack(list(images)).numpy().astype(np.float32, copy=False)
        maps, scores = self.session.run(None, {"images": x})
        return np.asarray(maps, dtype=np.float32), np.asarray(scores, dtype=np.float32).reshape(-1)


class OpenVinoBackend:
    """``distillad export --format openvino``'s model (.xml + .bin) compiled by OpenVINO for the CPU; checked
    like the ONNX file (input ``images`` at the run's size, outputs maps and scores)."""

    name = "openvino"

    def __init__(self, run: str | Path, model_path: str | Path | None = None, device: str = "auto") -> None:
        ov, self.spec, path = _runtime("openvino", "openvino", "openvino", run, model_path)
        try:
            # f32 explicitly: on CPUs with bf16 units OpenVINO would otherwise run in bf16 (maps off by ~1e-3)
            self.compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        except Exception as e:  # noqa: BLE001 - OpenVINO raises its own exception types
            raise CheckpointError(f"{path}: not a loadable OpenVINO model ({e})") from None
        if len(self.compiled.inputs) != 1 or len(self.compiled.outputs) != 2:
            raise CheckpointError(f"{path}: expected one input and two outputs (maps, scores) as `distillad export` "
                                  "writes them")
        size = list(run_geometry(self.spec)[0])
        shape = self.compiled.inputs[0].get_partial_shape()
        hw = [size, size] if isinstance(size, int) else list(size)
        if [d.get_length() if d.is_static else None for d in list(shape)[2:]] != hw:
            raise CheckpointError(f"{path}: input size {shape} but the run {run} works at {hw}; export this run's model")
        self.path, self.device = path, "CPU"

    def predict(self, images: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        res = self.compiled(torch.stack(list(images)).numpy().astype(np.float32, copy=False))
        return np.asarray(res[0], dtype=np.float32), np.asarray(res[1], dtype=np.float32).reshape(-1)


def _runtime(kind: str, module: str, extra: str, run: str | Path,
             model_path: str | Path | None) -> tuple[Any, dict[str, Any], Path]:
    """(the runtime module, run.json, the exported file) for backend ``kind``; one line naming what is missing."""
    import importlib
    try:
        rt = importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"--backend {kind} needs {module}: pip install 'distillad[{extra}]'") from None
    return rt, finished_spec(run), onnx_file(run, model_path, kind)


def onnx_file(run: str | Path, onnx_path: str | Path | None, kind: str = "onnx") -> Path:
    """The exported file to serve (default ``RUN/model.onnx`` or ``RUN/model.xml``), which must exist."""
    path = Path(onnx_path) if onnx_path is not None else Path(run) / _DEFAULT_FILE[kind]
    if not path.is_file():
        fmt = "" if kind == "onnx" else " --format openvino"
        raise CheckpointError(f"{path}: {kind} model file not found; write it with "
                              f"`distillad export --run {run}{fmt} --out {path}` (or pass --model-file FILE)")
    return path


def check_backend(kind: str, run: str | Path, onnx_path: str | Path | None = None) -> None:
    """What can be checked in a moment before a server starts: the run is finished, the backend known,
    the ONNX file there. (Loading the model, the slow part, happens once the server listens.)"""
    finished_spec(run)
    if kind not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {kind!r}")
    if kind == "torch" and onnx_path is not None:
        raise ConfigError("--model-file is only used with --backend onnx or openvino")
    if kind != "torch":
        onnx_file(run, onnx_path, kind)


def load_backend(kind: str, run: str | Path, device: str = "auto", onnx_path: str | Path | None = None,
                 precision: str = "fp32") -> Backend:
    """The backend named ``kind`` (torch | onnx | openvino) over run folder ``run``; ``precision`` is the
    torch backend's (the exported ones carry theirs in the file)."""
    if kind != "torch" and precision != "fp32":
        raise ConfigError(f"--precision {precision} is for --backend torch; an exported model's precision is "
                          "chosen at export (distillad export --fp16 / --quantize)")
    if kind == "torch":
        if onnx_path is not None:
            raise ConfigError("--model-file is only used with --backend onnx or openvino")
        return TorchBackend(run, device, precision)
    if kind == "onnx":
        return OnnxBackend(run, onnx_path, device)
    if kind == "openvino":
        return OpenVinoBackend(run, onnx_path, device)
    raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {kind!r}")
