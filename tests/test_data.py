"""The data layer on tiny VOC- and COCO-layout trees written by tests/fixtures.py."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures import (
    COCO_IMAGES,
    COCO_LISTS,
    FIXTURE_CLASSES,
    GRAYSCALE_IDS,
    VOC_IMAGES,
    VOC_LISTS,
    fixture_image,
    fixture_label,
    fixture_mask,
    write_coco_tree,
    write_voc_tree,
)
from PIL import Image

from sfc_core.config import Config, DataConfig
from sfc_core.data import MultiScaleDataset, SegmentationDataset, TrainDataset, open_dataset
from sfc_core.data.dataset import VOC_CLASSES
from sfc_core.data.transforms import augment, device_views, normalize_crops, valid_mask_from_boxes
from sfc_core.errors import SfcError

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def expected_labels(images: dict, ids: list[str], num_classes: int) -> np.ndarray:
    return np.stack([fixture_label(images[i], num_classes) for i in ids])


def normalised(image: np.ndarray) -> np.ndarray:
    return ((image / 255.0 - MEAN) / STD).astype(np.float32)


# -- SegmentationDataset --------------------------------------------------------------------
def test_voc_tree_reads_back(tmp_path):
    ds = SegmentationDataset(write_voc_tree(tmp_path))
    assert ds.class_names == FIXTURE_CLASSES and ds.num_classes == 3
    assert ds.ids("train") == VOC_LISTS["train"] and ds.ids("val") == VOC_LISTS["val"]
    assert ds.has_masks("train")
    for image_id, spec in VOC_IMAGES.items():
        image = ds.read_image(image_id)
        assert image.dtype == np.uint8 and image.shape == (spec[0], spec[1], 3)
        decoded = np.asarray(Image.open(ds.image_path(image_id)).convert("RGB"))
        np.testing.assert_array_equal(image, decoded)
        if image_id in GRAYSCALE_IDS:
            assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
        else:   # JPEG at quality 95 stays close to what was written
            written = fixture_image(image_id, spec[0], spec[1]).astype(float)
            assert np.abs(image - written).mean() < 8
        mask = ds.read_mask(image_id)
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, fixture_mask(spec))
    # labels derived from the masks (no label file in this tree)
    np.testing.assert_array_equal(ds.labels("train"), expected_labels(VOC_IMAGES, VOC_LISTS["train"], 3))
    assert ds.labels("train").dtype == np.float32


@pytest.mark.parametrize("labels", ["json", "npy"])
def test_labels_from_label_files(tmp_path, labels):
    root = write_voc_tree(tmp_path, labels=labels)
    # Remove the masks: the labels must now come from the file alone.
    for path in (root / "SegmentationClass").iterdir():
        path.unlink()
    labels_file = root / "cls_labels.npy" if labels == "npy" else None
    ds = SegmentationDataset(root, labels_file=labels_file, allow_pickle=labels == "npy")
    assert not ds.has_masks("train")
    np.testing.assert_array_equal(ds.labels("train"), expected_labels(VOC_IMAGES, VOC_LISTS["train"], 3))
    np.testing.assert_array_equal(ds.label("2007_000006"), [1, 0, 0])


def test_list_with_image_mask_pairs_and_aug_folder(tmp_path):
    ds = SegmentationDataset(write_voc_tree(tmp_path, pairs_list=True, mask_dir="SegmentationClassAug"))
    assert ds.ids("train") == VOC_LISTS["train"]
    assert ds.mask_dir.name == "SegmentationClassAug"
    np.testing.assert_array_equal(ds.read_mask("2007_000002"), fixture_mask(VOC_IMAGES["2007_000002"]))


def test_voc_class_names_by_default(tmp_path):
    ds = SegmentationDataset(write_voc_tree(tmp_path, class_names=False))
    assert ds.class_names == VOC_CLASSES and ds.num_classes == 20
    assert ds.label("2007_000005").shape == (20,)
    np.testing.assert_array_equal(np.flatnonzero(ds.label("2007_000005")), [0, 1, 2])


def test_open_dataset_voc_and_coco(tmp_path):
    voc = open_dataset(DataConfig(dataset="voc", root=str(write_voc_tree(tmp_path / "voc"))))
    assert voc.class_names == FIXTURE_CLASSES
    coco = open_dataset(DataConfig(dataset="coco", root=str(write_coco_tree(tmp_path / "coco"))))
    assert coco.num_classes == 80


def test_a_voc_root_one_level_above_the_dataset_names_the_folder_below(tmp_path):
    write_voc_tree(tmp_path / "VOCdevkit" / "VOC2012")
    with pytest.raises(SfcError, match="lacks the folder") as caught:
        open_dataset(DataConfig(dataset="voc", root=str(tmp_path / "VOCdevkit")))
    assert caught.value.fix == f"point data.root (--data-root) at {tmp_path / 'VOCdevkit' / 'VOC2012'}, the dataset one level below"


# -- synthetic: a dataset folder is read as it is; generated only at the preset's root or when asked --
def _changed(cfg: Config, overrides: dict) -> Config:
    return copy.deepcopy(cfg).override(overrides)


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


def test_a_synthetic_dataset_folder_is_read_as_it_is(smoke_config, tmp_path):
    folder = Path(smoke_config.data.root) / "smoke-seed0"
    before = _files(folder)
    for generate in (False, True):
        data = _changed(smoke_config, {"data.root": str(folder)}).data
        assert open_dataset(data, generate).root == folder
    assert _files(folder) == before                        # no dataset generated inside it
    control = _changed(smoke_config, {"data.root": str(folder), "data.shared_parts": False}).data
    with pytest.raises(SfcError, match="generated with shared_parts=True") as caught:
        open_dataset(control)
    assert str(folder.parent) in caught.value.fix


def test_a_root_without_the_dataset_is_one_error_naming_the_synth_command(smoke_config, tmp_path):
    mistyped = _changed(smoke_config, {"data.root": str(tmp_path / "typo")}).data
    with pytest.raises(SfcError, match="no synthetic dataset smoke-seed0") as caught:
        open_dataset(mistyped)
    assert caught.value.fix == f"make it with: python -m sfc_core synth --size smoke --seed 0 --out {tmp_path / 'typo'}"
    assert not (tmp_path / "typo").exists()
    other_seed = _changed(smoke_config, {"data.synthetic_seed": 1, "data.shared_parts": False}).data
    with pytest.raises(SfcError, match="smoke-seed1-control") as caught:
        open_dataset(other_seed)
    assert "--seed 1 --control" in caught.value.fix and str(Path(smoke_config.data.root) / "smoke-seed0") in caught.value.fix
    assert not (Path(smoke_config.data.root) / "smoke-seed1-control").exists()


def test_synthetic_data_is_generated_at_the_presets_root_or_when_asked(smoke_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    at_preset_root = Config.from_preset("synthetic-smoke").data
    assert at_preset_root.root == "data/synthetic"
    assert open_dataset(at_preset_root).root == Path("data/synthetic/smoke-seed0")
    asked = _changed(smoke_config, {"data.root": str(tmp_path / "asked")}).data
    assert open_dataset(asked, generate=True).root == tmp_path / "asked" / "smoke-seed0"
    assert _files(tmp_path / "asked" / "smoke-seed0") == [tmp_path / "asked" / p.relative_to("data/synthetic")
                                                          for p in _files(Path("data/synthetic/smoke-seed0"))]


# -- COCO -----------------------------------------------------------------------------------
@pytest.mark.parametrize("list_suffix", ["", "_coco"])
def test_coco_tree_reads_back(tmp_path, list_suffix):
    from sfc_core.data.coco import COCO_CLASSES, CocoDataset

    ds = CocoDataset(write_coco_tree(tmp_path, list_suffix=list_suffix))
    assert len(COCO_CLASSES) == 80 and len(set(COCO_CLASSES)) == 80
    assert COCO_CLASSES[0] == "person" and COCO_CLASSES[-1] == "toothbrush"
    assert ds.class_names == COCO_CLASSES
    for name, ids in COCO_LISTS.items():
        assert ds.ids(name) == ids
        np.testing.assert_array_equal(ds.labels(name), expected_labels(COCO_IMAGES, ids, 80))
    for image_id, spec in COCO_IMAGES.items():
        split = image_id.split("_")[1]
        assert ds.image_path(image_id) == tmp_path / "JPEGImages" / split / f"{image_id}.jpg"
        assert ds.read_image(image_id).shape == (spec[0], spec[1], 3)
        np.testing.assert_array_equal(ds.read_mask(image_id), fixture_mask(spec))


# -- TrainDataset ---------------------------------------------------------------------------
def test_train_items_have_the_crop_and_the_box_of_the_real_image(tmp_path):
    ds = SegmentationDataset(write_voc_tree(tmp_path))
    train = TrainDataset(ds, "train", crop_size=24, resize_long=(10, 40), seed=3)
    labels = expected_labels(VOC_IMAGES, VOC_LISTS["train"], 3)
    cropped = padded = 0
    for epoch in range(4):
        for index in range(len(train)):
            item = train[epoch, index]
            assert item["name"] == VOC_LISTS["train"][index]
            assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.uint8
            assert item["box"].dtype == torch.int64 and item["box"].shape == (4,)
            np.testing.assert_array_equal(item["label"].numpy(), labels[index])
            y0, y1, x0, x1 = item["box"].tolist()
            assert 0 <= y0 < y1 <= 24 and 0 <= x0 < x1 <= 24
            crop = normalize_crops(item["image"][None], item["box"][None], "cpu")[0]
            real = (crop != 0).any(0)                     # padding is exactly 0
            expected = torch.zeros(24, 24, dtype=torch.bool)
            expected[y0:y1, x0:x1] = True
            assert torch.equal(real, expected)
            cropped += (y1 - y0 == 24) or (x1 - x0 == 24)
            padded += (y1 - y0 < 24) or (x1 - x0 < 24)
    assert cropped and padded    # both regimes of the crop were exercised


def test_train_transform_without_resize_is_the_normalised_image_or_its_flip(tmp_path):
    ds = SegmentationDataset(write_voc_tree(tmp_path))
    # Long side 30 on 20x30 images is scale 1: the crop holds the whole normalised image.
    plain = TrainDataset(ds, "train", crop_size=32, resize_long=(30, 30), flip=False, seed=5)
    flipping = TrainDataset(ds, "train", crop_size=32, resize_long=(30, 30), flip=True, seed=5)
    flips = 0
    for epoch in range(3):
        for index in (0, 1, 4):     # the 20x30 images
            a, b = (dict(item, image=normalize_crops(item["image"][None], item["box"][None])[0])
                    for item in (plain[epoch, index], flipping[epoch, index]))
            assert torch.equal(a["box"], b["box"])     # flip draws do not move the crop
            y0, y1, x0, x1 = a["box"].tolist()
            assert (y1 - y0, x1 - x0) == (20, 30)
            image = normalised(ds.read_image(a["name"]))
            np.testing.assert_allclose(a["image"][:, y0:y1, x0:x1].numpy(), image.transpose(2, 0, 1),
                                       atol=1e-5)
            region = b["image"][:, y0:y1, x0:x1]
            flipped = not torch.equal(region, a["image"][:, y0:y1, x0:x1])
            if flipped:
                assert torch.equal(region, a["image"][:, y0:y1, x0:x1].flip(-1))
            flips += flipped
    assert 0 < flips < 9


def test_uint8_crops_normalised_on_the_device_equal_the_cpu_float32_crops():
    """400 random images, scales, flips and crops (both regimes): the uint8 crop the loader
    now hands over, normalised by normalize_crops, against augment's float32 crop."""
    rng = np.random.default_rng(0)
    uint8, floats, boxes = [], [], []
    for i in range(400):
        image = rng.integers(0, 256, (int(rng.integers(5, 40)), int(rng.integers(5, 40)), 3), dtype=np.uint8)
        scale = float(rng.uniform(0.5, 1.5))
        seed = [i, 1]
        crop, _, box = augment(image, None, np.random.default_rng(seed), 24, scale, normalise=False)
        expected, _, same_box = augment(image, None, np.random.default_rng(seed), 24, scale)
        assert crop.dtype == np.uint8 and np.array_equal(box, same_box)
        uint8.append(crop.transpose(2, 0, 1))
        floats.append(expected.transpose(2, 0, 1))
        boxes.append(box)
    normalised_crops = normalize_crops(torch.from_numpy(np.stack(uint8)), torch.from_numpy(np.stack(boxes)), "cpu")
    np.testing.assert_array_equal(normalised_crops.numpy(), np.stack(floats))
    assert not np.signbit(normalised_crops.numpy()[normalised_crops.numpy() == 0]).any()   # +0.0 padding


