"""The reference-style SFC training step, kept to be compared with (``bench --naive``): the kit's
network and losses computed the way the authors' trainer does (docs/reference.md 3.2-3.4, quirks
8-12 and 16): the image bank on the CPU, filled by Python loops and copied whole to the device each
step (plus a thrown-away shuffled copy); full (N, C+1, S, S) valid masks made per sample; class
weights recomputed every step and applied by a loop, in frequency order; the prototype step
materialising (N, C+1, D, h, w); the unused half-scale prototype CAM; float32, contiguous, cuDNN
deterministic, DataParallel on a GPU. Same losses as the kit's (tests/test_bench.py checks). On
the CPU the bank's copies are forced (``copy=True``).
"""
from __future__ import annotations

import copy
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sfc_core.method.cam import max_normalise
from sfc_core.method.coefficients import distribution_coefficients
from sfc_core.method.network import SfcNet


def reference_valid_mask(box: torch.Tensor, num_channels: int, crop_size: int) -> torch.Tensor:
    """The reference loader's valid mask of one sample (quirk 9): float32 (K, S, S), 1 inside
    ``box`` = [y0, y1, x0, x1] on every channel."""
    mask = torch.zeros(num_channels, crop_size, crop_size)
    mask[:, box[0]:box[1], box[2]:box[3]] = 1
    return mask


class ReferenceBank:
    """The reference's image bank (docs/reference.md 3.2, quirks 8 and 19): one slot per class
    on the CPU holding an image, its raw (K, S, S) valid mask and its label; every slot is
    drawable, filled or not."""

    def __init__(self, num_classes: int, crop_size: int, seed: int):
        self.images = torch.zeros(num_classes, 3, crop_size, crop_size)
        self.valid_masks = torch.zeros(num_classes, num_classes + 1, crop_size, crop_size)
        self.labels = torch.zeros(num_classes, num_classes)
        self.random = random.Random(seed)

    def update(self, images: torch.Tensor, valid_masks: torch.Tensor, labels: torch.Tensor) -> None:
        """For each image in batch order and each of its classes, copy it into the class's slot."""
        for i in range(len(labels)):
            for c in range(labels.shape[1]):
                if labels[i, c] == 1:
                    self.images[c] = images[i].cpu()
                    self.valid_masks[c] = valid_masks[i].cpu()
                    self.labels[c] = labels[i].cpu()

    def draw(self, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k slots, uniform with replacement; the whole bank goes to the device to take them."""
        slots = [self.random.randint(0, len(self.labels) - 1) for _ in range(k)]
        order = torch.randperm(len(self.labels))
        _ = (self.images[order], self.valid_masks[order], self.labels[order])   # made and thrown away
        images, valid_masks, labels = (t.to(device, copy=True)
                                       for t in (self.images, self.valid_masks, self.labels))
        return images[slots], valid_masks[slots], labels[slots]


def reference_prototype_cam(cam: torch.Tensor, features: torch.Tensor, valid_mask: torch.Tensor,
                            background_scale: float) -> torch.Tensor:
    """The reference's prototype step (SIPE/SFC ``prototype``, quirk 12).

    cam (N, K, h, w) is changed in place (the reference passes a clone); features (N, D, h, w);
    valid_mask (N, K, h, w). Seeds are scattered into an (N, h, w, K) tensor and permuted, the
    masked features are materialised as (N, K, D, h, w) and average-pooled, and the cosine is
    taken against every pixel by broadcasting. Returns (N, K, h, w).
    """
    n, k, h, w = cam.shape
    cam[:, 0] = cam[:, 0] * background_scale
    seeds = torch.zeros(n, h, w, k, device=cam.device).scatter_(-1, cam.argmax(1).view(n, h, w, 1), 1)
    seeds = seeds.permute(0, 3, 1, 2).contiguous() * valid_mask
    masked = seeds.unsqueeze(2) * features.unsqueeze(1)                                # (N, K, D, h, w)
    prototypes = F.adaptive_avg_pool2d(masked.view(n * k, -1, h, w), 1).view(n, k, -1, 1, 1)
    return F.relu(torch.cosine_similarity(features.unsqueeze(1), prototypes, dim=2))


class ReferenceSfcNet(SfcNet):
    """SfcNet with the reference's prototype step (on clones of its inputs, as the reference)."""

    def _prototype_maps(self, cam: torch.Tensor, features: torch.Tensor,
                        seed_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.profiler.record_function("naive/prototype"):
            return {"prototype_cam": reference_prototype_cam(cam.clone(), features.clone(), seed_mask.clone(),
                                                             self.seed_background_scale)}


def reference_network(model: SfcNet) -> ReferenceSfcNet:
    """A ReferenceSfcNet holding a copy of ``model``'s weights."""
    side_channels = tuple(side.out_channels for side in model.sides)
    reference = ReferenceSfcNet(copy.deepcopy(model.backbone), model.num_classes, side_channels,
                                model.seed_background_scale)
    reference.load_state_dict(model.state_dict())
    return reference


def reference_class_weights(counts: np.ndarray, second_counts: np.ndarray,
                            extra: float) -> tuple[list[int], list[float]]:
    """The reference's weights (quirk 10): recomputed from the count arrays in descending
    frequency order. Returns (class index of each position, weight of each position)."""
    order = np.argsort(-counts, kind="stable")
    return order.tolist(), distribution_coefficients(counts[order], second_counts[order], extra).tolist()


def apply_class_weights(losses: torch.Tensor, order: list[int], weights: list[float], offset: int) -> None:
    """The reference's slice assignments, in place: channel ``c + offset`` of (N, channels, h, w)
    ``losses`` times the weight of class c, one class at a time."""
    with torch.profiler.record_function("naive/class_weights"):
        for position, c in enumerate(order):
            losses[:, c + offset] = losses[:, c + offset] * weights[position]


def reference_losses(network: nn.Module, images: torch.Tensor, valid_mask: torch.Tensor, labels: torch.Tensor,
                     statistics: tuple[np.ndarray, np.ndarray, float], prototype_weight: float,
                     scale_weight: float) -> dict[str, torch.Tensor]:
    """The reference trainer's forward and losses (docs/reference.md 3.3).

    images (N, 3, S, S); valid_mask (N, K, S, S) full resolution, label-masked; labels (N, C).
    Both scales run the whole network, prototype CAM included (quirk 11).
    """
    half = F.interpolate(images, scale_factor=0.5, mode="bilinear", align_corners=True)
    grid_model = network.module if isinstance(network, nn.DataParallel) else network
    full, small = (network(x, F.interpolate(valid_mask, size=grid_model.feature_size(*x.shape[-2:]),
                                            mode="nearest"))
                   for x in (images, half))
    order, weights = reference_class_weights(*statistics)
    cls = (F.multilabel_soft_margin_loss(full["score"], labels)
           + F.multilabel_soft_margin_loss(small["score"], labels)) / 2
    prototype = (full["cam"] - max_normalise(full["prototype_cam"])).abs()
    apply_class_weights(prototype, order, weights, offset=1)
    label_mask = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1)[:, :, None, None]
    down = F.interpolate(full["cam"], size=small["cam"].shape[-2:], mode="bilinear", align_corners=True)
    scale = (down * label_mask - small["cam"] * label_mask).abs()[:, 1:]
    apply_class_weights(scale, order, weights, offset=0)
    scale = scale.abs()                                       # the reference's second abs
    losses = {"cls": cls, "prototype": prototype.mean(), "scale": scale.mean()}
    losses["total"] = cls + prototype_weight * losses["prototype"] + scale_weight * losses["scale"]
    return losses
