"""How fast data reaches the device and results leave it: the kit against today's CPU paths
(``bench --stages camwrite,camstage``), side by side in one process.

"Today" is the pipeline before uint8 loading (kept here only to be measured against):
float32 items normalised and flipped in the loader, a blocking copy back, and
``np.savez_compressed`` on the main thread. Each comparison alternates the two variants
repeat by repeat (today first in even repeats) so load drift on a shared machine falls on
both, and reports wall and CPU seconds of each and their ratio.
"""
from __future__ import annotations

import copy
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sfc_core.cam_files import present_keys, save_cam
from sfc_core.config import Config
from sfc_core.data import MultiScaleDataset
from sfc_core.data.transforms import hflip, normalize, rescale
from sfc_core.io import atomic_write_bytes
from sfc_core.run_dir import RunDir

CAM_ROWS = 3                    # K' of a typical CAM file: background + 2 classes


def alternate(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, float]]:
    """Wall and process-CPU seconds of each variant summed over ``repeats`` calls, the variants
    taking turns (order reversed every other repeat), after one untimed warm-up call each."""
    for run in variants.values():
        run()
    seconds = {name: {"wall_s": 0.0, "cpu_s": 0.0} for name in variants}
    for repeat in range(repeats):
        for name in list(variants)[:: 1 if repeat % 2 == 0 else -1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            variants[name]()
            seconds[name]["wall_s"] += time.perf_counter() - start
            seconds[name]["cpu_s"] += time.process_time() - start_cpu
    return seconds


def speedups(seconds: dict[str, dict[str, float]]) -> dict[str, float]:
    """today / kit for wall and CPU seconds."""
    return {f"speedup_{kind}": seconds["today"][f"{kind}_s"] / seconds["kit"][f"{kind}_s"] for kind in ("wall", "cpu")}


# -- today's paths ---------------------------------------------------------------------------


def today_views(image: np.ndarray, scales: tuple[float, ...], flip: bool) -> list[torch.Tensor]:
    """Today's loader item: float32 (2|1, 3, h_s, w_s) per scale, normalised and flipped on the CPU."""
    views = []
    for scale in scales:
        scaled = normalize(rescale(image, scale))
        pair = [scaled, hflip(scaled)] if flip else [scaled]
        views.append(torch.from_numpy(np.stack(pair).transpose(0, 3, 1, 2).copy()))
    return views


def today_save_cam(path: Path, keys: np.ndarray, classifier: np.ndarray, prototype: np.ndarray,
                   num_classes: int) -> None:
    """Today's CAM file: the same fields, ``np.savez_compressed``, written atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, keys=keys.astype(np.int64), classifier=classifier.astype(np.float16),
                        prototype=prototype.astype(np.float16), size=np.array(classifier.shape[1:], np.int64),
                        num_classes=np.array(num_classes, np.int64))
    atomic_write_bytes(path, buf.getvalue())


# -- CAM file writes --------------------------------------------------------------------------


def cam_like_maps(rows: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """float32 (rows, H, W) maps shaped like real CAMs: a random stride-16 grid upsampled
    bilinearly to ``size`` and max-normalised (smooth, in [0, 1]; random pixels would not
    compress like CAMs do)."""
    grid = np.random.default_rng(seed).random((1, rows, -(-size[0] // 16), -(-size[1] // 16)), dtype=np.float32)
    maps = F.interpolate(torch.from_numpy(grid), size, mode="bilinear", align_corners=False)[0]
    return (maps / maps.amax(dim=(1, 2), keepdim=True)).numpy()


def bench_camwrite(files: int, repeats: int, size: tuple[int, int], rows: int = CAM_ROWS) -> dict:
    """Milliseconds per CAM file of (rows, H, W) maps: today's ``np.savez_compressed`` against
    the kit's ``cam_files.save_cam``, ``files`` files per repeat, and each file's size and
    read time (``np.load`` of both maps)."""
    keys = np.arange(rows, dtype=np.int64)
    classifier, prototype = cam_like_maps(rows, size, 0), cam_like_maps(rows, size, 1)
    with tempfile.TemporaryDirectory() as folder:
        paths = {name: [Path(folder, f"{name}{i}.npz") for i in range(files)] for name in ("today", "kit")}
        writers = {"today": today_save_cam, "kit": lambda path, keys, classifier, prototype, n: save_cam(
            path, keys, {"classifier": classifier, "prototype": prototype}, n)}
        seconds = alternate({name: lambda name=name: [writers[name](path, keys, classifier, prototype, 20)
                                                       for path in paths[name]] for name in writers}, repeats)
        result = {"image_size": list(size), "rows": rows, "files": files, "repeats": repeats}
        for name in writers:
            start = time.perf_counter()
            for path in paths[name]:
                with np.load(path) as f:
                    f["classifier"], f["prototype"]
            result[name] = {"ms_per_file": 1000 * seconds[name]["wall_s"] / (files * repeats),
                            "cpu_ms_per_file": 1000 * seconds[name]["cpu_s"] / (files * repeats),
                            "read_ms_per_file": 1000 * (time.perf_counter() - start) / files,
                            "bytes": paths[name][0].stat().st_size}
    return {**result, **speedups(seconds)}


# -- the CAM stage ----------------------------------------------------------------------------


class RandomImages:
    """What MultiScaleDataset reads from a dataset: ``count`` random uint8 (H, W, 3) images,
    each with 2 of ``num_classes`` classes."""

    def __init__(self, count: int, size: tuple[int, int], num_classes: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 256, (count, *size, 3), dtype=np.uint8)
        self._labels = np.zeros((count, num_classes), np.float32)
        for row in self._labels:
            row[rng.choice(num_classes, size=min(2, num_classes), replace=False)] = 1
        self.num_classes = num_classes

    def ids(self, list_name: str) -> list[str]:
        return [f"{i:05d}" for i in range(len(self.images))]

    def labels(self, list_name: str) -> np.ndarray:
        return self._labels

    def read_image(self, image_id: str) -> np.ndarray:
        return self.images[int(image_id)]


def today_write_cams(run: RunDir, cfg: Config, model: torch.nn.Module, source: RandomImages,
                     device: torch.device) -> None:
    """Today's CAM stage loop: float32 items, a blocking copy back, the write on the main thread."""
    from sfc_core.cams import multiscale_cams

    for image_id, label in zip(source.ids(""), source.labels("")):
        image = source.read_image(image_id)
        images = [views.to(device) for views in today_views(image, cfg.cams.scales, cfg.cams.flip)]
        classifier, prototype = multiscale_cams(model, images, torch.from_numpy(label).to(device),
                                                image.shape[:2], cfg.cams.mask_by_label)
        keys = present_keys(label)
        rows = torch.from_numpy(keys).to(device)
        today_save_cam(run.cam_file(image_id), keys, classifier[rows].cpu().numpy(),
                       prototype[rows].cpu().numpy(), model.num_classes)


def network_only(cfg: Config, model: torch.nn.Module, prepared: list[list[torch.Tensor]], labels: np.ndarray,
                 size: tuple[int, int], device: torch.device) -> None:
    """The part of the loop both variants share: ``cams.multiscale_cams`` on views ``prepared``
    beforehand (per image, per scale), the kept rows copied back (nothing loaded or written)."""
    from sfc_core.cams import multiscale_cams

    for views, label in zip(prepared, labels):
        maps = multiscale_cams(model, views, torch.from_numpy(label).to(device), size, cfg.cams.mask_by_label)
        rows = torch.from_numpy(present_keys(label)).to(device)
        [m[rows].cpu() for m in maps]


def bench_camstage(cfg: Config, model: torch.nn.Module, size: tuple[int, int], device: torch.device,
                   images: int, repeats: int) -> dict:
    """Images/s of the CAM stage's loop (load, every scale with its flip, the kept rows back,
    the file written) on ``images`` random images of ``size``, the loader in this process
    (``runtime.num_workers`` 0): today's against ``cams.write_cams`` (``kit``, at
    ``cams.batch_size``; ``kit_batch1``, one image at a time, only when the batch size is not
    1), and ``network``, the network one image at a time and the copy back alone.
    ``today_max_abs_diff``: the largest difference between today's files and the kit's at batch 1
    (the kit's network has its BatchNorms folded: float rounding, a float16 step at most);
    ``batch_max_abs_diff``: the largest difference between the batched and batch-1 files."""
    from sfc_core.cams import write_cams

    cfg = copy.deepcopy(cfg).override({"runtime.num_workers": 0})     # override sets in place
    batch1 = copy.deepcopy(cfg).override({"cams.batch_size": 1})
    source = RandomImages(images, size, model.num_classes)
    views = MultiScaleDataset(source, "bench", scales=tuple(cfg.cams.scales))
    prepared = [[v.to(device) for v in today_views(image, cfg.cams.scales, cfg.cams.flip)]
                for image in source.images]
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        runs = {name: RunDir(Path(folder, name)) for name in ("today", "kit", "kit_batch1")}
        variants = {"today": lambda: today_write_cams(runs["today"], cfg, model, source, device),
                    "kit": lambda: write_cams(runs["kit"], cfg, model, views, device),
                    "kit_batch1": lambda: write_cams(runs["kit_batch1"], batch1, model, views, device),
                    "network": lambda: network_only(cfg, model, prepared, source.labels(""), size, device)}
        if cfg.cams.batch_size == 1:
            runs["kit_batch1"] = runs["kit"]
            del variants["kit_batch1"]
        seconds = alternate(variants, repeats)
        ids = source.ids("")
        today_diff = max(_max_abs_diff(runs["today"].cam_file(i), runs["kit_batch1"].cam_file(i)) for i in ids)
        batch_diff = max(_max_abs_diff(runs["kit"].cam_file(i), runs["kit_batch1"].cam_file(i)) for i in ids)
    result = {"image_size": list(size), "scales": list(cfg.cams.scales), "flip": cfg.cams.flip,
              "batch_size": cfg.cams.batch_size, "images": images, "repeats": repeats,
              "today_max_abs_diff": today_diff, "batch_max_abs_diff": batch_diff}
    for name in seconds:
        result[name] = {"images_per_s": images * repeats / seconds[name]["wall_s"],
                        "cpu_ms_per_image": 1000 * seconds[name]["cpu_s"] / (images * repeats)}
    if "kit_batch1" in seconds:
        result.update({f"batch_speedup_{kind}": seconds["kit_batch1"][f"{kind}_s"] / seconds["kit"][f"{kind}_s"]
                       for kind in ("wall", "cpu")})
    return {**result, **speedups(seconds)}


def _max_abs_diff(a: Path, b: Path) -> float:
    """Largest difference of the two CAM files' maps (float32 of their float16)."""
    with np.load(a) as x, np.load(b) as y:
        return max(float(np.abs(x[k].astype(np.float32) - y[k].astype(np.float32)).max())
                   for k in ("classifier", "prototype"))


# -- the training loader ----------------------------------------------------------------------


class JpegImages(RandomImages):
    """RandomImages saved as JPEG files (quality 90) and decoded on every read, as the VOC
    reader does (PIL, converted to RGB); the images are smooth (upsampled noise), like photos
    and unlike white noise, so the JPEG decodes at a photo's cost."""

    def __init__(self, folder: Path, count: int, size: tuple[int, int], num_classes: int, seed: int = 0):
        super().__init__(count, size, num_classes, seed)
        from PIL import Image

        smooth = F.interpolate(torch.from_numpy(self.images).permute(0, 3, 1, 2)[:, :, ::8, ::8].float(),
                               size, mode="bilinear", align_corners=False)
        self.images = smooth.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        self.paths = [Path(folder, f"{image_id}.jpg") for image_id in self.ids("")]
        for image, path in zip(self.images, self.paths):
            Image.fromarray(image).save(path, quality=90)

    def read_image(self, image_id: str) -> np.ndarray:
        from PIL import Image

        with Image.open(self.paths[int(image_id)]) as image:
            return np.asarray(image.convert("RGB"))


def today_train_item(dataset, key: tuple[int, int]) -> dict:
    """Today's TrainDataset item: the same draws, the crop normalised to float32 on the CPU."""
    from sfc_core.data.transforms import augment, long_side_scale

    epoch, index = key
    rng = np.random.default_rng([dataset.seed, epoch, index])
    image = dataset.dataset.read_image(dataset.ids[index])
    scale = long_side_scale(image.shape[:2], dataset.resize_long, rng)
    image, _, box = augment(image, None, rng, dataset.crop_size, scale, dataset.flip)
    return {"name": dataset.ids[index], "image": torch.from_numpy(image.transpose(2, 0, 1).copy()),
            "box": torch.from_numpy(box), "label": torch.from_numpy(dataset.labels[index])}


def bench_loader(cfg: Config, images: int, repeats: int, size: tuple[int, int]) -> dict:
    """CPU milliseconds per training item (``data.TrainDataset`` at the preset's crop and
    resize range) from ``images`` JPEG files of ``size``, in this process: today's float32
    item against the kit's uint8 one, and ``identical``: whether the kit's items, normalised
    by ``transforms.normalize_crops``, equal today's."""
    from torch.utils.data import default_collate

    from sfc_core.data import TrainDataset
    from sfc_core.data.transforms import normalize_crops

    with tempfile.TemporaryDirectory() as folder:
        source = JpegImages(Path(folder), images, size, 20)
        dataset = TrainDataset(source, "bench", cfg.data.crop_size, tuple(cfg.data.resize_long), seed=cfg.runtime.seed)
        items = {"today": lambda: [today_train_item(dataset, (0, i)) for i in range(images)],
                 "kit": lambda: [dataset[0, i] for i in range(images)]}
        seconds = alternate(items, repeats)
        today, kit = default_collate(items["today"]()), default_collate(items["kit"]())
    identical = torch.equal(normalize_crops(kit["image"], kit["box"], "cpu"), today["image"])
    result = {"image_size": list(size), "crop_size": cfg.data.crop_size, "resize_long": list(cfg.data.resize_long),
              "images": images, "repeats": repeats, "identical": identical,
              "item_bytes": {"today": today["image"][0].nbytes, "kit": kit["image"][0].nbytes}}
    for name in items:
        result[name] = {"cpu_ms_per_item": 1000 * seconds[name]["cpu_s"] / (images * repeats),
                        "ms_per_item": 1000 * seconds[name]["wall_s"] / (images * repeats)}
    return {**result, **speedups(seconds)}
