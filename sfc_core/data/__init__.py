"""Datasets: `open_dataset(cfg.data)` gives the `SegmentationDataset` a configuration names.

The synthetic dataset is generated on first use (and reused from `data.root` afterwards);
VOC and COCO are read from `data.root` as they are.
"""
from __future__ import annotations

from sfc_core.config import DataConfig
from sfc_core.data.voc import (
    MultiScaleDataset,
    SegmentationDataset,
    TrainDataset,
    item_loader,
    same_size_batches,
)
from sfc_core.errors import SfcError

DATASETS = ("voc", "coco", "synthetic")

__all__ = ["DATASETS", "MultiScaleDataset", "SegmentationDataset", "TrainDataset", "item_loader", "open_dataset",
           "same_size_batches"]


def open_dataset(data: DataConfig) -> SegmentationDataset:
    """The dataset of `data.dataset` at `data.root` (synthetic: generated there if needed)."""
    if data.dataset in ("voc", "coco") and not data.root:
        raise SfcError(f"no dataset root given for {data.dataset}",
                       fix="pass --set data.root=DIR (train, stats and import-checkpoint also take --data-root DIR)")
    labels = {"labels_file": data.labels_file or None, "allow_pickle": data.allow_pickled_labels}
    if data.dataset == "voc":
        return SegmentationDataset(data.root, **labels)
    if data.dataset == "coco":
        from sfc_core.data.coco import CocoDataset

        return CocoDataset(data.root, mask_layout=data.coco_mask_layout, **labels)
    if data.dataset == "synthetic":
        from sfc_core.data.synthetic import generate

        root = generate(data.root, size=data.synthetic_size, seed=data.synthetic_seed,
                        shared_parts=data.shared_parts)
        return SegmentationDataset(root)
    raise SfcError(f"unknown dataset kind {data.dataset!r}",
                   fix=f"set data.dataset to one of: {', '.join(DATASETS)}")