def test_train_samples_are_a_function_of_seed_epoch_and_index(tmp_path):
    ds = SegmentationDataset(write_voc_tree(tmp_path))
    first = TrainDataset(ds, "train", crop_size=16, resize_long=(8, 40), seed=7)
    second = TrainDataset(ds, "train", crop_size=16, resize_long=(8, 40), seed=7)
    for index in reversed(range(len(first))):     # any order gives the same samples
        a, b = first[2, index], second[2, index]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["box"], b["box"])
    assert any(not torch.equal(first[2, i]["image"], second[3, i]["image"]) for i in range(len(first)))
    other_seed = TrainDataset(ds, "train", crop_size=16, resize_long=(8, 40), seed=8)
    assert any(not torch.equal(first[2, i]["image"], other_seed[2, i]["image"]) for i in range(len(first)))


def test_train_samples_do_not_depend_on_dataloader_workers(tmp_path):
    ds = SegmentationDataset(write_voc_tree(tmp_path))
    train = TrainDataset(ds, "train", crop_size=16, resize_long=(8, 40), seed=1)
    keys = [(4, i) for i in range(len(train))]
    batches = [list(torch.utils.data.DataLoader(train, batch_size=2, sampler=keys, num_workers=workers))
               for workers in (0, 2)]
    for a, b in zip(*batches):
        assert a["name"] == b["name"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["box"], b["box"])


