"""Class statistics of a dataset list and the paper's distribution coefficients (verb: stats, in data/commands.py).

The reference weights the consistency losses per class by w_k = b_k / (n_k + E), normalised
to mean 1 (docs/method.md 3, docs/reference.md 3.4): n_k = images of class k in the training
list, E = the expected extra samples per class from the image bank, b_k a second per-class
count the reference hard-codes for VOC without saying what it is. `class_weights` gives the
kit's w for any dataset: the reference's b_k and E on VOC, `default_second_counts` elsewhere.

    python -m sfc_core stats --preset synthetic --data-root data/synthetic --list train_aug
"""
from __future__ import annotations

import numpy as np

from sfc_core.config import Config
from sfc_core.data.dataset import VOC_CLASSES, SegmentationDataset
from sfc_core.errors import SfcError

# The reference's b_k ("ben", docs/reference.md 3.4), reordered from its frequency order into
# VOC class order (aeroplane ... tvmonitor).
VOC_REFERENCE_SECOND_COUNTS = np.array(
    [7536, 7698, 8062, 8032, 8134, 9036, 12784, 11044, 13956, 11118,
     7582, 13316, 8308, 7792, 66642, 7626, 10524, 7726, 7704, 7536], dtype=np.float64)
# The reference's E, written there as 660 * 4 * 3 / 20 (VOC trainaug has 661 steps of 16).
VOC_REFERENCE_EXTRA = 396.0
# The factor 3 in the reference's E = steps_per_epoch * bank_draws * 3 / C (unexplained there;
# kept so that E means the same on every dataset).
REFERENCE_BANK_EPOCHS = 3


def class_counts(dataset: SegmentationDataset, list_name: str) -> np.ndarray:
    """int64 (C,): the number of images of the list containing each class."""
    return (dataset.labels(list_name) > 0).sum(axis=0).astype(np.int64)


def cooccurrence(dataset: SegmentationDataset, list_name: str) -> np.ndarray:
    """int64 (C, C): [i, j] = images containing both class i and class j; diagonal = counts."""
    present = (dataset.labels(list_name) > 0).astype(np.int64)    # (N, C)
    return present.T @ present


def distribution_coefficients(image_counts: np.ndarray, second_counts: np.ndarray,
                              extra: float) -> np.ndarray:
    """float64 (C,): b_k / (n_k + E), normalised to mean 1.

    image_counts n (C,), second_counts b (C,), extra E (expected bank samples per class).
    """
    coefficients = np.asarray(second_counts, dtype=np.float64) / (np.asarray(image_counts) + extra)
    return coefficients / coefficients.mean()


def bank_extra(num_images: int, batch_size: int, bank_draws: int, num_classes: int) -> float:
    """E = steps_per_epoch * bank_draws * 3 / C: the expected number of times the image bank
    draws each class's slot in 3 epochs (the reference's formula; 0 without a bank)."""
    return (num_images // batch_size) * bank_draws * REFERENCE_BANK_EPOCHS / num_classes


def default_second_counts(image_counts: np.ndarray, extra: float) -> np.ndarray:
    """The kit's b_k for datasets other than VOC: float64 (C,) b_k = t_k^2 / m + m, with t_k = n_k + E
    a class's expected training samples (its images plus its bank draws) and m = mean_k t_k, so
    that w_k is proportional to s_k + 1/s_k, s_k = t_k / m.

    The reference's b_k is an undocumented constant, but its weights have a documented shape: the
    most frequent and the rarest classes weigh most, the middling ones least (VOC: person 1.55,
    cow 1.77, bird 0.77), the paper's argument that heads are over- and tails under-activated.
    s_k + 1/s_k is the simplest weight of that shape: smallest (2) at the average share, growing
    alike for a factor r either way; E enters as in the reference (the bank flattens the class
    distribution, so the weights). On VOC's counts it gives person 1.82, cow 1.08, minimum 0.91
    (bottle): the same ends up, milder on the tail. The VOC preset keeps the reference's b_k and E
    (`coefficient_inputs`), so the reference's weights are reproduced exactly.
    """
    samples = np.asarray(image_counts, dtype=np.float64) + extra
    mean = samples.mean()
    return samples ** 2 / mean + mean


def coefficient_inputs(dataset: SegmentationDataset, list_name: str, dataset_kind: str,
                       batch_size: int, bank_draws: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(n int64 (C,), b float64 (C,), E) for `distribution_coefficients` on a training list.

    VOC (dataset_kind "voc" with VOC's 20 classes): the reference's b_k and E = 396, with n
    counted from the list's image labels: ``prepare voc`` writes them from the XML annotations,
    as the reference's label file was made, so on trainaug n is the reference's ``Images_num``
    and its weights come out (labels from masks would differ on a few images). Any other
    dataset: E from `bank_extra` and b from `default_second_counts`.
    """
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
    """float32 (C,) per-class weights of the consistency losses, for the training list of cfg:
    the distribution coefficients, or ones when cfg.loss.class_weights == "uniform"."""
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
    """JSON-able summary of a list: class names, image counts, co-occurrence, the distribution
    coefficients as `class_weights` would make them for this list as the training list
    (dataset_kind "voc" selects the reference's b_k; None when a class has no image and there
    is no bank), imbalance ratio (most / least frequent class; None if a class is absent) and
    the histogram of labels per image."""
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
