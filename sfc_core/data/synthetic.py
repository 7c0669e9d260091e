"""A synthetic long-tailed weakly-supervised segmentation dataset, written in the VOC layout.

Objects have a large part every class of a group shares (a head class and rarer ones) and a
small part of their own: a classifier on image labels learns the shared part as the head's cue,
the problem SFC addresses. The control (``shared_parts=False``) gives every class its own large
part. docs/synthetic.md explains the design.

    path = generate("data/synthetic", size="default", seed=0)   # JPEGImages/, SegmentationClass/,
    # SegmentationPart/ (1 large, 2 own part), lists, class_names.txt, cls_labels.json, COMPLETE.json
"""
from __future__ import annotations

import io
import json
import math
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from sfc_core.errors import SfcError
from sfc_core.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temporaries,
    temporary_sibling,
)
from sfc_core.masks import voc_palette

GENERATOR_VERSION = 2
MARKER = "COMPLETE.json"


# -- sizes -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SizeSpec:
    image_size: int      # square images, pixels
    num_train: int       # train_aug.txt (the "trainaug" role)
    num_eval: int        # train.txt: a class-stratified subset of train_aug ("VOC train")
    num_heldout: int     # val.txt: images not in train_aug, with masks ("VOC val")
    min_primary: int     # every class leads at least this many training images (val: pro rata)


SIZES: dict[str, SizeSpec] = {
    "smoke": SizeSpec(image_size=64, num_train=80, num_eval=30, num_heldout=24, min_primary=4),
    "default": SizeSpec(image_size=96, num_train=2000, num_eval=800, num_heldout=500, min_primary=20),
    "large": SizeSpec(image_size=512, num_train=800, num_eval=200, num_heldout=200, min_primary=10),
}


# -- what an image is made of (the same for every size) ---------------------------------------
@dataclass(frozen=True)
class Design:
    alone_prob: float = 0.10            # share of a non-head class's images without its head
    extra_object_prob: float = 0.2      # a head-and-non-head pair gets a third object (a head)
    head_extra_probs: tuple[float, float] = (0.35, 0.10)  # a head image gets 1 / 2 more heads
    own_part_missing_prob: float = 0.4  # the shared part is then the only cue
    large_radius: tuple[float, float] = (0.105, 0.135)   # large part radius / image size
    own_radius_ratio: tuple[float, float] = (1.5, 1.7)    # large radius / own radius
    brightness: tuple[float, float] = (0.85, 1.1)         # per-object brightness jitter
    clutter_count: tuple[int, int] = (3, 6)               # background blobs per image
    clutter_radius: tuple[float, float] = (0.035, 0.09)   # / image size
    noise_sigma: float = 6.0
    jpeg_quality: int = 92


DESIGN = Design()


@dataclass(frozen=True)
class PartStyle:
    shape: str
    texture: str
    colour: tuple[int, int, int]
    pattern_colour: tuple[int, int, int]
    frequency: float = 2.5              # texture periods per part radius


def _own_style(shape: str, texture: str, colour: tuple[int, int, int]) -> PartStyle:
    """Own parts: mid-saturation colour, low-contrast texture (less salient than shared)."""
    return PartStyle(shape, texture, colour, tuple(int(c * 0.72) for c in colour))


BLACK, WHITE = (15, 15, 15), (240, 240, 240)

# Groups: (head, members...). The head is the group's most frequent class.
GROUPS: tuple[tuple[str, ...], ...] = (
    ("head0", "tail0a", "tail0b", "tail0c"),
    ("head1", "tail1a", "tail1b"),
    ("head2", "tail2a", "tail2b"),
)
CLASS_NAMES: tuple[str, ...] = tuple(name for group in GROUPS for name in group)

