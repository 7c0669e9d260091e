"""DeepLab-v2 ResNet-101 with multi-scale inputs: step 3's network as the SFC authors trained it
(kazuto1011/deeplab-pytorch, ``libs/models/deeplabv2.py`` and ``msc.py``; docs/method.md 5).

    model.train(); model(images)   # {"out": max of the scales (N, K, h, w), "scales": (x1, x0.5, x0.75)}
    model.eval(); model(images)["out"]   # h = ceil(H / 8)

Trunk at output stride 8 (every block of layer3/4 dilated, BatchNorm frozen, torchvision's names),
ASPP 6/12/18/24 summed, MSC max. It starts from torchvision's ImageNet weights: deeplab-pytorch's
COCO-pretrained Caffe init cannot be had offline.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

NAME = "deeplabv2_resnet101"
ASPP_RATES = (6, 12, 18, 24)          # MODEL.ATROUS_RATES
MSC_SCALES = (0.5, 0.75)              # MSC(pyramids=[0.5, 0.75]) beside the image itself
LAYER_DILATIONS = {"layer3": 2, "layer4": 4}
TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
BATCHNORMS = nn.modules.batchnorm._BatchNorm   # BatchNorm2d, and SyncBatchNorm should one convert them


class ASPP(nn.Module):
    """Four dilated 3x3 convolutions to the class logits, their outputs summed."""

    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, ...] = ASPP_RATES):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True)
                                   for r in rates)
        for conv in self.convs:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.constant_(conv.bias, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(conv(x) for conv in self.convs)


def dilated_resnet101(resnet: nn.Module) -> nn.Sequential:
    """torchvision's ResNet-101 without its classifier at output stride 8: every block of layer3
    and layer4 dilated by 2 and 4 (torchvision would leave each first block undilated)."""
    for name, dilation in LAYER_DILATIONS.items():
        for index, block in enumerate(getattr(resnet, name)):
            block.conv2.dilation, block.conv2.padding = (dilation, dilation), (dilation, dilation)
            if index == 0:
                block.conv2.stride = (1, 1)
                block.downsample[0].stride = (1, 1)
    return nn.Sequential(OrderedDict((name, getattr(resnet, name)) for name in TRUNK))


class DeepLabV2(nn.Module):
    """``backbone_weights``: "imagenet" or "none" (a path is loaded by the caller)."""

    def __init__(self, num_classes: int, backbone_weights: str = "none"):
        super().__init__()
        weights = "IMAGENET1K_V1" if backbone_weights == "imagenet" else None
        self.backbone = dilated_resnet101(torchvision.models.resnet101(weights=weights))
        self.aspp = ASPP(2048, num_classes)
        for module in self.backbone.modules():
            if isinstance(module, BATCHNORMS):
                module.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> DeepLabV2:
        super().train(mode)
        for module in self.backbone.modules():     # frozen: running statistics used, never updated
            if isinstance(module, BATCHNORMS):
                module.eval()
        return self

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """One scale: (N, 3, H, W) -> (N, K, ceil(H / 8), ceil(W / 8))."""
        return self.aspp(self.backbone(images))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor | tuple[torch.Tensor, ...]]:
        full = self.logits(images)
        pyramid = [self.logits(F.interpolate(images, size=[int(s * p) for s in images.shape[-2:]],
                                             mode="bilinear", align_corners=False)) for p in MSC_SCALES]
        upsampled = [F.interpolate(x, size=full.shape[-2:], mode="bilinear", align_corners=False)
                     for x in pyramid]
        best = torch.stack([full, *upsampled]).amax(0)
        if self.training:
            return {"out": best, "scales": (full, *pyramid)}
        return {"out": best}

    def parameter_kinds(self) -> dict[str, list[nn.Parameter]]:
        """deeplab-pytorch's optimiser groups (the frozen BatchNorms in none)."""
        convs = [m.weight for m in self.backbone.modules() if isinstance(m, nn.Conv2d)]
        return {"backbone": convs, "head_weights": [c.weight for c in self.aspp.convs],
                "head_biases": [c.bias for c in self.aspp.convs]}
