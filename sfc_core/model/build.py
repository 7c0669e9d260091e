"""The method's network and objective (sfc_core/method/) from a configuration, weight files and checkpoints.

    backbone = build_backbone("resnet50", weights="imagenet")     # or a state-dict path, "none"
    model = build_model(cfg.model, num_classes)
    objective = build_objective(model, class_weights, cfg)        # the loss weights of cfg.loss
    model = load_model(path, engine.load_checkpoint(path), cfg.model, class_names)
    cam, proto = multiscale_cams_batch(model, views_per_scale, labels, size)   # B images, upsampled
    net = for_inference(model, channels_last)                     # BatchNorms folded, a copy
Every problem with a file (weights, checkpoint) is an SfcError naming it and the fix.
"""
from __future__ import annotations

import copy
import dataclasses
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from sfc_core import engine
from sfc_core.config import Config, ModelConfig
from sfc_core.data.transforms import valid_mask_from_boxes
from sfc_core.errors import SfcError
from sfc_core.method import cam as cam_math
from sfc_core.method.backbones import BACKBONES, Backbone, resnet_backbone
from sfc_core.method.losses import SfcObjective
from sfc_core.method.network import SfcNet

ARCHITECTURE = "sfc"   # recorded in checkpoints and checked when loading
# The authors' ImageNet files (torchvision's older release of the same weights): they load through --set.
AUTHORS_IMAGENET_FILES = {"resnet50": "resnet50-19c8e357.pth", "resnet101": "resnet101-5d3b4d8f.pth"}


def build_backbone(name: str, weights: str = "none", weights_key: str = "model.backbone_weights") -> Backbone:
    """The registered backbone ``name`` with ``weights``: "imagenet" (torchvision's, the ResNets),
    a state-dict path, or "none"; ``weights_key`` (the config field) is named in each error's fix."""
    if name not in BACKBONES:
        raise SfcError(f"unknown backbone {name!r}", fix=f"set model.backbone to one of: {', '.join(BACKBONES)}")
    if weights == "imagenet" and name in AUTHORS_IMAGENET_FILES:
        try:
            return resnet_backbone(getattr(torchvision.models, name)(weights="IMAGENET1K_V1"))
        except Exception as e:  # offline: no hub cache and no network
            raise imagenet_weights_error(name, weights_key, e) from None
    if weights in ("imagenet", "pretrain") and name not in AUTHORS_IMAGENET_FILES:
        raise SfcError(f"the {name} backbone has no {weights!r} weights here",
                       fix=f"make them with `python -m sfc_core pretrain` and pass --set {weights_key}=PATH "
                           "with the path it prints (train does this for 'pretrain'), or none")
    if weights == "none":
        return BACKBONES[name]()
    path = Path(weights)
    fix = (f"pass a state dict of the same architecture (torchvision layout) with --set {weights_key}=PATH, "
           f"or --set {weights_key}=none")
    state = read_state_dict(path, fix)
    try:
        return BACKBONES[name](state)
    except ValueError as e:
        raise SfcError(f"backbone {e}", path=path, fix=fix) from None


