"""Tiny dataset trees in the VOC and COCO layouts, written by the tests themselves.

Each image is 20x30 (one is 30x20, one is grayscale) with rectangles of known classes, so a
test can compute every expected mask, label and count from the tables below on its own.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

FIXTURE_CLASSES = ("cat", "dog", "cow")

# id -> (height, width, [(class 1..C, y0, y1, x0, x1), ...]); later rectangles paint over.
VOC_IMAGES = {
    "2007_000001": (20, 30, [(1, 2, 12, 3, 15)]),
    "2007_000002": (20, 30, [(1, 0, 10, 0, 10), (2, 10, 20, 15, 30)]),
    "2007_000003": (30, 20, [(3, 5, 25, 2, 18)]),
    "2007_000004": (20, 30, [(2, 1, 9, 1, 9), (3, 11, 19, 20, 29)]),
    "2007_000005": (20, 30, [(1, 0, 5, 0, 5), (2, 5, 10, 5, 10), (3, 10, 15, 10, 15)]),
    "2007_000006": (20, 30, [(1, 4, 16, 4, 26)]),
}
VOC_LISTS = {
    "train": ["2007_000001", "2007_000002", "2007_000003", "2007_000004", "2007_000005"],
    "val": ["2007_000006"],
}
GRAYSCALE_IDS = {"2007_000004"}

COCO_CLASSES_USED = 80
COCO_IMAGES = {
    "COCO_train2014_000000000009": (20, 30, [(1, 2, 12, 3, 15), (80, 14, 20, 20, 30)]),
    "COCO_train2014_000000000025": (30, 20, [(45, 5, 25, 2, 18)]),
    "COCO_val2014_000000000042": (20, 30, [(1, 1, 9, 1, 9), (2, 11, 19, 20, 29)]),
}
COCO_LISTS = {
    "train": ["COCO_train2014_000000000009", "COCO_train2014_000000000025"],
    "val": ["COCO_val2014_000000000042"],
}


def fixture_mask(spec: tuple[int, int, list]) -> np.ndarray:
    """uint8 (H, W) mask of one table entry, with a 1-pixel 255 (ignore) border."""
    height, width, boxes = spec
    mask = np.zeros((height, width), dtype=np.uint8)
    for cls, y0, y1, x0, x1 in boxes:
        mask[y0:y1, x0:x1] = cls
    mask[0, :] = 255
    return mask


def fixture_image(image_id: str, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3) smooth colour ramps (JPEG keeps them close), different per id."""
    offset = sum(image_id.encode()) % 60
    ys, xs = np.mgrid[0:height, 0:width]
    channels = [offset + 20 * k + 2 * ys + k * xs for k in range(1, 4)]     # at most 247
    return np.stack(channels, axis=-1).astype(np.uint8)


def fixture_label(spec: tuple[int, int, list], num_classes: int) -> np.ndarray:
    """float32 (C,) label of a table entry: classes visible in its mask."""
    present = set(np.unique(fixture_mask(spec)).tolist()) - {0, 255}
    label = np.zeros(num_classes, dtype=np.float32)
    label[[c - 1 for c in present]] = 1
    return label


def voc_annotation_xml(image_id: str, height: int, width: int, objects: list[tuple]) -> str:
    """An Annotations/<id>.xml in VOC 2012's format. objects: (class name, y0, y1, x0, x1,
    difficult, part names); the box is written as VOC's 1-based inclusive pixel corners, each
    part (VOC's person layout: head, hand, foot) as a <part> with its own <name> and box."""
    def box(y0, y1, x0, x1, indent):
        return (f"{indent}<bndbox>\n{indent}\t<xmin>{x0 + 1}</xmin>\n{indent}\t<ymin>{y0 + 1}</ymin>\n"
                f"{indent}\t<xmax>{x1}</xmax>\n{indent}\t<ymax>{y1}</ymax>\n{indent}</bndbox>\n")
    body = ""
    for name, y0, y1, x0, x1, difficult, parts in objects:
        body += (f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n"
                 f"\t\t<truncated>0</truncated>\n\t\t<difficult>{int(difficult)}</difficult>\n"
                 + box(y0, y1, x0, x1, "\t\t")
                 + "".join(f"\t\t<part>\n\t\t\t<name>{part}</name>\n" + box(y0, y1, x0, x1, "\t\t\t")
                           + "\t\t</part>\n" for part in parts)
                 + "\t</object>\n")
    return (f"<annotation>\n\t<folder>VOC2012</folder>\n\t<filename>{image_id}.jpg</filename>\n"
            f"\t<source>\n\t\t<database>The VOC2008 Database</database>\n\t\t<annotation>PASCAL VOC2008"
            f"</annotation>\n\t\t<image>flickr</image>\n\t</source>\n\t<size>\n\t\t<width>{width}</width>\n"
            f"\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n\t<segmented>1</segmented>\n"
            f"{body}</annotation>\n")


