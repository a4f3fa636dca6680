"""What ``results.json`` holds: the metric and measure names, and ``RESULTS_SCHEMA`` (JSON Schema
draft 7), checked with the ``jsonschema`` library by ``validate``."""

from __future__ import annotations

import math
from typing import Any

import jsonschema

__all__ = ["METRICS", "RANKING_METRICS", "DECISION_METRICS", "MEASURES", "SUMMARY_KEYS", "SCHEMA_VERSION",
           "RESULTS_SCHEMA", "validate"]

#: quality metrics: (key in metrics.json, column title); every run has the ranking ones
RANKING_METRICS = (("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("aupro", "AUPRO@0.3"),
                   ("image_f1_max", "F1-max"))
#: what a user acts on, at the run's calibrated thresholds (absent without validation images or masks)
DECISION_METRICS = (("threshold_accuracy", "acc@thr"), ("threshold_precision", "prec@thr"),
                    ("threshold_tpr", "recall@thr"), ("threshold_fpr", "FPR@thr"),
                    ("mask_precision", "mask prec"), ("mask_recall", "mask recall"))
METRICS = RANKING_METRICS + DECISION_METRICS
#: cost measures: (key, column title, decimals in results.md)
MEASURES = (("seconds_per_epoch", "s/epoch", 2), ("images_per_s_b1", "img/s b1", 1),
            ("images_per_s_b16", "img/s b16", 1), ("peak_memory_mb", "peak MB", 1))
SUMMARY_KEYS = tuple(k for k, _ in METRICS) + tuple(k for k, _, _ in MEASURES)
SCHEMA_VERSION = 1


def _obj(required: list[str] | None = None, closed: bool = False, **props: Any) -> dict[str, Any]:
    """An object schema: ``props`` as properties, all of ``required`` present, nothing else when ``closed``."""
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    if closed:
        out["additionalProperties"] = False
    return out


def _array(items: dict[str, Any], min_items: int = 0) -> dict[str, Any]:
    return {"type": "array", "items": items, **({"minItems": min_items} if min_items else {})}


_NUM = {"type": ["number", "null"]}  # "number" is finite here (NaN is written as null)
_STR = {"type": "string"}
_INT = {"type": "integer"}
_POS = {"type": "integer", "minimum": 1}
_STAT = _obj(["mean", "std", "n"], closed=True, mean=_NUM, std=_NUM, n={"type": "integer", "minimum": 0})
# results written before the decision columns existed stay valid: those columns are optional
_SUMMARY_ROW = _obj([k for k in SUMMARY_KEYS if k not in dict(DECISION_METRICS)], closed=True,
                    **{k: _STAT for k in SUMMARY_KEYS})
_TEACHER = _obj(["name", "weights_sha256"], name=_STR, weights_sha256=_STR)
_VERSIONS = _obj(["distillad", "torch"], distillad=_STR, torch=_STR)
_CONFIG = _obj(["model", "model_kwargs", "data", "epochs", "batch_size", "image_size", "seed"],
               model=_STR, model_kwargs={"type": "object"}, data=_STR, epochs=_POS, batch_size=_POS,
               image_size=_POS, seed=_INT)
_TIMING = _obj(["epochs", "train_seconds_total", "seconds_per_epoch", "images_per_s_b1", "images_per_s_b16",
                "warmup", "repeats", "method"],
               epochs=_INT, train_seconds_total=_NUM, seconds_per_epoch=_NUM, images_per_s_b1=_NUM,
               images_per_s_b16=_NUM, warmup=_INT, repeats=_INT, method=_STR)
_MEMORY = _obj(["peak_memory_mb", "weights_mb", "method", "device"],
               peak_memory_mb=_NUM, weights_mb=_NUM, method=_STR, device=_STR)
_RUN = _obj(["category", "model", "seed", "run_dir", "config", "teacher", "weights_sha256", "versions",
             "metrics", "timing", "memory", "machine"],
            category=_STR, model=_STR, seed=_INT, run_dir=_STR, config=_CONFIG, teacher=_TEACHER,
            weights_sha256=_STR, request={"type": "object"}, versions={"type": "object", "required": ["distillad", "torch"]},
            metrics=_obj([k for k, _ in RANKING_METRICS], **{k: _NUM for k, _ in METRICS}),
            timing=_TIMING, memory=_MEMORY, machine={"type": "object"})
_CATEGORY = _obj(["name", "path", "slug", "image_size", "paper_key"],
                 name=_STR, path=_STR, slug=_STR, image_size=_POS, paper_key=_STR)
_PROTOCOL = _obj(["models", "categories", "seeds", "epochs", "teachers", "model_kwargs", "quick", "batch_size",
                  "thresholds", "timing", "memory"],
                 models=_array(_STR, 1), categories=_array(_CATEGORY, 1), seeds=_array(_INT, 1), epochs={"anyOf": [_POS, {"const": "auto"}]},
                 batch_size={"type": "object", "additionalProperties": _INT}, teachers=_array(_TEACHER),
                 model_kwargs={"type": "object", "additionalProperties": {"type": "object"}},
                 quick={"type": "boolean"}, thresholds=_STR, timing=_STR, memory=_STR)
_MACHINE = _obj(["cpu", "cores", "torch_threads", "device", "torch"], cpu=_STR, cores=_INT, torch_threads=_INT,
                device=_STR, gpu={"type": ["string", "null"]}, torch=_STR)
_SUMMARY = _obj(["categories", "overall"], closed=True,
                categories={"type": "object", "additionalProperties": {"type": "object", "additionalProperties": _SUMMARY_ROW}},
                overall={"type": "object", "additionalProperties": _SUMMARY_ROW})
_PAPER_ROW = _obj(["model", "category", "paper_key", "metric", "ours", "ours_std", "paper", "difference", "source",
                   "cite", "paper_teacher", "paper_image_size", "paper_epochs"],
                  model=_STR, category=_STR, paper_key=_STR, metric={"type": "string", "enum": [k for k, _ in METRICS]},
                  ours=_NUM, ours_std=_NUM, paper={"type": "number"}, difference=_NUM, source=_STR, cite=_STR,
                  paper_teacher={"type": ["string", "null"]}, paper_image_size={"type": ["integer", "null"]},
                  paper_epochs={"type": ["integer", "string", "null"]})

RESULTS_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "distillad benchmark results.json",
    **_obj(["schema_version", "created", "library", "machine", "protocol", "runs", "summary", "paper_comparison"],
           schema_version={"type": "integer", "enum": [SCHEMA_VERSION]}, created=_STR, library=_VERSIONS,
           machine=_MACHINE, protocol=_PROTOCOL, runs=_array(_RUN, 1), summary=_SUMMARY,
           paper_comparison=_array(_PAPER_ROW)),
}


def _finite_number(checker: Any, x: Any) -> bool:
    """JSON numbers are finite: NaN and infinities (which ``json`` would write as invalid JSON) are not numbers."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft7Validator,
    type_checker=jsonschema.Draft7Validator.TYPE_CHECKER.redefine("number", _finite_number))


def _path(parts: Any) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def validate(instance: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """Errors of ``instance`` against ``schema`` (default ``RESULTS_SCHEMA``), each starting with the
    JSON path of the offending value (``$.runs[0].metrics: 'aupro' is a required property``);
    [] when valid."""
    validator = _Validator(RESULTS_SCHEMA if schema is None else schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [f"{_path(e.absolute_path)}: {e.message}" for e in errors]
