"""SFC's training losses (docs/method.md 3, docs/reference.md 3.3), class-weighted by broadcast.

Shapes: N images, C foreground classes, K = C+1 channels (background at 0), (h, w) CAM grid.
``class_weights`` is one (C,) vector in the dataset's class order (the paper's distribution
coefficients, or ones); the background channel always has weight 1.

    total = classification_loss(...) + 1.6 * prototype_consistency(...) + 0.8 * scale_consistency(...)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sfc_core.model.cam import max_normalise


def classification_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label soft margin: scores (N, C) logits, labels (N, C) multi-hot -> scalar."""
    return F.multilabel_soft_margin_loss(scores.float(), labels)


def prototype_consistency(cam: torch.Tensor, prototype_cam: torch.Tensor,
                          class_weights: torch.Tensor) -> torch.Tensor:
    """mean(|cam - maxnorm(prototype_cam)| * [1, w_1..w_C]) over all N*K*h*w elements.

    cam, prototype_cam (N, K, h, w); class_weights (C,). Both inputs receive gradient.
    """
    weights = torch.cat([class_weights.new_ones(1), class_weights])[None, :, None, None]
    return ((cam.float() - max_normalise(prototype_cam.float())).abs() * weights).mean()


def scale_consistency(cam_full: torch.Tensor, cam_half: torch.Tensor, labels: torch.Tensor,
                      class_weights: torch.Tensor) -> torch.Tensor:
    """mean(|down(cam_full) * y - cam_half * y| * w) over the foreground channels.

    cam_full (N, K, h, w) at scale 1, cam_half (N, K, h', w') at scale 0.5; ``down`` resizes
    cam_full to (h', w') with bilinear align_corners=True (as the reference). labels (N, C)
    multi-hot, so absent classes contribute 0; class_weights (C,). Mean over N*C*h'*w'.
    """
    down = F.interpolate(cam_full.float(), size=cam_half.shape[-2:], mode="bilinear", align_corners=True)
    weights = (labels * class_weights)[:, :, None, None]                     # (N, C, 1, 1)
    return ((down[:, 1:] - cam_half[:, 1:].float()).abs() * weights).mean()
