"""benchmarks/paired.py: the paired t statistics against scipy's ttest_rel, and the table it renders."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from scipy import stats

PAIRED = Path(__file__).resolve().parents[2] / "benchmarks" / "paired.py"
spec = importlib.util.spec_from_file_location("paired", PAIRED)
paired = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paired)  # type: ignore[union-attr]


def test_paired_stats_match_scipy() -> None:
    a = {0: 84.2, 1: 84.5, 2: 83.9, 3: 84.0}
    b = {0: 85.0, 1: 84.9, 2: 85.1, 3: 84.3, 7: 99.0}  # seed 7 has no partner: ignored
    st = paired.paired_stats(a, b)
    d = [b[s] - a[s] for s in range(4)]
    ref = stats.ttest_rel([b[s] for s in range(4)], [a[s] for s in range(4)])
    assert st["n"] == 4
    assert st["diff"] == pytest.approx(sum(d) / 4)
    assert st["p"] == pytest.approx(ref.pvalue)
    lo, hi = ref.confidence_interval(0.95)
    assert st["half"] == pytest.approx((hi - lo) / 2)


def test_paired_stats_edge_cases() -> None:
    assert paired.paired_stats({}, {0: 1.0})["n"] == 0
    one = paired.paired_stats({0: 1.0}, {0: 3.0})
    assert one["n"] == 1 and one["diff"] == 2.0 and math.isnan(one["p"])
    same = paired.paired_stats({0: 100.0, 1: 100.0}, {0: 100.0, 1: 100.0})
    assert same["diff"] == 0.0 and math.isnan(same["p"])


def _run(model: str, cat: str, seed: int, i: float, p: float, pro: float) -> dict:
    return {"model": model, "category": cat, "seed": seed,
            "metrics": {"image_auroc": i, "pixel_auroc": p, "aupro": pro}}


def test_render_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = [_run("rd", "c", s, 1.0, 0.90 + 0.01 * s, 0.80) for s in range(3)]
    runs += [_run("dskd", "c", s, 1.0, 0.95 + 0.01 * s + 0.001 * s * s, 0.70 + 0.02 * s) for s in range(3)]
    results = {"runs": runs, "protocol": {"categories": [{"name": "c", "image_size": 64}], "epochs": 1,
                                          "batch_size": {"rd": 16, "dskd": 16},
                                          "teachers": [{"name": "efficientnet_lite0"}]}}
    f = tmp_path / "results.json"
    f.write_text(json.dumps(results))
    assert paired.main([str(f), "rd", "dskd", "--note", "Verdict: test."]) == 0
    out = capsys.readouterr().out
    rows = {line.split(" | ")[1]: line for line in out.splitlines() if line.startswith("| c |")}
    assert "both at 100 (ceiling)" in rows["I-AUROC"]
    assert "| +5.17 |" in rows["P-AUROC"] and "B better, beyond seed noise" in rows["P-AUROC"]
    assert "| -8.00 |" in rows["AUPRO@0.3"]
    assert out.rstrip().endswith("Verdict: test.")
    assert paired.main([str(f), "rd", "nope"]) == 2
    assert "no runs of nope" in capsys.readouterr().err
