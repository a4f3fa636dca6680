"""Export a trained run: images in [0, 1] → (anomaly maps, scores), as ONNX (float32, int8 or float16)
or OpenVINO IR, checked against PyTorch.

Needs the ``export`` extra (``pip install 'distillad[export]'``: onnx and onnxruntime),
``openvino`` for ``fmt="openvino"``. They stay optional: training, testing, predicting and serving
with PyTorch need none of them, and onnxruntime alone is ~20 MB more in every install.

- int8: onnxruntime's static quantisation (QDQ, int8 weights per channel, int8 activations,
  MinMax ranges) of the student side (the teacher stays float32, see ``_int8``), calibrated on the
  run's **validation good images** only, the split run.json
  records (``data.val_fraction``, ``data.split_seed``); never on test images.
- float16: onnxruntime's float16 conversion, float32 inputs and outputs kept (onnxruntime's CPU
  provider runs few float16 kernels and casts around the rest: meant for GPU providers).
- openvino: ``openvino.convert_model`` of the ONNX model (int8 QDQ included), float16 weights with ``fp16``.

``--out`` is checked before the model loads: right extension, not inside the run folder or the
run's data folder, writable. The file is written atomically (nothing left on a full disk).
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from .checkpoint import atomic_write_bytes, load_run, read_run_spec
from .data import AnomalyDataset
from .data.resize import run_geometry
from .errors import ConfigError, DataError, OutputError
from .hints import check_int
from .outputs import check_writable, first_existing_parent, is_within, write_failed
from .teachers import faithful
from .validation import validation_samples

__all__ = ["export", "export_onnx", "PredictWrapper", "validation_images", "FORMATS"]

FORMATS = {"onnx": ".onnx", "openvino": ".xml"}
_EXTRA = {"onnx": "export", "onnxruntime": "export", "openvino": "openvino"}


class PredictWrapper(nn.Module):
    """``model.predict`` as a plain forward, so tracing sees maps and scores."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # the reference map stage (blur as a 1-channel conv): the fused one's matmuls would run in bf16 under
        # OpenVINO's default precision hint on bf16-capable CPUs (scores off by ~2e-3 relative)
        model.fused_map_stage = False

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.predict(images)  # type: ignore[operator]


def _require(*modules: str) -> None:
    """One line naming the extra to install when an optional package is missing."""
    for m in modules:
        if importlib.util.find_spec(m) is None:
            extra = _EXTRA[m]
            raise ConfigError(f"export needs the {m} package: pip install 'distillad[{extra}]'")


def _check_request(run: Path, out: Path, batch_size: int, fmt: str, quantize: str | None, fp16: bool,
                   calibration_images: int | None) -> dict[str, Any]:
    """Every check that needs no model: flags, dependencies, ``out``; returns the run spec."""
    check_int("--batch-size", batch_size)
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if quantize not in (None, "int8"):
        raise ConfigError(f"--quantize must be int8, got {quantize!r}")
    if quantize and fp16:
        raise ConfigError("--quantize int8 and --fp16 together: choose one")
    check_int("--calibration-images", calibration_images, none_ok=True)
    _require("onnx")
    if quantize:
        _require("onnxruntime")
    if fp16 and fmt == "onnx":
        _require("onnxruntime")
    if fmt == "openvino":
        _require("openvino")
    spec = read_run_spec(run)
    if out.suffix.lower() != FORMATS[fmt]:
        raise OutputError(f"--out {out}: --format {fmt} writes a {FORMATS[fmt]} file; name it *{FORMATS[fmt]}")
    if out.is_dir():
        raise OutputError(f"--out {out}: is a folder; give the {FORMATS[fmt]} file to write")
    written = [out] + ([out.with_suffix(".bin")] if fmt == "openvino" else [])
    data = (spec.get("data") or {}).get("path")
    for f in written:
        if is_within(f, run):
            raise OutputError(f"--out {out}: inside the run folder {run}, whose files must not be replaced; "
                              "write the export elsewhere")
        if data and is_within(f, data):
            raise OutputError(f"--out {out}: inside the run's data folder {data}; write the export elsewhere")
    check_writable(first_existing_parent(out.parent))
    return spec


def validation_images(spec: dict[str, Any], limit: int | None = None) -> torch.Tensor:
    """The run's validation good images (N, 3, H, W) in [0, 1]: the split recorded in run.json's ``data``."""
    d = spec.get("data") or {}
    val = validation_samples(spec)
    if not val:
        raise DataError(f"{d['path']}: the run has no validation images (val_fraction "
                        f"{d.get('val_fraction')}) to calibrate int8 on")
    hw, mode = run_geometry(spec)
    ds = AnomalyDataset(val[:limit] if limit else val, image_size=hw, resize=mode)
    return torch.stack([ds[i]["image"] for i in range(len(ds))])


def _onnx_bytes(wrapper: nn.Module, x: torch.Tensor, opset: int) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter handles our ops; the new one needs onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes are fixed at the run's image size
        torch.onnx.export(wrapper, (x,), buf, input_names=["images"], output_names=["anomaly_maps", "scores"],
                          opset_version=opset, dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, "anomaly_maps": {0: "batch"}, "scores": {0: "batch"}})
    return buf.getvalue()


