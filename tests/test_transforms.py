"""The joint image + mask training transform (sfc_core.data.transforms.augment) that SFC, IRN
and step 3 share: alignment of image and mask, padding, purity in the generator."""
from __future__ import annotations

import numpy as np

from sfc_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD, augment, rescale, rescale_mask


def _augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Step 3's use: a scale drawn in [0.5, 2.0], then the transform into a 48 px canvas."""
    return augment(image, mask, rng, 48, float(rng.uniform(0.5, 2.0)))[:2]


def _column_image(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An image whose grey level is 1 + its column, and a mask holding the same number."""
    columns = np.tile((1 + np.arange(width) % 200).astype(np.uint8), (height, 1))
    return np.repeat(columns[..., None], 3, axis=2), columns.copy()


def _grey(image: np.ndarray) -> np.ndarray:
    """Undo the ImageNet normalisation of a float (S, S, 3) crop's first channel -> uint8 grey."""
    return np.round((image[..., 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255).astype(np.int64)


def test_augment_keeps_image_and_mask_aligned():
    image, mask = _column_image(30, 50)
    flips = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        crop, crop_mask = augment(image, mask, rng, 40, 1.0)[:2]
        assert crop.shape == (40, 40, 3) and crop.dtype == np.float32 and crop_mask.shape == (40, 40)
        grey, padded = _grey(crop), crop_mask == 255
        # padding: the mask is 255 exactly where the image is the mean colour (grey 0 after undoing)
        assert padded.any() and np.array_equal(padded, np.isclose(crop, 0).all(-1))
        assert np.array_equal(grey[~padded], crop_mask[~padded])   # same pixel in both
        real_rows = np.flatnonzero(~padded.all(1))
        columns = crop_mask[real_rows[0]][~padded[real_rows[0]]].astype(int)
        flips.add(bool(columns[0] > columns[-1]))
        assert np.all(np.abs(np.diff(columns)) == 1)   # a contiguous run of columns, maybe mirrored
    assert flips == {True, False}


def test_augment_is_a_pure_function_of_the_generator_and_rescales_both():
    image, mask = _column_image(32, 32)
    a = _augment(image, mask, np.random.default_rng([1, 2, 3]))
    b = _augment(image, mask, np.random.default_rng([1, 2, 3]))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    rng = np.random.default_rng(0)
    for _ in range(5):
        crop, crop_mask = _augment(image, mask, rng)
        assert np.array_equal(crop_mask == 255, np.isclose(crop, 0).all(-1))


def test_rescale_mask_gives_the_image_size_and_only_existing_labels():
    image, mask = _column_image(21, 33)
    for scale in (0.5, 0.77, 1.0, 1.6, 2.0):
        out = rescale_mask(mask, scale)
        assert out.shape == rescale(image, scale).shape[:2]
        assert set(np.unique(out)) <= set(np.unique(mask))


def test_without_a_mask_the_crop_and_box_are_those_of_the_joint_call():
    image, mask = _column_image(30, 50)
    for seed in range(8):
        alone, none, box = augment(image, None, np.random.default_rng(seed), 40, 1.0)
        joint, crop_mask, joint_box = augment(image, mask, np.random.default_rng(seed), 40, 1.0, mask_fill=0)
        assert none is None and np.array_equal(alone, joint) and np.array_equal(box, joint_box)
        inside = np.zeros((40, 40), bool)
        inside[box[0]:box[1], box[2]:box[3]] = True
        assert np.array_equal(crop_mask == 0, ~inside)           # the fill is the caller's (no column is 0)


def test_flip_off_draws_the_same_crop_unflipped():
    image, mask = _column_image(30, 50)
    mirrored = 0
    for seed in range(8):
        on, on_mask, box = augment(image, mask, np.random.default_rng(seed), 40, 1.0)
        off, off_mask, off_box = augment(image, mask, np.random.default_rng(seed), 40, 1.0, flip=False)
        assert np.array_equal(box, off_box)
        y0, y1, x0, x1 = box
        real = off_mask[y0:y1, x0:x1].astype(int)
        assert np.all(np.diff(real, axis=1) == 1)                 # never mirrored
        if not np.array_equal(on_mask, off_mask):
            mirrored += 1
            assert np.all(np.diff(on_mask[y0:y1, x0:x1].astype(int), axis=1) == -1)   # mirrored columns
    assert 0 < mirrored < 8
