"""The SFC network: a backbone plus the new 1x1 layers; all CAM math is in ``cam.py``.

    out = model(images, valid_mask)          # training: score, cam (PCM-refined), prototype_cam
    maps = model(images, valid_mask, intermediates=True)   # + stages, classifier_cam, seeds, ...
    cam, proto = model.infer(pair, label)    # inference on an image + its flip

New layers (docs/reference.md 2.2), all 1x1 convolutions without bias: side1..side4 on the
detached x1..x4 -> ``side_channels`` (hierarchical features), ``classifier`` x4 -> C,
``pcm_projection`` (the reference's f9) (3 + C4) -> C4 on the image resized to the grid and x4.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sfc_core.method import cam as cam_math
from sfc_core.method.backbones import Backbone

OUTPUTS = ("score", "cam", "prototype_cam")     # what the forward returns without intermediates


class SfcNet(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int,
                 side_channels: tuple[int, int, int, int] = (128, 128, 256, 256),
                 seed_background_scale: float = 0.3, pcm: bool = True, seed_rule: str = "argmax"):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.seed_background_scale = seed_background_scale
        self.pcm = pcm
        self.seed_rule = seed_rule
        self.sides = nn.ModuleList(nn.Conv2d(c_in, c_out, 1, bias=False)
                                   for c_in, c_out in zip(backbone.channels, side_channels))
        top = backbone.channels[-1]
        self.classifier = nn.Conv2d(top, num_classes, 1, bias=False)
        self.pcm_projection = nn.Conv2d(3 + top, top, 1, bias=False)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters: ``backbone`` (lr) and ``new`` (lr x new_layer_lr_mult)."""
        new = [*self.sides.parameters(), *self.classifier.parameters(), *self.pcm_projection.parameters()]
        return {"backbone": [p for p in self.backbone.parameters() if p.requires_grad],
                "new": [p for p in new if p.requires_grad]}

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the CAM grid for an (H, W) input."""
        return self.backbone.feature_size(height, width)

    # -- pieces shared by training and inference -------------------------------------------
    def _refine(self, cam: torch.Tensor, images: torch.Tensor, x4: torch.Tensor) -> torch.Tensor:
        """PCM on features f9(concat(bilinear-AC image, x4)); the CAM itself when ``pcm`` is off.
        cam (N, C+1, h, w), images (N, 3, H, W), x4 (N, C4, h, w) -> (N, C+1, h, w)."""
        if not self.pcm:
            return cam
        small = F.interpolate(images, size=x4.shape[-2:], mode="bilinear", align_corners=True)
        return cam_math.pixel_correlation(cam, self._pcm_features(small, x4))

    def _pcm_features(self, small: torch.Tensor, x4: torch.Tensor) -> torch.Tensor:
        """f9(concat(small, x4)) as the sum of its two parts (f9's weight sliced), so no
        (N, 3 + C4, h, w) concatenation is made. small (N, 3, h, w), x4 (N, C4, h, w) -> (N, C4, h, w)."""
        weight = self.pcm_projection.weight
        return F.conv2d(x4, weight[:, 3:]) + F.conv2d(small, weight[:, :3])

    def _hierarchical_features(self, stages: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Side convs on the detached stage outputs -> (N, sum(side_channels), h, w) on x3's grid."""
        sides = [side(x.detach()) for side, x in zip(self.sides, stages)]
        return cam_math.hierarchical_features(sides, stages[2].shape[-2:])

    def _prototype_maps(self, cam: torch.Tensor, features: torch.Tensor,
                        seed_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``seed_scores`` (what the seeds take the arg-max of: the CAM, or SIPE's correlation
        IoU under ``seed_rule="sipe"``), ``seeds``, ``prototypes`` (N, K, D), ``prototype_cam``."""
        scores = cam if self.seed_rule == "argmax" else cam_math.correlation_iou(cam, features)
        seeds = cam_math.seeds(scores, seed_mask, self.seed_background_scale)
        prototypes = cam_math.prototypes(seeds, features)
        return {"seed_scores": scores, "seeds": seeds, "prototypes": prototypes,
                "prototype_cam": cam_math.prototype_cam(features, prototypes)}

    # -- training ----------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, valid_mask: torch.Tensor, with_prototype_cam: bool = True,
                intermediates: bool = False) -> dict[str, torch.Tensor]:
        """images (N, 3, H, W); valid_mask (N, C+1, h, w), label-masked (or broadcastable).

        Returns ``score`` (N, C) logits, ``cam`` (N, C+1, h, w) (PCM-refined when ``pcm``) and, unless
        ``with_prototype_cam`` is False, ``prototype_cam``. ``intermediates``: also ``stages``,
        ``classifier_cam``, ``features``, ``seed_scores``, ``seeds``, ``prototypes``."""
        stages = self.backbone(images)
        x4 = stages[3]
        logit_map = self.classifier(x4)
        classifier_cam = cam_math.classifier_cam(logit_map, valid_mask)
        maps = {"stages": stages, "score": logit_map.mean(dim=(2, 3)), "classifier_cam": classifier_cam,
                "cam": self._refine(classifier_cam, images, x4)}
        if with_prototype_cam:
            maps["features"] = self._hierarchical_features(stages)
            maps.update(self._prototype_maps(maps["cam"], maps["features"], valid_mask))
        return maps if intermediates else {key: maps[key] for key in OUTPUTS if key in maps}

    # -- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def infer(self, images: torch.Tensor, label: torch.Tensor,
              mask_by_label: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """CAMs of one image at one scale: ``infer_batch`` of one image; images (2 or 1, 3, H, W),
        label (C,) -> (cam, prototype_cam), each (C+1, h, w)."""
        cam, prototype_cam = self.infer_batch(images, label[None], mask_by_label)
        return cam[0], prototype_cam[0]

    @torch.no_grad()
    def infer_batch(self, images: torch.Tensor, labels: torch.Tensor,
                    mask_by_label: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """CAMs of B same-size images at one scale (docs/reference.md 2.4).

        images (2B, 3, H, W) = the images then their flips, or (B, 3, H, W); labels (B, C). Each flip
        is mirrored back and summed before any normalisation; seeds masked by [1, label], the classifier
        CAM only with ``mask_by_label``. Per image throughout. -> (cam, prototype_cam) (B, C+1, h, w)."""
        count = labels.shape[0]
        stages = self.backbone(images)
        x4 = stages[3]
        logit_map, features = self.classifier(x4), self._hierarchical_features(stages)
        if images.shape[0] == 2 * count:
            logit_map, features, x4, images = (t[:count] + t[count:].flip(-1)
                                               for t in (logit_map, features, x4, images))
        label_mask = torch.cat([labels.new_ones(count, 1), labels], dim=1).to(logit_map.dtype)[:, :, None, None]
        cam = cam_math.classifier_cam(logit_map, label_mask if mask_by_label else None)
        cam = self._refine(cam, images, x4)
        return cam, self._prototype_maps(cam, features, label_mask)["prototype_cam"]
