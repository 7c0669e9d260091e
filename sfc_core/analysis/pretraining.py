"""What notebook 00 shows of the pretraining set and of the backbone pretrained on it.

    images, names = class_examples(count=16)                 # one image of each of 16 classes
    pictures = feature_pictures(build_backbone("tiny", path), benchmark_images)

The pretraining set (``sfc_core.data.pretrain_set``) is the synthetic world's "ImageNet": the
``synthetic-paper`` preset starts from a backbone trained on it (``sfc_core.model.pretrained``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sfc_core.analysis.walkthrough import feature_rgb
from sfc_core.data.pretrain_set import PretrainSpec, class_definitions, image_at
from sfc_core.method.backbones import Backbone
from sfc_core.model.pretrained import DEFAULT_SPEC, to_tensor


def class_examples(spec: PretrainSpec = DEFAULT_SPEC, count: int = 16) -> tuple[list[np.ndarray], list[str]]:
    """The first training image (S, S, 3) uint8 of ``count`` classes spread over the set, and names."""
    classes = class_definitions(spec)
    chosen = np.linspace(0, len(classes) - 1, min(count, len(classes))).round().astype(int)
    return [image_at(spec, classes, "train", int(k)) for k in chosen], [classes[k].name for k in chosen]


@torch.no_grad()
def feature_pictures(backbone: Backbone, images: Sequence[np.ndarray], stage: int = -1) -> list[np.ndarray]:
    """Each image's ``stage`` features as a picture of their first three principal components."""
    backbone.eval()
    return [feature_rgb(backbone(to_tensor(image[None]))[stage][0]) for image in images]
