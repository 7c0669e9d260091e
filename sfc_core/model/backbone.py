"""Backbones: a registry of networks that return their four stage outputs (x1, x2, x3, x4).

    backbone = build_backbone("resnet50", weights="imagenet")
    x1, x2, x3, x4 = backbone(images)          # strides 4, 8, 16, 16 for the ResNets
    backbone.channels                          # (256, 512, 1024, 2048)
    backbone.feature_size(512, 512)            # (32, 32): the grid of x3 and x4

Registered entries (``BACKBONES``):

- ``resnet50``, ``resnet101``: torchvision ResNets with strides (2, 2, 2, 1) and no dilation
  (layer4's first block has stride 1), output stride 16, as the reference. Their freeze
  policy is the reference's: every BatchNorm in eval mode with frozen running statistics;
  conv1/bn1, layer1 and layer2 get no gradient (``requires_grad_(False)``, the output of
  layer2 detached, left out of the optimiser); layer3 and layer4 train, BN affine included.
  Weights: ``"imagenet"`` (torchvision IMAGENET1K_V1, the reference's 76.1% weights, from
  torch's hub cache or a download: ``imagenet_file``), a path to a torchvision state dict
  (torchvision's file or the authors' older copy, ``AUTHORS_IMAGENET_FILES``), or ``"none"``.
- ``tiny``: a width-reduced ResNet-18 layout (widths 16-32-64-128, blocks 1/1/2/2) for the
  synthetic CPU presets: a 3x3 stride-2 stem with max-pool (stride 4), layer2 at stride 2,
  layer3 at stride 1, layer4 dilated (2), so output stride 8 (a 128 px image gives 16x16).
  Weights: ``"none"`` (from scratch: its BatchNorm trains and nothing is frozen) or a path,
  e.g. the file ``python -m sfc_core pretrain`` writes (sfc_core/pretrain.py). With loaded
  weights it gets the ResNets' freeze policy, as the paper does with ImageNet weights: frozen
  BatchNorm statistics, stem, layer1 and layer2 without gradient.

The freeze policy is data of each entry (``frozen_stages``, ``frozen_bn``), applied by
``Backbone`` in one place.
"""
from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from sfc_core.errors import SfcError

BACKBONES: dict[str, Callable[[str, str], Backbone]] = {}


def register(name: str) -> Callable:
    def add(builder: Callable[[str, str], Backbone]) -> Callable[[str, str], Backbone]:
        BACKBONES[name] = builder
        return builder
    return add


def build_backbone(name: str, weights: str = "none", weights_key: str = "model.backbone_weights") -> Backbone:
    """The registered backbone ``name`` with ``weights`` ("imagenet", a state-dict path, "none").

    ``weights_key``: the config field the weights came from, named in the fix of every
    "cannot load weights" error (``--set KEY=PATH`` works on every verb that builds one)."""
    if name not in BACKBONES:
        raise SfcError(f"unknown backbone {name!r}",
                       fix=f"set model.backbone to one of: {', '.join(BACKBONES)}")
    return BACKBONES[name](weights, weights_key)


class Backbone(nn.Module):
    """Five stages (stem, layer1..layer4); ``forward`` returns the outputs of layer1..layer4.

    frozen_stages: index of the last stage (0 = stem) that gets no gradient; its output is
    detached and it and all stages before it have ``requires_grad=False``. -1: none frozen.
    frozen_bn: every BatchNorm stays in eval mode (running statistics used, never updated).
    """

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


def fold_batchnorms(module: nn.Module) -> nn.Module:
    """``module`` (eval mode: inference only) with each BatchNorm that directly follows a
    convolution folded into that convolution's weight and bias, in place: the same function
    up to float rounding, without the BatchNorm's pass over each activation (the CAMs of the
    tiny backbone: 0.95x the CPU, 0.97x under AVX2; ``python -m benchmarks.speed_changes``).
    The pairs: ``convN`` / ``bnN`` attributes of one block (ResNet blocks, torchvision's and
    ours) and a Conv2d directly followed by a BatchNorm2d in an ``nn.Sequential`` (stems,
    downsamples); each BatchNorm becomes an ``nn.Identity``."""
    if module.training:
        raise ValueError("fold_batchnorms is for a network in eval mode (its BatchNorms use running statistics)")
    for parent in list(module.modules()):
        names = list(parent._modules)
        pairs = list(zip(names, names[1:])) if isinstance(parent, nn.Sequential) else \
            [(f"conv{i}", f"bn{i}") for i in range(1, 4)]
        for conv_name, bn_name in pairs:
            conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
    return module


def inference_layout(channels_last: bool) -> torch.memory_format:
    """The memory format of an inference network and its inputs: channels-last on every device
    when ``runtime.channels_last`` (on the CPU too, unlike training: the CAM stage, synthetic-paper,
    batch 8, one thread: 74-85 -> 49-51 ms of CPU per image, 76 -> 59 under the AVX2 switches:
    BENCHMARKS.md). A speed setting: the maps agree within rounding."""
    return torch.channels_last if channels_last else torch.contiguous_format


