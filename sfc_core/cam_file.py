"""The CAM file format: one ``cams/<id>.npz`` per image, written by the `cams` stage and read by
every later stage, the analysis and the explorer.

    keys         int64 (K',)          0 then the image's classes (1-based)
    classifier   float16 (K', H, W)   max-normalised (PCM-refined) classifier CAM
    prototype    float16 (K', H, W)   max-normalised prototype CAM
    size         int64 (2,) = (H, W)
    num_classes  int64 () = C of the class list the run was trained on

No background rule is baked in (docs/reference_quirks.md, quirk 23): ``sfc_core.fusion``
applies it when the maps are read, so thresholds and lambda can be swept without the network.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sfc_core.errors import SfcError
from sfc_core.io import atomic_save_npz
from sfc_core.run_dir import RunDir

CAM_FIELDS = ("keys", "classifier", "prototype", "size", "num_classes")


@dataclass
class CamRecord:
    """One image's saved CAMs, as float32 arrays (rows follow `keys`)."""

    image_id: str
    keys: np.ndarray          # int64 (K',): 0 (background) then the image's classes, 1-based
    classifier: np.ndarray    # float32 (K', H, W), max-normalised PCM classifier CAM
    prototype: np.ndarray     # float32 (K', H, W), max-normalised prototype CAM
    num_classes: int          # C, the number of foreground classes of the run's class list

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.classifier.shape[1:])


def present_keys(label: np.ndarray) -> np.ndarray:
    """int64 (K',): 0 then the 1-based indices of the classes in a (C,) multi-hot label."""
    return np.concatenate([[0], np.flatnonzero(np.asarray(label) > 0.5) + 1]).astype(np.int64)


def save_cam(path: str | Path, keys: np.ndarray, classifier: np.ndarray, prototype: np.ndarray,
             num_classes: int) -> Path:
    """Write one CAM file; classifier and prototype are (K', H, W) with rows `keys`."""
    return atomic_save_npz(path, keys=keys.astype(np.int64),
                           classifier=classifier.astype(np.float16),
                           prototype=prototype.astype(np.float16),
                           size=np.array(classifier.shape[1:], dtype=np.int64),
                           num_classes=np.array(num_classes, dtype=np.int64))


def load_cam(run: str | Path | RunDir, image_id: str, num_classes: int | None = None) -> CamRecord:
    """Read `cams/<image_id>.npz`; with `num_classes`, check it was made for that class list."""
    run = RunDir(run)
    path = run.cam_file(image_id)
    command = f"python -m sfc_core cams --run {run.root}"
    remake = f"delete {path} and run: {command}"
    if not path.is_file():
        raise SfcError(f"no CAM file for image {image_id}", path=path, fix=f"run: {command}")
    try:
        with np.load(path) as f:
            arrays = {name: f[name] for name in CAM_FIELDS if name in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise SfcError(f"unreadable CAM file ({e})", path=path, fix=remake) from None
    missing = [name for name in CAM_FIELDS if name not in arrays]
    if missing:
        raise SfcError(f"CAM file lacks {', '.join(missing)} (not written by this kit's cams stage)",
                       path=path, fix=remake)
    keys, file_classes = arrays["keys"].astype(np.int64), int(arrays["num_classes"])
    record = CamRecord(image_id, keys, arrays["classifier"].astype(np.float32),
                       arrays["prototype"].astype(np.float32), file_classes)
    if num_classes is not None and file_classes != num_classes:
        raise SfcError(f"CAM file was made for {file_classes} classes, the run has {num_classes}",
                       path=path, fix=f"the CAMs come from another class list: delete {run.cams} "
                                      f"and run: {command}")
    shape = (len(keys), *arrays["size"].tolist())
    if (record.classifier.shape != shape or record.prototype.shape != shape or keys[:1].tolist() != [0]
            or np.any(np.diff(keys) <= 0) or keys[-1] > file_classes):
        raise SfcError(f"CAM file is inconsistent (keys {keys.tolist()}, maps "
                       f"{record.classifier.shape} / {record.prototype.shape}, size {shape[1:]})",
                       path=path, fix=remake)
    return record
