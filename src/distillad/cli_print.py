"""What ``distillad test`` prints: the metrics and the table per defect type (kept out of ``cli``)."""

from __future__ import annotations

from typing import Any

__all__ = ["print_metrics", "print_per_defect"]


def print_metrics(m: dict[str, Any]) -> None:
    """``test``'s metrics, one per line, in a fixed order."""
    keys = ["image_auroc", "pixel_auroc", "aupro", "aupro_005", "image_f1_max", "seg_f1_max", "threshold_accuracy",
            "threshold_precision", "threshold_tpr", "threshold_fpr", "mask_precision", "mask_recall", "seg_f1",
            "infer_images_per_s"]
    width = max(len(k) for k in keys)
    for k in keys:
        if k in m:
            print(f"{k:<{width}}  {m[k]:.4f}")


def print_per_defect(per_defect: dict[str, dict[str, Any]], m: dict[str, Any]) -> None:
    """``test``'s table per defect type (each against the good images), then the good images' false alarms."""
    if not per_defect:
        return
    width = max(11, *(len(k) for k in per_defect))

    def cell(v: Any) -> str:
        return f"{'—' if v is None or v != v else f'{v:.4f}':>10}"  # v != v: nan, undefined
    print(f"\n{'defect type':<{width}}  {'n':>4}  {'I-AUROC':>10}  {'recall@thr':>10}  {'AUPRO':>10}")
    for name, r in per_defect.items():
        print(f"{name:<{width}}  {r['count']:>4}  {cell(r.get('image_auroc'))}  {cell(r.get('recall'))}  "
              f"{cell(r.get('aupro'))}")
    if "n_test" in m:
        fa = f"  false alarms@thr {m['threshold_fpr']:.4f}" if "threshold_fpr" in m else ""
        print(f"{'good':<{width}}  {m['n_test'] - m['n_defective']:>4}{fa}")