def read_state_dict(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save`` (weights only); SfcError with ``fix`` otherwise."""
    if not path.is_file():
        raise SfcError("backbone weights file not found", path=path, fix=fix)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SfcError(f"cannot read backbone weights ({type(e).__name__})", path=path, fix=fix) from None
    if not isinstance(state, dict):
        raise SfcError("backbone weights file is not a state dict", path=path, fix=fix)
    return state


def imagenet_weights_error(name: str, weights_key: str, error: Exception) -> SfcError:
    """The one message when torchvision cannot load a ResNet's ImageNet weights (offline)."""
    url = torchvision.models.get_model_weights(name).IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    return SfcError(f"cannot load ImageNet weights for {name} ({type(error).__name__}: {error})", path=cached,
                    fix=f"put torchvision's file ({url}) at that path, or pass a local copy with "
                        f"--set {weights_key}=/path/{cached.name} (the authors' older "
                        f"{AUTHORS_IMAGENET_FILES[name]} loads the same way)")


def build_model(model_cfg: ModelConfig, num_classes: int) -> SfcNet:
    """An SfcNet for ``num_classes`` foreground classes (from the dataset) and ``model_cfg``."""
    backbone = build_backbone(model_cfg.backbone, model_cfg.backbone_weights)
    return SfcNet(backbone, num_classes, model_cfg.side_channels, model_cfg.seed_background_scale,
                  model_cfg.pcm, model_cfg.seed_rule)


def build_objective(model: SfcNet, class_weights: torch.Tensor, cfg: Config) -> SfcObjective:
    """SFC's objective for ``model``: the terms weighted by ``cfg.loss``, class_weights (C,)."""
    try:
        return SfcObjective(model, class_weights, cfg.loss.term_weights(),
                            partial(valid_mask_from_boxes, crop_size=cfg.data.crop_size))
    except ValueError as e:          # a loss term registered without its weight field, or the reverse
        raise SfcError(str(e), fix="add the field <term>_weight to LossConfig in sfc_core/config.py "
                                   "(docs/extending.md)") from None


def checkpoint_identity(model_cfg: ModelConfig, class_names: list[str]) -> dict:
    """What a checkpoint records about the network, and what loading it checks."""
    return {"architecture": ARCHITECTURE, "backbone": model_cfg.backbone,
            "num_classes": len(class_names), "class_names": list(class_names)}


def load_model(path: Path, ckpt: dict, model_cfg: ModelConfig, class_names: list[str],
               device: torch.device | str | None = None) -> SfcNet:
    """The SfcNet of ``ckpt`` in eval mode on ``device``; SfcError unless it matches the config."""
    engine.check_compatible(ckpt, checkpoint_identity(model_cfg, class_names), path)
    model = build_model(dataclasses.replace(model_cfg, backbone_weights="none"), len(class_names))
    engine.check_shapes(ckpt, model, path, {"model": dataclasses.asdict(model_cfg)}, ("model.",),
                        fix="use the model settings the checkpoint was trained with (its config is inside "
                            "it), or train again into a fresh --out")
    model.load_state_dict(ckpt["model"])      # the checkpoint holds every weight
    device = engine.select_device("auto") if device is None else torch.device(device)
    return model.to(device).eval()


def multiscale_cams_batch(model: SfcNet, images: list[torch.Tensor], labels: torch.Tensor, size: tuple[int, int],
                          mask_by_label: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Classifier and prototype CAMs (B, C+1, H, W) float32 of B same-size images.

    images: one (2B, 3, h_s, w_s) tensor per scale (images then flips) or (B, ...); labels (B, C).
    Maps upsampled to `size`, summed over scales, max-normalised (reference make_cam)."""
    classifier = prototype = 0
    for views in images:
        scale_cams = model.infer_batch(views, labels, mask_by_label=mask_by_label)
        up = [F.interpolate(cam.float(), size, mode="bilinear", align_corners=False) for cam in scale_cams]
        classifier, prototype = classifier + up[0], prototype + up[1]
    return cam_math.max_normalise(classifier), cam_math.max_normalise(prototype)


# -- inference copies ----------------------------------------------------------------------

def fold_batchnorms(module: nn.Module) -> nn.Module:
    """``module`` (eval mode) with each BatchNorm right after a convolution (``convN``/``bnN``
    of a block, or in an ``nn.Sequential``) folded into it, in place; the BatchNorm becomes Identity."""
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
    """The memory format of an inference network and its inputs (``runtime.channels_last``)."""
    return torch.channels_last if channels_last else torch.contiguous_format


def for_inference(model: nn.Module, channels_last: bool) -> nn.Module:
    """An eval-mode copy of ``model``, BatchNorms folded, in ``inference_layout``: the CAM stage's."""
    return fold_batchnorms(copy.deepcopy(model).eval()).to(memory_format=inference_layout(channels_last))
