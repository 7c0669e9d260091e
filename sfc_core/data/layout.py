"""The layout ``prepare voc`` and ``prepare coco`` write: class masks (staged in a hidden folder
until all are written), image links, lists, the labels file and the manifest (written last)."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from sfc_core.data.dataset import LABELS_JSON
from sfc_core.errors import SfcError
from sfc_core.io import atomic_write_json, atomic_write_text
from sfc_core.masks import IGNORE, save_mask

MANIFEST = "prepare_manifest.json"


def keep_or_write(image_id: str, out_path: str, make: Callable[[], tuple[np.ndarray, str]]) -> tuple[str, list[int], str]:
    """(id, classes, source) of one class mask: the file already written, else ``make()``'s."""
    if os.path.exists(out_path):
        return image_id, present_classes(read_index_png(out_path)), "kept"
    mask, source = make()
    save_mask(Path(out_path), mask)
    return image_id, present_classes(mask), source


def present_classes(mask: np.ndarray) -> list[int]:
    """0-based foreground classes of a (H, W) mask (0 background and 255 ignore left out)."""
    values = np.unique(mask)
    return [int(v) - 1 for v in values if 0 < v < IGNORE]


def read_index_png(path: str | Path) -> np.ndarray:
    """uint8 (H, W) indices of a palette or grayscale PNG."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise ValueError(f"PIL mode {image.mode}, not a palette or grayscale PNG")
            return np.asarray(image)
    except (OSError, ValueError, SyntaxError) as e:
        raise SfcError(f"cannot read the mask ({e})", path=path,
                       fix="re-extract the download (the file is corrupt)") from None


def staging_path(final: Path) -> Path:
    """``final`` once complete, else a hidden sibling (resumable) that ``commit_folder`` renames."""
    return final if final.is_dir() else final.with_name(f".{final.name}.partial")


def commit_folder(work: Path, final: Path) -> None:
    if work != final:
        os.replace(work, final)


def link_images(out: Path, images: Path, name: str = "JPEGImages") -> None:
    """``out``/name -> ``images`` (nothing when ``out`` already has that folder)."""
    target = out / name
    if target.exists() or target.is_symlink():
        if target.resolve() != images.resolve():
            raise SfcError(f"{target} exists and is not the downloaded images folder", path=target,
                           fix="choose a fresh --out, or remove that folder")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(images.resolve(), target_is_directory=True)


def write_layout(out: Path, list_dir: str, lists: dict[str, list[str]], results: list[tuple[str, list[int], str]],
                 class_names: tuple[str, ...], expected: dict[str, int], inputs: dict,
                 notes: list[str] | None = None) -> dict:
    """Lists, the label file and the manifest (last); prints the summary. Returns the manifest."""
    from sfc_core import __version__

    labels = {image_id: classes for image_id, classes, _ in results}
    for name, ids in lists.items():
        atomic_write_text(out / list_dir / f"{name}.txt", "".join(f"{i}\n" for i in ids))
    atomic_write_json(out / LABELS_JSON, {i: labels[i] for i in sorted(labels)})
    counts = {name: len(ids) for name, ids in lists.items()}
    tallies = {name: Counter(k for i in ids for k in labels[i]) for name, ids in lists.items()}
    manifest = {
        "kit_version": __version__, "inputs": inputs,
        "mask_sources": dict(Counter(source for _, _, source in results)),
        "counts": counts, "expected": expected,
        "class_counts": {name: {c: tally[k] for k, c in enumerate(class_names)}
                         for name, tally in tallies.items()},
        "differences": [f"{name}: {counts.get(name, 0):,} images, the official downloads give {n:,} "
                        f"({counts.get(name, 0) - n:+,})"
                        for name, n in expected.items() if counts.get(name, 0) != n],
        "notes": notes or [],
    }
    atomic_write_json(out / MANIFEST, manifest)
    print(summary(manifest, out))
    return manifest


def summary(manifest: dict, out: Path) -> str:
    lines = [f"prepared {out}"]
    for name, count in manifest["counts"].items():
        want = manifest["expected"].get(name)
        note = "" if want is None else " (as the official downloads)" if count == want else f" (official: {want:,})"
        lines.append(f"  {name:<10} {count:>7,} images{note}")
    lines.append("  masks: " + ", ".join(f"{n:,} {source}" for source, n in sorted(manifest["mask_sources"].items())))
    lines += [f"  note: {extra}" for extra in manifest["notes"]]
    lines.append("  DIFFERS from the official downloads: " + "; ".join(manifest["differences"])
                 if manifest["differences"] else
                 "  every count matches the official downloads; train_aug and val do not overlap")
    lines.append(f"  manifest: {out / MANIFEST}")
    return "\n".join(lines)
