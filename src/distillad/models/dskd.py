"""Dual-Student Knowledge Distillation (DSKD): Liyi Yao, "Dual-Student Knowledge Distillation
Networks for Unsupervised Anomaly Detection" (paper text: shared/papers/dskd-dual-student-inverted.txt).
No upstream code is published; the encoder/decoder layout follows RD4AD's (hq-deng/RD4AD), which
the paper cites for its embedding (Sec. 3.2).

- Teacher T: frozen ImageNet backbone, K = 3 stages (ResNet18 conv2_x–conv4_x in the paper).
- Student S_e: T's architecture, randomly initialised, fed the same normalised image.
- Deep feature embedding (DFE, Sec. 3.2, Fig. 4), built as RD's OCBE (``layers.OCBE``), which the
  paper refers to: S_e's F1 down-sampled twice and F2 once by 3×3 stride-2 conv-BN-ReLU,
  concatenated with F3, then "a residual block [11]" whose shortcut is a 1×1 conv. As in OCBE,
  that block has stride 2 and 2·c3 channels: F_emb is a "low-dimensional" code at half F3's
  resolution (8×8×512 for ResNet18 at 256 px), which S_d's three up-sampling stages bring back
  to F3, F2, F1. The paper's Table 6 pins the block count: with RD's residual *stage* of two
  BasicBlocks (ResNet18's layer4 layout) our inference costs 6.16 GMAC at 256 px vs the paper's
  6.17 G "FLOPs" (thop counts MACs), and the reference-code parameter count is 39.29 M vs
  39.3 M; one block gives 5.85 G / 34.6 M. So ``dfe_blocks`` defaults to RD's count (2 for
  resnet18 and non-ResNet teachers, 3 for resnet34/50/wide_resnet50_2); ``dfe_blocks=1`` is the
  literal single block.
  ``dfe=False`` (Table 8: S_e's output "directly down-sampled"): the residual stage sees F3 alone
  (``OCBE(fuse=False)``). Block type, counts and width come from ``layers.reverse_layout``, the
  table rd.py uses.
- Student S_d: S_e reversed, down-sampling replaced by up-sampling (``layers.ReverseDecoder``;
  de-ResNet18 with DeBasicBlock ×(2, 2, 2) for resnet18) → features at F3, F2, F1 resolution.
- Eq. 3: features ℓ2-normalised per position, t̂ = t/‖t‖. (The paper prints ‖t‖² in the
  denominator; its algorithms say "ℓ2 normalization" and the squared norm would make the ℓ2 term
  scale-dependent, so we read it as a typo.) Algorithm 2 feeds the normalised F̂_e to the DFE; so do we.
- Eqs. 4–6: M^k = λ·½‖t̂ − ŝ‖² + (1 − cos(t̂, ŝ)), λ = 0.1 (``lam``). For unit vectors
  ½‖t̂ − ŝ‖² = 1 − cos, so M^k = (1 + λ)(1 − cos): the ℓ2 term only rescales the cosine term.
- Eq. 7: ℓ_e, ℓ_d = mean over stages of the mean over positions of M_{t-e}, M_{t-d}; no weighting;
  total = ℓ_e + ℓ_d. "Distillation ... performed separately and independently" (Sec. 1) and
  Algorithm 1's separate updates: ℓ_e trains S_e, ℓ_d trains DFE + S_d (the DFE input is detached;
  ``independent=False`` lets ℓ_d reach S_e through the DFE). One Adam over disjoint parameter sets
  equals two Adams with the same settings.
- Inference (Algorithm 2, eqs. 8–10): Σ_k upsample(M^k_{t-d}) (bilinear, align_corners as RD),
  Gaussian σ = 4, score = max (``predict`` in _base).
- Eq. 1 (normalise the score, threshold 0.5): the paper does not say how it normalises. We use
  the library's generic calibration: ``api.train`` scores the validation split of good training
  images and stores mean, std and threshold = mean + k·std in run.json; ``calibration.normalize_scores``
  maps that threshold to 0.5 (affine, not min–max, so ranking and AUROC are unchanged).
- Adam lr 0.001, betas (0.5, 0.999), 200 epochs, 256 px (128 px on MT Defects). The batch size is
  not given in the paper; 16 as RD.

Ablations (Sec. 4.3; Fig. 8 is an image, so the structures are our reading of its text: each is
named by the pair whose discrepancy is learnt and measured):
``structure`` "DS" (default) T, S_e, DFE, S_d; losses ℓ_e + ℓ_d; map T–S_d.
"T-E" T and S_e only (forward distillation, STFPM-like); loss ℓ_e; map T–S_e.
"T-D" T, DFE over T's stages, S_d (reverse distillation, RD-like); loss ℓ_d; map T–S_d.
"E-D" T teaches S_e (ℓ_e); S_e teaches S_d through the DFE (targets ŝ_e detached); map S_e–S_d.
``dfe`` on/off (Table 8); ``maps`` "all" | "M1" | "M2" | "M3" (Table 9): stages in the map.

Differences from the paper: any supported teacher (library default efficientnet_lite0; the paper's
resnet18 with ``teacher="resnet18"``); ``decoder_relu`` as in rd.py (default True, the ResNet layout;
False ends S_d's stages without ReLU, for EfficientNet's signed stage outputs); at image sizes not
divisible by 32, S_d's features are resized bilinearly to the encoder's stage sizes, as in rd.py
(``layers.match_sizes``).
We build T and S_e only up to the last stage used and omit RD's unused ``conv4``: 20.95 M
parameters for resnet18 where the paper counts 39.3 M, which is what RD's reference code holds with
full ResNet18s (layer4 + fc, 8.91 M each) and ``conv4`` (0.53 M): 20.95 + 2·8.91 + 0.53 = 39.29 M
(tests/models/test_dskd.py checks this).
"""

