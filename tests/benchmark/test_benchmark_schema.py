"""distillad.benchmark.schema: the written results.json matches RESULTS_SCHEMA, and malformed
content is rejected with messages that name the JSON path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest

from distillad.benchmark import RESULTS_SCHEMA, validate


def test_results_json_validates_against_schema(bench: SimpleNamespace) -> None:
    on_disk = json.loads((bench.out / "results.json").read_text())
    assert validate(on_disk) == [] and validate(on_disk, RESULTS_SCHEMA) == []
    jsonschema.validate(on_disk, RESULTS_SCHEMA)
    run = on_disk["runs"][0]
    assert run["teacher"]["name"] == "efficientnet_lite0" and run["teacher"]["weights_sha256"] == "random"
    assert on_disk["library"]["distillad"] and on_disk["machine"]["cpu"]
    assert run["config"]["epochs"] == 1 and run["config"]["image_size"] == 64 and run["config"]["batch_size"] == 4
    assert run["timing"]["seconds_per_epoch"] > 0 and run["timing"]["images_per_s_b16"] > 0
    assert run["memory"]["peak_memory_mb"] > run["memory"]["weights_mb"] > 0
    assert (bench.out / run["run_dir"] / "metrics.json").is_file()


def test_schema_errors_name_the_json_path(bench: SimpleNamespace) -> None:
    broken = copy.deepcopy(bench.results)
    del broken["runs"][0]["metrics"]["aupro"]
    broken["protocol"]["epochs"] = "one"
    broken["summary"]["overall"]["rd"]["image_auroc"]["mean"] = float("nan")  # NaN is no JSON number
    broken["summary"]["overall"]["rd"]["image_auroc"]["extra"] = 1
    errors = validate(broken)
    assert len(errors) == 4, errors
    assert any(e.startswith("$.runs[0].metrics: ") and "'aupro' is a required property" in e for e in errors)
    assert any(e.startswith("$.protocol.epochs: ") and "'one'" in e for e in errors)
    assert any(e.startswith("$.summary.overall.rd.image_auroc.mean: ") for e in errors)
    assert any(e.startswith("$.summary.overall.rd.image_auroc: ") and "'extra'" in e for e in errors)


def test_malformed_results_file_is_rejected(bench: SimpleNamespace, tmp_path: Path) -> None:
    broken = copy.deepcopy(bench.results)
    broken["runs"][1]["seed"] = "0"
    del broken["paper_comparison"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(broken))
    errors = validate(json.loads(path.read_text()))
    assert errors == ["$: 'paper_comparison' is a required property",
                      "$.runs[1].seed: '0' is not of type 'integer'"], errors
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, RESULTS_SCHEMA)
