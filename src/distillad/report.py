"""report.html: the one page an engineer reads after ``distillad test``.

What it holds: the run's metrics and the decisions at its thresholds, a table per defect type (a
type the model misses hides in a mean over the test set), the score histogram with the image
threshold and the image ROC (``visualize.plot_scores``, as scores.png), the PRO curve behind AUPRO,
and a gallery of the worst misses (defective images scored below the threshold, good images scored
above it) as heat-map overlays coloured by the run's validation statistics (``visualize.overlay_strip_for_run``).

The page is self-contained: every picture is a base64 PNG data URI, the style sheet is inline and
there is no script, so it opens from disk on a line machine without network, can be mailed as one
file, and its Content-Security-Policy forbids fetching anything.

``build_report`` is pure (arrays in, HTML text out); ``write_test_report`` is ``api.test``'s glue.
"""

from __future__ import annotations

import base64
import html
import math
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .checkpoint import atomic_write_bytes
from .errors import DataError
from .visualize import overlay_strip_for_run, plot_scores, png_bytes

__all__ = ["REPORT_FILE", "METRIC_ROWS", "worst_misses", "build_report", "write_test_report"]

REPORT_FILE = "report.html"

#: rows of the metrics table: (key in metrics.json, name, what it says); absent keys are left out
METRIC_ROWS = (
    ("image_auroc", "I-AUROC", "ranking of defective above good images, over every threshold"),
    ("image_f1_max", "image F1-max", "best image F1 over every threshold"),
    ("pixel_auroc", "P-AUROC", "ranking of defect pixels above normal pixels"),
    ("aupro", "AUPRO", "per-region overlap up to the FPR limit (MVTec AD: 0.3), normalised"),
    ("aupro_005", "AUPRO@0.05", "the same up to FPR 0.05: the false-alarm range a line tolerates"),
    ("seg_f1_max", "SegF1-max", "best pixel F1 over every threshold"),
    ("seg_f1_max_threshold", "SegF1-max threshold", "the map value reaching it"),
    ("threshold_accuracy", "accuracy @thr", "images decided right at the run's image threshold"),
    ("threshold_precision", "precision @thr", "flagged images that are defective"),
    ("threshold_tpr", "recall @thr", "defective images flagged"),
    ("threshold_fpr", "false alarms @thr", "good images flagged"),
    ("mask_precision", "mask precision", "flagged pixels (map ≥ pixel threshold) that are defect pixels"),
    ("mask_recall", "mask recall", "defect pixels flagged"),
    ("seg_f1", "SegF1 @thr", "pixel F1 of the masks at the run's pixel threshold"),
    ("n_test", "test images", ""),
    ("n_defective", "defective images", ""),
    ("infer_images_per_s", "images/s", "inference speed of this test"),
)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}.low{color:#b00;font-weight:bold}
.note{color:#666;font-size:.9em}img.plot{max-width:100%;border:1px solid #ddd}
.gallery{display:flex;flex-wrap:wrap;gap:.8em}figure{margin:0;font-size:.8em;max-width:210px}
figure img{border:1px solid #ddd}figcaption{overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:max-content auto;gap:.1em 1em}dd{margin:0}
"""


# ----------------------------------------------------------------------------- what to show
def worst_misses(labels: Any, scores: Any, threshold: float | None, k: int = 6) -> tuple[list[int], list[int]]:
    """Indices of the worst misses: (false negatives, false alarms), at most ``k`` each, worst first.

    labels (N,) in {0,1}, scores (N,). False negatives: defective images with ``score < threshold``,
    lowest score first; false alarms: good images with ``score >= threshold``, highest first. Without a
    threshold (a run without validation images) the ``k`` lowest-scored defective and highest-scored good
    images: the ones closest to a miss at any threshold.
    """
    y = np.asarray(labels).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(s, kind="stable")
    low_defective = [int(i) for i in order if y[i] and (threshold is None or s[i] < threshold)]
    high_good = [int(i) for i in order[::-1] if not y[i] and (threshold is None or s[i] >= threshold)]
    return low_defective[:k], high_good[:k]


# ----------------------------------------------------------------------------- HTML pieces
def _fmt(v: Any) -> str:
    """A table cell: ints as they are, floats to 4 decimals, nan/None as an em dash (undefined)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    return f"{float(v):.4f}"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str, cls: str = "", ident: str = "") -> str:
    attrs = (f' id="{ident}"' if ident else "") + (f' class="{cls}"' if cls else "")
    return f'<img{attrs} alt="{html.escape(alt)}" src="{_data_uri(png)}">'


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td class=num>{_fmt(metrics[key])}</td>"
                   f"<td class=note>{html.escape(what)}</td></tr>"
                   for key, name, what in METRIC_ROWS if key in metrics)
    return f'<table id="metrics"><tr><th>metric</th><th>value</th><th>meaning</th></tr>{rows}</table>'


def _per_defect_table(per_defect: Mapping[str, Mapping[str, Any]], metrics: Mapping[str, Any]) -> str:
    """One row per defect type, weakest I-AUROC in red, then the good images with their false-alarm rate."""
    head = "<tr><th>defect type</th><th>images</th><th>I-AUROC vs good</th><th>recall @thr</th><th>AUPRO</th></tr>"
    aurocs = [r["image_auroc"] for r in per_defect.values() if not math.isnan(r.get("image_auroc", math.nan))]
    worst = min(aurocs) if len(aurocs) > 1 else None
    rows = []
    for name, r in per_defect.items():
        weak = worst is not None and r.get("image_auroc") == worst
        rows.append(f"<tr><td>{html.escape(name)}</td><td class=num>{_fmt(r.get('count'))}</td>"
                    f"<td class=\"num{' low' if weak else ''}\">{_fmt(r.get('image_auroc'))}</td>"
                    f"<td class=num>{_fmt(r.get('recall'))}</td><td class=num>{_fmt(r.get('aupro'))}</td></tr>")
    if "n_test" in metrics and "n_defective" in metrics:
        fa = metrics.get("threshold_fpr")
        rows.append(f"<tr><td><i>good</i></td><td class=num>{_fmt(int(metrics['n_test'] - metrics['n_defective']))}"
                    f"</td><td colspan=3 class=note>false alarms @thr: {_fmt(fa)}</td></tr>")
    return f'<table id="per-defect">{head}{"".join(rows)}</table>'


def _gallery(title: str, ident: str, pictures: Sequence[tuple[str, bytes]], empty: str) -> str:
    if not pictures:
        return f"<h3>{html.escape(title)}</h3><p class=note id=\"{ident}\">{html.escape(empty)}</p>"
    figs = "".join(f"<figure>{_img(png, cap)}<figcaption>{html.escape(cap)}</figcaption></figure>"
                   for cap, png in pictures)
    return f"<h3>{html.escape(title)}</h3><div class=gallery id=\"{ident}\">{figs}</div>"


# ----------------------------------------------------------------------------- figures
def _fig_png(fig: Any) -> bytes:
    import io

    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _scores_png(labels: np.ndarray, scores: np.ndarray, threshold: float | None, title: str) -> bytes:
    """``visualize.plot_scores`` (histogram with the threshold, image ROC), the picture of scores.png."""
    with tempfile.TemporaryDirectory(prefix="distillad-report-") as tmp:
        path = Path(tmp) / "scores.png"
        plot_scores(path, labels, scores, threshold, title=title)
        return path.read_bytes()


def _pro_png(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float, n: int = 1001) -> bytes:
    """The PRO curve on a grid of FPRs (the exact curve has two vertices per distinct anomalous score):
    at each grid FPR the highest PRO reached, whole range and up to ``fpr_limit`` side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.unique(np.concatenate([np.linspace(0, 1, n), np.linspace(0, fpr_limit, n)]))
    at = np.maximum(np.searchsorted(fpr, grid, side="right") - 1, 0)  # last vertex with FPR <= grid value
    y = np.asarray(pro)[at]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, right in zip(axes, (1.0, fpr_limit)):
        keep = grid <= right
        ax.plot(grid[keep], y[keep], color="tab:purple")
        for lim, style in ((0.05, ":"), (fpr_limit, "--")):
            if lim <= right:
                ax.axvline(lim, color="0.4", ls=style, lw=1, label=f"FPR {lim:g}")
        ax.set_xlim(0, right)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("false positive rate (normal pixels)")
        ax.set_ylabel("per-region overlap")
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_title("PRO curve")
    axes[1].set_title(f"up to FPR {fpr_limit:g} (AUPRO's range)")
    fig.tight_layout()
    return _fig_png(fig)


# ----------------------------------------------------------------------------- the page
def build_report(title: str, info: Mapping[str, Any], metrics: Mapping[str, Any],
                 per_defect: Mapping[str, Mapping[str, Any]], labels: Any, scores: Any,
                 threshold: float | None = None, pro: tuple[np.ndarray, np.ndarray] | None = None,
                 misses: tuple[Sequence[tuple[str, bytes]], Sequence[tuple[str, bytes]]] = ((), ()),
                 fpr_limit: float = 0.3) -> str:
    """The HTML text of report.html.

    ``info``: header facts (run, method, data, thresholds...); ``metrics``/``per_defect``: as in metrics.json
    (``metrics.compute_metrics``, ``metrics.per_defect_metrics``); labels/scores (N,) of the test images;
    ``threshold``: the image threshold drawn on the histogram; ``pro``: (FPR, PRO) of ``metrics.pro_curve``,
    None without masks; ``misses``: (false negatives, false alarms) as (caption, PNG bytes) pictures.
    """
    y = np.asarray(labels).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.size == 0 or y.size != s.size:
        raise DataError(f"report: need as many labels as scores, at least one (got {y.size} and {s.size})")
    facts = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in info.items())
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        # nothing leaves the page: pictures are data URIs, the style is inline, there is no script
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><dl>{facts}</dl>",
        "<h2>Metrics</h2>", _metrics_table(metrics),
        "<h2>Per defect type</h2>",
        "<p class=note>Each type against all good images; recall: the type's images at or above the image "
        "threshold; AUPRO: the type's images and the good ones. The weakest I-AUROC is in red.</p>",
        _per_defect_table(per_defect, metrics) if per_defect else "<p class=note>no defective test image</p>",
        "<h2>Scores</h2>", _img(_scores_png(y, s, threshold, title), "score histogram and image ROC", "plot", "scores"),
    ]
    if pro is not None:
        parts += ["<h2>PRO curve</h2>", _img(_pro_png(*pro, fpr_limit=fpr_limit), "PRO curve", "plot", "pro")]
    which = "at the run's image threshold" if threshold is not None else "no threshold: closest to a miss"
    parts += [
        f"<h2>Worst misses</h2><p class=note>{html.escape(which)}; heat maps coloured by the validation "
        "statistics, white outline: map ≥ pixel threshold, green: ground truth.</p>",
        _gallery("Missed defects (false negatives)", "false-negatives", misses[0], "none: every defective image "
                 "was flagged"),
        _gallery("False alarms (good images flagged)", "false-alarms", misses[1], "none: no good image was flagged"),
        "</body></html>\n",
    ]
    return "\n".join(parts)


def _short(path: str) -> str:
    """An image's folder and name (``crack/003.png``): enough to find it, short enough for a caption."""
    p = Path(str(path))
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def write_test_report(path: str | Path, out: Mapping[str, Any], per_defect: Mapping[str, Mapping[str, Any]],
                      ds: Any, res: Mapping[str, Any], pro: tuple[np.ndarray, np.ndarray] | None,
                      fpr_limit: float = 0.3, k: int = 6) -> None:
    """``api.test``'s report.html: ``out`` is metrics.json's content, ``ds``/``res`` the test set and
    ``engine.infer``'s result (maps in the inputs' frame, like the dataset items' images)."""

    calib = dict(out.get("calibration") or {})
    thr = calib.get("image_threshold")
    labels, scores = np.asarray(res["labels"]), np.asarray(res["scores"], dtype=np.float64)

    def pictures(idx: Sequence[int]) -> list[tuple[str, bytes]]:
        return [(f"{res['defects'][i]} · score {scores[i]:.4g} · {_short(res['paths'][i])}",
                 png_bytes(overlay_strip_for_run([ds[i]], [res["maps"][i]], [float(scores[i])], calib, tile=180)))
                for i in idx]

    fn, fa = worst_misses(labels, scores, thr, k)
    info = {"run": out.get("run"), "method": out.get("method"), "data": out.get("data"),
            "image threshold": "none" if thr is None else f"{thr:.6g} ({calib.get('method', 'sigma')}, "
                                                           f"{out.get('calibration_source', 'run.json')})",
            "pixel threshold": "none" if calib.get("pixel_threshold") is None else f"{calib['pixel_threshold']:.6g}"}
    text = build_report(f"distillad test — {out.get('method')} on {Path(str(out.get('data'))).name}", info,
                        out["metrics"], per_defect, labels, scores, thr, pro, (pictures(fn), pictures(fa)), fpr_limit)
    atomic_write_bytes(path, text.encode("utf-8"))
