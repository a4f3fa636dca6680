"""Aggregation of the runs: mean ± sample std over seeds per (category, model), the overall row,
and our means beside the papers' reported figures."""

from __future__ import annotations

import json
import math
import statistics
from importlib import resources
from typing import Any, Iterable, Sequence

from .schema import METRICS, SUMMARY_KEYS

__all__ = ["summarize", "compare_with_papers", "load_paper_numbers"]


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(x) for x in values if x is not None and math.isfinite(float(x))]


def _stat(values: Iterable[Any]) -> dict[str, Any]:
    v = _finite(values)
    if not v:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else None, "n": len(v)}


def _run_values(r: dict[str, Any]) -> dict[str, Any]:
    vals = {k: r["metrics"].get(k) for k, _ in METRICS}
    vals.update({k: r["timing"].get(k) for k in ("seconds_per_epoch", "images_per_s_b1", "images_per_s_b16")})
    vals["peak_memory_mb"] = r["memory"].get("peak_memory_mb")
    return vals


def summarize(runs: Sequence[dict[str, Any]], categories: Sequence[str], models: Sequence[str],
              seeds: Sequence[int]) -> dict[str, Any]:
    """Mean ± sample std over seeds per (category, model); overall = per seed the mean over
    categories, then mean ± std over seeds."""
    by = {(r["category"], r["model"], r["seed"]): _run_values(r) for r in runs}
    cats: dict[str, Any] = {}
    for c in categories:
        cats[c] = {m: {k: _stat(by[(c, m, s)][k] for s in seeds if (c, m, s) in by) for k in SUMMARY_KEYS}
                   for m in models}
    overall: dict[str, Any] = {}
    for m in models:
        row = {}
        for k in SUMMARY_KEYS:
            per_seed = []
            for s in seeds:
                v = _finite(by[(c, m, s)][k] for c in categories if (c, m, s) in by)
                per_seed.append(statistics.fmean(v) if v else None)
            row[k] = _stat(per_seed)
        overall[m] = row
    return {"categories": cats, "overall": overall}


def load_paper_numbers() -> dict[str, Any]:
    """The papers' reported figures shipped with the package (``paper_numbers.json``)."""
    text = resources.files("distillad").joinpath("paper_numbers.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def compare_with_papers(summary: dict[str, Any], categories: Sequence[dict[str, Any]], models: Sequence[str],
                        papers: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Ours (mean over seeds) beside each paper's figure for the same method and category."""
    papers = load_paper_numbers() if papers is None else papers
    rows = []
    for cat in categories:
        for m in models:
            p = papers.get(m)
            if p is None or cat["paper_key"] not in p.get("results", {}):
                continue
            res = p["results"][cat["paper_key"]]
            for k, _ in METRICS:
                if res.get(k) is None:
                    continue
                ours = summary["categories"][cat["name"]][m][k]
                diff = None if ours["mean"] is None else ours["mean"] - res[k]
                rows.append({"model": m, "category": cat["name"], "paper_key": cat["paper_key"], "metric": k,
                             "ours": ours["mean"], "ours_std": ours["std"], "paper": float(res[k]), "difference": diff,
                             "source": f"{p.get('paper', m)}; {res.get('source', p.get('source', ''))}",
                             "cite": res.get("cite", p.get("cite", m)),
                             "paper_teacher": p.get("teacher"), "paper_image_size": res.get("image_size", p.get("image_size")),
                             "paper_epochs": p.get("epochs")})
    return rows