# Large parts. Main set: one high-contrast style per group, shared by its classes.
SHARED_STYLES: tuple[PartStyle, ...] = (
    PartStyle("disc", "stripes", (225, 35, 35), BLACK),
    PartStyle("square", "checker", (35, 85, 235), WHITE),
    PartStyle("hexagon", "rings", (245, 205, 20), BLACK),
)
# Control set: heads keep their group's style; every other class keeps the group's shape (so
# the masks are identical to the main set's) but gets a texture and colours of its own.
CONTROL_STYLES: tuple[tuple[str, tuple[int, int, int], tuple[int, int, int]], ...] = (
    ("checker", (30, 185, 70), BLACK),      # group 0 (discs)
    ("dots", (25, 200, 215), BLACK),
    ("rings", (250, 125, 15), BLACK),
    ("stripes", (215, 40, 200), WHITE),     # group 1 (squares)
    ("dots", (125, 50, 215), WHITE),
    ("stripes", (165, 225, 40), BLACK),     # group 2 (hexagons)
    ("dots", (235, 235, 235), (200, 30, 90)),
)
# Own parts, in CLASS_NAMES order.
OWN_STYLES: tuple[PartStyle, ...] = (
    _own_style("triangle", "solid", (60, 150, 140)),
    _own_style("diamond", "stripes", (150, 100, 60)),
    _own_style("ellipse", "dots", (130, 140, 50)),
    _own_style("cross", "solid", (150, 120, 190)),
    _own_style("star", "waves", (210, 120, 110)),
    _own_style("triangle", "checker", (55, 65, 140)),
    _own_style("diamond", "solid", (140, 40, 65)),
    _own_style("ellipse", "stripes", (110, 170, 220)),
    _own_style("cross", "dots", (110, 195, 140)),
    _own_style("star", "solid", (200, 170, 110)),
)
# Share of images each class leads (before its head and extra objects are added): long-tailed.
PRIMARY_SHARE: dict[str, float] = {
    "head0": 0.24, "tail0a": 0.12, "tail0b": 0.065, "tail0c": 0.03,
    "head1": 0.17, "tail1a": 0.09, "tail1b": 0.04,
    "head2": 0.12, "tail2a": 0.05, "tail2b": 0.025,
}
SHAPES = ("disc", "square", "hexagon", "triangle", "diamond", "ellipse", "cross", "star")
TEXTURES = ("solid", "stripes", "checker", "dots", "rings", "waves")
# Drawn only by the pretraining set (sfc_core/data/pretrain_set.py). Kept out of SHAPES and
# TEXTURES, which the clutter draws from, so the benchmark's images stay byte-identical.
EXTRA_SHAPES = ("pentagon", "ring", "crescent")
EXTRA_TEXTURES = ("grid", "diagonal")
POLYGONS = {"hexagon": (6, 0.88), "triangle": (3, 0.5), "pentagon": (5, 0.8)}   # sides, apothem


@dataclass(frozen=True)
class ClassInfo:
    index: int                  # 0-based foreground index (mask value index + 1)
    name: str
    group: int
    head: int                   # index of the group's head class
    large_style: PartStyle
    own_style: PartStyle


def class_table(shared_parts: bool = True) -> list[ClassInfo]:
    """Every class with its group, head and part styles (the control swaps the large parts)."""
    control_styles = iter(CONTROL_STYLES)
    table = []
    for g, group in enumerate(GROUPS):
        head = CLASS_NAMES.index(group[0])
        for name in group:
            k = CLASS_NAMES.index(name)
            large = SHARED_STYLES[g]
            if not shared_parts and k != head:
                texture, colour, pattern_colour = next(control_styles)
                large = replace(large, texture=texture, colour=colour, pattern_colour=pattern_colour)
            table.append(ClassInfo(k, name, g, head, large, OWN_STYLES[k]))
    return table


