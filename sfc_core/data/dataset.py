"""Datasets in the PASCAL VOC layout (docs/reference.md 1.1-1.4), the kit's generic dataset.

    root/JPEGImages/<id>.jpg
         SegmentationClassAug/<id>.png (else SegmentationClass/): palette, 0 bg, 1..C, 255 ignore
         ImageSets/Segmentation/<list>.txt   one id per line, or "/JPEGImages/<id>.jpg /Seg.../<id>.png"
         class_names.txt (optional, else VOC's 20), cls_labels.json (optional, else from masks)

`SegmentationDataset` reads one tree; `TrainDataset` and `MultiScaleDataset` are the
training and inference views over one of its lists.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sfc_core.data.transforms import augment, long_side_scale, rescale
from sfc_core.errors import SfcError
from sfc_core.io import quiet_worker
from sfc_core.masks import IGNORE

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
LABELS_JSON = "cls_labels.json"
CLASS_NAMES_TXT = "class_names.txt"


class SegmentationDataset:
    """One dataset tree in the VOC layout: lists, images, masks and image-level labels
    (from `labels_file` (JSON or the reference's `.npy`), else `<root>/cls_labels.json`, else the masks)."""

    def __init__(self, root: str | Path, class_names: list[str] | tuple[str, ...] | None = None,
                 mask_dir: str | None = None, image_dir: str = "JPEGImages",
                 image_ext: str = ".jpg", list_dir: str = "ImageSets/Segmentation",
                 labels_file: str | Path | None = None, allow_pickle: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise SfcError(f"dataset root {self.root} does not exist", path=self.root,
                           fix="point data.root at the dataset folder: --set data.root=DIR")
        expected = [image_dir, list_dir] + ([mask_dir] if mask_dir else [])
        missing = [name for name in expected if not (self.root / name).is_dir()]
        if missing:
            below = sorted(p.parent for p in self.root.glob(f"*/{image_dir}"))
            raise SfcError(f"dataset root lacks the folder(s) {', '.join(missing)}", path=self.root,
                           fix=f"point data.root (--data-root) at {below[0]}, the dataset one level below" if below
                           else "point data.root at the folder that holds JPEGImages/ and ImageSets/ "
                                "(for VOC: VOCdevkit/VOC2012)")
        self.image_dir = self.root / image_dir
        self.list_dir = self.root / list_dir
        self.image_ext = image_ext
        if mask_dir is None:
            mask_dir = next((d for d in ("SegmentationClassAug", "SegmentationClass")
                             if (self.root / d).is_dir()), "SegmentationClass")
        self.mask_dir = self.root / mask_dir
        self.class_names = tuple(class_names) if class_names is not None else self._read_class_names()
        self.num_classes = len(self.class_names)
        if labels_file is not None and not Path(labels_file).is_file():
            raise SfcError("label file does not exist", path=labels_file,
                           fix=f"point data.labels_file (--set data.labels_file=PATH) at a {LABELS_JSON} or a reference-style "
                               "cls_labels .npy")
        if labels_file is None and (self.root / LABELS_JSON).is_file():
            labels_file = self.root / LABELS_JSON
        self.labels_file = None if labels_file is None else Path(labels_file)   # None: from masks
        self.allow_pickle = allow_pickle
        self._ids: dict[str, list[str]] = {}
        self._labels: dict[str, np.ndarray] | None = None   # id -> float32 (C,), from a file
        self._mask_labels: dict[str, np.ndarray] = {}        # id -> float32 (C,), from masks

    # -- class names and lists ------------------------------------------------------------
    def _read_class_names(self) -> tuple[str, ...]:
        path = self.root / CLASS_NAMES_TXT
        if not path.is_file():
            return VOC_CLASSES
        names = [line.strip() for line in path.read_text().splitlines()]
        while names and not names[-1]:
            names.pop()
        if not names or "" in names:
            raise SfcError("class name list is empty or has an empty line", path=path,
                           fix="write one foreground class name per line, no blank lines")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise SfcError(f"class name list repeats {', '.join(duplicates)}", path=path,
                           fix="give every foreground class one unique name")
        return tuple(names)

    def list_path(self, list_name: str) -> Path:
        return self.list_dir / f"{list_name}.txt"

    def ids(self, list_name: str) -> list[str]:
        """Image ids of a list, in file order. Checked once that every image exists."""
        if list_name not in self._ids:
            path = self.list_path(list_name)
            if not path.is_file():
                known = sorted(p.stem for p in self.list_dir.glob("*.txt"))
                fix = f"use one of the lists in {self.list_dir}: {', '.join(known) or 'none'}"
                if list_name == "train_aug":    # no download has it: the kit makes it
                    fix = ("make it from the VOC 2012 and SBD downloads: python -m sfc_core prepare voc "
                           "--voc VOCdevkit/VOC2012 --sbd benchmark_RELEASE/dataset --out ROOT, "
                           "then --set data.root=ROOT")
                raise SfcError(f"no image list {list_name!r}", path=path, fix=fix)
            ids = read_list(path)
            if not ids:
                raise SfcError(f"image list {list_name!r} is empty", path=path,
                               fix="write one image id per line")
            _refuse_repeats(ids, list_name, path)
            missing = [i for i in ids if not os.path.exists(self.image_path(i))]
            if missing:
                raise SfcError(f"image list names {len(missing)} missing image(s), first: "
                               f"{', '.join(missing[:5])} (looked in {self.image_path(missing[0]).parent})",
                               path=path, fix="re-extract the dataset or remove those ids from the list")
            self._ids[list_name] = ids
        return self._ids[list_name]

    # -- files ------------------------------------------------------------------------------
    def image_path(self, image_id: str) -> Path:
        return self.image_dir / f"{image_id}{self.image_ext}"

    def mask_path(self, image_id: str) -> Path:
        return self.mask_dir / f"{image_id}.png"

    def has_masks(self, list_name: str) -> bool:
        return all(os.path.exists(self.mask_path(i)) for i in self.ids(list_name))

    def read_image(self, image_id: str) -> np.ndarray:
        """uint8 (H, W, 3) RGB (grayscale and palette JPEGs are converted)."""
        with _open_image(self.image_path(image_id), "image") as image:
            return np.asarray(image.convert("RGB"))

    def read_mask(self, image_id: str) -> np.ndarray:
        """uint8 (H, W): 0 background, 1..C classes, 255 ignore. Checked against its image."""
        path = self.mask_path(image_id)
        mask = self._read_mask_indices(path)
        with _open_image(self.image_path(image_id), "image", decode=False) as image:
            width, height = image.size
        if mask.shape != (height, width):
            raise SfcError(f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is {width}x{height}",
                           path=path, fix="regenerate the mask at the image's size")
        return mask

    def _read_mask_indices(self, path: Path) -> np.ndarray:
        with _open_image(path, "mask") as image:
            if image.mode not in ("P", "L"):
                raise SfcError(f"mask has PIL mode {image.mode}, not a palette or grayscale PNG", path=path,
                               fix="save masks as palette PNGs of class indices (0 bg, 1..C, 255 ignore)")
            mask = np.asarray(image)
        wrong = (mask > self.num_classes) & (mask != IGNORE)
        if wrong.any():
            raise SfcError(f"mask has class index {int(mask[wrong].max())} but the dataset has "
                           f"{self.num_classes} classes", path=path,
                           fix=f"check {CLASS_NAMES_TXT} (one name per class) or that the masks "
                               "belong to this dataset")
        return mask

    # -- image-level labels -----------------------------------------------------------------
    def label(self, image_id: str) -> np.ndarray:
        """float32 (C,) multi-hot image label."""
        if self.labels_file is not None:
            labels = self._file_labels()
            if image_id not in labels:
                raise SfcError(f"label file has no entry for image {image_id}", path=self.labels_file,
                               fix="regenerate the label file for every image in the lists")
            return labels[image_id]
        if image_id not in self._mask_labels:
            path = self.mask_path(image_id)
            if not path.is_file():
                raise SfcError(f"no image-level label for {image_id}: no {LABELS_JSON} and no mask",
                               path=path, fix=f"add {self.root / LABELS_JSON} or the segmentation masks")
            present = np.unique(self._read_mask_indices(path))
            present = present[(present > 0) & (present != IGNORE)]
            label = np.zeros(self.num_classes, dtype=np.float32)
            label[present.astype(np.int64) - 1] = 1
            self._mask_labels[image_id] = label
        return self._mask_labels[image_id]

    def labels(self, list_name: str) -> np.ndarray:
        """float32 (N, C) labels of a list, in list order."""
        ids = self.ids(list_name)
        if self.labels_file is not None:
            missing = [i for i in ids if i not in self._file_labels()]
            if missing:
                raise SfcError(f"label file has no entry for {len(missing)} image(s) of list "
                               f"{list_name!r}, first: {', '.join(missing[:5])}", path=self.labels_file,
                               fix="regenerate the label file for every image in the lists")
        rows = [self.label(i) for i in tqdm(ids, desc=f"labels from masks ({list_name})",
                                            leave=False, disable=self.labels_file is not None)]
        return np.stack(rows).astype(np.float32)

    def _file_labels(self) -> dict[str, np.ndarray]:
        if self._labels is None:
            self._labels = read_labels_file(self.labels_file, self.num_classes, self.allow_pickle)
        return self._labels


def read_list(path: Path) -> list[str]:
    """The ids of a list file; a line is a bare id or "/JPEGImages/<id>.jpg /Segmentation.../<id>.png"."""
    return [Path(line.split()[0]).stem if "/" in line else line.split()[0]
            for line in path.read_text().splitlines() if line.strip()]


def _refuse_repeats(ids: list[str], list_name: str, path: Path) -> None:
    """Refuse a list naming an id twice (it would count twice in class counts and evaluation)."""
    first_line: dict[str, int] = {}
    for line, image_id in enumerate(ids, 1):
        if image_id in first_line:
            repeated = len(ids) - len(set(ids))
            raise SfcError(f"image list {list_name!r} names {image_id} twice (entries {first_line[image_id]} "
                           f"and {line}); {repeated} repeated entr{'y' if repeated == 1 else 'ies'} in all",
                           path=path, fix="keep one line per image id in the list")
        first_line[image_id] = line


def read_labels_file(path: Path, num_classes: int, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """id -> float32 (C,) labels from the kit's JSON or the reference's pickled `.npy`
    (only with ``allow_pickle``)."""
    npy = path.suffix == ".npy"
    if npy and not allow_pickle:
        raise SfcError("the label file is a pickled .npy: reading it can execute code stored in it, so the "
                       "kit reads it only when asked", path=path,
                       fix="if you trust the file, add --set data.allow_pickled_labels=true; or write the "
                           f"kit's {LABELS_JSON} with python -m sfc_core prepare voc")
    fix = (f"save a dict of image id -> float ({num_classes},) multi-hot vector with np.save" if npy else
           f"write {{\"<image id>\": [0-based class indices < {num_classes}]}} as JSON")
    try:
        raw = np.load(path, allow_pickle=True).item() if npy else json.loads(path.read_text())
    except (OSError, ValueError, AttributeError) as e:
        raise SfcError(f"cannot read the label file: {e}", path=path, fix=fix) from None
    if not isinstance(raw, dict):
        raise SfcError("label file is not a dict of image id -> label", path=path, fix=fix)
    labels = {}
    for image_id, value in raw.items():
        if npy:
            label = np.asarray(value, dtype=np.float32).reshape(-1)
            if label.shape != (num_classes,):
                raise SfcError(f"label of {image_id} has {label.size} entries but the dataset has "
                               f"{num_classes} classes", path=path, fix=fix)
        else:
            try:
                indices = np.asarray(value, dtype=np.int64).reshape(-1)
            except (TypeError, ValueError):
                raise SfcError(f"label of {image_id} is {value!r}, not a list of class indices",
                               path=path, fix=fix) from None
            wrong = indices[(indices < 0) | (indices >= num_classes)]
            if wrong.size:
                raise SfcError(f"label of {image_id} names class index {wrong[0]} but the dataset "
                               f"has {num_classes} classes (0..{num_classes - 1})", path=path, fix=fix)
            label = np.zeros(num_classes, dtype=np.float32)
            label[indices] = 1
        labels[str(image_id)] = label
    return labels


def _open_image(path: Path, what: str, decode: bool = True) -> Image.Image:
    """PIL open (decoded with `decode`); a missing or undecodable file is an SfcError naming it."""
    if not os.path.exists(path):
        raise SfcError(f"{what} file is missing", path=path,
                       fix="re-extract the dataset or remove the id from its list")
    try:
        image = Image.open(path)
        if decode:
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise SfcError(f"cannot read {what}: {e}", path=path,
                       fix="the file is corrupt or truncated: re-extract the dataset") from None
    return image


class TrainDataset(Dataset):
    """Training view of a list with the reference's augmentation (docs/reference.md 1.3).
    Keyed by `(epoch, index)`: an item is a pure function of (seed, epoch, index): `name`, `image`
    uint8 (3, S, S), `box` int64 [y0, y1, x0, x1], `label` float32 (C,)."""

    def __init__(self, dataset: SegmentationDataset, list_name: str, crop_size: int = 512,
                 resize_long: tuple[int, int] = (320, 640), flip: bool = True, seed: int = 0):
        self.dataset = dataset
        self.ids = dataset.ids(list_name)
        self.labels = dataset.labels(list_name)
        self.crop_size = crop_size
        self.resize_long = resize_long
        self.flip = flip
        self.seed = seed

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        rng = np.random.default_rng([self.seed, epoch, index])
        image = self.dataset.read_image(self.ids[index])
        scale = long_side_scale(image.shape[:2], self.resize_long, rng)
        image, _, box = augment(image, None, rng, self.crop_size, scale, self.flip, normalise=False)
        return {"name": self.ids[index],
                "image": torch.from_numpy(image.transpose(2, 0, 1).copy()),
                "box": torch.from_numpy(box),
                "label": torch.from_numpy(self.labels[index])}


class MultiScaleDataset(Dataset):
    """Inference view of a list (1.4). Item: `name`, `size` (H, W), `label` (C,), `images` one
    uint8 tensor per scale (bicubic), with `masks` the `mask` uint8 (H, W); normalised on the device."""

    def __init__(self, dataset: SegmentationDataset, list_name: str,
                 scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0), masks: bool = False):
        self.dataset = dataset
        self.ids = dataset.ids(list_name)
        self.labels = dataset.labels(list_name)
        self.scales = scales
        self.masks = masks

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        image = self.dataset.read_image(self.ids[index])
        images = [torch.from_numpy(rescale(image, scale).transpose(2, 0, 1).copy()) for scale in self.scales]
        item = {"name": self.ids[index],
                "size": torch.tensor(image.shape[:2], dtype=torch.int64),
                "label": torch.from_numpy(self.labels[index]),
                "images": images}
        if self.masks:
            item["mask"] = torch.from_numpy(np.array(self.dataset.read_mask(self.ids[index])))   # a writable copy
        return item


def _only_item(batch: list[dict]) -> dict:
    return batch[0]


def item_loader(views: Dataset, num_workers: int, pin_memory: bool,
                generator: torch.Generator | None = None) -> DataLoader:
    """The items of ``views`` uncollated, in ``num_workers`` processes seeded by ``generator``."""
    return DataLoader(views, batch_size=1, collate_fn=_only_item, num_workers=num_workers if len(views) else 0,
                      pin_memory=pin_memory, generator=generator, worker_init_fn=quiet_worker)


def same_size_batches(items: Iterable[dict], batch_size: int) -> Iterator[list[dict]]:
    """Consecutive MultiScaleDataset items of one ``size``, up to ``batch_size`` a list."""
    batch: list[dict] = []
    for item in items:
        if batch and (len(batch) == batch_size or not torch.equal(item["size"], batch[0]["size"])):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch
