"""MS COCO 2014 in the layout WSSS code commonly shares (docs/reference.md 1.5).

    root/JPEGImages/{train2014,val2014}/<id>.jpg, SegmentationClass/{train2014,val2014}/<id>.png
      (0 background, 1..80 in COCO category order with unused ids removed, 255 ignore),
      ImageSets/{train,val}.txt (or the reference's train_coco.txt / val_coco.txt),
      cls_labels.json (optional, as for VOC)

An id's sub-folder is the split named in it (the reference reads all from ``train2014/``);
``mask_layout="flat"`` reads ``SegmentationClass/<id>.png``. ``prepare coco`` writes this layout.
"""
from __future__ import annotations

from pathlib import Path

from sfc_core.data.dataset import SegmentationDataset
from sfc_core.errors import SfcError

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

MASK_LAYOUTS = ("split", "flat")


class CocoDataset(SegmentationDataset):
    """COCO 2014 on the VOC readers: only the folder of an id and the list names differ."""

    def __init__(self, root: str | Path, labels_file: str | Path | None = None, allow_pickle: bool = False,
                 mask_layout: str = "split"):
        if mask_layout not in MASK_LAYOUTS:
            raise SfcError(f"unknown COCO mask layout {mask_layout!r}",
                           fix=f"set data.coco_mask_layout to one of: {', '.join(MASK_LAYOUTS)}")
        super().__init__(root, class_names=COCO_CLASSES, mask_dir="SegmentationClass",
                         image_dir="JPEGImages", list_dir="ImageSets", labels_file=labels_file,
                         allow_pickle=allow_pickle)
        self.mask_layout = mask_layout

    def list_path(self, list_name: str) -> Path:
        plain = super().list_path(list_name)
        reference = self.list_dir / f"{list_name}_coco.txt"
        return reference if not plain.is_file() and reference.is_file() else plain

    def split_of(self, image_id: str) -> str:
        """'COCO_val2014_000000000042' -> 'val2014'."""
        parts = image_id.split("_")
        if len(parts) != 3 or parts[0] != "COCO":
            raise SfcError(f"image id {image_id!r} is not a COCO 2014 id (COCO_<split>_<number>)",
                           path=self.list_dir, fix="list ids like COCO_train2014_000000000009")
        return parts[1]

    def image_path(self, image_id: str) -> Path:
        return self.image_dir / self.split_of(image_id) / f"{image_id}{self.image_ext}"

    def mask_path(self, image_id: str) -> Path:
        folder = self.mask_dir if self.mask_layout == "flat" else self.mask_dir / self.split_of(image_id)
        return folder / f"{image_id}.png"
