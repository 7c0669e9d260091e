"""Mechanism diagnostics on the synthetic dataset, which knows which pixels are a shared part.

The paper's claim: a head class's CAM learns the part it shares with rarer classes and so takes
their pixels. One table over an image list tests it, ``counts[g, part, p]``: pixels of class g on
``part`` (0 none, 1 shared, 2 own; ``SegmentationPart/``) predicted as class p:

    mechanism_summary(accumulate_part_confusion(((pred, gt, read_part_mask(root, i)) ...), C + 1), groups)
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from sfc_core.errors import SfcError
from sfc_core.masks import IGNORE
from sfc_core.metrics import ratio

NUM_PART_VALUES = 3          # 0 none, 1 shared (large) part, 2 own part
SHARED_PART, OWN_PART = 1, 2
PART_DIR = "SegmentationPart"
GROUPS_JSON = "groups.json"


@dataclass(frozen=True)
class Groups:
    """The class groups of a synthetic dataset (from its groups.json)."""
    class_names: tuple[str, ...]     # foreground, label order
    head: np.ndarray                 # int64 (C,): 0-based index of each class's group head
    group: np.ndarray                # int64 (C,): group index of each class
    shared_parts: bool               # False for the control set

    @property
    def is_head(self) -> np.ndarray:
        """bool (C,)"""
        return self.head == np.arange(len(self.class_names))


def read_groups(root: str | Path) -> Groups:
    """Read ``<root>/groups.json`` written by ``sfc_core.data.synthetic``."""
    path = Path(root) / GROUPS_JSON
    if not path.is_file():
        raise SfcError("no groups.json: mechanism diagnostics need a synthetic dataset", path=path,
                       fix="generate one: python -m sfc_core synth --size smoke --out DIR")
    try:
        data = json.loads(path.read_text())
        classes = data["classes"]
        names = tuple(c["name"] for c in classes)
        head = np.array([names.index(c["head"]) for c in classes], dtype=np.int64)
        group = np.array([c["group"] for c in classes], dtype=np.int64)
        shared = all(g["shared_part"] is not None for g in data["groups"])
    except (ValueError, KeyError, TypeError) as e:
        raise SfcError(f"groups.json is malformed ({type(e).__name__}: {e})", path=path,
                       fix="regenerate the dataset with --force") from None
    return Groups(names, head, group, shared)


def read_part_mask(root: str | Path, image_id: str) -> np.ndarray:
    """uint8 (H, W) part mask of one image: 0 none, 1 shared part, 2 own part."""
    path = Path(root) / PART_DIR / f"{image_id}.png"
    if not path.is_file():
        raise SfcError(f"no part mask for image {image_id}", path=path,
                       fix="part masks exist only in synthetic datasets; regenerate it with --force")
    with Image.open(path) as image:
        return np.asarray(image)


def part_confusion(pred: np.ndarray, gt: np.ndarray, part: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel counts int64 (K, 3, K) ``counts[g, part, p]`` of one image (gt 255 ignored), K = C + 1."""
    pred, gt, part = (np.asarray(a) for a in (pred, gt, part))
    if not pred.shape == gt.shape == part.shape:
        raise SfcError(f"shapes differ: prediction {pred.shape}, ground truth {gt.shape}, parts {part.shape}",
                       fix="resize the prediction to the mask's size")
    valid = gt != IGNORE
    pred, gt, part = pred[valid].astype(np.int64), gt[valid].astype(np.int64), part[valid].astype(np.int64)
    for name, values, limit in (("prediction", pred, num_classes), ("ground truth", gt, num_classes),
                                ("part mask", part, NUM_PART_VALUES)):
        if values.size and (values.min() < 0 or values.max() >= limit):
            raise SfcError(f"{name} has values outside 0..{limit - 1} "
                           f"(min {values.min()}, max {values.max()})",
                           fix="check that the masks and the run use the same class list")
    index = (gt * NUM_PART_VALUES + part) * num_classes + pred
    size = num_classes * NUM_PART_VALUES * num_classes
    return np.bincount(index, minlength=size).reshape(num_classes, NUM_PART_VALUES, num_classes)