def write_palette_png(mask: np.ndarray, path: Path) -> None:
    image = Image.fromarray(mask, mode="P")
    image.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _jpeg(image: np.ndarray, path: Path, grayscale: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(image)
    (pil.convert("L") if grayscale else pil).save(path, quality=95, subsampling=0)


def write_voc_tree(root: Path, class_names: bool = True, labels: str = "masks",
                   mask_dir: str = "SegmentationClass", pairs_list: bool = False) -> Path:
    """A VOC-layout tree of VOC_IMAGES under `root`.

    class_names: write class_names.txt (FIXTURE_CLASSES); labels: "masks" (no label file),
    "json" (cls_labels.json) or "npy" (reference-style cls_labels.npy, returned path's
    sibling); pairs_list: write the train list as "/JPEGImages/<id>.jpg /Seg.../<id>.png".
    """
    root = Path(root)
    num_classes = len(FIXTURE_CLASSES)
    for image_id, spec in VOC_IMAGES.items():
        _jpeg(fixture_image(image_id, spec[0], spec[1]), root / "JPEGImages" / f"{image_id}.jpg",
              grayscale=image_id in GRAYSCALE_IDS)
        write_palette_png(fixture_mask(spec), root / mask_dir / f"{image_id}.png")
        objects = [(FIXTURE_CLASSES[c - 1], y0, y1, x0, x1, False, []) for c, y0, y1, x0, x1 in spec[2]]
        (root / "Annotations").mkdir(exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text(voc_annotation_xml(image_id, spec[0], spec[1], objects))
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    for name, ids in VOC_LISTS.items():
        lines = [f"/JPEGImages/{i}.jpg /{mask_dir}/{i}.png" if pairs_list else i for i in ids]
        (lists / f"{name}.txt").write_text("\n".join(lines) + "\n")
    if class_names:
        (root / "class_names.txt").write_text("\n".join(FIXTURE_CLASSES) + "\n")
    if labels == "json":
        table = {i: np.flatnonzero(fixture_label(s, num_classes)).tolist() for i, s in VOC_IMAGES.items()}
        (root / "cls_labels.json").write_text(json.dumps(table))
    elif labels == "npy":
        table = {i: fixture_label(s, num_classes) for i, s in VOC_IMAGES.items()}
        np.save(root / "cls_labels.npy", table)
    return root


def write_coco_tree(root: Path, list_suffix: str = "") -> Path:
    """A COCO-2014 WSSS-layout tree of COCO_IMAGES; lists named `<split><list_suffix>.txt`
    (list_suffix "_coco" gives the reference's train_coco.txt naming)."""
    root = Path(root)
    for image_id, spec in COCO_IMAGES.items():
        split = image_id.split("_")[1]
        _jpeg(fixture_image(image_id, spec[0], spec[1]), root / "JPEGImages" / split / f"{image_id}.jpg")
        write_palette_png(fixture_mask(spec), root / "SegmentationClass" / split / f"{image_id}.png")
    lists = root / "ImageSets"
    lists.mkdir(parents=True, exist_ok=True)
    for name, ids in COCO_LISTS.items():
        (lists / f"{name}{list_suffix}.txt").write_text("\n".join(ids) + "\n")
    return root


def trained_model(run_root):
    """The SfcNet of a run directory's inference checkpoint (best.pt, else last.pt), on the CPU:
    what the cams stage loads."""
    from sfc_core import engine
    from sfc_core.model.build import load_model
    from sfc_core.run_dir import RunDir

    run = RunDir(run_root)
    path = run.inference_checkpoint
    return load_model(path, engine.load_checkpoint(path), run.load_config().model, run.class_names(), "cpu")
