"""What a ``run.json`` may hold: a JSON Schema (checked with ``jsonschema``) and an integrity hash.

``run.json`` decides how a model is rebuilt and judged (method keywords, image size, thresholds,
which weights file), so every field is type-checked on load and the whole file is covered by a
SHA-256 of its canonical JSON (``integrity.sha256``): an edit that the weights' hash does not
cover (a swapped method, a thresholds tweak, a removed weights hash) is refused, never used.
The ``train`` and ``data`` fields are generated from the run settings (``distillad.settings``); method
keywords are checked against the method's own schema (``params.model_kwargs_schema``).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .params import model_kwargs_schema
from .settings import THRESHOLD_METHODS, settings_of

__all__ = ["run_spec_schema", "spec_digest", "seal", "validate_run_spec"]

_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_NUM = {"type": "number"}
_STR_OR_NULL = {"type": ["string", "null"]}
_NUM_OR_NULL = {"type": ["number", "null"]}
_METHODS = list(THRESHOLD_METHODS)
#: a file name inside the run folder: no separator, no "..", not hidden
_OWN_FILE = {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", "not": {"pattern": r"\.\."}}

#: run.json keeps the settings as the run resolved them: the method's epochs, batch and image size
_RESOLVED = {"epochs": {"type": "integer", "minimum": 1}}


def _section(where: str, extra: dict[str, Any]) -> dict[str, Any]:
    """run.json's ``where`` ("train" or "data") object: the settings kept there (``Setting.run``), plus ``extra``."""
    props, required = {}, []
    for st in settings_of():
        if st.run is None or not st.run.startswith(where + "."):
            continue
        key = st.run.split(".")[1]
        schema = _RESOLVED.get(key, st.schema)
        if st.required_in_run and isinstance(schema.get("type"), list):  # kept as resolved: never null
            schema = {**schema, "type": [t for t in schema["type"] if t != "null"][0]}
        props[key] = schema
        required += [key] if st.required_in_run else []
    return {"type": "object", "required": required, "properties": {**props, **extra}}


def run_spec_schema() -> dict[str, Any]:
    """The JSON Schema of run.json (its train and data fields from the current run settings)."""
    return {**_RUN_SCHEMA, "properties": {**_RUN_SCHEMA["properties"], "train": _section("train", _TRAIN_EXTRA),
                                          "data": _section("data", _DATA_EXTRA)}}


_TRAIN_EXTRA = {"early_stopping": {"type": ["object", "null"]}}
#: the model input (H, W) that data.resize gives
_DATA_EXTRA = {"input_size": {"type": "array", "minItems": 2, "maxItems": 2,
                              "items": {"type": "integer", "minimum": 32, "maximum": 4096}}}
_RUN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["format_version", "method", "model_kwargs", "teacher", "image_size", "train", "data", "finished",
                 "run_id", "integrity"],
    "properties": {
        "format_version": {"type": "integer"},
        "run_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "versions": {"type": "object", "additionalProperties": {"type": "string"}},
        "created": {"type": "string"}, "finished_at": {"type": "string"},
        "method": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "model_kwargs": {"type": "object"},
        "teacher": {"type": "object", "required": ["name", "weights_sha256", "out_indices", "mean", "std"],
                    "properties": {"name": {"type": "string"}, "weights_sha256": {"type": ["string", "null"]},
                                   "out_indices": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                                   "mean": {"type": "array", "items": _NUM, "minItems": 3, "maxItems": 3},
                                   "std": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0},
                                           "minItems": 3, "maxItems": 3}}},
        "image_size": {"type": "integer", "minimum": 32, "maximum": 4096},
        "train": {}, "data": {},  # run_spec_schema: from the run settings
        "finished": {"type": "boolean"},
        "weights": {"type": "object", "required": ["file", "sha256"],
                    "properties": {"file": _OWN_FILE, "sha256": _HEX64}, "additionalProperties": False},
        # thresholds and statistics are numbers; the method and the synthesis preset are the only words
        "calibration": {"type": "object", "required": ["n_val"],
                        "properties": {"n_val": {"type": "integer", "minimum": 0},
                                       "n_synthetic": {"type": "integer", "minimum": 0},
                                       "method": {"enum": _METHODS}, "pixel_method": {"enum": _METHODS},
                                       "synthesis": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                                       "textures": {"type": "string"},
                                       # calibrate --good: each addition (distillad.feedback.history_entry)
                                       "feedback": {"type": "array", "items": {
                                           "type": "object", "required": ["added_at", "images", "before", "after"],
                                           "properties": {"images": {"type": "array", "items": {
                                               "type": "object", "required": ["path", "sha256"],
                                               "properties": {"path": {"type": "string"}, "sha256": _HEX64}}}}}}},
                        "additionalProperties": _NUM},
        "history": {"type": "array", "items": {"type": "object"}},
        "integrity": {"type": "object", "required": ["sha256"], "properties": {"sha256": _HEX64},
                      "additionalProperties": False},
    },
    "additionalProperties": False,
    # a finished run names its weights and its calibration
    "if": {"properties": {"finished": {"const": True}}},
    "then": {"required": ["weights", "calibration"]},
}


def spec_digest(spec: dict[str, Any]) -> str:
    """SHA-256 of the spec's canonical JSON, without its ``integrity`` field."""
    body = {k: v for k, v in spec.items() if k != "integrity"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def seal(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with its integrity hash set (call right before writing it)."""
    spec["integrity"] = {"sha256": spec_digest(spec)}
    return spec


def validate_run_spec(spec: dict[str, Any], where: Path) -> None:
    """Schema, then integrity, then the method's own keyword schema; a ``CheckpointError`` names the field."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(run_spec_schema()).iter_errors(spec),
                    key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]))
    if errors:
        e = errors[0]
        field = ".".join(map(str, e.absolute_path)) or "<top level>"
        raise CheckpointError(f"{where}: field {field!r}: {e.message}")
    bad = [k for k, v in spec.get("calibration", {}).items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise CheckpointError(f"{where}: field 'calibration.{bad[0]}' is {spec['calibration'][bad[0]]}: "
                              "not a usable threshold")
    if spec_digest(spec) != spec["integrity"]["sha256"]:
        raise CheckpointError(f"{where}: edited after it was written (its integrity hash differs); a run folder "
                              "cannot be trusted once changed: restore the original run.json or retrain")
    try:
        kw_schema = {**model_kwargs_schema(spec["method"]), "additionalProperties": True}  # unknown: rebuild names it
    except Exception as err:  # noqa: BLE001 - an unknown method or a registry error, named below
        raise CheckpointError(f"{where}: method {spec['method']!r}: {err}") from None
    kerr = next(iter(jsonschema.Draft202012Validator(kw_schema).iter_errors(spec["model_kwargs"])), None)
    if kerr is not None:
        field = ".".join(["model_kwargs", *map(str, kerr.absolute_path)])
        raise CheckpointError(f"{where}: field {field!r}: {kerr.message}")
