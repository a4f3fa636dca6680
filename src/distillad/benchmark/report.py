"""``results.md``: the protocol and machine, a table per category, the overall table, and the
papers' figures beside ours, rendered from the results.json content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_bytes
from ..registry import list_models
from .config import synthesizes
from .measure import MEMORY_METHOD, TIMING_METHOD
from .schema import MEASURES, METRICS

__all__ = ["write_markdown", "render_markdown", "table"]

OVERALL = "Overall (mean over categories)"
_MISSING = {"mean": None, "std": None, "n": 0}  # a decision column of results from before it existed


def _fmt(x: Any, decimals: int, scale: float = 1.0) -> str:
    return "–" if x is None else f"{x * scale:.{decimals}f}"


def _fmt_stat(st: dict[str, Any], decimals: int = 1, scale: float = 100.0) -> str:
    if st["mean"] is None:
        return "–"
    s = _fmt(st["mean"], decimals, scale)
    return s if st["std"] is None else f"{s} ± {_fmt(st['std'], decimals, scale)}"


def table(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines of one summary table: a row per model, quality in %, costs as measured."""
    head = ["model", *(t for _, t in METRICS), *(t for _, t, _ in MEASURES)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, row in rows.items():
        cells = [m, *(_fmt_stat(row.get(k, _MISSING)) for k, _ in METRICS),
                 *(_fmt(row[k]["mean"], d) for k, _, d in MEASURES)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _textures(p: dict[str, Any]) -> str:
    """The synthesis textures of the methods that train on synthetic defects, when any was benchmarked."""
    if not any(m in list_models() and synthesizes(m) for m in p["models"]):
        return ""
    where = p.get("textures")
    return f"; synthetic-defect textures: `{where}`" if where else "; synthetic-defect textures: procedural noise (no --textures)"


def _header(results: dict[str, Any]) -> list[str]:
    p, mach = results["protocol"], results["machine"]
    teachers = ", ".join(f"`{t['name']}` (weights SHA-256 `{t['weights_sha256'][:12]}…`)" for t in p["teachers"])
    sizes = ", ".join(f"{c['name']} {c['image_size']} px" for c in p["categories"])
    batch = ", ".join(f"{m} {b}" for m, b in p["batch_size"].items())
    kw = "; ".join(f"{m}: " + ", ".join(f"{k}={v!r}" for k, v in sorted(d.items()) if k != "teacher")
                   for m, d in p["model_kwargs"].items() if any(k != "teacher" for k in d))
    return [
        "# distillad benchmark" + (" (quick: CI budget, numbers are not meaningful)" if p["quick"] else ""), "",
        f"**Protocol** (the same for every method): teacher {teachers}; image size: {sizes}; "
        f"{p['epochs']} epoch(s); seeds {', '.join(map(str, p['seeds']))}; batch size: {batch}"
        f"{'; model keywords: ' + kw if kw else ''}{_textures(p)}. Last-epoch model; thresholds from validation good images; "
        "test images touched only for the final metrics.", "",
        f"**Machine**: {mach['cpu']}, {mach['cores']} cores usable (torch threads {mach['torch_threads']})"
        f"{', GPU ' + mach['gpu'] if mach.get('gpu') else ''}, RAM {mach.get('ram_gb')} GB; torch {mach['torch']}; "
        f"device {mach['device']}; distillad {results['library']['distillad']}; {results['created']}.", "",
        "Quality metrics in %: mean ± sample standard deviation over seeds (no ± with one seed); "
        "acc/prec/recall/FPR@thr: the good/defective decisions at the run's calibrated image threshold, "
        "mask prec/recall: pixels of the masks at its pixel threshold (method: run.json's calibration). "
        f"s/epoch: mean training seconds per epoch. img/s: {TIMING_METHOD}. peak MB: {MEMORY_METHOD}.", "",
    ]


def _not_stated(v: Any) -> Any:
    return "not stated" if v is None else v


def _paper_section(comp: list[dict[str, Any]]) -> list[str]:
    lines = ["## Paper figures: the paper's figure (their teacher, image size and epochs, not ours)", ""]
    if not comp:
        return [*lines, "No paper reports a figure for these (model, category) pairs."]
    lines += ["Each paper's number comes from its own teacher, image size and training budget (given in the "
              "last column); our runs use the protocol above. A difference is a fact about two set-ups, not "
              "a reproduction check.", "",
              "| model | category | metric | ours (%) | paper's figure (%) | ours − paper | "
              "paper's teacher / size / epochs | source |", "|" + "---|" * 8]
    titles = dict(METRICS)
    for r in comp:
        diff = "–" if r["difference"] is None else f"{r['difference'] * 100:+.1f}"
        ours = _fmt_stat({"mean": r["ours"], "std": r["ours_std"], "n": 0})
        setting = " / ".join(str(_not_stated(r[k])) for k in ("paper_teacher", "paper_image_size", "paper_epochs"))
        lines.append(f"| {r['model']} | {r['category']} | {titles[r['metric']]} | {ours} | "
                     f"{r['paper'] * 100:.1f} | {diff} | {setting} | {r['cite']} |")
    lines += ["", "Sources:"]
    return lines + [f"- {c}: {s}" for c, s in dict.fromkeys((r["cite"], r["source"]) for r in comp)]


def render_markdown(results: dict[str, Any]) -> str:
    """The text of ``results.md`` for a results.json content."""
    lines = _header(results)
    for name, rows in results["summary"]["categories"].items():
        lines += [f"## {name}", "", *table(rows), ""]
    lines += [f"## {OVERALL}", "", *table(results["summary"]["overall"]), ""]
    lines += _paper_section(results["paper_comparison"])
    return "\n".join(lines) + "\n"


def write_markdown(results: dict[str, Any], path: str | Path) -> str:
    """Render results.json as ``results.md`` (returns the text): protocol and machine, a table per
    category, the overall table, and the papers' figures beside ours."""
    text = render_markdown(results)
    atomic_write_bytes(path, text.encode())
    return text
