"""The `cams` stage: multi-scale + flip classifier and prototype CAMs (method.md section 4).

For each image of a list, and each scale (default 1.0, 0.5, 1.5, 2.0) with its horizontal
flip, the network's `infer` gives the PCM-refined classifier CAM and the prototype CAM on the
stride-16 grid; each is upsampled (bilinear) to the image size, summed over scales and
max-normalised per channel. Only the background row and the image's classes are kept:

    cams/<id>.npz   keys int64 (K',)          0 then the image's classes (1-based)
                    classifier float16 (K', H, W), prototype float16 (K', H, W)
                    size int64 (2,) = (H, W), num_classes int64 () = C of the class list

No background rule is baked in (reference quirk 23): `sfc_core.fusion` applies it when the
maps are read, so thresholds and lambda can be swept without the network.

The stage resumes: images whose file exists are skipped (files are written atomically).
On CPU the DataLoader decodes and rescales in `runtime.num_workers` processes; on a GPU the
scales of an image run back to back on the device and are summed there, one copy back per
image; under torchrun every rank takes an interleaved shard of the images still to do:

    torchrun --nproc_per_node 4 -m sfc_core -- cams --run RUN_DIR     (the -- keeps torchrun
                                                                      from reading --run)
"""
from __future__ import annotations

import argparse
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from sfc_core.errors import SfcError
from sfc_core.io import atomic_save_npz
from sfc_core.model.cam import max_normalise
from sfc_core.run_dir import RunDir
from sfc_core.run_lock import claims_run

CAM_FIELDS = ("keys", "classifier", "prototype", "size", "num_classes")


@dataclass
class CamRecord:
    """One image's saved CAMs, as float32 arrays (rows follow `keys`)."""

    image_id: str
    keys: np.ndarray          # int64 (K',): 0 (background) then the image's classes, 1-based
    classifier: np.ndarray    # float32 (K', H, W), max-normalised PCM classifier CAM
    prototype: np.ndarray     # float32 (K', H, W), max-normalised prototype CAM
    num_classes: int          # C, the number of foreground classes of the run's class list

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.classifier.shape[1:])


