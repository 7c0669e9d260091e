"""Datasets: ``open_dataset(cfg.data)`` gives the ``SegmentationDataset`` a configuration names.

A folder that holds ``JPEGImages/`` is a dataset and is read as it is. A synthetic ``data.root``
may instead hold generated datasets (``<root>/<size>-seed<seed>``, ``synthetic.dataset_name``):
one is generated there only at the preset's own root (``SYNTHETIC_ROOT``) or when asked
(``generate=True``; ``python -m sfc_core synth``). Anything else is one SfcError with the fix.
"""
from __future__ import annotations

from pathlib import Path

from sfc_core.config import DataConfig, preset_overrides
from sfc_core.data.dataset import (
    MultiScaleDataset,
    SegmentationDataset,
    TrainDataset,
    item_loader,
    same_size_batches,
)
from sfc_core.errors import SfcError

DATASETS = ("voc", "coco", "synthetic")
SYNTHETIC_ROOT = preset_overrides("synthetic")["data.root"]     # where the default run generates

__all__ = ["DATASETS", "MultiScaleDataset", "SegmentationDataset", "TrainDataset", "item_loader", "open_dataset",
           "same_size_batches", "synthetic_dataset"]


def open_dataset(data: DataConfig, generate: bool = False) -> SegmentationDataset:
    """The dataset of ``data.dataset`` at ``data.root`` (synthetic: ``synthetic_dataset``)."""
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
        return SegmentationDataset(synthetic_dataset(data, generate))
    raise SfcError(f"unknown dataset kind {data.dataset!r}",
                   fix=f"set data.dataset to one of: {', '.join(DATASETS)}")


def synthetic_dataset(data: DataConfig, generate: bool = False) -> Path:
    """The synthetic dataset ``data`` names: ``data.root`` if it is one (checked), else inside it."""
    from sfc_core.data import synthetic

    root = Path(data.root)
    settings = {"size": data.synthetic_size, "seed": data.synthetic_seed, "shared_parts": data.shared_parts}
    if (root / "JPEGImages").is_dir():
        synthetic.check_settings(root, settings)
        return root
    if generate or root.resolve() == Path(SYNTHETIC_ROOT).resolve():
        return synthetic.generate(root, **settings)
    path = synthetic.generated(root, **settings)
    if path is not None:
        return path
    command = (f"python -m sfc_core synth --size {data.synthetic_size} --seed {data.synthetic_seed}"
               f"{'' if data.shared_parts else ' --control'} --out {root}")
    below = sorted(p.parent for p in root.glob("*/JPEGImages")) if root.is_dir() else []
    other = f", or pass the dataset folder itself as --data-root (e.g. {below[0]})" if below else ""
    raise SfcError(f"no synthetic dataset {synthetic.dataset_name(**settings)} in {root} (a stage generates "
                   f"one only under {SYNTHETIC_ROOT})", path=root, fix=f"make it with: {command}{other}")
