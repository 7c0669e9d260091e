"""Tiny fake downloads in the official layouts: VOC 2012 trainval, SBD, COCO 2014.

SBD's masks are real MATLAB files written with scipy.io.savemat in SBD's structure (GTcls, a
struct with Segmentation, Boundaries, CategoriesPresent); COCO's annotations hold polygons,
uncompressed and compressed RLE, a crowd region and an image without objects. Every expected
mask, list and label can be computed from the tables below.
"""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from sfc_core.data.dataset import VOC_CLASSES
from tests.fixtures import fixture_image, fixture_mask, voc_annotation_xml

H, W = 24, 32
# id -> rectangles (class 1..20, y0, y1, x0, x1) of its mask; later rectangles paint over.
VOC_SEG = {  # images with a VOC 2012 mask (train and val)
    "2008_000001": [(15, 2, 20, 3, 20)],
    "2008_000002": [(12, 0, 12, 0, 12), (8, 12, 24, 16, 32)],
    "2008_000003": [(1, 4, 20, 4, 28)],
    "2008_000004": [(20, 1, 9, 1, 9)],
}
SBD_SEG = {  # SBD class masks (2008_000002 and 2008_000003 also have a VOC mask, which wins)
    "2008_000002": [(3, 2, 10, 2, 10)],
    "2008_000003": [(5, 4, 20, 4, 28)],
    "2008_000005": [(7, 3, 18, 5, 25)],
    "2008_000006": [(15, 0, 24, 0, 10), (9, 5, 15, 20, 30)],
    "2008_000007": [(2, 6, 16, 6, 16)],
}
VOC_LISTS = {"train": ["2008_000001", "2008_000002"], "val": ["2008_000003", "2008_000004"]}
SBD_LISTS = {"train": ["2008_000002", "2008_000005", "2008_000003"],   # 000003 is VOC val
             "val": ["2008_000006", "2008_000007", "2008_000004"]}      # 000004 is VOC val
TRAIN_AUG = ["2008_000001", "2008_000002", "2008_000005", "2008_000006", "2008_000007"]
# Annotations/<id>.xml: an object per rectangle of the image's mask (VOC's own where it has
# one), except where listed here: 2008_000005's XML also names a small, difficult person that
# its mask does not show (as on a few real images), so its labels (from the XML) differ.
XML_EXTRA = {"2008_000005": [("person", 1, 3, 1, 3, True, ["head"])]}


def mask_of(boxes: list, border: bool) -> np.ndarray:
    """uint8 (H, W): VOC masks have a 255 top row (their borders), SBD masks none."""
    mask = fixture_mask((H, W, boxes))
    if not border:
        mask[0, :] = 0
        for cls, y0, y1, x0, x1 in boxes:
            mask[y0:y1, x0:x1] = cls
    return mask


def write_sbd_mat(path: Path, mask: np.ndarray) -> None:
    """SBD's cls/<id>.mat: GTcls.Segmentation, .Boundaries (20 sparse maps), .CategoriesPresent."""
    import scipy.io
    import scipy.sparse

    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        boundaries[k, 0] = scipy.sparse.csc_matrix(mask.shape, dtype=bool)
    present = np.array([[c] for c in np.unique(mask) if c], dtype=np.uint8)
    scipy.io.savemat(path, {"GTcls": {"Segmentation": mask, "Boundaries": boundaries,
                                      "CategoriesPresent": present}})


