"""What bench and the GPU report share: the machine, the device clock, a preset's inputs made up
(class statistics, loader batches, random weights: no dataset needed) and the CAM inference and
step-3 training benchmarks.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sfc_core import engine
from sfc_core.config import Config
from sfc_core.data.dataset import VOC_CLASSES
from sfc_core.data.transforms import random_crop_box
from sfc_core.errors import SfcError
from sfc_core.method.coefficients import bank_extra, default_second_counts
from sfc_core.model.build import build_model

VOC_IMAGE_SIZE = (375, 500)     # (H, W) of most VOC images: the eval masks, VOC/COCO inference
IMBALANCE = 15.0                # most / least frequent class of the bench's statistics (VOC: 15.6)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_info(device: torch.device) -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
            "cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.version.cuda if device.type == "cuda" else None,
            "python": platform.python_version()}


def num_foreground_classes(cfg: Config) -> int:
    """C of the preset's dataset kind, from its class list (the dataset is not read)."""
    if cfg.data.dataset == "voc":
        return len(VOC_CLASSES)
    if cfg.data.dataset == "coco":
        from sfc_core.data.coco import COCO_CLASSES

        return len(COCO_CLASSES)
    if cfg.data.dataset == "synthetic":
        from sfc_core.data.synthetic import class_table

        return len(class_table(cfg.data.shared_parts))
    raise SfcError(f"unknown dataset kind {cfg.data.dataset!r}",
                   fix="set data.dataset to voc, coco or synthetic")


def inference_size(cfg: Config) -> tuple[int, int]:
    """(H, W) of an inference image: the synthetic generator's size, else VOC's usual size."""
    if cfg.data.dataset == "synthetic":
        from sfc_core.data.synthetic import SIZES

        size = SIZES[cfg.data.synthetic_size].image_size
        return size, size
    return VOC_IMAGE_SIZE