# -- drawing ---------------------------------------------------------------------------------
def _shape_inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of a unit-size shape at local coordinates ``(u, v)`` (radius 1)."""
    if shape == "disc":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "ellipse":
        return u * u + (v / 0.6) ** 2 <= 1.0
    if shape == "cross":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0) & ((np.abs(u) <= 0.33) | (np.abs(v) <= 0.33))
    if shape in POLYGONS:
        sides, apothem = POLYGONS[shape]
        angles = np.pi / 2 + 2 * np.pi * np.arange(sides) / sides
        return np.all([u * np.cos(a) + v * np.sin(a) <= apothem for a in angles], axis=0)
    if shape == "star":
        return np.hypot(u, v) <= 0.55 + 0.45 * np.cos(5 * np.arctan2(v, u))
    if shape == "ring":
        return (u * u + v * v <= 1.0) & (u * u + v * v >= 0.3)
    if shape == "crescent":
        return (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + v * v >= 0.55)
    raise ValueError(shape)


def _texture(texture: str, u: np.ndarray, v: np.ndarray, frequency: float) -> np.ndarray:
    """Boolean pattern (True = pattern colour) at local coordinates ``(u, v)``."""
    fu, fv = u * frequency, v * frequency
    if texture == "solid":
        return np.zeros(u.shape, dtype=bool)
    if texture == "stripes":
        return np.floor(fu) % 2 == 1
    if texture == "checker":
        return (np.floor(fu) + np.floor(fv)) % 2 == 1
    if texture == "dots":
        return (fu - np.floor(fu) - 0.5) ** 2 + (fv - np.floor(fv) - 0.5) ** 2 < 0.09
    if texture == "rings":
        return np.floor(np.hypot(fu, fv)) % 2 == 1
    if texture == "waves":
        return np.sin(np.pi * (fu + 0.4 * np.sin(np.pi * fv))) > 0
    if texture == "grid":
        return ((fu - np.floor(fu)) < 0.3) | ((fv - np.floor(fv)) < 0.3)
    if texture == "diagonal":
        return np.floor(fu + fv) % 2 == 1
    raise ValueError(texture)


def draw_part(image: np.ndarray, style: PartStyle, centre: tuple[float, float], radius: float,
              angle: float, brightness: float = 1.0) -> tuple[tuple[slice, slice], np.ndarray]:
    """Paint one part into ``image`` (H, W, 3) float32 in place; returns its box slices and mask."""
    height, width = image.shape[:2]
    cy, cx = centre
    reach = radius * 1.1
    y0, y1 = max(0, int(cy - reach)), min(height, int(math.ceil(cy + reach)) + 1)
    x0, x1 = max(0, int(cx - reach)), min(width, int(math.ceil(cx + reach)) + 1)
    box = (slice(y0, max(y0, y1)), slice(x0, max(x0, x1)))
    dy = (np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None] + 0.5 - cy) / radius
    dx = (np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :] + 0.5 - cx) / radius
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = dx * cos + dy * sin, dy * cos - dx * sin
    inside = _shape_inside(style.shape, u, v)
    pattern = _texture(style.texture, u, v, style.frequency)
    colour = np.where(pattern[..., None], np.float32(style.pattern_colour), np.float32(style.colour))
    region = image[box]
    region[inside] = np.clip(colour[inside] * brightness, 0, 255)
    return box, inside


@dataclass(frozen=True)
class PlacedObject:
    cls: int                     # 0-based class index
    centre: tuple[float, float]  # (y, x) of the large part
    radius: float                # large part radius
    angle: float                 # rotation of the large part
    own_radius: float
    own_direction: float         # where the own part sits, seen from the large part's centre
    own_present: bool
    brightness: float


def _make_object(rng: np.random.Generator, cls: int, centre: tuple[float, float], radius: float,
                 away: float | None) -> PlacedObject:
    """An object of class ``cls``; its own part points roughly along ``away`` when given."""
    d = DESIGN
    direction = rng.uniform(0, 2 * np.pi) if away is None else away + rng.uniform(-1.2, 1.2)
    return PlacedObject(
        cls=cls, centre=centre, radius=radius, angle=float(rng.uniform(0, 2 * np.pi)),
        own_radius=radius / rng.uniform(*d.own_radius_ratio), own_direction=float(direction),
        own_present=bool(rng.random() >= d.own_part_missing_prob),
        brightness=float(rng.uniform(*d.brightness)))


def _random_centre(rng: np.random.Generator, reach: float, size: int) -> tuple[float, float]:
    low, high = reach * 0.8, size - reach * 0.8
    return float(rng.uniform(low, high)), float(rng.uniform(low, high))


def layout(rng: np.random.Generator, primary: int, alone: bool, classes: list[ClassInfo],
           size: int) -> list[PlacedObject]:
    """Objects of one image: the primary class, its head touching it (unless alone), extras."""
    d = DESIGN
    heads = sorted({c.head for c in classes})
    head_weights = np.array([PRIMARY_SHARE[CLASS_NAMES[h]] for h in heads])
    head_weights /= head_weights.sum()

    def radius() -> float:
        return float(rng.uniform(*d.large_radius) * size)

    objects: list[PlacedObject] = []
    head = classes[primary].head
    if primary != head and not alone:
        # Head and non-head side by side, large parts touching, own parts facing away.
        r_head, r_other = radius(), radius()
        axis = rng.uniform(0, 2 * np.pi)
        span = 0.95 * (r_head + r_other)
        reach = span / 2 + 2 * max(r_head, r_other)
        mid = _random_centre(rng, reach, size)
        offset = (math.sin(axis) * span / 2, math.cos(axis) * span / 2)
        head_centre = (mid[0] - offset[0], mid[1] - offset[1])
        other_centre = (mid[0] + offset[0], mid[1] + offset[1])
        pair = [_make_object(rng, head, head_centre, r_head, axis + np.pi),
                _make_object(rng, primary, other_centre, r_other, axis)]
        objects += pair if rng.random() < 0.5 else pair[::-1]
        extra = int(rng.random() < d.extra_object_prob)
    else:
        r = radius()
        objects.append(_make_object(rng, primary, _random_centre(rng, 2 * r, size), r, None))
        extra = 0
        if primary == head:
            u = rng.random()
            extra = 1 if u < d.head_extra_probs[0] else 2 if u < sum(d.head_extra_probs) else 0
    for _ in range(extra):
        cls = int(rng.choice(heads, p=head_weights))
        r = radius()
        centre = _random_centre(rng, 2 * r, size)
        for _attempt in range(20):   # prefer a free spot; overlap (occlusion) is allowed
            if all(math.dist(centre, o.centre) > 1.6 * (r + o.radius) for o in objects):
                break
            centre = _random_centre(rng, 2 * r, size)
        objects.append(_make_object(rng, cls, centre, r, None))
    return objects


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation colour: clutter and background never match a part's colour."""
    grey = rng.uniform(60, 190)
    tint = rng.uniform(-1, 1, size=3) * rng.uniform(8, 30)
    return np.clip(grey + tint, 0, 255).astype(np.float32)


