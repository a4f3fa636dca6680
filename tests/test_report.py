"""report.html (``distillad.report``): built from small synthetic arrays it is self-contained and holds the
tables; written by ``api.test`` on a tiny trained run it agrees with metrics.json."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from distillad.metrics import compute_metrics, decision_metrics, per_defect_metrics, pro_curve
from distillad.report import build_report, worst_misses
from distillad.visualize import overlay, png_bytes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Every tag's attributes, and the text of the table cells, by table id."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.cells: dict[str, list[str]] = {}
        self._table: str | None = None
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self._table = dict(attrs).get("id") or ""
            self.cells[self._table] = []
        if tag in ("td", "th"):
            self._in_cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._table is not None and self._in_cell and data.strip():
            self.cells[self._table].append(data.strip())


def synthetic_report_data(seed: int = 0):
    """Labels, scores, defect types, masks and maps of 10 tiny test images (4 good, 2 types of 3)."""
    rng = np.random.default_rng(seed)
    defects = np.array(["good"] * 4 + ["crack"] * 3 + ["hole"] * 3)
    labels = defects != "good"
    masks = np.zeros((10, 16, 16), bool)
    for i in np.flatnonzero(labels):
        y, x = rng.integers(2, 10, 2)
        masks[i, y:y + 4, x:x + 4] = True
    maps = rng.random(masks.shape) * 0.5 + masks * rng.uniform(0, 1, masks.shape)
    scores = maps.reshape(10, -1).max(1)
    return labels, scores, defects, masks, maps


def synthetic_report(tmp_path: Path) -> tuple[Path, dict]:
    """report.html built from ``synthetic_report_data`` with a gallery of heat-map overlays; its path and metrics."""
    labels, scores, defects, masks, maps = synthetic_report_data()
    thr = float(np.quantile(scores[~labels], 0.5))  # some false alarms, maybe some misses
    metrics = {**compute_metrics(labels, scores, masks, maps), **decision_metrics(labels, scores, thr),
               "n_test": 10, "n_defective": int(labels.sum())}
    per_defect = per_defect_metrics(labels, scores, defects, thr, masks, maps)
    fn, fa = worst_misses(labels, scores, thr)
    rgb = np.random.default_rng(1).random((3, 16, 16))

    def pics(idx):
        return [(f"{defects[i]} {scores[i]:.3f}", png_bytes(overlay(rgb, maps[i], 0, 1.5, threshold=1.0,
                                                                     gt_mask=masks[i]))) for i in idx]
    text = build_report("synthetic <test>", {"run": "runs/x", "method": "rd"}, metrics, per_defect, labels, scores,
                        thr, pro_curve(masks, maps), (pics(fn), pics(fa)))
    path = tmp_path / "report.html"
    path.write_text(text, encoding="utf-8")
    return path, {"metrics": metrics, "per_defect": per_defect, "fn": fn, "fa": fa}


def assert_self_contained(text: str) -> _Page:
    """No address outside the page; every picture an embedded, decodable PNG; no script."""
    bare = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "data:", text).lower()  # payloads may hold any letters
    assert 'src="http' not in text and re.search(r"https?:|//|url\(|@import", bare) is None
    assert bare.replace("http-equiv", "").count("http") == 0  # the only one: the Content-Security-Policy's meta
    page = _Page()
    page.feed(text)
    imgs = [a for t, a in page.tags if t == "img"]
    assert imgs
    for a in imgs:
        src = a.get("src") or ""
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG_MAGIC)
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object")]
    return page


def test_worst_misses_at_a_threshold_and_without():
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.9, 0.7, 0.2, 0.95, 0.3]
    assert worst_misses(labels, scores, 0.5) == ([3, 5], [1, 2])  # lowest defective, highest good first
    assert worst_misses(labels, scores, 0.5, k=1) == ([3], [1])
    assert worst_misses(labels, scores, 0.05) == ([], [1, 2, 0])
    assert worst_misses(labels, scores, None, k=2) == ([3, 5], [1, 2])


def test_report_is_self_contained_and_holds_the_tables(tmp_path):
    path, data = synthetic_report(tmp_path)
    text = path.read_text(encoding="utf-8")
    page = assert_self_contained(text)
    assert "synthetic &lt;test&gt;" in text  # escaped
    metrics_cells = page.cells["metrics"]
    for name, key in (("I-AUROC", "image_auroc"), ("AUPRO", "aupro"), ("AUPRO@0.05", "aupro_005"),
                      ("SegF1-max", "seg_f1_max"), ("false alarms @thr", "threshold_fpr")):
        assert metrics_cells[metrics_cells.index(name) + 1] == f"{data['metrics'][key]:.4f}"
    per_type = page.cells["per-defect"]
    for name, row in data["per_defect"].items():
        i = per_type.index(name)
        assert per_type[i + 1:i + 5] == [str(row["count"]), f"{row['image_auroc']:.4f}", f"{row['recall']:.4f}",
                                         f"{row['aupro']:.4f}"]
    assert "good" in per_type
    ids = {a.get("id") for _, a in page.tags}
    assert {"metrics", "per-defect", "scores", "pro"} <= ids
    n_gallery = len([a for t, a in page.tags if t == "img" and "plot" not in (a.get("class") or "")])
    assert n_gallery == len(data["fn"]) + len(data["fa"]) > 0


def test_report_without_masks_threshold_or_misses():
    labels, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])
    per_defect = per_defect_metrics(labels, scores, ["good"] * 2 + ["a"] * 2)
    text = build_report("t", {}, compute_metrics(labels, scores), per_defect, labels, scores)
    page = assert_self_contained(text)
    assert "pro" not in {a.get("id") for _, a in page.tags}
    assert "closest to a miss" in text and page.cells["per-defect"][:2] == ["defect type", "images"]
    with pytest.raises(ValueError, match="as many labels as scores"):
        build_report("t", {}, {}, {}, [0, 1], [0.5])


def test_distillad_test_writes_the_report_and_prints_per_defect_results(serve_run, tmp_path, one_thread, capsys):
    from distillad.cli import main
    run = tmp_path / "run"
    shutil.copytree(serve_run, run)
    assert main(["test", "--run", str(run), "--batch-size", "8"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((run / "metrics.json").read_text())
    per_defect, metrics = saved["per_defect"], saved["metrics"]
    assert set(per_defect) == {"crack", "scratch", "spot"}
    for name, row in per_defect.items():
        assert row["count"] == 2 and {"image_auroc", "recall", "aupro"} <= set(row)
        assert re.search(rf"^{name}\s+2\s+{row['image_auroc']:.4f}\s+{row['recall']:.4f}\s+{row['aupro']:.4f}$",
                         printed, re.M)
    for k in ("aupro_005", "seg_f1_max", "seg_f1"):
        assert k in metrics and re.search(rf"^{k}\s", printed, re.M)
    assert re.search(r"^defect type\s+n\s+I-AUROC", printed, re.M) and re.search(r"^good\s+2\s", printed, re.M)
    assert "report.html" in printed
    text = (run / "report.html").read_text(encoding="utf-8")
    page = assert_self_contained(text)
    assert all(name in page.cells["per-defect"] for name in per_defect)
    assert "Worst misses" in text
