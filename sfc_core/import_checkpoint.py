"""Checkpoints trained elsewhere as kit run directories (verb: ``import-checkpoint``).

    python -m sfc_core import-checkpoint --format sfc-reference res50_SFC.pth --out runs/sfc-authors

``sfc-reference``: the SFC authors' ``{'net': state_dict}`` with aliased keys (``kit_key``; aliases
must be equal, the result must fill the kit's network); ``sipe``: SIPE's, with its settings. The
run directory is assembled beside ``--out`` and renamed into place: a refused import leaves nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
from pathlib import Path

import torch

from sfc_core.cli import add_config_arguments, config_from_args
from sfc_core.config import Config
from sfc_core.data import open_dataset
from sfc_core.data.coco import COCO_CLASSES
from sfc_core.data.dataset import VOC_CLASSES
from sfc_core.errors import SfcError
from sfc_core.io import atomic_torch_save, atomic_write_json
from sfc_core.model.build import build_model, checkpoint_identity
from sfc_core.run_dir import RunDir

# The kit's name of each new layer, and each format's ``newly_added`` order.
NEW_LAYERS = {"classifier": "classifier", "f9": "pcm_projection",
              "side1": "sides.0", "side2": "sides.1", "side3": "sides.2", "side4": "sides.3"}
FORMATS = {"sfc-reference": ("classifier", "f9", "side1", "side2", "side3", "side4"),
           "sipe": ("classifier", "side1", "side2", "side3", "side4")}
# What the run's configuration takes from the format (on top of the preset).
FORMAT_OVERRIDES = {"sfc-reference": {}, "sipe": {"model.pcm": False, "model.seed_background_scale": 0.5,
                                             "model.seed_rule": "sipe"}}
STEM = {"conv1": "0", "bn1": "1"}     # the reference's stem = Sequential(conv1, bn1, relu, maxpool)


def kit_key(key: str, new_layers: tuple[str, ...]) -> str | None:
    """The kit's name for a reference key (None: not in that layout), e.g. 'resnet50.layer3.0.conv1.weight',
    'stage3.0.0.conv1.weight' -> 'backbone.stages.3.0.conv1.weight'."""
    head, _, rest = key.partition(".")
    first, _, tail = rest.partition(".")
    if head == "module":                                  # saved from a DataParallel wrapper
        return kit_key(rest, new_layers)
    if head == "resnet50" and first in STEM:
        return f"backbone.stages.0.{STEM[first]}.{tail}"
    if head == "resnet50" and first[:5] == "layer" and first[5:] in "1234":
        return f"backbone.stages.{first[5:]}.{tail}"
    if head == "backbone" and first in "01234" and first:
        return kit_key(f"stage{first}.{tail}", new_layers)
    if head == "stage0":
        return f"backbone.stages.0.{rest}"
    if head[:5] == "stage" and head[5:] in ("1", "2", "3", "4") and first == "0":
        return f"backbone.stages.{head[5:]}.{tail}"
    if head == "newly_added" and first.isdigit() and int(first) < len(new_layers):
        return f"{NEW_LAYERS[new_layers[int(first)]]}.{tail}"
    if head in new_layers:
        return f"{NEW_LAYERS[head]}.{rest}"
    return None


def map_state_dict(state: dict[str, torch.Tensor], fmt: str, path: Path) -> dict[str, torch.Tensor]:
    """The kit's state dict of a reference-layout one: one tensor per kit key, aliases checked equal."""
    mapped: dict[str, tuple[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in state.items():
        target = kit_key(key, FORMATS[fmt])
        if target is None:
            unknown.append(key)
            continue
        if target in mapped:
            first, seen = mapped[target]
            if seen.shape != tensor.shape or not torch.equal(seen, tensor):
                raise SfcError(f"aliases {first} and {key} hold different tensors", path=path,
                               fix="give the checkpoint as the trainer saved it (its aliases share one tensor)")
        else:
            mapped[target] = (key, tensor)
    if unknown:
        raise SfcError(f"{len(unknown)} tensor(s) are not in the {fmt} layout of a ResNet SFC network, "
                       f"first: {', '.join(unknown[:4])}", path=path, fix=_format_fix(fmt))
    return {target: tensor for target, (_, tensor) in mapped.items()}


def _format_fix(fmt: str) -> str:
    return (f"check --format ({fmt}; SIPE's checkpoints are --format sipe), "
            "and --preset / --set model.backbone for the network it was trained with")


def check_fits(mapped: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor], fmt: str,
               path: Path, network: str) -> list[str]:
    """The kit keys the checkpoint lacks (only ``sipe``'s PCM projection); SfcError on any other
    difference of names, shapes or class count."""
    classes, wanted = mapped.get("classifier.weight"), model_state["classifier.weight"].shape[0]
    if classes is not None and classes.shape[0] != wanted:
        raise SfcError(f"the checkpoint's classifier has {classes.shape[0]} classes, the configured "
                       f"dataset {wanted}", path=path,
                       fix="use the preset of the dataset it was trained on (--preset voc: 20, --preset coco: 80)")
    missing = sorted(set(model_state) - set(mapped) - ({"pcm_projection.weight"} if fmt == "sipe" else set()))
    extra = sorted(set(mapped) - set(model_state))
    shapes = sorted(k for k in set(mapped) & set(model_state) if mapped[k].shape != model_state[k].shape)
    problems = [f"{label}: {', '.join(keys[:3])}" for label, keys in (
        ("not in the kit's network", extra), ("missing", missing),
        ("other shapes", [f"{k} {tuple(mapped[k].shape)} vs {tuple(model_state[k].shape)}" for k in shapes]))
        if keys]
    if problems:
        raise SfcError(f"the checkpoint is not the configured network ({network}): {'; '.join(problems)}",
                       path=path, fix=_format_fix(fmt))
    return sorted(set(model_state) - set(mapped))


def read_reference_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a ``{'net': state_dict}`` file (or of a bare state dict)."""
    if not path.is_file():
        raise SfcError("checkpoint file not found", path=path, fix="give the path of the downloaded .pth")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SfcError(f"cannot read the checkpoint ({type(e).__name__}: {str(e)[:160]})", path=path,
                       fix="give the .pth file as downloaded (a PyTorch state dict)") from None
    state = raw.get("net", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SfcError("the file holds no state dict ({'net': {name: tensor}})", path=path,
                       fix="give the checkpoint the reference trainer saved (torch.save({'net': ...}))")
    return state


def import_checkpoint(path: str | Path, fmt: str, out: str | Path, cfg: Config,
                      class_names: list[str]) -> list[str]:
    """Write a run directory ``out`` holding the checkpoint; returns the kit keys it lacked."""
    path, run = Path(path), RunDir(out)
    if fmt not in FORMATS:
        raise SfcError(f"unknown checkpoint format {fmt!r}", fix=f"use --format {' or '.join(FORMATS)}")
    if run.root.exists() and any(run.root.iterdir()):
        raise SfcError(f"{run.root} is not empty", path=run.root, fix="choose a fresh --out")
    cfg.override({**FORMAT_OVERRIDES[fmt], "model.backbone_weights": "none"})
    mapped = map_state_dict(read_reference_checkpoint(path), fmt, path)
    with torch.device("meta"):        # shapes only: refuse before allocating the network
        shapes = build_model(cfg.model, len(class_names)).state_dict()
    absent = check_fits(mapped, shapes, fmt, path, f"{cfg.model.backbone}, {len(class_names)} classes")
    initial = build_model(cfg.model, len(class_names)).state_dict()
    state = {key: mapped.get(key, value).to(value.dtype).clone() for key, value in initial.items()}
    staging = run.root.with_name(f".{run.root.name}.importing")
    shutil.rmtree(staging, ignore_errors=True)
    staged = RunDir(staging)
    cfg.save(staged.config_json)
    atomic_write_json(staged.class_names_json, class_names)
    source = {"format": fmt, "file": str(path.resolve()), "md5": hashlib.md5(path.read_bytes()).hexdigest(),
              "absent": absent}
    atomic_torch_save(staged.best_checkpoint, {
        "model": state, "step": 0, "best": {"score": None, "step": 0}, "imported": source,
        "config": cfg.to_dict(), **checkpoint_identity(cfg.model, class_names)})
    if run.root.exists():
        run.root.rmdir()
    os.replace(staging, run.root)
    return absent


def import_checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, preset_default="voc")
    p.add_argument("file", help="the checkpoint (.pth) to import")
    p.add_argument("--format", required=True, choices=sorted(FORMATS),
                   help="sfc-reference: the SFC authors' {'net': ...} with aliased keys; sipe: SIPE's")
    p.add_argument("--out", required=True, help="run directory to create")


def import_checkpoint_command(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    absent = import_checkpoint(args.file, args.format, args.out, cfg, preset_class_names(cfg))
    note = f"; absent from the checkpoint: {', '.join(absent)} (left at initialisation)" if absent else ""
    print(f"imported {args.file} ({args.format}) into {args.out}{note}")
    return 0


def preset_class_names(cfg: Config) -> list[str]:
    """The configured dataset's class names (data.root's, else VOC's or COCO's)."""
    if cfg.data.root:
        return list(open_dataset(cfg.data).class_names)
    return list(COCO_CLASSES if cfg.data.dataset == "coco" else VOC_CLASSES)
