"""Paired comparison of two models over seeds, from a ``distillad benchmark`` results.json.

Runs with the same seed share the validation split, data order and initialisation seed, so the
per-seed difference B − A removes most of the between-seed noise. For each category and metric it
prints the mean ± sample std of A and B, the mean difference with its 95 % t-interval and the
two-sided paired t-test p-value (n = number of seeds both models finished).

    .venv/bin/python benchmarks/paired.py benchmarks/results/main/results.json rd dskd \
        --title "RD vs DSKD" > benchmarks/results/dskd_main.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

METRICS = (("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("aupro", "AUPRO@0.3"))


def per_seed(runs: list[dict[str, Any]], category: str, model: str, key: str) -> dict[int, float]:
    """{seed: metric in %} of the finished runs of ``model`` on ``category``."""
    return {r["seed"]: 100 * r["metrics"][key] for r in runs
            if r["category"] == category and r["model"] == model and key in r.get("metrics", {})}


def paired_stats(a: dict[int, float], b: dict[int, float]) -> dict[str, float]:
    """Mean of b − a over the shared seeds, 95 % t half-width and two-sided paired t-test p."""
    from scipy import stats

    d = [b[s] - a[s] for s in sorted(set(a) & set(b))]
    n = len(d)
    if n == 0:
        return {"n": 0, "diff": math.nan, "half": math.nan, "p": math.nan}
    m = statistics.mean(d)
    if n < 2:
        return {"n": n, "diff": m, "half": math.nan, "p": math.nan}
    se = statistics.stdev(d) / math.sqrt(n)
    if se == 0:  # identical differences (e.g. both at 100): no spread to test against
        return {"n": n, "diff": m, "half": 0.0, "p": math.nan if m == 0 else 0.0}
    return {"n": n, "diff": m, "half": float(stats.t.ppf(0.975, n - 1) * se),
            "p": float(2 * stats.t.sf(abs(m) / se, n - 1))}


def _ms(v: list[float]) -> str:
    if not v:
        return "–"
    return f"{v[0]:.2f}" if len(v) == 1 else f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}"


def verdict(st: dict[str, float], a: list[float], b: list[float]) -> str:
    if st["n"] < 2:
        return "n < 2"
    if min(a + b) >= 100.0:
        return "both at 100 (ceiling)"
    if math.isnan(st["p"]):
        return "no spread"
    return f"{'B' if st['diff'] > 0 else 'A'} better, beyond seed noise" if st["p"] < 0.05 else "within seed noise"


def render(results: dict[str, Any], model_a: str, model_b: str, title: str, source: str) -> str:
    runs = results["runs"]
    proto = results["protocol"]
    cats = [c["name"] for c in proto["categories"]]
    sizes = {c["name"]: c["image_size"] for c in proto["categories"]}
    teachers = ", ".join(t["name"] for t in proto.get("teachers", []))
    lines = [f"# {title}: paired over seeds (from {source})", "",
             f"A = {model_a}, B = {model_b}. Protocol of that benchmark: teacher {teachers}, {proto['epochs']} epochs, "
             f"batch size A {proto['batch_size'].get(model_a)} / B {proto['batch_size'].get(model_b)}, "
             + ", ".join(f"{c} {sizes[c]} px" for c in cats)
             + "; last-epoch model. Metrics in %. Δ = B − A, paired by seed (same seed → same validation split, "
             "data order and initialisation seed), mean with 95 % t-interval; p from a two-sided paired t-test.", "",
             "| category | metric | A seeds | A | B seeds | B | Δ (points) | 95 % CI | p | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cats:
        for key, name in METRICS:
            a, b = per_seed(runs, c, model_a, key), per_seed(runs, c, model_b, key)
            if not a and not b:
                continue
            st = paired_stats(a, b)
            ci = "–" if math.isnan(st["half"]) else f"±{st['half']:.2f}"
            p = "–" if math.isnan(st["p"]) else f"{st['p']:.3f}"
            lines.append(f"| {c} | {name} | {len(a)} | {_ms(list(a.values()))} | {len(b)} | {_ms(list(b.values()))} | "
                         f"{st['diff']:+.2f} | {ci} | {p} | {verdict(st, list(a.values()), list(b.values()))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="results.json written by distillad benchmark")
    ap.add_argument("model_a")
    ap.add_argument("model_b")
    ap.add_argument("--title", default=None)
    ap.add_argument("--note", default="", help="a paragraph appended below the table (the verdict in words)")
    args = ap.parse_args(argv)
    try:
        results = json.loads(args.results.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"{args.results}: cannot read benchmark results ({e})", file=sys.stderr)
        return 2
    models = {r["model"] for r in results.get("runs", [])}
    missing = [m for m in (args.model_a, args.model_b) if m not in models]
    if missing:
        print(f"{args.results}: no runs of {', '.join(missing)} (it has: {', '.join(sorted(models))})", file=sys.stderr)
        return 2
    sys.stdout.write(render(results, args.model_a, args.model_b, args.title or f"{args.model_a} vs {args.model_b}",
                            args.results.as_posix()))
    if args.note:
        sys.stdout.write("\n" + args.note.strip() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
