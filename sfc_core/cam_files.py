"""The CAM files (``cams/<id>.npz``, written by the `cams` stage) and the CAM kinds read from them.

    keys         int64 (K',)          0 then the image's classes (1-based)
    classifier   float16 (K', H, W)   max-normalised (PCM-refined) classifier CAM
    prototype    float16 (K', H, W)   max-normalised prototype CAM
    size         int64 (2,) = (H, W);  num_classes  int64 () = C of the run's class list

``CAM_KINDS`` is the one registry of kinds (stored and derived, ``register_kind``); every later
stage iterates it. No background rule is baked in (quirk 23): ``method.fusion`` applies it.
"""
from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sfc_core.errors import SfcError
from sfc_core.io import atomic_save_npz
from sfc_core.method.fusion import fuse, label_rows
from sfc_core.run_dir import RunDir

STORED_MAPS = ("classifier", "prototype")     # the network's maps, in file order
CAM_FIELDS = ("keys", *STORED_MAPS, "size", "num_classes")


@dataclass(frozen=True)
class CamKind:
    """A CAM kind: ``make(maps)`` (``make(maps, lam)`` when ``swept``) -> its (K', ...) map."""

    make: Callable[..., np.ndarray]
    swept: bool = False


CAM_KINDS: dict[str, CamKind] = {name: CamKind(lambda maps, name=name: maps[name]) for name in STORED_MAPS}


def register_kind(name: str, make: Callable[..., np.ndarray], swept: bool = False) -> None:
    """Add a CAM kind (after the ones there): eval-cams scores it, the explorer shows it."""
    CAM_KINDS[name] = CamKind(make, swept)


register_kind("fused", lambda maps, lam: fuse(maps["classifier"], maps["prototype"], lam), swept=True)


@dataclass
class CamRecord:
    """One image's CAMs: ``maps`` {name: float32 (K', H, W)} over ``keys`` (K',); C = num_classes."""

    image_id: str
    keys: np.ndarray
    maps: dict[str, np.ndarray]
    num_classes: int

    @property
    def size(self) -> tuple[int, int]:
        return tuple(next(iter(self.maps.values())).shape[1:])


def kind_cam(record: CamRecord, kind: str, lam: float = 0.0) -> np.ndarray:
    """The (K', ...) map of one registered kind of a record (``lam`` for swept kinds)."""
    if kind not in CAM_KINDS:
        raise SfcError(f"unknown CAM kind {kind!r}", fix=f"use one of: {', '.join(CAM_KINDS)}")
    spec = CAM_KINDS[kind]
    return spec.make(record.maps, lam) if spec.swept else spec.make(record.maps)


def predict_mask(record: CamRecord, kind: str, lam: float, background: str,
                 threshold: float | None = None) -> np.ndarray:
    """uint8 (H, W) class indices 0..C of one CAM record under a background rule."""
    rows = label_rows(kind_cam(record, kind, lam), background, threshold)
    return record.keys[rows].astype(np.uint8)


def present_keys(label: np.ndarray) -> np.ndarray:
    """int64 (K',): 0 then the 1-based indices of the classes in a (C,) multi-hot label."""
    return np.concatenate([[0], np.flatnonzero(np.asarray(label) > 0.5) + 1]).astype(np.int64)


def save_cam(path: str | Path, keys: np.ndarray, maps: dict[str, np.ndarray], num_classes: int) -> Path:
    """Write one CAM file; ``maps``: {name: (K', H, W)} with rows ``keys``, STORED_MAPS first."""
    size = next(iter(maps.values())).shape[1:]
    return atomic_save_npz(path, keys=keys.astype(np.int64),
                           **{name: m.astype(np.float16) for name, m in maps.items()},
                           size=np.array(size, dtype=np.int64), num_classes=np.array(num_classes, dtype=np.int64))


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
            arrays = {name: f[name] for name in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise SfcError(f"unreadable CAM file ({e})", path=path, fix=remake) from None
    missing = [name for name in CAM_FIELDS if name not in arrays]
    if missing:
        raise SfcError(f"CAM file lacks {', '.join(missing)} (not written by this kit's cams stage)",
                       path=path, fix=remake)
    keys, file_classes = arrays.pop("keys").astype(np.int64), int(arrays.pop("num_classes"))
    shape = (len(keys), *arrays.pop("size").tolist())
    record = CamRecord(image_id, keys, {name: m.astype(np.float32) for name, m in arrays.items()}, file_classes)
    if num_classes is not None and file_classes != num_classes:
        raise SfcError(f"CAM file was made for {file_classes} classes, the run has {num_classes}",
                       path=path, fix=f"the CAMs come from another class list: delete {run.cams} "
                                      f"and run: {command}")
    shapes = {name: m.shape for name, m in record.maps.items()}
    if (any(s != shape for s in shapes.values()) or keys[:1].tolist() != [0]
            or np.any(np.diff(keys) <= 0) or keys[-1] > file_classes):
        raise SfcError(f"CAM file is inconsistent (keys {keys.tolist()}, maps {shapes}, size {shape[1:]})",
                       path=path, fix=remake)
    return record
