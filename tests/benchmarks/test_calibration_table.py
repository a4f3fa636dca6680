"""benchmarks/calibration_table.py: per-method decisions on a tiny run, equal to `test --threshold-method`'s,
and the run folder left untouched."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from helpers.hardening import TINY, fingerprint

from distillad import api
from distillad.calibration import CalibrationSettings

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "calibration_table.py"
spec = importlib.util.spec_from_file_location("calibration_table", SCRIPT)
table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table)  # type: ignore[union-attr]


def test_table_matches_test_with_each_method_and_writes_nothing_into_the_run(tiny_data, tmp_path, one_thread):
    run = tmp_path / "run"
    api.train("rd", tiny_data, run, val_fraction=0.3, **TINY)
    before = fingerprint(run)
    md, js = tmp_path / "calibration.md", tmp_path / "calibration.json"
    assert table.main([str(run), "--md", str(md), "--json", str(js), "--quantile", "0.9", "--device", "cpu"]) == 0
    assert fingerprint(run) == before  # thresholds re-fitted in memory only
    rows = {r["method"]: r for r in json.loads(js.read_text())}
    assert set(rows) == {"stored (sigma)", *table.METHODS}
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    for method in table.METHODS:
        got = api.test(copy, device="cpu", calibration=CalibrationSettings(method, quantile=0.9))
        for key, _ in table.COLUMNS:
            if key in got["metrics"]:
                assert rows[method][key] == pytest.approx(got["metrics"][key], nan_ok=True), (method, key)
    text = md.read_text()
    assert "calibration_table.py" in text and f"| {Path(tiny_data).name} | synthetic | 1 |" in text
