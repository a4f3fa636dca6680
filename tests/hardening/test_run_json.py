"""A run folder edited by hand or by a hostile user: refused on load with one line naming the field,
and the refusal changes nothing in the folder."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from helpers.hardening import fingerprint
from safetensors.torch import load_file, save_file

from distillad.checkpoint import load_run
from distillad.errors import CheckpointError
from distillad.run_schema import seal


def _set(spec: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    node = spec
    for k in path:
        node = node[k]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()

# (field, new value, reseal the integrity hash?, text the message must contain)
EDITS = [
    ("image_size", True, True, "'image_size'"),
    ("image_size", 1.5, True, "'image_size'"),
    ("image_size", None, True, "'image_size'"),
    ("image_size", 10**9, True, "'image_size'"),
    ("image_size", [256], True, "'image_size'"),
    ("model_kwargs.sigma", "4", True, "'model_kwargs.sigma'"),
    ("model_kwargs.sigma", -1, True, "'model_kwargs.sigma'"),
    ("model_kwargs.decoder_relu", "no", True, "'model_kwargs.decoder_relu'"),
    ("model_kwargs.lr", "fast", True, "'model_kwargs.lr'"),
    ("model_kwargs.combine", "max", True, "'model_kwargs.combine'"),
    ("method", ["rd"], True, "'method'"),
    ("method", "nope", True, "'nope'"),
    ("teacher", ["efficientnet_lite0"], True, "'teacher'"),
    ("train", "fast", True, "'train'"),
    ("data", None, True, "'data'"),
    ("calibration", [], True, "'calibration'"),
    ("calibration.image_threshold", "high", True, "'calibration.image_threshold'"),
    ("calibration.image_threshold", float("nan"), True, "calibration.image_threshold"),
    ("calibration.method", "bogus", True, "'calibration.method'"),
    ("calibration.note", "a word", True, "'calibration.note'"),
    ("train.threshold_method", "bogus", True, "'train.threshold_method'"),
    ("weights.file", "../../other/model.safetensors", True, "'weights.file'"),
    ("weights.file", "/etc/passwd", True, "'weights.file'"),
    ("weights.sha256", _DELETE, True, "'weights'"),
    ("weights", _DELETE, True, "'weights'"),
    ("finished", "yes", True, "'finished'"),
    ("surprise", 1, True, "surprise"),
    ("format_version", "3", True, "a str"),
    ("format_version", None, True, "a NoneType"),
    ("integrity", _DELETE, False, "'integrity'"),
    # edits the weights' hash does not cover, with the integrity hash left as it was
    ("method", "rd_var", False, "integrity hash differs"),
    ("model_kwargs.sigma", 8.0, False, "integrity hash differs"),
    ("calibration.image_threshold", 1e9, False, "integrity hash differs"),
    ("image_size", 64, False, "integrity hash differs"),
    ("weights.sha256", "0" * 64, False, "integrity hash differs"),
]


@pytest.mark.parametrize("field,value,reseal,needle", EDITS,
                         ids=[f"{f}={v!r}{'' if r else '-unsealed'}" for f, v, r, _ in EDITS])
def test_edited_run_json_is_refused(field, value, reseal, needle, run_copy, cli):
    spec = json.loads((run_copy / "run.json").read_text())
    _set(spec, field, value)
    if reseal:  # as if the editor also recomputed the hash: the schema must still catch it
        seal(spec)
    (run_copy / "run.json").write_text(json.dumps(spec))
    before = fingerprint(run_copy)
    with pytest.raises(CheckpointError, match=None) as e:
        load_run(run_copy)
    assert needle in str(e.value), str(e.value)
    code, err = cli("test", "--run", run_copy)
    assert code == 2 and needle in err
    assert fingerprint(run_copy) == before


def test_nan_weights_are_refused_even_with_a_matching_hash(run_copy):
    """All-NaN weights must not score ``nan`` → "good": the load refuses them."""
    path = run_copy / "model.safetensors"
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in load_file(path).items()}
    save_file(state, path)
    spec = json.loads((run_copy / "run.json").read_text())
    spec["weights"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (run_copy / "run.json").write_text(json.dumps(seal(spec)))
    with pytest.raises(CheckpointError, match="NaN/inf"):
        load_run(run_copy)


def test_unedited_copy_loads(run_copy):
    model, spec = load_run(run_copy)
    assert spec["integrity"]["sha256"] and model.model_name == "rd"