def multiscale_cams(model, images: list[torch.Tensor], label: torch.Tensor, size: tuple[int, int],
                    mask_by_label: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Classifier and prototype CAMs of one image over all scales, both (C+1, H, W) float32.

    images: one (2, 3, h_s, w_s) tensor per scale (image and flip), on the model's device;
    label: (C,) multi-hot. Each scale's (C+1, h, w) maps are upsampled bilinearly to `size`,
    summed over scales, then max-normalised per channel (reference make_cam).
    """
    classifier = prototype = 0
    for pair in images:
        scale_cams = model.infer(pair, label, mask_by_label=mask_by_label)
        up = [F.interpolate(cam[None].float(), size, mode="bilinear", align_corners=False)[0]
              for cam in scale_cams]
        classifier, prototype = classifier + up[0], prototype + up[1]
    return max_normalise(classifier), max_normalise(prototype)


def present_keys(label: np.ndarray) -> np.ndarray:
    """int64 (K',): 0 then the 1-based indices of the classes in a (C,) multi-hot label."""
    return np.concatenate([[0], np.flatnonzero(np.asarray(label) > 0.5) + 1]).astype(np.int64)


def save_cam(path: str | Path, keys: np.ndarray, classifier: np.ndarray, prototype: np.ndarray,
             num_classes: int) -> Path:
    """Write one CAM file; classifier and prototype are (K', H, W) with rows `keys`."""
    return atomic_save_npz(path, keys=keys.astype(np.int64),
                           classifier=classifier.astype(np.float16),
                           prototype=prototype.astype(np.float16),
                           size=np.array(classifier.shape[1:], dtype=np.int64),
                           num_classes=np.array(num_classes, dtype=np.int64))


def load_cam(run: str | Path | RunDir, image_id: str, num_classes: int | None = None) -> CamRecord:
    """Read `cams/<image_id>.npz`; with `num_classes`, check it was made for that class list."""
    run = RunDir(run)
    path = run.cam_file(image_id)
    command = f"python -m sfc_core cams --run {run.root}"
    remake = f"delete {path} and run: {command}"
    if not path.is_file():
        raise SfcError(f"no CAM file for image {image_id}", path=path, fix=f"run: {command}")
    try:
        with np.load(path) as f:
            arrays = {name: f[name] for name in CAM_FIELDS if name in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise SfcError(f"unreadable CAM file ({e})", path=path, fix=remake) from None
    missing = [name for name in CAM_FIELDS if name not in arrays]
    if missing:
        raise SfcError(f"CAM file lacks {', '.join(missing)} (not written by this kit's cams stage)",
                       path=path, fix=remake)
    keys, file_classes = arrays["keys"].astype(np.int64), int(arrays["num_classes"])
    record = CamRecord(image_id, keys, arrays["classifier"].astype(np.float32),
                       arrays["prototype"].astype(np.float32), file_classes)
    if num_classes is not None and file_classes != num_classes:
        raise SfcError(f"CAM file was made for {file_classes} classes, the run has {num_classes}",
                       path=path, fix=f"the CAMs come from another class list: delete {run.cams} "
                                      f"and run: {command}")
    shape = (len(keys), *arrays["size"].tolist())
    if (record.classifier.shape != shape or record.prototype.shape != shape or keys[:1].tolist() != [0]
            or np.any(np.diff(keys) <= 0) or keys[-1] > file_classes):
        raise SfcError(f"CAM file is inconsistent (keys {keys.tolist()}, maps "
                       f"{record.classifier.shape} / {record.prototype.shape}, size {shape[1:]})",
                       path=path, fix=remake)
    return record


def _only_item(batch: list[dict]) -> dict:
    return batch[0]


@claims_run()
def make_cams(run: str | Path | RunDir, list_name: str | None = None,
              scales: tuple[float, ...] | None = None, device: str | torch.device | None = None,
              overrides: dict | None = None) -> Path:
    """CAMs of every image of `list_name` (default: the training list) into RUN_DIR/cams/.
    `overrides`: dotted config keys on top of the run's config.json (e.g. data.root).

    Returns the cams folder. Finished images are skipped; under torchrun each rank does an
    interleaved shard of the rest.
    """
    from sfc_core.data import MultiScaleDataset, open_dataset
    from sfc_core.engine import (
        autocast,
        cleanup_distributed,
        gather_objects,
        select_device,
        setup_distributed,
    )
    from sfc_core.model.sfc_net import load_model

    run = RunDir(run)
    cfg = run.load_config(overrides)
    list_name = list_name or cfg.data.train_list
    scales = tuple(scales or cfg.cams.scales)
    if not scales or min(scales) <= 0:
        raise SfcError(f"bad CAM scales {scales}", fix="give positive scales, e.g. --scales 1.0,0.5,1.5,2.0")
    dataset = open_dataset(cfg.data)
    num_classes = len(run.class_names())
    if dataset.num_classes != num_classes:
        raise SfcError(f"the run was trained on {num_classes} classes, the dataset has "
                       f"{dataset.num_classes}", path=run.class_names_json,
                       fix="point data.root at the dataset the run was trained on")
    views = MultiScaleDataset(dataset, list_name, scales=scales, flip=cfg.cams.flip)
    todo = [i for i, image_id in enumerate(views.ids) if not run.cam_file(image_id).is_file()]
    done = len(views) - len(todo)

    dist = setup_distributed()
    shard = todo[dist.rank::dist.world_size]
    device = select_device(str(device or cfg.runtime.device), dist, option="--device")
    model = load_model(run.root, which="best", device=device)   # last.pt if there is no best.pt
    loader = DataLoader(Subset(views, shard), batch_size=1, collate_fn=_only_item,
                        num_workers=cfg.runtime.num_workers if shard else 0,
                        pin_memory=device.type == "cuda")
    with torch.inference_mode():
        for item in tqdm(loader, desc=f"cams {list_name} ({len(scales)} scales)",
                         total=len(shard), disable=not dist.is_main, unit="img"):
            images = [pair.to(device, non_blocking=True) for pair in item["images"]]
            label = item["label"].to(device)
            with autocast(device, cfg.runtime.amp):
                classifier, prototype = multiscale_cams(model, images, label, tuple(item["size"].tolist()),
                                                        cfg.cams.mask_by_label)
            keys = present_keys(item["label"].numpy())
            rows = torch.from_numpy(keys).to(device)
            save_cam(run.cam_file(item["name"]), keys, classifier[rows].cpu().numpy(),
                     prototype[rows].cpu().numpy(), num_classes)
    made = sum(gather_objects(len(shard), dist))     # also waits for every rank's files
    cleanup_distributed(dist)
    if dist.is_main:
        print(f"cams: {made} image(s) made, {done} already there -> {run.cams}")
    return run.cams


def cams_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory made by `train`")
    p.add_argument("--list", dest="list_name", default=None,
                   help="image list (default: the training list; `val` for held-out figures)")
    p.add_argument("--scales", default=None, help="comma-separated scales, e.g. 1.0,0.5,1.5,2.0")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: runtime.device)")
    from sfc_core.cli import add_override_arguments

    add_override_arguments(p)


def parse_scales(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise SfcError(f"bad --scales {text!r}", fix="write numbers separated by commas: 1.0,0.5") from None


def cams_command(args: argparse.Namespace) -> int:
    from sfc_core.cli import overrides_from_args

    make_cams(args.run, args.list_name, parse_scales(args.scales), args.device, overrides_from_args(args))
    return 0