from __future__ import annotations

from typing import Literal, Sequence, get_args

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..hints import Betas, NonNegativeFloat, PositiveFloat, PositiveInt
from ..layers import match_sizes, reverse_layout
from ..maps import Combine, as_fp32, fp32
from ..registry import register_model
from ..teachers import Teacher, build_backbone
from ._base import DistillationModel

__all__ = ["DSKD", "dskd", "dskd_map", "dskd_loss", "STRUCTURES", "MAPS"]

#: ablation structures (Sec. 4.3), each named by the pair whose discrepancy is learnt and measured
Structure = Literal["DS", "T-E", "T-D", "E-D"]
STRUCTURES: tuple[str, ...] = get_args(Structure)
#: Table 9: which stages (indices shallow → deep) enter the anomaly map
MapStages = Literal["all", "M1", "M2", "M3"]
MAPS = {"all": (0, 1, 2), "M1": (0,), "M2": (1,), "M3": (2,)}

Feats = Sequence[torch.Tensor]


def dskd_map(t: torch.Tensor, s: torch.Tensor, lam: float = 0.1) -> torch.Tensor:
    """Eq. 6 on ℓ2-normalised features (eq. 3): λ·½‖t̂ − ŝ‖² + 1 − cos(t̂, ŝ).

    (B,C,h,w) × 2 → (B,1,h,w), in fp32 whatever the features' precision."""
    with fp32(t.device):
        t, s = F.normalize(as_fp32(t), dim=1), F.normalize(as_fp32(s), dim=1)
        l2 = 0.5 * (t - s).pow(2).sum(1, keepdim=True)
        cos = F.cosine_similarity(t, s, dim=1).unsqueeze(1)
        return lam * l2 + (1.0 - cos)


def dskd_loss(ref: Feats, student: Feats, lam: float = 0.1) -> torch.Tensor:
    """Eq. 7: (1/K) Σ_k mean over positions of M^k, averaged over the batch → scalar."""
    return torch.stack([dskd_map(t, s, lam).mean() for t, s in zip(ref, student)]).mean()


