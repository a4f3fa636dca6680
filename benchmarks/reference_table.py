"""Students beside the PatchCore reference on the same teacher: accuracy, training CPU-minutes and
inference ms/img from one or more ``distillad benchmark`` results.json files.

    PYTHONPATH=src python benchmarks/reference_table.py \\
        benchmarks/runs/ref/results.json:10ep benchmarks/runs/auto/results.json:auto \\
        --md benchmarks/results/patchcore_reference.md

Each argument is ``results.json[:label]``; the label tags that file's student rows (e.g. the epoch budget).
PatchCore's row comes from the first file that holds it. Δ columns: student − PatchCore (points), same
category and seed. Training minutes: the run's training seconds (PatchCore: its one fit pass) × the torch
threads it ran with, i.e. CPU-minutes; a shared machine inflates them alike.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, write_md  # noqa: E402

REFERENCE = "patchcore"
KEYS = (("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("aupro", "AUPRO@0.3"),
        ("threshold_accuracy", "acc@thr"))


def _rows(paths: list[str]) -> tuple[dict, list]:
    ref: dict[tuple[str, int], dict] = {}
    students: list[tuple[str, dict]] = []
    for arg in paths:
        path, _, label = arg.partition(":")
        res = json.loads(Path(path).read_text())
        for r in res["runs"]:
            if r["model"] == REFERENCE:
                ref.setdefault((r["category"], r["seed"]), r)
            else:
                students.append((label, r))
    return ref, students


def _cpu_min(r: dict) -> float:
    return (r["timing"]["train_seconds_total"] or 0.0) * r["machine"].get("torch_threads", 1) / 60


def render(paths: list[str]) -> list[str]:
    ref, students = _rows(paths)
    head = ["category", "model", "epochs"] + [n for _, n in KEYS] + [f"Δ {n}" for _, n in KEYS[:3]] + \
        ["train CPU-min", "ms/img b1"]
    rows: list[list[object]] = []
    cats = list(dict.fromkeys(c for c, _ in ref))
    for cat in cats:
        for (c, seed), r in ref.items():
            if c != cat:
                continue
            m = r["metrics"]
            rows.append([cat, f"**{REFERENCE}**", "fit", *(f"{100 * m[k]:.1f}" for k, _ in KEYS), "–", "–", "–",
                         f"{_cpu_min(r):.1f}", f"{1000 / r['timing']['images_per_s_b1']:.0f}"])
            for label, s in students:
                if s["category"] != cat or s["seed"] != seed:
                    continue
                sm = s["metrics"]
                delta = [f"{100 * (sm[k] - m[k]):+.1f}" for k, _ in KEYS[:3]]
                name = s["model"] + (f" ({label})" if label else "")
                rows.append([cat, name, s["timing"]["epochs"], *(f"{100 * sm[k]:.1f}" for k, _ in KEYS), *delta,
                             f"{_cpu_min(s):.1f}", f"{1000 / s['timing']['images_per_s_b1']:.0f}"])
    return md_table(head, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="results.json[:label]")
    ap.add_argument("--md", default=None)
    ap.add_argument("--title", default="Students beside the PatchCore reference (same teacher, same run)")
    a = ap.parse_args()
    write_md(a.md, [f"# {a.title}", "", *render(a.results)], sys.argv)


if __name__ == "__main__":
    main()
