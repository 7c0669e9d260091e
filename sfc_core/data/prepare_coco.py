"""COCO 2014 from its downloads to the kit's layout (``python -m sfc_core prepare coco``).

Reads ``train2014/``, ``val2014/`` and ``annotations/instances_{train,val}2014.json``; writes the
layout ``data/coco.py`` reads (masks decoded with pycocotools, 255 crowd). Overlaps: instances
are painted largest first, so the smaller keeps the pixels; crowd regions are 255 where no
instance lies. Images without a non-crowd instance are left out and named in the manifest.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sfc_core.data.coco import COCO_CLASSES
from sfc_core.data.layout import commit_folder, keep_or_write, link_images, staging_path, write_layout
from sfc_core.errors import SfcError
from sfc_core.masks import IGNORE
from sfc_core.pool import pool_map

COCO_EXPECTED = {"train": 82081, "val": 40137}     # what the official downloads give
SPLITS = ("train2014", "val2014")
LIST_NAMES = {"train2014": "train", "val2014": "val"}


def annotation_mask(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """bool (H, W) of one annotation: polygons, uncompressed RLE or compressed RLE."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):          # polygons: one RLE per part, merged
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):   # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def class_mask(objects: list[tuple[int, int, float, list | dict]], height: int, width: int) -> np.ndarray:
    """uint8 (H, W) mask of one image's objects (class, iscrowd, area, segmentation), overlap rule."""
    mask = np.zeros((height, width), np.uint8)
    things = sorted((o for o in objects if not o[1]), key=lambda o: -o[2])   # stable: ties keep order
    for cls, _, _, segmentation in things:
        mask[annotation_mask(segmentation, height, width)] = cls
    crowd = np.zeros((height, width), bool)
    for _, _, _, segmentation in (o for o in objects if o[1]):
        crowd |= annotation_mask(segmentation, height, width)
    mask[crowd & (mask == 0)] = IGNORE
    return mask


def _coco_mask_task(job: tuple) -> tuple[str, list[int], str]:
    image_id, height, width, objects, out_path = job
    return keep_or_write(image_id, out_path, lambda: (class_mask(objects, height, width), "annotations"))


def read_annotations(path: Path) -> dict:
    fix = ("download annotations_trainval2014.zip and extract it into the COCO folder "
           "(annotations/instances_train2014.json, instances_val2014.json)")
    if not path.is_file():
        raise SfcError("COCO annotation file is missing", path=path, fix=fix)
    try:
        data = json.loads(path.read_text())
        if not all(key in data for key in ("images", "annotations", "categories")):
            raise ValueError("no images / annotations / categories")
    except (OSError, ValueError) as e:
        raise SfcError(f"cannot read the COCO annotation file ({e})", path=path, fix=fix) from None
    return data


def category_map(categories: list[dict], path: Path) -> dict[int, int]:
    """COCO category id -> the kit's class index 1..80 (matched by name)."""
    order = {name: index + 1 for index, name in enumerate(COCO_CLASSES)}
    unknown = [f"{c['id']} {c['name']!r}" for c in categories if c["name"] not in order]
    if unknown:
        raise SfcError(f"unknown COCO categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown[:5])}; "
                       "the kit knows the 80 COCO 2014 classes", path=path,
                       fix="use the COCO 2014 instances annotations (instances_*2014.json, 80 categories)")
    return {c["id"]: order[c["name"]] for c in categories}


def split_jobs(coco: Path, masks: Path, split: str) -> tuple[list[tuple], list[str]]:
    """Mask jobs of one split (masks into ``masks``/<split>/), and the ids left out (no non-crowd object)."""
    path = coco / "annotations" / f"instances_{split}.json"
    data = read_annotations(path)
    classes = category_map(data["categories"], path)
    objects: dict[int, list] = {}
    for ann in data["annotations"]:
        if ann["category_id"] not in classes:
            raise SfcError(f"annotation {ann.get('id')} names category {ann['category_id']}, which the "
                           "file does not define", path=path, fix="use the official COCO 2014 annotation file")
        objects.setdefault(ann["image_id"], []).append(
            (classes[ann["category_id"]], int(ann.get("iscrowd", 0)), float(ann["area"]), ann["segmentation"]))
    jobs, left_out, missing = [], [], []
    for image in sorted(data["images"], key=lambda im: im["file_name"]):
        image_id = Path(image["file_name"]).stem
        if not (coco / split / image["file_name"]).is_file():
            missing.append(image["file_name"])
        own = objects.get(image["id"], [])
        if not any(not o[1] for o in own):
            left_out.append(image_id)
            continue
        jobs.append((image_id, image["height"], image["width"], own,
                     str(masks / split / f"{image_id}.png")))
    if missing:
        raise SfcError(f"{len(missing)} image(s) of {path.name} are not in {split}/, first: "
                       f"{', '.join(missing[:5])}", path=coco / split,
                       fix=f"extract {split}.zip completely into the COCO folder")
    return jobs, left_out


def prepare_coco(coco: str | Path, out: str | Path, processes: int = 1) -> dict:
    """Write the kit's COCO layout under ``out`` (module docstring); returns the manifest."""
    coco, out = Path(coco), Path(out)
    for split in SPLITS:
        if not (coco / split).is_dir():
            raise SfcError(f"COCO folder has no {split}/ images", path=coco / split,
                           fix="point --coco at the folder holding train2014/, val2014/ and annotations/")
    final = out / "SegmentationClass"
    masks = staging_path(final)
    work = {split: split_jobs(coco, masks, split) for split in SPLITS}    # every check before any write
    for split in SPLITS:
        link_images(out, coco / split, f"JPEGImages/{split}")
        (masks / split).mkdir(parents=True, exist_ok=True)
    results = pool_map(_coco_mask_task, [job for jobs, _ in work.values() for job in jobs], processes,
                       "COCO class masks", path=out,
                       fix="run the same command again (finished masks are kept), or pass --processes 1")
    commit_folder(masks, final)
    with_label = {image_id for image_id, classes, _ in results if classes}
    lists = {LIST_NAMES[split]: [job[0] for job in jobs if job[0] in with_label] for split, (jobs, _) in work.items()}
    left_out = {LIST_NAMES[split]: ids + [job[0] for job in jobs if job[0] not in with_label]
                for split, (jobs, ids) in work.items()}
    inputs = {"coco": str(coco.resolve()), "left_out_without_objects": left_out}
    manifest_notes = [f"{sum(len(v) for v in left_out.values()):,} image(s) without a non-crowd object "
                      "left out of the lists (named in the manifest)"]
    return write_layout(out, "ImageSets", lists, results, COCO_CLASSES, COCO_EXPECTED, inputs,
                        notes=manifest_notes)
