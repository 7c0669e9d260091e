"""The `cams` stage: multi-scale + flip classifier and prototype CAMs (docs/method.md, inference).

The network's named maps per image, scale and flip, upsampled, summed over scales and
max-normalised; the background row and the image's classes are saved (``cam_files``). Complete
files are kept while ``cams/provenance.json`` records the same inputs. Under torchrun each rank
takes an interleaved shard:

    torchrun --nproc_per_node 4 -m sfc_core -- cams --run RUN_DIR     (-- keeps --run from torchrun)
"""
from __future__ import annotations

import argparse
import dataclasses
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from sfc_core import engine
from sfc_core.cam_files import CAM_FIELDS, STORED_MAPS, present_keys, save_cam
from sfc_core.cli import add_override_arguments, overrides_from_args
from sfc_core.config import Config
from sfc_core.data import MultiScaleDataset, item_loader, open_dataset, same_size_batches
from sfc_core.data.transforms import device_views
from sfc_core.errors import SfcError
from sfc_core.io import BackgroundWriter
from sfc_core.model.build import for_inference, inference_layout, load_model, multiscale_cams_batch
from sfc_core.provenance import checkpoint_record, claim_folder, npz_complete, unfinished
from sfc_core.run_dir import RunDir
from sfc_core.run_lock import claims_run


def multiscale_cams(model, images: list[torch.Tensor], label: torch.Tensor, size: tuple[int, int],
                    mask_by_label: bool = False) -> tuple[torch.Tensor, ...]:
    """``multiscale_cams_batch`` of one image: its maps, each (C+1, H, W)."""
    return tuple(m[0] for m in multiscale_cams_batch(model, images, label[None], size, mask_by_label))


def cams_record(cfg: Config, checkpoint: dict[str, Any], class_names: list[str],
                scales: tuple[float, ...]) -> dict[str, Any]:
    """What the CAM files are made from (``cams/provenance.json``); not ``cams.batch_size``, which
    leaves the maps as they are."""
    model = {key: value for key, value in dataclasses.asdict(cfg.model).items() if key != "backbone_weights"}
    return {"checkpoint": checkpoint, "class_names": list(class_names), "scales": list(scales),
            "flip": cfg.cams.flip, "mask_by_label": cfg.cams.mask_by_label, "amp": cfg.cams.amp,
            "model": model}


@claims_run()
def make_cams(run: str | Path | RunDir, list_name: str | None = None,
              scales: tuple[float, ...] | None = None, device: str | torch.device | None = None,
              overrides: dict | None = None) -> Path:
    """CAMs of every image of `list_name` (default: the training list) into RUN_DIR/cams/, returned.
    `overrides`: dotted config keys on top of the run's config.json."""
    run = RunDir(run)
    cfg = run.load_config(overrides)
    list_name = list_name or cfg.data.train_list
    scales = tuple(scales or cfg.cams.scales)
    if not scales or min(scales) <= 0:
        raise SfcError(f"bad CAM scales {scales}", fix="give positive scales, e.g. --scales 1.0,0.5,1.5,2.0")
    dataset = open_dataset(cfg.data)
    class_names = run.class_names()
    if dataset.num_classes != len(class_names):
        raise SfcError(f"the run was trained on {len(class_names)} classes, the dataset has "
                       f"{dataset.num_classes}", path=run.class_names_json,
                       fix="point data.root at the dataset the run was trained on")
    views = MultiScaleDataset(dataset, list_name, scales=scales)
    path = run.inference_checkpoint
    ckpt = engine.load_checkpoint(path)
    dist = engine.setup_distributed()
    device = engine.select_device(str(device or cfg.runtime.device), dist, "--device", cfg.preset)   # before writes
    engine.announce_runtime("cams", device, dist, engine.loader_workers(cfg.runtime.num_workers, device), cfg.cams.amp)
    model = load_model(path, ckpt, cfg.model, class_names, device)   # a refused checkpoint touches no CAM
    if dist.is_main:
        claim_folder(run.cams, cams_record(cfg, checkpoint_record(path, ckpt), class_names, scales), "cams")
    engine.gather_objects(None, dist)                      # the other ranks wait for the claim
    missing = set(unfinished({i: run.cam_file(i) for i in views.ids}, partial(npz_complete, fields=CAM_FIELDS),
                             "cams", "CAM file(s)"))
    todo = [i for i, image_id in enumerate(views.ids) if image_id in missing]
    # every rank's share of the whole list, so a resumed run forms the batches an uninterrupted one
    # did (CPU kernels can give other last bits at another batch size); files present are kept
    shard = list(range(len(views)))[dist.rank::dist.world_size]
    write_cams(run, cfg, model, Subset(views, shard), device,
               f"cams {run.root.name}: {list_name} ({len(scales)} scales)" if dist.is_main else None, missing)
    made = sum(engine.gather_objects(len(set(shard) & set(todo)), dist))     # also waits for every rank's files
    engine.cleanup_distributed(dist)
    if dist.is_main:
        print(f"cams: {made} image(s) made, {len(views) - len(todo)} already there -> {run.cams}")
    return run.cams