def class_statistics(num_classes: int, batch_size: int,
                     bank_draws: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Long-tailed (n, b, E) for ``distribution_coefficients``: image counts falling
    geometrically from 1000 by a factor IMBALANCE, E and b as the kit makes them."""
    counts = np.round(1000 * IMBALANCE ** -np.linspace(0, 1, num_classes)).astype(np.int64)
    extra = bank_extra(int(counts.sum()), batch_size, bank_draws, num_classes)
    return counts, default_second_counts(counts, extra), extra


def loader_batches(count: int, batch_size: int, crop_size: int, resize_long: tuple[int, int],
                   counts: np.ndarray, seed: int = 0) -> list[dict]:
    """``count`` batches as the training DataLoader collates them: ``image`` float32
    (B, 3, S, S) zero outside the pasted image, ``box`` int64 (B, 4), ``label`` float32 (B, C)
    with 1-3 classes per image drawn in proportion to ``counts``."""
    rng = np.random.default_rng(seed)
    num_classes = len(counts)
    batches = []
    for _ in range(count):
        images = torch.zeros(batch_size, 3, crop_size, crop_size)
        boxes = torch.zeros(batch_size, 4, dtype=torch.int64)
        labels = torch.zeros(batch_size, num_classes)
        for i in range(batch_size):
            long_side = int(rng.integers(resize_long[0], resize_long[1] + 1))
            size = (round(long_side * rng.uniform(0.6, 1.0)), long_side)
            _, box = random_crop_box(size, crop_size, rng)
            y0, y1, x0, x1 = box.tolist()
            pixels = rng.standard_normal((3, y1 - y0, x1 - x0), np.float32)
            images[i, :, y0:y1, x0:x1] = torch.from_numpy(pixels)
            boxes[i] = torch.from_numpy(box)
            present = rng.choice(num_classes, size=min(num_classes, int(rng.integers(1, 4))), replace=False,
                                 p=counts / counts.sum())
            labels[i, present] = 1
        batches.append({"image": images, "box": boxes, "label": labels})
    return batches


def bench_config(cfg: Config) -> Config:
    """A copy of ``cfg`` with random weights everywhere (nothing is downloaded or read), and
    the paper's network (PCM on, seeds at background x 0.3), which the reference-style step
    copies, whatever the preset trains (the synthetic presets switch PCM off)."""
    return Config.from_dict(cfg.to_dict()).override({"model.backbone_weights": "none",
                                                      "segment.backbone_weights": "none",
                                                      "model.pcm": True, "model.seed_background_scale": 0.3})


def bench_cams(cfg: Config, device: torch.device, steps: int, warmup: int) -> dict:
    """CAM inference images/s: an image at every scale of cams.scales (with its flip) through
    ``cams.multiscale_cams``, upsampled and summed, the label's rows copied back."""
    from sfc_core.cams import multiscale_cams

    num_classes = num_foreground_classes(cfg)
    model = build_model(cfg.model, num_classes).to(device).eval()
    size = inference_size(cfg)
    image = torch.randn(1, 3, *size)
    views = []
    for scale in cfg.cams.scales:
        scaled_size = (round(size[0] * scale), round(size[1] * scale))
        scaled = image if scale == 1 else F.interpolate(image, size=scaled_size, mode="bicubic",
                                                        align_corners=False)
        views.append(torch.cat([scaled, scaled.flip(-1)]) if cfg.cams.flip else scaled)
    label = torch.zeros(num_classes)
    label[: min(2, num_classes)] = 1
    rows = torch.arange(min(2, num_classes) + 1, device=device)
    amp = cfg.cams.amp and device.type == "cuda"     # as the cams stage: float32 unless asked
    seconds = 0.0
    with torch.inference_mode():
        for i in range(warmup + steps):
            synchronize(device)
            start = time.perf_counter()
            pairs = [view.to(device, non_blocking=True) for view in views]
            with engine.autocast(device, amp):
                maps = multiscale_cams(model, pairs, label.to(device), size, cfg.cams.mask_by_label)
            _ = [m[rows].cpu() for m in maps]
            if i >= warmup:
                seconds += time.perf_counter() - start
    return {"images_per_s": steps / seconds, "seconds_per_image": seconds / steps, "image_size": list(size),
            "scales": list(cfg.cams.scales), "flip": cfg.cams.flip, "amp": amp, "images": steps}


def bench_segment(cfg: Config, device: torch.device, steps: int, warmup: int) -> dict:
    """Step-3 training images/s: ``segment.train_step`` on random crops at segment.batch_size
    and segment.crop_size, in segment.accumulation_steps passes (AMP and channels-last on a GPU,
    per the config)."""
    from sfc_core.masks import IGNORE
    from sfc_core.segment import build_network, parameter_groups, train_step

    seg, num_classes = cfg.segment, num_foreground_classes(cfg)
    amp = cfg.runtime.amp and device.type == "cuda"
    memory_format = torch.channels_last if cfg.runtime.channels_last and device.type == "cuda" \
        else torch.contiguous_format
    engine.seed_everything(cfg.runtime.seed)
    model = build_network(seg.network, num_classes + 1, "none").to(device, memory_format=memory_format)
    model.train()
    optimizer = engine.make_optimizer("sgd", parameter_groups(model, seg), seg.momentum, seg.weight_decay)
    scaler = engine.make_grad_scaler(device, amp)
    images = torch.randn(seg.batch_size, 3, seg.crop_size, seg.crop_size)
    masks = torch.randint(0, num_classes + 1, (seg.batch_size, seg.crop_size, seg.crop_size))
    masks[:, : seg.crop_size // 8] = IGNORE                      # padding: ignored pixels
    seconds = 0.0
    for i in range(warmup + steps):
        synchronize(device)
        start = time.perf_counter()
        train_step(model, images.to(device, memory_format=memory_format), masks.to(device), optimizer,
                   scaler, amp, seg.accumulation_steps)
        synchronize(device)
        if i >= warmup:
            seconds += time.perf_counter() - start
    return {"images_per_s": seg.batch_size * steps / seconds, "seconds_per_step": seconds / steps,
            "network": seg.network, "batch_size": seg.batch_size, "crop_size": seg.crop_size, "amp": amp,
            "steps": steps}

