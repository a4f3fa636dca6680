"""Each paper's synthesis settings, to pass as ``SyntheticAnomalyDataset(base, **PAPER_PRESETS[name])``.

DTSNet: FAS eq. (1) + eq. (2), IS-Net foreground (substitute: GrabCut). DMDD §3.4.1: one Perlin
mask inside a GrabCut foreground, DRAEM blending: DRAEM's eq. 4, I_a = M̄⊙I + (1−β)(M⊙I) + β(M⊙A)
with the texture's opacity β ~ U[0.1, 1.0] (DRAEM, ICCV 2021, Sec. 3.3), i.e. form "dskd" (β on the
texture) over [0.1, 1]. (DRAEM's code draws the image's weight from U[0, 0.8), an opacity in (0.2, 1].)
Until issue 29 the DMDD preset used DTSNet's form and range (β ∈ [0.15, 1] on the *image*: opacity
0–0.85), which left ~18 % of its defects at opacity < 0.15, nearly invisible, while AIM and the MSN
were still asked to fire there. DSKD-fusion eq. (3): plain full-image Perlin mask, β on the texture.
Texture categories should pass ``foreground="none"``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PAPER_PRESETS", "SYNTHESIS_PRESETS", "SYNTHESIS_SEED"]

PAPER_PRESETS: dict[str, dict[str, Any]] = {
    "dtsnet": {"mode": "fas", "form": "dtsnet", "foreground": "grabcut"},
    "dmdd": {"mode": "single", "form": "dskd", "foreground": "grabcut", "beta_low": 0.1, "beta_high": 1.0},
    "dskd": {"mode": "plain", "form": "dskd", "foreground": "none"},
}

#: synthetic defects of the validation images (tune, ``--epochs auto``, calibration method synthetic):
#: ``SyntheticAnomalyDataset`` keywords. draem: β weighs the normal image (form "dtsnet"), β ∈ [0.15, 0.5],
#: so the texture's opacity is 50–85 %.
SYNTHESIS_PRESETS: dict[str, dict[str, Any]] = {
    "draem": {"mode": "plain", "form": "dtsnet", "foreground": "none", "beta_high": 0.5},
    **PAPER_PRESETS,
}
#: their fixed seed: every candidate and every calibration method sees the same defects
SYNTHESIS_SEED = 20240601