def write_cams(run: RunDir, cfg: Config, model: torch.nn.Module, views: Dataset, device: torch.device,
               desc: str | None = None, missing: set[str] | None = None) -> None:
    """The CAM file of every image of ``views`` named in ``missing`` (None: all), in same-size
    batches, written by a `BackgroundWriter` beside the device. ``desc``: the bar's title (None: none)."""
    loader = item_loader(views, engine.loader_workers(cfg.runtime.num_workers, device), device.type == "cuda")
    items = tqdm(loader, desc=desc, total=len(views), disable=desc is None, unit="img")
    model = for_inference(model, cfg.runtime.channels_last)
    with torch.inference_mode(), BackgroundWriter() as writer:
        for batch in same_size_batches(items, cfg.cams.batch_size):
            wanted = [missing is None or item["name"] in missing for item in batch]
            if not any(wanted):
                continue
            kept, ready = _kept_maps(model, cfg, batch, device)
            for item, (keys, maps), want in zip(batch, kept, wanted):
                if want:
                    writer.submit(_save_cam_file, run, item["name"], keys, maps, ready, model.num_classes)


def _kept_maps(model: torch.nn.Module, cfg: Config, batch: list[dict], device: torch.device
               ) -> tuple[list[tuple[np.ndarray, torch.Tensor]], torch.cuda.Event | None]:
    """Per image of ``batch``, its kept rows ``keys`` and their maps, float16 (maps, K', H, W),
    copied to the host without blocking; and the event that ends the copies (None on the CPU)."""
    layout = inference_layout(cfg.runtime.channels_last)
    images = [device_views(torch.stack(scale), device, cfg.cams.flip).contiguous(memory_format=layout)
              for scale in zip(*(item["images"] for item in batch))]
    labels = torch.stack([item["label"] for item in batch]).to(device, non_blocking=True)
    with engine.autocast(device, cfg.cams.amp):           # float32 unless asked (the reference's maps)
        maps = multiscale_cams_batch(model, images, labels, tuple(batch[0]["size"].tolist()), cfg.cams.mask_by_label)
    kept = []
    for i, item in enumerate(batch):
        keys = present_keys(item["label"].numpy())
        rows = torch.from_numpy(keys).to(device, non_blocking=True)
        kept.append((keys, torch.stack([m[i, rows] for m in maps]).half().to("cpu", non_blocking=True)))
    return kept, copies_done(device)


def copies_done(device: torch.device) -> torch.cuda.Event | None:
    """An event on ``device``'s current stream (not the current device's); None on the CPU."""
    if device.type != "cuda":
        return None
    ready = torch.cuda.Event()
    ready.record(torch.cuda.current_stream(device))
    return ready


def _save_cam_file(run: RunDir, image_id: str, keys: np.ndarray, maps: torch.Tensor,
                   ready: torch.cuda.Event | None, num_classes: int) -> None:
    """Write one image's CAM file once its copy is complete (runs in a writer thread)."""
    if ready is not None:
        ready.synchronize()
    path = run.cam_file(image_id)
    try:
        save_cam(path, keys, dict(zip(STORED_MAPS, maps.numpy())), num_classes)
    except OSError as e:
        raise SfcError(f"cannot write a CAM file ({e.strerror or e})", path=path,
                       fix=f"free space on its disk or make {run.cams} writable, then run "
                           f"python -m sfc_core cams --run {run.root} again (finished images are kept)") from None


def cams_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory made by `train`")
    p.add_argument("--list", dest="list_name", default=None,
                   help="image list (default: the training list; `val` for held-out figures)")
    p.add_argument("--scales", default=None, help="comma-separated scales, e.g. 1.0,0.5,1.5,2.0")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: runtime.device)")
    add_override_arguments(p)


def parse_scales(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise SfcError(f"bad --scales {text!r}", fix="write numbers separated by commas: 1.0,0.5") from None


def cams_command(args: argparse.Namespace) -> int:
    make_cams(args.run, args.list_name, parse_scales(args.scales), args.device, overrides_from_args(args))
    return 0