class _Calibration:
    """onnxruntime ``CalibrationDataReader``: the validation images in batches of ``batch``."""

    def __init__(self, images: torch.Tensor, batch: int = 4) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(
            [{"images": images[i:i + batch].numpy()} for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


_QUANTIZED_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]


def _int8(fp32: Path, dst: Path, images: torch.Tensor) -> None:
    """Static int8 of the trained network's convolutions (bottleneck and student decoder), the teacher and the
    anomaly map (feature distances, upsampling, Gaussian blur) kept float32. Measured on RD/bottle
    (benchmarks/results/export.md): an int8 teacher costs ~10 AUPRO points, since the map *is* the
    teacher-student discrepancy and int8 noise in the teacher's features is not the student's.
    Element-wise ops stay float32 (onnxruntime's QLinearMul fails on the input normalisation's broadcast)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static
    pre = fp32.with_name("pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    outside = [n.name for n in onnx.load(str(pre)).graph.node
               if n.op_type in _QUANTIZED_OPS and (not n.name.startswith("/model/") or n.name.startswith("/model/teacher/"))]
    quantize_static(str(pre), str(dst), _Calibration(images), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=_QUANTIZED_OPS,
                    nodes_to_exclude=outside, calibrate_method=CalibrationMethod.MinMax)


def _fp16(fp32: Path, dst: Path) -> None:
    """onnxruntime's float16 conversion (onnxconverter-common's breaks the teacher's Cast nodes)."""
    import onnx
    from onnxruntime.transformers import float16
    model = float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    onnx.save(model, str(dst))


def _openvino(src: Path, dst_xml: Path, fp16: bool) -> None:
    import openvino as ov
    ov.save_model(ov.convert_model(str(src)), str(dst_xml), compress_to_fp16=fp16)


def _run_exported(path: Path, fmt: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(maps, scores) of the written file on ``x``; None when its runtime is not installed."""
    if fmt == "openvino":
        import openvino as ov
        # f32 as ``serve --backend openvino`` runs it: on a CPU with bf16 OpenVINO would otherwise pick bf16
        res = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)
        return np.asarray(res[0]), np.asarray(res[1])
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    maps, scores = sess.run(None, {"images": x})
    return maps, scores


def export(run: str | Path, out: str | Path, batch_size: int = 1, fmt: str = "onnx", quantize: str | None = None,
           fp16: bool = False, calibration_images: int | None = None, opset: int = 17,
           check: bool = True) -> dict[str, Any]:
    """Write ``out`` for the run's model at its image size (dynamic batch); returns a summary with the largest
    difference to PyTorch on a random batch of ``batch_size`` (relative for scores, since int8 and
    float16 change the scale of tiny distances least in relative terms)."""
    run, out = Path(run), Path(out)
    spec = _check_request(run, out, batch_size, fmt, quantize, fp16, calibration_images)
    calib_x = validation_images(spec, calibration_images) if quantize else None
    model, spec = load_run(run, "cpu")
    (h, w), _ = run_geometry(spec)
    size = spec["image_size"]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 3, h, w, generator=gen)
    wrapper = PredictWrapper(model).eval()
    fp32 = _onnx_bytes(wrapper, x, opset)
    info: dict[str, Any] = {"format": fmt, "precision": quantize or ("fp16" if fp16 else "fp32"), "out": str(out),
                            "image_size": size, "method": spec["method"],
                            "image_threshold": (spec.get("calibration") or {}).get("image_threshold")}
    if fmt == "onnx":
        info["onnx"] = str(out)  # the key of distillad ≤ 0.2
    if calib_x is not None:
        info["calibration_images"] = len(calib_x)
    try:
        if fmt == "onnx" and not quantize and not fp16:
            atomic_write_bytes(out, fp32)
        else:
            _convert_and_write(fp32, out, fmt, quantize, fp16, calib_x)
    except OSError as e:
        raise write_failed(out, e) from None
    if check:
        got = _run_exported(out, fmt, x.numpy())
        if got is None:
            info["checked"] = "onnxruntime not installed"
            return info
        with torch.no_grad(), faithful():  # the network the export traced
            ref_maps, ref_scores = (t.numpy() for t in wrapper(x))
        maps, scores = got
        info["max_abs_diff_maps"] = float(np.abs(maps - ref_maps).max())
        info["max_abs_diff_scores"] = float(np.abs(scores - ref_scores).max())
        info["max_rel_diff_scores"] = float((np.abs(scores - ref_scores) / np.maximum(np.abs(ref_scores), 1e-12)).max())
        if not all(math.isfinite(v) for v in (info["max_abs_diff_maps"], info["max_abs_diff_scores"])):
            raise ConfigError(f"{out}: the exported model gives non-finite outputs; do not use it")
    return info


def _convert_and_write(fp32: bytes, out: Path, fmt: str, quantize: str | None, fp16: bool,
                       calib_x: torch.Tensor | None) -> None:
    """fp32 ONNX bytes → int8 / fp16 ONNX or OpenVINO IR in a scratch folder, then moved to ``out``
    (the IR's .xml last, so an .xml always has its .bin)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".distillad-export-", dir=out.parent) as tmp:  # same file system
        work = Path(tmp)
        src = work / "fp32.onnx"
        src.write_bytes(fp32)
        if quantize:
            _int8(src, work / "int8.onnx", calib_x)  # type: ignore[arg-type]
            src = work / "int8.onnx"
        if fmt == "onnx":
            if fp16:
                _fp16(src, work / "fp16.onnx")
                src = work / "fp16.onnx"
            atomic_write_bytes(out, src.read_bytes())
            return
        _openvino(src, work / "model.xml", fp16)
        for suffix in (".bin", ".xml"):
            os.replace(work / f"model{suffix}", out.with_suffix(suffix))


def export_onnx(run: str | Path, out: str | Path, batch_size: int = 1, opset: int = 17,
                check: bool = True) -> dict[str, Any]:
    """Float32 ONNX export (``export`` with its defaults); kept for callers of distillad ≤ 0.2."""
    return export(run, out, batch_size=batch_size, opset=opset, check=check)
