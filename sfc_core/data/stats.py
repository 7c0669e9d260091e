"""Class statistics of a dataset list and its distribution coefficients (verb: stats, in data/commands.py).

The coefficients' math is the method's (``method/coefficients.py``); `class_weights` gives the
kit's w for a training list: the reference's b_k and E on VOC (kept here), the kit's elsewhere.

    python -m sfc_core stats --preset synthetic --data-root data/synthetic --list train_aug
"""
from __future__ import annotations

import numpy as np

from sfc_core.config import Config
from sfc_core.data.dataset import VOC_CLASSES, SegmentationDataset
from sfc_core.errors import SfcError
from sfc_core.method.coefficients import bank_extra, default_second_counts, distribution_coefficients

# The reference's b_k ("ben", docs/reference.md 3.4), reordered into VOC class order.
VOC_REFERENCE_SECOND_COUNTS = np.array(
    [7536, 7698, 8062, 8032, 8134, 9036, 12784, 11044, 13956, 11118,
     7582, 13316, 8308, 7792, 66642, 7626, 10524, 7726, 7704, 7536], dtype=np.float64)
# The reference's E, written there as 660 * 4 * 3 / 20 (VOC trainaug has 661 steps of 16).
VOC_REFERENCE_EXTRA = 396.0


def class_counts(dataset: SegmentationDataset, list_name: str) -> np.ndarray:
    """int64 (C,): the number of images of the list containing each class."""
    return (dataset.labels(list_name) > 0).sum(axis=0).astype(np.int64)


def cooccurrence(dataset: SegmentationDataset, list_name: str) -> np.ndarray:
    """int64 (C, C): [i, j] = images containing both class i and class j; diagonal = counts."""
    present = (dataset.labels(list_name) > 0).astype(np.int64)    # (N, C)
    return present.T @ present


def coefficient_inputs(dataset: SegmentationDataset, list_name: str, dataset_kind: str,
                       batch_size: int, bank_draws: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(n int64 (C,), b float64 (C,), E) for `distribution_coefficients` on a training list.

    VOC: the reference's b_k and E = 396, n from the list's XML-made image labels (so on trainaug
    the reference's weights come out). Other datasets: E from `bank_extra`, b `default_second_counts`."""
    counts = class_counts(dataset, list_name)
    if dataset_kind == "voc" and tuple(dataset.class_names) == VOC_CLASSES:
        return counts, VOC_REFERENCE_SECOND_COUNTS, VOC_REFERENCE_EXTRA
    extra = bank_extra(len(dataset.ids(list_name)), batch_size, bank_draws, dataset.num_classes)
    unseen = [name for name, n in zip(dataset.class_names, counts) if n + extra == 0]
    if unseen:
        raise SfcError(f"class(es) {', '.join(unseen)} have no image in list {list_name!r} and the "
                       f"image bank is off, so their distribution coefficient is undefined",
                       path=dataset.list_path(list_name),
                       fix="add images of these classes to the list, or use loss.class_weights=uniform")
    return counts, default_second_counts(counts, extra), extra


def class_weights(dataset: SegmentationDataset, cfg: Config) -> np.ndarray:
    """float32 (C,) consistency-loss weights: the distribution coefficients, or ones ("uniform")."""
    if cfg.loss.class_weights == "uniform":
        return np.ones(dataset.num_classes, dtype=np.float32)
    if cfg.loss.class_weights != "distribution":
        raise SfcError(f"unknown loss.class_weights {cfg.loss.class_weights!r}",
                       fix="set loss.class_weights to distribution or uniform")
    inputs = coefficient_inputs(dataset, cfg.data.train_list, cfg.data.dataset,
                                cfg.train.batch_size, cfg.train.bank_draws)
    return distribution_coefficients(*inputs).astype(np.float32)


def dataset_stats(dataset: SegmentationDataset, list_name: str, dataset_kind: str | None = None,
                  batch_size: int = 16, bank_draws: int = 4) -> dict:
    """JSON-able summary of a list: names, counts, co-occurrence, distribution coefficients,
    imbalance ratio and labels-per-image histogram."""
    labels = dataset.labels(list_name) > 0
    counts = labels.sum(axis=0).astype(np.int64)
    try:
        image_counts, second_counts, extra = coefficient_inputs(dataset, list_name, dataset_kind,
                                                                batch_size, bank_draws)
        coefficients = distribution_coefficients(image_counts, second_counts, extra).round(4).tolist()
        second_counts = second_counts.round(2).tolist()
    except SfcError:
        coefficients = second_counts = extra = None
    per_image = np.bincount(labels.sum(axis=1), minlength=1)
    return {
        "root": str(dataset.root),
        "list": list_name,
        "num_images": int(labels.shape[0]),
        "class_names": list(dataset.class_names),
        "image_counts": counts.tolist(),
        "cooccurrence": cooccurrence(dataset, list_name).tolist(),
        "bank_extra": extra,
        "second_counts": second_counts,
        "distribution_coefficients": coefficients,
        "imbalance_ratio": round(float(counts.max() / counts.min()), 3) if counts.min() > 0 else None,
        "labels_per_image": {str(k): int(v) for k, v in enumerate(per_image)},
    }
