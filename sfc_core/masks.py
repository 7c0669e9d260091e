"""Label maps on disk and on screen: the ignore value, the VOC palette, palette-PNG reading and
writing (pseudo masks, relation labels, step-3 predictions) and the CAM overlay of figures and
TensorBoard.

A label map is uint8 (H, W): 0 background, 1..C the classes in label order, IGNORE (255)
for pixels no score counts (uncertain pseudo-mask pixels, padding, VOC's object borders).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from sfc_core.errors import SfcError
from sfc_core.io import atomic_save_png

IGNORE = 255


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (256 RGB triples, flattened), as in the VOC devkit."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def save_mask(path: Path, mask: np.ndarray) -> None:
    """A uint8 (H, W) label map as a palette PNG with the VOC colours (255 = uncertain)."""
    image = Image.fromarray(mask, mode="P")
    image.putpalette(voc_palette())
    atomic_save_png(path, image)


def read_pseudo_mask(path: Path) -> np.ndarray:
    """uint8 (H, W) of a palette/grayscale pseudo-mask PNG (255 = uncertain)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise SfcError(f"pseudo mask has PIL mode {image.mode}, not a palette PNG", path=path,
                               fix="rerun the refine stage, which writes palette PNGs")
            return np.asarray(image)
    except (OSError, SyntaxError, ValueError) as e:
        raise SfcError(f"cannot read pseudo mask: {e}", path=path, fix="rerun the refine stage") from None


def cam_overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5, vmax: float = 1.0) -> np.ndarray:
    """A CAM (H, W) on [0, vmax] over an image (H, W, 3) uint8 with jet at ``alpha`` -> uint8."""
    from matplotlib import colormaps

    heat = colormaps["jet"](np.clip(np.asarray(cam, dtype=np.float32) / max(vmax, 1e-8), 0, 1))[..., :3]
    blend = (1 - alpha) * np.asarray(image, dtype=np.float32) / 255 + alpha * heat
    return np.round(255 * blend).astype(np.uint8)
