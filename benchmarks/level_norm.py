"""Per-level normalisation of a finished run's stage maps by validation-good statistics, without retraining:
each stage map m_k becomes (m_k − μ_k)/σ_k (``mean_std``) or m_k/q99_k (``q99``) before the sum, with μ, σ,
q99 over the pixels of the validation good images. Scored on validation (good images vs. synthetic
defects made from them: what may choose a default) and on test (reported only).

    PYTHONPATH=src python benchmarks/level_norm.py benchmarks/runs/ref/runs/*/rd/seed0 --md benchmarks/results/level_norm.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from distillad.checkpoint import load_run
from distillad.data import AnomalyDataset, load_samples
from distillad.data.resize import run_geometry
from distillad.maps import combine_maps, gaussian_blur
from distillad.metrics import compute_metrics
from distillad.validation import validation_sets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_md  # noqa: E402


@torch.no_grad()
def _parts(net: torch.nn.Module, ds) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """Every stage map of ``ds`` [(N,1,h_k,w_k)], the labels and the masks."""
    out, labels, masks = [], [], []
    for b in torch.utils.data.DataLoader(ds, batch_size=8):
        p, _ = net.map_parts(b["image"])
        out.append([x.float() for x in p])
        labels.append(torch.as_tensor(b["label"]))
        masks.append(b["mask"])
    return [torch.cat([o[k] for o in out]) for k in range(len(out[0]))], torch.cat(labels), torch.cat(masks)


def _score(net, parts, labels, masks, stats, size) -> dict[str, float]:  # noqa: ANN001
    maps = gaussian_blur(combine_maps([(p - m) / s for p, (m, s) in zip(parts, stats)], size, "sum"), net.sigma)
    return compute_metrics(labels.numpy(), maps.flatten(1).max(1).values.numpy(), masks[:, 0].numpy() > 0.5,
                           maps[:, 0].numpy())


def study(run: str) -> list[str]:
    """Table rows of one run: every normalisation on validation and on test."""
    net, spec = load_run(run)
    hw, mode = run_geometry(spec)
    good, defective, _ = validation_sets(spec)
    d = spec["data"]
    test = AnomalyDataset(load_samples(d["path"], "test", d.get("category"), d.get("layout")), image_size=hw,
                          resize=mode)
    gp, gl, gm = _parts(net, good)
    dp, dl, dm = _parts(net, defective)
    tp, tl, tm = _parts(net, test)
    stats = {"none": [(0.0, 1.0) for _ in gp],
             "mean_std": [(float(p.mean()), float(p.std())) for p in gp],
             "q99": [(0.0, float(torch.quantile(p.flatten()[::7], 0.99))) for p in gp]}
    rows = []
    for name, st in stats.items():
        v = _score(net, [torch.cat([a, b]) for a, b in zip(gp, dp)], torch.cat([gl, dl]), torch.cat([gm, dm]), st, hw)
        t = _score(net, tp, tl, tm, st, hw)
        rows.append(f"| {Path(run).parts[-3]} | {name} | {100 * v['image_auroc']:.1f} | {100 * v['pixel_auroc']:.1f} | "
                    f"{100 * t['image_auroc']:.1f} | {100 * t['pixel_auroc']:.1f} | {100 * t['aupro']:.1f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--md", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    lines = ["# Per-level map normalisation by validation statistics (no retraining)", "",
             "| run | normalisation | val I-AUROC | val P-AUROC | test I-AUROC | test P-AUROC | test AUPRO |",
             "|---|---|---|---|---|---|---|"]
    for r in a.runs:
        lines += study(r)
    write_md(a.md, lines, sys.argv)


if __name__ == "__main__":
    main()