def for_inference(model: nn.Module, channels_last: bool) -> nn.Module:
    """An eval-mode copy of ``model`` with its BatchNorms folded (``fold_batchnorms``), in
    ``inference_layout(channels_last)``: what the CAM stage and step 3's evaluation run; the
    caller's network is left as it is."""
    return fold_batchnorms(copy.deepcopy(model).eval()).to(memory_format=inference_layout(channels_last))


def load_state_dict_file(module: nn.Module, path: str | Path, weights_key: str) -> None:
    """Load a state dict saved with ``torch.save`` into ``module``; SfcError on any mismatch."""
    path = Path(path)
    fix = (f"pass a state dict of the same architecture (torchvision layout) with --set {weights_key}=PATH, "
           f"or --set {weights_key}=none")
    if not path.is_file():
        raise SfcError("backbone weights file not found", path=path, fix=fix)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SfcError(f"cannot read backbone weights ({type(e).__name__})", path=path, fix=fix) from None
    if not isinstance(state, dict):
        raise SfcError("backbone weights file is not a state dict", path=path, fix=fix)
    own = module.state_dict()      # checked before loading: torch raises its own error on a shape
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    shape_errors = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or shape_errors:
        raise SfcError(f"backbone weights do not match {type(module).__name__}: "
                       f"missing {missing[:3]}, unexpected {unexpected[:3]}, "
                       f"wrong shape {shape_errors[:3]}", path=path, fix=fix)
    module.load_state_dict(state)


# -- torchvision ResNets at output stride 16 -----------------------------------------------

# The authors' ImageNet files (torchvision's older release of the same IMAGENET1K_V1 weights,
# the same keys): torchvision no longer looks for them, but they load through --set.
AUTHORS_IMAGENET_FILES = {"resnet50": "resnet50-19c8e357.pth", "resnet101": "resnet101-5d3b4d8f.pth"}


def imagenet_file(name: str) -> tuple[str, Path]:
    """(url, cache path) of the IMAGENET1K_V1 file torchvision loads for the ResNet ``name``:
    the name comes from torchvision's weight enum (``ResNet50_Weights.IMAGENET1K_V1.url``), the
    folder is ``torch.hub.get_dir()/checkpoints`` ($TORCH_HOME/hub/checkpoints)."""
    url = torchvision.models.get_model_weights(name).IMAGENET1K_V1.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def imagenet_weights_error(name: str, weights_key: str, error: Exception) -> SfcError:
    """The one message when torchvision cannot load a ResNet's ImageNet weights (offline): the
    file it looks for and where, and the --set route for a copy kept anywhere."""
    url, cached = imagenet_file(name)
    return SfcError(f"cannot load ImageNet weights for {name} ({type(error).__name__}: {error})", path=cached,
                    fix=f"put torchvision's file ({url}) at that path, or pass a local copy with "
                        f"--set {weights_key}=/path/{cached.name} (the authors' older "
                        f"{AUTHORS_IMAGENET_FILES[name]} loads the same way)")


def _torchvision_resnet(name: str, weights: str, weights_key: str) -> Backbone:
    builder = getattr(torchvision.models, name)
    if weights == "imagenet":
        try:
            resnet = builder(weights="IMAGENET1K_V1")
        except Exception as e:  # offline: no hub cache and no network
            raise imagenet_weights_error(name, weights_key, e) from None
    else:
        resnet = builder(weights=None)
        if weights != "none":
            load_state_dict_file(resnet, weights, weights_key)
    # strides (2, 2, 2, 1): layer4 keeps stride 16, no dilation (reference network/resnet50.py)
    resnet.layer4[0].conv2.stride = (1, 1)
    resnet.layer4[0].downsample[0].stride = (1, 1)
    stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
    return Backbone([stem, resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4],
                    channels=(256, 512, 1024, 2048), output_stride=16, frozen_stages=2, frozen_bn=True)


for _name in ("resnet50", "resnet101"):
    register(_name)(functools.partial(_torchvision_resnet, _name))


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
def tiny(weights: str = "none", weights_key: str = "model.backbone_weights") -> Backbone:
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
    if weights in ("imagenet", "pretrain"):
        raise SfcError(f"the tiny backbone has no {weights!r} weights here",
                       fix=f"make them with `python -m sfc_core pretrain` and pass --set {weights_key}=PATH "
                           "with the path it prints (train does this for 'pretrain'), or none")
    pretrained = weights != "none"
    backbone = Backbone([stem, *layers], channels=widths, output_stride=8,
                        frozen_stages=2 if pretrained else -1, frozen_bn=pretrained)
    if pretrained:
        load_state_dict_file(backbone, weights, weights_key)
    return backbone
