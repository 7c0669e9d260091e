"""Class statistics, distribution coefficients (the reference's VOC weights) and the stats verb."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import FIXTURE_CLASSES, write_voc_tree

from sfc_core.cli import main
from sfc_core.config import Config
from sfc_core.data import SegmentationDataset
from sfc_core.data.dataset import VOC_CLASSES
from sfc_core.data.stats import (
    VOC_REFERENCE_EXTRA,
    VOC_REFERENCE_SECOND_COUNTS,
    class_counts,
    class_weights,
    cooccurrence,
    dataset_stats,
)
from sfc_core.method.coefficients import default_second_counts, distribution_coefficients

# VOC trainaug's images per class and the reference's weights, in descending image count (docs/reference.md 3.4).
VOC_BY_FREQUENCY = ["person", "chair", "dog", "car", "cat", "bottle", "bird", "sofa", "diningtable",
                    "aeroplane", "tvmonitor", "pottedplant", "bicycle", "train", "motorbike", "boat",
                    "horse", "bus", "sheep", "cow"]
VOC_TRAINAUG_COUNTS = [4155, 1228, 1188, 1150, 1005, 714, 705, 649, 613, 590, 567, 522, 504, 503, 492,
                       468, 445, 393, 300, 267]
VOC_B = [66642, 13956, 13316, 12784, 11044, 8134, 8062, 7726, 7582, 7536, 7536, 7626, 7698, 7704, 7792,
         8032, 8308, 9036, 10524, 11118]
VOC_WEIGHTS = {"person": 1.545, "chair": 0.907, "dog": 0.887, "car": 0.873, "cat": 0.832, "bottle": 0.773,
               "bird": 0.773, "sofa": 0.780, "diningtable": 0.793, "aeroplane": 0.806, "tvmonitor": 0.826,
               "pottedplant": 0.877, "bicycle": 0.903, "train": 0.904, "motorbike": 0.926, "boat": 0.981,
               "horse": 1.042, "bus": 1.208, "sheep": 1.595, "cow": 1.769}


def in_voc_order(values_by_frequency: list[float]) -> np.ndarray:
    table = dict(zip(VOC_BY_FREQUENCY, values_by_frequency))
    return np.array([table[name] for name in VOC_CLASSES], dtype=np.float64)


class CountsOnlyDataset:
    """A stand-in dataset whose list has given per-class image counts (one class per row)."""

    def __init__(self, class_names, counts):
        self.class_names = tuple(class_names)
        self.num_classes = len(class_names)
        rows = [np.eye(self.num_classes, dtype=np.float32)[k] for k, n in enumerate(counts) for _ in range(n)]
        self._labels = np.stack(rows)

    def labels(self, list_name):
        return self._labels

    def ids(self, list_name):
        return [str(i) for i in range(len(self._labels))]


def test_counts_and_cooccurrence_on_the_fixture(tmp_path):
    ds = SegmentationDataset(write_voc_tree(tmp_path))
    # train: {cat}, {cat, dog}, {cow}, {dog, cow}, {cat, dog, cow} (tests/fixtures.py VOC_IMAGES)
    np.testing.assert_array_equal(class_counts(ds, "train"), [3, 3, 3])
    expected = np.array([[3, 2, 1],
                         [2, 3, 2],
                         [1, 2, 3]])
    result = cooccurrence(ds, "train")
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(class_counts(ds, "val"), [1, 0, 0])


def test_voc_reference_weights_are_reproduced():
    assert VOC_REFERENCE_EXTRA == 660 * 4 * 3 / 20
    np.testing.assert_array_equal(VOC_REFERENCE_SECOND_COUNTS, in_voc_order(VOC_B))
    weights = distribution_coefficients(in_voc_order(VOC_TRAINAUG_COUNTS), in_voc_order(VOC_B), 396)
    expected = np.array([VOC_WEIGHTS[name] for name in VOC_CLASSES])
    np.testing.assert_allclose(weights, expected, atol=5e-4)
    assert weights.mean() == pytest.approx(1.0)


def test_class_weights_of_the_voc_preset_are_the_reference_weights():
    stand_in = CountsOnlyDataset(VOC_CLASSES, in_voc_order(VOC_TRAINAUG_COUNTS).astype(int))
    weights = class_weights(stand_in, Config.from_preset("voc"))
    assert weights.dtype == np.float32 and weights.shape == (20,)
    np.testing.assert_allclose(weights, [VOC_WEIGHTS[name] for name in VOC_CLASSES], atol=5e-4)
    uniform = class_weights(stand_in, Config.from_preset("voc", {"loss.class_weights": "uniform"}))
    np.testing.assert_array_equal(uniform, np.ones(20, dtype=np.float32))


def test_default_weights_on_other_datasets():
    counts = [40, 10, 5]     # 55 images; batch 5, 1 bank draw: E = 11 * 1 * 3 / 3 = 11
    stand_in = CountsOnlyDataset(["a", "b", "c"], counts)
    cfg = Config.from_preset("synthetic", {"train.batch_size": 5, "train.bank_draws": 1})
    samples = np.array(counts, dtype=float) + 11
    share = samples / samples.mean()
    expected = (share + 1 / share) / (share + 1 / share).mean()
    np.testing.assert_allclose(class_weights(stand_in, cfg), expected, rtol=1e-6)
    # no bank: E = 0
    cfg = Config.from_preset("synthetic", {"train.batch_size": 5, "train.bank_draws": 0})
    share = np.array(counts) / np.mean(counts)
    np.testing.assert_allclose(class_weights(stand_in, cfg), (share + 1 / share) / (share + 1 / share).mean(),
                               rtol=1e-6)


def test_default_second_counts_on_voc_as_the_docstring_says():
    counts = in_voc_order(VOC_TRAINAUG_COUNTS)
    weights = dict(zip(VOC_CLASSES, distribution_coefficients(counts, default_second_counts(counts, 396), 396)))
    assert round(weights["person"], 2) == 1.82 and round(weights["cow"], 2) == 1.08
    assert min(weights, key=weights.get) == "bottle" and round(weights["bottle"], 2) == 0.91


def test_dataset_stats_on_the_fixture(tmp_path):
    ds = SegmentationDataset(write_voc_tree(tmp_path))
    stats = dataset_stats(ds, "train", batch_size=2, bank_draws=1)
    json.dumps(stats)
    assert stats["class_names"] == list(FIXTURE_CLASSES) and stats["num_images"] == 5
    assert stats["image_counts"] == [3, 3, 3] and stats["imbalance_ratio"] == 1.0
    assert stats["labels_per_image"] == {"0": 0, "1": 2, "2": 2, "3": 1}
    assert stats["bank_extra"] == (5 // 2) * 1 * 3 / 3
    assert stats["distribution_coefficients"] == [1.0, 1.0, 1.0]
    val = dataset_stats(ds, "val", bank_draws=0)     # dog and cow absent, no bank
    assert val["imbalance_ratio"] is None and val["distribution_coefficients"] is None


def test_stats_verb_prints_json(tmp_path, capsys):
    root = write_voc_tree(tmp_path)
    assert main(["stats", "--preset", "voc", "--data-root", str(root), "--list", "train"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["list"] == "train" and stats["image_counts"] == [3, 3, 3]
    assert stats["cooccurrence"] == [[3, 2, 1], [2, 3, 2], [1, 2, 3]]


@pytest.mark.slow
def test_stats_verb_on_the_smoke_dataset(smoke_config, smoke_dataset, capsys):
    assert main(["stats", "--preset", "synthetic-smoke", "--data-root", smoke_config.data.root]) == 0
    stats = json.loads(capsys.readouterr().out)
    labels = smoke_dataset.labels(smoke_config.data.train_list) > 0
    assert stats["class_names"] == list(smoke_dataset.class_names)
    assert stats["image_counts"] == labels.sum(0).tolist()
    assert stats["num_images"] == len(smoke_dataset.ids(smoke_config.data.train_list))
    assert np.mean(stats["distribution_coefficients"]) == pytest.approx(1.0, abs=1e-3)


def test_stats_on_an_empty_list_is_an_error_and_its_help_names_check(tmp_path, capsys):
    root = write_voc_tree(tmp_path)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n")
    assert main(["stats", "--preset", "voc", "--data-root", str(root), "--list", "train"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: image list 'train' is empty") and "train.txt" in err
    with pytest.raises(SystemExit):
        main(["stats", "--help"])
    assert "`check` is the verb that decodes every image and mask" in " ".join(capsys.readouterr().out.split())
