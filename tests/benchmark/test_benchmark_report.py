"""distillad.benchmark.report and summary: the markdown tables against results.json, the papers'
figures beside ours, paper_numbers.json, and the aggregation over seeds and categories."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

from distillad.benchmark import (
    MEASURES,
    METRICS,
    compare_with_papers,
    load_paper_numbers,
    summarize,
    validate,
    write_markdown,
)

MODELS = ["rd", "stfpm"]


def _tables(md: str) -> dict[str, dict[str, list[str]]]:
    """{section title: {first cell: [cells...]}} of the markdown's tables."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in md.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("| ") and not line.startswith("| model"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out.setdefault(section, {})[cells[0]] = cells[1:]
    return out


def _parse_stat(cell: str) -> tuple[float | None, float | None]:
    if cell == "–":
        return None, None
    m = re.fullmatch(r"(-?[\d.]+)(?: ± ([\d.]+))?", cell)
    assert m, cell
    return float(m.group(1)), (float(m.group(2)) if m.group(2) else None)


def _check_row(cells: list[str], row: dict) -> None:
    for cell, (key, _) in zip(cells, METRICS):
        mean, std = _parse_stat(cell)
        want = row[key]
        if want["mean"] is None:
            assert mean is None
            continue
        assert math.isclose(mean, want["mean"] * 100, abs_tol=0.05 + 1e-9), (key, cell, want)
        assert (std is None) == (want["std"] is None)
        if std is not None:
            assert math.isclose(std, want["std"] * 100, abs_tol=0.05 + 1e-9)
    for cell, (key, _, decimals) in zip(cells[len(METRICS):], MEASURES):
        assert math.isclose(float(cell), row[key]["mean"], abs_tol=0.5 * 10 ** -decimals + 1e-9), (key, cell)


def test_markdown_tables_match_results_json(bench: SimpleNamespace) -> None:
    md = (bench.out / "results.md").read_text()
    results = json.loads((bench.out / "results.json").read_text())
    tables = _tables(md)
    assert "efficientnet_lite0" in md and "epoch" in md and "seeds 0" in md and results["machine"]["cpu"] in md
    for cat, rows in results["summary"]["categories"].items():
        assert set(tables[cat]) == set(MODELS)
        for m in MODELS:
            _check_row(tables[cat][m], rows[m])
    overall = tables["Overall (mean over categories)"]
    for m in MODELS:
        _check_row(overall[m], results["summary"]["overall"][m])
    # with one seed and one category, the overall row is the run itself
    run = next(r for r in results["runs"] if r["model"] == "rd")
    assert math.isclose(results["summary"]["overall"]["rd"]["image_auroc"]["mean"], run["metrics"]["image_auroc"])


def test_paper_figures_printed_beside_ours_with_difference(bench: SimpleNamespace, tmp_path: Path) -> None:
    results = copy.deepcopy(bench.results)
    cats = results["protocol"]["categories"]
    cats[0]["paper_key"] = "mvtec_ad/bottle"  # pretend the demo category were MVTec AD bottle
    results["paper_comparison"] = compare_with_papers(results["summary"], cats, MODELS)
    assert validate(results) == []
    md = write_markdown(results, tmp_path / "r.md")
    assert (tmp_path / "r.md").read_text() == md
    assert "paper's figure (their teacher, image size and epochs" in md
    section = md.split("## Paper figures", 1)[1]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| rd ") or line.startswith("| stfpm ")]
    paper = load_paper_numbers()
    assert len(rows) == 6  # rd and stfpm: I-AUROC, P-AUROC, AUPRO for bottle
    titles = {t: k for k, t in METRICS}
    for model, cat, metric, ours, theirs, diff, setting, source in rows:
        key = titles[metric]
        want = paper[model]["results"]["mvtec_ad/bottle"][key]
        mine = results["summary"]["categories"][cat][model][key]["mean"]
        assert math.isclose(float(theirs), want * 100, abs_tol=0.05)
        assert math.isclose(_parse_stat(ours)[0], mine * 100, abs_tol=0.05)
        assert math.isclose(float(diff), (mine - want) * 100, abs_tol=0.05)
        assert paper[model]["teacher"] in setting and "Table" in source and source in section.split("Sources:")[1]


def test_paper_numbers_file() -> None:
    papers = load_paper_numbers()
    assert {"rd", "rd_var", "dskd", "dtsnet", "dmdd"} <= set(papers)
    for name, p in papers.items():
        assert p["source"] and p["teacher"] and "results" in p, name
        assert "mvtec_ad/bottle" in p["results"] and "mvtec_ad/mean" in p["results"], name
        for cat, res in p["results"].items():
            for k in ("image_auroc", "pixel_auroc", "aupro"):
                assert res[k] is None or 0.5 <= res[k] <= 1.0, (name, cat, k)
    mt = papers["dskd"]["results"]["magnetic_tile"]
    assert (mt["image_auroc"], mt["pixel_auroc"], mt["aupro"], mt["image_size"]) == (0.962, 0.833, 0.703, 128)


def test_summary_mean_std_over_seeds_and_overall_per_seed() -> None:
    def run(cat: str, seed: int, auroc: float, spe: float) -> dict:
        return {"category": cat, "model": "rd", "seed": seed,
                "metrics": {"image_auroc": auroc, "pixel_auroc": None, "aupro": float("nan"), "image_f1_max": 1.0},
                "timing": {"seconds_per_epoch": spe, "images_per_s_b1": 10.0, "images_per_s_b16": 40.0},
                "memory": {"peak_memory_mb": 100.0}}
    runs = [run("a", 0, 0.9, 2.0), run("a", 1, 0.8, 4.0), run("b", 0, 0.7, 1.0), run("b", 1, 0.5, 1.0)]
    s = summarize(runs, ["a", "b"], ["rd"], [0, 1])
    a = s["categories"]["a"]["rd"]
    assert math.isclose(a["image_auroc"]["mean"], 0.85) and math.isclose(a["image_auroc"]["std"], 0.0707106781, rel_tol=1e-6)
    assert a["pixel_auroc"] == {"mean": None, "std": None, "n": 0} and a["aupro"]["n"] == 0
    assert math.isclose(a["seconds_per_epoch"]["mean"], 3.0)
    o = s["overall"]["rd"]["image_auroc"]  # per seed: (0.9+0.7)/2 = 0.8, (0.8+0.5)/2 = 0.65
    assert math.isclose(o["mean"], 0.725) and math.isclose(o["std"], 0.1060660172, rel_tol=1e-6) and o["n"] == 2
    one = summarize(runs[:1], ["a"], ["rd"], [0])["categories"]["a"]["rd"]["image_auroc"]
    assert one == {"mean": 0.9, "std": None, "n": 1}
