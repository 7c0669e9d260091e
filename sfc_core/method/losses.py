"""SFC's training objective (docs/method.md 3, docs/reference.md 3.3): its loss terms by name.

    objective = SfcObjective(model, class_weights, {"prototype": 1.6, "scale": 0.8}, valid_mask)
    losses, out = objective(images, boxes, labels)    # losses: cls, prototype, scale, total

total = classification (mean of the two scales) + sum over ``LOSS_TERMS`` of weight x term.
A new term: ``@loss_term("name")`` on a function(full, half, labels, class_weights) -> scalar
here, and a field ``name_weight`` in config.py's LossConfig; weight 0 switches it off. Shapes:
N images, C classes, K = C+1 channels (background at 0); ``class_weights`` (C,), background 1.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sfc_core.method.cam import max_normalise
from sfc_core.method.network import SfcNet

HALF_SCALE = 0.5      # the second scale of the cross-scale consistency term


@dataclass(frozen=True)
class LossTerm:
    fn: Callable[..., torch.Tensor]     # (full, half, labels, class_weights) -> scalar
    uses_prototype_cam: bool            # reads full["prototype_cam"] (computed only then)


LOSS_TERMS: dict[str, LossTerm] = {}


def loss_term(name: str, uses_prototype_cam: bool = False) -> Callable:
    """Decorator: register ``fn(full, half, labels, class_weights)`` as the loss term ``name``,
    weighted by config ``loss.<name>_weight``. ``full``/``half``: the network's outputs at
    scales 1 and ``HALF_SCALE``; labels (N, C) multi-hot; class_weights (C,)."""
    def add(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        LOSS_TERMS[name] = LossTerm(fn, uses_prototype_cam)
        return fn
    return add


def classification_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label soft margin: scores (N, C) logits, labels (N, C) multi-hot -> scalar."""
    return F.multilabel_soft_margin_loss(scores.float(), labels)


@loss_term("prototype", uses_prototype_cam=True)
def prototype_consistency(full: dict[str, torch.Tensor], half: dict[str, torch.Tensor], labels: torch.Tensor,
                          class_weights: torch.Tensor) -> torch.Tensor:
    """mean(|cam - maxnorm(prototype_cam)| * [1, w_1..w_C]) over all N*K*h*w elements at
    scale 1. Both maps receive gradient."""
    weights = torch.cat([class_weights.new_ones(1), class_weights])[None, :, None, None]
    return ((full["cam"].float() - max_normalise(full["prototype_cam"].float())).abs() * weights).mean()


@loss_term("scale")
def scale_consistency(full: dict[str, torch.Tensor], half: dict[str, torch.Tensor], labels: torch.Tensor,
                      class_weights: torch.Tensor) -> torch.Tensor:
    """mean(|down(cam_full) * y - cam_half * y| * w) over the foreground channels, N*C*h'*w';
    ``down``: bilinear to the half scale's grid, align_corners=True (as the reference)."""
    cam_half = half["cam"]
    down = F.interpolate(full["cam"].float(), size=cam_half.shape[-2:], mode="bilinear", align_corners=True)
    weights = (labels * class_weights)[:, :, None, None]                     # (N, C, 1, 1)
    return ((down[:, 1:] - cam_half[:, 1:].float()).abs() * weights).mean()


class SfcObjective(nn.Module):
    """The losses of one batch as one module call, so DDP sees a single forward. weights: {term:
    weight} (``LOSS_TERMS``; 0: off); valid_mask(boxes, labels, grid) -> (N, K, h, w)."""

    def __init__(self, model: SfcNet, class_weights: torch.Tensor, weights: dict[str, float],
                 valid_mask: Callable[..., torch.Tensor]):
        super().__init__()
        if set(weights) != set(LOSS_TERMS):
            raise ValueError(f"loss weights {sorted(weights)} do not name the registered loss terms "
                             f"{sorted(LOSS_TERMS)}: each term needs a field <term>_weight in LossConfig")
        self.model = model
        self.register_buffer("class_weights", class_weights)
        self.weights = {name: weights[name] for name in LOSS_TERMS if weights[name] > 0}
        self.uses_prototype_cam = any(LOSS_TERMS[name].uses_prototype_cam for name in self.weights)
        self.valid_mask = valid_mask

    def forward(self, images: torch.Tensor, boxes: torch.Tensor,
                labels: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """images (N, 3, S, S), boxes (N, 4) of the real image inside each crop, labels (N, C).
        Returns the loss terms (``total`` included) and the scale-1 network outputs."""
        half_images = F.interpolate(images, scale_factor=HALF_SCALE, mode="bilinear", align_corners=True)
        full = self.model(images, self._mask(images, boxes, labels), with_prototype_cam=self.uses_prototype_cam)
        half = self.model(half_images, self._mask(half_images, boxes, labels), with_prototype_cam=False)
        losses = {"cls": (classification_loss(full["score"], labels) + classification_loss(half["score"], labels)) / 2}
        total = losses["cls"]
        for name, weight in self.weights.items():   # prototype x 1.6, scale x 0.8, any term added
            losses[name] = LOSS_TERMS[name].fn(full, half, labels, self.class_weights)
            total = total + weight * losses[name]
        losses["total"] = total
        return losses, full

    def _mask(self, images: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.valid_mask(boxes, labels, grid=self.model.feature_size(*images.shape[-2:]))
