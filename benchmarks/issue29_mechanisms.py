"""Issue 29 mechanism checks on trained runs (one seed, small size): DMDD's head refitted on the frozen
student with bias 0 / prior bias and old / new synthesis; DSKD-fusion free vs non-negative fusion vs
manual 1:3 on the same frozen students. Usage (PYTHONPATH=src): benchmarks/issue29_mechanisms.py dmdd RUN
[MSN_EPOCHS] | benchmarks/issue29_mechanisms.py dskd RUN FUSION_EPOCHS. Textures: ``TEXTURES`` below."""
import copy
import sys

import torch
from torch.utils.data import DataLoader, Subset

from distillad.api import _test_set, build_train_sets
from distillad.checkpoint import load_run
from distillad.data import load_samples, train_val_split
from distillad.maps import combine_maps, gaussian_blur
from distillad.metrics import compute_metrics, pixel_auroc
from distillad.models._dmdd_blocks import MultiPerceptionSegNet
from distillad.models.dskd_fusion import _NonNegFusion
from distillad.synthesis import PAPER_PRESETS

torch.set_num_threads(1)
TEXTURES = "/work/shared/data/dtd/images"


def synthetic(model, spec, preset, n_eval=None, seed=0):
    d = spec["data"]
    train, _ = train_val_split(load_samples(d["path"], "train", d.get("category"), d.get("layout")),
                               d.get("val_fraction", 0.1), d.get("split_seed", 0))
    model.synthesis = dict(preset)
    syn = build_train_sets(model, train, spec["image_size"], seed,
                           textures=TEXTURES)["synthetic"]
    return syn if n_eval is None else Subset(syn, range(n_eval))


def fit_head(model, head, loss_fn, data, epochs, lr, betas, batch=16, seed=0):
    opt = torch.optim.Adam(head.parameters(), lr=lr, betas=betas)
    model.eval()
    head.train()
    for e in range(epochs):
        if hasattr(data, "set_epoch"):
            data.set_epoch(e)
        for b in DataLoader(data, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed + e)):
            opt.zero_grad()
            loss_fn(b)["loss"].backward()
            opt.step()
    head.eval()


@torch.no_grad()
def collect(data, fn, bs=16):
    maps, masks = [], []
    for b in DataLoader(data, batch_size=bs):
        maps.append(fn(b["anomalous"]))
        masks.append(b["mask"])
    return torch.cat(maps), torch.cat(masks)


@torch.no_grad()
def test_metrics(model, spec, fn, sigma):
    ds = _test_set(spec, None, None, None)
    maps, masks, labels = [], [], []
    for b in DataLoader(ds, batch_size=16):
        m = gaussian_blur(fn(b["image"]), sigma)
        maps.append(m)
        masks.append(b["mask"])
        labels.append(b["label"])
    maps, masks, labels = torch.cat(maps), torch.cat(masks), torch.cat(labels)
    r = compute_metrics(labels.numpy(), maps.flatten(1).amax(1).numpy(), masks[:, 0].numpy() > 0.5, maps[:, 0].numpy())
    return {k: round(100 * r[k], 1) for k in ("image_auroc", "pixel_auroc", "aupro")}