def make_voc_download(root: Path) -> Path:
    """root/VOCdevkit/VOC2012 with JPEGImages and Annotations (every id), SegmentationClass, the lists."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    for image_id in sorted(set(VOC_SEG) | set(SBD_SEG)):
        Image.fromarray(fixture_image(image_id, H, W)).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
    for image_id, boxes in VOC_SEG.items():
        png = Image.fromarray(mask_of(boxes, border=True), mode="P")
        png.putpalette([v for i in range(256) for v in (i, i, i)])
        png.save(voc / "SegmentationClass" / f"{image_id}.png")
    for name, ids in VOC_LISTS.items():
        (voc / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    (voc / "Annotations").mkdir()
    for image_id in sorted(set(VOC_SEG) | set(SBD_SEG)):
        boxes = VOC_SEG.get(image_id, SBD_SEG.get(image_id))
        objects = [(VOC_CLASSES[c - 1], y0, y1, x0, x1, False, ["hand"] if c == 15 else [])
                   for c, y0, y1, x0, x1 in boxes] + XML_EXTRA.get(image_id, [])
        (voc / "Annotations" / f"{image_id}.xml").write_text(voc_annotation_xml(image_id, H, W, objects))
    return voc


def make_sbd_download(root: Path) -> Path:
    """root/benchmark_RELEASE/dataset with cls/*.mat, train.txt, val.txt."""
    sbd = root / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    for image_id, boxes in SBD_SEG.items():
        write_sbd_mat(sbd / "cls" / f"{image_id}.mat", mask_of(boxes, border=False))
    for name, ids in SBD_LISTS.items():
        (sbd / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return sbd


def make_tar(folder: Path, archive: Path, arcname: str) -> Path:
    with tarfile.open(archive, "w:gz" if archive.suffix == ".tgz" else "w") as tar:
        tar.add(folder, arcname=arcname)
    return archive


# -- COCO ----------------------------------------------------------------------------------------

MISSING_COCO_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}   # COCO's unused category ids
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in MISSING_COCO_IDS]


def coco_categories() -> list[dict]:
    from sfc_core.data.coco import COCO_CLASSES

    return [{"id": cid, "name": name, "supercategory": "x"} for cid, name in zip(COCO_CATEGORY_IDS, COCO_CLASSES)]


def box_polygon(y0: int, y1: int, x0: int, x1: int) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def make_coco_download(root: Path) -> Path:
    """train2014/ (3 images, one without objects), val2014/ (1), annotations/instances_*.json.

    Train image 1: a large dining table (class 61, category 67) with a small cup (class 42,
    category 47) on it, as polygons, and a crowd of people (RLE) over the table's corner and the
    background. Train image 2: a dog (class 17, category 18) as uncompressed RLE.
    Val image: a giraffe (class 24, category 25) as compressed RLE. Train image 3: nothing.
    """
    from pycocotools import mask as mask_utils

    for split in ("train2014", "val2014", "annotations"):
        (root / split).mkdir(parents=True)
    people = np.zeros((H, W), np.uint8, order="F")
    people[0:6, 0:12] = 1
    dog = np.zeros((H, W), np.uint8, order="F")
    dog[5:20, 8:24] = 1
    giraffe = np.asfortranarray((np.arange(H)[:, None] + np.arange(W)[None] > 30).astype(np.uint8))
    compressed = mask_utils.encode(giraffe)
    compressed["counts"] = compressed["counts"].decode()
    uncompressed = {"size": [H, W], "counts": _uncompressed_counts(dog)}
    crowd_rle = mask_utils.encode(people)
    crowd_rle["counts"] = crowd_rle["counts"].decode()
    splits = {
        "train2014": [
            (9, [(67, 0, box_polygon(2, 22, 2, 30), 560.0), (47, 0, box_polygon(8, 14, 10, 16), 36.0),
                 (1, 1, crowd_rle, 72.0)]),
            (25, [(18, 0, uncompressed, 240.0)]),
            (30, []),
        ],
        "val2014": [(42, [(25, 0, compressed, float(giraffe.sum()))])],
    }
    for split, images in splits.items():
        data = {"images": [], "annotations": [], "categories": coco_categories()}
        for number, objects in images:
            name = f"COCO_{split}_{number:012d}.jpg"
            Image.fromarray(fixture_image(name, H, W)).save(root / split / name, quality=95)
            data["images"].append({"id": number, "file_name": name, "height": H, "width": W})
            for k, (cid, crowd, segmentation, area) in enumerate(objects):
                data["annotations"].append({"id": number * 10 + k, "image_id": number, "category_id": cid,
                                            "iscrowd": crowd, "area": area, "segmentation": segmentation})
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths in column-major order, starting with zeros."""
    flat = mask.flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return counts