def render_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """float32 (S, S, 3): a gradient between two muted colours and low-contrast clutter blobs."""
    d = DESIGN
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (grid[:, None] * math.sin(theta) + grid[None, :] * math.cos(theta))
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    start, end = _muted_colour(rng), _muted_colour(rng)
    image = start + (end - start) * ramp[..., None]
    for _ in range(int(rng.integers(d.clutter_count[0], d.clutter_count[1] + 1))):
        colour = _muted_colour(rng)
        style = PartStyle(str(rng.choice(SHAPES)), str(rng.choice(TEXTURES)),
                          tuple(int(c) for c in colour), tuple(int(c * 0.85) for c in colour),
                          frequency=float(rng.uniform(1.5, 3.5)))
        r = float(rng.uniform(*d.clutter_radius) * size)
        centre = (float(rng.uniform(0, size)), float(rng.uniform(0, size)))
        draw_part(image, style, centre, r, float(rng.uniform(0, 2 * np.pi)))
    return image


def add_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """float32 (S, S, 3) -> uint8: Gaussian pixel noise (``DESIGN.noise_sigma``), clipped."""
    image = image + rng.normal(0, DESIGN.noise_sigma, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def render(rng: np.random.Generator, objects: list[PlacedObject], classes: list[ClassInfo],
           size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw background, clutter and objects: image uint8 (S, S, 3), class mask and part mask (S, S)."""
    image = render_background(rng, size)
    class_mask = np.zeros((size, size), np.uint8)
    part_mask = np.zeros((size, size), np.uint8)
    for obj in objects:
        info = classes[obj.cls]
        parts = [(1, info.large_style, obj.centre, obj.radius)]
        if obj.own_present:
            distance = obj.radius + 0.5 * obj.own_radius
            parts.append((2, info.own_style, (obj.centre[0] + math.sin(obj.own_direction) * distance,
                                              obj.centre[1] + math.cos(obj.own_direction) * distance),
                          obj.own_radius))
        for value, style, centre, radius in parts:
            box, inside = draw_part(image, style, centre, radius, obj.angle, obj.brightness)
            class_mask[box][inside] = obj.cls + 1
            part_mask[box][inside] = value
    return add_noise(rng, image), class_mask, part_mask


# -- the dataset -----------------------------------------------------------------------------
def primary_quota(num_images: int, min_primary: int) -> np.ndarray:
    """(C,) number of images each class leads: PRIMARY_SHARE, at least ``min_primary``."""
    share = np.array([PRIMARY_SHARE[name] for name in CLASS_NAMES])
    share /= share.sum()
    quota = np.maximum(np.floor(share * num_images).astype(int), min_primary)
    quota[int(np.argmax(share))] += num_images - int(quota.sum())
    if quota.min() < min_primary:
        raise SfcError(f"{num_images} images cannot give every class {min_primary}",
                       fix="ask for more images")
    return quota


def stratified_subset(labels: list[list[int]], count: int, class_counts: np.ndarray,
                      rng: np.random.Generator) -> list[int]:
    """Indices of ``count`` images whose per-class counts follow the set's (largest remainders)."""
    strata: dict[int, list[int]] = {}
    for i, classes in enumerate(labels):
        strata.setdefault(min(classes, key=lambda k: class_counts[k]), []).append(i)
    keys = sorted(strata)
    exact = np.array([len(strata[k]) * count / len(labels) for k in keys])
    take = np.floor(exact).astype(int)
    for j in np.argsort(-(exact - take), kind="stable")[: count - int(take.sum())]:
        take[j] += 1
    chosen = [i for k, n in zip(keys, take) for i in rng.permutation(strata[k])[:n]]
    return sorted(int(i) for i in chosen)


def _encode(image: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, **options)
    return buf.getvalue()


def _encode_palette_png(mask: np.ndarray, palette: list[int]) -> bytes:
    png = Image.fromarray(mask, mode="P")
    png.putpalette(palette)
    return _encode(png, format="PNG")


def dataset_name(size: str, seed: int, shared_parts: bool, num_images: int | None = None) -> str:
    count = "" if num_images is None else f"-n{num_images}"
    return f"{size}{count}-seed{seed}" + ("" if shared_parts else "-control")


def _spec(size: str, num_images: int | None) -> SizeSpec:
    if size not in SIZES:
        raise SfcError(f"unknown synthetic size {size!r}", fix=f"use one of: {', '.join(SIZES)}")
    spec = SIZES[size]
    if num_images is None:
        return spec
    if num_images < 10 * len(CLASS_NAMES):
        raise SfcError(f"num_images={num_images} is too few for {len(CLASS_NAMES)} classes",
                       fix=f"ask for at least {10 * len(CLASS_NAMES)} images")
    scale = num_images / spec.num_train
    return SizeSpec(spec.image_size, num_images, max(1, round(spec.num_eval * scale)),
                    max(1, round(spec.num_heldout * scale)),
                    min(spec.min_primary, num_images // (2 * len(CLASS_NAMES))))


def _is_complete(path: Path, parameters: dict) -> bool:
    try:
        return json.loads((path / MARKER).read_text()) == json.loads(json.dumps(parameters))
    except (OSError, ValueError):
        return False


def _parameters(size: str, seed: int, shared_parts: bool, num_images: int | None) -> dict:
    """What a generated dataset is made from (its ``COMPLETE.json``)."""
    return {"version": GENERATOR_VERSION, "size": size, "seed": seed, "shared_parts": shared_parts,
            **asdict(_spec(size, num_images)), "design": asdict(DESIGN)}


def generated(root: str | Path, size: str = "default", seed: int = 0, shared_parts: bool = True,
              num_images: int | None = None) -> Path | None:
    """The complete dataset ``generate`` with these arguments made under ``root``, else None."""
    path = Path(root) / dataset_name(size, seed, shared_parts, num_images)
    return path if _is_complete(path, _parameters(size, seed, shared_parts, num_images)) else None


def check_settings(path: Path, settings: dict) -> None:
    """Refuse a generated dataset folder made with other ``settings`` (size, seed, shared_parts)."""
    try:
        made = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return                                   # not made by the generator: read as it is
    differ = [key for key, value in settings.items() if made.get(key) != value]
    if differ:
        raise SfcError(f"the synthetic dataset was generated with {', '.join(f'{k}={made.get(k)}' for k in differ)}; "
                       f"the configuration asks for {', '.join(f'{k}={settings[k]}' for k in differ)}", path=path / MARKER,
                       fix=f"pass the folder that holds the datasets (--data-root {path.parent}), or set "
                           "data.synthetic_size / synthetic_seed / shared_parts to the dataset's")


def generate(root: str | Path, size: str = "default", seed: int = 0, shared_parts: bool = True,
             force: bool = False, num_images: int | None = None) -> Path:
    """Write (or reuse) a synthetic dataset; returns ``Path(root) / dataset_name(...)``. Made in a
    sibling folder renamed at the end; byte-identical for the same arguments."""
    parameters = _parameters(size, seed, shared_parts, num_images)
    path = Path(root) / dataset_name(size, seed, shared_parts, num_images)
    if not force and _is_complete(path, parameters):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)        # what a killed generation left behind
    work = temporary_sibling(path)
    work.mkdir()                                 # mode from the umask, as the dataset's files
    try:
        _write_dataset(work, _spec(size, num_images), seed, shared_parts, parameters, progress=size != "smoke")
        if path.exists():
            if not force and _is_complete(path, parameters):   # another process finished first
                shutil.rmtree(work)
                return path
            shutil.rmtree(path)
        os.replace(work, path)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return path


SPLITS = ("train_aug", "val")   # generated splits; train.txt is drawn from train_aug


def split_layouts(spec: SizeSpec, seed: int, split: str, classes: list[ClassInfo]):
    """Yield ``(rng, objects)`` per image of a split; ``rng`` is the image's own, past its layout."""
    split_index = SPLITS.index(split)
    count = spec.num_train if split == "train_aug" else spec.num_heldout
    min_primary = math.ceil(spec.min_primary * count / spec.num_train)
    primaries = np.random.default_rng([seed, split_index]).permutation(
        np.repeat(np.arange(len(classes)), primary_quota(count, min_primary)))
    # Exactly round(alone_prob * n) of a class's n images show it alone (its first ones).
    rank = np.zeros(len(primaries), dtype=int)
    for k in range(len(classes)):
        rank[primaries == k] = np.arange((primaries == k).sum())
    alone_quota = np.round(DESIGN.alone_prob * np.bincount(primaries, minlength=len(classes)))
    for i, primary in enumerate(primaries):
        rng = np.random.default_rng([seed, split_index, i, 1])
        alone = bool(rank[i] < alone_quota[primary])
        yield rng, layout(rng, int(primary), alone, classes, spec.image_size)


def _write_dataset(out: Path, spec: SizeSpec, seed: int, shared_parts: bool, parameters: dict,
                   progress: bool) -> None:
    classes = class_table(shared_parts)
    palette = voc_palette()
    labels: dict[str, list[int]] = {}
    ids: dict[str, list[str]] = {}
    bar = tqdm(total=spec.num_train + spec.num_heldout, desc="synthetic images", disable=not progress)
    for split in SPLITS:
        ids[split] = []
        for rng, objects in split_layouts(spec, seed, split, classes):
            image_id = f"s{len(labels):06d}"
            image, class_mask, part_mask = render(rng, objects, classes, spec.image_size)
            labels[image_id] = sorted(int(k) - 1 for k in np.unique(class_mask) if k != 0)
            ids[split].append(image_id)
            atomic_write_bytes(out / "JPEGImages" / f"{image_id}.jpg", _encode(
                Image.fromarray(image), format="JPEG", quality=DESIGN.jpeg_quality, subsampling=0))
            atomic_write_bytes(out / "SegmentationClass" / f"{image_id}.png",
                               _encode_palette_png(class_mask, palette))
            atomic_write_bytes(out / "SegmentationPart" / f"{image_id}.png",
                               _encode_palette_png(part_mask, palette))
            bar.update()
    bar.close()

    train_labels = [labels[i] for i in ids["train_aug"]]
    class_counts = np.bincount([k for ks in train_labels for k in ks], minlength=len(classes))
    eval_rng = np.random.default_rng([seed, 2])
    ids["train"] = [ids["train_aug"][i]
                    for i in stratified_subset(train_labels, spec.num_eval, class_counts, eval_rng)]

    lists = out / "ImageSets" / "Segmentation"
    for split in ("train_aug", "train", "val"):
        atomic_write_text(lists / f"{split}.txt", "".join(f"{i}\n" for i in ids[split]))
    atomic_write_text(out / "class_names.txt", "".join(f"{c.name}\n" for c in classes))
    atomic_write_json(out / "cls_labels.json", labels)
    atomic_write_json(out / "groups.json", {
        "classes": [{"index": c.index, "name": c.name, "group": c.group,
                     "head": classes[c.head].name, "large_part": asdict(c.large_style),
                     "own_part": asdict(c.own_style)} for c in classes],
        "groups": [{"head": group[0], "members": list(group),
                    "shared_part": asdict(SHARED_STYLES[g]) if shared_parts else None}
                   for g, group in enumerate(GROUPS)],
        "part_values": {"0": "none", "1": "large part (shared within a group; "
                        "class-specific in the control set)", "2": "own part"},
        "parameters": parameters,
    })
    atomic_write_json(out / MARKER, parameters)


def class_counts(root: str | Path) -> dict[str, dict[str, int]]:
    """``{list name: {class name: images containing it}}`` for a generated dataset."""
    root = Path(root)
    names = (root / "class_names.txt").read_text().split()
    labels = json.loads((root / "cls_labels.json").read_text())
    counts = {}
    for split in ("train_aug", "train", "val"):
        ids = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        tally = Counter(k for i in ids for k in labels[i])
        counts[split] = {name: tally[k] for k, name in enumerate(names)}
    return counts
