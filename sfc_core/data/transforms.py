"""Image transforms of the reference pipeline (docs/reference.md 1.3-1.4), as pure functions.

Images are numpy arrays in HWC layout: uint8 before `normalize`, float32 after. Randomness
comes in as a `numpy.random.Generator`, so a caller decides what it is a function of.
The torch functions run on the device: `normalize_on_device` and `device_views` normalise
(and flip) the uint8 CHW tensors a loader hands over, with `normalize`'s float32 arithmetic;
`valid_mask_from_boxes` turns the crop boxes of a batch into the (N, C+1, h, w) valid mask.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def rescale(image: np.ndarray, scale: float, resample=Image.Resampling.BICUBIC) -> np.ndarray:
    """PIL bicubic resize of a uint8 (H, W, ...) array by ``scale`` (1: the array itself, as reference)."""
    if scale == 1:
        return image
    height, width = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((round(width * scale), round(height * scale)), resample))


def normalize(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> float32 (H, W, 3): (x / 255 - IMAGENET_MEAN) / IMAGENET_STD."""
    return (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


@lru_cache(maxsize=8)
def _normalisation_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(255, mean, std) float32 (3, 1, 1) on `device`, made once per device."""
    with torch.inference_mode(False):
        return tuple(torch.from_numpy(v).reshape(3, 1, 1).to(device)
                     for v in (np.full(3, 255.0, dtype=np.float32), IMAGENET_MEAN, IMAGENET_STD))


def normalize_on_device(images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 (..., 3, H, W) RGB -> float32 on `device` (default: the images'), equal to `normalize`
    bit for bit (tensor divisors: no reciprocal multiplication); non-blocking copy."""
    x = images.to(device if device is not None else images.device, non_blocking=True).float()
    full, mean, std = _normalisation_constants(x.device)
    return (x / full - mean) / std


def device_views(image: torch.Tensor, device: torch.device | str | None = None, flip: bool = True) -> torch.Tensor:
    """B uint8 (B, 3, h, w) images (or one (3, h, w)) -> float32 (2B, 3, h, w) on `device`: the
    images, then their flips (or (B, 3, h, w) without `flip`)."""
    x = normalize_on_device(image.reshape(-1, *image.shape[-3:]), device)
    return torch.cat([x, x.flip(-1)]) if flip else x


def hflip(image: np.ndarray) -> np.ndarray:
    """Mirror an (H, W, ...) array left to right (a contiguous copy)."""
    return np.ascontiguousarray(image[:, ::-1])


def random_crop_box(size: tuple[int, int], crop_size: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Where a random crop_size crop of an image of `size` = (H, W) comes from (reference
    `get_random_crop_box`, each axis alone). Returns int64 (4,) boxes `[y0, y1, x0, x1]`:
    `source` in image coordinates and `box` in crop coordinates."""
    source, box = [], []
    for length in size:
        if length > crop_size:
            start = int(rng.integers(length - crop_size + 1))
            source += [start, start + crop_size]
            box += [0, crop_size]
        else:
            start = int(rng.integers(crop_size - length + 1))
            source += [0, length]
            box += [start, start + length]
    return np.array(source, dtype=np.int64), np.array(box, dtype=np.int64)


def rescale_mask(mask: np.ndarray, scale: float) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 (H, W) mask to the size `rescale` gives its image."""
    return rescale(mask, scale, Image.Resampling.NEAREST)


def paste_crop(array: np.ndarray, source: np.ndarray, box: np.ndarray, crop_size: int,
               fill: float) -> np.ndarray:
    """The (S, S, ...) crop of `array` that `random_crop_box` describes, `fill` where it has no pixel."""
    crop = np.full((crop_size, crop_size) + array.shape[2:], fill, dtype=array.dtype)
    crop[box[0]:box[1], box[2]:box[3]] = array[source[0]:source[1], source[2]:source[3]]
    return crop


def long_side_scale(size: tuple[int, int], long_range: tuple[int, int], rng: np.random.Generator) -> float:
    """The scale giving `size` = (H, W) a long side drawn uniformly in `long_range` (ends included)."""
    low, high = long_range
    height, width = size
    return int(rng.integers(low, high + 1)) / (height if width < height else width)


def augment(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, crop_size: int,
            scale: float, flip: bool = True, mask_fill: int = 255,
            normalise: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The joint training transform of an image and its mask (SFC, IRN and step 3 alike).

    Rescale (image bicubic, mask nearest), normalise, flip with p = 0.5 (drawn even when `flip`
    is off), random crop into an (S, S) canvas padded with 0 (mask: `mask_fill`). Returns the
    image float32 (S, S, 3) (uint8 without `normalise`), the mask or None, and `box` int64 (4,)."""
    image = rescale(image, scale)
    image = normalize(image) if normalise else image
    mask = None if mask is None else rescale_mask(mask, scale)
    if rng.random() < 0.5 and flip:
        image, mask = hflip(image), None if mask is None else hflip(mask)
    source, box = random_crop_box(image.shape[:2], crop_size, rng)
    crop = paste_crop(image, source, box, crop_size, 0)
    return crop, None if mask is None else paste_crop(mask, source, box, crop_size, mask_fill), box


def nearest_source_index(out_size: int, in_size: int, device: torch.device | None = None) -> torch.Tensor:
    """int64 (out_size,): the input pixel `F.interpolate(mode="nearest")` takes, bit for bit."""
    scale = torch.full((), in_size, dtype=torch.float32, device=device) / out_size   # made there: no copy
    index = (torch.arange(out_size, dtype=torch.float32, device=device) * scale).floor().long()
    return index.clamp_(max=in_size - 1)


def inside_boxes(boxes: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """bool (N, h, w): crop pixel (rows[i], cols[j]) inside each box (N, 4) `[y0, y1, x0, x1]`."""
    inside_rows = (rows >= boxes[:, 0:1]) & (rows < boxes[:, 1:2])              # (N, h)
    inside_cols = (cols >= boxes[:, 2:3]) & (cols < boxes[:, 3:4])              # (N, w)
    return inside_rows[:, :, None] & inside_cols[:, None, :]


def normalize_crops(images: torch.Tensor, boxes: torch.Tensor,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """The float32 (N, 3, S, S) training crops on `device` from the loader's uint8 ones
    (boxes (N, 4)): equal bit for bit to `augment(..., normalise=True)`'s CPU crops."""
    x = normalize_on_device(images, device)
    boxes = boxes.to(x.device, non_blocking=True)
    rows = torch.arange(x.shape[-2], device=x.device)
    cols = torch.arange(x.shape[-1], device=x.device)
    return torch.where(inside_boxes(boxes, rows, cols)[:, None], x, x.new_zeros(()))


def valid_mask_from_boxes(boxes: torch.Tensor, labels: torch.Tensor, crop_size: int,
                          grid: tuple[int, int]) -> torch.Tensor:
    """The label-masked valid mask (N, C+1, h, w) of a batch on the feature grid:
    1 inside each box (N, 4), nearest-downsampled; channel k also times labels[:, k-1]."""
    height, width = grid
    rows = nearest_source_index(height, crop_size, boxes.device)                 # (h,)
    cols = nearest_source_index(width, crop_size, boxes.device)                  # (w,)
    valid = inside_boxes(boxes, rows, cols).to(labels.dtype)                     # (N, h, w)
    channels = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1)       # (N, C+1)
    return channels[:, :, None, None] * valid[:, None]
