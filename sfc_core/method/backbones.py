"""Backbones by name: networks that return their four stage outputs (x1, x2, x3, x4).

    backbone = BACKBONES["resnet50"](state_dict_or_None)   # x1, x2, x3, x4 = backbone(images)
    backbone.channels, backbone.feature_size(512, 512)    # (256, 512, 1024, 2048), (32, 32)

``resnet50``/``resnet101``: torchvision's, output stride 16, the reference's freeze policy
(BatchNorm statistics frozen, stem, layer1, layer2 without gradient). ``tiny``: a width-reduced
ResNet-18 (output stride 8) for the CPU presets. A new one: ``@register("name")`` fn(state=None).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torchvision
from torch import nn

BACKBONES: dict[str, Callable[..., Backbone]] = {}


def register(name: str) -> Callable:
    """Decorator: ``BACKBONES[name] = builder``, a function(state: state dict or None) -> Backbone."""
    def add(builder: Callable[..., Backbone]) -> Callable[..., Backbone]:
        BACKBONES[name] = builder
        return builder
    return add


class Backbone(nn.Module):
    """Five stages (stem, layer1..layer4); ``forward`` returns layer1..layer4's outputs.
    frozen_stages: last stage without gradient (-1: none); frozen_bn: BatchNorms stay in eval mode."""

    def __init__(self, stages: list[nn.Module], channels: tuple[int, int, int, int],
                 output_stride: int, frozen_stages: int = -1, frozen_bn: bool = False):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.channels = channels
        self.output_stride = output_stride
        self.frozen_stages = frozen_stages
        self.frozen_bn = frozen_bn
        for stage in self.stages[:frozen_stages + 1]:
            stage.requires_grad_(False)
        self.train()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """images (N, 3, H, W) -> (x1, x2, x3, x4), each (N, channels[i], ...)."""
        return tuple(self.stage_outputs(images)[1:])

    def stage_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of all five stages (stem, layer1..layer4; IRN's boundary branch takes
        the stem's too), a frozen stage's detached."""
        outputs = []
        x = images
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index == self.frozen_stages:
                x = x.detach()
            outputs.append(x)
        return outputs

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if self.frozen_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) grid of x3/x4 for an (H, W) input: ceil(./2) once per stride-2 step."""
        for _ in range(int(math.log2(self.output_stride))):
            height, width = (height + 1) // 2, (width + 1) // 2
        return height, width


def load_weights(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``module.load_state_dict(state)``, checked first: ValueError naming the missing,
    unexpected and wrongly shaped keys (torch's own error on a shape is less clear)."""
    own = module.state_dict()
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    shape_errors = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or shape_errors:
        raise ValueError(f"weights do not match {type(module).__name__}: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}, wrong shape {shape_errors[:3]}")
    module.load_state_dict(state)


# -- torchvision ResNets at output stride 16 -----------------------------------------------

def resnet(name: str, state: dict[str, torch.Tensor] | None = None) -> Backbone:
    """torchvision's ResNet ``name`` with ``state`` (torchvision's layout; None: random)."""
    model = getattr(torchvision.models, name)(weights=None)
    if state is not None:
        load_weights(model, state)
    return resnet_backbone(model)


def resnet_backbone(model: nn.Module) -> Backbone:
    """A torchvision ResNet as a Backbone: layer4 keeps stride 16, no dilation (reference
    network/resnet50.py); the freeze policy of the ImageNet-initialised reference."""
    model.layer4[0].conv2.stride = (1, 1)
    model.layer4[0].downsample[0].stride = (1, 1)
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    return Backbone([stem, model.layer1, model.layer2, model.layer3, model.layer4],
                    channels=(256, 512, 1024, 2048), output_stride=16, frozen_stages=2, frozen_bn=True)


for _name in ("resnet50", "resnet101"):
    register(_name)(functools.partial(resnet, _name))


# -- the tiny from-scratch backbone for CPU presets ----------------------------------------

class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) with optional stride and dilation."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


def _layer(in_channels: int, channels: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(in_channels, channels, stride, dilation),
                         *[BasicBlock(channels, channels, 1, dilation) for _ in range(blocks - 1)])


@register("tiny")
def tiny(state: dict[str, torch.Tensor] | None = None) -> Backbone:
    """3x3 stride-2 stem with max-pool (stride 4), layer2 at stride 2, layer3 at stride 1,
    layer4 dilated (2): output stride 8 (a 128 px image gives 16x16). ``state``: the weights
    (``python -m sfc_core pretrain`` makes them), with the ResNets' freeze policy."""
    widths, blocks = (16, 32, 64, 128), (1, 1, 2, 2)
    stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, padding=1, bias=False),
                         nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, padding=1))
    layers = [_layer(widths[0], widths[0], blocks[0], stride=1, dilation=1),
              _layer(widths[0], widths[1], blocks[1], stride=2, dilation=1),
              _layer(widths[1], widths[2], blocks[2], stride=1, dilation=1),
              _layer(widths[2], widths[3], blocks[3], stride=1, dilation=2)]
    for module in [stem, *layers]:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    pretrained = state is not None
    backbone = Backbone([stem, *layers], channels=widths, output_stride=8,
                        frozen_stages=2 if pretrained else -1, frozen_bn=pretrained)
    if pretrained:
        load_weights(backbone, state)
    return backbone