def accumulate_part_confusion(samples: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
                              num_classes: int, progress: bool = True) -> np.ndarray:
    """Sum of ``part_confusion`` over ``(pred, gt, part)`` triples: int64 (K, 3, K)."""
    total = np.zeros((num_classes, NUM_PART_VALUES, num_classes), dtype=np.int64)
    for pred, gt, part in tqdm(samples, desc="part confusion", disable=not progress, leave=False):
        total += part_confusion(pred, gt, part, num_classes)
    return total


def part_recall(counts: np.ndarray, part_value: int) -> np.ndarray:
    """float64 (C,): share of each class's pixels on ``part_value`` predicted as it (nan: none)."""
    on_part = counts[1:, part_value, :]                       # (C, C+1) gt class x pred
    return ratio(np.diagonal(on_part[:, 1:]), on_part.sum(1))


def lost_to_other_class(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the share of GT pixels taken by another class (C,) and the top taker (-1: none)."""
    conf = counts.sum(1)[1:, 1:]                              # (C, C) fg gt x fg pred
    taken = conf - np.diag(np.diag(conf))
    share = ratio(taken.sum(1), counts[1:].sum((1, 2)))
    taker = np.where(taken.sum(1) > 0, taken.argmax(1), -1)
    return share, taker


def lost_to_head(counts: np.ndarray, groups: Groups, part_value: int | None = None) -> np.ndarray:
    """float64 (C,): share of each class's GT pixels (on ``part_value``) taken by its group head."""
    c = len(groups.class_names)
    conf = counts.sum(1) if part_value is None else counts[:, part_value, :]   # (C+1, C+1)
    share = ratio(conf[1 + np.arange(c), 1 + groups.head], conf[1:].sum(1))
    return np.where(groups.is_head, np.nan, share)


def mechanism_summary(counts: np.ndarray, groups: Groups) -> dict:
    """The figures the benchmark's targets are stated in (pooled over heads / non-heads),
    plus the per-class rows."""
    c = len(groups.class_names)
    if counts.shape != (c + 1, NUM_PART_VALUES, c + 1):
        raise SfcError(f"counts have shape {counts.shape}, expected {(c + 1, NUM_PART_VALUES, c + 1)} "
                       f"for {c} classes", fix="accumulate with num_classes = len(class_names) + 1")
    shared, own = part_recall(counts, SHARED_PART), part_recall(counts, OWN_PART)
    lost, taker = lost_to_other_class(counts)
    to_head = lost_to_head(counts, groups)
    shared_to_head = lost_to_head(counts, groups, SHARED_PART)
    gt_pixels, shared_pixels = counts[1:].sum((1, 2)), counts[1:, SHARED_PART].sum(1)
    non_head = ~groups.is_head
    heads = shared[groups.is_head][np.isfinite(shared[groups.is_head])]

    def pooled(share: np.ndarray, pixels: np.ndarray) -> float:
        """Pixel-weighted mean over the non-head classes."""
        return float(ratio(np.nansum(share[non_head] * pixels[non_head]), pixels[non_head].sum()))

    return {
        "heads_shared_part_recall": float(heads.mean()) if heads.size else float("nan"),
        "non_head_lost": pooled(lost, gt_pixels),
        "non_head_lost_to_head": pooled(to_head, gt_pixels),
        "non_head_shared_part_to_head": pooled(shared_to_head, shared_pixels),
        "classes": [{"name": name, "head": groups.class_names[groups.head[k]],
                     "shared_part_recall": shared[k], "own_part_recall": own[k],
                     "lost_to_other_class": lost[k],
                     "top_taker": groups.class_names[taker[k]] if taker[k] >= 0 else None,
                     "lost_to_head": to_head[k], "shared_part_to_head": shared_to_head[k]}
                    for k, name in enumerate(groups.class_names)],
    }
