"""A small backbone pretrained on the synthetic pretraining set, once, cached by its parameters.

    path = pretrain("data/synthetic/pretrain")   # the verb: python -m sfc_core pretrain
    cfg = resolve_backbone_weights(cfg)          # model.backbone_weights="pretrain" -> that file

``<root>/<backbone>-<key>.pth`` holds the state dict, ``key`` a hash of the set and the recipe;
its ``.json`` (written after it) marks it complete. The kit ships the default file (``SHIPPED``),
copied on a matching cache miss. ``resolve_backbone_weights`` never trains: a file to make is an SfcError.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from sfc_core import engine
from sfc_core.config import Config
from sfc_core.data.pretrain_set import PretrainSpec, make_images
from sfc_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from sfc_core.errors import SfcError
from sfc_core.io import atomic_torch_save, atomic_write_bytes, atomic_write_json
from sfc_core.method.backbones import Backbone
from sfc_core.model.build import build_backbone

PRETRAIN_VERSION = 1
SHIPPED = Path(__file__).resolve().parent / "weights"   # the default backbone's file, in the kit
NAMED_WEIGHTS = "pretrain"       # model.backbone_weights value that means "this stage's file"


@dataclass(frozen=True)
class Recipe:
    backbone: str = "tiny"
    epochs: int = 6
    batch_size: int = 64
    lr: float = 2e-3                 # AdamW, one-cycle: the synthetic from-scratch recipe
    weight_decay: float = 1e-4
    seed: int = 0


DEFAULT_SPEC, DEFAULT_RECIPE = PretrainSpec(), Recipe()


class Classifier(nn.Module):
    """Backbone + global average pooling + linear: images (N, 3, S, S) -> logits (N, K)."""

    def __init__(self, backbone: Backbone, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.channels[-1], num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images)[-1].mean(dim=(2, 3)))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> float32 (N, 3, S, S), normalised like the datasets' images."""
    x = torch.from_numpy(images).float().div_(255)
    x = (x - torch.from_numpy(IMAGENET_MEAN)) / torch.from_numpy(IMAGENET_STD)
    return x.permute(0, 3, 1, 2).contiguous()


def parameters(spec: PretrainSpec, recipe: Recipe) -> dict:
    return {"version": PRETRAIN_VERSION, "set": dataclasses.asdict(spec), "recipe": dataclasses.asdict(recipe)}


def weights_path(root: str | Path, spec: PretrainSpec, recipe: Recipe) -> Path:
    """``<root>/<backbone>-<12 hex digits of the parameters' hash>.pth``."""
    key = hashlib.sha256(json.dumps(parameters(spec, recipe), sort_keys=True).encode()).hexdigest()[:12]
    return Path(root) / f"{recipe.backbone}-{key}.pth"


def _is_complete(path: Path, params: dict) -> bool:
    try:
        record = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return False
    return path.is_file() and record.get("parameters") == json.loads(json.dumps(params))


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on uint8 images (N, S, S, 3), labels (N,)."""
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch_size):
        logits = model(to_tensor(images[i:i + batch_size]))
        correct += int((logits.argmax(dim=1).numpy() == labels[i:i + batch_size]).sum())
    return correct / len(labels)


def train_classifier(model: Classifier, images: np.ndarray, labels: np.ndarray, recipe: Recipe,
                     progress: bool = True) -> None:
    """Cross-entropy training of ``model`` in place: shuffled batches, random flips."""
    steps_per_epoch = len(labels) // recipe.batch_size
    total = recipe.epochs * steps_per_epoch
    if total < 1:
        raise SfcError(f"pretraining would take no step ({recipe.epochs} epochs of {len(labels)} images "
                       f"in batches of {recipe.batch_size})", fix="pass --epochs 1 or more")
    optimizer = engine.make_optimizer("adamw", [{"params": list(model.parameters()), "lr": recipe.lr}],
                                      0.0, recipe.weight_decay)
    schedule = engine.make_schedule(optimizer, "onecycle", total)
    generator = torch.Generator().manual_seed(recipe.seed)
    model.train()
    bar = tqdm(total=total, desc="pretrain", unit="step", disable=not progress)
    for _epoch in range(recipe.epochs):
        order = torch.randperm(len(labels), generator=generator)
        for step in range(steps_per_epoch):
            index = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            x = to_tensor(images[index.numpy()])
            flip = torch.rand(len(index), generator=generator) < 0.5
            x[flip] = x[flip].flip(-1)
            loss = F.cross_entropy(model(x), torch.from_numpy(labels[index.numpy()]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()


def pretrain(root: str | Path, spec: PretrainSpec = DEFAULT_SPEC, recipe: Recipe = DEFAULT_RECIPE,
             force: bool = False, progress: bool = True) -> Path:
    """Train (or reuse) the pretrained backbone; returns the path of its state dict."""
    found = None if force else cached(root, spec, recipe)
    if found is not None:
        return found
    params, path = parameters(spec, recipe), weights_path(root, spec, recipe)
    engine.seed_everything(recipe.seed)
    started = time.perf_counter()
    images, labels = make_images(spec, "train")
    model = Classifier(build_backbone(recipe.backbone, "none"), spec.num_classes)
    train_classifier(model, images, labels, recipe, progress)
    val_images, val_labels = make_images(spec, "val")
    atomic_torch_save(path, model.backbone.state_dict())
    atomic_write_json(path.with_suffix(".json"), {
        "parameters": params, "val_top1": accuracy(model, val_images, val_labels),
        "chance": 1 / spec.num_classes, "seconds": time.perf_counter() - started,
        "torch_threads": torch.get_num_threads()})
    return path


def cached(root: str | Path, spec: PretrainSpec = DEFAULT_SPEC, recipe: Recipe = DEFAULT_RECIPE) -> Path | None:
    """The complete weights file of these parameters under ``root`` (the shipped one on a miss), else None."""
    params, path = parameters(spec, recipe), weights_path(root, spec, recipe)
    if _is_complete(path, params):
        return path
    shipped = SHIPPED / path.name
    if path.parent.resolve() == SHIPPED or not _is_complete(shipped, params):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, shipped.read_bytes())
    atomic_write_json(path.with_suffix(".json"), {**json.loads(shipped.with_suffix(".json").read_text()),
                                                  "copied_from": "the kit's shipped file"})
    return path


# weights field -> the backbone field it belongs to
WEIGHT_FIELDS = {"model.backbone_weights": "model.backbone",
                 "refine.irn_backbone_weights": "refine.irn_backbone"}


def resolve_backbone_weights(cfg: Config, spec: PretrainSpec = DEFAULT_SPEC,
                             recipe: Recipe = DEFAULT_RECIPE) -> Config:
    """``cfg`` with each "pretrain" weights field naming its cached file (never trains)."""
    root = Path(cfg.data.root) / "pretrain"
    changes = {}
    for key, backbone_key in WEIGHT_FIELDS.items():
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) != NAMED_WEIGHTS:
            continue
        backbone = getattr(getattr(cfg, backbone_key.split(".")[0]), backbone_key.split(".")[1])
        path = cached(root, spec, dataclasses.replace(recipe, backbone=backbone))
        if path is None:
            raise SfcError(f"{key}=pretrain, and {root} holds no pretrained {backbone} backbone of these "
                           "parameters", path=root,
                           fix=f"make it first: python -m sfc_core pretrain --out {root} --backbone {backbone}")
        changes[key] = str(path)
    return Config.from_dict(cfg.to_dict()).override(changes) if changes else cfg