class DSKD(DistillationModel):
    """Teacher T, encoder student S_e, DFE and decoder student S_d; the map compares T and S_d."""

    train_defaults = {"epochs": 200, "batch_size": 16, "image_size": 256}

    def __init__(self, teacher: str = "efficientnet_lite0", teacher_weights: str | None = "auto",
                 teacher_sha256: str | None = None, out_indices: tuple[int, ...] = (1, 2, 3),
                 lr: PositiveFloat = 0.001, betas: Betas = (0.5, 0.999), sigma: NonNegativeFloat = 4.0,
                 lam: NonNegativeFloat = 0.1, structure: Structure = "DS", dfe: bool = True, maps: MapStages = "all",
                 dfe_blocks: PositiveInt | None = None, independent: bool = True, decoder_relu: bool = True) -> None:
        super().__init__(lr, betas, sigma)
        out_indices = tuple(out_indices)
        if len(out_indices) != 3:
            raise ConfigError(f"dskd needs exactly 3 teacher stages, got out_indices={out_indices}")
        self.lam, self.structure, self.maps, self.independent = lam, structure, maps, independent
        self.teacher = Teacher(teacher, out_indices, teacher_weights, teacher_sha256)
        chans = self.teacher.channels
        if structure != "T-D":  # the encoder student
            self.encoder = build_backbone(teacher, out_indices)
            # timm zero-initialises each residual block's last BN γ; the paper's S_e is a torchvision
            # ResNet18, whose γ all start at 1 (so every S_e weight learns from the first step)
            for mod in self.encoder.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    nn.init.ones_(mod.weight)
        if structure != "T-E":  # DFE (RD's OCBE, the residual stage alone for dfe=False) + decoder student
            self.embedding, self.decoder = reverse_layout(teacher).build(chans, n_blocks=dfe_blocks, fuse=dfe,
                                                                         act_out=decoder_relu)

    # -- the three networks -----------------------------------------------------------
    def encoder_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """S_e: images (B,3,H,W) in [0,1] → [(B,C_k,H/r_k,W/r_k)] shallow→deep, like the teacher's."""
        return list(self.encoder(self.teacher.normalize(images)))

    def decoder_features(self, source: Feats) -> list[torch.Tensor]:
        """DFE + S_d: stage features (S_e's, T's for "T-D") → S_d's [(B,C_k,H/r_k,W/r_k)] shallow→deep."""
        x = [F.normalize(f, dim=1) for f in source]  # Algorithm 2: the DFE embeds F̂_e
        if self.independent:
            x = [f.detach() for f in x]
        # at sizes not divisible by 32 the up-sampled stages overshoot the encoder's (as in rd.py)
        return match_sizes(self.decoder(self.embedding(x)), source)

    def features(self, images: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Features of the networks the structure has: keys ``t`` (T), ``e`` (S_e), ``d`` (S_d)."""
        out = {"t": self.teacher(images)}
        if self.structure != "T-D":
            out["e"] = self.encoder_features(images)
        if self.structure != "T-E":
            out["d"] = self.decoder_features(out["t"] if self.structure == "T-D" else out["e"])
        return out

    def _map_pair(self, f: dict[str, list[torch.Tensor]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        ref = f["e"] if self.structure == "E-D" else f["t"]
        return ref, f["e"] if self.structure == "T-E" else f["d"]

    # -- the model contract -----------------------------------------------------------
    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """images (B,3,H,W) → (reference, student) feats of the anomaly map: (T, S_d) for DS/T-D,
        (T, S_e) for T-E, (S_e, S_d) for E-D; each [(B,C_k,H/r_k,W/r_k)] shallow→deep."""
        return self._map_pair(self.features(images))

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``loss`` = ℓ_e + ℓ_d (eq. 7), with ``loss_e`` (T–S_e) and ``loss_d`` (T–S_d; S_e–S_d for E-D)
        for the structures that have them."""
        f = self.features(batch["image"])
        out = {}
        if "e" in f:
            out["loss_e"] = dskd_loss(f["t"], f["e"], self.lam)
        if "d" in f:
            ref = [e.detach() for e in f["e"]] if self.structure == "E-D" else f["t"]
            out["loss_d"] = dskd_loss(ref, f["d"], self.lam)
        out["loss"] = sum(out.values())  # type: ignore[assignment]
        return out

    def map_parts(self, images: torch.Tensor) -> tuple[list[torch.Tensor], Combine]:
        """Eq. 8: the selected stages' M^k, summed after upsampling to the input size (``anomaly_map``)."""
        ref, s = self(images)
        return [dskd_map(ref[k], s[k], self.lam) for k in MAPS[self.maps]], "sum"


@register_model
def dskd(**kwargs) -> DSKD:
    """DSKD with the paper's defaults (Adam lr 0.001, λ = 0.1, dual-student structure)."""
    return DSKD(**kwargs)
