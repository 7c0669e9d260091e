"""A single-label pretraining set for the synthetic world: the benchmark's "ImageNet".

    images, labels = make_images(PretrainSpec(), "train")  # uint8 (N, 64, 64, 3), int64 (N,)

One object per image, drawn with ``synthetic``'s primitives; a class is a (shape, texture,
colour) triple. Disjoint from the benchmark (``check_disjoint``): no benchmark part's (shape,
texture) pair, no colour within ``MIN_COLOUR_DISTANCE`` of one, other random streams (``STREAM``).
Made in memory; the backbone trained on it is what is cached (``model/pretrained.py``).
"""
from __future__ import annotations

import colorsys
import itertools
import math
from dataclasses import dataclass, replace

import numpy as np

from sfc_core.data import synthetic
from sfc_core.data.synthetic import PartStyle
from sfc_core.errors import SfcError

STREAM = 9173           # first entry of every random key of this set (the benchmark's: its seed)
MIN_COLOUR_DISTANCE = 40.0      # RGB; above the +-15% brightness jitter of a saturated part
LEVELS = ((0.9, 0.95), (0.6, 0.8), (0.4, 0.55), (1.0, 0.6))   # HSV (saturation, value)
SPLITS = ("train", "val")   # val: held-out images of the same classes, for the accuracy


@dataclass(frozen=True)
class PretrainSpec:
    image_size: int = 64
    num_pairs: int = 40                  # (shape, texture) pairs, of the 68 the benchmark leaves
    colours_per_pair: int = 2            # classes = num_pairs x colours_per_pair
    train_per_class: int = 100
    val_per_class: int = 20
    radius: tuple[float, float] = (0.14, 0.32)   # object radius / image side (benchmark parts:
                                                 # 0.06-0.135, at crop scales 0.67-1.33)
    seed: int = 1000

    @property
    def num_classes(self) -> int:
        return self.num_pairs * self.colours_per_pair


@dataclass(frozen=True)
class PretrainClass:
    name: str
    style: PartStyle


def benchmark_styles() -> list[PartStyle]:
    """Every part style the benchmark draws: main and control sets, large and own parts."""
    return [style for shared in (True, False) for info in synthetic.class_table(shared)
            for style in (info.large_style, info.own_style)]


def palette() -> list[tuple[int, int, int]]:
    """Candidate class colours: 24 hues x 4 levels, minus those near a benchmark part's colour."""
    taken = np.array([s.colour for s in benchmark_styles()], np.float32)
    colours = []
    for hue, (saturation, value) in itertools.product(range(24), LEVELS):
        rgb = tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue / 24, saturation, value))
        if np.linalg.norm(taken - np.float32(rgb), axis=1).min() >= MIN_COLOUR_DISTANCE:
            colours.append(rgb)
    return colours


def class_definitions(spec: PretrainSpec) -> list[PretrainClass]:
    """The classes, drawn from the pairs and colours the benchmark does not use (seeded)."""
    used = {(s.shape, s.texture) for s in benchmark_styles()}
    pairs = [p for p in itertools.product(synthetic.SHAPES + synthetic.EXTRA_SHAPES,
                                          synthetic.TEXTURES + synthetic.EXTRA_TEXTURES) if p not in used]
    colours = palette()
    if spec.num_pairs > len(pairs) or spec.colours_per_pair > len(colours):
        raise SfcError(f"the pretraining set has {len(pairs)} free (shape, texture) pairs and "
                       f"{len(colours)} colours; {spec.num_pairs} x {spec.colours_per_pair} asked",
                       fix=f"ask for at most {len(pairs)} pairs and {len(colours)} colours per pair")
    rng = np.random.default_rng([STREAM, spec.seed])
    classes = []
    for p in rng.permutation(len(pairs))[:spec.num_pairs]:
        shape, texture = pairs[p]
        for c in rng.choice(len(colours), spec.colours_per_pair, replace=False):
            colour = colours[c]
            pattern = (15, 15, 15) if sum(colour) > 330 else (240, 240, 240)
            classes.append(PretrainClass(f"{shape}-{texture}-{c:02d}", PartStyle(shape, texture, colour, pattern)))
    return classes


def check_disjoint(classes: list[PretrainClass]) -> None:
    """SfcError unless no class shares a benchmark part's (shape, texture) or colour."""
    bench = benchmark_styles()
    for cls in classes:
        s = cls.style
        for b in bench:
            close = math.dist(s.colour, b.colour) < MIN_COLOUR_DISTANCE
            if (s.shape, s.texture) == (b.shape, b.texture) or close:
                raise SfcError(f"pretraining class {cls.name} overlaps the benchmark part {b}",
                               fix="keep the default class definitions (class_definitions)")


def render_image(rng: np.random.Generator, style: PartStyle, spec: PretrainSpec) -> np.ndarray:
    """uint8 (S, S, 3): one object of ``style`` on a benchmark-like background."""
    size = spec.image_size
    image = synthetic.render_background(rng, size)
    radius = float(rng.uniform(*spec.radius) * size)
    margin = 0.6 * radius
    centre = (float(rng.uniform(margin, size - margin)), float(rng.uniform(margin, size - margin)))
    jittered = replace(style, frequency=float(rng.uniform(2.0, 3.0)))
    synthetic.draw_part(image, jittered, centre, radius, float(rng.uniform(0, 2 * np.pi)),
                        float(rng.uniform(0.85, 1.1)))
    return synthetic.add_noise(rng, image)


def make_images(spec: PretrainSpec, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """A split's uint8 (N, S, S, 3) images and int64 (N,) labels; image i depends on (seed, split, i)."""
    if split not in SPLITS:
        raise SfcError(f"unknown pretraining split {split!r}", fix=f"use one of: {', '.join(SPLITS)}")
    classes = class_definitions(spec)
    check_disjoint(classes)
    per_class = spec.train_per_class if split == "train" else spec.val_per_class
    labels = np.tile(np.arange(len(classes)), per_class).astype(np.int64)
    images = np.empty((len(labels), spec.image_size, spec.image_size, 3), np.uint8)
    for i in range(len(labels)):           # image i is of class i % len(classes) = labels[i]
        images[i] = image_at(spec, classes, split, i)
    return images, labels


def image_at(spec: PretrainSpec, classes: list[PretrainClass], split: str, i: int) -> np.ndarray:
    """uint8 (S, S, 3): image ``i`` of ``split`` (class ``i % len(classes)``), alone."""
    rng = np.random.default_rng([STREAM, spec.seed, SPLITS.index(split), i])
    return render_image(rng, classes[i % len(classes)].style, spec)