def dmdd(run):
    model, spec = load_run(run)
    model.eval()
    print("spec train:", {k: spec.get(k) for k in ("train",)})
    new, old = dict(PAPER_PRESETS["dmdd"]), {"mode": "single", "form": "dtsnet", "foreground": "grabcut"}
    ev = synthetic(model, spec, new, n_eval=64, seed=99)  # evaluation defects: DRAEM range, unseen seed
    frac = float(torch.stack([ev[i]["mask"].mean() for i in range(len(ev))]).mean())
    print(f"anomalous-pixel fraction of I_a (eval set): {frac:.4f}; over I^n + I_a^n: {frac / 2:.4f}")
    plain = lambda x: combine_maps([m for b in model.branches for m in model.stage_maps(x)[b]], x.shape[-2:], "sum")
    sm, mk = collect(ev, plain)
    rows = [("plain sum of the 8 maps (no head)", pixel_auroc(mk[:, 0].numpy() > 0.5, sm[:, 0].numpy()),
             test_metrics(model, spec, plain, 0.0))]
    hm, _ = collect(ev, model.anomaly_map)
    rows.append(("trained run's head (prior bias, new synthesis)", pixel_auroc(mk[:, 0].numpy() > 0.5, hm[:, 0].numpy()),
                 test_metrics(model, spec, model.anomaly_map, 0.0)))
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else spec["train"]["epochs"]
    presets = (("old synthesis (DTSNet range)", old), ("new synthesis (DRAEM range)", new))
    for prior in (None, 0.026):
        for name, preset in presets if len(sys.argv) <= 3 else presets[1:]:
            torch.manual_seed(0)
            m = copy.deepcopy(model)
            m.msn = MultiPerceptionSegNet(len(m.teacher.channels), m.branches, prior=prior)
            data = synthetic(m, spec, preset, seed=0)
            fit_head(m, m.msn, m.msn_loss, data, epochs, m.msn_lr, m.betas)
            with torch.no_grad():
                w, bias = m.msn.compress.weight.flatten(), m.msn.compress.bias.item()
            hm, _ = collect(ev, m.anomaly_map)
            label = f"head refit {epochs} MSN epochs, bias {'0' if prior is None else 'logit(0.026)'}, {name}"
            rows.append((label, pixel_auroc(mk[:, 0].numpy() > 0.5, hm[:, 0].numpy()),
                         test_metrics(m, spec, m.anomaly_map, 0.0)))
            print(label, "compress weights", [round(float(v), 3) for v in w], "bias", round(bias, 2))
    print("| map | P-AUROC on synthetic defects | real test I-AUROC / P-AUROC / AUPRO |")
    for label, p, t in rows:
        print(f"| {label} | {100 * p:.1f} | {t['image_auroc']} / {t['pixel_auroc']} / {t['aupro']} |")


def dskd(run, fusion_epochs):
    model, spec = load_run(run)
    model.eval()
    sig = model.sigma
    rows = []
    fused = lambda m: (lambda x: m.fuse(m.student_maps(x)))
    rows.append(("learned, free weights (as trained)", model.fusion.weight.flatten().tolist(),
                 model.fusion.bias.item(), test_metrics(model, spec, fused(model), sig)))
    data = synthetic(model, spec, PAPER_PRESETS["dskd"], seed=0)
    for name, make in (("learned, free weights (refit here)", None), ("learned, non-negative (softplus)", "nonneg")):
        torch.manual_seed(0)
        m = copy.deepcopy(model)
        if make:
            m.fusion = _NonNegFusion(6, 1 / 6)
        else:
            torch.nn.init.constant_(m.fusion.weight, 1 / 6)
            torch.nn.init.zeros_(m.fusion.bias)
        fit_head(m, m.fusion, m.fusion_loss, data, fusion_epochs, m.fusion_lr, m.betas)
        rows.append((name, m.fusion.weight.flatten().tolist(), m.fusion.bias.item(), test_metrics(m, spec, fused(m), sig)))
    sm = lambda sl, w: (lambda x: (model.student_maps(x)[:, sl] * w).sum(1, keepdim=True))
    rows.append(("manual 1:3 (D_f : D_r)", None, None, test_metrics(model, spec, lambda x: (
        model.student_maps(x)[:, :3].sum(1, keepdim=True) + 3 * model.student_maps(x)[:, 3:].sum(1, keepdim=True)) / 4, sig)))
    rows.append(("forward student alone (Σ 3 maps)", None, None, test_metrics(model, spec, sm(slice(0, 3), 1.0), sig)))
    rows.append(("reverse student alone (Σ 3 maps)", None, None, test_metrics(model, spec, sm(slice(3, 6), 1.0), sig)))
    print("| fusion | weights (D_f E1..E3, D_r E1..E3) / bias | I-AUROC | P-AUROC | AUPRO |")
    for label, w, b, t in rows:
        ws = "—" if w is None else " ".join(f"{v:+.2f}" for v in w) + f" / {b:+.2f}"
        print(f"| {label} | {ws} | {t['image_auroc']} | {t['pixel_auroc']} | {t['aupro']} |")


if __name__ == "__main__":
    if sys.argv[1] == "dmdd":
        dmdd(sys.argv[2])
    else:
        dskd(sys.argv[2], int(sys.argv[3]))