# -- MultiScaleDataset ----------------------------------------------------------------------
def test_multiscale_items(tmp_path):
    ds = SegmentationDataset(write_voc_tree(tmp_path))
    multi = MultiScaleDataset(ds, "train", scales=(1.0, 0.5, 1.5))
    item = multi[0]       # 20x30
    assert item["name"] == "2007_000001"
    assert item["size"].tolist() == [20, 30] and item["size"].dtype == torch.int64
    np.testing.assert_array_equal(item["label"].numpy(), fixture_label(VOC_IMAGES["2007_000001"], 3))
    assert [tuple(t.shape) for t in item["images"]] == [(3, 20, 30), (3, 10, 15), (3, 30, 45)]
    assert all(t.dtype == torch.uint8 for t in item["images"])
    image = ds.read_image("2007_000001")
    np.testing.assert_array_equal(item["images"][0].numpy(), image.transpose(2, 0, 1))
    half = np.asarray(Image.fromarray(image).resize((15, 10), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(item["images"][1].numpy(), half.transpose(2, 0, 1))
    views = device_views(item["images"][1], "cpu")
    assert views.shape == (2, 3, 10, 15) and views.dtype == torch.float32
    assert torch.equal(views[1], views[0].flip(-1))
    np.testing.assert_allclose(views[0].numpy(), normalised(half).transpose(2, 0, 1), atol=1e-5)
    portrait = MultiScaleDataset(ds, "train", scales=(0.5,))[2]    # 30x20
    assert [tuple(t.shape) for t in portrait["images"]] == [(3, 15, 10)]
    assert device_views(portrait["images"][0], "cpu", flip=False).shape == (1, 3, 15, 10)


# -- valid_mask_from_boxes ------------------------------------------------------------------
@pytest.mark.parametrize("crop_size,grid", [(64, (4, 4)), (50, (7, 13)), (48, (48, 48)), (20, (40, 30))])
def test_valid_mask_matches_full_resolution_mask_and_nearest_interpolation(crop_size, grid):
    generator = torch.Generator().manual_seed(0)
    boxes, labels = [], []
    for _ in range(6):
        y0, y1 = sorted(torch.randint(0, crop_size + 1, (2,), generator=generator).tolist())
        x0, x1 = sorted(torch.randint(0, crop_size + 1, (2,), generator=generator).tolist())
        boxes.append([y0, max(y1, y0 + 1), x0, max(x1, x0 + 1)])
        labels.append((torch.rand(5, generator=generator) > 0.5).float().tolist())
    boxes = torch.tensor(boxes, dtype=torch.int64).clamp(max=crop_size)
    labels = torch.tensor(labels)
    full = torch.zeros(len(boxes), 1, crop_size, crop_size)
    for n, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        full[n, 0, y0:y1, x0:x1] = 1
    small = F.interpolate(full, size=grid, mode="nearest")
    expected = torch.cat([small, small * labels[:, :, None, None]], dim=1)
    result = valid_mask_from_boxes(boxes, labels, crop_size, grid)
    assert result.shape == (6, 6) + grid and result.dtype == torch.float32
    assert torch.equal(result, expected)
